//! The commit log: one frame per tick, appended to segment files and made durable
//! before the tick's transactions are acknowledged.
//!
//! The log knows nothing about tables: a frame carries a tick number, the range of
//! transactions it holds and a payload of bytes that the engine encodes and decodes.
//! [`frame`] is the frame format, [`segments`] the files and reading them back (with
//! torn-tail truncation and corruption detection), [`device`] how bytes reach the disk
//! (io_uring or a `pwrite` fallback), and [`writer`] the thread that batches ticks into
//! writes and publishes the durable tick.

pub mod device;
pub mod frame;
pub mod segments;
pub mod writer;

use std::path::PathBuf;

pub use device::{DeviceKind, FileIo, IoMode, LogDevice, PwriteDevice};
pub use frame::{FrameError, FrameHeader, decode_frame, encode_frame};
pub use segments::{LogEnd, read_log};
pub use writer::{LogConfig, LogWriter};

/// Why the log cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Bytes in the log that are not what was written: never skipped.
    #[error("{} is corrupt at offset {offset}: {why}", path.display())]
    Corrupt { path: PathBuf, offset: u64, why: String },
    /// A write or sync failed; the log takes no more writes.
    #[error("writing {} at offset {offset} failed: {why}; the log takes no more writes", path.display())]
    WriteFailed { path: PathBuf, offset: u64, why: String },
    #[error("the log writer has stopped")]
    Stopped,
}

impl Clone for LogError {
    fn clone(&self) -> Self {
        match self {
            LogError::Io { path, source } => LogError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            LogError::Corrupt { path, offset, why } => {
                LogError::Corrupt { path: path.clone(), offset: *offset, why: why.clone() }
            }
            LogError::WriteFailed { path, offset, why } => {
                LogError::WriteFailed { path: path.clone(), offset: *offset, why: why.clone() }
            }
            LogError::Stopped => LogError::Stopped,
        }
    }
}
