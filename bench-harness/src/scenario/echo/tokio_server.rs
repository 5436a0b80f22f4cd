//! The echo server on tokio, written as tokio programs usually are: an accept loop that
//! spawns one task per connection, which reads up to [`READ_SIZE`] bytes and `write_all`s
//! them back. One worker runs a `current_thread` runtime on the server thread (the accept
//! loop and every connection on it, as one iocp or mio worker has); more workers run a
//! `multi_thread` runtime with that many worker threads.
//!
//! It stops when its stop flag is set and a connection wakes the accept loop, or by itself
//! at the deadline; dropping the runtime then ends every connection task.

use super::{pin_set, Launch, Running, READ_SIZE};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound on connections one accept loop takes.
const MAX_ACCEPTS: u64 = 1 << 32;
/// Upper bound on reads of one connection task.
const MAX_READS: u64 = 1 << 40;
/// How long dropping the runtime may wait for its worker threads.
const SHUTDOWN: Duration = Duration::from_secs(2);

/// Starts the server on one thread (which runs the runtime).
pub(super) fn start(launch: Launch) -> Result<Running, String> {
    let Launch {
        listener,
        workers,
        cores,
        deadline,
    } = launch;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let handle = thread::Builder::new()
        .name("tokio-echo".into())
        .spawn(move || {
            // Worker threads of a multi_thread runtime inherit this CPU set.
            pin_set(cores.as_deref());
            serve(listener, workers, thread_stop, deadline)
        })
        .map_err(|e| format!("spawning the server thread: {e}"))?;
    Ok(Running {
        threads: vec![handle],
        stop: Box::new(move || request_stop(&stop, addr)),
    })
}

/// Sets the flag and connects once, so that the accept loop wakes up and sees it.
fn request_stop(stop: &AtomicBool, addr: SocketAddr) {
    // Release: pairs with the acquire load after the accept.
    stop.store(true, Ordering::Release);
    // Failure means the listener is gone: the server has stopped already.
    let _ = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100));
}

/// Builds the runtime and runs the accept loop until stopped.
fn serve(
    listener: std::net::TcpListener,
    workers: usize,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> Result<(), String> {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| format!("building the runtime: {e}"))?;
    let served = runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        let deadline = tokio::time::Instant::from_std(deadline);
        for _ in 0..MAX_ACCEPTS {
            let Ok(accepted) = tokio::time::timeout_at(deadline, listener.accept()).await else {
                // The deadline passed.
                return Ok(());
            };
            // Acquire: pairs with the release store in `request_stop`.
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            match accepted {
                Ok((stream, _)) => {
                    // As every server does: 64-byte echoes leave at once.
                    if stream.set_nodelay(true).is_ok() {
                        tokio::spawn(echo(stream));
                    }
                }
                // A failed accept (EMFILE, say) drops that connection; the client sees it.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {}
            }
        }
        Ok::<(), io::Error>(())
    });
    runtime.shutdown_timeout(SHUTDOWN);
    served.map_err(|e| format!("tokio: {e}"))
}

/// One connection: read, write it all back, until EOF or an error.
async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0; READ_SIZE];
    for _ in 0..MAX_READS {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
