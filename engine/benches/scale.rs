//! Cost per record as the engine holds more: many records queued, many requests
//! outstanding, many ports. Each pair of benchmarks differs only in the scale, so their
//! per-record times side by side say whether the cost stays flat.
//!
//! * `scale/queued/<capacity>/<queued>`: a port holding `queued` records takes 256 more
//!   with one [`Port::post_many`] and gives 256 back with one [`Port::get_many`], so the
//!   queue stays at `queued`. With the default ring (4096 slots) 100,000 queued records
//!   live mostly in the ring's overflow; `131072` is a ring sized for them.
//! * `scale/pending_reads/<outstanding>`: `outstanding` receives are pending, 100 on each of
//!   `outstanding / 100` socket pairs; each iteration writes one message to the next
//!   socket's peer, takes the record (an inline-driven port polls in `get`), finishes it
//!   and queues the receive again, so `outstanding` stays pending.
//! * `scale/ports/<ports>`: `ports` live ports (64-slot rings); each iteration finds the
//!   next one by its handle, as the C ABI does ([`Port::with_handle`]), posts a record and
//!   takes it back.
//!
//! Run it with `cargo bench -p iocp-engine --bench scale`. The socket benchmark opens
//! 2,000 descriptors and the ports benchmark 10,000: the bench raises its soft
//! `RLIMIT_NOFILE` to the hard limit, and says so when that is not enough.

use criterion::{Criterion, Throughput};
use iocp::{Completion, Drive, Port, Socket, Submitted};
use std::hint::black_box;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Records moved per `queued` iteration.
const BATCH: usize = 256;
/// Receives pending on each socket in `pending_reads`.
const READS_PER_SOCKET: usize = 100;
/// How long a `get` waits before the bench calls it a bug.
const PATIENCE: Option<Duration> = Some(Duration::from_secs(10));

fn queued(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale/queued");
    group.throughput(Throughput::Elements(BATCH as u64));
    let batch: Vec<Completion> = (0..BATCH).map(|i| Completion::new(1, 0, i)).collect();
    let mut out = vec![Completion::default(); BATCH];
    for capacity in [iocp::DEFAULT_CAPACITY, 131_072] {
        for held in [1_000, 100_000] {
            let port = Port::builder().capacity(capacity).build().unwrap();
            for i in 0..held {
                port.post(Completion::new(1, 0, i)).unwrap();
            }
            group.bench_function(format!("{capacity}/{held}"), |b| {
                b.iter(|| {
                    port.post_many(&batch).unwrap();
                    let got = port
                        .get_many(&mut out, BATCH, Some(Duration::ZERO))
                        .unwrap();
                    assert_eq!(got.count, BATCH);
                    black_box(&out);
                })
            });
            assert_eq!(port.queued(), held);
        }
    }
    group.finish();
}

fn pending_reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale/pending_reads");
    group.throughput(Throughput::Elements(1));
    for outstanding in [1_000, 100_000] {
        let sockets = outstanding / READS_PER_SOCKET;
        if !room_for(2 * sockets + 64) {
            continue;
        }
        let port = Port::builder().drive(Drive::Inline).build().unwrap();
        let pairs: Vec<(Socket, UnixStream)> = (0..sockets)
            .map(|i| {
                let (ours, peer) = UnixStream::pair().unwrap();
                (Socket::associated(ours, &port, i as u64).unwrap(), peer)
            })
            .collect();
        for (socket, _) in &pairs {
            for _ in 0..READS_PER_SOCKET {
                let submitted = socket.recv(vec![0; 64]).unwrap();
                assert!(matches!(submitted, Submitted::Pending(_)));
            }
        }
        let mut next = 0;
        group.bench_function(format!("{outstanding}"), |b| {
            b.iter(|| {
                let mut peer = &pairs[next].1;
                next = (next + 1) % pairs.len();
                peer.write_all(b"ping").unwrap();
                let record = port.get(PATIENCE).unwrap();
                let (socket, _) = &pairs[record.key() as usize];
                let done = socket.finish(&record).unwrap();
                assert_eq!(done.result.unwrap(), 4);
                black_box(socket.recv(done.buf).unwrap());
            })
        });
    }
    group.finish();
}

fn ports(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale/ports");
    group.throughput(Throughput::Elements(1));
    for count in [10, 10_000] {
        if !room_for(count + 64) {
            continue;
        }
        let ports: Vec<Port> = (0..count)
            .map(|_| Port::builder().capacity(64).build().unwrap())
            .collect();
        let handles: Vec<_> = ports.iter().map(Port::handle).collect();
        let mut next = 0;
        group.bench_function(format!("{count}"), |b| {
            b.iter(|| {
                let handle = handles[next];
                next = (next + 1) % handles.len();
                let record = Port::with_handle(handle, |port| {
                    port.post(Completion::new(2, 0, next)).unwrap();
                    port.get(Some(Duration::ZERO)).unwrap()
                })
                .expect("a live port");
                black_box(record);
            })
        });
        drop(ports);
    }
    group.finish();
}

/// Whether the process may open `needed` descriptors, after raising its soft limit to
/// the hard one; says so when it may not.
fn room_for(needed: usize) -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return false;
    }
    if (limit.rlim_cur as usize) < needed {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a live rlimit; raising the soft limit up to the hard one is
        // always allowed.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
    let room = limit.rlim_cur as usize >= needed;
    if !room {
        eprintln!(
            "scale: skipped a case needing {needed} descriptors: RLIMIT_NOFILE is {}",
            limit.rlim_cur
        );
    }
    room
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    queued(&mut c);
    pending_reads(&mut c);
    ports(&mut c);
    c.final_summary();
}
