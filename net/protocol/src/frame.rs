//! The byte in front of every message: how the rest is compressed.
//!
//! LZ4 was chosen over no compression and zstd by measuring real tick updates (see
//! BENCHMARKS.md): rows of game state compress well, and LZ4 costs the server little
//! CPU per message, which matters when thousands of clients each get one per tick.
//! Messages under [`COMPRESS_BYTES_MIN`] go uncompressed even when a client asked for
//! compression: small messages gain little and cost a call each way.

use std::borrow::Cow;

use crate::ProtocolError;

/// Messages shorter than this are sent uncompressed.
pub const COMPRESS_BYTES_MIN: usize = 512;

/// What a client asked for when it connected (`?compression=lz4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Compression {
    #[default]
    None,
    Lz4,
}

impl Compression {
    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "none" => Some(Compression::None),
            "lz4" => Some(Compression::Lz4),
            _ => None,
        }
    }
}

const TAG_NONE: u8 = 0;
const TAG_LZ4: u8 = 1;

/// A message ready to send: its tag, then the FlatBuffer, compressed if asked for and
/// worth it.
pub fn frame(compression: Compression, message: &[u8]) -> Vec<u8> {
    match compression {
        Compression::Lz4 if message.len() >= COMPRESS_BYTES_MIN => {
            let mut out = Vec::with_capacity(1 + 4 + lz4_flex::block::get_maximum_output_size(message.len()));
            out.push(TAG_LZ4);
            out.extend_from_slice(&(message.len() as u32).to_le_bytes());
            let start = out.len();
            out.resize(start + lz4_flex::block::get_maximum_output_size(message.len()), 0);
            let written = lz4_flex::block::compress_into(message, &mut out[start..])
                .expect("the output has room for the worst case");
            out.truncate(start + written);
            out
        }
        _ => {
            let mut out = Vec::with_capacity(1 + message.len());
            out.push(TAG_NONE);
            out.extend_from_slice(message);
            out
        }
    }
}

/// The FlatBuffer inside a received message, decompressed to at most `len_max` bytes.
pub fn unframe(message: &[u8], len_max: usize) -> Result<Cow<'_, [u8]>, ProtocolError> {
    let (&tag, rest) = message.split_first().ok_or(ProtocolError::Empty)?;
    match tag {
        TAG_NONE => Ok(Cow::Borrowed(rest)),
        TAG_LZ4 => {
            let len: [u8; 4] = rest.get(..4).and_then(|l| l.try_into().ok()).ok_or(ProtocolError::Empty)?;
            let len = u32::from_le_bytes(len) as usize;
            if len > len_max {
                return Err(ProtocolError::TooLarge { len, max: len_max });
            }
            let mut out = vec![0; len];
            let written = lz4_flex::block::decompress_into(&rest[4..], &mut out)
                .map_err(|e| ProtocolError::Corrupt(e.to_string()))?;
            if written != len {
                return Err(ProtocolError::Corrupt(format!("{written} bytes instead of {len}")));
            }
            Ok(Cow::Owned(out))
        }
        other => Err(ProtocolError::UnknownCompression(other)),
    }
}
