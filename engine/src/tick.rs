//! The tick loop: one thread per database that owns its tables and runs all work.
//!
//! Work items (reducer calls from clients) wait in a bounded inbox. A tick starts as
//! soon as work is waiting, with no artificial delay, so latency stays low when idle
//! and batches grow under load; a tick also starts when the fixed-rate systems are due.
//! A system that batches work ([`TickSystem::batch_due`], a game simulating at a fixed
//! rate) has it wait for its next batching tick instead, which takes all of it.
//! Each work item is its own transaction: if it fails or panics it rolls back alone.
//! The committed changesets of a tick are merged into one, resolved into per-table
//! changes and handed to the [`TickSink`] (later: the commit log and subscriptions).
//!
//! [`Ticker`] is the deterministic core: given the same database, work, clock readings
//! and random numbers it produces the same state and the same output, which is what a
//! simulator needs. [`TickLoop`] wraps it in a thread with an inbox, deciding only
//! *when* ticks run. Reads from other threads go through the inbox too and run on the
//! tick thread between ticks, so they never see a half-applied tick.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tickdb_wasm_abi::{TimeDuration, Timestamp};

use crate::changeset::{Changeset, TableChanges};
use crate::config::EngineConfig;
use crate::db::{Database, Tx};
use crate::ids::TickId;

/// Where a tick's wall-clock time comes from. Tests and simulators inject their own.
pub trait Clock: Send + 'static {
    fn now(&mut self) -> Timestamp;
}

/// Where reducers' random numbers come from. Tests and simulators inject their own.
pub trait Entropy: Send + 'static {
    fn next_u64(&mut self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&mut self) -> Timestamp {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp::from_micros(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }
}

/// The SplitMix64 generator: tiny, fast, and fully determined by its seed.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// Seeded from the operating system's randomness (through std's hasher seeds).
    pub fn from_os() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        SplitMix64::new(seed)
    }
}

impl Entropy for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// What a transaction running in a tick may know about the tick.
pub struct TickContext<'a> {
    pub tick: TickId,
    /// The tick's time: the same for every transaction of the tick.
    pub timestamp: Timestamp,
    /// For fixed-rate systems: time since their previous run (zero the first time).
    pub delta: TimeDuration,
    entropy: &'a mut dyn Entropy,
}

impl std::fmt::Debug for TickContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TickContext").field("tick", &self.tick).field("timestamp", &self.timestamp).finish()
    }
}

impl TickContext<'_> {
    /// The tick's random number source.
    pub fn rng(&mut self) -> &mut dyn Entropy {
        self.entropy
    }
}

/// The logic the tick loop runs (later: the WASM module host).
pub trait TickSystem: Send + 'static {
    type Work: Send + 'static;

    /// Runs one work item as one transaction. `Err` (or a panic) rolls it back; the
    /// system tells the work's sender how it went.
    fn run_work(
        &mut self,
        tx: &mut Tx<'_>,
        ctx: &mut TickContext<'_>,
        work: Self::Work,
    ) -> Result<(), String>;

    /// Runs the fixed-rate systems as one transaction, when they are due.
    fn run_fixed(&mut self, _tx: &mut Tx<'_>, _ctx: &mut TickContext<'_>) -> Result<(), String> {
        Ok(())
    }

    /// Work the system itself wants done by the tick at `now` (timers that fell due),
    /// appended to `out`. Each item runs as its own transaction after the inbox's work.
    fn due_work(&mut self, _now: Timestamp, _out: &mut Vec<Self::Work>) {}

    /// When the system next has work of its own due, if ever: the loop wakes for it.
    fn next_due(&self) -> Option<Timestamp> {
        None
    }

    /// When the system's next batching tick is due, if it batches work: then work
    /// waits for that tick and runs in it (all the work received before it, over more
    /// ticks at once if there is more than a tick takes), instead of starting a tick
    /// as soon as it arrives. A game that simulates at a fixed rate takes its clients'
    /// calls on its own ticks.
    fn batch_due(&self) -> Option<Timestamp> {
        None
    }

    /// What the commit log records about a work item besides its row changes: who
    /// called what, with which arguments. Called before the item runs, and only when
    /// the tick loop keeps a log.
    fn log_meta(&self, _work: &Self::Work, _out: &mut Vec<u8>) {}

    /// Whether `work` wants its own changes: then, if it commits, the loop resolves its
    /// transaction's changes apart from the tick's and hands them to
    /// [`TickSystem::own_changes`]. Called before the item runs.
    fn wants_own_changes(&self, _work: &Self::Work) -> bool {
        false
    }

    /// The changes of the work item that just committed, which asked for them; `db` as
    /// it left it.
    fn own_changes(&mut self, _db: &Database, _changes: Vec<TableChanges>) {}

    /// Called once the tick's transactions are merged into `output`, before the sink
    /// receives it. What must wait until the tick is durable (replies to callers) goes
    /// into `releases`.
    fn tick_done(&mut self, _db: &Database, _output: &TickOutput, _releases: &mut Releases) {}
}

