//! Post → batched drain throughput: the port's batched dequeues against the queues a
//! server would otherwise put between its I/O threads and its workers.
//!
//! Group `post_drain`; benchmark ids are `post_drain/<queue>/<producers>/<B>` and the
//! throughput is records consumed per second. Every queue holds 4096 records of 24 bytes
//! (a [`Completion`]).
//!
//! * `1p`: the bench thread posts `B` records, then drains them (B = 1, 16, 256, 4096).
//! * `2p`: two producer threads post continuously, backing off while the queue is nearly
//!   full; each iteration is the bench thread consuming `B` records, in batches of at most
//!   `B`. The producers run for one benchmark and are stopped and joined after it.
//!
//! Queues:
//!
//! * `iocp_get_many`: [`Port::get_many`], runs copied out into a buffer (the batched path);
//! * `iocp_drain`: [`Port::drain`], the run read in place through a [`iocp::Batch`];
//! * `iocp_scalar`: `get_many` on a port built with `scalar_drain(true)`, which checks and
//!   frees one slot at a time (what the batched path is measured against);
//! * `arrayqueue`: `crossbeam_queue::ArrayQueue`, one `pop` per record;
//! * `mpsc`: `std::sync::mpsc::sync_channel`, one `try_recv` per record.
//!
//! The design target is batched iocp ≥ 3× the best peer's records/s.
//!
//! Run it with `cargo bench -p iocp-engine --bench drain`; a filter narrows it, e.g.
//! `cargo bench -p iocp-engine --bench drain -- 'post_drain/.*/2p/'`. On a machine with
//! fewer than three cores the `2p` figures include time-sharing between the producers and
//! the consumer, so compare queues within one run, not across machines.

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::Backoff;
use iocp::{Completion, Port, GMCS_NMAX};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Slots in every queue under test (the port's default ring size).
const CAPACITY: usize = 4096;
/// Batch sizes: one record, a small batch, a large one, and the GMCS maximum.
const BATCHES: [usize; 4] = [1, 16, 256, GMCS_NMAX];
/// Records a producer posts between two looks at the port's length: checking per record
/// would add a read of the consumer's cache line to every post that the peers do not pay.
const BURST: usize = 32;
/// How long a consumer waits for one record before the bench gives up: producers run
/// throughout, so only a bug makes it wait this long.
const PATIENCE: Duration = Duration::from_secs(10);

/// The consumer half of a queue under test, owned by the bench thread.
trait Queue {
    type Producer: Producer;

    /// A producer half, for the bench thread itself or a producer thread.
    fn producer(&self) -> Self::Producer;

    /// Takes exactly `n` records, in batches of at most `n`, waiting for them as the
    /// queue's own consumer would. Returns a checksum so that every record is read.
    fn take(&mut self, n: usize) -> u64;
}

/// The producer half of a queue under test.
trait Producer: Send + 'static {
    /// Whether a burst of [`BURST`] records fits. The port never refuses a record (a full
    /// ring spills into its unbounded overflow), so its producers must ask or the queue
    /// would grow without bound; the peers answer through [`push`](Self::push).
    fn has_room(&self) -> bool {
        true
    }

    /// Queues `record`; `false` when the queue is full.
    fn push(&self, record: Completion) -> bool;
}

fn record(i: usize) -> Completion {
    Completion::new(i as u64, i as u32, i)
}

/// Which dequeue call an iocp consumer makes.
#[derive(Clone, Copy)]
enum Dequeue {
    GetMany,
    Drain,
}

struct IocpQueue {
    port: Port,
    dequeue: Dequeue,
    buf: Box<[Completion]>,
}

impl IocpQueue {
    fn new(dequeue: Dequeue, scalar: bool) -> IocpQueue {
        let port = Port::builder()
            .capacity(CAPACITY)
            .concurrency(usize::MAX)
            .scalar_drain(scalar)
            .build()
            .expect("port");
        IocpQueue {
            port,
            dequeue,
            buf: vec![Completion::default(); GMCS_NMAX].into_boxed_slice(),
        }
    }
}

impl Queue for IocpQueue {
    type Producer = IocpProducer;

    fn producer(&self) -> IocpProducer {
        IocpProducer(self.port.clone())
    }

    fn take(&mut self, n: usize) -> u64 {
        let mut sum = 0u64;
        let mut got = 0;
        while got < n {
            let want = (n - got).min(GMCS_NMAX);
            // `min == 1`: take whatever is ready, as the peers' pop loops do, and wait (the
            // port's adaptive spin, then the futex) only when nothing is.
            let count = match self.dequeue {
                Dequeue::GetMany => {
                    let drained = self
                        .port
                        .get_many(&mut self.buf[..want], 1, Some(PATIENCE))
                        .expect("get_many");
                    for r in &self.buf[..drained.count] {
                        sum = sum.wrapping_add(r.key());
                    }
                    drained.count
                }
                Dequeue::Drain => {
                    let batch = self.port.drain(want, Some(PATIENCE)).expect("drain");
                    let count = batch.len();
                    for r in batch {
                        sum = sum.wrapping_add(r.key());
                    }
                    count
                }
            };
            assert!(count > 0, "no record within {PATIENCE:?}");
            got += count;
        }
        sum
    }
}

struct IocpProducer(Port);

