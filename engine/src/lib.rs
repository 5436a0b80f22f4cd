//! I/O completion ports for Linux.
//!
//! A [`Port`] is a queue of [`Completion`] records with the semantics of Windows' and AIX's
//! completion ports: producers [`post`](Port::post) records (sources of real I/O post them
//! as requests complete), threads take them one at a time with [`Port::get`]
//! (`GetQueuedCompletionStatus`) or in batches with [`Port::get_many`], [`Port::fill`]
//! (`GetMultipleCompletionStatus`) and the zero-copy [`Port::drain`].
//!
//! # Guarantees
//!
//! * **No record is ever dropped.** A full lane spills into an overflow queue, in order;
//!   only closing a port discards what it still holds.
//! * **Per-producer order.** Records posted by one thread are dequeued in posting order.
//!   Records posted by different threads may come out in any order, even when one post
//!   happened after the other; a port built with [`PortBuilder::fifo`] keeps one order
//!   across threads, at the cost of an atomic read-modify-write per post.
//! * **The fast path allocates nothing and takes no lock**: each posting thread writes into
//!   a lane of its own with plain stores (its first post to a port makes the lane), and
//!   dequeuing ready records takes a few atomic operations per batch. A post makes a system
//!   call only when a waiter sleeps.
//! * **Batched drains**: the consumer checks each record's stamp and copies the record in
//!   one pass, and frees a lane's whole run with one store; [`Port::post_many`] claims a
//!   batch's slots at once.
//! * **Waits keep their deadline.** Sleeping uses a futex with an absolute CLOCK_MONOTONIC
//!   deadline, after a short adaptive spin; spurious wakes and signals never stretch or
//!   shorten a timeout, and a signal handler that runs while a port wait sleeps ends it
//!   with `EINTR` (with or without `SA_RESTART`, as `epoll_wait` does).
//!
//! * **A forked child uses threads and poll sets of its own.** The engine's threads stay
//!   in the parent after `fork`, and its io_uring rings and epoll instances are shared with
//!   the child: in the child, a [`FilePool`] started before the fork is stopped (`EAGAIN`),
//!   a port makes a poll set of the child's own for the sockets the child uses with it,
//!   and a socket the parent registered for readiness fails with `EBADF` where it would
//!   wait. [`FilePool::global`] and the reactor of sockets with no port start again in the
//!   child on first use.
//!
//! Errors are `io::Error`s carrying the `errno` the C ABI reports (`EBADF`, `EBUSY`,
//! `ETIMEDOUT`, `EINTR`, `EINVAL`, ...).
//!
//! # Example
//!
//! ```
//! use iocp::{Completion, Port};
//! use std::time::Duration;
//!
//! let port = Port::new()?;
//! let producer = {
//!     let port = port.clone();
//!     std::thread::spawn(move || {
//!         for i in 0..100 {
//!             port.post(Completion::new(1, i, 0)).unwrap();
//!         }
//!     })
//! };
//! let mut records = [Completion::default(); 64];
//! let mut seen = 0;
//! while seen < 100 {
//!     let drained = port.get_many(&mut records, 1, Some(Duration::from_secs(5)))?;
//!     for record in &records[..drained.count] {
//!         assert_eq!(record.bytes(), seen);
//!         seen += 1;
//!     }
//! }
//! producer.join().unwrap();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Platforms
//!
//! Linux uses the futex system call; other Unixes (and Linux built with
//! `--cfg iocp_force_fallback`) use a condition-variable emulation behind the same contract.

#[cfg(not(loom))]
mod aio;
#[cfg(not(loom))]
mod aiocb;
#[cfg(not(loom))]
mod buffer;
mod completion;
/// The C ABI's table of the caller's own descriptors; present with the feature `c-abi`,
/// which the C library enables.
#[cfg(all(not(loom), feature = "c-abi"))]
pub mod descriptor;
mod drive;
mod error;
#[cfg(not(loom))]
mod event;
#[cfg(not(loom))]
mod file;
mod gate;
#[cfg(not(loom))]
mod handle;
#[cfg(not(loom))]
mod job;
#[cfg(not(loom))]
mod net;
#[cfg(not(loom))]
mod overlapped;
mod parker;
#[cfg(not(loom))]
mod pool;
mod port;
mod primitive;
#[cfg(not(loom))]
mod provider;
#[cfg(not(loom))]
mod reactor;
#[cfg(not(loom))]
mod request;
mod ring;
#[cfg(loom)]
mod scripted;
mod share;
mod sys;
#[cfg(all(not(loom), target_os = "linux"))]
mod uring;

/// Fault injection, for tests only: make the engine's own system calls fail (`fail(call,
/// errno)`, scoped to a descriptor, a file or a thread, then `arm()`). Present only with
/// the feature `fault-injection`, which no real build enables.
#[cfg(feature = "fault-injection")]
pub mod fault {
    pub use crate::sys::fault::{fail, Armed, Call, Plan};
}

#[cfg(not(loom))]
pub use aio::CALLER_READ_MAX;
#[cfg(not(loom))]
pub use aiocb::{AioCancel, Aiocb, LioMode, Opcode, AIO_EXTENDED, LIO_NOP, LIO_READ, LIO_WRITE};
#[cfg(not(loom))]
pub use buffer::MAX_TRANSFER;
pub use completion::Completion;
/// Who delivers a cancelled operation's record, exported for the loom models only.
#[cfg(loom)]
#[doc(hidden)]
pub use completion::{Cancel, Delivery};
#[cfg(not(loom))]
pub use event::Event;
#[cfg(not(loom))]
pub use file::{File, FilePool, FilePoolBuilder};
/// A socket's lock-free word, exported for the loom models only.
#[cfg(loom)]
#[doc(hidden)]
pub use gate::{Gate, Queues, Seen};
#[cfg(not(loom))]
pub use net::Socket;
#[cfg(not(loom))]
pub use overlapped::{Overlapped, STATUS_PENDING};
#[cfg(not(loom))]
pub use pool::FileDriver;
#[cfg(all(not(loom), feature = "c-abi"))]
pub use port::FastPost;
pub use port::{Batch, DrainStatus, Drained, Drive, Port, PortBuilder, GMCS_NMAX};
#[cfg(not(loom))]
pub use provider::{ProviderSocket, ProviderStatus};
#[cfg(not(loom))]
pub use request::{OpResult, Submitted, Ticket};
/// Marks a thread as one that fences its posts, exported for the loom models only.
#[cfg(loom)]
#[doc(hidden)]
pub use ring::fence_own_posts;
pub use ring::{DEFAULT_CAPACITY, MAX_CAPACITY};
/// The readiness a loom model makes for a port's inline drive, exported for the models only.
#[cfg(loom)]
#[doc(hidden)]
pub use scripted::Scripted;
/// The slot through which the file pool shares runs of tasks, exported for the loom models
/// only.
#[cfg(loom)]
#[doc(hidden)]
pub use share::Offers;

/// A handle: the number of a file descriptor the library owns (`HANDLE` in C).
pub type RawHandle = i32;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
