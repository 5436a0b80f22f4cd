//! A socket's word (`Gate`): the steps around it are `net.rs`'s, step for step.

use crate::model;
use iocp::{Gate, Queues};
use loom::thread;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A socket as the word's models see it: the kernel's side as atomics, the socket's mutex
/// over what `net.rs` keeps queued (counts: the models check that requests complete, and
/// their order is the queues' own), and how many requests completed, at once or queued.
struct ModelSocket {
    gate: Gate,
    /// Bytes wait in the receive queue.
    bytes: loom::sync::atomic::AtomicBool,
    /// Sends the send buffer has room for.
    room: loom::sync::atomic::AtomicUsize,
    /// A send is in the kernel: two at once would interleave their bytes.
    sending: loom::sync::atomic::AtomicBool,
    queued: loom::sync::Mutex<Queued>,
    done: loom::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Queued {
    reads: usize,
    writes: usize,
}

impl Queued {
    fn queues(&self) -> Queues {
        Queues {
            reads: self.reads > 0,
            writes: self.writes > 0,
            connecting: false,
        }
    }
}

impl ModelSocket {
    fn new(bytes: bool, room: usize) -> Arc<ModelSocket> {
        Arc::new(ModelSocket {
            gate: Gate::default(),
            bytes: loom::sync::atomic::AtomicBool::new(bytes),
            room: loom::sync::atomic::AtomicUsize::new(room),
            sending: loom::sync::atomic::AtomicBool::new(false),
            queued: loom::sync::Mutex::new(Queued::default()),
            done: loom::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn complete(&self) {
        self.done.fetch_add(1, Ordering::SeqCst);
    }

    /// A `recv`: takes the bytes if there are any.
    fn try_recv(&self) -> bool {
        self.bytes.swap(false, Ordering::SeqCst)
    }

    /// A `send`: fails with `EAGAIN` without room. Two in the kernel at once fail the model.
    fn try_send(&self) -> bool {
        assert!(
            !self.sending.swap(true, Ordering::SeqCst),
            "two sends in the kernel at once"
        );
        let sent = self
            .room
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |room| {
                room.checked_sub(1)
            })
            .is_ok();
        self.sending.store(false, Ordering::SeqCst);
        sent
    }

    /// `submit` for a `recv` (no connect, no readiness cache in play).
    fn recv(&self) {
        let seen = self.gate.load();
        let mut tried = None;
        if seen.may_try_read(true) {
            if self.try_recv() {
                return self.complete();
            }
            tried = Some(seen);
        }
        let mut queued = self.queued.lock().unwrap();
        let now = self.gate.load();
        let try_now = queued.reads == 0
            && !now.waits_for_readiness()
            && tried.map_or(true, |tried| tried.event_since(now));
        if try_now && self.try_recv() {
            return self.complete();
        }
        queued.reads += 1;
        self.gate.mirror(queued.queues(), false);
    }

    /// `submit` for a `send`, with `hand_over` and `run_writes`.
    fn send(&self) {
        if let Some(claimed) = self.gate.claim_write() {
            if self.try_send() {
                self.complete();
                if self.gate.give_back_write() {
                    let mut queued = self.queued.lock().unwrap();
                    self.run_writes(&mut queued);
                }
                return;
            }
            let mut queued = self.queued.lock().unwrap();
            queued.writes += 1;
            let before = self.gate.mirror(queued.queues(), true);
            if claimed.event_since(before) {
                self.run_writes(&mut queued);
            }
            return;
        }
        let mut queued = self.queued.lock().unwrap();
        let queue_empty = queued.writes == 0;
        let try_now = queue_empty && self.gate.claim_write().is_some();
        if try_now && self.try_send() {
            self.gate.give_back_write();
            return self.complete();
        }
        queued.writes += 1;
        let before = self.gate.mirror(queued.queues(), try_now);
        if queue_empty && !try_now && !before.writing() {
            self.run_writes(&mut queued);
        }
    }

    /// `State::run` for writes, then the mirror (`run_now`).
    fn run_writes(&self, queued: &mut Queued) {
        if !self.gate.load().writing() {
            while queued.writes > 0 && self.try_send() {
                queued.writes -= 1;
                self.complete();
            }
        }
        self.gate.mirror(queued.queues(), false);
    }

    /// `on_ready`: one edge-triggered event, after the kernel's side changed.
    fn event(&self, readable: bool, writable: bool) {
        let mut queued = self.queued.lock().unwrap();
        self.gate.event(readable, false);
        if writable && !self.gate.load().writing() {
            while queued.writes > 0 && self.try_send() {
                queued.writes -= 1;
                self.complete();
            }
        }
        if readable && queued.reads > 0 && self.try_recv() {
            queued.reads -= 1;
            self.complete();
        }
        self.gate.mirror(queued.queues(), false);
    }
}

#[test]
fn a_recv_tried_without_the_lock_never_waits_for_an_event_handled_before_it_queued() {
    model("socket_recv_races_readiness", 3, || {
        let socket = ModelSocket::new(false, 0);
        let peer = {
            let socket = Arc::clone(&socket);
            thread::spawn(move || {
                // A swap, not a store: loom can order a store inside the recv's swap
                // (the second pattern of the module doc).
                socket.bytes.swap(true, Ordering::SeqCst);
                socket.event(true, false);
            })
        };
        socket.recv();
        peer.join().unwrap();
        assert_eq!(
            socket.done.load(Ordering::SeqCst),
            1,
            "the recv was left waiting"
        );
    });
}

#[test]
fn a_short_read_never_marks_drained_over_a_readable_event_handled_since_its_try() {
    model("socket_drained_races_readiness", 3, || {
        let gate = Arc::new(Gate::default());
        let start = gate.load();
        let reader = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || {
                let seen = gate.load();
                // The short read happens here.
                gate.drained(seen);
                seen
            })
        };
        gate.event(true, false);
        let seen = reader.join().unwrap();
        if gate.load().waits_for_readiness() {
            assert!(
                start.event_since(seen),
                "drained over an event handled after the read's try"
            );
        }
    });
}

#[test]
fn two_senders_and_a_writable_event_never_overlap_sends_nor_leave_one_waiting() {
    model("socket_sends_race", 3, || {
        // Room for one send; the event brings room for the other.
        let socket = ModelSocket::new(false, 1);
        let other = {
            let socket = Arc::clone(&socket);
            thread::spawn(move || socket.send())
        };
        let reactor = {
            let socket = Arc::clone(&socket);
            thread::spawn(move || {
                socket.room.fetch_add(1, Ordering::SeqCst);
                socket.event(false, true);
            })
        };
        socket.send();
        other.join().unwrap();
        reactor.join().unwrap();
        assert_eq!(
            socket.done.load(Ordering::SeqCst),
            2,
            "a send was left waiting"
        );
    });
}
