//! A database's module log: what its reducers log with the `log` crate, and what the
//! host says about the module (traps, instance replacements), in a bounded ring.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

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
/// that logs without end cannot exhaust the server's memory.
#[derive(Debug)]
pub struct ModuleLogs {
    capacity: usize,
    lines: Mutex<VecDeque<LogRecord>>,
}

impl ModuleLogs {
    pub fn new(capacity: usize) -> ModuleLogs {
        ModuleLogs { capacity: capacity.max(1), lines: Mutex::default() }
    }

    pub fn push(&self, record: LogRecord) {
        let mut lines = self.lines.lock().expect("log lock");
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(record);
    }

    /// The last `n` lines, oldest first.
    pub fn recent(&self, n: usize) -> Vec<LogRecord> {
        let lines = self.lines.lock().expect("log lock");
        lines.iter().skip(lines.len().saturating_sub(n)).cloned().collect()
    }

    /// The host's own line about the module.
    pub(crate) fn host(&self, level: u8, timestamp: Timestamp, reducer: Option<Arc<str>>, message: String) {
        self.push(LogRecord { timestamp, level, target: "tickdb".into(), reducer, message });
    }
}
