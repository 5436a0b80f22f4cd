//! Net: TCP and UDP echo over loopback on one port, with owned buffers and `OVERLAPPED`s,
//! cancels and closes of sockets with requests pending.

use crate::common::errno;
use crate::common::ports::DRIVES;
use crate::common::rng::{mix, pattern, Rng};
use crate::common::sockets::tcp_socket;
use crate::common::timing::BULK_PATIENCE;
use crate::posts::{serve, Posts};
use crate::{
    add, check_record, check_same, close_port, ending, ending_name, is_canceled, join, lock,
    sleep_until, wait_for, CloseOnPanic, Req, Stats, CAPACITIES, CONCURRENCY,
};
use iocp::{Completion, OpResult, Overlapped, Port, Socket, Submitted, Ticket};
use std::collections::{HashMap, VecDeque};
use std::io::{self};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const NET_CLIENTS: usize = 6;
const UDP_CLIENTS: usize = 3;
const UDP_SERVER_READS: usize = 4;
const ACCEPTS: usize = 2;
/// TCP and UDP clients a round starts at most.
const CLIENTS_MAX: usize = 400;
const CLIENT_READ: usize = 16 * 1024;
const SERVER_READ: usize = 64 * 1024;
const DATAGRAM_READ: usize = 2048;
const DATAGRAM_MAX: usize = 1400;
const CANCEL_ONE_IN: usize = 16;
const ABORT_ONE_IN: usize = 64;
/// Overlapped socket requests a round makes at most (their blocks stay allocated until the
/// round ends, so that no block address is reused meanwhile).
const SOCKET_OVERLAPPED_MAX: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Listener,
    Client,
    Server,
    UdpServer,
    UdpClient,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NetOp {
    Accept,
    Connect,
    Recv,
    Send(usize),
    RecvFrom,
    SendTo(usize),
}

struct Conn {
    socket: Socket,
    kind: Kind,
    closed: bool,
    /// Requests whose record has not been seen; the socket is kept until none is left,
    /// since only it can `finish` them.
    pending: usize,
    /// TCP client: the message being echoed, how much came back, messages still to send,
    /// whether the first was sent.
    msg: Vec<u8>,
    got: usize,
    messages_left: usize,
    started: bool,
    /// UDP client: the datagram being echoed.
    seq: u64,
    /// TCP client: sends and recvs go through `Overlapped` blocks and caller memory (the C
    /// ABI's `WriteFile`/`ReadFile` path) rather than owned buffers.
    overlapped: bool,
}

/// An overlapped socket request: the block whose address its record carries, and its
/// buffer (taken back when the request is done).
struct OvlIo {
    ovl: Overlapped,
    buf: Vec<u8>,
}

/// The net round's state; its port's serving threads take turns at it.
struct Net<'a> {
    port: Port,
    stats: &'a Stats,
    rng: Rng,
    stopping: bool,
    listen_addr: SocketAddr,
    udp_addr: SocketAddr,
    conns: HashMap<u64, Conn>,
    next_key: u64,
    /// Pending owned-buffer requests by ticket.
    open: HashMap<Ticket, (u64, NetOp)>,
    /// Pending overlapped requests by block address: socket, request, `OvlIo` address.
    open_ovl: HashMap<usize, (u64, NetOp, usize)>,
    /// Every overlapped request of the round, freed when it ends.
    ovl_all: Vec<usize>,
    /// Requests a cancel reached: `true` when it said it cancelled (then `ECANCELED` is due),
    /// `false` when it may have (a cancel of everything).
    cancels: HashMap<Req, bool>,
    /// Results of requests that completed at once, handled after the current one.
    ready: VecDeque<(u64, NetOp, OpResult)>,
    clients: usize,
}

