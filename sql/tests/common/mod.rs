//! What the subscription tests share: results as multisets of encoded rows, and a
//! delta applied to one. Each test binary uses what it needs of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use tickdb_sql::Delta;

/// A result as a multiset of encoded rows.
pub type Rows = BTreeMap<Vec<u8>, usize>;

pub fn multiset(rows: impl IntoIterator<Item = Vec<u8>>) -> Rows {
    let mut out = Rows::new();
    for r in rows {
        *out.entry(r).or_insert(0) += 1;
    }
    out
}

/// Applies a tick's delta to a result; fails if it removes a row the result lacks.
pub fn apply(result: &mut Rows, delta: Delta<'_>) -> Result<(), String> {
    let removed = delta.deletes.iter().chain(delta.updates.iter().map(|(old, _)| old));
    for row in removed {
        let n = result.get_mut(row.as_ref()).ok_or("a delta removed a row that was not in the result")?;
        *n -= 1;
        if *n == 0 {
            result.remove(row.as_ref());
        }
    }
    for row in delta.inserts.into_iter().chain(delta.updates.into_iter().map(|(_, new)| new)) {
        *result.entry(row.into_owned()).or_insert(0) += 1;
    }
    Ok(())
}