/// Something a tick holds back until it is durable: replies to its callers.
pub trait Release: Send {
    /// `Ok` once the tick is durable (at once, for a database without a log), or the
    /// reason it never will be.
    fn release(self: Box<Self>, outcome: Result<(), &str>);
}

/// A tick's releases, in order.
#[derive(Default)]
pub struct Releases(Vec<Box<dyn Release>>);

impl std::fmt::Debug for Releases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Releases({})", self.0.len())
    }
}

impl Releases {
    pub fn push(&mut self, release: Box<dyn Release>) {
        self.0.push(release);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn release(self, outcome: Result<(), &str>) {
        self.0.into_iter().for_each(|r| r.release(outcome));
    }
}

/// Receives every tick's output (the commit log, later subscriptions) and decides when
/// its releases go out. An error stops the tick loop: the database takes no more work.
pub trait TickSink: Send + 'static {
    fn tick_committed(&mut self, db: &Database, output: TickOutput, releases: Releases)
    -> Result<(), String>;
}

/// Discards tick outputs; releases at once.
impl TickSink for () {
    fn tick_committed(&mut self, _: &Database, _: TickOutput, releases: Releases) -> Result<(), String> {
        releases.release(Ok(()));
        Ok(())
    }
}

/// A sink that forwards outputs over a bounded channel. A consumer that falls behind
/// by the channel's capacity holds the tick thread back (backpressure) rather than
/// letting outputs pile up in memory.
impl TickSink for mpsc::SyncSender<TickOutput> {
    fn tick_committed(&mut self, _: &Database, output: TickOutput, releases: Releases) -> Result<(), String> {
        releases.release(Ok(()));
        // A receiver that hung up wants no more ticks; the loop goes on without it.
        let _ = self.send(output);
        Ok(())
    }
}

/// What one tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickOutput {
    pub tick: TickId,
    pub timestamp: Timestamp,
    /// Net changes of the tick's committed transactions, per table.
    pub changes: Vec<TableChanges>,
    pub committed: u32,
    pub rolled_back: u32,
    /// The tick's commit log payload, when the loop keeps a log; see [`TickLog`].
    pub log: Option<TickLog>,
}

/// A tick as the commit log records it.
///
/// The payload is the tick's timestamp (`i64`, µs) and then, per committed
/// transaction: its metadata (`u32` length, then what [`TickSystem::log_meta`] wrote)
/// and its row changes (see [`Tx::log_changes`]). All integers little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickLog {
    pub payload: Vec<u8>,
    pub tx_count: u32,
}

/// Tick metrics, in hdrhistograms.
#[derive(Debug, Clone)]
pub struct TickMetrics {
    pub ticks: u64,
    pub committed: u64,
    pub rolled_back: u64,
    pub tick_duration_us: Histogram<u64>,
    pub tick_transactions: Histogram<u64>,
    pub tick_rows_changed: Histogram<u64>,
}

impl Default for TickMetrics {
    fn default() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        TickMetrics {
            ticks: 0,
            committed: 0,
            rolled_back: 0,
            tick_duration_us: histogram(),
            tick_transactions: histogram(),
            tick_rows_changed: histogram(),
        }
    }
}

