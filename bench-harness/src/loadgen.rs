//! The TCP load generator of the `echo` scenario.
//!
//! One or more threads each drive many non-blocking connections from one mio `Poll`
//! (epoll, edge-triggered). Every message is [`MESSAGE`] bytes of a fixed pattern; the
//! generator checks that what comes back is that pattern, in order, so a server that
//! garbles or drops data fails its measurement instead of looking fast.
//!
//! Two modes ([`Mode`]):
//!
//! * **closed loop**: each connection keeps exactly one message in flight, sending the next
//!   as soon as the previous one is back. The rate is whatever the server (and this
//!   generator) sustain: peak throughput. Latency is send to receive.
//! * **open loop**: messages leave at a fixed total rate, spread round-robin over the
//!   connections (message `k` goes to connection `k mod N` at `t0 + k / rate`), whether or
//!   not earlier ones are back. Latency is counted from the message's *intended* send time,
//!   as wrk2 does: when the server (or a stall of this generator) holds things up, the
//!   messages that should have gone meanwhile are charged the wait too, which corrects the
//!   coordinated omission a closed loop suffers from.
//!
//! Between sends the open loop sleeps on a timerfd in its poll set (timer slack 1 ns) until
//! [`WAKE_EARLY`] before the next send, then polls without blocking, yielding the core on
//! every idle turn: a generator that sleeps to the last moment sends late (timer wake-ups
//! are slow), and one that spins without yielding takes the core a server thread may share
//! with it on a small machine, and shows its own stalls as the server's latency. At the
//! rates of the `echo` scenario (tens of microseconds between sends) it always spins, so it
//! needs a core of its own for clean tails.
//!
//! A measurement is a warm-up (nothing recorded) followed by the measured window. In the
//! open loop the messages intended inside the window are recorded; after the window the
//! generator stops sending and waits a bounded time for the ones still out, charging any
//! that never come back the time waited. Every loop is bounded in time and in count.
//!
//! Each generator thread also reads the CPU clocks, its own and the process's, as its loop
//! passes the window's start and end ([`CpuUse`]). The servers of `echo` run in this
//! process while the harness's other threads wait, so the process's time less the
//! generators' is the server's: how much of a core it took, and per message at a set rate.

use crate::latency;
use crate::sys;
use core_affinity::CoreId;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes per message (the design's 64-byte echo).
pub const MESSAGE: usize = 64;

/// Upper bound on event-loop turns of one generator thread, whatever the clock says.
const MAX_TURNS: u64 = 1 << 40;
/// How long the open loop waits, after its window, for messages still out.
const DRAIN_LIMIT: Duration = Duration::from_millis(500);
/// Read buffer: up to this many bytes per `read`, many messages at once.
const READ_BUFFER: usize = 64 * 1024;
/// Messages one `write` may carry when a connection has a backlog to flush.
const WRITE_MESSAGES: usize = 64;
/// The open loop's timer rings this long before the next intended send: waking a sleeping
/// thread from a timer takes tens of microseconds on a VM, and a late send is charged to
/// the server as latency. The rest of the gap is spun.
const WAKE_EARLY: Duration = Duration::from_micros(250);
/// How long past its timer the open loop's poll may block (the timer ends it first; this
/// only bounds the wait should it not).
const TIMER_GUARD: Duration = Duration::from_millis(10);
/// The token of the open loop's timer; connections are numbered from 0.
const TIMER: Token = Token(usize::MAX);

/// How messages are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// One message in flight per connection.
    Closed,
    /// `rate` messages per second in all, spread over the connections.
    Open {
        /// Messages per second, over every connection and thread.
        rate: f64,
    },
}

/// One measurement's parameters.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The echo server.
    pub addr: SocketAddr,
    /// Connections in all (spread over the threads).
    pub connections: usize,
    /// Generator threads (at most `connections`).
    pub threads: usize,
    /// Pacing.
    pub mode: Mode,
    /// Unrecorded lead-in (the server accepting, caches warming).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Core per generator thread, if pinned.
    pub cores: Option<Vec<CoreId>>,
}

/// What a measurement saw.
#[derive(Debug)]
pub struct Measured {
    /// Messages completed in the window (closed loop), or intended in it (open loop).
    pub messages: u64,
    /// Length of the window.
    pub window: Duration,
    /// Their latencies, ns.
    pub histogram: Histogram<u64>,
    /// Open loop: messages of the window not back within [`DRAIN_LIMIT`] after it
    /// (recorded with the time waited, a lower bound).
    pub late: u64,
    /// CPU time over the window; `None` when a generator thread's loop did not see both of
    /// its ends.
    pub cpu: Option<CpuUse>,
}

