//! Programs the harness runs as child processes: peers (fio, redis-server,
//! redis-benchmark), the `resp_server` example, the idle clients of the echo scale row.
//!
//! Every child is bounded in time and ended on every path: [`run`] kills a program that
//! outlives its limit, and a [`Process`] (a server, or anything else that runs alongside a
//! measurement) is killed and reaped when dropped, on success, on an early return and on
//! a panic alike. Only the harness's own children are ever signalled, by their handles.
//! Their output is read by threads of its own, so that a full pipe never blocks a child.

use core_affinity::CoreId;
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// How often a wait for a child looks at it again.
const POLL: Duration = Duration::from_millis(5);

/// What a program that ran to its end printed.
#[derive(Debug)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Finished {
    /// The last line of standard error (else of standard output), for a failure's message.
    pub fn last_words(&self) -> &str {
        [&self.stderr, &self.stdout]
            .into_iter()
            .find_map(|text| text.trim().lines().last())
            .unwrap_or("no message")
    }
}

/// Runs `command` (named `name` in errors) to its end with no input, restricted to `cores`
/// if given (see [`Process::spawn`]), killing it once it has run for `limit`. A program
/// that exits with a failure is `Ok` too: the caller judges the status, with the output at
/// hand.
pub fn run(
    name: &str,
    command: &mut Command,
    cores: Option<&[CoreId]>,
    limit: Duration,
) -> Result<Finished, String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_on(command, cores).map_err(|e| format!("cannot run {name}: {e}"))?;
    let (mut stdout, mut stderr) = (
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let until = Instant::now() + limit;
    thread::scope(|s| {
        let out = s.spawn(move || read_all(&mut stdout));
        let err = s.spawn(move || read_all(&mut stderr));
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= until => {
                    // Our own child, by its handle; reaping it closes its pipes, which ends
                    // the readers.
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "{name} ran past its limit of {:.0} s and was killed",
                        limit.as_secs_f64()
                    ));
                }
                Ok(None) => thread::sleep(POLL),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!("waiting for {name}: {e}"));
                }
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        status.map(|status| Finished {
            status,
            stdout,
            stderr,
        })
    })
}

/// Starts `command`, from a thread of its own restricted to `cores` if given: a child
/// inherits the CPU set of the thread that starts it, and no thread of the harness stays
/// pinned by it.
fn spawn_on(command: &mut Command, cores: Option<&[CoreId]>) -> io::Result<Child> {
    if cores.is_none() {
        return command.spawn();
    }
    thread::scope(|s| {
        s.spawn(|| {
            crate::sys::pin_set(cores);
            command.spawn()
        })
        .join()
    })
    .unwrap_or_else(|_| Err(io::Error::other("the spawning thread panicked")))
}

/// Everything a pipe gives until its end (what was read before an error, if one comes).
fn read_all(pipe: &mut impl Read) -> String {
    let mut bytes = Vec::new();
    let _ = pipe.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A child that runs alongside the harness (a server, a holder of connections), killed and
/// reaped when dropped. Its standard output and standard error are read line by line into
/// one queue, which [`Process::line`] takes from.
pub struct Process {
    name: String,
    child: Child,
    lines: Receiver<String>,
    /// The last line taken, for error messages.
    last: String,
}

impl Process {
    /// Starts `command` with its standard input piped (a child may take the pipe's end, when
    /// the harness is gone, as the sign to exit), restricted to `cores` if given.
    pub fn spawn(
        name: &str,
        command: &mut Command,
        cores: Option<&[CoreId]>,
    ) -> Result<Process, String> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_on(command, cores).map_err(|e| format!("cannot run {name}: {e}"))?;
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        for (pipe, sender) in [
            (Box::new(stdout) as Box<dyn Read + Send>, sender.clone()),
            (Box::new(stderr), sender),
        ] {
            // Detached: each ends when the child's end of its pipe closes, which killing and
            // reaping the child ensures.
            let reader = thread::Builder::new()
                .name("child-output".into())
                .spawn(move || {
                    for line in BufReader::new(pipe).lines() {
                        let Ok(line) = line else { break };
                        if sender.send(line).is_err() {
                            break;
                        }
                    }
                });
            if let Err(e) = reader {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("reading {name}'s output: {e}"));
            }
        }
        Ok(Process {
            name: name.to_owned(),
            child,
            lines,
            last: String::new(),
        })
    }

    /// The next line the child prints, waiting at most `limit`; an error when it exits (or
    /// closes its output) first or the time runs out.
    pub fn line(&mut self, limit: Duration) -> Result<String, String> {
        match self.lines.recv_timeout(limit) {
            Ok(line) => {
                self.last.clone_from(&line);
                Ok(line)
            }
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "{} printed nothing for {:.0} s",
                self.name,
                limit.as_secs_f64()
            )),
            Err(RecvTimeoutError::Disconnected) => Err(self.ended()),
        }
    }

    /// Whether the child is still running; the reason (its exit and last line) when not.
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(_)) | Err(_) => Err(self.ended()),
        }
    }

    /// Why the child is gone: its exit status and the last line it printed.
    fn ended(&mut self) -> String {
        // Lines it printed before it died say why.
        while let Ok(line) = self.lines.try_recv() {
            self.last = line;
        }
        let status = match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => "closed its output".to_owned(),
        };
        match self.last.trim() {
            "" => format!("{} ended ({status})", self.name),
            last => format!("{} ended ({status}): {last}", self.name),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Our own child, by its handle (a no-op error if it already exited); then reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_collects_output_and_kills_at_the_limit() {
        let done = run(
            "sh",
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.last_words(), "err");

        let started = Instant::now();
        let error = run(
            "sleep",
            Command::new("sleep").arg("30"),
            None,
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(error.contains("killed"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_process_gives_its_lines_and_dies_with_its_handle() {
        let mut process = Process::spawn(
            "sh",
            Command::new("sh").args(["-c", "echo ready; read line; echo bye; exit 7"]),
            None,
        )
        .unwrap();
        assert_eq!(process.line(Duration::from_secs(10)).unwrap(), "ready");
        process.alive().unwrap();
        drop(process.child.stdin.take());
        assert_eq!(process.line(Duration::from_secs(10)).unwrap(), "bye");
        let gone = process.line(Duration::from_secs(10)).unwrap_err();
        assert!(gone.contains("ended"), "{gone}");
        let until = Instant::now() + Duration::from_secs(10);
        while process.alive().is_ok() && Instant::now() < until {
            thread::sleep(POLL);
        }
        assert!(process.alive().unwrap_err().contains("exit status: 7"));

        let mut sleeper = Process::spawn("sleep", Command::new("sleep").arg("30"), None).unwrap();
        let pid = sleeper.child.id();
        assert!(sleeper.line(Duration::from_millis(50)).is_err());
        drop(sleeper);
        // Killed and reaped: the pid names no process any more.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