impl TickMetrics {
    fn record(&mut self, output: &TickOutput, duration: Duration) {
        self.ticks += 1;
        self.committed += u64::from(output.committed);
        self.rolled_back += u64::from(output.rolled_back);
        self.tick_duration_us.saturating_record(duration.as_micros() as u64);
        self.tick_transactions.saturating_record(u64::from(output.committed + output.rolled_back));
        let rows: usize = output.changes.iter().map(TableChanges::rows_changed).sum();
        self.tick_rows_changed.saturating_record(rows as u64);
    }
}

/// The deterministic core of the tick loop; see the module docs.
pub struct Ticker<S: TickSystem> {
    db: Database,
    system: S,
    clock: Box<dyn Clock>,
    entropy: Box<dyn Entropy>,
    tick: TickId,
    last_fixed: Option<Timestamp>,
    metrics: Arc<Mutex<TickMetrics>>,
    /// Set when a panic interrupted the engine in the middle of a write: the state may
    /// be torn, so no more work runs.
    poisoned: bool,
    /// The system's due work, reused from tick to tick.
    due: Vec<S::Work>,
    /// The tick's changeset, emptied and reused from tick to tick.
    changeset: Changeset,
    /// Whether ticks produce a commit log payload, and the one being built.
    logging: bool,
    log: Vec<u8>,
    log_scratch: Vec<u8>,
    log_txs: u32,
}

impl<S: TickSystem + std::fmt::Debug> std::fmt::Debug for Ticker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticker")
            .field("system", &self.system)
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Clock")
    }
}

impl std::fmt::Debug for dyn Entropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Entropy")
    }
}

impl<S: TickSystem> Ticker<S> {
    pub fn new(db: Database, system: S, clock: Box<dyn Clock>, entropy: Box<dyn Entropy>) -> Self {
        let metrics = Arc::default();
        let (tick, last_fixed, poisoned, due, changeset) =
            (TickId(0), None, false, Vec::new(), Changeset::default());
        let (logging, log, log_scratch, log_txs) = (false, Vec::new(), Vec::new(), 0);
        Ticker {
            db,
            system,
            clock,
            entropy,
            tick,
            last_fixed,
            metrics,
            poisoned,
            due,
            changeset,
            logging,
            log,
            log_scratch,
            log_txs,
        }
    }

    /// Makes every tick produce its commit log payload ([`TickOutput::log`]), numbered
    /// on from the last tick the database holds (from a snapshot or a replayed log).
    pub fn keep_log(&mut self) {
        self.logging = true;
        self.tick = TickId(self.db.last_tick().unwrap_or(0));
    }

    /// How long until the system's own work is due: zero if it is due now, `None` if
    /// it has none.
    pub fn system_due_in(&mut self) -> Option<Duration> {
        let due = self.system.next_due()?;
        let micros = due.duration_since(self.clock.now()).micros;
        Some(Duration::from_micros(micros.max(0) as u64))
    }

