//! A Redis-protocol (RESP2) key-value server on one completion port.
//!
//! ```text
//! cargo run --release -p iocp-engine --example resp_server -- [--addr 127.0.0.1:6380]
//!     [--workers 1] [--pin] [--drive inline|thread] [--no-spin]
//! redis-cli -p 6380 SET greeting hello EX 60
//! ```
//!
//! Commands: `PING [message]`, `ECHO message`, `SET key value [NX|XX] [EX seconds|PX
//! milliseconds]`, `GET key`, `DEL key...`, `EXISTS key...`, `INCR key`, `MGET key...`, with
//! Redis's replies and error messages, and a `CONFIG GET` that finds nothing. Requests come
//! as RESP arrays of bulk strings (what every client library and `redis-cli` send) or as
//! inline commands (`PING\r\n`, as typed into telnet; arguments are split on spaces, without
//! quoting). Many commands may arrive in
//! one read (pipelining) and one command may arrive over many reads: the replies go back in
//! order, one write per read.
//!
//! Limits, as Redis has them but smaller: a bulk string (key, value, argument) is at most
//! [`MAX_BULK`] (64 MiB), a command has at most [`MAX_ARGS`] arguments, an inline command or a
//! header line at most [`MAX_INLINE`] (64 KiB), and the unparsed input of one connection at
//! most [`MAX_REQUEST`] (256 MiB). A declared length past a limit is a protocol error before
//! anything is allocated for it. A protocol error is answered with `-ERR Protocol error: ...`
//! after the replies to the commands before it, and the connection is then closed.
//!
//! Every worker thread dequeues from the one port, so any worker may complete any
//! connection's request. A connection has at most one request in flight (it reads, runs what
//! it read, writes the replies, and only then reads again), so its records never race and a
//! client that does not read its replies is not read either. A connection whose reads keep
//! completing at once yields after [`ROUNDS_PER_TURN`] of them, so that a client that never
//! stops sending cannot keep a worker from the others. Keys with a time to live expire
//! when touched, and a sweep every [`SWEEP_EVERY`] removes those nobody touches. The whole
//! store sits behind one mutex, which makes every command atomic, as in Redis.

use clap::{Parser, ValueEnum};
use iocp::{Completion, Drive, OpResult, Port, Socket, Submitted};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest bulk string (a key, a value, any argument), as Redis's `proto-max-bulk-len`.
pub const MAX_BULK: usize = 64 << 20;
/// Most arguments in one command.
pub const MAX_ARGS: usize = 1 << 20;
/// Longest inline command, and longest `*` or `$` header line.
pub const MAX_INLINE: usize = 64 << 10;
/// Most unparsed input one connection may hold (as Redis's `client-query-buffer-limit`).
pub const MAX_REQUEST: usize = 256 << 20;
/// How often each worker removes keys whose time to live has passed.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Key of the listener's records; connections count up from 0.
const LISTENER: u64 = u64::MAX;
/// Reads that complete at once one connection may run before it lets the others go first:
/// a client that never stops sending must not keep a worker to itself.
const ROUNDS_PER_TURN: usize = 16;
const READ_SIZE: usize = 16 * 1024;

/// A Redis-protocol server on a completion port.
#[derive(Parser, Debug)]
pub struct Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6380")]
    pub addr: SocketAddr,
    /// Threads dequeuing from the port.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,
    /// Pin worker i to core i (modulo the number of cores).
    #[arg(long)]
    pub pin: bool,
    /// Who collects socket readiness: the waiting workers in turn, or a reactor thread.
    #[arg(long, value_enum, default_value_t = DriveArg::Inline)]
    pub drive: DriveArg,
    /// Workers sleep as soon as they find nothing, instead of spinning up to 100 µs first:
    /// less CPU under load, more latency (`PortBuilder::spin_limit`).
    #[arg(long)]
    pub no_spin: bool,
}

/// [`Drive`] as a command-line value.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DriveArg {
    /// The waiting workers take turns polling for readiness.
    Inline,
    /// A reactor thread of its own polls for readiness.
    Thread,
}

fn main() -> io::Result<()> {
    let options = Options::parse();
    let (addr, workers) = start(&options)?;
    println!("listening on {addr}");
    for worker in workers {
        worker.join().expect("worker panicked")?;
    }
    Ok(())
}

