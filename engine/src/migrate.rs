//! Schema migration: what a republished module changes about a database's tables,
//! whether that can be done in place, and doing it.
//!
//! In place, with the data kept: new tables; new columns at the end of a table, each
//! with a default for the rows already stored; indexes added or removed; a table made
//! public or private. Everything else about an existing table is refused with the
//! reasons (whether or not it holds rows now), since it would lose or reinterpret
//! rows: a table removed, a column removed, renamed, retyped or moved, a column added
//! without a default, keys, unique constraints or auto-inc changed.
//! Reducers, schedules, tick systems and visibility rules may change freely: they
//! hold no data.
//!
//! A table keeps its id: new tables take the next ids, whatever order the new module
//! declares them in, so the commit log's records stay meaningful.

use tickdb_wasm_abi::{ModuleDef, TableSchema};

use crate::db::Database;
use crate::error::Error;
use crate::ids::TableId;

/// Why a module cannot replace a database's in place: every reason found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the new module's schema is not compatible with the database's: {}", reasons.join("; "))]
pub struct Incompatible {
    pub reasons: Vec<String>,
}

/// The changes that bring a database's tables to a new module's; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Existing tables whose schema changes: the new schema, and the encoded defaults
    /// appended to every stored row (empty if no column is added).
    alter: Vec<(TableId, TableSchema, Vec<u8>)>,
    /// New tables, in the new module's order; each takes the next id.
    create: Vec<TableSchema>,
    /// What changes, one line each, for the publisher.
    changes: Vec<String>,
}

impl Migration {
    /// Plans the migration of `db`'s tables to `new`'s. `new` must be validated.
    pub fn plan(db: &Database, new: &ModuleDef) -> Result<Migration, Incompatible> {
        let mut reasons = Vec::new();
        let mut migration = Migration { alter: Vec::new(), create: Vec::new(), changes: Vec::new() };
        for table in db.tables() {
            let old = table.schema();
            let Some(next) = new.table(&old.name) else {
                reasons.push(format!(
                    "table `{}` is removed (its {} rows would be lost)",
                    old.name,
                    table.len()
                ));
                continue;
            };
            match compare(old, next) {
                Err(mut why) => reasons.append(&mut why),
                Ok((_, changes)) if changes.is_empty() => {}
                Ok((appended, mut changes)) => {
                    migration.alter.push((table.id(), next.clone(), appended));
                    migration.changes.append(&mut changes);
                }
            }
        }
        for schema in &new.tables {
            if db.table_id(&schema.name).is_err() {
                migration.changes.push(format!("table `{}` is added", schema.name));
                migration.create.push(schema.clone());
            }
        }
        if reasons.is_empty() { Ok(migration) } else { Err(Incompatible { reasons }) }
    }

    /// What the migration changes, one line each; empty if the tables stay as they are.
    pub fn changes(&self) -> &[String] {
        &self.changes
    }

    /// The table names in id order once the migration is applied.
    pub fn table_order(&self, db: &Database) -> Vec<String> {
        let old = db.tables().map(|t| t.name().to_string());
        old.chain(self.create.iter().map(|s| s.name.clone())).collect()
    }

    /// Applies the migration to `db` (which must be the database it was planned for):
    /// altered tables are rebuilt with every row, defaults appended; new tables are
    /// created empty. Not a transaction: run it between ticks, and persist the result
    /// (a snapshot) before the log records anything after it.
    pub fn apply(self, db: &mut Database) -> Result<(), Error> {
        for (id, schema, appended) in self.alter {
            db.rebuild_table(id, schema, &appended)?;
        }
        for schema in self.create {
            db.create_table(schema)?;
        }
        Ok(())
    }
}