    /// How long until the system's next batching tick, if it batches work.
    pub fn batch_due_in(&mut self) -> Option<Duration> {
        let due = self.system.batch_due()?;
        let micros = due.duration_since(self.clock.now()).micros;
        Some(Duration::from_micros(micros.max(0) as u64))
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    pub fn system(&self) -> &S {
        &self.system
    }

    pub fn system_mut(&mut self) -> &mut S {
        &mut self.system
    }

    pub fn into_db(self) -> Database {
        self.db
    }

    pub fn metrics(&self) -> TickMetrics {
        self.metrics.lock().expect("metrics lock").clone()
    }

    /// Whether a panic inside a table write left the database in a state that cannot be
    /// trusted; a poisoned ticker runs no more work.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Runs one tick: each work item as its own transaction, then the fixed-rate
    /// systems if `fixed` is set. Its releases (replies) go out at once.
    pub fn run_tick(&mut self, work: impl IntoIterator<Item = S::Work>, fixed: bool) -> TickOutput {
        let (output, releases) = self.run_tick_held(work, fixed);
        releases.release(Ok(()));
        output
    }

    /// Runs one tick and hands back what it holds until it is durable.
    pub fn run_tick_held(
        &mut self,
        work: impl IntoIterator<Item = S::Work>,
        fixed: bool,
    ) -> (TickOutput, Releases) {
        let started = Instant::now();
        // After the database's own last tick, which may have moved between ticks
        // (`Database::advance_tick`).
        self.tick = TickId(self.tick.0.max(self.db.last_tick().unwrap_or(0)) + 1);
        let timestamp = self.clock.now();
        let mut output = TickOutput {
            tick: self.tick,
            timestamp,
            changes: Vec::new(),
            committed: 0,
            rolled_back: 0,
            log: None,
        };
        self.log.clear();
        self.log_txs = 0;
        if self.logging {
            self.log.extend_from_slice(&timestamp.micros_since_epoch.to_le_bytes());
        }
        let mut changeset = std::mem::take(&mut self.changeset);
        // The inbox's work, then the work the system's own timers made due.
        let mut due = std::mem::take(&mut self.due);
        self.system.due_work(timestamp, &mut due);
        for item in work.into_iter().chain(due.drain(..)) {
            if self.poisoned {
                break;
            }
            let record = self.log_meta(&item);
            let own = self.system.wants_own_changes(&item);
            let run =
                |system: &mut S, tx: &mut Tx<'_>, ctx: &mut TickContext<'_>| system.run_work(tx, ctx, item);
            self.run_transaction(&mut changeset, &mut output, TimeDuration::default(), (record, own), run);
        }
        self.due = due;
        if fixed && !self.poisoned {
            let delta = self.last_fixed.map(|last| timestamp.duration_since(last)).unwrap_or_default();
            self.last_fixed = Some(timestamp);
            let record = self.log_meta_bytes(b"");
            self.run_transaction(&mut changeset, &mut output, delta, (record, false), S::run_fixed);
        }
        output.changes = changeset.table_changes(&self.db);
        changeset.clear();
        self.changeset = changeset;
        if self.logging {
            // The payload leaves with the output; the next tick's starts at its size.
            let capacity = self.log.capacity();
            let payload = std::mem::replace(&mut self.log, Vec::with_capacity(capacity));
            output.log = Some(TickLog { payload, tx_count: self.log_txs });
        }
        let next_tx = self.db.next_tx() + u64::from(self.log_txs);
        self.db.set_log_position(self.tick.0, next_tx);
        let mut releases = Releases::default();
        self.system.tick_done(&self.db, &output, &mut releases);
        self.metrics.lock().expect("metrics lock").record(&output, started.elapsed());
        (output, releases)
    }

    /// Starts a transaction's log record with the system's metadata for `item`;
    /// returns where the record starts.
    fn log_meta(&mut self, item: &S::Work) -> usize {
        let start = self.log.len();
        if self.logging {
            self.log.extend_from_slice(&0u32.to_le_bytes());
            self.system.log_meta(item, &mut self.log);
            let len = (self.log.len() - start - 4) as u32;
            self.log[start..start + 4].copy_from_slice(&len.to_le_bytes());
        }
        start
    }

    fn log_meta_bytes(&mut self, meta: &[u8]) -> usize {
        let start = self.log.len();
        if self.logging {
            self.log.extend_from_slice(&(meta.len() as u32).to_le_bytes());
            self.log.extend_from_slice(meta);
        }
        start
    }

    fn run_transaction(
        &mut self,
        changeset: &mut Changeset,
        output: &mut TickOutput,
        delta: TimeDuration,
        (record_start, own): (usize, bool),
        run: impl FnOnce(&mut S, &mut Tx<'_>, &mut TickContext<'_>) -> Result<(), String>,
    ) {
        let mut tx = self.db.begin();
        let mut ctx =
            TickContext { tick: self.tick, timestamp: output.timestamp, delta, entropy: &mut *self.entropy };
        let system = &mut self.system;
        // A panic in the system is that transaction's failure, not the database's: the
        // undo log describes every write, so rolling back restores the state. A panic
        // inside a table write (an engine bug) may have left that write half done,
        // which no undo log describes: then the database stops instead of guessing.
        let result = catch_unwind(AssertUnwindSafe(|| run(system, &mut tx, &mut ctx)));
        match result {
            Ok(Ok(())) => {
                // A transaction that wrote nothing (a tick system with nothing to do, a
                // read-only call) needs no replay: it is not logged, so an idle
                // database writes no log frames.
                if self.logging && tx.undo_len() > 0 {
                    tx.log_changes(&mut self.log, &mut self.log_scratch);
                    self.log_txs += 1;
                } else if self.logging {
                    self.log.truncate(record_start);
                }
                if own {
                    let mine = tx.commit();
                    let changes = mine.table_changes(&self.db);
                    changeset.merge(mine);
                    self.system.own_changes(&self.db, changes);
                } else {
                    tx.commit_into(changeset);
                }
                output.committed += 1;
            }
            Err(_) if tx.is_torn() => {
                self.log.truncate(record_start);
                eprintln!("tickdb: a panic interrupted a table write; the database stops taking work");
                std::mem::forget(tx);
                self.poisoned = true;
                output.rolled_back += 1;
            }
            Ok(Err(_)) | Err(_) => {
                tx.rollback();
                self.log.truncate(record_start);
                output.rolled_back += 1;
            }
        }
    }
}

/// Why the inbox did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InboxError {
    #[error("the database is busy: its inbox holds {capacity} waiting items; retry later")]
    Full { capacity: usize },
    #[error("the database has stopped")]
    Closed,
    #[error("a batch of {len} work items is larger than the limit of {max} (tick_work_max)")]
    BatchTooLarge { len: usize, max: usize },
}