impl<'a> Net<'a> {
    fn new(port: Port, stats: &'a Stats, rng: Rng) -> Net<'a> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut net = Net {
            port,
            stats,
            rng,
            stopping: false,
            listen_addr: listener.local_addr().unwrap(),
            udp_addr: udp.local_addr().unwrap(),
            conns: HashMap::new(),
            next_key: 1,
            open: HashMap::new(),
            open_ovl: HashMap::new(),
            ovl_all: Vec::new(),
            cancels: HashMap::new(),
            ready: VecDeque::new(),
            clients: 0,
        };
        let listener = net
            .add(listener, Kind::Listener)
            .expect("a new port is open");
        for _ in 0..ACCEPTS {
            net.read(listener);
        }
        let udp = net.add(udp, Kind::UdpServer).expect("a new port is open");
        for _ in 0..UDP_SERVER_READS {
            net.read(udp);
        }
        for _ in 0..NET_CLIENTS {
            net.start_client();
        }
        for _ in 0..UDP_CLIENTS {
            net.start_udp_client();
        }
        net.run_ready();
        net
    }

    fn conn(&mut self, key: u64) -> &mut Conn {
        self.conns
            .get_mut(&key)
            .expect("a socket stays while its requests are pending")
    }

    /// Associates a socket under a fresh key; `None` once the round closed the port.
    fn add(&mut self, fd: impl Into<OwnedFd>, kind: Kind) -> Option<u64> {
        let key = self.next_key;
        self.next_key += 1;
        match Socket::associated(fd, &self.port, key) {
            Ok(socket) => {
                let messages_left = 1 + self.rng.below(6);
                let overlapped = kind == Kind::Client && self.rng.one_in(3);
                let conn = Conn {
                    socket,
                    kind,
                    closed: false,
                    pending: 0,
                    msg: Vec::new(),
                    got: 0,
                    messages_left,
                    started: false,
                    seq: 0,
                    overlapped,
                };
                self.conns.insert(key, conn);
                Some(key)
            }
            Err(err) if err.raw_os_error() == Some(libc::EBADF) && self.port.is_closed() => None,
            Err(err) => panic!("associate: {err}"),
        }
    }

    fn submit(&mut self, key: u64, op: NetOp, submitted: io::Result<Submitted>) -> Option<Req> {
        add(&self.stats.socket_ops, 1);
        match submitted.unwrap_or_else(|err| panic!("#{key} {op:?} refused: {err}")) {
            Submitted::Pending(ticket) => {
                let fresh = self.open.insert(ticket, (key, op)).is_none();
                assert!(fresh, "ticket {ticket} handed out twice");
                self.conn(key).pending += 1;
                Some(Req::Ticket(ticket))
            }
            Submitted::Done(done) => {
                add(&self.stats.socket_ops_at_once, 1);
                self.ready.push_back((key, op, done));
                None
            }
        }
    }

    /// Issues `op` (a recv or a send of `buf`) on a socket through an `Overlapped`.
    fn submit_overlapped(&mut self, key: u64, op: NetOp, buf: Vec<u8>) -> Option<Req> {
        add(&self.stats.socket_ops, 1);
        let raw = Box::into_raw(Box::new(OvlIo {
            ovl: Overlapped::new(),
            buf,
        }));
        self.ovl_all.push(raw as usize);
        // SAFETY: a fresh allocation that nothing else refers to yet.
        let io = unsafe { &mut *raw };
        let (ptr, len, ovl) = (
            io.buf.as_mut_ptr(),
            io.buf.len(),
            std::ptr::addr_of!(io.ovl),
        );
        let socket = &self.conns[&key].socket;
        // SAFETY: the block and the buffer stay allocated, the buffer untouched, until the
        // block reads complete: the round frees them only at its end, once every socket is
        // closed (which completes what is pending), and takes the buffer back only then.
        let started = unsafe {
            match op {
                NetOp::Send(_) => socket.write_overlapped(ptr, len, ovl),
                _ => socket.read_overlapped(ptr, len, ovl),
            }
        };
        let result = match started {
            Ok(None) => {
                self.open_ovl.insert(ovl as usize, (key, op, raw as usize));
                self.conn(key).pending += 1;
                return Some(Req::At(ovl as usize));
            }
            Ok(Some(n)) => Ok(n as usize),
            Err(err) => Err(err),
        };
        // Done (or failed) at once: no record comes, the block says the same.
        let block = io.ovl.get_result(false).map(|n| n as usize);
        check_same(&block, &result);
        add(&self.stats.socket_ops_at_once, 1);
        let done = OpResult {
            result,
            buf: std::mem::take(&mut io.buf),
            peer: None,
            accepted: None,
        };
        self.ready.push_back((key, op, done));
        None
    }

