//! The frame format: one frame per tick.
//!
//! ```text
//! offset  size  field
//!      0     4  magic, "TDBF"
//!      4     2  format version (1)
//!      6     2  flags (0; reserved)
//!      8     8  tick number
//!     16     8  first transaction offset: the log-wide number of the frame's first transaction
//!     24     4  transaction count
//!     28     4  payload length, in bytes
//!     32     8  write start: the segment offset at which the write holding this frame began
//!     40     n  payload (the engine's encoding; the log does not read it)
//!   40+n     4  CRC32C of the 40 header bytes and the payload
//! ```
//!
//! Integers are little-endian. The write start tells recovery which frames were written
//! together: a crash can leave any part of its last, unsynced write on disk, while an
//! earlier write was synced before the next one began.
//! A frame is valid only if its magic, version and length
//! are sane, the whole frame is present, and its checksum holds: a torn or flipped
//! frame is never mistaken for a good one.

use std::ops::Range;

pub const FRAME_MAGIC: [u8; 4] = *b"TDBF";
pub const FRAME_VERSION: u16 = 1;
pub const FRAME_HEADER_BYTES: usize = 40;
pub const FRAME_TRAILER_BYTES: usize = 4;
/// The largest payload a frame may carry: far above any tick, small enough that a
/// flipped length field cannot make a reader allocate without bound.
pub const FRAME_PAYLOAD_MAX: usize = 1 << 30;

/// What a frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub tick: u64,
    pub first_tx: u64,
    pub tx_count: u32,
    pub payload_len: u32,
    /// Where the write that carried this frame began, in its segment.
    pub write_start: u64,
}

impl FrameHeader {
    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload_len as usize + FRAME_TRAILER_BYTES
    }

    /// The transaction offset after this frame's transactions.
    pub fn next_tx(&self) -> u64 {
        self.first_tx + u64::from(self.tx_count)
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the frame needs: the end of the log, or a torn write.
    #[error("the frame is cut short: it needs {needed} bytes, {available} remain")]
    Truncated { needed: usize, available: usize },
    #[error("no frame starts here (bad magic)")]
    BadMagic,
    #[error("frame format version {0} is not one this build reads")]
    BadVersion(u16),
    #[error("the frame claims a payload of {0} bytes, more than any frame holds")]
    TooLarge(u64),
    #[error("the frame's checksum does not match its contents")]
    BadChecksum,
}

/// Appends one frame to `out`.
pub fn encode_frame(
    tick: u64,
    first_tx: u64,
    tx_count: u32,
    write_start: u64,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    assert!(payload.len() <= FRAME_PAYLOAD_MAX, "a tick's payload is far below 1 GiB");
    let start = out.len();
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&FRAME_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&tick.to_le_bytes());
    out.extend_from_slice(&first_tx.to_le_bytes());
    out.extend_from_slice(&tx_count.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&write_start.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the frame at the start of `bytes`: its header and where its payload lies in
/// `bytes`. Checks everything, checksum included.
pub fn decode_frame(bytes: &[u8]) -> Result<(FrameHeader, Range<usize>), FrameError> {
    let available = bytes.len();
    if available < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated { needed: FRAME_HEADER_BYTES, available });
    }
    if bytes[..4] != FRAME_MAGIC {
        return Err(FrameError::BadMagic);
    }
    let version = u16_at(bytes, 4);
    if version != FRAME_VERSION {
        return Err(FrameError::BadVersion(version));
    }
    let header = FrameHeader {
        tick: u64_at(bytes, 8),
        first_tx: u64_at(bytes, 16),
        tx_count: u32_at(bytes, 24),
        payload_len: u32_at(bytes, 28),
        write_start: u64_at(bytes, 32),
    };
    if header.payload_len as usize > FRAME_PAYLOAD_MAX {
        return Err(FrameError::TooLarge(u64::from(header.payload_len)));
    }
    let needed = header.frame_len();
    if available < needed {
        return Err(FrameError::Truncated { needed, available });
    }
    let body = needed - FRAME_TRAILER_BYTES;
    if crc32c::crc32c(&bytes[..body]) != u32_at(bytes, body) {
        return Err(FrameError::BadChecksum);
    }
    Ok((header, FRAME_HEADER_BYTES..body))
}