/// Binds the listener and starts the workers; returns the bound address and the workers.
pub fn start(options: &Options) -> io::Result<(SocketAddr, Vec<JoinHandle<io::Result<()>>>)> {
    let drive = match options.drive {
        DriveArg::Inline => Drive::Inline,
        DriveArg::Thread => Drive::Thread,
    };
    let workers = usize::from(options.workers);
    let mut port = Port::builder().drive(drive).concurrency(workers);
    if options.no_spin {
        port = port.spin_limit(Duration::ZERO);
    }
    let port = port.build()?;
    let listener = TcpListener::bind(options.addr)?;
    let addr = listener.local_addr()?;
    let server = Arc::new(Server {
        listener: Socket::associated(listener, &port, LISTENER)?,
        port,
        conns: Mutex::new(HashMap::new()),
        next_key: AtomicU64::new(0),
        accept_stalled: AtomicBool::new(false),
        deferred: Mutex::new(Vec::new()),
        store: Store::default(),
    });
    server.accept_all();
    let cores = match options.pin {
        true => core_affinity::get_core_ids().unwrap_or_default(),
        false => Vec::new(),
    };
    let handles = (0..workers)
        .map(|i| {
            let server = Arc::clone(&server);
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            thread::Builder::new()
                .name(format!("resp-worker-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    server.run_worker()
                })
        })
        .collect::<io::Result<_>>()?;
    Ok((addr, handles))
}

// ---------------------------------------------------------------------------------------
// Connections on the port
// ---------------------------------------------------------------------------------------

/// What the workers share.
struct Server {
    port: Port,
    listener: Socket,
    /// Open connections by key. Looked up once per record; each connection has its own lock.
    conns: Mutex<HashMap<u64, Arc<Mutex<Conn>>>>,
    next_key: AtomicU64,
    /// Set when an accept failed at once (as with `EMFILE`): no record will come for it,
    /// so the next worker tick tries again.
    accept_stalled: AtomicBool,
    /// Connections that used up their turn, to read again after the next look at the port.
    deferred: Mutex<Vec<u64>>,
    store: Store,
}

/// A connection between requests.
struct Conn {
    socket: Socket,
    key: u64,
    /// The request in flight (there is never more than one).
    pending: Op,
    /// Received bytes not yet parsed into a whole command.
    input: Vec<u8>,
    /// The receive buffer, between reads.
    read_buf: Vec<u8>,
    /// The reply buffer, between writes.
    reply_buf: Vec<u8>,
    /// Set by a protocol error: close once the replies are out.
    closing: bool,
}

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
}

/// What a connection asks for after a completion.
enum Want {
    Read,
    Write(Vec<u8>),
    Close,
}