    /// Cancels one pending request, which then must end `ECANCELED` unless it was done.
    fn cancel(&mut self, key: u64, req: Req) {
        add(&self.stats.cancel_calls, 1);
        let socket = &self.conns[&key].socket;
        let cancelled = match req {
            Req::Ticket(ticket) => socket.cancel(ticket),
            Req::At(at) => socket.cancel_overlapped(at as *const Overlapped),
        };
        match cancelled {
            Ok(()) => {
                self.cancels.insert(req, true);
            }
            // It completed first: cancelled or completed, never both.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                add(&self.stats.cancel_misses, 1)
            }
            Err(err) => panic!("cancel: {err}"),
        }
    }

    /// Cancels everything a socket has pending (`CancelIoEx` with no overlapped).
    fn cancel_all(&mut self, key: u64) {
        add(&self.stats.cancel_calls, 1);
        let tickets = self.open.iter().filter(|(_, (k, _))| *k == key);
        let blocks = self.open_ovl.iter().filter(|(_, (k, _, _))| *k == key);
        let reached: Vec<Req> = tickets
            .map(|(ticket, _)| Req::Ticket(*ticket))
            .chain(blocks.map(|(at, _)| Req::At(*at)))
            .collect();
        match self.conns[&key].socket.cancel_all() {
            Ok(_) => {
                for req in reached {
                    self.cancels.entry(req).or_insert(false);
                }
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                add(&self.stats.cancel_misses, 1)
            }
            Err(err) => panic!("cancel_all: {err}"),
        }
    }

    /// Issues the socket's read-direction request; some are cancelled at once.
    fn read(&mut self, key: u64) {
        let conn = self.conn(key);
        if conn.kind == Kind::Client && conn.overlapped {
            if let Some(req) = self.submit_overlapped(key, NetOp::Recv, vec![0; CLIENT_READ]) {
                if self.rng.one_in(CANCEL_ONE_IN) {
                    self.cancel(key, req);
                }
            }
            return;
        }
        let (op, submitted) = match conn.kind {
            Kind::Listener => (NetOp::Accept, conn.socket.accept()),
            Kind::Client => (NetOp::Recv, conn.socket.recv(vec![0; CLIENT_READ])),
            Kind::Server => (NetOp::Recv, conn.socket.recv(vec![0; SERVER_READ])),
            Kind::UdpServer | Kind::UdpClient => (
                NetOp::RecvFrom,
                conn.socket.recv_from(vec![0; DATAGRAM_READ]),
            ),
        };
        if let Some(req) = self.submit(key, op, submitted) {
            if self.rng.one_in(CANCEL_ONE_IN) {
                self.cancel(key, req);
            }
        }
    }

    /// Closes a socket; what it has pending completes with `ECANCELED`.
    fn close(&mut self, key: u64) {
        let stats = self.stats;
        let conn = self.conn(key);
        if conn.closed {
            return;
        }
        conn.closed = true;
        add(&stats.closes, 1);
        if conn.pending > 0 {
            add(&stats.closes_with_pending, 1);
        }
        conn.socket
            .close()
            .expect("the first close of a socket succeeds");
    }

    fn start_client(&mut self) {
        if self.stopping || self.clients >= CLIENTS_MAX {
            return;
        }
        self.clients += 1;
        add(&self.stats.connections, 1);
        if self.rng.one_in(4) {
            // std's blocking connect: the socket joins the port connected.
            let stream = TcpStream::connect(self.listen_addr).expect("connect to our listener");
            if let Some(key) = self.add(stream, Kind::Client) {
                self.start_message(key);
                self.read(key);
            }
            return;
        }
        let Some(key) = self.add(tcp_socket(libc::AF_INET), Kind::Client) else {
            return;
        };
        let addr = self.listen_addr;
        let submitted = self.conn(key).socket.connect(addr);
        self.submit(key, NetOp::Connect, submitted);
        if self.rng.one_in(2) {
            // The send queues behind the pending connect, the recv waits for it.
            self.start_message(key);
            self.read(key);
        }
    }

    fn start_message(&mut self, key: u64) {
        let len = if self.rng.one_in(8) {
            1 + self.rng.below(256 * 1024)
        } else {
            1 + self.rng.below(4096)
        };
        let msg = pattern(self.rng.next(), len);
        let room = self.ovl_all.len() < SOCKET_OVERLAPPED_MAX;
        let conn = self.conn(key);
        conn.started = true;
        conn.got = 0;
        conn.msg = msg.clone();
        if conn.overlapped && room {
            self.submit_overlapped(key, NetOp::Send(len), msg);
        } else {
            let submitted = conn.socket.send(msg);
            self.submit(key, NetOp::Send(len), submitted);
        }
    }

    fn start_udp_client(&mut self) {
        if self.stopping || self.clients >= CLIENTS_MAX {
            return;
        }
        self.clients += 1;
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
        if let Some(key) = self.add(socket, Kind::UdpClient) {
            self.read(key);
            self.send_datagram(key);
        }
    }

    fn send_datagram(&mut self, key: u64) {
        let to = self.udp_addr;
        let conn = self.conn(key);
        let datagram = datagram(key, conn.seq);
        let len = datagram.len();
        let submitted = conn.socket.send_to(datagram, to);
        self.submit(key, NetOp::SendTo(len), submitted);
    }

    /// A record from the port: it must name a pending request, which `finish` (or the
    /// request's block) completes.
    fn on_record(&mut self, record: &Completion) {
        if let Some((key, op, raw)) = self.open_ovl.remove(&record.overlapped()) {
            assert_eq!(record.key(), key, "{record:?}: the key of another socket");
            self.conn(key).pending -= 1;
            let done = take_overlapped(raw);
            check_record(record, &done.result);
            let cancel = self.cancels.remove(&Req::At(record.overlapped()));
            self.on_result(key, op, done, cancel);
            self.run_ready();
            return;
        }
        let ticket = Ticket::of(record);
        let (key, op) = self.open.remove(&ticket).unwrap_or_else(|| {
            panic!("{record:?}: no request has this ticket pending (unknown, or a second record)")
        });
        assert_eq!(record.key(), key, "{record:?}: the key of another socket");
        let conn = self.conn(key);
        conn.pending -= 1;
        let done = conn
            .socket
            .finish(record)
            .unwrap_or_else(|err| panic!("{record:?}: finish: {err}"));
        check_record(record, &done.result);
        let cancel = self.cancels.remove(&Req::Ticket(ticket));
        self.on_result(key, op, done, cancel);
        self.run_ready();
    }

    /// `cancel`: whether a cancel reached the request, and if it said it cancelled it.
    fn on_result(&mut self, key: u64, op: NetOp, done: OpResult, cancel: Option<bool>) {
        let conn = self.conn(key);
        let (kind, closed) = (conn.kind, conn.closed);
        if is_canceled(&done.result) {
            add(&self.stats.cancelled, 1);
            assert!(
                cancel.is_some() || closed,
                "#{key} {op:?}: ECANCELED, yet neither cancelled nor closed"
            );
            match op {
                _ if closed => {}
                // A cancelled read: read again (the data it would have had is still there).
                NetOp::Accept | NetOp::Recv | NetOp::RecvFrom => self.read(key),
                // A cancelled send leaves a hole in the stream: give the connection up.
                _ => self.close(key),
            }
            return;
        }
        assert_ne!(
            cancel,
            Some(true),
            "#{key} {op:?}: its cancel succeeded, yet it completed with {:?}",
            done.result
        );
        match kind {
            Kind::Listener => self.on_accept(key, done, closed),
            Kind::Client => self.on_client(key, op, done, closed),
            Kind::Server => self.on_server(key, op, done, closed),
            Kind::UdpServer => self.on_udp_server(key, op, done, closed),
            Kind::UdpClient => self.on_udp_client(key, op, done, closed),
        }
    }

    /// Errors a stream request may meet from its peer: an abort, or the end of the round.
    fn peer_error(&self, err: &io::Error) -> bool {
        match err.raw_os_error() {
            Some(libc::EPIPE | libc::ECONNRESET) => true,
            Some(libc::ECONNREFUSED | libc::ENOTCONN) => self.stopping,
            _ => false,
        }
    }

    fn on_accept(&mut self, key: u64, done: OpResult, closed: bool) {
        let n = done.result.unwrap_or_else(|err| panic!("accept: {err}"));
        assert_eq!(n, 0);
        let stream = done.accepted.expect("an accept yields a connection");
        if closed || self.stopping {
            return;
        }
        if let Some(server) = self.add(stream, Kind::Server) {
            self.read(server);
        }
        self.read(key);
    }

    fn on_client(&mut self, key: u64, op: NetOp, done: OpResult, closed: bool) {
        let (stats, stopping) = (self.stats, self.stopping);
        match (op, done.result) {
            (NetOp::Connect, Ok(_)) => {
                if !closed && !self.conn(key).started {
                    self.start_message(key);
                    self.read(key);
                }
            }
            (NetOp::Send(len), Ok(n)) => assert_eq!(n, len, "#{key}: a send completes whole"),
            // The server aborted.
            (NetOp::Recv, Ok(0)) => self.close(key),
            (NetOp::Recv, Ok(n)) => {
                let conn = self.conn(key);
                let (from, to) = (conn.got, conn.got + n);
                assert!(
                    to <= conn.msg.len(),
                    "#{key}: {to} bytes echoed of a {}-byte message",
                    conn.msg.len()
                );
                assert!(
                    done.buf[..n] == conn.msg[from..to],
                    "#{key}: echoed bytes {from}..{to} differ from those sent"
                );
                conn.got = to;
                if closed {
                    return;
                }
                if to == conn.msg.len() {
                    add(&stats.echoed_bytes, to as u64);
                    conn.messages_left -= 1;
                    if conn.messages_left == 0 || stopping {
                        self.close(key);
                        return;
                    }
                    self.start_message(key);
                }
                self.read(key);
                if self.rng.one_in(ABORT_ONE_IN) {
                    // With the read just issued, and maybe a send, pending.
                    self.close(key);
                }
            }
            (_, Err(err)) if self.peer_error(&err) => self.close(key),
            (op, result) => panic!("#{key} client {op:?}: {result:?}"),
        }
    }

    fn on_server(&mut self, key: u64, op: NetOp, done: OpResult, closed: bool) {
        match (op, done.result) {
            (NetOp::Recv, Ok(0)) => self.close(key),
            (NetOp::Recv, Ok(n)) => {
                if closed {
                    return;
                }
                let mut echo = done.buf;
                echo.truncate(n);
                let submitted = self.conn(key).socket.send(echo);
                self.submit(key, NetOp::Send(n), submitted);
                self.read(key);
                if self.rng.one_in(2 * ABORT_ONE_IN) {
                    self.close(key);
                } else if self.rng.one_in(2 * ABORT_ONE_IN) {
                    // The recv and maybe sends: a cancelled send ends the connection.
                    self.cancel_all(key);
                }
            }
            (NetOp::Send(len), Ok(n)) => assert_eq!(n, len, "#{key}: a send completes whole"),
            (_, Err(err)) if self.peer_error(&err) => self.close(key),
            (op, result) => panic!("#{key} server {op:?}: {result:?}"),
        }
    }

    fn on_udp_server(&mut self, key: u64, op: NetOp, done: OpResult, closed: bool) {
        match (op, done.result) {
            (NetOp::RecvFrom, Ok(n)) => {
                check_datagram(&done.buf[..n]);
                let peer = done.peer.expect("a datagram has a sender");
                if closed {
                    return;
                }
                let mut echo = done.buf;
                echo.truncate(n);
                let submitted = self.conn(key).socket.send_to(echo, peer);
                self.submit(key, NetOp::SendTo(n), submitted);
                self.read(key);
            }
            (NetOp::SendTo(len), Ok(n)) => assert_eq!(n, len, "a datagram goes whole"),
            (op, result) => panic!("#{key} UDP server {op:?}: {result:?}"),
        }
    }

    fn on_udp_client(&mut self, key: u64, op: NetOp, done: OpResult, closed: bool) {
        match (op, done.result) {
            (NetOp::RecvFrom, Ok(n)) => {
                assert_eq!(
                    done.peer,
                    Some(self.udp_addr),
                    "#{key}: a datagram from a stranger"
                );
                let echoed = check_datagram(&done.buf[..n]);
                let leave = self.stopping || self.rng.one_in(256);
                add(&self.stats.datagrams, 1);
                let conn = self.conn(key);
                assert_eq!(
                    echoed,
                    (key, conn.seq),
                    "#{key}: the echo of another datagram"
                );
                if closed {
                    return;
                }
                conn.seq += 1;
                if leave {
                    self.close(key);
                    return;
                }
                self.read(key);
                self.send_datagram(key);
            }
            (NetOp::SendTo(len), Ok(n)) => assert_eq!(n, len, "a datagram goes whole"),
            (op, result) => panic!("#{key} UDP client {op:?}: {result:?}"),
        }
    }

    /// Handles what completed at once, forgets closed sockets with nothing pending, and
    /// replaces clients that left (which may complete more at once).
    fn run_ready(&mut self) {
        for _ in 0..100_000 {
            if let Some((key, op, done)) = self.ready.pop_front() {
                self.on_result(key, op, done, None);
                continue;
            }
            let gone: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, conn)| conn.closed && conn.pending == 0)
                .map(|(key, _)| *key)
                .collect();
            if gone.is_empty() {
                return;
            }
            for key in gone {
                match self.conns.remove(&key).map(|conn| conn.kind) {
                    Some(Kind::Client) => self.start_client(),
                    Some(Kind::UdpClient) => self.start_udp_client(),
                    _ => {}
                }
            }
        }
        panic!("requests kept completing at once without end");
    }

    fn clients_left(&self) -> usize {
        self.conns
            .values()
            .filter(|conn| matches!(conn.kind, Kind::Client | Kind::UdpClient))
            .count()
    }

    fn close_all(&mut self) {
        self.stopping = true;
        let keys: Vec<u64> = self.conns.keys().copied().collect();
        for key in keys {
            self.close(key);
        }
        self.run_ready();
    }

    fn is_idle(&self) -> bool {
        self.conns.is_empty()
            && self.open.is_empty()
            && self.open_ovl.is_empty()
            && self.ready.is_empty()
    }

    /// After the port was closed under the round: closes every socket, then finds the
    /// outcome of each request whose record the close discarded, once.
    fn abandon(&mut self) {
        self.close_all();
        let open: Vec<(Ticket, (u64, NetOp))> = self.open.drain().collect();
        for (ticket, (key, op)) in open {
            let conn = self.conn(key);
            conn.pending -= 1;
            let forged = Completion::new(key, 0, ticket.get() as usize);
            let done = conn.socket.finish(&forged).unwrap_or_else(|err| {
                panic!("#{key} {op:?}: no outcome for a request whose record was discarded: {err}")
            });
            assert_eq!(
                errno(conn.socket.finish(&forged)),
                libc::EINVAL,
                "#{key} {op:?}: an outcome handed back twice"
            );
            add(&self.stats.discarded, 1);
            let cancel = self.cancels.remove(&Req::Ticket(ticket));
            self.on_result(key, op, done, cancel);
        }
        let open: Vec<(usize, (u64, NetOp, usize))> = self.open_ovl.drain().collect();
        for (at, (key, op, raw)) in open {
            // Its socket is closed, so the block is complete.
            self.conn(key).pending -= 1;
            let done = take_overlapped(raw);
            add(&self.stats.discarded, 1);
            let cancel = self.cancels.remove(&Req::At(at));
            self.on_result(key, op, done, cancel);
        }
        self.run_ready();
        assert!(
            self.is_idle(),
            "{} sockets left after the close",
            self.conns.len()
        );
    }
}

