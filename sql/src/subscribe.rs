//! Subscriptions over one table: `SELECT * FROM t [WHERE ...]`, kept up to date from
//! each tick's changes alone. A changed row is checked against the condition as it
//! was and as it is: it enters the result, leaves it, or changes within it. The
//! query is never run again.
//!
//! Joins (semijoins), sharing between subscribers, grouping of `col = literal`
//! subscriptions and area-of-interest indexes are being built.

use tickdb_engine::{Database, TableChanges, TableId};
use tickdb_wasm_abi::{ProductType, Value, ValueType, decode_exact};

use crate::bind::{BoundQuery, Output, Pred};
use crate::error::{ErrorKind, SqlError};
use crate::exec::{Decoded, QueryLimits, eval, matching_rows};

/// A subscription query, bound and ready to evaluate.
#[derive(Debug, Clone)]
pub struct Subscription {
    table: TableId,
    filter: Option<Pred>,
    row_type: ValueType,
}

/// What a tick did to a subscription's result. Rows are in the table's row encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub inserts: Vec<Vec<u8>>,
    pub deletes: Vec<Vec<u8>>,
    /// Rows that stayed in the result with new values: (old, new).
    pub updates: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.deletes.is_empty() && self.updates.is_empty()
    }
}

impl Subscription {
    /// Binds a subscription query: `SELECT * FROM t [WHERE ...]`.
    pub fn new(db: &Database, sql: &str) -> Result<Subscription, SqlError> {
        let bound: BoundQuery = crate::prepare(db, sql)?;
        let unsupported = |what: &str| {
            SqlError::new(
                ErrorKind::Unsupported,
                format!("subscriptions {what} (SELECT * FROM t WHERE ...)"),
                None,
            )
        };
        let [table] = bound.tables[..] else {
            return Err(unsupported("over joins are not supported yet"));
        };
        if bound.limit.is_some() || !bound.order_by.is_empty() {
            return Err(unsupported("have no ORDER BY or LIMIT"));
        }
        let schema = db.table(table).schema();
        let all_columns = match &bound.output {
            Output::Columns(columns) => {
                columns.len() == schema.columns.len()
                    && columns.iter().enumerate().all(|(i, (_, c))| c.col.index() == i)
            }
            Output::Count(_) => false,
        };
        if !all_columns {
            return Err(unsupported("return whole rows"));
        }
        let row_type = ValueType::Product(ProductType::new(
            schema.columns.iter().map(|c| (c.name.clone(), c.ty.clone())),
        ));
        Ok(Subscription { table, filter: bound.filter, row_type })
    }

    pub fn table(&self) -> TableId {
        self.table
    }

    /// The rows the query returns now, encoded.
    pub fn initial(&self, db: &Database, limits: &QueryLimits) -> Result<Vec<Vec<u8>>, SqlError> {
        let t = db.table(self.table);
        let ids = matching_rows(db, self.table, self.filter.as_ref(), limits)?;
        Ok(ids.into_iter().filter_map(|id| t.get(id).map(|r| r.to_bytes())).collect())
    }

    /// Whether an encoded row of the table is in the result.
    fn matches(&self, row: &[u8]) -> bool {
        let Some(filter) = &self.filter else {
            return true;
        };
        match decode_exact(&self.row_type, row) {
            Ok(Value::Product(values)) => eval(filter, &Decoded(&values)) == Some(true),
            // Rows in a changeset are the table's own, always valid.
            _ => false,
        }
    }

    /// The subscription's delta for one tick's changes to its table.
    pub fn delta(&self, changes: &TableChanges) -> Delta {
        let mut delta = Delta::default();
        if changes.table != self.table {
            return delta;
        }
        delta.inserts.extend(changes.inserts.iter().filter(|r| self.matches(r)).map(<[u8]>::to_vec));
        delta.deletes.extend(changes.deletes.iter().filter(|r| self.matches(r)).map(<[u8]>::to_vec));
        for (old, new) in changes.updates() {
            match (self.matches(old), self.matches(new)) {
                (true, true) => delta.updates.push((old.to_vec(), new.to_vec())),
                (true, false) => delta.deletes.push(old.to_vec()),
                (false, true) => delta.inserts.push(new.to_vec()),
                (false, false) => {}
            }
        }
        delta
    }
}
