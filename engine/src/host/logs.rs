//! A database's module log: what its reducers log with the `log` crate, and what the
//! host says about the module (traps, instance replacements), in a bounded ring.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tickdb_wasm_abi::Timestamp;

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The time of the call that logged it.
    pub timestamp: Timestamp,
    /// 1 error, 2 warn, 3 info, 4 debug, 5 trace (the `log` crate's numbering).
    pub level: u8,
    /// The module path of the code that logged it; `tickdb` for the host's own lines.
    pub target: String,
    /// The reducer that was running, if any.
    pub reducer: Option<Arc<str>>,
    pub message: String,
}

impl LogRecord {
    pub fn level_name(&self) -> &'static str {
        match self.level {
            1 => "ERROR",
            2 => "WARN",
            3 => "INFO",
            4 => "DEBUG",
            _ => "TRACE",
        }
    }
}

/// The last `capacity` log lines of one database. Older lines are dropped, so a module
/// that logs without end cannot exhaust the server's memory. Lines are numbered from
/// 0 in the order they were logged, so a reader can follow the log ([`ModuleLogs::since`]).
#[derive(Debug)]
pub struct ModuleLogs {
    capacity: usize,
    lines: Mutex<Lines>,
    logged: Condvar,
}

#[derive(Debug, Default)]
struct Lines {
    ring: VecDeque<LogRecord>,
    /// Lines ever logged: the number the next one gets.
    next: u64,
}

impl ModuleLogs {
    pub fn new(capacity: usize) -> ModuleLogs {
        ModuleLogs { capacity: capacity.max(1), lines: Mutex::default(), logged: Condvar::new() }
    }

    pub fn push(&self, record: LogRecord) {
        let mut lines = self.lines.lock().expect("log lock");
        if lines.ring.len() == self.capacity {
            lines.ring.pop_front();
        }
        lines.ring.push_back(record);
        lines.next += 1;
        self.logged.notify_all();
    }

    /// The last `n` lines, oldest first.
    pub fn recent(&self, n: usize) -> Vec<LogRecord> {
        self.last(n).1
    }

    /// The last `n` lines, oldest first, with the first one's number.
    pub fn last(&self, n: usize) -> (u64, Vec<LogRecord>) {
        let lines = self.lines.lock().expect("log lock");
        let skip = lines.ring.len().saturating_sub(n);
        (lines.next - (lines.ring.len() - skip) as u64, lines.ring.iter().skip(skip).cloned().collect())
    }

    /// The lines numbered `from` on (those still kept: older ones were dropped), at
    /// most `n`, with the first one's number; waits up to `wait` for one if there is
    /// none yet.
    pub fn since(&self, from: u64, n: usize, wait: Duration) -> (u64, Vec<LogRecord>) {
        let lines = self.lines.lock().expect("log lock");
        let (lines, _) = self.logged.wait_timeout_while(lines, wait, |l| l.next <= from).expect("log lock");
        let oldest = lines.next - lines.ring.len() as u64;
        let first = from.clamp(oldest, lines.next);
        let records = lines.ring.iter().skip((first - oldest) as usize).take(n).cloned().collect();
        (first, records)
    }

    /// The host's own line about the module.
    pub(crate) fn host(&self, level: u8, timestamp: Timestamp, reducer: Option<Arc<str>>, message: String) {
        self.push(LogRecord { timestamp, level, target: "tickdb".into(), reducer, message });
    }
}
