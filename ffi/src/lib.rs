//! The C ABI of iocp-rs (`libiocp`). The exported functions arrive with the C ABI work;
//! for now the crate builds the libraries over the engine.

pub use iocp::GMCS_NMAX;
