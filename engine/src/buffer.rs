//! The memory a request reads into or writes from.

/// A request's buffer: owned by the engine while the request runs (the Rust API), or
/// caller memory (the C ABI's `ReadFile`/`WriteFile`, an aiocb's `aio_buf`).
pub(crate) enum Buf {
    /// No data (accept, connect, sync).
    None,
    /// Handed in by the caller, handed back with the result.
    Owned(Vec<u8>),
    /// Caller memory that the caller keeps valid until the request completes.
    Raw { ptr: *mut u8, len: usize },
}

/// Longest transfer one request makes: records count bytes in 32 bits, and AIX caps
/// `transfer_count` at 2^31 - 1.
pub const MAX_TRANSFER: usize = i32::MAX as usize;

impl Buf {
    /// The memory to transfer, at most [`MAX_TRANSFER`] bytes.
    pub(crate) fn raw(&mut self) -> (*mut u8, usize) {
        let len = self.transfer_len();
        let ptr = match self {
            Buf::None => std::ptr::null_mut(),
            Buf::Owned(vec) => vec.as_mut_ptr(),
            Buf::Raw { ptr, .. } => *ptr,
        };
        (ptr, len)
    }

    /// How many bytes a transfer through the buffer may move, at most [`MAX_TRANSFER`].
    pub(crate) fn transfer_len(&self) -> usize {
        match self {
            Buf::None => 0,
            Buf::Owned(vec) => vec.len().min(MAX_TRANSFER),
            Buf::Raw { len, .. } => (*len).min(MAX_TRANSFER),
        }
    }

    /// The owned vector, or an empty one.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Buf::Owned(vec) => vec,
            Buf::None | Buf::Raw { .. } => Vec::new(),
        }
    }
}
