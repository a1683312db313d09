//! Every limit the engine enforces, in one place, with defaults. Each has a test that
//! goes past it and gets a clean error.

use std::time::Duration;

/// Limits and rates of one database.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The largest encoded row accepted by an insert or update.
    pub row_bytes_max: usize,
    /// How many rows one table may hold (row ids are 32-bit).
    pub table_rows_max: usize,
    /// Work items that may wait in the inbox; past it, submitting fails with
    /// [`InboxError::Full`](crate::tick::InboxError::Full).
    pub inbox_capacity: usize,
    /// The most work items one tick drains; the rest wait for the next tick, so one
    /// burst cannot make a tick arbitrarily long.
    pub tick_work_max: usize,
    /// Period of the fixed-rate tick systems, if the database has any.
    pub fixed_tick_interval: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            row_bytes_max: 1 << 20,
            table_rows_max: u32::MAX as usize,
            inbox_capacity: 16 * 1024,
            tick_work_max: 4096,
            fixed_tick_interval: None,
        }
    }
}

/// Why an [`EngineConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid engine config: {0}")]
pub struct ConfigError(pub &'static str);

impl EngineConfig {
    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks = [
            (self.row_bytes_max == 0, "row_bytes_max must be at least 1"),
            (
                self.row_bytes_max > u32::MAX as usize,
                "row_bytes_max must fit in 32 bits (row offsets are u32)",
            ),
            (self.table_rows_max == 0, "table_rows_max must be at least 1"),
            (self.inbox_capacity == 0, "inbox_capacity must be at least 1"),
            (self.tick_work_max == 0, "tick_work_max must be at least 1"),
            (self.fixed_tick_interval.is_some_and(|i| i.is_zero()), "fixed_tick_interval must not be zero"),
        ];
        match checks.into_iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err(ConfigError(why)),
            None => Ok(()),
        }
    }
}
