//! The log writer: a thread that makes frames durable, several ticks per write when
//! the disk lags, and says which tick is durable.
//!
//! The tick thread hands over a tick's payload and goes on with the next tick; the
//! writer encodes the frame (checksum included), appends whatever has queued up since
//! its last write as one write linked to one fdatasync, and then publishes the last
//! tick of that write as durable. A failed write or sync is final: the writer records
//! the error, stops, and every later append fails with it. Nothing is retried, since
//! after a failed fsync the kernel may have dropped the dirty pages.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::LogError;
use super::device::{DeviceKind, IoMode, LogDevice, open_device};
use super::frame::{FRAME_HEADER_BYTES, FRAME_TRAILER_BYTES, encode_frame};
use super::segments::{LogEnd, SEGMENT_HEADER_BYTES, segment_header, segment_name, sync_dir};

/// The writer's settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment is closed and a new one started once it would grow past this.
    pub segment_bytes_max: u64,
    /// The most bytes one write carries (when the disk lags, ticks pile up).
    pub batch_bytes_max: usize,
    /// Ticks that may wait for the writer; past it, appending waits (backpressure).
    pub queue_ticks: usize,
    pub io: IoMode,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 64 << 20,
            batch_bytes_max: 16 << 20,
            queue_ticks: 4096,
            io: IoMode::Auto,
        }
    }
}

/// One tick waiting to be written.
#[derive(Debug)]
struct Pending {
    tick: u64,
    first_tx: u64,
    tx_count: u32,
    payload: Vec<u8>,
}

/// Opens segment files; tests swap in devices that inject faults.
pub type DeviceOpener =
    Box<dyn FnMut(&Path, IoMode) -> std::io::Result<(Box<dyn LogDevice>, Option<String>)> + Send>;

/// Opens the real file, for append, with the device `mode` asks for.
pub fn open_file_device(path: &Path, mode: IoMode) -> std::io::Result<(Box<dyn LogDevice>, Option<String>)> {
    let file: File = OpenOptions::new().create(true).write(true).truncate(false).open(path)?;
    Ok(open_device(file, mode))
}

#[derive(Debug, Default)]
struct State {
    durable: Option<u64>,
    /// The last tick handed to the writer: ticks after it have no frame (nothing was
    /// logged), so they are durable once it is.
    appended: Option<u64>,
    failed: Option<LogError>,
    stopped: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    /// Waits until every frame of a tick up to `tick` is durable. A tick without a
    /// frame is durable once the frames before it are.
    fn wait_durable(&self, tick: u64) -> Result<(), LogError> {
        let mut state = self.state.lock().expect("log state");
        loop {
            let Some(appended) = state.appended else {
                return Ok(()); // Nothing written by this writer: what is on disk is durable.
            };
            if state.durable.is_some_and(|d| d >= tick.min(appended)) {
                return Ok(());
            }
            if let Some(e) = &state.failed {
                return Err(e.clone());
            }
            if state.stopped {
                return Err(LogError::Stopped);
            }
            state = self.changed.wait(state).expect("log state");
        }
    }
}

/// Told each time a write made ticks durable (the last of them), or once that the
/// writer failed.
pub type OnDurable = Box<dyn FnMut(Result<u64, &LogError>) + Send>;

/// The handle of a running log writer; see the module docs.
pub struct LogWriter {
    queue: Option<SyncSender<Pending>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    kind: DeviceKind,
    fallback_reason: Option<String>,
    next_tx: u64,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("kind", &self.kind)
            .field("next_tx", &self.next_tx)
            .finish_non_exhaustive()
    }
}

struct Segment {
    path: PathBuf,
    device: Box<dyn LogDevice>,
    len: u64,
}

impl LogWriter {
    /// Starts writing after `end` (what reading the log returned) in `dir`, with real files.
    pub fn open(
        dir: &Path,
        end: &LogEnd,
        config: LogConfig,
        on_durable: OnDurable,
    ) -> Result<LogWriter, LogError> {
        LogWriter::open_with(dir, end, config, on_durable, Box::new(open_file_device))
    }

