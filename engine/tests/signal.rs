//! How signals affect waits. A signal handler that runs while a port wait sleeps ends it
//! with `EINTR` (`DrainStatus::Interrupted` for the batched dequeues), whether it was
//! installed with `SA_RESTART` or not: the engine's documented rule, since Linux restarts
//! neither `epoll_wait` nor a timed futex wait. The interrupted call leaves the port as it
//! was. `GetOverlappedResult` and event waits go on through any signal and keep their
//! deadline.
//!
//! Signals are sent to one thread with `pthread_kill`. Handlers are process-wide, so the
//! two kinds use two signals: `SIGUSR1` without `SA_RESTART`, `SIGUSR2` with it.
//!
//! The emulated futex (`--cfg iocp_force_fallback`) sleeps on a condition variable, which
//! restarts after any signal, so there no signal ends a port wait and the `EINTR` tests
//! are skipped.
#![cfg(not(loom))]

mod common;

use common::errno;
use common::ports::{record, unlimited};
use common::threads::waiting;
use common::timing::{LATE, LONG, PATIENCE};
use iocp::{Completion, DrainStatus, Drained, Event, Overlapped, Port};
use std::fmt::Debug;
use std::io;
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Handled without `SA_RESTART`.
const INTERRUPTING: libc::c_int = libc::SIGUSR1;
/// Handled with `SA_RESTART`.
const RESTARTING: libc::c_int = libc::SIGUSR2;

extern "C" fn do_nothing(_signal: libc::c_int) {}

fn install_handlers() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        for (signal, flags) in [(INTERRUPTING, 0), (RESTARTING, libc::SA_RESTART)] {
            // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags);
            // the handler does nothing, which is async-signal-safe; the old action is
            // not asked for.
            let rc = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = do_nothing as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = flags;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut())
            };
            assert_eq!(rc, 0, "sigaction: {}", io::Error::last_os_error());
        }
    });
}

/// A thread running one wait, with the channel its result and duration come back on.
struct Waiter<T> {
    handle: JoinHandle<()>,
    result: mpsc::Receiver<(T, Duration)>,
}

impl<T: Send + 'static> Waiter<T> {
    /// Starts `wait` on a new thread and returns once it has had time to park.
    fn start(wait: impl FnOnce() -> T + Send + 'static) -> Waiter<T> {
        install_handlers();
        let (handle, result) = waiting(move || {
            let start = Instant::now();
            let result = wait();
            (result, start.elapsed())
        });
        Waiter { handle, result }
    }

    fn kill(&self, signal: libc::c_int) {
        // SAFETY: the thread has not been joined (we own its handle), so its `pthread_t`
        // is valid; `signal` has a handler installed.
        let rc = unsafe { libc::pthread_kill(self.handle.as_pthread_t(), signal) };
        assert!(rc == 0 || rc == libc::ESRCH, "pthread_kill: {rc}");
    }

    /// Signals the thread until its wait returns. A signal that lands before the thread
    /// sleeps (while it spins, say) ends nothing, so it is sent again.
    fn interrupt(self, signal: libc::c_int) -> (T, Duration) {
        let started = Instant::now();
        let outcome = loop {
            self.kill(signal);
            match self.result.recv_timeout(Duration::from_millis(100)) {
                Ok(outcome) => break outcome,
                Err(RecvTimeoutError::Timeout) if started.elapsed() < PATIENCE => continue,
                Err(error) => panic!("the wait was not interrupted: {error}"),
            }
        };
        self.handle.join().unwrap();
        outcome
    }

    /// Signals the thread a few times and checks that its wait goes on through them.
    fn signal_without_effect(&self, signal: libc::c_int)
    where
        T: Debug,
    {
        for _ in 0..3 {
            self.kill(signal);
            thread::sleep(Duration::from_millis(30));
            if let Ok((result, waited)) = self.result.try_recv() {
                panic!("the wait ended on a signal after {waited:?}: {result:?}");
            }
        }
    }

    fn finish(self) -> (T, Duration) {
        let outcome = self.result.recv_timeout(PATIENCE).expect("the wait hung");
        self.handle.join().unwrap();
        outcome
    }
}

// ---------------------------------------------------------------------------------------
// A handler ends a sleeping port wait, with or without SA_RESTART

const BOTH: [libc::c_int; 2] = [INTERRUPTING, RESTARTING];

#[test]
#[cfg_attr(
    iocp_force_fallback,
    ignore = "the emulated futex restarts after signals"
)]
fn a_signal_ends_a_timed_get_with_eintr() {
    for signal in BOTH {
        let port = unlimited();
        let waiter = Waiter::start({
            let port = port.clone();
            move || port.get(Some(LONG))
        });
        let (result, waited) = waiter.interrupt(signal);
        assert_eq!(errno(result), libc::EINTR, "signal {signal}");
        assert!(waited < PATIENCE);
        // The interrupted call left no trace: the port takes records and batched dequeues.
        let mut out = [Completion::default(); 2];
        assert_eq!(
            port.get_many(&mut out, 0, None).unwrap(),
            Drained {
                count: 0,
                status: DrainStatus::Complete
            }
        );
        port.post(record(1)).unwrap();
        assert_eq!(port.get(Some(Duration::ZERO)).unwrap(), record(1));
    }
}

#[test]
#[cfg_attr(
    iocp_force_fallback,
    ignore = "the emulated futex restarts after signals"
)]
fn a_signal_ends_an_infinite_get_with_eintr() {
    for signal in BOTH {
        let port = unlimited();
        let waiter = Waiter::start({
            let port = port.clone();
            move || port.get(None)
        });
        let (result, _) = waiter.interrupt(signal);
        assert_eq!(errno(result), libc::EINTR, "signal {signal}");
    }
}

