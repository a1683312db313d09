//! The commit log: frames, segments, the writer, reading back, torn tails, corruption,
//! and faults injected under the writer (short and torn writes, a full disk, failed
//! syncs, lost unsynced writes).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tickdb_engine::commitlog::device::{DeviceKind, FileIo, IoMode, LogDevice, PwriteDevice, open_device};
use tickdb_engine::commitlog::{
    FrameError, FrameHeader, LogConfig, LogEnd, LogError, LogWriter, decode_frame, encode_frame, read_log,
};

/// A directory of its own for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tickdb-log-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn payload(tick: u64) -> Vec<u8> {
    (0..(tick % 7 + 3) as u8).map(|i| i.wrapping_mul(tick as u8).wrapping_add(1)).collect()
}

/// Frames as read back: (tick, first transaction, transactions, payload).
type Frames = Vec<(u64, u64, u32, Vec<u8>)>;

/// Every frame in the log.
fn frames(dir: &Path) -> Result<(Frames, LogEnd), LogError> {
    let mut out = Vec::new();
    let end = read_log(dir, |h: &FrameHeader, p: &[u8]| {
        out.push((h.tick, h.first_tx, h.tx_count, p.to_vec()));
        Ok::<(), ()>(())
    })?
    .expect("the visitor does not fail");
    Ok((out, end))
}

fn empty_end() -> LogEnd {
    LogEnd { segment: None, last_tick: None, next_tx: 0, truncated: None }
}

/// Writes each tick in a write of its own (waiting for it before the next).
fn write_ticks_one_by_one(dir: &Path, ticks: std::ops::Range<u64>) {
    let (_, end) = frames(dir).unwrap();
    let mut writer = LogWriter::open(dir, &end, LogConfig::default(), Box::new(|_| {})).unwrap();
    for tick in ticks {
        writer.append(tick, 2, payload(tick)).unwrap();
        writer.wait_durable(tick).unwrap();
    }
    writer.close().unwrap();
}

fn write_ticks(dir: &Path, ticks: std::ops::Range<u64>, config: LogConfig) {
    let (_, end) = frames(dir).unwrap();
    let mut writer = LogWriter::open(dir, &end, config, Box::new(|_| {})).unwrap();
    for tick in ticks.clone() {
        writer.append(tick, 2, payload(tick)).unwrap();
    }
    writer.wait_durable(ticks.end - 1).unwrap();
    writer.close().unwrap();
}

#[test]
fn frames_round_trip_and_every_bit_flip_is_caught() {
    let mut bytes = Vec::new();
    encode_frame(42, 1000, 3, 77, b"hello, log", &mut bytes);
    let (header, range) = decode_frame(&bytes).unwrap();
    assert_eq!(
        header,
        FrameHeader { tick: 42, first_tx: 1000, tx_count: 3, payload_len: 10, write_start: 77 }
    );
    assert_eq!(&bytes[range], b"hello, log");
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(decode_frame(&flipped).is_err(), "flip of bit {bit} went unnoticed");
    }
    for cut in 0..bytes.len() {
        assert!(matches!(decode_frame(&bytes[..cut]), Err(FrameError::Truncated { .. })), "cut at {cut}");
    }
}

/// Ticks written by the writer read back in order, across segment rotations and a
/// reopen, with transaction offsets continuing.
#[test]
fn writer_and_reader_round_trip_across_segments() {
    let dir = TempDir::new("round-trip");
    let small = LogConfig { segment_bytes_max: 200, ..LogConfig::default() };
    write_ticks(&dir.0, 1..40, small.clone());
    write_ticks(&dir.0, 40..60, small);
    let (frames, end) = frames(&dir.0).unwrap();
    assert_eq!(frames.len(), 59);
    for (i, (tick, first_tx, count, p)) in frames.iter().enumerate() {
        assert_eq!(*tick, i as u64 + 1);
        assert_eq!(*first_tx, 2 * i as u64);
        assert_eq!(*count, 2);
        assert_eq!(*p, payload(*tick));
    }
    assert_eq!((end.last_tick, end.next_tx, end.truncated), (Some(59), 118, None));
    let segments = std::fs::read_dir(&dir.0).unwrap().count();
    assert!(segments > 5, "small segments rotate: {segments} files");
}

