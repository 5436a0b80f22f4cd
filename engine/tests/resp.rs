//! `examples/resp_server.rs` under a hand-made client and, when installed, `redis-cli`.
//!
//! The example is compiled into this test (its parser's unit tests run here too) and each
//! test starts a server of its own on a free port of 127.0.0.1. Every read has a timeout,
//! so a missing reply fails the test instead of hanging it.
#![cfg(not(loom))]

#[path = "../examples/resp_server.rs"]
#[allow(dead_code)]
mod resp_server;

use resp_server::{DriveArg, Options, MAX_BULK};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);

fn server(workers: u16, drive: DriveArg) -> SocketAddr {
    spinning_or_not(workers, drive, false)
}

fn spinning_or_not(workers: u16, drive: DriveArg, no_spin: bool) -> SocketAddr {
    let options = Options {
        addr: "127.0.0.1:0".parse().unwrap(),
        workers,
        pin: false,
        drive,
        no_spin,
    };
    // The workers run until the test process ends.
    resp_server::start(&options).expect("server starts").0
}

/// A RESP array of bulk strings, as client libraries send commands.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn bulk(value: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", value.len()).into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

struct Client {
    stream: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads exactly `reply.len()` bytes and compares them with `reply`.
    fn expect(&mut self, reply: &[u8]) {
        let mut got = vec![0; reply.len()];
        if let Err(err) = self.stream.read_exact(&mut got) {
            panic!("reading {:?}: {err}", String::from_utf8_lossy(reply));
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply)
        );
    }

    /// Sends a command and checks its reply.
    fn call(&mut self, args: &[&[u8]], reply: &[u8]) {
        self.send(&command(args));
        self.expect(reply);
    }

    /// The server closes the connection: end of stream, with nothing before it.
    fn expect_closed(&mut self) {
        let mut byte = [0; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("unexpected byte {:?} instead of the end", byte[0] as char),
            Err(err) => panic!("expected the end of the stream, got {err}"),
        }
    }
}

#[test]
fn every_command_replies_as_redis_does() {
    let mut c = Client::connect(server(1, DriveArg::Inline));
    c.call(&[b"PING"], b"+PONG\r\n");
    c.call(&[b"ping", b"hello"], b"$5\r\nhello\r\n");
    c.call(&[b"ECHO", b"a\r\nb"], b"$4\r\na\r\nb\r\n");
    c.call(&[b"GET", b"k"], b"$-1\r\n");
    c.call(&[b"SET", b"k", b"v1"], b"+OK\r\n");
    c.call(&[b"GET", b"k"], b"$2\r\nv1\r\n");
    c.call(&[b"SET", b"k", b"v2", b"NX"], b"$-1\r\n");
    c.call(&[b"SET", b"k", b"v2", b"XX"], b"+OK\r\n");
    c.call(&[b"SET", b"other", b"x", b"XX"], b"$-1\r\n");
    c.call(&[b"SET", b"other", b"", b"nx"], b"+OK\r\n");
    c.call(&[b"GET", b"other"], b"$0\r\n\r\n");
    c.call(
        &[b"MGET", b"k", b"missing", b"other"],
        b"*3\r\n$2\r\nv2\r\n$-1\r\n$0\r\n\r\n",
    );
    c.call(&[b"EXISTS", b"k", b"missing", b"k"], b":2\r\n");
    c.call(&[b"DEL", b"k", b"missing", b"other"], b":2\r\n");
    c.call(&[b"EXISTS", b"k"], b":0\r\n");
    c.call(&[b"INCR", b"n"], b":1\r\n");
    c.call(&[b"INCR", b"n"], b":2\r\n");
    c.call(&[b"SET", b"n", b"-10"], b"+OK\r\n");
    c.call(&[b"INCR", b"n"], b":-9\r\n");
    c.call(&[b"SET", b"n", b"9223372036854775807"], b"+OK\r\n");
    c.call(
        &[b"INCR", b"n"],
        b"-ERR increment or decrement would overflow\r\n",
    );
    let not_an_integer = b"-ERR value is not an integer or out of range\r\n";
    for value in [&b"abc"[..], b"1.5", b" 1", b"01", b""] {
        c.call(&[b"SET", b"s", value], b"+OK\r\n");
        c.call(&[b"INCR", b"s"], not_an_integer);
    }
    c.call(&[b"SET", b"k", b"v", b"EX", b"ten"], not_an_integer);
    c.call(
        &[b"SET", b"k", b"v", b"PX", b"0"],
        b"-ERR invalid expire time in 'set' command\r\n",
    );
    c.call(
        &[b"SET", b"k", b"v", b"NX", b"XX"],
        b"-ERR syntax error\r\n",
    );
    c.call(&[b"SET", b"k", b"v", b"EX"], b"-ERR syntax error\r\n");
    c.call(&[b"SET", b"k", b"v", b"KEEPTTL"], b"-ERR syntax error\r\n");
    c.call(&[b"CONFIG", b"GET", b"save"], b"*0\r\n");
}

