//! Durability: the tick loop's sink that writes each tick to the commit log, holding
//! its replies until the tick is durable ([`Durability::Confirmed`]) or not
//! ([`Durability::Relaxed`]); and replaying a log into a database on start.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::commitlog::segments::list_segments;
use crate::commitlog::segments::read_log_from;
use crate::commitlog::writer::{DeviceOpener, LogWatch, open_file_device};
use crate::commitlog::{LogConfig, LogEnd, LogError, LogWriter};
use crate::db::Database;
use crate::error::Error;
use crate::ids::TableId;
use crate::snapshot::{Loaded, SnapshotError, list_snapshots, load};
use crate::tick::{Releases, TickOutput, TickSink};

/// When a transaction is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After its tick is durable on disk: an acknowledged transaction survives any crash.
    #[default]
    Confirmed,
    /// After its tick commits in memory: faster, but a crash loses the ticks not yet
    /// written.
    Relaxed,
}

/// Releases waiting for their tick to be durable, oldest first; and, once the writer
/// failed, why. Both under one lock, so that no release can be queued after the queue
/// was emptied for a failure.
#[derive(Debug, Default)]
struct WaitQueue {
    entries: VecDeque<(u64, Releases)>,
    failed: Option<String>,
}

type Waiting = Arc<Mutex<WaitQueue>>;

/// The sink that logs every tick; see the module docs.
#[derive(Debug)]
pub struct DurableSink {
    writer: LogWriter,
    mode: Durability,
    waiting: Waiting,
    snapshots: Option<Snapshots>,
}

/// When a database snapshots itself and what it keeps.
#[derive(Debug, Clone)]
pub struct SnapshotPolicy {
    /// A snapshot is taken once the log has grown by this much since the last one.
    pub every_log_bytes: u64,
    /// Snapshots kept; older ones, and the log segments they cover, are deleted.
    pub keep: usize,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy { every_log_bytes: 64 << 20, keep: 2 }
    }
}