impl Drop for Net<'_> {
    /// Frees the round's overlapped requests, once every socket is closed (or leaks them,
    /// when the round failed with some still open).
    fn drop(&mut self) {
        if thread::panicking() || !self.conns.is_empty() {
            return;
        }
        for raw in self.ovl_all.drain(..) {
            // SAFETY: made by `Box::into_raw` in `submit_overlapped`; its socket is closed,
            // so its request is complete and the engine holds no pointer to it.
            let io = unsafe { Box::from_raw(raw as *mut OvlIo) };
            assert!(
                io.ovl.is_complete(),
                "an overlapped request outlived its socket"
            );
        }
    }
}

/// The outcome of a completed overlapped socket request, from its block, with its buffer.
fn take_overlapped(raw: usize) -> OpResult {
    // SAFETY: allocated this round and freed at its end; its request is done (its record
    // came, or its socket is closed), so the engine no longer touches it.
    let io = unsafe { &mut *(raw as *mut OvlIo) };
    assert!(io.ovl.is_complete(), "an overlapped request still pending");
    OpResult {
        result: io.ovl.get_result(false).map(|n| n as usize),
        buf: std::mem::take(&mut io.buf),
        peer: None,
        accepted: None,
    }
}

/// A fresh, unconnected TCP socket.
/// Datagram `seq` of UDP client `client`: both in the first 16 bytes, the rest (of a length
/// they decide) a pattern they decide.
fn datagram(client: u64, seq: u64) -> Vec<u8> {
    let tag = mix(client << 32 ^ seq);
    let len = 16 + tag as usize % (DATAGRAM_MAX - 16);
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&client.to_le_bytes());
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(&pattern(tag, len - 16));
    bytes
}