/// CPU time used over a measurement's window, read by the generator threads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuUse {
    /// Wall time between the readings.
    pub wall: Duration,
    /// CPU time of every thread of the process.
    pub process: Duration,
    /// CPU time of the generator threads.
    pub generator: Duration,
}

impl CpuUse {
    /// The CPU time of the rest of the process: the server under test, in `echo`.
    pub fn server(&self) -> Duration {
        self.process.saturating_sub(self.generator)
    }

    /// The server's CPU time in cores: its share of the wall time (1.0: one core all the
    /// time).
    pub fn server_cores(&self) -> f64 {
        self.cores(self.server())
    }

    /// The generator threads' CPU time in cores.
    pub fn generator_cores(&self) -> f64 {
        self.cores(self.generator)
    }

    fn cores(&self, time: Duration) -> f64 {
        time.as_secs_f64() / self.wall.as_secs_f64()
    }

    /// Both measurements' time together (rounds of one loop, one after the other).
    pub fn plus(self, other: CpuUse) -> CpuUse {
        CpuUse {
            wall: self.wall + other.wall,
            process: self.process + other.process,
            generator: self.generator + other.generator,
        }
    }

    /// Two generator threads' readings of one window: their own times add up, and the
    /// process's time (which holds both) and the wall time are the longer reading's.
    fn alongside(self, other: CpuUse) -> CpuUse {
        CpuUse {
            wall: self.wall.max(other.wall),
            process: self.process.max(other.process),
            generator: self.generator + other.generator,
        }
    }
}

/// A generator thread's readings of the CPU clocks as its loop passes the window's start
/// and end.
#[derive(Default)]
struct CpuReadings {
    /// At the start: when, the process's time, the thread's.
    start: Option<(Instant, Duration, Duration)>,
    used: Option<CpuUse>,
}

impl CpuReadings {
    /// Reads the clocks if the loop, now at `now`, has just passed an end of `window`.
    fn pass(&mut self, now: Instant, window: &Window) {
        match self.start {
            None if now >= window.start && now < window.end => {
                self.start = Some((now, sys::process_cpu_time(), sys::thread_cpu_time()));
            }
            Some(_) if now >= window.end => self.finish(now),
            _ => {}
        }
    }

    /// Reads the clocks at the end, once, if they were read at the start: also when the
    /// loop ends before the window does (an open loop with nothing left to send or wait
    /// for), whose CPU time is then over the shorter span.
    fn finish(&mut self, now: Instant) {
        if let (Some((at, process, thread)), None) = (self.start, self.used) {
            self.used = Some(CpuUse {
                wall: now - at,
                process: sys::process_cpu_time().saturating_sub(process),
                generator: sys::thread_cpu_time().saturating_sub(thread),
            });
        }
    }
}

impl Measured {
    fn empty(window: Duration) -> Measured {
        Measured {
            messages: 0,
            window,
            histogram: latency::histogram(),
            late: 0,
            cpu: None,
        }
    }

    /// Adds another generator thread's figures for the same window.
    fn add(&mut self, other: &Measured) {
        self.messages += other.messages;
        self.late += other.late;
        self.cpu = self.cpu.zip(other.cpu).map(|(a, b)| a.alongside(b));
        self.histogram
            .add(&other.histogram)
            .expect("histograms with the same bounds add");
    }

    /// Messages per second over the window.
    pub fn per_sec(&self) -> f64 {
        self.messages as f64 / self.window.as_secs_f64()
    }
}

