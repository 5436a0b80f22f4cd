//! How long the tests wait. Each bound is generous for a loaded 2-core machine: a test that
//! meets one has lost what it waits for, not merely run slowly.

use std::time::Duration;

/// How long a test waits for a record, a peer or a thread's report before it declares it
/// lost.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// [`PATIENCE`] for the tests that move thousands of records or mebibytes of file data
/// before the wait (the file tests, the stress suite, the soak).
pub const BULK_PATIENCE: Duration = Duration::from_secs(10);

/// Long enough for a thread that passed a barrier to reach its wait and park, on a loaded
/// 2-core machine. Nothing in the API says whether a thread is parked, so tests sleep.
pub const SETTLE: Duration = Duration::from_millis(100);

/// How late a timed wait may return on a noisy CI machine.
pub const LATE: Duration = Duration::from_millis(150);

/// A wait that must not end by its own timeout within a test.
pub const LONG: Duration = Duration::from_secs(10);
