//! The checked-in files that describe the library agree with it: `include/iocp.h` is
//! exactly what the pinned cbindgen makes of the source, and `iocp.pc` has the version.
//!
//! `IOCP_BLESS=1 cargo test -p iocp-ffi --test header` rewrites the header.

use std::path::Path;

#[test]
fn the_checked_in_header_matches_the_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_crate(dir)
        .generate()
        .expect("cbindgen parses ffi/src")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8");
    let path = dir.join("include/iocp.h");
    if std::env::var_os("IOCP_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/iocp.h");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        let line = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()));
        panic!(
            "ffi/include/iocp.h is stale (first difference at line {}): run \
             `IOCP_BLESS=1 cargo test -p iocp-ffi --test header` and commit the result",
            line + 1
        );
    }
}

/// `iocp.pc` announces the crate's version.
#[test]
fn the_pkg_config_file_has_the_crate_version() {
    let pc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("iocp.pc"))
        .expect("ffi/iocp.pc");
    let version = format!("Version: {}", env!("CARGO_PKG_VERSION"));
    assert!(
        pc.lines().any(|line| line == version),
        "ffi/iocp.pc should say `{version}`"
    );
}