/// Why a read through [`TickHandle::read`] gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error("the read panicked: {0}")]
    Panicked(String),
}

/// Runs between ticks with the database and the system (as `Any`, for
/// [`TickHandle::exclusive`] to downcast).
type ReadFn = Box<dyn FnOnce(&mut Database, &mut dyn std::any::Any) + Send>;

enum Message<W> {
    Work(W),
    /// Several work items in one inbox slot (from a network thread that read many).
    Batch(Vec<W>),
    Read(ReadFn),
    Stop,
}

/// Starts tick loop threads.
#[derive(Debug)]
pub struct TickLoop;

impl TickLoop {
    /// Starts the tick thread for `ticker`, with the inbox and rates of `config`.
    pub fn spawn<S: TickSystem>(
        ticker: Ticker<S>,
        sink: impl TickSink,
        config: &EngineConfig,
    ) -> std::io::Result<TickHandle<S::Work>> {
        config.validate().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let (inbox, rx) = mpsc::sync_channel(config.inbox_capacity);
        let metrics = Arc::clone(&ticker.metrics);
        let (interval, work_max) = (config.fixed_tick_interval, config.tick_work_max);
        let failure = Arc::new(Mutex::new(None));
        let loop_failure = Arc::clone(&failure);
        let limits = (work_max, config.inbox_capacity);
        let thread = std::thread::Builder::new()
            .name("tickdb-tick".into())
            .spawn(move || run_loop(ticker, sink, rx, interval, limits, loop_failure))?;
        let (capacity, batch_max) = (config.inbox_capacity, config.tick_work_max);
        Ok(TickHandle { inbox, capacity, batch_max, metrics, failure, thread: Some(thread) })
    }
}