/// The sink's side of automatic snapshots: captures go to a thread that writes them
/// once their tick is durable, then prunes.
#[derive(Debug)]
struct Snapshots {
    policy: SnapshotPolicy,
    since_last: u64,
    /// Set while a snapshot is being written.
    busy: Arc<std::sync::atomic::AtomicBool>,
    queue: Option<std::sync::mpsc::SyncSender<(u64, Vec<u8>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Clears the busy flag when a snapshot is done with, however it ends.
struct Idle<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl DurableSink {
    /// Opens the log in `dir` for writing after `end` (what [`replay`] returned).
    pub fn open(
        dir: &Path,
        end: &LogEnd,
        config: LogConfig,
        mode: Durability,
    ) -> Result<DurableSink, LogError> {
        DurableSink::open_with(dir, end, config, mode, Box::new(open_file_device))
    }

    /// As [`DurableSink::open`], with segment files opened by `opener` (tests inject faults).
    pub fn open_with(
        dir: &Path,
        end: &LogEnd,
        config: LogConfig,
        mode: Durability,
        opener: DeviceOpener,
    ) -> Result<DurableSink, LogError> {
        let waiting: Waiting = Arc::default();
        let released = Arc::clone(&waiting);
        let on_durable = Box::new(move |durable: Result<u64, &LogError>| {
            let mut waiting = released.lock().expect("waiting lock");
            match durable {
                Ok(tick) => {
                    while waiting.entries.front().is_some_and(|(t, _)| *t <= tick) {
                        let (_, releases) = waiting.entries.pop_front().expect("checked");
                        releases.release(Ok(()));
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    waiting.entries.drain(..).for_each(|(_, releases)| releases.release(Err(&why)));
                    waiting.failed = Some(why);
                }
            }
        });
        let writer = LogWriter::open_with(dir, end, config, on_durable, opener)?;
        Ok(DurableSink { writer, mode, waiting, snapshots: None })
    }

    /// Snapshots the database into `dir` by `policy`: captured between ticks on the
    /// tick thread, written by a thread of their own once the log holds their tick,
    /// then old snapshots and the log segments they cover are pruned. A snapshot that
    /// fails to write is reported and skipped; the log still holds everything.
    pub fn with_snapshots(
        mut self,
        dir: &Path,
        log: &Path,
        policy: SnapshotPolicy,
    ) -> std::io::Result<DurableSink> {
        let (queue, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(1);
        let (dir, log, watch, keep) =
            (dir.to_path_buf(), log.to_path_buf(), self.writer.watch(), policy.keep);
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::clone(&busy);
        let thread = std::thread::Builder::new().name("tickdb-snapshot".into()).spawn(move || {
            for (tick, bytes) in rx {
                let _idle = Idle(&done);
                if watch.wait_durable(tick).is_err() {
                    return; // The log failed: a snapshot past it could not be recovered to.
                }
                match crate::snapshot::install(&dir, tick, &bytes) {
                    Ok(_) => {
                        if let Err(e) = prune(&dir, &log, keep) {
                            eprintln!("tickdb: pruning after the snapshot of tick {tick}: {e}");
                        }
                    }
                    Err(e) => eprintln!("tickdb: the snapshot of tick {tick} was not written: {e}"),
                }
            }
        })?;
        self.snapshots =
            Some(Snapshots { policy, since_last: 0, busy, queue: Some(queue), thread: Some(thread) });
        Ok(self)
    }

    /// Reads the durable tick from another thread, once the sink is in the tick loop.
    pub fn watch(&self) -> LogWatch {
        self.writer.watch()
    }
}

impl TickSink for DurableSink {
    fn tick_committed(
        &mut self,
        db: &Database,
        output: TickOutput,
        releases: Releases,
    ) -> Result<(), String> {
        let logged = output.log.as_ref().map_or(0, |log| log.payload.len() as u64);
        self.tick_logged(output, releases)?;
        if let Some(snapshots) = &mut self.snapshots {
            snapshots.since_last += logged;
            let idle = !snapshots.busy.load(std::sync::atomic::Ordering::Acquire);
            if snapshots.since_last >= snapshots.policy.every_log_bytes
                && idle
                && let Some(queue) = &snapshots.queue
            {
                // Between ticks, so the copy is consistent. Only when the last one is
                // written: a busy writer skips turns rather than copying for nothing.
                snapshots.busy.store(true, std::sync::atomic::Ordering::Release);
                if queue.try_send(crate::snapshot::capture(db)).is_ok() {
                    snapshots.since_last = 0;
                }
            }
        }
        Ok(())
    }
}

impl DurableSink {
    fn tick_logged(&mut self, output: TickOutput, releases: Releases) -> Result<(), String> {
        if let Some(e) = self.writer.failed() {
            // The log failed while an earlier tick was written: take no more work.
            let why = e.to_string();
            releases.release(Err(&why));
            return Err(why);
        }
        let Some(log) = output.log.filter(|log| log.tx_count > 0) else {
            // Nothing committed: nothing to make durable.
            releases.release(Ok(()));
            return Ok(());
        };
        let tick = output.tick.0;
        let held = self.mode == Durability::Confirmed && !releases.is_empty();
        let releases = if held {
            // Queued before the append, so the writer cannot report the tick durable
            // before its releases are there to go out.
            let mut waiting = self.waiting.lock().expect("waiting lock");
            if let Some(why) = waiting.failed.clone() {
                drop(waiting);
                releases.release(Err(&why));
                return Err(why);
            }
            waiting.entries.push_back((tick, releases));
            None
        } else {
            Some(releases)
        };
        match self.writer.append(tick, log.tx_count, log.payload) {
            Ok(()) => {
                if let Some(releases) = releases {
                    releases.release(Ok(()));
                }
                Ok(())
            }
            Err(e) => {
                let why = e.to_string();
                if let Some(releases) = releases {
                    releases.release(Err(&why));
                }
                let mut waiting = self.waiting.lock().expect("waiting lock");
                waiting.entries.drain(..).for_each(|(_, releases)| releases.release(Err(&why)));
                waiting.failed.get_or_insert(why.clone());
                Err(why)
            }
        }
    }
}

/// Why a log could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("replaying tick {tick}: {why}")]
    Invalid { tick: u64, why: String },
    #[error("replaying tick {tick}: {source}")]
    Engine { tick: u64, source: Error },
}

/// What replaying did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub end: LogEnd,
    pub ticks: u64,
    pub transactions: u64,
    pub rows: u64,
}

/// Applies every tick in the log in `dir` to `db`, whose tables must be those the log
/// was written against. Ticks at or before `after` (a snapshot's tick) are skipped.
pub fn replay(dir: &Path, db: &mut Database, after: Option<u64>) -> Result<Replayed, ReplayError> {
    let (mut ticks, mut transactions, mut rows) = (0u64, 0u64, 0u64);
    let end = read_log_from(dir, after, |header, payload| {
        if after.is_some_and(|a| header.tick <= a) {
            return Ok(());
        }
        if header.first_tx != db.next_tx() {
            // A snapshot (or an earlier part of the log) and this frame disagree on
            // where the log stands: something between them is missing.
            let why = format!(
                "its transactions start at {}, but the database is at transaction {}",
                header.first_tx,
                db.next_tx()
            );
            return Err(ReplayError::Invalid { tick: header.tick, why });
        }
        let applied = apply_tick(db, payload).map_err(|e| match e {
            Apply::Invalid(why) => ReplayError::Invalid { tick: header.tick, why },
            Apply::Engine(source) => ReplayError::Engine { tick: header.tick, source },
        })?;
        if applied.0 != header.tx_count {
            let why =
                format!("the frame says {} transactions, its payload holds {}", header.tx_count, applied.0);
            return Err(ReplayError::Invalid { tick: header.tick, why });
        }
        db.set_log_position(header.tick, header.next_tx());
        ticks += 1;
        transactions += u64::from(applied.0);
        rows += applied.1;
        Ok(())
    })??;
    Ok(Replayed { end, ticks, transactions, rows })
}

enum Apply {
    Invalid(String),
    Engine(Error),
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Apply> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end
            .ok_or_else(|| Apply::Invalid(format!("the payload ends inside a record at byte {}", self.at)))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, Apply> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
}

/// Applies one tick's payload (see [`crate::tick::TickLog`]) as one transaction;
/// returns the transactions and rows it held.
fn apply_tick(db: &mut Database, payload: &[u8]) -> Result<(u32, u64), Apply> {
    let mut c = Cursor { bytes: payload, at: 0 };
    c.take(8)?; // the tick's timestamp
    let tables = db.tables().len();
    let mut tx = db.begin();
    let (mut txs, mut rows) = (0u32, 0u64);
    while c.at < payload.len() {
        let meta = c.u32()? as usize;
        c.take(meta)?;
        for pass in 0..2 {
            for _ in 0..c.u32()? {
                let table = c.u32()?;
                if table as usize >= tables {
                    return Err(Apply::Invalid(format!("a row of table id {table}, which does not exist")));
                }
                let len = c.u32()? as usize;
                let row = c.take(len)?;
                let table = TableId(table);
                if pass == 0 {
                    if !tx.delete_equal(table, row).map_err(Apply::Engine)? {
                        let name = tx.table(table).name().to_string();
                        return Err(Apply::Invalid(format!("a row to delete from `{name}` is not there")));
                    }
                } else {
                    tx.insert_exact(table, row).map_err(Apply::Engine)?;
                }
                rows += 1;
            }
        }
        txs += 1;
    }
    tx.commit_quietly();
    Ok((txs, rows))
}

/// Why a database could not be brought back.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(
        "no usable snapshot, and the log in {} starts at tick {first_tick}: the ticks before it are gone{}",
        log.display(),
        skipped.first().map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    NoBase { log: PathBuf, first_tick: u64, skipped: Vec<SnapshotError> },
    #[error(
        "the tables were migrated at tick {tick}, but {} holds no usable snapshot of that tick or later{}",
        snapshots.display(),
        skipped.first().map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    NoMigrationSnapshot { snapshots: PathBuf, tick: u64, skipped: Vec<SnapshotError> },
}

/// What bringing a database back did.
#[derive(Debug)]
pub struct Recovered {
    /// The snapshot loaded, if any.
    pub snapshot: Option<(PathBuf, Loaded)>,
    /// Newer snapshots that failed their checks and were passed over.
    pub skipped: Vec<SnapshotError>,
    pub replayed: Replayed,
    /// Where the log goes on: hand it to [`DurableSink::open`].
    pub end: LogEnd,
}

/// The transaction offset of a segment's first frame, read from its header; `None` if
/// the segment holds no whole frame header (replay reports what is wrong with it).
fn first_frame_tx(segment: &Path) -> Option<u64> {
    use crate::commitlog::frame::{FRAME_HEADER_BYTES, FRAME_MAGIC};
    use crate::commitlog::segments::SEGMENT_HEADER_BYTES;
    use std::io::Read;
    let mut head = [0u8; SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES];
    std::fs::File::open(segment).ok()?.read_exact(&mut head).ok()?;
    let frame = &head[SEGMENT_HEADER_BYTES..];
    (frame[..4] == FRAME_MAGIC).then(|| u64::from_le_bytes(frame[16..24].try_into().expect("8 bytes")))
}

/// Brings `db` (its tables created, empty) back: the newest valid snapshot in
/// `snapshots`, then the log in `log` after it. A snapshot that fails its checks is
/// passed over for an older one (or for the whole log, if it still starts at the first
/// tick); with none usable and the log's start gone, recovery refuses.
pub fn recover(snapshots: &Path, log: &Path, db: &mut Database) -> Result<Recovered, RecoverError> {
    recover_from(snapshots, log, db, 0)
}

/// As [`recover`], for a database whose tables were migrated at tick `migrated_at`
/// (0 if never): only a snapshot of that tick or later holds its tables, so older
/// ones are left alone, and without one recovery refuses.
pub fn recover_from(
    snapshots: &Path,
    log: &Path,
    db: &mut Database,
    migrated_at: u64,
) -> Result<Recovered, RecoverError> {
    let segments = list_segments(log).map_err(ReplayError::from)?;
    let first_tick = segments.first().map(|(tick, _)| *tick);
    // A base covers the log if the log holds every transaction after it: counted in
    // transactions, not ticks, since a tick that committed nothing has no frame.
    let first_tx = segments.first().and_then(|(_, path)| first_frame_tx(path));
    let covers = |next_tx: u64| first_tx.is_none_or(|first| first <= next_tx);
    let mut skipped = Vec::new();
    let mut base = None;
    for (tick, path) in list_snapshots(snapshots)? {
        if tick < migrated_at {
            break; // Newest first: the rest are older still.
        }
        // A snapshot whose header cannot be read is loaded anyway, to be set aside.
        if crate::snapshot::next_tx_of(&path).is_some_and(|next_tx| !covers(next_tx)) {
            continue;
        }
        match load(&path, db) {
            Ok(loaded) => {
                base = Some((path, loaded));
                break;
            }
            Err(e @ (SnapshotError::Corrupt { .. } | SnapshotError::Load { .. })) => {
                // Set aside, kept for inspection: never used, and not counted as one of
                // the snapshots pruning keeps.
                let aside = path.with_extension("tdbsnap.corrupt");
                std::fs::rename(&path, &aside)
                    .map_err(|source| SnapshotError::Io { path: path.clone(), source })?;
                skipped.push(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if base.is_none() && migrated_at > 0 {
        return Err(RecoverError::NoMigrationSnapshot {
            snapshots: snapshots.to_path_buf(),
            tick: migrated_at,
            skipped,
        });
    }
    if base.is_none() && !covers(0) {
        let first_tick = first_tick.unwrap_or(0);
        return Err(RecoverError::NoBase { log: log.to_path_buf(), first_tick, skipped });
    }
    let after = base.as_ref().map(|(_, loaded)| loaded.tick);
    let mut replayed = replay(log, db, after)?;
    for e in &skipped {
        eprintln!("tickdb: passed over a snapshot: {e}");
    }
    if let Some((file, offset, bytes)) = &replayed.end.truncated {
        eprintln!("tickdb: cut a torn tail of {bytes} bytes off {} at offset {offset}", file.display());
    }
    // The log may hold nothing after the snapshot (its older segments pruned): go on
    // from the snapshot's position.
    let mut end = replayed.end.clone();
    if let Some((_, loaded)) = &base
        && end.last_tick.is_none_or(|t| t < loaded.tick)
    {
        end.last_tick = Some(loaded.tick);
        end.next_tx = loaded.next_tx;
        replayed.end = end.clone();
    }
    Ok(Recovered { snapshot: base, skipped, replayed, end })
}

/// Keeps the newest `keep` snapshots and deletes older ones, and the log segments
/// whose every tick is covered by the oldest snapshot kept. The newest segment is
/// never deleted. Returns the files deleted.
pub fn prune(snapshots: &Path, log: &Path, keep: usize) -> Result<Vec<PathBuf>, RecoverError> {
    let keep = keep.max(1);
    let all = list_snapshots(snapshots)?;
    let mut deleted = Vec::new();
    let io_error = |path: &Path, source| SnapshotError::Io { path: path.to_path_buf(), source };
    for (_, path) in all.iter().skip(keep) {
        std::fs::remove_file(path).map_err(|e| io_error(path, e))?;
        deleted.push(path.clone());
    }
    let Some(&(oldest_kept, _)) = all.get(keep.min(all.len()).wrapping_sub(1)) else {
        return Ok(deleted);
    };
    let segments = list_segments(log).map_err(ReplayError::from)?;
    // A segment's ticks end where the next one's begin.
    for pair in segments.windows(2) {
        let (_, path) = &pair[0];
        let (next_first, _) = pair[1];
        if next_first <= oldest_kept.saturating_add(1) {
            std::fs::remove_file(path).map_err(|e| io_error(path, e))?;
            deleted.push(path.clone());
        }
    }
    Ok(deleted)
}