/// Compares a table's schema with its next one: the defaults appended to each stored
/// row and the changes, or why the change cannot be made in place.
fn compare(old: &TableSchema, next: &TableSchema) -> Result<(Vec<u8>, Vec<String>), Vec<String>> {
    let table = &old.name;
    let mut why = Vec::new();
    let mut changes = Vec::new();
    for (i, column) in old.columns.iter().enumerate() {
        match next.columns.get(i) {
            Some(c) if c.name == column.name && c.ty == column.ty => {}
            Some(c) if c.name == column.name => why.push(format!(
                "column `{table}.{}` changes type from {:?} to {:?}",
                column.name, column.ty, c.ty
            )),
            _ if next.column(&column.name).is_some() => why.push(format!(
                "column `{table}.{}` moves; new columns go after the existing ones",
                column.name
            )),
            _ => why.push(format!("column `{table}.{}` is removed (its values would be lost)", column.name)),
        }
    }
    let mut appended = Vec::new();
    for column in next.columns.iter().skip(old.columns.len()) {
        if old.column(&column.name).is_some() {
            continue; // Reported above as moved.
        }
        match &column.default {
            Some(value) => {
                appended.extend_from_slice(value);
                changes.push(format!("column `{table}.{}` is added", column.name));
            }
            None => why.push(format!(
                "column `{table}.{}` is added without a default for the rows already stored; \
                 give it one with #[default(...)]",
                column.name
            )),
        }
    }
    if old.unique != next.unique || old.primary_key != next.primary_key {
        why.push(format!("the primary key or unique constraints of `{table}` change"));
    }
    if old.auto_inc != next.auto_inc {
        why.push(format!("the auto_inc columns of `{table}` change"));
    }
    if !why.is_empty() {
        return Err(why);
    }
    for index in &next.indexes {
        match old.indexes.iter().find(|i| i.name == index.name) {
            None => changes.push(format!(
                "index `{}` on {} is added",
                index.name,
                next.describe_columns(&index.columns)
            )),
            Some(i) if i != index => changes.push(format!("index `{}` of `{table}` changes", index.name)),
            Some(_) => {}
        }
    }
    for index in old.indexes.iter().filter(|i| !next.indexes.iter().any(|n| n.name == i.name)) {
        changes.push(format!("index `{}` of `{table}` is removed", index.name));
    }
    if old.access != next.access {
        changes.push(format!("table `{table}` becomes {:?}", next.access).to_lowercase());
    }
    let defaults_changed = old.columns.iter().zip(&next.columns).any(|(o, n)| o.default != n.default);
    if defaults_changed {
        changes.push(format!("column defaults of `{table}` change"));
    }
    if changes.is_empty() && old != next {
        // Nothing of substance, but the schema differs (indexes listed in another
        // order): the table takes the new schema all the same.
        changes.push(format!("the indexes of `{table}` are listed in another order"));
    }
    Ok((appended, changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use tickdb_wasm_abi::{Value, ValueType};

    fn player() -> tickdb_wasm_abi::TableSchemaBuilder {
        TableSchema::builder("player")
            .column("id", ValueType::U64)
            .column("name", ValueType::String)
            .primary_key(["id"])
            .auto_inc("id")
    }

    fn def(tables: Vec<TableSchema>) -> ModuleDef {
        ModuleDef { tables, ..ModuleDef::default() }
    }

    fn db_with_players(names: &[&str]) -> Database {
        let mut db = Database::new(EngineConfig::default()).unwrap();
        let id = db.create_table(player().build().unwrap()).unwrap();
        let mut tx = db.begin();
        for name in names {
            tx.insert_values(id, &[Value::U64(0), Value::string(*name)]).unwrap();
        }
        tx.commit();
        db
    }

    #[test]
    fn added_columns_take_their_defaults_and_tables_keep_their_ids() {
        let mut db = db_with_players(&["ada", "bo"]);
        let level = 7u32.to_le_bytes().to_vec();
        let next = player()
            .column("level", ValueType::U32)
            .column_default("level", level)
            .btree_index(["name"])
            .public()
            .build()
            .unwrap();
        let guild = TableSchema::builder("guild").column("id", ValueType::U64).build().unwrap();
        // The new module declares `guild` first: it still takes the next id.
        let migration = Migration::plan(&db, &def(vec![guild, next])).unwrap();
        assert_eq!(migration.changes().len(), 4, "{:?}", migration.changes());
        assert_eq!(migration.table_order(&db), ["player", "guild"]);
        migration.apply(&mut db).unwrap();
        assert_eq!(db.table_id("guild").unwrap(), TableId(1));
        let players = db.table(TableId(0));
        let mut rows: Vec<Vec<Value>> = players.iter().map(|r| r.to_values()).collect();
        rows.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(rows[0], [Value::U64(1), Value::string("ada"), Value::U32(7)]);
        assert_eq!(rows[1], [Value::U64(2), Value::string("bo"), Value::U32(7)]);
        let by_name = players.btree_index("player_name_idx").unwrap();
        assert_eq!(players.index_prefix(by_name, &[]).count(), 2, "the new index holds the stored rows");
        // The sequence goes on after the stored rows.
        let mut tx = db.begin();
        let id = tx.insert_values(TableId(0), &[Value::U64(0), Value::string("cy"), Value::U32(1)]).unwrap();
        assert_eq!(tx.table(TableId(0)).get(id).unwrap().value(tickdb_wasm_abi::ColId(0)), Value::U64(3));
    }

    #[test]
    fn changes_that_would_lose_or_reinterpret_rows_are_refused_with_every_reason() {
        let db = db_with_players(&["ada"]);
        let retyped = TableSchema::builder("player")
            .column("id", ValueType::U64)
            .column("name", ValueType::U32)
            .column("hp", ValueType::U32)
            .primary_key(["name"])
            .build()
            .unwrap();
        let err = Migration::plan(&db, &def(vec![retyped])).unwrap_err();
        let all = err.to_string();
        assert!(all.contains("`player.name` changes type"), "{all}");
        assert!(all.contains("`player.hp` is added without a default"), "{all}");
        assert!(all.contains("primary key"), "{all}");
        assert!(all.contains("auto_inc"), "{all}");
        let err = Migration::plan(&db, &def(vec![])).unwrap_err();
        assert_eq!(err.reasons, ["table `player` is removed (its 1 rows would be lost)"]);
        let moved = TableSchema::builder("player")
            .column("name", ValueType::String)
            .column("id", ValueType::U64)
            .build()
            .unwrap();
        let err = Migration::plan(&db, &def(vec![moved])).unwrap_err();
        assert!(err.to_string().contains("`player.id` moves"), "{err}");
    }

    #[test]
    fn indexes_listed_in_another_order_take_the_new_schema() {
        let with = |names: [&str; 2]| {
            let mut builder = player();
            for name in names {
                builder = builder.named_btree_index(name, [name.strip_suffix("_idx").unwrap()]);
            }
            builder.build().unwrap()
        };
        let mut db = Database::new(EngineConfig::default()).unwrap();
        db.create_table(with(["id_idx", "name_idx"])).unwrap();
        let next = with(["name_idx", "id_idx"]);
        let migration = Migration::plan(&db, &def(vec![next.clone()])).unwrap();
        assert_eq!(migration.changes().len(), 1, "{:?}", migration.changes());
        migration.apply(&mut db).unwrap();
        assert_eq!(**db.table(TableId(0)).schema(), next, "the module's schema check then passes");
    }

    #[test]
    fn the_same_schema_plans_no_change() {
        let db = db_with_players(&["ada"]);
        let migration = Migration::plan(&db, &def(vec![player().build().unwrap()])).unwrap();
        assert!(migration.changes().is_empty());
    }
}