    /// As [`LogWriter::open`], with segment files opened by `opener`.
    pub fn open_with(
        dir: &Path,
        end: &LogEnd,
        config: LogConfig,
        on_durable: OnDurable,
        mut opener: DeviceOpener,
    ) -> Result<LogWriter, LogError> {
        std::fs::create_dir_all(dir).map_err(|source| LogError::Io { path: dir.into(), source })?;
        let segment = match &end.segment {
            Some((path, len)) if *len < SEGMENT_HEADER_BYTES as u64 => {
                // A segment whose header never became durable: start it again.
                std::fs::remove_file(path).map_err(|source| LogError::Io { path: path.clone(), source })?;
                None
            }
            Some((path, len)) => {
                let (device, note) =
                    opener(path, config.io).map_err(|source| LogError::Io { path: path.clone(), source })?;
                Some((Segment { path: path.clone(), device, len: *len }, note))
            }
            None => None,
        };
        // Which device this machine gives: probe with the first segment's open if there
        // is none yet, so the choice is known (and logged) at start.
        let (kind, fallback_reason) = match &segment {
            Some((s, note)) => (s.device.kind(), note.clone()),
            None => {
                let probe = dir.join(".probe");
                let (device, note) = opener(&probe, config.io)
                    .map_err(|source| LogError::Io { path: probe.clone(), source })?;
                let kind = device.kind();
                drop(device);
                let _ = std::fs::remove_file(&probe);
                (kind, note)
            }
        };
        match &fallback_reason {
            None => eprintln!("tickdb: commit log in {}: writing with {kind}", dir.display()),
            Some(why) => eprintln!("tickdb: commit log in {}: writing with {kind}; {why}", dir.display()),
        }
        let (queue, rx) = mpsc::sync_channel(config.queue_ticks);
        let shared = Arc::new(Shared::default());
        shared.state.lock().expect("log state").durable = end.last_tick;
        let thread_shared = Arc::clone(&shared);
        let dir = dir.to_path_buf();
        let segment = segment.map(|(s, _)| s);
        let thread = std::thread::Builder::new()
            .name("tickdb-log".into())
            .spawn(move || {
                let shared = Arc::clone(&thread_shared);
                let mut writer = Writer {
                    dir,
                    config,
                    opener,
                    segment,
                    shared: thread_shared,
                    on_durable,
                    buf: Vec::new(),
                };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run(rx)));
                if outcome.is_err() {
                    // A bug in the writer: whoever waits on it must hear so, not hang.
                    let why = "the log writer panicked".to_string();
                    let e = LogError::WriteFailed { path: writer.dir.clone(), offset: 0, why };
                    (writer.on_durable)(Err(&e));
                    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                    state.failed = Some(e);
                    state.stopped = true;
                    shared.changed.notify_all();
                }
            })
            .map_err(|source| LogError::Io { path: PathBuf::from("tickdb-log thread"), source })?;
        Ok(LogWriter {
            queue: Some(queue),
            shared,
            thread: Some(thread),
            kind,
            fallback_reason,
            next_tx: end.next_tx,
        })
    }

    /// The device in use, and, if io_uring was wanted but is not available, why.
    pub fn device(&self) -> (DeviceKind, Option<&str>) {
        (self.kind, self.fallback_reason.as_deref())
    }

    /// Hands a tick's payload to the writer and returns at once (unless the writer is
    /// `queue_ticks` behind). `tx_count` transactions follow the previous tick's.
    pub fn append(&mut self, tick: u64, tx_count: u32, payload: Vec<u8>) -> Result<(), LogError> {
        {
            let mut state = self.shared.state.lock().expect("log state");
            if let Some(e) = &state.failed {
                return Err(e.clone());
            }
            state.appended = Some(tick);
        }
        let first_tx = self.next_tx;
        let queue = self.queue.as_ref().expect("open until dropped");
        queue.send(Pending { tick, first_tx, tx_count, payload }).map_err(|_| self.failure())?;
        self.next_tx += u64::from(tx_count);
        Ok(())
    }

    fn failure(&self) -> LogError {
        let state = self.shared.state.lock().expect("log state");
        state.failed.clone().unwrap_or(LogError::Stopped)
    }

    /// A handle that reads the durable tick from elsewhere.
    pub fn watch(&self) -> LogWatch {
        LogWatch(Arc::clone(&self.shared))
    }

    /// Waits until `tick` is durable; fails if the writer failed first.
    pub fn wait_durable(&self, tick: u64) -> Result<(), LogError> {
        self.shared.wait_durable(tick)
    }

    /// The writer's error, if it failed.
    pub fn failed(&self) -> Option<LogError> {
        self.shared.state.lock().expect("log state").failed.clone()
    }

    /// Writes everything queued, then stops the thread.
    pub fn close(mut self) -> Result<(), LogError> {
        self.stop();
        match self.failed() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn stop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn frame_bytes(p: &Pending) -> u64 {
    (FRAME_HEADER_BYTES + p.payload.len() + FRAME_TRAILER_BYTES) as u64
}

/// Reads a writer's durable tick and failure from another thread.
#[derive(Debug, Clone)]
pub struct LogWatch(Arc<Shared>);

impl LogWatch {
    pub fn durable_tick(&self) -> Option<u64> {
        self.0.state.lock().expect("log state").durable
    }

    /// Waits until `tick` is durable; fails if the writer failed or stopped first.
    pub fn wait_durable(&self, tick: u64) -> Result<(), LogError> {
        self.0.wait_durable(tick)
    }
}

/// The writer thread's side.
struct Writer {
    dir: PathBuf,
    config: LogConfig,
    opener: DeviceOpener,
    segment: Option<Segment>,
    shared: Arc<Shared>,
    on_durable: OnDurable,
    buf: Vec<u8>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Pending>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let mut bytes = batch[0].payload.len();
            while bytes < self.config.batch_bytes_max {
                match rx.try_recv() {
                    Ok(next) => {
                        bytes += next.payload.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            let last = batch.last().expect("one at least").tick;
            match self.write(&batch) {
                Ok(()) => {
                    self.shared.state.lock().expect("log state").durable = Some(last);
                    self.shared.changed.notify_all();
                    (self.on_durable)(Ok(last));
                }
                Err(e) => {
                    (self.on_durable)(Err(&e));
                    self.shared.state.lock().expect("log state").failed = Some(e);
                    self.shared.changed.notify_all();
                    break;
                }
            }
        }
        self.shared.state.lock().expect("log state").stopped = true;
        self.shared.changed.notify_all();
    }

    /// Writes a batch of ticks durably: as many as fit into the current segment in one
    /// write, then a new segment for the rest.
    fn write(&mut self, batch: &[Pending]) -> Result<(), LogError> {
        let mut next = 0;
        while next < batch.len() {
            self.buf.clear();
            if self.segment.is_none() {
                let first_tick = batch[next].tick;
                let path = self.dir.join(segment_name(first_tick));
                let io_error = |source| LogError::Io { path: path.clone(), source };
                let (device, _) = (self.opener)(&path, self.config.io).map_err(io_error)?;
                sync_dir(&self.dir).map_err(|source| LogError::Io { path: self.dir.clone(), source })?;
                self.segment = Some(Segment { path, device, len: 0 });
                self.buf.extend_from_slice(&segment_header(first_tick));
            }
            let segment = self.segment.as_mut().expect("opened above");
            while let Some(p) = batch.get(next) {
                let len = segment.len + self.buf.len() as u64;
                let has_frames = len > SEGMENT_HEADER_BYTES as u64;
                if has_frames && len + frame_bytes(p) > self.config.segment_bytes_max {
                    break;
                }
                encode_frame(p.tick, p.first_tx, p.tx_count, segment.len, &p.payload, &mut self.buf);
                next += 1;
            }
            let written = self.buf.len() as u64;
            segment.device.write_durable_owned(segment.len, &mut self.buf).map_err(|source| {
                LogError::WriteFailed {
                    path: segment.path.clone(),
                    offset: segment.len,
                    why: source.to_string(),
                }
            })?;
            segment.len += written;
            if next < batch.len() {
                // The segment is full: the rest goes into a new one.
                self.segment = None;
            }
        }
        Ok(())
    }
}