/// Connects, runs the plan, closes the connections; joins every thread it starts.
pub fn run(plan: &Plan) -> Result<Measured, String> {
    let threads = plan.threads.clamp(1, plan.connections.max(1));
    // Connect everything first (blocking connects: the listener's backlog holds them until
    // the server accepts), so that the clock starts with every connection established.
    let mut shares: Vec<Vec<TcpStream>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..plan.connections {
        let stream = std::net::TcpStream::connect(plan.addr)
            .map_err(|e| format!("connect {} (connection {i}): {e}", plan.addr))?;
        // Small messages must leave at once: no Nagle delay on either side.
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_nonblocking(true))
            .map_err(|e| format!("socket options: {e}"))?;
        shares[i % threads].push(TcpStream::from_std(stream));
    }
    let t0 = Instant::now();
    let mode_per_thread = match plan.mode {
        Mode::Closed => Mode::Closed,
        Mode::Open { rate } => Mode::Open {
            rate: rate / threads as f64,
        },
    };
    thread::scope(|s| {
        let handles: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(i, conns)| {
                let core = plan.cores.as_ref().and_then(|cores| cores.get(i).copied());
                let window = Window::new(t0, plan.warmup, plan.duration);
                // Stagger the threads' open-loop schedules so that their sends interleave.
                let phase = i as f64 / threads as f64;
                // Named, so that a profile tells the generator from the server.
                thread::Builder::new()
                    .name(format!("loadgen-{i}"))
                    .spawn_scoped(s, move || {
                        if let Some(core) = core {
                            core_affinity::set_for_current(core);
                        }
                        drive(conns, mode_per_thread, window, phase)
                    })
            })
            .collect();
        let mut total: Option<Measured> = None;
        let mut failure = None;
        for handle in handles {
            let handle = match handle {
                Ok(handle) => handle,
                Err(e) => {
                    failure = failure.or(Some(format!("spawning a generator thread: {e}")));
                    continue;
                }
            };
            match handle.join() {
                Ok(Ok(measured)) => match &mut total {
                    Some(total) => total.add(&measured),
                    None => total = Some(measured),
                },
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some("a generator thread panicked".into())),
            }
        }
        match (failure, total) {
            (Some(e), _) => Err(e),
            (None, Some(total)) => Ok(total),
            (None, None) => Err("no generator thread ran".into()),
        }
    })
}

/// The timeline of one measurement.
#[derive(Clone, Copy, Debug)]
struct Window {
    t0: Instant,
    start: Instant,
    end: Instant,
}

impl Window {
    fn new(t0: Instant, warmup: Duration, duration: Duration) -> Window {
        Window {
            t0,
            start: t0 + warmup,
            end: t0 + warmup + duration,
        }
    }

    fn contains(&self, at: Instant) -> bool {
        at >= self.start && at < self.end
    }
}

/// One connection of a generator thread.
struct Conn {
    stream: TcpStream,
    /// Send times (closed loop) or intended send times (open loop) of the messages out,
    /// oldest first.
    out: VecDeque<Instant>,
    /// Bytes of the oldest message out already received.
    received: usize,
    /// Bytes queued for sending that the socket did not take yet.
    unsent: usize,
}

/// The message pattern repeated, so that any run of whole or partial messages, starting at
/// any offset within a message, is one slice of it.
struct Pattern(Vec<u8>);

impl Pattern {
    fn new() -> Pattern {
        let bytes = (0..MESSAGE * (WRITE_MESSAGES + 1))
            .map(|i| (i % MESSAGE) as u8 ^ 0x5a)
            .collect();
        Pattern(bytes)
    }

    /// `len` bytes (at most [`WRITE_MESSAGES`] messages) of the stream starting at
    /// `offset` within a message.
    fn slice(&self, offset: usize, len: usize) -> &[u8] {
        let len = len.min(MESSAGE * WRITE_MESSAGES);
        &self.0[offset..offset + len]
    }
}

impl Conn {
    /// Queues one message (`at` is its send or intended time) and writes what the socket
    /// takes.
    fn send(&mut self, at: Instant, pattern: &Pattern) -> io::Result<()> {
        self.out.push_back(at);
        self.unsent += MESSAGE;
        self.flush(pattern)
    }

