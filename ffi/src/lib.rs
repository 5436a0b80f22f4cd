#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! One per part of the C API — `port`, `io`, `aio`, `provider`, `event` — beside
//! `CloseHandle` and the handle checks (`handles`), the panic boundary (`boundary`), the C types
//! (`types`) and the C declarations of the engine's structs (`layout`).

mod aio;
mod boundary;
mod event;
/// cbindgen:ignore
#[cfg(feature = "fault-injection")]
mod fault;
mod handles;
mod io;
mod layout;
mod port;
mod provider;
mod types;

pub use aio::{iocp_aio_cancel, iocp_aio_error, iocp_aio_return, iocp_lio_listio};
pub use event::{iocp_event_create, iocp_event_reset, iocp_event_set, iocp_event_wait};
pub use handles::CloseHandle;
pub use io::{CancelIoEx, GetOverlappedResult, ReadFile, WriteFile};
pub use port::{
    iocp_port_create, iocp_post_many, CreateIoCompletionPort, GetMultipleCompletionStatus,
    GetQueuedCompletionStatus, GetQueuedCompletionStatusEx, PostQueuedCompletionStatus,
};
pub use provider::{
    WPUCloseSocketHandle, WPUCompleteOverlappedRequest, WPUCreateSocketHandle,
    WSPGetOverlappedResult,
};
pub use types::*;
