//! A new subscription's initial rows without holding the tick loop: a query that reads
//! through an index (or joins) is answered at once, within its [`QueryLimits`]; a
//! query that must scan its table is answered in slices, each within a budget, with
//! the database moving on between them.
//!
//! A sliced scan reads the table in row-id order and remembers how far it got. Each
//! tick's changes are folded into the rows found so far: a row the scan has passed is
//! added, changed or removed as the tick says; a row it has not reached yet is left
//! for the scan, which will read it as it then is. A row deleted and inserted back
//! unchanged in another slot is no change to subscribers, but the tick reports it as
//! moved, since it may have crossed the scan. Rows are told apart by primary key,
//! so a sliced scan needs one; a table without a primary key is scanned at once.
//! When the scan ends, its rows are the result as of the last tick folded in, and the
//! subscription's deltas apply from the next tick on.

use std::collections::HashMap;
use std::time::Instant;

use tickdb_engine::{Database, KeyBytes, RowId, TableChanges};
use tickdb_wasm_abi::{Value, decode_exact};

use crate::error::SqlError;
use crate::exec::{QueryLimits, eval};
use crate::plan::{Access, plan};
use crate::subscribe::Subscription;

/// A subscription's initial rows, being computed.
#[derive(Debug)]
pub struct InitialScan {
    sub: Subscription,
    state: State,
}

#[derive(Debug)]
enum State {
    Done(Vec<Vec<u8>>),
    /// A sliced scan that has read every row: the matching rows by primary key.
    Scanned(HashMap<KeyBytes, Vec<u8>>),
    Scanning {
        /// Every row id below it has been read.
        cursor: RowId,
        /// The primary key constraint.
        pk: usize,
        /// The matching rows read so far, by primary key.
        found: HashMap<KeyBytes, Vec<u8>>,
    },
}

impl InitialScan {
    /// Starts computing `sub`'s initial rows: at once (within `limits`) unless the
    /// query scans a table with a primary key.
    pub fn start(db: &Database, sub: &Subscription, limits: &QueryLimits) -> Result<InitialScan, SqlError> {
        let table = db.table(sub.table());
        let schema = table.schema();
        let scans = sub.join_free() && plan(&[&**schema], sub.filter()).first == Access::Scan;
        let state = match schema.primary_key {
            // Room for every row up front: growing the map mid-scan would move every row
            // found so far within one slice.
            Some(pk) if scans => {
                State::Scanning { cursor: RowId(0), pk, found: HashMap::with_capacity(table.len()) }
            }
            _ => State::Done(sub.initial(db, limits)?),
        };
        Ok(InitialScan { sub: sub.clone(), state })
    }

    pub fn is_done(&self) -> bool {
        !matches!(self.state, State::Scanning { .. })
    }

    /// Reads on within `slice` (rows read and time); returns whether the scan is done.
    pub fn step(&mut self, db: &Database, slice: &QueryLimits) -> bool {
        let State::Scanning { cursor, pk, found } = &mut self.state else { return true };
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
                    return false;
                }
                read += 1;
                *cursor = RowId(id.0 + 1);
                let Some(row) = table.get(id) else { continue };
                let matches =
                    self.sub.filter().is_none_or(|f| eval(f, std::slice::from_ref(&row)) == Some(true));
                if matches {
                    let pk_columns = &table.schema().unique[*pk].columns;
                    let values: Vec<Value> = pk_columns.iter().map(|c| row.value(*c)).collect();
                    let key = table.key_from_values(pk_columns, &values).expect("a row's own key");
                    found.insert(key, row.to_bytes());
                }
            }
        }
        self.state = State::Scanned(std::mem::take(found));
        true
    }

    /// Folds in one tick's changes; `db` is as the tick left it.
    pub fn apply(&mut self, db: &Database, changes: &[TableChanges]) {
        let State::Scanning { cursor, pk, found } = &mut self.state else { return };
        let table = db.table(self.sub.table());
        let pk_columns = &table.schema().unique[*pk].columns;
        let key_of = |row: &[u8]| -> Option<KeyBytes> {
            let Ok(Value::Product(values)) = decode_exact(self.sub.row_type(), row) else { return None };
            let key: Vec<Value> = pk_columns.iter().map(|c| values[c.index()].clone()).collect();
            table.key_from_values(pk_columns, &key).ok()
        };
        for changed in changes.iter().filter(|c| c.table == self.sub.table()) {
            // Rows that left, changed or moved first, then the rows as they are now:
            // where they are now decides whether the scan has passed them.
            for old in changed.deletes.iter().chain(changed.updates_old.iter()).chain(changed.moved.iter()) {
                if let Some(key) = key_of(old) {
                    found.remove(&key);
                }
            }
            for new in changed.inserts.iter().chain(changed.updates_new.iter()).chain(changed.moved.iter()) {
                let Some(key) = key_of(new) else { continue };
                let passed = table.find_unique(*pk, &key).is_some_and(|id| id < *cursor);
                if passed && self.sub.matches(new) {
                    found.insert(key, new.to_vec());
                }
            }
        }
    }

    /// The initial rows, once done.
    pub fn rows(self) -> Option<Vec<Vec<u8>>> {
        match self.state {
            State::Done(rows) => Some(rows),
            State::Scanned(found) => Some(found.into_values().collect()),
            State::Scanning { .. } => None,
        }
    }
}