impl Server {
    fn run_worker(&self) -> io::Result<()> {
        let mut records = vec![Completion::default(); 64];
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        loop {
            // With connections waiting for their next turn, only poll: on the inline drive
            // a poll of an empty port is also what collects the other sockets' readiness.
            let deferred = std::mem::take(&mut *lock(&self.deferred));
            let timeout = match deferred.is_empty() {
                true => SWEEP_EVERY,
                false => Duration::ZERO,
            };
            match self.port.get_up_to(&mut records, Some(timeout)) {
                Ok(n) => records[..n]
                    .iter()
                    .for_each(|record| self.on_record(record)),
                Err(err) if err.kind() == io::ErrorKind::TimedOut => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
            for key in deferred {
                self.run_conn(key, |_| Some(Want::Read));
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.store.lock().sweep(now);
                // Relaxed: the flag only says whether to try; `accept` does the rest.
                if self.accept_stalled.swap(false, Ordering::Relaxed) {
                    self.accept_all();
                }
                next_sweep = now + SWEEP_EVERY;
            }
        }
    }

    fn on_record(&self, record: &Completion) {
        if record.key() == LISTENER {
            if let Ok(done) = self.listener.finish(record) {
                self.adopt(done);
            }
            self.accept_all();
            return;
        }
        self.run_conn(record.key(), |conn| {
            let done = conn.socket.finish(record).ok()?;
            Some(conn.completed(done, &self.store))
        });
    }

    /// Runs connection `key` from what `want` says it wants next, if it is still open.
    fn run_conn(&self, key: u64, want: impl FnOnce(&mut Conn) -> Option<Want>) {
        let Some(conn) = lock(&self.conns).get(&key).cloned() else {
            return;
        };
        let mut conn = lock(&conn);
        let Some(want) = want(&mut conn) else { return };
        if !conn.advance(want, self) {
            lock(&self.conns).remove(&key);
        }
    }

    /// Accepts until an accept has to wait; its record comes back to [`Self::on_record`].
    fn accept_all(&self) {
        loop {
            match self.listener.accept() {
                Ok(Submitted::Done(done)) => self.adopt(done),
                Ok(Submitted::Pending(_)) => return,
                Err(err) => {
                    eprintln!("resp_server: accept: {err}; trying again in {SWEEP_EVERY:?}");
                    // Relaxed: as where it is read.
                    self.accept_stalled.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    fn adopt(&self, done: OpResult) {
        let Some(fd) = done.accepted else { return };
        // Relaxed: keys need only be unique.
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let socket = match associate(&self.port, fd, key) {
            Ok(socket) => socket,
            Err(err) => return eprintln!("resp_server: new connection: {err}"),
        };
        let conn = Arc::new(Mutex::new(Conn {
            socket,
            key,
            pending: Op::Read,
            input: Vec::new(),
            read_buf: Vec::new(),
            reply_buf: Vec::new(),
            closing: false,
        }));
        // In the table before its first request, whose record may come to another worker.
        lock(&self.conns).insert(key, Arc::clone(&conn));
        if !lock(&conn).advance(Want::Read, self) {
            lock(&self.conns).remove(&key);
        }
    }
}

/// Replies are small and a client waits for them: Nagle's delay would only add latency.
fn associate(port: &Port, fd: OwnedFd, key: u64) -> io::Result<Socket> {
    let stream = TcpStream::from(fd);
    stream.set_nodelay(true)?;
    Socket::associated(stream, port, key)
}

impl Conn {
    /// Submits what the connection wants, and what follows from requests that complete at
    /// once, until one is pending or its turn is over (true) or the connection is to be
    /// closed (false).
    fn advance(&mut self, mut want: Want, server: &Server) -> bool {
        let mut rounds = 0;
        loop {
            let submitted = match want {
                Want::Close => return false,
                Want::Read if rounds == ROUNDS_PER_TURN => {
                    lock(&server.deferred).push(self.key);
                    return true;
                }
                Want::Read => {
                    rounds += 1;
                    self.pending = Op::Read;
                    let mut buf = std::mem::take(&mut self.read_buf);
                    buf.resize(READ_SIZE, 0);
                    self.socket.recv(buf)
                }
                Want::Write(replies) => {
                    self.pending = Op::Write;
                    self.socket.send(replies)
                }
            };
            want = match submitted {
                Ok(Submitted::Pending(_)) => return true,
                Ok(Submitted::Done(done)) => self.completed(done, &server.store),
                Err(_) => Want::Close,
            };
        }
    }

    fn completed(&mut self, done: OpResult, store: &Store) -> Want {
        match self.pending {
            Op::Read => self.received(done, store),
            Op::Write => self.sent(done),
        }
    }

    fn received(&mut self, done: OpResult, store: &Store) -> Want {
        let n = match done.result {
            Ok(0) | Err(_) => return Want::Close,
            Ok(n) => n,
        };
        self.input.extend_from_slice(&done.buf[..n]);
        self.read_buf = done.buf;
        let mut replies = std::mem::take(&mut self.reply_buf);
        self.closing = run_commands(&mut self.input, store, &mut replies).is_err();
        match (replies.is_empty(), self.closing) {
            (false, _) => Want::Write(replies),
            (true, false) => {
                self.reply_buf = replies;
                Want::Read
            }
            (true, true) => Want::Close,
        }
    }

    fn sent(&mut self, done: OpResult) -> Want {
        if done.result.is_err() || self.closing {
            return Want::Close;
        }
        self.reply_buf = done.buf;
        self.reply_buf.clear();
        Want::Read
    }
}

/// Parses and runs every whole command at the front of `input`, appending their replies to
/// `replies`, and removes them from `input`. They run as one [`Batch`]: under one lock of
/// the store, with one reading of the clock at most. On a protocol error the error reply follows
/// the replies to the commands before it. A command still arriving is parsed again from its
/// start on the next read; bulk bodies are skipped by their length, so that costs a scan of
/// its header lines only.
fn run_commands(
    input: &mut Vec<u8>,
    store: &Store,
    replies: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let mut batch = Batch::new(store);
    let mut args = Vec::new();
    let mut used = 0;
    let result = loop {
        match parse(&input[used..], &mut args) {
            Ok(Some(len)) => {
                used += len;
                if !args.is_empty() {
                    execute(&args, &mut batch, replies);
                }
            }
            Ok(None) if input.len() - used > MAX_REQUEST => {
                break Err(ProtocolError("too big request"));
            }
            Ok(None) => break Ok(()),
            Err(err) => break Err(err),
        }
    };
    // Unlocks the store.
    drop(batch);
    if let Err(err) = &result {
        error(replies, &format!("Protocol error: {}", err.0));
    }
    input.drain(..used);
    result
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under the lock leaves the data consistent enough for an example: go on.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------
// RESP2 parser
// ---------------------------------------------------------------------------------------

/// A request that breaks the protocol; the text follows `Protocol error: ` in the reply.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

/// Parses the command at the front of `buf` into `args` (its arguments, borrowed from
/// `buf`; cleared first, so that one vector serves a whole batch) and returns how many
/// bytes it took; `Ok(None)` until it has all arrived. An empty command (`*0`, a blank
/// inline line) has no arguments and is skipped.
pub fn parse<'a>(buf: &'a [u8], args: &mut Vec<&'a [u8]>) -> Result<Option<usize>, ProtocolError> {
    args.clear();
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf, args),
        Some(_) => parse_inline(buf, args),
    }
}

/// `*<count>\r\n` then `count` bulk strings `$<len>\r\n<bytes>\r\n`.
fn parse_array<'a>(
    buf: &'a [u8],
    args: &mut Vec<&'a [u8]>,
) -> Result<Option<usize>, ProtocolError> {
    let Some((header, mut at)) = header_line(buf, 0, "too big mbulk count string")? else {
        return Ok(None);
    };
    let count = match parse_i64(&header[1..]) {
        Some(n) if n <= 0 => return Ok(Some(at)),
        Some(n) if n as u64 <= MAX_ARGS as u64 => n as usize,
        _ => return Err(ProtocolError("invalid multibulk length")),
    };
    for _ in 0..count {
        let Some((header, body)) = header_line(buf, at, "too big bulk count string")? else {
            return Ok(None);
        };
        if header[0] != b'$' {
            return Err(ProtocolError(expected_dollar(header[0])));
        }
        let len = match parse_i64(&header[1..]) {
            Some(n) if (0..=MAX_BULK as i64).contains(&n) => n as usize,
            _ => return Err(ProtocolError("invalid bulk length")),
        };
        let Some(arg_and_crlf) = buf.get(body..body + len + 2) else {
            return Ok(None);
        };
        if !arg_and_crlf.ends_with(b"\r\n") {
            return Err(ProtocolError("expected CRLF after bulk string"));
        }
        args.push(&arg_and_crlf[..len]);
        at = body + len + 2;
    }
    Ok(Some(at))
}

/// The `\r\n`-terminated line at `buf[at..]` (without its terminator) and where the next
/// begins; `Ok(None)` until it has arrived.
fn header_line<'a>(
    buf: &'a [u8],
    at: usize,
    too_long: &'static str,
) -> Result<Option<(&'a [u8], usize)>, ProtocolError> {
    let rest = &buf[at..];
    let window = &rest[..rest.len().min(MAX_INLINE)];
    match window.iter().position(|&b| b == b'\n') {
        Some(nl) if nl >= 2 && rest[nl - 1] == b'\r' => Ok(Some((&rest[..nl - 1], at + nl + 1))),
        Some(_) => Err(ProtocolError("expected a header line ending in CRLF")),
        None if rest.len() >= MAX_INLINE => Err(ProtocolError(too_long)),
        None => Ok(None),
    }
}

fn expected_dollar(got: u8) -> &'static str {
    // Redis quotes the byte it got; a fixed set of messages keeps the error static.
    match got {
        b'+' => "expected '$', got '+'",
        b'-' => "expected '$', got '-'",
        b':' => "expected '$', got ':'",
        b'*' => "expected '$', got '*'",
        _ => "expected '$'",
    }
}