fn run_loop<S: TickSystem>(
    mut ticker: Ticker<S>,
    mut sink: impl TickSink,
    rx: Receiver<Message<S::Work>>,
    interval: Option<Duration>,
    (work_max, capacity): (usize, usize),
    failure: Arc<Mutex<Option<String>>>,
) -> Option<Database> {
    let mut next_fixed = interval.map(|i| Instant::now() + i);
    let mut stop = false;
    // Work received but not run yet: a batch can bring more than a tick takes.
    let mut waiting: VecDeque<S::Work> = VecDeque::new();
    // Reads wait until the work received before them has run: each read is kept with
    // the count of work items received before it.
    let mut reads: VecDeque<(u64, ReadFn)> = VecDeque::new();
    let (mut received, mut ran) = (0u64, 0u64);
    // Batched work that a batching tick took on but could not run whole: it runs in
    // the ticks right after.
    let mut backlog = 0usize;
    while !stop || !waiting.is_empty() {
        let system_due = ticker.system_due_in().map(|d| Instant::now() + d);
        let wake = match (next_fixed, system_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Batched work waits for the system's next batching tick; other work starts a
        // tick at once. While it waits, work is taken from the inbox up to the inbox's
        // capacity again; past that the inbox fills and pushes back.
        let batched = ticker.batch_due_in().is_some();
        let holds = if batched { capacity } else { work_max };
        if batched
            && backlog == 0
            && !stop
            && waiting.len() >= holds
            && let Some(due) = wake
        {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let idle = waiting.is_empty() || (batched && backlog == 0);
        let first = match (wake, idle && !stop && waiting.len() < holds) {
            // Work is waiting (or the loop is stopping): take what else came, without waiting.
            (_, false) => rx.try_recv().ok(),
            (Some(due), true) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                // Batched work may be waiting: it runs before the loop ends.
                Err(RecvTimeoutError::Disconnected) => {
                    stop = true;
                    None
                }
            },
            (None, true) => match rx.recv() {
                Ok(message) => Some(message),
                Err(_) => break,
            },
        };
        let mut next = first;
        while let Some(message) = next {
            match message {
                Message::Work(w) => {
                    received += 1;
                    waiting.push_back(w);
                }
                Message::Batch(batch) => {
                    received += batch.len() as u64;
                    waiting.extend(batch);
                }
                Message::Read(f) => reads.push_back((received, f)),
                Message::Stop => stop = true,
            }
            // An empty or hung-up inbox ends the batch; a hang-up ends the loop next round.
            let room = waiting.len() + reads.len() < holds;
            next = if room && !stop { rx.try_recv().ok() } else { None };
        }
        let now = Instant::now();
        let fixed = next_fixed.is_some_and(|due| now >= due);
        if let (true, Some(due), Some(interval)) = (fixed, next_fixed, interval) {
            // Missed periods are skipped, not made up: a late tick must not cause a burst.
            next_fixed = Some(if due + interval > now { due + interval } else { now + interval });
        }
        let system_due = ticker.system_due_in().is_some_and(|d| d.is_zero());
        let take = if !batched || stop {
            waiting.len()
        } else if ticker.batch_due_in().is_some_and(|d| d.is_zero()) {
            // The batching tick: it takes on all the work waiting.
            backlog = waiting.len();
            backlog
        } else {
            backlog
        };
        let take = take.min(work_max);
        backlog = backlog.saturating_sub(take);
        let work: Vec<S::Work> = waiting.drain(..take).collect();
        ran += work.len() as u64;
        if !work.is_empty() || fixed || system_due {
            let (output, releases) = ticker.run_tick_held(work, fixed);
            if ticker.is_poisoned() {
                // The state may be torn: nothing of this tick is logged or released.
                releases.release(Err("the database stopped: a table write was interrupted"));
                return None;
            }
            if let Err(why) = sink.tick_committed(ticker.db(), output, releases) {
                eprintln!("tickdb: the database stops taking work: {why}");
                *failure.lock().expect("failure lock") = Some(why);
                return Some(ticker.into_db());
            }
        }
        if ticker.is_poisoned() {
            return None;
        }
        while let Some((_, read)) = reads.pop_front_if(|(after, _)| *after <= ran) {
            read(&mut ticker.db, &mut ticker.system);
        }
    }
    Some(ticker.into_db())
}

/// The text of a panic's payload, for error messages.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_string(),
    }
}

/// The other threads' side of a running tick loop.
#[derive(Debug)]
pub struct TickHandle<W> {
    inbox: SyncSender<Message<W>>,
    capacity: usize,
    batch_max: usize,
    metrics: Arc<Mutex<TickMetrics>>,
    failure: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<Option<Database>>>,
}

impl<W> std::fmt::Debug for Message<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Work(_) => "Work",
            Message::Batch(_) => "Batch",
            Message::Read(_) => "Read",
            Message::Stop => "Stop",
        })
    }
}