#[test]
#[cfg_attr(
    iocp_force_fallback,
    ignore = "the emulated futex restarts after signals"
)]
fn a_signal_ends_get_many_with_interrupted_status() {
    for (signal, timeout) in [(INTERRUPTING, Some(LONG)), (RESTARTING, None)] {
        let port = Port::new().unwrap();
        let waiter = Waiter::start({
            let port = port.clone();
            move || {
                let mut out = [Completion::default(); 4];
                port.get_many(&mut out, 1, timeout)
            }
        });
        let (result, waited) = waiter.interrupt(signal);
        assert_eq!(
            result.unwrap(),
            Drained {
                count: 0,
                status: DrainStatus::Interrupted
            },
            "signal {signal}"
        );
        assert!(waited < PATIENCE);
        // The exclusive dequeue ended with the call.
        assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::ETIMEDOUT);
    }
}

#[test]
#[cfg_attr(
    iocp_force_fallback,
    ignore = "the emulated futex restarts after signals"
)]
fn a_signal_ends_get_many_with_the_records_it_already_had() {
    let port = Port::new().unwrap();
    port.post(record(1)).unwrap();
    port.post(record(2)).unwrap();
    let waiter = Waiter::start({
        let port = port.clone();
        move || {
            let mut out = [Completion::default(); 8];
            port.get_many(&mut out, 5, None).map(|d| (d, out))
        }
    });
    let (result, _) = waiter.interrupt(INTERRUPTING);
    let (drained, out) = result.unwrap();
    assert_eq!(
        drained,
        Drained {
            count: 2,
            status: DrainStatus::Interrupted
        }
    );
    assert_eq!(out[..2], [record(1), record(2)]);
}

#[test]
#[cfg_attr(
    iocp_force_fallback,
    ignore = "the emulated futex restarts after signals"
)]
fn a_signal_ends_fill_with_interrupted_status() {
    for signal in BOTH {
        let port = Port::new().unwrap();
        let waiter = Waiter::start({
            let port = port.clone();
            move || {
                let mut out = [std::mem::MaybeUninit::<u64>::uninit(); 4];
                port.fill(&mut out, 1, Some(LONG), Completion::key)
            }
        });
        let (result, _) = waiter.interrupt(signal);
        assert_eq!(
            result.unwrap().status,
            DrainStatus::Interrupted,
            "signal {signal}"
        );
    }
}

#[test]
#[cfg_attr(
    iocp_force_fallback,
    ignore = "the emulated futex restarts after signals"
)]
fn a_signal_ends_a_drain_with_eintr() {
    for signal in BOTH {
        let port = Port::new().unwrap();
        let waiter = Waiter::start({
            let port = port.clone();
            move || port.drain(4, Some(LONG)).map(|batch| batch.len())
        });
        let (result, _) = waiter.interrupt(signal);
        assert_eq!(errno(result), libc::EINTR, "signal {signal}");
        assert_eq!(errno(port.drain(4, Some(Duration::ZERO))), libc::ETIMEDOUT);
    }
}

#[test]
fn a_get_interrupted_by_a_signal_loses_no_record() {
    // Records posted right after the interruption are for the next call, exactly once.
    let port = unlimited();
    for round in 0..5 {
        let waiter = Waiter::start({
            let port = port.clone();
            move || port.get(Some(Duration::from_millis(300)))
        });
        waiter.kill(BOTH[round % 2]);
        port.post(record(round)).unwrap();
        let (result, _) = waiter.finish();
        // Whether the signal or the record ended the wait, the record is taken once.
        match result {
            Ok(got) => assert_eq!(got, record(round)),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EINTR));
                assert_eq!(port.get(Some(Duration::ZERO)).unwrap(), record(round));
            }
        }
        assert_eq!(port.queued(), 0);
    }
}

// ---------------------------------------------------------------------------------------
// Overlapped and event waits go on through any signal

#[test]
fn a_signal_does_not_end_get_result() {
    let overlapped = Arc::new(Overlapped::new());
    overlapped.start();
    let waiter = Waiter::start({
        let overlapped = Arc::clone(&overlapped);
        move || overlapped.get_result(true)
    });
    waiter.signal_without_effect(INTERRUPTING);
    waiter.signal_without_effect(RESTARTING);
    overlapped.publish(77, 0).unwrap();
    let (result, _) = waiter.finish();
    assert_eq!(result.unwrap(), 77);
}

#[test]
fn a_signal_does_not_end_an_infinite_event_wait() {
    let event = Event::new(false, false).unwrap();
    let waiter = Waiter::start({
        let event = event.clone();
        move || event.wait(None)
    });
    waiter.signal_without_effect(INTERRUPTING);
    event.set();
    let (result, _) = waiter.finish();
    result.unwrap();
}

#[test]
fn a_signal_does_not_move_an_event_wait_deadline() {
    let event = Event::new(true, false).unwrap();
    let timeout = Duration::from_millis(400);
    let waiter = Waiter::start({
        let event = event.clone();
        move || event.wait(Some(timeout))
    });
    waiter.signal_without_effect(INTERRUPTING);
    waiter.signal_without_effect(RESTARTING);
    let (result, waited) = waiter.finish();
    assert_eq!(errno(result), libc::ETIMEDOUT);
    assert!(waited >= timeout, "returned early, after {waited:?}");
    assert!(waited < timeout + LATE, "returned late, after {waited:?}");
}