/// A line of words separated by spaces, ended by `\n` or `\r\n`.
fn parse_inline<'a>(
    buf: &'a [u8],
    args: &mut Vec<&'a [u8]>,
) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_INLINE)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return match buf.len() >= MAX_INLINE {
            true => Err(ProtocolError("too big inline request")),
            false => Ok(None),
        };
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    args.extend(
        line.split(|&b| b == b' ' || b == b'\t')
            .filter(|word| !word.is_empty()),
    );
    Ok(Some(nl + 1))
}

/// A decimal integer as Redis reads one: optional `-`, digits, no leading zeros, no `+`.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    let leading_zero = digits.len() > 1 && digits[0] == b'0';
    if digits.is_empty() || leading_zero || (negative && digits == b"0") {
        return None;
    }
    digits.iter().try_fold(0i64, |n, &d| {
        let d = d.is_ascii_digit().then(|| i64::from(d - b'0'))?;
        let n = n.checked_mul(10)?;
        match negative {
            true => n.checked_sub(d),
            false => n.checked_add(d),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// A command: its name and its arity as Redis counts it (the name included; negative means
/// at least that many).
struct Command {
    name: &'static str,
    arity: i32,
    run: fn(&[&[u8]], &mut Batch<'_>, &mut Vec<u8>),
}

const COMMANDS: &[Command] = &[
    Command {
        name: "get",
        arity: 2,
        run: get,
    },
    Command {
        name: "set",
        arity: -3,
        run: set,
    },
    Command {
        name: "ping",
        arity: -1,
        run: ping,
    },
    Command {
        name: "echo",
        arity: 2,
        run: echo,
    },
    Command {
        name: "del",
        arity: -2,
        run: del,
    },
    Command {
        name: "exists",
        arity: -2,
        run: exists,
    },
    Command {
        name: "incr",
        arity: 2,
        run: incr,
    },
    Command {
        name: "mget",
        arity: -2,
        run: mget,
    },
    Command {
        name: "config",
        arity: -2,
        run: config,
    },
];

const NOT_AN_INTEGER: &str = "value is not an integer or out of range";

/// Runs one command (`args[0]` is its name) and appends its reply.
fn execute(args: &[&[u8]], batch: &mut Batch<'_>, replies: &mut Vec<u8>) {
    let name = args[0];
    let Some(command) = COMMANDS
        .iter()
        .find(|c| name.eq_ignore_ascii_case(c.name.as_bytes()))
    else {
        return unknown_command(args, replies);
    };
    let arity_ok = match command.arity {
        n if n < 0 => args.len() >= n.unsigned_abs() as usize,
        n => args.len() == n as usize,
    };
    if !arity_ok {
        return wrong_arity(command.name, replies);
    }
    (command.run)(&args[1..], batch, replies)
}

fn unknown_command(args: &[&[u8]], replies: &mut Vec<u8>) {
    // As Redis: the arguments quoted while their list is shorter than 128 bytes.
    let mut quoted = String::new();
    for arg in &args[1..] {
        if quoted.len() >= 128 {
            break;
        }
        quoted += &format!("'{}' ", printable(arg, 128 - quoted.len()));
    }
    let name = printable(args[0], 128);
    error(
        replies,
        &format!("unknown command '{name}', with args beginning with: {quoted}"),
    );
}

/// At most `max` bytes of an argument, for an error reply: no line breaks.
fn printable(arg: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&arg[..arg.len().min(max)]).replace(['\r', '\n'], " ")
}

fn wrong_arity(name: &str, replies: &mut Vec<u8>) {
    error(
        replies,
        &format!("wrong number of arguments for '{name}' command"),
    );
}

fn ping(args: &[&[u8]], _: &mut Batch<'_>, replies: &mut Vec<u8>) {
    match args {
        [] => simple(replies, "PONG"),
        [message] => bulk(replies, Some(message)),
        _ => wrong_arity("ping", replies),
    }
}

fn echo(args: &[&[u8]], _: &mut Batch<'_>, replies: &mut Vec<u8>) {
    bulk(replies, Some(args[0]));
}

fn get(args: &[&[u8]], batch: &mut Batch<'_>, replies: &mut Vec<u8>) {
    let (keyspace, now) = batch.keyspace();
    bulk(replies, keyspace.get(args[0], now));
}

/// `CONFIG GET pattern...` finds no parameter (there are none to set), which is enough for
/// `redis-benchmark`'s look at `save` and `appendonly`.
fn config(args: &[&[u8]], _: &mut Batch<'_>, replies: &mut Vec<u8>) {
    match args {
        [sub, _, ..] if sub.eq_ignore_ascii_case(b"GET") => array(replies, 0),
        [sub, ..] if sub.eq_ignore_ascii_case(b"GET") => wrong_arity("config|get", replies),
        _ => error(replies, "CONFIG supports only GET here"),
    }
}

fn mget(args: &[&[u8]], batch: &mut Batch<'_>, replies: &mut Vec<u8>) {
    let (keyspace, now) = batch.keyspace();
    array(replies, args.len());
    for key in args {
        bulk(replies, keyspace.get(key, now));
    }
}

/// `SET key value [NX|XX] [EX seconds|PX milliseconds]`.
fn set(args: &[&[u8]], batch: &mut Batch<'_>, replies: &mut Vec<u8>) {
    let options = match SetOptions::parse(&args[2..]) {
        Ok(options) => options,
        Err(message) => return error(replies, message),
    };
    let value = args[1].to_vec();
    let (keyspace, now) = batch.keyspace();
    if options.nx || options.xx {
        let exists = keyspace.get(args[0], now).is_some();
        if options.nx == exists {
            return bulk(replies, None);
        }
    }
    let expires = options.ttl.map(|ttl| now.get() + ttl);
    keyspace.set(args[0], value, expires);
    simple(replies, "OK");
}

#[derive(Default)]
struct SetOptions {
    nx: bool,
    xx: bool,
    ttl: Option<Duration>,
}

impl SetOptions {
    fn parse(mut args: &[&[u8]]) -> Result<SetOptions, &'static str> {
        let mut options = SetOptions::default();
        while let [option, rest @ ..] = args {
            args = rest;
            let unit = match option.to_ascii_uppercase().as_slice() {
                b"NX" if !options.xx => {
                    options.nx = true;
                    continue;
                }
                b"XX" if !options.nx => {
                    options.xx = true;
                    continue;
                }
                b"EX" if options.ttl.is_none() => Duration::from_secs(1),
                b"PX" if options.ttl.is_none() => Duration::from_millis(1),
                _ => return Err("syntax error"),
            };
            let [amount, rest @ ..] = args else {
                return Err("syntax error");
            };
            args = rest;
            let amount = parse_i64(amount).ok_or(NOT_AN_INTEGER)?;
            if amount <= 0 {
                return Err("invalid expire time in 'set' command");
            }
            let ttl = u32::try_from(amount)
                .ok()
                .and_then(|amount| unit.checked_mul(amount))
                .ok_or("invalid expire time in 'set' command")?;
            options.ttl = Some(ttl);
        }
        Ok(options)
    }
}

fn del(args: &[&[u8]], batch: &mut Batch<'_>, replies: &mut Vec<u8>) {
    let (keyspace, now) = batch.keyspace();
    let removed = args.iter().filter(|key| keyspace.remove(key, now)).count();
    integer(replies, removed as i64);
}

fn exists(args: &[&[u8]], batch: &mut Batch<'_>, replies: &mut Vec<u8>) {
    let (keyspace, now) = batch.keyspace();
    let found = args
        .iter()
        .filter(|key| keyspace.get(key, now).is_some())
        .count();
    integer(replies, found as i64);
}

fn incr(args: &[&[u8]], batch: &mut Batch<'_>, replies: &mut Vec<u8>) {
    let (keyspace, now) = batch.keyspace();
    let Some(entry) = keyspace.entry(args[0], now) else {
        keyspace.set(args[0], b"1".to_vec(), None);
        return integer(replies, 1);
    };
    let Some(value) = parse_i64(&entry.value) else {
        return error(replies, NOT_AN_INTEGER);
    };
    let Some(value) = value.checked_add(1) else {
        return error(replies, "increment or decrement would overflow");
    };
    // As in Redis, INCR keeps the key's time to live.
    entry.value = value.to_string().into_bytes();
    integer(replies, value);
}

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

fn simple(replies: &mut Vec<u8>, text: &str) {
    replies.extend_from_slice(b"+");
    replies.extend_from_slice(text.as_bytes());
    replies.extend_from_slice(b"\r\n");
}

fn error(replies: &mut Vec<u8>, message: &str) {
    replies.extend_from_slice(b"-ERR ");
    replies.extend_from_slice(message.as_bytes());
    replies.extend_from_slice(b"\r\n");
}

fn integer(replies: &mut Vec<u8>, n: i64) {
    replies.push(b':');
    if n < 0 {
        replies.push(b'-');
    }
    decimal(replies, n.unsigned_abs());
    replies.extend_from_slice(b"\r\n");
}

fn array(replies: &mut Vec<u8>, len: usize) {
    replies.push(b'*');
    decimal(replies, len as u64);
    replies.extend_from_slice(b"\r\n");
}

/// `n` in decimal digits (a reply's lengths and integers, without `fmt`'s machinery).
fn decimal(replies: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    replies.extend_from_slice(&digits[at..]);
}

/// A bulk string, or the null bulk string for `None`.
fn bulk(replies: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(value) = value else {
        return replies.extend_from_slice(b"$-1\r\n");
    };
    replies.push(b'$');
    decimal(replies, value.len() as u64);
    replies.extend_from_slice(b"\r\n");
    replies.extend_from_slice(value);
    replies.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------

/// The keys, shared by every worker.
#[derive(Default)]
struct Store {
    keyspace: Mutex<Keyspace>,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Keyspace> {
        lock(&self.keyspace)
    }
}

/// What the commands of one read run against: the store, locked once for them all when
/// the first of them needs it, and the clock, read once for them all when the first needs
/// the time (a key with a time to live, or one given one).
struct Batch<'a> {
    store: &'a Store,
    keyspace: Option<MutexGuard<'a, Keyspace>>,
    now: Now,
}

impl<'a> Batch<'a> {
    fn new(store: &'a Store) -> Batch<'a> {
        Batch {
            store,
            keyspace: None,
            now: Now::default(),
        }
    }

    /// The keyspace, locked for the rest of the batch, and the batch's clock.
    fn keyspace(&mut self) -> (&mut Keyspace, &mut Now) {
        let store = self.store;
        let keyspace = self.keyspace.get_or_insert_with(|| store.lock());
        (keyspace, &mut self.now)
    }
}

/// The time, read when first asked for.
#[derive(Default)]
struct Now(Option<Instant>);

impl Now {
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

#[derive(Default)]
struct Keyspace {
    entries: HashMap<Vec<u8>, Entry>,
    /// Keys given a time to live, soonest first, for the sweep: one element per SET with EX
    /// or PX whose time is still to come. An element goes stale when its key is set again
    /// or deleted; the sweep drops it all the same once its time has come.
    deadlines: BinaryHeap<Reverse<(Instant, Vec<u8>)>>,
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    /// Whether its time has passed (the clock is read only for a key that has one).
    fn expired(&self, now: &mut Now) -> bool {
        self.expires.is_some_and(|at| at <= now.get())
    }
}

impl Keyspace {
    /// The live entry under `key`, removing it first if its time has passed.
    fn entry(&mut self, key: &[u8], now: &mut Now) -> Option<&mut Entry> {
        let expired = self.entries.get(key)?.expired(now);
        if expired {
            self.entries.remove(key);
            return None;
        }
        self.entries.get_mut(key)
    }

    /// The value of the live key `key`, in one look-up: an expired one is left for the
    /// sweep, or for the next command that changes it.
    fn get(&self, key: &[u8], now: &mut Now) -> Option<&[u8]> {
        let entry = self.entries.get(key)?;
        (!entry.expired(now)).then_some(entry.value.as_slice())
    }

    fn set(&mut self, key: &[u8], value: Vec<u8>, expires: Option<Instant>) {
        if let Some(at) = expires {
            self.deadlines.push(Reverse((at, key.to_vec())));
        }
        // Overwriting keeps the key's allocation.
        let entry = Entry { value, expires };
        match self.entries.get_mut(key) {
            Some(old) => *old = entry,
            None => {
                self.entries.insert(key.to_vec(), entry);
            }
        }
    }

    /// Removes a live key; false if there was none.
    fn remove(&mut self, key: &[u8], now: &mut Now) -> bool {
        self.entry(key, now).is_some() && self.entries.remove(key).is_some()
    }

    /// Removes the keys whose time has passed, touching only deadlines that have passed.
    fn sweep(&mut self, now: Instant) {
        while self
            .deadlines
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
        {
            let Reverse((at, key)) = self.deadlines.pop().expect("peeked");
            // The key may have been set again since, with another deadline or none.
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.expires == Some(at))
            {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(buf: &[u8]) -> (Vec<&[u8]>, usize) {
        let mut args = Vec::new();
        let len = super::parse(buf, &mut args)
            .expect("valid")
            .expect("complete");
        (args, len)
    }

    /// How many bytes the command at the front of `buf` takes, as `super::parse` says.
    fn parse(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        super::parse(buf, &mut Vec::new())
    }

    #[test]
    fn array_of_bulk_strings() {
        let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest";
        assert_eq!(parsed(buf), (vec![&b"GET"[..], b"k"], buf.len() - 4));
    }

    #[test]
    fn bulk_strings_may_hold_any_byte() {
        let buf = b"*1\r\n$4\r\n\r\n\0*\r\n";
        assert_eq!(parsed(buf).0, vec![&b"\r\n\0*"[..]]);
    }

    #[test]
    fn incomplete_until_every_byte_has_come() {
        let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        for end in 0..buf.len() {
            assert_eq!(parse(&buf[..end]), Ok(None), "{end} bytes");
        }
    }

    #[test]
    fn empty_arrays_are_skipped() {
        assert_eq!(parsed(b"*0\r\n"), (vec![], 4));
        assert_eq!(parsed(b"*-1\r\n"), (vec![], 5));
    }

    #[test]
    fn inline_commands_split_on_spaces() {
        assert_eq!(parsed(b"PING\r\n"), (vec![&b"PING"[..]], 6));
        assert_eq!(parsed(b"  SET a  b\n").0, vec![&b"SET"[..], b"a", b"b"]);
        assert_eq!(parsed(b"\r\n"), (vec![], 2));
        assert_eq!(parse(b"PIN"), Ok(None));
    }

    #[test]
    fn bad_lengths_are_protocol_errors() {
        let invalid_bulk = Err(ProtocolError("invalid bulk length"));
        assert_eq!(parse(b"*2\r\n$abc\r\n"), invalid_bulk);
        assert_eq!(parse(b"*1\r\n$-1\r\n"), invalid_bulk);
        assert_eq!(parse(b"*1\r\n$+3\r\n"), invalid_bulk);
        let too_long = format!("*1\r\n${}\r\n", MAX_BULK + 1);
        assert_eq!(parse(too_long.as_bytes()), invalid_bulk);
        let invalid_count = Err(ProtocolError("invalid multibulk length"));
        assert_eq!(parse(b"*x\r\n"), invalid_count);
        let too_many = format!("*{}\r\n", MAX_ARGS + 1);
        assert_eq!(parse(too_many.as_bytes()), invalid_count);
    }

    #[test]
    fn malformed_framing_is_a_protocol_error() {
        let got_plus = Err(ProtocolError("expected '$', got '+'"));
        assert_eq!(parse(b"*1\r\n+OK\r\n"), got_plus);
        assert!(parse(b"*1\r\n$2\r\nabcd").is_err());
        assert!(parse(b"*1\n").is_err());
    }

    #[test]
    fn endless_lines_are_protocol_errors() {
        let line = vec![b'a'; MAX_INLINE];
        assert_eq!(parse(&line), Err(ProtocolError("too big inline request")));
        let mut header = b"*1".to_vec();
        header.resize(MAX_INLINE, b'1');
        assert_eq!(
            parse(&header),
            Err(ProtocolError("too big mbulk count string"))
        );
    }

    #[test]
    fn integers_read_as_redis_reads_them() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-42"), Some(-42));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b"01",
            b"-0",
            b"1 ",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn commands_reply_as_redis_does() {
        let store = Store::default();
        let run = |args: &[&[u8]]| {
            let mut replies = Vec::new();
            execute(args, &mut Batch::new(&store), &mut replies);
            String::from_utf8(replies).unwrap()
        };
        assert_eq!(run(&[b"SET", b"n", b"9"]), "+OK\r\n");
        assert_eq!(run(&[b"incr", b"n"]), ":10\r\n");
        assert_eq!(run(&[b"SET", b"neg", b"-10"]), "+OK\r\n");
        assert_eq!(run(&[b"incr", b"neg"]), ":-9\r\n");
        assert_eq!(run(&[b"SET", b"max", b"9223372036854775806"]), "+OK\r\n");
        assert_eq!(run(&[b"incr", b"max"]), ":9223372036854775807\r\n");
        assert_eq!(run(&[b"GET", b"max"]), "$19\r\n9223372036854775807\r\n");
        assert_eq!(run(&[b"ECHO", b""]), "$0\r\n\r\n");
        assert_eq!(run(&[b"MGET", b"n", b"none"]), "*2\r\n$2\r\n10\r\n$-1\r\n");
        assert_eq!(run(&[b"SET", b"n", b"1", b"NX"]), "$-1\r\n");
        assert_eq!(run(&[b"SET", b"m", b"1", b"XX"]), "$-1\r\n");
        assert_eq!(run(&[b"SET", b"n", b"1", b"EX"]), "-ERR syntax error\r\n");
        assert_eq!(
            run(&[b"GET"]),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
    }

    #[test]
    fn sweep_removes_only_what_has_expired() {
        let mut keyspace = Keyspace::default();
        let now = Instant::now();
        keyspace.set(b"gone", b"v".to_vec(), Some(now));
        keyspace.set(b"later", b"v".to_vec(), Some(now + Duration::from_secs(60)));
        keyspace.set(b"reset", b"v".to_vec(), Some(now));
        keyspace.set(b"reset", b"v".to_vec(), None);
        keyspace.sweep(now);
        let mut left: Vec<_> = keyspace.entries.keys().cloned().collect();
        left.sort();
        assert_eq!(left, vec![b"later".to_vec(), b"reset".to_vec()]);
        assert_eq!(keyspace.deadlines.len(), 1);
    }
}
