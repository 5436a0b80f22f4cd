//! The C test suite: each program in `tests/c/` is compiled with the system C compiler
//! (`$CC`, else `cc`) with `-std=c11 -Wall -Wextra -Werror` against `include/iocp.h` and the
//! `libiocp.a` cargo built beside this test, run, and must exit 0.
//!
//! `faults.c` links a `libiocp.a` of its own, built with the test-only feature
//! `fault-injection` into `CARGO_TARGET_TMPDIR/fault-ffi` (`fault_library`).
//!
//! Each program is compiled, linked and run in a directory of the test process's own
//! ([`Scratch`]), so two runs of the suite at once never touch each other's files.
//!
//! `tests/sanitize.sh` runs the suite under sanitizers through three variables:
//!
//! * `IOCP_C_SANITIZE`: `address` (or `1`) compiles the programs with
//!   `-fsanitize=address,undefined`, `thread` with `-fsanitize=thread`.
//! * `IOCP_C_LIBRARY`: the `libiocp.a` to link, for one built with the same sanitizer.
//! * `IOCP_C_SANITIZER_RUNTIME`: a sanitizer runtime archive to link in place of the C
//!   compiler's, for a library whose instrumentation needs a newer runtime than it has.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest a program may run (sanitized builds are several times slower).
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// What `IOCP_C_SANITIZE` asks for: a name for the build, and the flags that compile and
/// link the programs with it.
struct Sanitizer {
    name: &'static str,
    compile: &'static [&'static str],
    link: &'static [&'static str],
}

fn sanitizer() -> Sanitizer {
    match std::env::var("IOCP_C_SANITIZE").as_deref() {
        Err(_) | Ok("" | "0") => Sanitizer {
            name: "plain",
            compile: &["-O2"],
            link: &[],
        },
        Ok("1" | "address") => Sanitizer {
            name: "address",
            compile: &[
                "-O1",
                "-fsanitize=address,undefined",
                "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=all",
            ],
            link: &["-fsanitize=address,undefined"],
        },
        Ok("thread") => Sanitizer {
            name: "thread",
            compile: &["-O1", "-fsanitize=thread", "-fno-omit-frame-pointer"],
            link: &["-fsanitize=thread"],
        },
        Ok(other) => panic!("IOCP_C_SANITIZE={other:?}: expected address, thread or 0"),
    }
}

/// `target/<profile>`: this test runs from `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// `libiocp.a`: `$IOCP_C_LIBRARY`, else the one `cargo build` left beside this test, else
/// one built now, once.
///
/// `cargo test` builds no static library for a crate that has no rlib (nothing links it),
/// so on a fresh clone there is none yet. It is built into a target directory of its own:
/// the running `cargo test` may hold the main one's lock.
fn library() -> PathBuf {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY
        .get_or_init(|| {
            if let Some(library) = std::env::var_os("IOCP_C_LIBRARY") {
                let library = PathBuf::from(library);
                assert!(
                    library.exists(),
                    "IOCP_C_LIBRARY={library:?} does not exist"
                );
                return library;
            }
            let beside = profile_dir().join("libiocp.a");
            if beside.exists() {
                return beside;
            }
            build_library("libiocp", &[])
        })
        .clone()
}

/// `libiocp.a` built with the test-only feature `fault-injection` (the exports of
/// `tests/c/faults.h`), once, for `faults.c` alone; `None` when `$IOCP_C_LIBRARY` names the
/// library to test (a sanitizer build, made without the feature).
fn fault_library() -> Option<PathBuf> {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    if std::env::var_os("IOCP_C_LIBRARY").is_some() {
        return None;
    }
    Some(
        LIBRARY
            .get_or_init(|| build_library("fault-ffi", &["--features", "fault-injection"]))
            .clone(),
    )
}

/// Builds `libiocp.a` with `cargo build -p iocp-ffi --lib` and `args`, in the profile this
/// test runs in, into `CARGO_TARGET_TMPDIR/<name>`: a target directory of its own, as the
/// running `cargo test` may hold the main one's lock. Returns the library's path.
fn build_library(name: &str, args: &[&str]) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp.join(name);
    let profile = profile_dir();
    let release = profile.file_name().is_some_and(|name| name == "release");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "-p", "iocp-ffi", "--lib", "--target-dir"])
        .arg(&target)
        .args(args);
    if release {
        cargo.arg("--release");
    }
    let scratch = Scratch::new(&format!("{name}-build"));
    run(
        cargo,
        &format!("building libiocp.a ({name})"),
        &scratch.join("build.log"),
    );
    target
        .join(if release { "release" } else { "debug" })
        .join("libiocp.a")
}

