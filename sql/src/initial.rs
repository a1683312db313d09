//! A new subscription's initial rows without holding the tick loop. The query is first
//! run at once within one slice's budget; most queries, through an index, fit. One that
//! does not is answered in slices, each within the budget, with the database moving on
//! between them.
//!
//! A sliced scan reads the result table in row-id order and remembers how far it got;
//! for each row it reads, it counts how many times the row is in the result (once or
//! not for one table, once per combination of joined rows for a join). Each tick's
//! changes are folded into the counts so far: every row of the result table the tick
//! touched (changed, moved to another slot, or whose joined rows changed) is counted
//! again if the scan has passed where it is now, and dropped otherwise, for the scan
//! to read later as it then is. Rows are told apart by primary key, so a sliced scan
//! needs one; a query over a table without one runs at once within the full limits.
//! When the scan ends, its rows are the result as of the last tick folded in, and the
//! subscription's deltas apply from the next tick on.

use std::collections::HashMap;
use std::time::Instant;

use tickdb_engine::{Database, KeyBytes, RowId, TableChanges};

use crate::error::{ErrorKind, SqlError};
use crate::exec::{QueryLimits, eval};
use crate::subscribe::Subscription;

/// Rows a sliced scan makes room for when it starts.
const SCAN_ROWS_RESERVED: usize = 1 << 16;

/// A subscription's initial rows, being computed.
#[derive(Debug)]
pub struct InitialScan {
    sub: Subscription,
    state: State,
    /// The most rows one row's joins, or one tick's join delta, may read.
    rows_max: u64,
}

#[derive(Debug)]
enum State {
    Done(Vec<Vec<u8>>),
    Scanning {
        /// Every row id below it has been read.
        cursor: RowId,
        /// The result table's primary key constraint.
        pk: usize,
        /// The rows read so far that are in the result, by primary key, with how many
        /// times each is.
        found: HashMap<KeyBytes, (Vec<u8>, i64)>,
    },
    /// A sliced scan that has read every row.
    Scanned(HashMap<KeyBytes, (Vec<u8>, i64)>),
}

impl InitialScan {
    /// Starts computing `sub`'s initial rows: at once if the query fits in `slice`;
    /// else in slices, if its table has a primary key; else at once within `limits`.
    pub fn start(
        db: &Database,
        sub: &Subscription,
        slice: &QueryLimits,
        limits: &QueryLimits,
    ) -> Result<InitialScan, SqlError> {
        let table = db.table(sub.table());
        let state = match (sub.initial(db, slice), table.schema().primary_key) {
            (Ok(rows), _) => State::Done(rows),
            (Err(e), _) if e.kind != ErrorKind::Budget => return Err(e),
            // Room up front for the rows of most scans (growing the map moves every row
            // found so far within one slice), but not for every row of a big table,
            // since many clients may be starting subscriptions at once.
            (Err(_), Some(pk)) => {
                let room = table.len().min(SCAN_ROWS_RESERVED);
                State::Scanning { cursor: RowId(0), pk, found: HashMap::with_capacity(room) }
            }
            (Err(_), None) => State::Done(sub.initial(db, limits)?),
        };
        Ok(InitialScan { sub: sub.clone(), state, rows_max: limits.rows_max })
    }

    pub fn is_done(&self) -> bool {
        !matches!(self.state, State::Scanning { .. })
    }

    /// Reads on within `slice` (rows read and time); returns whether the scan is done.
    /// Fails if a row's joins read past the start's `limits.rows_max` rows.
    pub fn step(&mut self, db: &Database, slice: &QueryLimits) -> Result<bool, SqlError> {
        let State::Scanning { cursor, pk, found } = &mut self.state else { return Ok(true) };
        let table = db.table(self.sub.table());
        let started = Instant::now();
        let mut read = 0u64;
        for chunk in table.chunks().skip(cursor.chunk()) {
            for slot in chunk.occupied_slots() {
                let id = chunk.row_id(slot);
                if id < *cursor {
                    continue;
                }
                if read >= slice.rows_max || (read % 256 == 255 && started.elapsed() >= slice.time_max) {
                    return Ok(false);
                }
                read += 1;
                *cursor = RowId(id.0 + 1);
                let Some(row) = table.get(id) else { continue };
                let mut bytes = None;
                let count = match self.sub.join_plan() {
                    None => {
                        let filter = self.sub.filter();
                        i64::from(filter.is_none_or(|f| eval(f, std::slice::from_ref(&row)) == Some(true)))
                    }
                    Some(plan) => plan.count_of(db, bytes.insert(row.to_bytes()), self.rows_max)?,
                };
                if count > 0 {
                    let bytes = bytes.unwrap_or_else(|| row.to_bytes());
                    found.insert(table.unique_key_bytes_of_row(*pk, &bytes), (bytes, count));
                }
            }
        }
        self.state = State::Scanned(std::mem::take(found));
        Ok(true)
    }

    /// Folds in one tick's changes; `db` is as the tick left it. Fails as
    /// [`InitialScan::step`] does.
    pub fn apply(&mut self, db: &Database, changes: &[TableChanges]) -> Result<(), SqlError> {
        let State::Scanning { cursor, pk, found } = &mut self.state else { return Ok(()) };
        let table = db.table(self.sub.table());
        let key_of = |row: &[u8]| table.unique_key_bytes_of_row(*pk, row);
        // Every row of the result table the tick may have changed the count of: its
        // own changes and moves, and for a join, the rows the join's delta names.
        let mut touched: Vec<KeyBytes> = Vec::new();
        for changed in changes.iter().filter(|c| c.table == self.sub.table()) {
            let rows = changed.deletes.iter().chain(changed.inserts.iter());
            let rows = rows.chain(changed.updates_old.iter()).chain(changed.updates_new.iter());
            touched.extend(rows.chain(changed.moved.iter()).map(key_of));
        }
        if self.sub.join_plan().is_some() {
            let limits = QueryLimits { rows_max: self.rows_max, ..QueryLimits::default() };
            let delta = self.sub.delta(db, changes, &limits)?;
            let rows = delta.inserts.iter().chain(delta.deletes.iter());
            let rows = rows.chain(delta.updates.iter().flat_map(|(old, new)| [old, new]));
            touched.extend(rows.map(|r| key_of(r.as_ref())));
        }
        touched.sort();
        touched.dedup();
        for key in touched {
            found.remove(&key);
            let Some(id) = table.find_unique(*pk, &key).filter(|id| id < cursor) else { continue };
            let Some(row) = table.get(id) else { continue };
            let bytes = row.to_bytes();
            let count = match self.sub.join_plan() {
                None => i64::from(self.sub.matches(&bytes)),
                Some(plan) => plan.count_of(db, &bytes, self.rows_max)?,
            };
            if count > 0 {
                found.insert(key, (bytes, count));
            }
        }
        Ok(())
    }

    /// The initial rows, once done: a row in the result several times (through a
    /// join) is here as many times.
    pub fn rows(self) -> Option<Vec<Vec<u8>>> {
        let found = match self.state {
            State::Done(rows) => return Some(rows),
            State::Scanned(found) => found,
            State::Scanning { .. } => return None,
        };
        let mut rows = Vec::with_capacity(found.len());
        for (row, count) in found.into_values() {
            for _ in 1..count {
                rows.push(row.clone());
            }
            rows.push(row);
        }
        Some(rows)
    }
}