/// The `(client, seq)` of an intact datagram.
fn check_datagram(bytes: &[u8]) -> (u64, u64) {
    assert!(bytes.len() >= 16, "a {}-byte datagram", bytes.len());
    let client = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let seq = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    assert!(
        bytes == datagram(client, seq),
        "datagram ({client}, {seq}) arrived altered"
    );
    (client, seq)
}

pub(crate) fn net_round(seed: u64, budget: Duration, stats: &Stats) -> String {
    let mut rng = Rng::new(seed);
    let (capacity, drive, concurrency) = (
        rng.pick(&CAPACITIES),
        rng.pick(&DRIVES),
        rng.pick(&CONCURRENCY),
    );
    let port = Port::builder()
        .capacity(capacity)
        .drive(drive)
        .concurrency(concurrency)
        .build()
        .unwrap();
    add(&stats.ports, 1);
    let start = Instant::now();
    let deadline = start + budget;
    let abrupt = ending(&mut rng, start, budget);
    let hard = deadline + 3 * BULK_PATIENCE;
    let posts = Posts::new(2);
    let closed_at = OnceLock::new();
    let net = Mutex::new(Net::new(port.clone(), stats, rng.fork()));
    thread::scope(|s| {
        let _guard = CloseOnPanic {
            port: &port,
            closed_at: &closed_at,
        };
        let (port, posts, closed_at, net) = (&port, &posts, &closed_at, &net);
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let rng = rng.fork();
                s.spawn(move || posts.produce(p, port, rng, deadline, stats))
            })
            .collect();
        let servers: Vec<_> = (0..2)
            .map(|_| {
                let rng = rng.fork();
                s.spawn(move || {
                    serve(port, posts, rng, stats, closed_at, hard, |record| {
                        lock(net).on_record(record)
                    })
                })
            })
            .collect();
        match abrupt {
            Some(at) => {
                sleep_until(at);
                {
                    let _net = lock(net);
                    close_port(port, closed_at, stats);
                }
                producers.into_iter().for_each(join);
                servers.into_iter().for_each(join);
                lock(net).abandon();
                add(&stats.posts_discarded, posts.unseen());
            }
            None => {
                sleep_until(deadline);
                lock(net).stopping = true;
                // Clients finish the message they are at, then everything is closed.
                wait_for(Duration::from_secs(1), || lock(net).clients_left() == 0);
                lock(net).close_all();
                producers.into_iter().for_each(join);
                let drained = wait_for(BULK_PATIENCE, || {
                    assert!(!port.is_closed(), "another thread of the round failed");
                    lock(net).is_idle() && posts.unseen() == 0
                });
                let net = lock(net);
                assert!(
                    drained,
                    "net round ({drive:?}, capacity {capacity}, concurrency {concurrency}): {} \
                     requests and {} posted records never came",
                    net.open.len(),
                    posts.unseen()
                );
                assert_eq!(port.queued(), 0, "records beyond every request and post");
                close_port(port, closed_at, stats);
                drop(net);
                servers.into_iter().for_each(join);
            }
        }
    });
    let end = ending_name(abrupt);
    format!("net {drive:?} capacity {capacity} concurrency {concurrency} {end}")
}