/// A crash that cut the last write short leaves a torn tail: reading truncates it,
/// says where, and keeps every whole frame; the writer goes on after it.
#[test]
fn torn_tail_is_truncated() {
    let dir = TempDir::new("torn");
    write_ticks(&dir.0, 1..6, LogConfig::default());
    let segment = std::fs::read_dir(&dir.0).unwrap().next().unwrap().unwrap().path();
    let whole = std::fs::metadata(&segment).unwrap().len();
    let mut torn = Vec::new();
    encode_frame(6, 10, 2, whole, &payload(6), &mut torn);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    std::fs::write(&segment, &bytes).unwrap();

    let (frames_read, end) = frames(&dir.0).unwrap();
    assert_eq!(frames_read.len(), 5);
    let (path, offset, dropped) = end.truncated.clone().unwrap();
    assert_eq!((path, offset, dropped), (segment.clone(), whole, (torn.len() / 2) as u64));
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), whole, "the file was truncated");
    write_ticks(&dir.0, 6..9, LogConfig::default());
    assert_eq!(frames(&dir.0).unwrap().0.len(), 8);
}

/// Damage in a write followed by a later write is corruption (the damaged write had
/// been synced): reading refuses, naming the file and offset.
#[test]
fn corruption_in_the_middle_is_refused() {
    let dir = TempDir::new("corrupt");
    write_ticks_one_by_one(&dir.0, 1..6);
    let segment = std::fs::read_dir(&dir.0).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[16 + 41] ^= 0x10; // in the first frame's payload
    std::fs::write(&segment, &bytes).unwrap();
    match frames(&dir.0) {
        Err(LogError::Corrupt { path, offset, why }) => {
            assert_eq!((path, offset), (segment.clone(), 16));
            assert!(why.contains("checksum"), "{why}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "a corrupt log is not modified");
}

/// Every single-bit flip anywhere in a small segment is caught: reading either refuses
/// with an error or, for damage in the last write, drops it as a torn tail. No flip
/// ever yields a frame that was not written.
#[test]
fn every_bit_flip_in_a_segment_is_detected() {
    let dir = TempDir::new("flips");
    write_ticks_one_by_one(&dir.0, 1..5);
    let segment = std::fs::read_dir(&dir.0).unwrap().next().unwrap().unwrap().path();
    let original = std::fs::read(&segment).unwrap();
    let (written, _) = frames(&dir.0).unwrap();
    let (mut refused, mut cut) = (0, 0);
    for bit in 0..original.len() * 8 {
        let mut flipped = original.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&segment, &flipped).unwrap();
        match frames(&dir.0) {
            Err(_) => refused += 1,
            Ok((read, end)) => {
                assert!(read.len() < written.len(), "flip of bit {bit} went unnoticed");
                assert_eq!(read[..], written[..read.len()], "flip of bit {bit} changed a frame");
                assert!(end.truncated.is_some());
                cut += 1;
            }
        }
    }
    assert!(refused > 0 && cut > 0, "{refused} refused, {cut} cut");
}

/// What the injected faults do; shared with the test.
#[derive(Debug, Default)]
struct Faults {
    /// Each write takes at most this many bytes (short writes).
    write_max: Option<usize>,
    /// Writes fail with ENOSPC once this many bytes are in the file.
    space: Option<u64>,
    /// The write that crosses this many bytes writes half and then fails (a torn write).
    tear_at: Option<u64>,
    /// The nth sync (from 1) fails with EIO, and the unsynced bytes are lost.
    fail_sync: Option<u32>,
    syncs: u32,
    written: u64,
    synced_len: u64,
}

struct FaultyFile {
    file: File,
    faults: Arc<Mutex<Faults>>,
}

impl FileIo for FaultyFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<usize> {
        let mut f = self.faults.lock().unwrap();
        let mut data = &data[..data.len().min(f.write_max.unwrap_or(usize::MAX))];
        if f.space.is_some_and(|space| offset + data.len() as u64 > space) {
            return Err(io::Error::from_raw_os_error(libc_enospc()));
        }
        let tear = f.tear_at.is_some_and(|at| offset + data.len() as u64 > at);
        if tear {
            data = &data[..data.len() / 2];
        }
        let n = std::os::unix::fs::FileExt::write_at(&self.file, data, offset)?;
        f.written += n as u64;
        if tear {
            return Err(io::Error::other("power lost in the middle of a write"));
        }
        Ok(n)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut f = self.faults.lock().unwrap();
        f.syncs += 1;
        if f.fail_sync == Some(f.syncs) {
            // The kernel dropped the dirty pages: what was not synced is gone.
            self.file.set_len(f.synced_len)?;
            return Err(io::Error::from_raw_os_error(5));
        }
        self.file.sync_data()?;
        f.synced_len = self.file.metadata()?.len();
        Ok(())
    }
}

fn libc_enospc() -> i32 {
    28
}

fn faulty_writer(dir: &Path, faults: &Arc<Mutex<Faults>>) -> LogWriter {
    let faults = Arc::clone(faults);
    let opener =
        Box::new(move |path: &Path, _: IoMode| -> io::Result<(Box<dyn LogDevice>, Option<String>)> {
            let file = OpenOptions::new().create(true).write(true).truncate(false).open(path)?;
            let device = PwriteDevice::new(FaultyFile { file, faults: Arc::clone(&faults) });
            Ok((Box::new(device) as Box<dyn LogDevice>, None))
        });
    LogWriter::open_with(dir, &empty_end(), LogConfig::default(), Box::new(|_| {}), opener).unwrap()
}

/// Appends ticks one by one, waiting for each; returns the ticks acknowledged durable
/// and the first error.
fn append_until_failure(writer: &mut LogWriter, ticks: std::ops::Range<u64>) -> (Vec<u64>, Option<LogError>) {
    let mut acked = Vec::new();
    for tick in ticks {
        if let Err(e) = writer.append(tick, 1, payload(tick)).and_then(|()| writer.wait_durable(tick)) {
            return (acked, Some(e));
        }
        acked.push(tick);
    }
    (acked, None)
}

#[test]
fn short_writes_are_completed() {
    let dir = TempDir::new("short");
    let faults = Arc::new(Mutex::new(Faults { write_max: Some(7), ..Faults::default() }));
    let mut writer = faulty_writer(&dir.0, &faults);
    let (acked, error) = append_until_failure(&mut writer, 1..20);
    assert!(error.is_none());
    writer.close().unwrap();
    assert_eq!(frames(&dir.0).unwrap().0.len(), acked.len());
    assert_eq!(faults.lock().unwrap().syncs, 19, "one sync per write");
}

/// A full disk, a failed sync, a torn write: each stops the writer for good, with the
/// error; every tick acknowledged before is read back, nothing after it is.
#[test]
fn write_faults_stop_the_log_and_lose_no_acknowledged_tick() {
    let cases: [(&str, Faults, &str); 3] = [
        ("enospc", Faults { space: Some(400), ..Faults::default() }, "No space"),
        ("fsync", Faults { fail_sync: Some(4), ..Faults::default() }, "Input/output error"),
        ("torn", Faults { tear_at: Some(300), ..Faults::default() }, "power lost"),
    ];
    for (name, faults, message) in cases {
        let dir = TempDir::new(name);
        let faults = Arc::new(Mutex::new(faults));
        let mut writer = faulty_writer(&dir.0, &faults);
        let (acked, error) = append_until_failure(&mut writer, 1..100);
        let error = error.unwrap_or_else(|| panic!("{name}: no fault hit"));
        assert!(matches!(error, LogError::WriteFailed { .. }), "{name}: {error}");
        assert!(error.to_string().contains(message), "{name}: {error}");
        assert!(!acked.is_empty(), "{name}: some ticks made it first");
        // Never retried: later appends fail at once, and no more syncs are tried.
        let syncs = faults.lock().unwrap().syncs;
        assert!(writer.append(500, 1, payload(500)).is_err(), "{name}");
        assert!(writer.close().is_err());
        assert_eq!(faults.lock().unwrap().syncs, syncs, "{name}: retried");

        let (read, _) = frames(&dir.0).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ticks: Vec<u64> = read.iter().map(|f| f.0).collect();
        assert_eq!(ticks, acked, "{name}: exactly the acknowledged ticks");
    }
}

/// The writer picks io_uring where the kernel allows it, and says why not otherwise;
/// either device writes what reads back.
#[test]
fn the_device_is_chosen_at_start() {
    let dir = TempDir::new("device");
    let file = File::create(dir.0.join("probe")).unwrap();
    let (mut device, why_not) = open_device(file, IoMode::Auto);
    match device.kind() {
        DeviceKind::IoUring => assert!(why_not.is_none()),
        DeviceKind::Pwrite => assert!(why_not.unwrap().contains("io_uring")),
    }
    device.write_durable(0, b"0123456789").unwrap();
    device.write_durable(5, b"abc").unwrap();
    assert_eq!(std::fs::read(dir.0.join("probe")).unwrap(), b"01234abc89");

    let (fallback, why) = open_device(File::create(dir.0.join("other")).unwrap(), IoMode::Pwrite);
    assert_eq!((fallback.kind(), why), (DeviceKind::Pwrite, None));
}
