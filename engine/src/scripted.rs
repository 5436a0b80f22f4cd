//! Under loom, a stand-in for the socket reactor whose readiness the model makes, so that
//! the loom models check the port's inline-drive hand-over (`drive`) itself.

use crate::drive::{Driven, Readiness, Turns};
use crate::primitive::{lock, Condvar, Mutex};
use crate::{Completion, Port};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Under loom, the readiness a model makes: sockets that become ready
/// ([`become_ready`](Self::become_ready)) and whose records the leader's next turn posts,
/// as the reactor posts those of the requests it completes.
///
/// A turn without a timeout waits, on a loom condition variable, until a socket is ready or
/// [`wake`](Readiness::wake) is called (a wake is kept for the next turn when none waits,
/// as the reactor's eventfd keeps it). Loom has no clock: a turn with a timeout never
/// waits, and when nothing is ready it fails with `ETIMEDOUT`, a deadline that has come
/// (the port's wait then times out, as it does when a timed futex wait ends under loom).
pub struct Scripted {
    turns: Turns<()>,
    state: Mutex<Script>,
    changed: Condvar,
    /// Whether a turn runs: std's atomic, outside the model, since loom runs one thread at
    /// a time; only the check in `turn` reads it.
    polling: std::sync::atomic::AtomicBool,
}

/// What a [`Scripted`] readiness holds.
struct Script {
    /// Sockets ready and the records their requests complete with, for the next turn.
    ready: Vec<(Port, Completion)>,
    /// A wake not yet taken by a turn.
    woken: bool,
    /// Turns that collected readiness.
    collected: usize,
}

impl Scripted {
    /// Readiness with nothing ready, to be given to a port with [`drive`](Self::drive).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Scripted {
        Scripted {
            turns: Turns::new(()),
            state: Mutex::new(Script {
                ready: Vec::new(),
                woken: false,
                collected: 0,
            }),
            changed: Condvar::new(),
            polling: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A socket becomes ready: the leader's next turn posts `record` to `port`. Ends a
    /// turn's wait, as the kernel ends `epoll_wait`.
    pub fn become_ready(&self, port: &Port, record: Completion) {
        lock(&self.state).ready.push((port.clone(), record));
        self.changed.notify_all();
    }

    /// Turns so far that collected readiness (posted the records of ready sockets).
    pub fn collected(&self) -> usize {
        lock(&self.state).collected
    }

    /// Gives `port` this readiness in place of a reactor, as a port creates one for an
    /// inline port's first socket request that waits: a waiter already asleep is woken to
    /// lead. For a port built with the default [`Drive::Inline`](crate::Drive::Inline).
    /// Panics if the port has readiness already.
    pub fn drive(self: &Arc<Self>, port: &Port) {
        port.install(Arc::clone(self) as Arc<dyn Driven>);
    }
}

impl Readiness for Scripted {
    type Poller = ();

    fn turns(&self) -> &Turns<()> {
        &self.turns
    }

    fn turn(&self, _poller: &mut (), timeout: Option<Duration>) -> io::Result<()> {
        // Relaxed (both): see `polling`.
        let other = self
            .polling
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        assert!(!other, "two threads poll at once");
        let mut state = lock(&self.state);
        while timeout.is_none() && state.ready.is_empty() && !state.woken {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.woken = false;
        let ready = std::mem::take(&mut state.ready);
        state.collected += usize::from(!ready.is_empty());
        drop(state);
        self.turns.polled();
        let collected = !ready.is_empty();
        for (port, record) in ready {
            // A closed port discards its records, these with them.
            let _ = port.post(record);
        }
        self.polling
            .store(false, std::sync::atomic::Ordering::Relaxed);
        match timeout {
            Some(_) if !collected => Err(crate::error::timed_out()),
            _ => Ok(()),
        }
    }

    fn wake(&self) {
        lock(&self.state).woken = true;
        self.changed.notify_all();
    }
}
