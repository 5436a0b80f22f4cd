//! Building what the harness runs but does not link: `libiocp.so` for the C ABI rows,
//! the `resp_server` example for the `resp` scenario.
//!
//! Cargo builds them from this checkout, in the harness's own profile and target directory
//! (a no-op when they are up to date): `$CARGO` (which `cargo run` and `cargo test` set),
//! else `cargo` on the `PATH`.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// `cargo build <args>` of this workspace, in the harness's profile; the paths cargo
/// reports for the artifacts `pick` chooses from its JSON messages. `what` names the build
/// in errors.
pub fn build(
    what: &str,
    args: &[&str],
    pick: impl Fn(&Value) -> Vec<PathBuf>,
) -> Result<Vec<PathBuf>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .args(args)
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let output = command
        .output()
        .map_err(|e| format!("building {what}: cannot run {cargo:?}: {e}"))?;
    if !output.status.success() {
        let errors = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = errors.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "building {what} failed ({}): {}",
            output.status,
            tail.join(" / ")
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .flat_map(|message| pick(&message))
        .collect())
}