#[test]
fn unknown_commands_and_bad_arity_keep_the_connection() {
    let mut c = Client::connect(server(1, DriveArg::Inline));
    c.call(
        &[b"NOPE", b"a", b"b"],
        b"-ERR unknown command 'NOPE', with args beginning with: 'a' 'b' \r\n",
    );
    c.call(
        &[b"FLUSHALL"],
        b"-ERR unknown command 'FLUSHALL', with args beginning with: \r\n",
    );
    let arity = |name: &str| format!("-ERR wrong number of arguments for '{name}' command\r\n");
    c.call(&[b"GET"], arity("get").as_bytes());
    c.call(&[b"get", b"a", b"b"], arity("get").as_bytes());
    c.call(&[b"SET", b"a"], arity("set").as_bytes());
    c.call(&[b"PING", b"a", b"b"], arity("ping").as_bytes());
    c.call(&[b"ECHO"], arity("echo").as_bytes());
    c.call(&[b"DEL"], arity("del").as_bytes());
    c.call(&[b"EXISTS"], arity("exists").as_bytes());
    c.call(&[b"INCR"], arity("incr").as_bytes());
    c.call(&[b"MGET"], arity("mget").as_bytes());
    c.call(&[b"CONFIG", b"GET"], arity("config|get").as_bytes());
    let long = vec![b'x'; 200];
    let quoted = format!(
        "-ERR unknown command 'NOPE', with args beginning with: 'a' '{}' \r\n",
        "x".repeat(124)
    );
    c.call(&[b"NOPE", b"a", &long, b"never"], quoted.as_bytes());
    c.call(&[b"PING"], b"+PONG\r\n");
}

#[test]
fn a_thousand_pipelined_commands_reply_in_order() {
    let mut c = Client::connect(server(2, DriveArg::Inline));
    let (mut requests, mut replies) = (Vec::new(), Vec::new());
    for i in 0..500 {
        let (key, value) = (format!("key:{i}"), format!("value:{i}"));
        requests.extend(command(&[b"SET", key.as_bytes(), value.as_bytes()]));
        requests.extend(command(&[b"GET", key.as_bytes()]));
        replies.extend_from_slice(b"+OK\r\n");
        replies.extend(bulk(value.as_bytes()));
    }
    c.send(&requests);
    c.expect(&replies);
    // Nothing more than the replies came, and the connection still works.
    c.call(&[b"PING"], b"+PONG\r\n");
}

#[test]
fn a_command_split_byte_by_byte_is_whole() {
    let mut c = Client::connect(server(1, DriveArg::Inline));
    let mut requests = command(&[b"SET", b"split", b"a\r\nvalue"]);
    requests.extend(b"GET split\r\n");
    for byte in &requests {
        c.send(&[*byte]);
        thread::sleep(Duration::from_millis(1));
    }
    c.expect(b"+OK\r\n$8\r\na\r\nvalue\r\n");
}

#[test]
fn inline_commands_as_telnet_sends_them() {
    let mut c = Client::connect(server(1, DriveArg::Inline));
    c.send(b"PING\r\n");
    c.expect(b"+PONG\r\n");
    c.send(b"SET inline  word\nGET inline\r\n\r\n   ECHO\thi  \r\nMGET inline x\r\n");
    c.expect(b"+OK\r\n$4\r\nword\r\n$2\r\nhi\r\n*2\r\n$4\r\nword\r\n$-1\r\n");
    c.send(b"nope 1\r\n");
    c.expect(b"-ERR unknown command 'nope', with args beginning with: '1' \r\n");
}

#[test]
fn fifty_clients_at_once_each_see_their_own_values() {
    // The last: workers that sleep as soon as they find nothing, woken for every request.
    let servers = [
        (DriveArg::Inline, false),
        (DriveArg::Thread, false),
        (DriveArg::Inline, true),
    ];
    for (drive, no_spin) in servers {
        let addr = spinning_or_not(2, drive, no_spin);
        let clients: Vec<_> = (0..50)
            .map(|id| {
                thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    for round in 0..100 {
                        let key = format!("client:{id}:{}", round % 10);
                        let value = format!("{id}-{round}-{}", "x".repeat(round));
                        c.call(&[b"SET", key.as_bytes(), value.as_bytes()], b"+OK\r\n");
                        c.call(&[b"GET", key.as_bytes()], &bulk(value.as_bytes()));
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().expect("client thread");
        }
        let mut c = Client::connect(addr);
        c.call(
            &[b"GET", b"client:49:9"],
            &bulk(format!("49-99-{}", "x".repeat(99)).as_bytes()),
        );
    }
}

#[test]
fn a_client_that_never_stops_sending_leaves_room_for_others() {
    let addr = server(1, DriveArg::Inline);
    let mut flood = Client::connect(addr);
    let mut replies = flood.stream.try_clone().unwrap();
    let others_done = Arc::new(AtomicBool::new(false));
    // Sends pipelines of PINGs until the other client is done (or ten seconds passed).
    let writer = thread::spawn({
        let others_done = Arc::clone(&others_done);
        move || {
            let (start, batch, mut sent) = (Instant::now(), b"PING\r\n".repeat(1000), 0);
            while !others_done.load(Ordering::Relaxed) && start.elapsed() < TIMEOUT {
                flood.send(&batch);
                sent += 1000;
            }
            flood.stream.shutdown(Shutdown::Write).unwrap();
            sent
        }
    });
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        replies
            .read_to_end(&mut got)
            .expect("replies until the end");
        got
    });
    let mut other = Client::connect(addr);
    for _ in 0..20 {
        other.call(&[b"PING"], b"+PONG\r\n");
    }
    others_done.store(true, Ordering::Relaxed);
    let sent = writer.join().expect("flood sent");
    let got = reader.join().expect("flood answered");
    assert_eq!(got.len(), sent * 7);
    assert!(got.chunks(7).all(|reply| reply == b"+PONG\r\n"));
}