impl<W: Send + 'static> TickHandle<W> {
    /// Queues a work item for the next tick, failing at once if the inbox is full.
    pub fn submit(&self, work: W) -> Result<(), InboxError> {
        self.try_send(Message::Work(work))
    }

    /// Queues several work items in one inbox slot: cheaper per item than `submit`
    /// for a thread that has many at once. A batch holds at most `tick_work_max`
    /// items, so the inbox stays bounded in items as well as in slots; on error
    /// nothing was queued.
    pub fn submit_batch(&self, batch: Vec<W>) -> Result<(), InboxError> {
        if batch.len() > self.batch_max {
            return Err(InboxError::BatchTooLarge { len: batch.len(), max: self.batch_max });
        }
        self.try_send(Message::Batch(batch))
    }

    fn try_send(&self, message: Message<W>) -> Result<(), InboxError> {
        self.inbox.try_send(message).map_err(|e| match e {
            TrySendError::Full(_) => InboxError::Full { capacity: self.capacity },
            TrySendError::Disconnected(_) => InboxError::Closed,
        })
    }

    /// Runs `read` on the tick thread between ticks and returns its result.
    pub fn read<R: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> R + Send + 'static,
    ) -> Result<R, ReadError> {
        let (reply, result) = mpsc::sync_channel(1);
        self.try_send(Message::Read(Box::new(move |db, _| {
            // A panicking read fails that read only; reads cannot change the database.
            let outcome = catch_unwind(AssertUnwindSafe(|| read(db))).map_err(|p| panic_message(&*p));
            // The reader may have given up waiting; then nobody needs the result.
            let _ = reply.send(outcome);
        })))?;
        result.recv().map_err(|_| InboxError::Closed)?.map_err(ReadError::Panicked)
    }

    /// Queues `read` to run on the tick thread between ticks, after the work queued
    /// before it, without waiting for it: for an event loop that must not block.
    /// `read` sends its own result wherever it is wanted; a panic in it is caught and
    /// ends that read only.
    pub fn post(&self, read: impl FnOnce(&Database) + Send + 'static) -> Result<(), InboxError> {
        self.try_send(Message::Read(Box::new(move |db, _| {
            let _ = catch_unwind(AssertUnwindSafe(|| read(db)));
        })))
    }

    /// Runs `change` on the tick thread between ticks, after the work queued before
    /// it, with the database and the tick system (which must be an `S`) to change, and
    /// returns its result; no tick runs meanwhile. For what is not a transaction:
    /// replacing a module and migrating its tables. `change` must leave the database
    /// whole when it fails; a panic in it is reported as [`ReadError::Panicked`].
    pub fn exclusive<S: 'static, R: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Database, &mut S) -> R + Send + 'static,
    ) -> Result<R, ReadError> {
        let (reply, result) = mpsc::sync_channel(1);
        self.try_send(Message::Read(Box::new(move |db, system| {
            let outcome = match system.downcast_mut::<S>() {
                Some(system) => {
                    catch_unwind(AssertUnwindSafe(|| change(db, system))).map_err(|p| panic_message(&*p))
                }
                None => Err(format!("the tick system is not a {}", std::any::type_name::<S>())),
            };
            let _ = reply.send(outcome);
        })))?;
        result.recv().map_err(|_| InboxError::Closed)?.map_err(ReadError::Panicked)
    }

    /// Why the loop stopped taking work, if its sink failed (the commit log could not
    /// write, say).
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("failure lock").clone()
    }

    /// A copy of the tick metrics so far.
    pub fn metrics(&self) -> TickMetrics {
        self.metrics.lock().expect("metrics lock").clone()
    }

    /// Finishes the work already queued, stops the thread and returns the database.
    /// `None` if the tick thread died or stopped on a poisoned database (both bugs,
    /// reported on stderr).
    pub fn shutdown(mut self) -> Option<Database> {
        // A send fails only if the thread is gone, which `join` reports.
        let _ = self.inbox.send(Message::Stop);
        self.thread.take()?.join().ok().flatten()
    }
}

impl<W> Drop for TickHandle<W> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.inbox.send(Message::Stop);
            let _ = thread.join();
        }
    }
}