    /// Writes queued bytes until none are left or the socket is full.
    fn flush(&mut self, pattern: &Pattern) -> io::Result<()> {
        while self.unsent > 0 {
            let offset = (MESSAGE - self.unsent % MESSAGE) % MESSAGE;
            match self.stream.write(pattern.slice(offset, self.unsent)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.unsent -= n,
                // The writable event will come back to this.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what arrived, checks it against the pattern, and calls `done(sent_at, now)` for
    /// each message completed.
    fn receive(
        &mut self,
        buf: &mut [u8],
        pattern: &Pattern,
        mut done: impl FnMut(Instant, Instant),
    ) -> Result<(), String> {
        loop {
            let n = match self.stream.read(buf) {
                Ok(0) => return Err("the server closed a connection".into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            let now = Instant::now();
            let mut data = &buf[..n];
            while !data.is_empty() {
                let take = data.len().min(MESSAGE - self.received);
                if data[..take] != pattern.0[self.received..self.received + take] {
                    return Err("the echo differs from what was sent".into());
                }
                data = &data[take..];
                self.received += take;
                if self.received == MESSAGE {
                    self.received = 0;
                    let sent_at = self
                        .out
                        .pop_front()
                        .ok_or("the server sent more than it was sent")?;
                    done(sent_at, now);
                }
            }
            // A short read emptied the socket: edge-triggered readiness comes back with the
            // next data, so another read would only return WouldBlock.
            if n < buf.len() {
                return Ok(());
            }
        }
    }
}

/// One generator thread: runs its connections in `mode` over `window`.
fn drive(
    mut conns: Vec<TcpStream>,
    mode: Mode,
    window: Window,
    phase: f64,
) -> Result<Measured, String> {
    let poll = Poll::new().map_err(|e| format!("mio: {e}"))?;
    for (i, stream) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(stream, Token(i), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("register: {e}"))?;
    }
    let mut conns: Vec<Conn> = conns
        .into_iter()
        .map(|stream| Conn {
            stream,
            out: VecDeque::new(),
            received: 0,
            unsent: 0,
        })
        .collect();
    let mut driver = Driver {
        poll,
        events: Events::with_capacity(1024),
        buf: vec![0; READ_BUFFER],
        pattern: Pattern::new(),
        measured: Measured::empty(window.end - window.start),
        window,
        cpu: CpuReadings::default(),
    };
    match mode {
        Mode::Closed => driver.closed(&mut conns)?,
        Mode::Open { rate } => driver.open(&mut conns, rate, phase)?,
    }
    driver.cpu.finish(Instant::now());
    driver.measured.cpu = driver.cpu.used;
    Ok(driver.measured)
}

/// A generator thread's event loop state.
struct Driver {
    poll: Poll,
    events: Events,
    buf: Vec<u8>,
    pattern: Pattern,
    measured: Measured,
    window: Window,
    cpu: CpuReadings,
}

impl Driver {
    /// Polls up to `timeout`; a signal just ends the poll early.
    fn poll(&mut self, timeout: Duration) -> Result<(), String> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                self.events.clear();
                Ok(())
            }
            Err(e) => Err(format!("poll: {e}")),
        }
    }

    /// Closed loop: each connection sends its next message as soon as the last is back.
    fn closed(&mut self, conns: &mut [Conn]) -> Result<(), String> {
        let now = Instant::now();
        for conn in conns.iter_mut() {
            conn.send(now, &self.pattern)
                .map_err(|e| format!("write: {e}"))?;
        }
        let Window { end, .. } = self.window;
        for _ in 0..MAX_TURNS {
            let now = Instant::now();
            self.cpu.pass(now, &self.window);
            if now >= end {
                break;
            }
            self.poll(end - now)?;
            for event in self.events.iter() {
                let conn = &mut conns[event.token().0];
                if event.is_writable() && conn.unsent > 0 {
                    conn.flush(&self.pattern)
                        .map_err(|e| format!("write: {e}"))?;
                }
                if !event.is_readable() {
                    continue;
                }
                let (measured, window) = (&mut self.measured, self.window);
                let mut completed = None;
                conn.receive(&mut self.buf, &self.pattern, |sent_at, now| {
                    if window.contains(now) {
                        latency::record(&mut measured.histogram, now - sent_at);
                        measured.messages += 1;
                    }
                    completed = Some(now);
                })?;
                if let Some(now) = completed {
                    if now < end && conn.out.is_empty() {
                        conn.send(now, &self.pattern)
                            .map_err(|e| format!("write: {e}"))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Open loop at `rate` messages/s over `conns`, round-robin; latency from the intended
    /// send time.
    fn open(&mut self, conns: &mut [Conn], rate: f64, phase: f64) -> Result<(), String> {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(format!("bad open-loop rate {rate}"));
        }
        let interval = 1.0 / rate;
        let Window { t0, end, .. } = self.window;
        let intended = |k: u64| t0 + Duration::from_secs_f64((k as f64 + phase) * interval);
        let timer = Timer::new(self.poll.registry()).map_err(|e| format!("timerfd: {e}"))?;
        // The timer rings at the intended time, not up to 50 us later (the default slack).
        // SAFETY: PR_SET_TIMERSLACK takes an integer and names no memory; it only affects
        // this thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        let mut armed_for = None;
        let mut next: u64 = 0;
        let mut next_at = intended(0);
        let drain_end = end + DRAIN_LIMIT;
        for _ in 0..MAX_TURNS {
            let now = Instant::now();
            self.cpu.pass(now, &self.window);
            // Send everything whose time has come, late or not: each carries its intended
            // time, so lateness counts against the latency.
            while next_at <= now && next_at < end {
                let n = conns.len() as u64;
                let conn = &mut conns[(next % n) as usize];
                conn.send(next_at, &self.pattern)
                    .map_err(|e| format!("write: {e}"))?;
                next += 1;
                next_at = intended(next);
            }
            let sending = next_at < end;
            let outstanding = conns.iter().any(|conn| !conn.out.is_empty());
            if !sending && (!outstanding || now >= drain_end) {
                break;
            }
            let gap = next_at.saturating_duration_since(now);
            let spinning = sending && gap <= 2 * WAKE_EARLY;
            let timeout = if spinning {
                Duration::ZERO
            } else if sending {
                if armed_for != Some(next_at) {
                    timer
                        .arm(gap - WAKE_EARLY)
                        .map_err(|e| format!("timerfd_settime: {e}"))?;
                    armed_for = Some(next_at);
                }
                gap + TIMER_GUARD
            } else {
                drain_end.saturating_duration_since(now)
            };
            self.poll(timeout)?;
            if spinning && self.events.is_empty() {
                // Lets a server thread that shares this core run (a no-op when none does).
                thread::yield_now();
            }
            for event in self.events.iter() {
                if event.token() == TIMER {
                    timer.clear();
                    armed_for = None;
                    continue;
                }
                let conn = &mut conns[event.token().0];
                if event.is_writable() && conn.unsent > 0 {
                    conn.flush(&self.pattern)
                        .map_err(|e| format!("write: {e}"))?;
                }
                if event.is_readable() {
                    let (measured, window) = (&mut self.measured, self.window);
                    conn.receive(&mut self.buf, &self.pattern, |intended, now| {
                        if window.contains(intended) {
                            latency::record(&mut measured.histogram, now - intended);
                            measured.messages += 1;
                        }
                    })?;
                }
            }
        }
        // Messages of the window that never came back: charged the time waited for them.
        let gave_up = Instant::now();
        for conn in conns.iter() {
            for &intended in conn.out.iter().filter(|&&at| self.window.contains(at)) {
                latency::record(&mut self.measured.histogram, gave_up - intended);
                self.measured.messages += 1;
                self.measured.late += 1;
            }
        }
        Ok(())
    }
}

/// A one-shot timer (timerfd, CLOCK_MONOTONIC) in a generator's poll set.
struct Timer {
    fd: OwnedFd,
}

impl Timer {
    fn new(registry: &mio::Registry) -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new
        // descriptor, owned from here on.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        registry.register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            TIMER,
            Interest::READABLE,
        )?;
        Ok(Timer { fd })
    }

    /// Rings once, `after` from now (replacing any earlier setting).
    fn arm(&self, after: Duration) -> io::Result<()> {
        // A zero value would disarm the timer: ring at once instead.
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: reads a live itimerspec; a NULL old value is allowed.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Consumes the expiry, so that the next one is a new edge.
    fn clear(&self) {
        let mut expirations = 0u64;
        // SAFETY: writes at most 8 bytes into a live u64. EAGAIN (nothing to read) is fine.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&raw mut expirations).cast(),
                size_of::<u64>(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A blocking echo server on its own thread per connection, for testing the generator.
    fn echo_server(connections: usize) -> (SocketAddr, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let mut workers = Vec::new();
            for _ in 0..connections {
                let (mut stream, _) = listener.accept().unwrap();
                workers.push(thread::spawn(move || {
                    let mut buf = [0; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }));
            }
            for worker in workers {
                worker.join().unwrap();
            }
        });
        (addr, handle)
    }

    fn plan(addr: SocketAddr, connections: usize, mode: Mode) -> Plan {
        Plan {
            addr,
            connections,
            threads: 1,
            mode,
            warmup: Duration::from_millis(5),
            duration: Duration::from_millis(50),
            cores: None,
        }
    }

    #[test]
    fn closed_loop_round_trips() {
        let (addr, server) = echo_server(4);
        let plan = plan(addr, 4, Mode::Closed);
        let started = Instant::now();
        let measured = run(&plan).unwrap();
        let elapsed = started.elapsed();
        server.join().unwrap();
        assert!(measured.messages > 0);
        assert_eq!(measured.histogram.len(), measured.messages);
        assert_eq!(measured.late, 0);
        assert_cpu_read_within(&measured, elapsed - plan.warmup);
    }

    /// The generator's clocks were read twice, within the `span` from the window's start
    /// to the measurement's end; the thread's time within that, the process's (this test's
    /// server, and whatever else the test binary runs) at least the thread's. How near the
    /// readings are to the window's ends depends on when the scheduler runs the thread (a
    /// loaded machine starts it milliseconds into the window): `cpu_read_at_the_windows_ends`
    /// checks that with instants of its own.
    fn assert_cpu_read_within(measured: &Measured, span: Duration) {
        let cpu = measured.cpu.expect("the clocks were read");
        assert!(
            cpu.wall > Duration::ZERO && cpu.wall <= span,
            "{cpu:?}, the window's start to the end {span:?}"
        );
        // The CPU clocks tick at the scheduler's granularity: a little slack.
        let tick = Duration::from_millis(2);
        assert!(cpu.generator > Duration::ZERO, "{cpu:?}");
        assert!(cpu.generator <= cpu.wall + tick, "{cpu:?}");
        assert!(cpu.process + tick >= cpu.generator, "{cpu:?}");
    }

    #[test]
    fn cpu_use_adds_up_across_rounds_and_threads() {
        let ms = Duration::from_millis;
        let a = CpuUse {
            wall: ms(100),
            process: ms(150),
            generator: ms(60),
        };
        let b = CpuUse {
            wall: ms(102),
            process: ms(140),
            generator: ms(70),
        };
        assert_eq!(a.server(), ms(90));
        assert!((a.server_cores() - 0.9).abs() < 1e-9);
        assert!((a.generator_cores() - 0.6).abs() < 1e-9);
        let rounds = a.plus(b);
        assert_eq!(
            (rounds.wall, rounds.process, rounds.generator),
            (ms(202), ms(290), ms(130))
        );
        // Two threads of one window: the process clock holds both threads already.
        let threads = a.alongside(b);
        assert_eq!(
            (threads.wall, threads.process, threads.generator),
            (ms(102), ms(150), ms(130))
        );
        assert_eq!(threads.server(), ms(20));
        // A reading that lost the race with the other clock never goes below zero.
        let odd = CpuUse {
            process: ms(10),
            ..a
        };
        assert_eq!(odd.server(), Duration::ZERO);
    }

    #[test]
    fn open_loop_sends_at_the_rate() {
        let (addr, server) = echo_server(2);
        let plan = plan(addr, 2, Mode::Open { rate: 2_000.0 });
        let started = Instant::now();
        let measured = run(&plan).unwrap();
        let elapsed = started.elapsed();
        server.join().unwrap();
        // 50 ms at 2,000/s: 100 messages intended in the window.
        assert!((95..=105).contains(&measured.messages), "{measured:?}");
        assert_eq!(measured.histogram.len(), measured.messages);
        assert_cpu_read_within(&measured, elapsed - plan.warmup);
    }

    /// The clocks are read at the loop's first pass inside the window and its first pass
    /// after it (or at its end, if that comes first); passes before the window, or
    /// between the readings, read nothing.
    #[test]
    fn cpu_read_at_the_windows_ends() {
        let ms = Duration::from_millis;
        let window = Window::new(Instant::now(), ms(5), ms(50));
        let mut readings = CpuReadings::default();
        readings.pass(window.start - ms(1), &window);
        assert!(readings.start.is_none());
        readings.pass(window.start + ms(3), &window);
        readings.pass(window.start + ms(20), &window);
        readings.pass(window.end + ms(2), &window);
        readings.pass(window.end + ms(9), &window);
        readings.finish(window.end + ms(30));
        let used = readings.used.expect("read at both ends");
        assert_eq!(used.wall, ms(49));

        // A loop that ends inside the window reads at its end.
        let mut readings = CpuReadings::default();
        readings.pass(window.start + ms(1), &window);
        readings.finish(window.start + ms(11));
        assert_eq!(readings.used.expect("read at both ends").wall, ms(10));

        // One that never passed inside the window read nothing.
        let mut readings = CpuReadings::default();
        readings.pass(window.start - ms(1), &window);
        readings.pass(window.end, &window);
        readings.finish(window.end + ms(1));
        assert!(readings.used.is_none());
    }

    #[test]
    fn pattern_slices_line_up() {
        let pattern = Pattern::new();
        let whole = pattern.slice(0, 2 * MESSAGE);
        assert_eq!(&whole[..MESSAGE], &whole[MESSAGE..]);
        assert_eq!(pattern.slice(10, MESSAGE - 10), &whole[10..MESSAGE]);
    }
}