impl Producer for IocpProducer {
    fn has_room(&self) -> bool {
        // Two producers may both pass this check and post a burst each, so leave room for
        // both: the ring never spills and all queues compared hold the same 4096 records.
        self.0.queued() + 2 * BURST <= CAPACITY
    }

    fn push(&self, record: Completion) -> bool {
        self.0.post(record).expect("post");
        true
    }
}

struct ArrayQueueQueue(Arc<ArrayQueue<Completion>>);

impl Queue for ArrayQueueQueue {
    type Producer = ArrayQueueProducer;

    fn producer(&self) -> ArrayQueueProducer {
        ArrayQueueProducer(Arc::clone(&self.0))
    }

    fn take(&mut self, n: usize) -> u64 {
        let mut sum = 0u64;
        let backoff = Backoff::new();
        let mut got = 0;
        while got < n {
            match self.0.pop() {
                Some(r) => {
                    sum = sum.wrapping_add(r.key());
                    got += 1;
                    backoff.reset();
                }
                // Crossbeam's own advice for waiting on an empty queue.
                None => backoff.snooze(),
            }
        }
        sum
    }
}

struct ArrayQueueProducer(Arc<ArrayQueue<Completion>>);

impl Producer for ArrayQueueProducer {
    fn push(&self, record: Completion) -> bool {
        self.0.push(record).is_ok()
    }
}

struct MpscQueue {
    rx: Receiver<Completion>,
    /// Kept to hand out producers; it also keeps the channel connected between them.
    tx: SyncSender<Completion>,
}

impl Queue for MpscQueue {
    type Producer = MpscProducer;

    fn producer(&self) -> MpscProducer {
        MpscProducer(self.tx.clone())
    }

    fn take(&mut self, n: usize) -> u64 {
        let mut sum = 0u64;
        let backoff = Backoff::new();
        let mut got = 0;
        while got < n {
            match self.rx.try_recv() {
                Ok(r) => {
                    sum = sum.wrapping_add(r.key());
                    got += 1;
                    backoff.reset();
                }
                Err(mpsc::TryRecvError::Empty) => backoff.snooze(),
                Err(mpsc::TryRecvError::Disconnected) => unreachable!("we hold a sender"),
            }
        }
        sum
    }
}

struct MpscProducer(SyncSender<Completion>);

impl Producer for MpscProducer {
    fn push(&self, record: Completion) -> bool {
        match self.0.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => unreachable!("the bench holds the receiver"),
        }
    }
}

/// Producer threads posting into one queue until dropped.
struct Producers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Producers {
    fn start<Q: Queue>(queue: &Q, count: usize) -> Producers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let producer = queue.producer();
                let stop = Arc::clone(&stop);
                thread::spawn(move || produce(&producer, &stop))
            })
            .collect();
        Producers { stop, threads }
    }
}

impl Drop for Producers {
    fn drop(&mut self) {
        // Relaxed: the flag carries no data; join below is the synchronization.
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().expect("producer panicked");
        }
    }
}

fn produce(producer: &impl Producer, stop: &AtomicBool) {
    let mut i = 0;
    let backoff = Backoff::new();
    while !stop.load(Ordering::Relaxed) {
        // A full queue is the consumer's turn: back off the same way for every queue, so
        // that on a small machine the producers yield the core the consumer needs.
        if !producer.has_room() {
            backoff.snooze();
            continue;
        }
        backoff.reset();
        for _ in 0..BURST {
            while !producer.push(record(i)) {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                backoff.snooze();
            }
            i += 1;
        }
    }
}

fn bench<Q: Queue>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    producers: usize,
    n: usize,
    make: impl FnOnce() -> Q,
) {
    let mut queue = make();
    let id = BenchmarkId::new(format!("{name}/{producers}p"), n);
    if producers == 1 {
        let producer = queue.producer();
        group.bench_with_input(id, &n, |b, &n| {
            b.iter(|| {
                for i in 0..n {
                    assert!(producer.push(record(i)), "queue full");
                }
                black_box(queue.take(n))
            })
        });
    } else {
        let _producers = Producers::start(&queue, producers);
        group.bench_with_input(id, &n, |b, &n| b.iter(|| black_box(queue.take(n))));
    }
}

fn post_drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("post_drain");
    for producers in [1, 2] {
        for n in BATCHES {
            group.throughput(Throughput::Elements(n as u64));
            bench(&mut group, "iocp_get_many", producers, n, || {
                IocpQueue::new(Dequeue::GetMany, false)
            });
            bench(&mut group, "iocp_drain", producers, n, || {
                IocpQueue::new(Dequeue::Drain, false)
            });
            bench(&mut group, "iocp_scalar", producers, n, || {
                IocpQueue::new(Dequeue::GetMany, true)
            });
            bench(&mut group, "arrayqueue", producers, n, || {
                ArrayQueueQueue(Arc::new(ArrayQueue::new(CAPACITY)))
            });
            bench(&mut group, "mpsc", producers, n, || {
                let (tx, rx) = mpsc::sync_channel(CAPACITY);
                MpscQueue { rx, tx }
            });
        }
    }
    group.finish();
}

criterion::criterion_group! {
    name = benches;
    // Short runs: 40 benchmarks should take about two minutes. Set here rather than on the
    // group so that `--measurement-time`, `--warm-up-time` and `--sample-size` override them.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = post_drain
}
criterion::criterion_main!(benches);
