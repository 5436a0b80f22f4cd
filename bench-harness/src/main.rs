//! The iocp-rs load generator: scenarios against their peers (built out with the harness
//! work; this placeholder binary only reports that).

fn main() {
    eprintln!("iocp-bench: scenarios are not implemented yet");
    std::process::exit(2);
}
