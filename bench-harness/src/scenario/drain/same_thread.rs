//! The same-thread shapes: one thread posts a batch, then takes all of it back.

use super::{c_error, c_port, io_error, port, Subject, CAPACITY, MAX_RECORDS, WAIT, WAIT_MS};
use crate::libiocp::Gmcs;
use crate::scenario::pin;
use core_affinity::CoreId;
use crossbeam_queue::ArrayQueue;
use io_uring::{opcode, squeue, IoUring};
use iocp::{Completion, Port};
use std::hint::black_box;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Records moved between two clock reads, so that the clock is not part of the per-record
/// cost at small batch sizes.
const RECORDS_PER_CLOCK_READ: usize = 4096;

/// Records per second of `subject` posting `batch` records and taking them back, for
/// `duration`, on a thread of its own (pinned to `cores[0]` when given). With
/// `batched_post`, iocp posts each batch with one `post_many`.
pub(super) fn measure(
    subject: Subject,
    batch: usize,
    batched_post: bool,
    cores: Option<&[CoreId]>,
    duration: Duration,
) -> Result<f64, String> {
    thread::scope(|s| {
        s.spawn(|| {
            pin(cores, 0);
            rounds(subject, batch, batched_post, duration)
        })
        .join()
        .unwrap_or_else(|_| Err("the measurement thread panicked".into()))
    })
}

/// Posts `batch` records, takes them back, repeats for `duration`.
fn rounds(
    subject: Subject,
    batch: usize,
    batched_post: bool,
    duration: Duration,
) -> Result<f64, String> {
    let records: Vec<Completion> = (0..batch)
        .map(|i| Completion::new(0, i as u32, i))
        .collect();
    let post_all = |port: &Port| match batched_post {
        true => port.post_many(&records).map_err(io_error("post_many")),
        false => records
            .iter()
            .try_for_each(|&record| port.post(record))
            .map_err(io_error("post")),
    };
    match subject {
        Subject::IocpGetMany | Subject::IocpScalar => {
            let port = port(subject)?;
            let mut out = vec![Completion::default(); batch];
            timed(batch, duration, |sum| {
                post_all(&port)?;
                let mut got = 0;
                while got < batch {
                    let drained = port
                        .get_many(&mut out[..batch - got], 1, Some(WAIT))
                        .map_err(io_error("get_many"))?;
                    for record in &out[..drained.count] {
                        *sum += u64::from(record.bytes());
                    }
                    got += drained.count;
                    if drained.count == 0 {
                        return Err(format!("{} posted records never came back", batch - got));
                    }
                }
                Ok(())
            })
        }
        Subject::IocpDrain => {
            let port = port(subject)?;
            timed(batch, duration, |sum| {
                post_all(&port)?;
                let mut got = 0;
                while got < batch {
                    let records = port
                        .drain(batch - got, Some(WAIT))
                        .map_err(io_error("drain"))?;
                    got += records.len();
                    for record in records {
                        *sum += u64::from(record.bytes());
                    }
                }
                Ok(())
            })
        }
        Subject::CGetMultiple | Subject::CPostMany => {
            let port = c_port()?;
            let entries: Vec<Gmcs> = records.iter().map(Gmcs::from_record).collect();
            let mut out = vec![Gmcs::default(); batch];
            timed(batch, duration, |sum| {
                if subject == Subject::CPostMany {
                    if !port.post_many(&entries) {
                        return Err(c_error("iocp_post_many"));
                    }
                } else {
                    for record in &records {
                        if !port.post(record.bytes(), record.key() as u32, record.overlapped()) {
                            return Err(c_error("PostQueuedCompletionStatus"));
                        }
                    }
                }
                let mut got = 0;
                while got < batch {
                    let n = port
                        .get_multiple(1, &mut out[..batch - got], WAIT_MS)
                        .map_err(io_error("GetMultipleCompletionStatus"))?;
                    for entry in &out[..n] {
                        *sum += u64::from(entry.transfer_count);
                    }
                    got += n;
                    if n == 0 {
                        return Err(format!("{} posted records never came back", batch - got));
                    }
                }
                Ok(())
            })
        }
        Subject::ArrayQueue => {
            let queue = ArrayQueue::new(CAPACITY);
            timed(batch, duration, |sum| {
                for &record in &records {
                    queue.push(record).map_err(|_| "the queue is full")?;
                }
                let mut got = 0;
                while let Some(record) = queue.pop() {
                    *sum += u64::from(record.bytes());
                    got += 1;
                }
                check_all_back(got, batch)
            })
        }
        Subject::Mpsc => {
            let (tx, rx) = mpsc::sync_channel(CAPACITY);
            timed(batch, duration, |sum| {
                for &record in &records {
                    tx.try_send(record).map_err(|e| format!("send: {e}"))?;
                }
                let mut got = 0;
                while let Ok(record) = rx.try_recv() {
                    *sum += u64::from(record.bytes());
                    got += 1;
                }
                check_all_back(got, batch)
            })
        }
        Subject::IoUring => {
            let mut ring = IoUring::new(CAPACITY as u32).map_err(io_error("io_uring_setup"))?;
            let nops: Vec<squeue::Entry> = (0..batch)
                .map(|i| opcode::Nop::new().build().user_data(i as u64))
                .collect();
            timed(batch, duration, |sum| {
                // SAFETY: a NOP names no buffer and no file: nothing has to outlive it.
                unsafe { ring.submission().push_multiple(&nops) }
                    .map_err(|_| "the submission queue is full")?;
                ring.submit_and_wait(batch)
                    .map_err(io_error("io_uring_enter"))?;
                let mut got = 0;
                for cqe in ring.completion() {
                    *sum += cqe.user_data();
                    got += 1;
                }
                check_all_back(got, batch)
            })
        }
        Subject::IocpGet
        | Subject::IocpGetUpTo
        | Subject::CGet
        | Subject::CGetEx
        | Subject::CrossbeamChannel => Err(format!(
            "{} is a worker-pool dequeue, not measured on one thread",
            subject.name()
        )),
    }
}

/// A round must get back exactly what it posted.
fn check_all_back(got: usize, batch: usize) -> Result<(), String> {
    if got == batch {
        Ok(())
    } else {
        Err(format!("{got} of {batch} records came back"))
    }
}

/// Runs `round` (which moves `batch` records and adds them into its checksum) once to warm
/// up, then repeatedly for `duration`. Returns records per second.
fn timed(
    batch: usize,
    duration: Duration,
    mut round: impl FnMut(&mut u64) -> Result<(), String>,
) -> Result<f64, String> {
    let mut checksum = 0;
    // The first round faults in the queue's memory.
    round(&mut checksum)?;
    let rounds_per_clock_read = (RECORDS_PER_CLOCK_READ / batch).max(1) as u64;
    let start = Instant::now();
    let deadline = start + duration;
    let mut rounds = 0;
    while rounds * (batch as u64) < MAX_RECORDS {
        for _ in 0..rounds_per_clock_read {
            round(&mut checksum)?;
        }
        rounds += rounds_per_clock_read;
        if Instant::now() >= deadline {
            break;
        }
    }
    black_box(checksum);
    Ok((rounds * batch as u64) as f64 / start.elapsed().as_secs_f64())
}
