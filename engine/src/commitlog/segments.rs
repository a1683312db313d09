//! Segment files, and reading the log back.
//!
//! A log is a directory of segment files, each named by the first tick it holds
//! (`00000000000000000042.tdblog`) and starting with a 16-byte header (`TDBSEGv1`, then
//! that tick). Frames follow back to back.
//!
//! Reading checks every frame and the order of ticks and transaction offsets. A frame
//! that fails at the end of the last segment, with no valid frame after it, is a write
//! the crash cut short: the file is truncated there and the caller is told where. A
//! frame that fails anywhere else is corruption, which is never skipped: reading stops
//! with an error naming the file and offset.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::LogError;
use super::frame::{FRAME_MAGIC, FrameError, FrameHeader, decode_frame};

pub const SEGMENT_MAGIC: [u8; 8] = *b"TDBSEGv1";
pub const SEGMENT_HEADER_BYTES: usize = 16;
const SEGMENT_SUFFIX: &str = "tdblog";

/// A segment file's name for its first tick.
pub fn segment_name(first_tick: u64) -> String {
    format!("{first_tick:020}.{SEGMENT_SUFFIX}")
}

/// A new segment's header.
pub fn segment_header(first_tick: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..].copy_from_slice(&first_tick.to_le_bytes());
    header
}

/// The segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let io_error = |source| LogError::Io { path: dir.to_path_buf(), source };
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        let tick = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(&format!(".{SEGMENT_SUFFIX}")))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(tick) = tick {
            segments.push((tick, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Where a log ends after reading it: where the writer goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEnd {
    /// The last segment and its length, if there is one.
    pub segment: Option<(PathBuf, u64)>,
    /// The last tick in the log.
    pub last_tick: Option<u64>,
    /// The transaction offset the next frame starts at.
    pub next_tx: u64,
    /// A torn tail that reading cut off: the file, the offset and the bytes dropped.
    pub truncated: Option<(PathBuf, u64, u64)>,
}

/// Reads every frame in `dir`, in order, handing each to `visit`; truncates a torn
/// tail; returns where the log ends. See the module docs.
pub fn read_log<E>(
    dir: &Path,
    visit: impl FnMut(&FrameHeader, &[u8]) -> Result<(), E>,
) -> Result<Result<LogEnd, E>, LogError> {
    read_log_from(dir, None, visit)
}

/// As [`read_log`], skipping the segments whose every tick is at or before `after`
/// (a snapshot's tick): they are not needed, and not read.
pub fn read_log_from<E>(
    dir: &Path,
    after: Option<u64>,
    mut visit: impl FnMut(&FrameHeader, &[u8]) -> Result<(), E>,
) -> Result<Result<LogEnd, E>, LogError> {
    let segments = list_segments(dir)?;
    let mut end = LogEnd { segment: None, last_tick: None, next_tx: 0, truncated: None };
    for (i, (name_tick, path)) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let covered =
            segments.get(i + 1).is_some_and(|(next, _)| after.is_some_and(|a| *next <= a.saturating_add(1)));
        if covered {
            continue;
        }
        let io_error = |source| LogError::Io { path: path.clone(), source };
        let bytes = std::fs::read(path).map_err(io_error)?;
        let corrupt =
            |offset: usize, why: String| LogError::Corrupt { path: path.clone(), offset: offset as u64, why };
        if bytes.len() < SEGMENT_HEADER_BYTES {
            if last {
                // Created, but the crash came before its header was durable.
                truncate(path, 0)?;
                end.truncated = Some((path.clone(), 0, bytes.len() as u64));
                end.segment = Some((path.clone(), 0));
                break;
            }
            return Err(corrupt(0, "the segment header is missing".into()));
        }
        if bytes[..8] != SEGMENT_MAGIC {
            if last && !later_write_after(&bytes, 0) {
                // The crash came while the segment's first write was in flight.
                truncate(path, 0)?;
                end.truncated = Some((path.clone(), 0, bytes.len() as u64));
                end.segment = Some((path.clone(), 0));
                break;
            }
            return Err(corrupt(0, "not a tickdb log segment (bad magic)".into()));
        }
        let header_tick = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        if header_tick != *name_tick {
            return Err(corrupt(8, format!("the header says tick {header_tick}, the name {name_tick}")));
        }
        let mut offset = SEGMENT_HEADER_BYTES;
        while offset < bytes.len() {
            let (header, payload) = match decode_frame(&bytes[offset..]) {
                Ok(frame) => frame,
                Err(e) => {
                    if last && !later_write_after(&bytes, offset) {
                        let dropped = (bytes.len() - offset) as u64;
                        truncate(path, offset as u64)?;
                        end.truncated = Some((path.clone(), offset as u64, dropped));
                        break;
                    }
                    return Err(corrupt(offset, describe(e)));
                }
            };
            if end.last_tick.is_some_and(|t| header.tick <= t) {
                return Err(corrupt(
                    offset,
                    format!("tick {} follows tick {}", header.tick, end.last_tick.unwrap_or(0)),
                ));
            }
            if end.last_tick.is_some() && header.first_tx != end.next_tx {
                let why = format!("transactions jump from {} to {}", end.next_tx, header.first_tx);
                return Err(corrupt(offset, why));
            }
            let next_tx = header.first_tx.checked_add(u64::from(header.tx_count));
            let next_tx = next_tx.ok_or_else(|| corrupt(offset, "the transaction count overflows".into()))?;
            if let Err(e) = visit(&header, &bytes[offset + payload.start..offset + payload.end]) {
                return Ok(Err(e));
            }
            end.last_tick = Some(header.tick);
            end.next_tx = next_tx;
            offset += header.frame_len();
        }
        end.segment = Some((path.clone(), offset.min(bytes.len()) as u64));
    }
    Ok(Ok(end))
}

fn describe(e: FrameError) -> String {
    format!("invalid frame: {e}")
}

/// Whether a valid frame after `damaged` came from a later write than the damaged
/// bytes. Writes happen one at a time, each synced before the next begins: if a later
/// write reached the disk, the damaged one had been synced, so the damage is not a
/// crash's doing. Frames of the damaged bytes' own write may persist in any order.
fn later_write_after(bytes: &[u8], damaged: usize) -> bool {
    (damaged + 1..bytes.len().saturating_sub(3))
        .filter(|&at| bytes[at..at + 4] == FRAME_MAGIC)
        .filter_map(|at| decode_frame(&bytes[at..]).ok())
        .any(|(header, _)| header.write_start > damaged as u64)
}

fn truncate(path: &Path, len: u64) -> Result<(), LogError> {
    let io_error = |source| LogError::Io { path: path.to_path_buf(), source };
    let file = OpenOptions::new().write(true).open(path).map_err(io_error)?;
    file.set_len(len).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// Makes a directory's entries durable (after creating or renaming a file in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