/// A directory of this test process's own under `CARGO_TARGET_TMPDIR`
/// (`c-runs/<label>-<pid>`) for one program's object, executable and logs. Two runs of the
/// suite at once (a `cargo test` and a `cargo nextest run` sharing the target directory,
/// say) would otherwise link over a program the other is running, which fails with
/// `ETXTBSY`, and write each other's logs. Removed on drop, but kept when the test is
/// failing, for a look at its files.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("c-runs")
            .join(format!("{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    fn join(&self, file: impl AsRef<Path>) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_owned())
}

/// Runs `command` to completion within [`TIME_LIMIT`], its output going to `log`; panics
/// with the output if it fails.
fn run(mut command: Command, what: &str, log: &Path) {
    let out = File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = std::fs::read_to_string(log).unwrap_or_default();
    match status {
        Some(status) if status.success() => print!("{output}"),
        Some(status) => panic!("{what} failed ({status}):\n{output}"),
        None => panic!("{what} ran past {TIME_LIMIT:?}:\n{output}"),
    }
}

/// Compiles `tests/c/<name>.c` against `libiocp.a` and runs it with `args`.
fn c_program(name: &str, args: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    compile_and_run(&dir.join("tests/c").join(format!("{name}.c")), name, args);
}

/// Compiles `source` against `libiocp.a` as `name` and runs it with `args`.
fn compile_and_run(source: &Path, name: &str, args: &[&str]) {
    compile_and_run_against(&library(), source, name, args);
}

/// Compiles `source` against the static library `lib` as `name` and runs it with `args`.
fn compile_and_run_against(lib: &Path, source: &Path, name: &str, args: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sanitizer = sanitizer();
    let out_dir = Scratch::new(&format!("{name}-{}", sanitizer.name));
    let exe = out_dir.join(name);
    let object = out_dir.join(format!("{name}.o"));

    let mut cc = Command::new(compiler());
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-pthread"]);
    cc.args(sanitizer.compile);
    cc.arg("-I").arg(dir.join("include"));
    cc.arg("-I").arg(dir.join("tests/c"));
    cc.arg("-c").arg(source).arg("-o").arg(&object);
    run(
        cc,
        &format!("compiling {name}.c"),
        &out_dir.join(format!("{name}.cc.log")),
    );

    let mut ld = Command::new(compiler());
    ld.args(["-g", "-pthread"]).arg(&object).arg(lib);
    match std::env::var_os("IOCP_C_SANITIZER_RUNTIME") {
        // All of the runtime: its interceptors must win over libc's.
        Some(runtime) => {
            ld.arg("-Wl,--whole-archive")
                .arg(runtime)
                .args(["-Wl,--no-whole-archive", "-lrt"]);
        }
        None => {
            ld.args(sanitizer.link);
        }
    }
    ld.args(["-lpthread", "-ldl", "-lm", "-o"]).arg(&exe);
    run(
        ld,
        &format!("linking {name}"),
        &out_dir.join(format!("{name}.ld.log")),
    );

    let mut program = Command::new(&exe);
    program.args(args);
    // Leak checking stays on: the library's lasting state is reachable from its statics.
    program.env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1");
    run(program, name, &out_dir.join(format!("{name}.log")));
}

#[test]
fn layout() {
    c_program("layout", &[]);
}

#[test]
fn aix_example() {
    c_program("aix_example", &[]);
}

#[test]
fn api_table() {
    c_program("api_table", &[]);
}

#[test]
fn sockets() {
    c_program("sockets", &[]);
}

#[test]
fn files() {
    c_program("files", &[]);
}

#[test]
fn provider() {
    c_program("provider", &[]);
}

#[test]
fn events() {
    c_program("events", &[]);
}

#[test]
fn fork() {
    c_program("fork", &[]);
}

#[test]
fn reclaim() {
    c_program("reclaim", &[]);
}

#[test]
fn threads() {
    c_program("threads", &[]);
}

#[test]
fn ordering() {
    c_program("ordering", &[]);
}

#[test]
fn gqcs_ex() {
    c_program("gqcs_ex", &[]);
}

#[test]
fn close_port() {
    c_program("close_port", &[]);
}

#[test]
fn close_in_flight() {
    c_program("close_in_flight", &[]);
}

#[test]
fn fuzz_calls() {
    c_program("fuzz_calls", &[]);
}

/// Faults injected through the library's test-only build (`tests/c/faults.h`): each gives
/// its errno through the public API and every request completes exactly once.
#[test]
fn faults() {
    let Some(lib) = fault_library() else {
        println!("faults: skipped: IOCP_C_LIBRARY names a library built without fault-injection");
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    compile_and_run_against(&lib, &dir.join("tests/c/faults.c"), "faults", &[]);
}

/// The example in `README.md` (its first C block) compiles and runs.
#[test]
fn readme_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README.md");
    let start = readme.find("```c\n").expect("a C example in README.md") + "```c\n".len();
    let len = readme[start..].find("```").expect("the end of the example");
    let scratch = Scratch::new("readme_example-source");
    let source = scratch.join("readme_example.c");
    std::fs::write(&source, &readme[start..start + len]).expect("write the example");
    compile_and_run(&source, "readme_example", &[]);
}

/// The header alone compiles as strict C99 and, where a C++ compiler exists, as C++11.
#[test]
fn header_compiles_as_c99_and_cpp() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = dir.join("tests/c/header_only.c");
    let out_dir = Scratch::new("header");
    let mut c99 = Command::new(compiler());
    c99.args([
        "-std=c99",
        "-pedantic-errors",
        "-Wall",
        "-Wextra",
        "-Werror",
    ]);
    c99.arg("-fsyntax-only")
        .arg("-I")
        .arg(dir.join("include"))
        .arg(&source);
    run(c99, "iocp.h as C99", &out_dir.join("c99.log"));

    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    if Command::new(&cxx).arg("--version").output().is_err() {
        println!("no C++ compiler ({cxx}): the C++ check is skipped");
        return;
    }
    let mut cpp = Command::new(cxx);
    cpp.args([
        "-x",
        "c++",
        "-std=c++11",
        "-pedantic-errors",
        "-Wall",
        "-Wextra",
        "-Werror",
    ]);
    cpp.arg("-fsyntax-only")
        .arg("-I")
        .arg(dir.join("include"))
        .arg(&source);
    run(cpp, "iocp.h as C++11", &out_dir.join("cpp.log"));
}