#[test]
fn keys_expire() {
    let mut c = Client::connect(server(1, DriveArg::Inline));
    let start = Instant::now();
    c.call(&[b"SET", b"px", b"v", b"PX", b"50"], b"+OK\r\n");
    c.call(&[b"SET", b"ex", b"v", b"EX", b"1"], b"+OK\r\n");
    c.call(&[b"SET", b"kept", b"1", b"PX", b"50"], b"+OK\r\n");
    c.call(&[b"SET", b"kept", b"1"], b"+OK\r\n");
    if start.elapsed() < Duration::from_millis(40) {
        c.call(&[b"GET", b"px"], b"$1\r\nv\r\n");
    }
    thread::sleep(Duration::from_millis(400));
    c.call(&[b"GET", b"px"], b"$-1\r\n");
    c.call(&[b"EXISTS", b"px", b"kept"], b":1\r\n");
    if start.elapsed() < Duration::from_millis(900) {
        c.call(&[b"GET", b"ex"], b"$1\r\nv\r\n");
    }
    thread::sleep(Duration::from_millis(1500).saturating_sub(start.elapsed()));
    c.call(&[b"MGET", b"ex", b"kept"], b"*2\r\n$-1\r\n$1\r\n1\r\n");
    c.call(&[b"INCR", b"ex"], b":1\r\n");
}

#[test]
fn malformed_input_is_answered_then_the_connection_closed() {
    let addr = server(1, DriveArg::Inline);
    let invalid_bulk = b"-ERR Protocol error: invalid bulk length\r\n";
    let over_limit = format!("*1\r\n${}\r\n", MAX_BULK + 1);
    let cases: &[(&[u8], &[u8])] = &[
        (b"*2\r\n$abc\r\n", invalid_bulk),
        (over_limit.as_bytes(), invalid_bulk),
        (b"*1\r\n$-3\r\n", invalid_bulk),
        (
            b"*x\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n+OK\r\n",
            b"-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        // The replies to the commands before the error come first.
        (
            b"PING\r\n*1\r\n$4\r\nPING\r\n*1\r\n$99999999999\r\n",
            b"+PONG\r\n+PONG\r\n-ERR Protocol error: invalid bulk length\r\n",
        ),
    ];
    for (request, reply) in cases {
        let mut c = Client::connect(addr);
        c.send(request);
        c.expect(reply);
        c.expect_closed();
    }
    // A line that never ends is cut off at the inline limit.
    let mut c = Client::connect(addr);
    let endless = vec![b'a'; 64 << 10];
    c.send(&endless);
    c.expect(b"-ERR Protocol error: too big inline request\r\n");
    match c.stream.read(&mut [0; 1]) {
        Ok(0) => {}
        Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
    // The server goes on serving others.
    Client::connect(addr).call(&[b"PING"], b"+PONG\r\n");
}

#[test]
fn redis_cli_talks_to_it() {
    if Command::new("redis-cli").arg("--version").output().is_err() {
        eprintln!("redis-cli not installed (bench-harness/scripts/install-peers.sh): skipped");
        return;
    }
    let addr = server(2, DriveArg::Inline);
    // Bounded in time by coreutils' `timeout`, as every step of these tests is.
    let redis_cli = || {
        let mut command = Command::new("timeout");
        command.args(["20", "redis-cli", "-h", &addr.ip().to_string()]);
        command.args(["-p", &addr.port().to_string()]);
        command
    };
    let cli = |args: &[&str]| {
        let output = redis_cli().args(args).output().expect("redis-cli runs");
        assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(cli(&["PING"]), "PONG\n");
    assert_eq!(cli(&["SET", "cli", "hello world"]), "OK\n");
    assert_eq!(cli(&["GET", "cli"]), "hello world\n");
    assert_eq!(cli(&["INCR", "counter"]), "1\n");
    assert_eq!(cli(&["MGET", "cli", "nothing"]), "hello world\n\n");
    assert_eq!(cli(&["DEL", "cli", "counter"]), "2\n");
    assert!(cli(&["BOGUS"]).contains("ERR unknown command 'BOGUS'"));
    // Many commands in one connection, as redis-cli reads them from its input.
    let mut child = redis_cli()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    let script: String = (0..100)
        .map(|i| format!("SET k{i} v{i}\nGET k{i}\n"))
        .collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let expected: String = (0..100).map(|i| format!("OK\nv{i}\n")).collect();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), expected);
}
