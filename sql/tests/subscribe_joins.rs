//! Subscriptions over joins: for random schemas, data, join queries and ticks, applying
//! each tick's delta to the initial result always gives what running the query on the
//! new state gives; and joins that cannot be kept up to date incrementally are refused.

mod common;

use common::{apply, multiset};
use proptest::prelude::*;
use tickdb_engine::{Database, EngineConfig, TableChanges, TableId};
use tickdb_sql::{ErrorKind, QueryLimits, Subscription, SubscriptionSet};
use tickdb_wasm_abi::{TableSchema, Value, ValueType};

/// The type of a table's free column `d`.
#[derive(Debug, Clone, Copy)]
enum DType {
    U8,
    I32,
    Str,
    OptI32,
}

impl DType {
    fn ty(self) -> ValueType {
        match self {
            DType::U8 => ValueType::U8,
            DType::I32 => ValueType::I32,
            DType::Str => ValueType::String,
            DType::OptI32 => ValueType::option(ValueType::I32),
        }
    }

    fn value(self, n: u8) -> Value {
        match self {
            DType::U8 => Value::U8(n),
            DType::I32 => Value::I32(n as i32 - 2),
            DType::Str => Value::string(["x", "y", "z", "xy"][n as usize % 4]),
            DType::OptI32 if n == 0 => Value::Option(None),
            DType::OptI32 => Value::Option(Some(Box::new(Value::I32(n as i32)))),
        }
    }

    /// A condition on `d` of table `t` true for some rows and not others.
    fn condition(self, t: usize, n: u8) -> String {
        match self {
            DType::U8 => format!("t{t}.d < {n}"),
            DType::I32 => format!("t{t}.d >= {}", n as i32 - 2),
            DType::Str => format!("t{t}.d IN ('x', 'xy')"),
            DType::OptI32 => format!("t{t}.d IS NULL OR t{t}.d = {n}"),
        }
    }
}

/// One table: `t{i}(id u32 pk, a u8, b option<u8>, c i32, d ...)`, `a` unique or
/// indexed, `b` indexed.
#[derive(Debug, Clone)]
struct TableDef {
    a_unique: bool,
    d: DType,
}

fn table_def() -> impl Strategy<Value = TableDef> {
    let d = prop_oneof![Just(DType::U8), Just(DType::I32), Just(DType::Str), Just(DType::OptI32)];
    (proptest::bool::weighted(0.3), d).prop_map(|(a_unique, d)| TableDef { a_unique, d })
}

fn create(defs: &[TableDef]) -> (Database, Vec<TableId>) {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let ids = defs
        .iter()
        .enumerate()
        .map(|(i, def)| {
            let builder = TableSchema::builder(format!("t{i}"))
                .column("id", ValueType::U32)
                .column("a", ValueType::U8)
                .column("b", ValueType::option(ValueType::U8))
                .column("c", ValueType::I32)
                .column("d", def.d.ty())
                .primary_key(["id"])
                .btree_index(["b"]);
            let builder = if def.a_unique { builder.unique(["a"]) } else { builder.btree_index(["a"]) };
            db.create_table(builder.build().unwrap()).unwrap()
        })
        .collect();
    (db, ids)
}

#[derive(Debug, Clone)]
enum Op {
    Upsert { table: usize, id: u32, a: u8, b: Option<u8>, c: i32, d: u8 },
    Delete { table: usize, id: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..10u32, 0..4u8, proptest::option::of(0..3u8), -3..3i32, 0..4u8)
            .prop_map(|(table, id, a, b, c, d)| Op::Upsert { table, id, a, b, c, d }),
        1 => (0..3usize, 0..10u32).prop_map(|(table, id)| Op::Delete { table, id }),
    ]
}

/// A join query: the tables, how each joins one before it, conditions, the result table.
#[derive(Debug, Clone)]
struct QueryDef {
    tables: usize,
    /// For each table after the first: the earlier table and the columns joined on.
    joins: Vec<(usize, usize)>,
    conditions: Vec<(usize, u8, u8)>,
    result: usize,
}

fn query_def() -> impl Strategy<Value = QueryDef> {
    (2..=3usize)
        .prop_flat_map(|tables| {
            let joins = (1..tables).map(|k| (0..k, 0..5usize)).collect::<Vec<_>>();
            let conditions = proptest::collection::vec((0..tables, 0..4u8, 0..4u8), 0..3);
            (Just(tables), joins, conditions, 0..tables)
        })
        .prop_map(|(tables, joins, conditions, result)| QueryDef { tables, joins, conditions, result })
}

impl QueryDef {
    fn sql(&self, defs: &[TableDef]) -> String {
        let mut sql = format!("SELECT t{}.* FROM t0", self.result);
        for (k, &(earlier, kind)) in self.joins.iter().enumerate() {
            // Same columns, or `a` (u8) with `b` (an option of u8) either way.
            let (left, right) = [("a", "a"), ("b", "b"), ("id", "id"), ("a", "b"), ("b", "a")][kind];
            sql += &format!(" JOIN t{} ON t{earlier}.{left} = t{}.{right}", k + 1, k + 1);
        }
        let conditions: Vec<String> = self
            .conditions
            .iter()
            .map(|&(t, which, n)| match which {
                0 => format!("t{t}.c > {}", n as i32 - 2),
                1 => format!("t{t}.a IN ({n}, {})", (n + 1) % 4),
                2 => format!("NOT t{t}.b IS NULL AND t{t}.b <> {n}"),
                _ => format!("({})", defs[t].d.condition(t, n)),
            })
            .collect();
        if !conditions.is_empty() {
            sql += " WHERE ";
            sql += &conditions.join(" AND ");
        }
        sql
    }
}

fn values(def: &TableDef, id: u32, a: u8, b: Option<u8>, c: i32, d: u8) -> Vec<Value> {
    let b = Value::Option(b.map(|b| Box::new(Value::U8(b))));
    vec![Value::U32(id), Value::U8(a), b, Value::I32(c), def.d.value(d)]
}

/// One tick of operations as one transaction (a write a unique `a` refuses is left
/// out); its changes.
fn tick(db: &mut Database, tables: &[TableId], defs: &[TableDef], ops: &[Op]) -> Vec<TableChanges> {
    let mut tx = db.begin();
    for op in ops {
        match *op {
            Op::Upsert { table, id, a, b, c, d } if table < tables.len() => {
                let (t, row) = (tables[table], values(&defs[table], id, a, b, c, d));
                let _refused = match tx.find_by_primary_key(t, &[Value::U32(id)]).unwrap() {
                    Some(existing) => tx.update_values(t, existing, &row).err(),
                    None => tx.insert_values(t, &row).err(),
                };
            }
            Op::Delete { table, id } if table < tables.len() => {
                let t = tables[table];
                if let Some(existing) = tx.find_by_primary_key(t, &[Value::U32(id)]).unwrap() {
                    tx.delete(t, existing).unwrap();
                }
            }
            _ => {}
        }
    }
    tx.commit().table_changes(db)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn join_deltas_keep_results_equal_to_rerunning_the_query(
        defs in proptest::collection::vec(table_def(), 3),
        query in query_def(),
        initial in proptest::collection::vec(op(), 0..40),
        ticks in proptest::collection::vec(proptest::collection::vec(op(), 0..12), 1..6),
    ) {
        let defs = &defs[..query.tables];
        let (mut db, tables) = create(defs);
        tick(&mut db, &tables, defs, &initial);
        let sql = query.sql(defs);
        let sub = Subscription::new(&db, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let limits = QueryLimits::default();
        let mut result = multiset(sub.initial(&db, &limits).unwrap());
        for ops in &ticks {
            let changes = tick(&mut db, &tables, defs, ops);
            let delta = sub.delta(&db, &changes, &QueryLimits::default()).unwrap();
            apply(&mut result, delta).map_err(TestCaseError::fail)?;
            let rerun = multiset(sub.initial(&db, &limits).unwrap());
            prop_assert_eq!(&result, &rerun, "{}", sql);
        }
    }
}

fn guild_db() -> (Database, TableId, TableId) {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let player = TableSchema::builder("player")
        .column("id", ValueType::U64)
        .column("name", ValueType::String)
        .column("level", ValueType::U32)
        .primary_key(["id"])
        .build()
        .unwrap();
    let member = TableSchema::builder("guild_member")
        .column("player_id", ValueType::U64)
        .column("guild", ValueType::U32)
        .column("rank", ValueType::U8)
        .unique(["player_id"])
        .btree_index(["guild"])
        .build()
        .unwrap();
    let (p, m) = (db.create_table(player).unwrap(), db.create_table(member).unwrap());
    (db, p, m)
}

#[test]
fn a_guild_roster_follows_members_and_players() {
    let (mut db, p, m) = guild_db();
    let mut tx = db.begin();
    for id in 0..6u64 {
        tx.insert_values(p, &[Value::U64(id), Value::string(format!("p{id}")), Value::U32(1)]).unwrap();
        tx.insert_values(m, &[Value::U64(id), Value::U32(id as u32 % 2 + 7), Value::U8(0)]).unwrap();
    }
    tx.commit();
    let sql = "SELECT p.* FROM player p JOIN guild_member m ON p.id = m.player_id WHERE m.guild = 7";
    let sub = Subscription::new(&db, sql).unwrap();
    assert_eq!(sub.tables(), &[p, m]);
    assert_eq!(sub.initial(&db, &QueryLimits::default()).unwrap().len(), 3);
    let mut set = SubscriptionSet::default();
    let id = set.subscribe(&db, sql).unwrap();

    // Player 1 joins guild 7, player 0 levels up, player 2 leaves: one insert, one
    // update, one delete; player 3 (guild 8) levelling up is not the roster's business.
    let mut tx = db.begin();
    let member = |tx: &tickdb_engine::Tx<'_>, player: u64| {
        let table = tx.table(m);
        let key = table.key_from_values(&[tickdb_wasm_abi::ColId(0)], &[Value::U64(player)]).unwrap();
        table.find_unique(0, &key).unwrap()
    };
    let one = member(&tx, 1);
    tx.update_values(m, one, &[Value::U64(1), Value::U32(7), Value::U8(0)]).unwrap();
    let two = member(&tx, 2);
    tx.delete(m, two).unwrap();
    for (player, level) in [(0u64, 2u32), (3, 2)] {
        let row = tx.find_by_primary_key(p, &[Value::U64(player)]).unwrap().unwrap();
        tx.update_values(
            p,
            row,
            &[Value::U64(player), Value::string(format!("p{player}")), Value::U32(level)],
        )
        .unwrap();
    }
    let changes = tx.commit().table_changes(&db);
    let deltas = set.evaluate(&db, &changes).deltas;
    let delta = &deltas[&id];
    assert_eq!((delta.inserts.len(), delta.updates.len(), delta.deletes.len()), (1, 1, 1), "{delta:?}");
}

#[test]
fn joins_that_cannot_be_kept_up_to_date_are_refused() {
    let (db, _, _) = guild_db();
    let cases = [
        // `level` has no index: a change to a member could not find its player.
        ("SELECT p.* FROM player p JOIN guild_member m ON p.level = m.guild", "`player.level`"),
        // Nor from this side.
        ("SELECT m.* FROM guild_member m JOIN player p ON m.guild = p.level", "`player.level`"),
        // No equality joins the tables.
        ("SELECT p.* FROM player p JOIN guild_member m ON p.id > m.player_id", "equality"),
    ];
    for (sql, names) in cases {
        let e = Subscription::new(&db, sql).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported, "{sql}");
        assert!(e.message.contains(names), "{sql}: {e}");
    }
}

/// Conditions are tracked one by one however many there are: a member joining the
/// guild is checked against the player's level, the 37th condition, too.
#[test]
fn every_condition_of_a_long_join_is_checked() {
    let (mut db, p, m) = guild_db();
    let mut tx = db.begin();
    tx.insert_values(p, &[Value::U64(1), Value::string("low"), Value::U32(1)]).unwrap();
    tx.insert_values(p, &[Value::U64(2), Value::string("high"), Value::U32(9)]).unwrap();
    tx.commit();
    let padding = vec!["m.rank < 100"; 35].join(" AND ");
    let sql = format!(
        "SELECT p.* FROM player p JOIN guild_member m ON p.id = m.player_id WHERE {padding} AND p.level < 5"
    );
    let sub = Subscription::new(&db, &sql).unwrap();
    let mut tx = db.begin();
    for id in [1u64, 2] {
        tx.insert_values(m, &[Value::U64(id), Value::U32(7), Value::U8(0)]).unwrap();
    }
    let changes = tx.commit().table_changes(&db);
    let delta = sub.delta(&db, &changes, &QueryLimits::default()).unwrap();
    assert_eq!(delta.inserts.len(), 1, "only the low-level player joins the result");
    let inserts: Vec<Vec<u8>> = delta.inserts.into_iter().map(|r| r.into_owned()).collect();
    assert_eq!(inserts, sub.initial(&db, &QueryLimits::default()).unwrap());
}

/// The two sides of a self-join are two queries, not one.
#[test]
fn the_sides_of_a_self_join_are_different_queries() {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let node = TableSchema::builder("node")
        .column("id", ValueType::U32)
        .column("parent", ValueType::U32)
        .primary_key(["id"])
        .btree_index(["parent"])
        .build()
        .unwrap();
    let t = db.create_table(node).unwrap();
    let mut tx = db.begin();
    for (id, parent) in [(1u32, 0u32), (2, 1), (3, 1)] {
        tx.insert_values(t, &[Value::U32(id), Value::U32(parent)]).unwrap();
    }
    tx.commit();
    let mut set = SubscriptionSet::default();
    let children = set.subscribe(&db, "SELECT a.* FROM node a JOIN node b ON a.parent = b.id").unwrap();
    let parents = set.subscribe(&db, "SELECT b.* FROM node a JOIN node b ON a.parent = b.id").unwrap();
    assert_ne!(children, parents);
    let limits = QueryLimits::default();
    let rows = |id| multiset(set.query(id).unwrap().initial(&db, &limits).unwrap()).len();
    assert_eq!((rows(children), rows(parents)), (2, 1));
}

/// A join whose rows each match many rows may read no more than its budget in a tick;
/// past it, that query fails alone and the others are evaluated as usual.
#[test]
fn a_join_past_its_budget_fails_alone() {
    let (mut db, p, m) = guild_db();
    let mut tx = db.begin();
    for id in 0..40u64 {
        tx.insert_values(p, &[Value::U64(id), Value::string(format!("p{id}")), Value::U32(1)]).unwrap();
        tx.insert_values(m, &[Value::U64(id), Value::U32(7), Value::U8(0)]).unwrap();
    }
    tx.commit();
    let limits = QueryLimits { rows_max: 20, ..QueryLimits::default() };
    let mut set = SubscriptionSet::with_limits(limits.clone());
    // Every member of a guild with every other: 40 rows read for one changed member.
    let wide = "SELECT a.* FROM guild_member a JOIN guild_member b ON a.guild = b.guild";
    let wide = set.subscribe(&db, wide).unwrap();
    let narrow =
        set.subscribe(&db, "SELECT p.* FROM player p JOIN guild_member m ON p.id = m.player_id").unwrap();
    let mut tx = db.begin();
    let key = tx.table(m).key_from_values(&[tickdb_wasm_abi::ColId(0)], &[Value::U64(3)]).unwrap();
    let row = tx.table(m).find_unique(0, &key).unwrap();
    tx.update_values(m, row, &[Value::U64(3), Value::U32(7), Value::U8(1)]).unwrap();
    let changes = tx.commit().table_changes(&db);
    let evaluated = set.evaluate(&db, &changes);
    assert_eq!(evaluated.failed.len(), 1);
    assert_eq!(evaluated.failed[0].0, wide);
    assert_eq!(evaluated.failed[0].1.kind, ErrorKind::Budget);
    assert!(!evaluated.deltas.contains_key(&wide));
    // The narrow join read one player for the one changed member: within the budget,
    // and the player stayed in its result, unchanged.
    assert!(!evaluated.deltas.contains_key(&narrow));
    // Its initial rows (a table without a primary key: at once) fail the same way.
    let sub = set.query(wide).unwrap().clone();
    let slice = QueryLimits { rows_max: 5, ..QueryLimits::default() };
    let e = tickdb_sql::InitialScan::start(&db, &sub, &slice, &limits).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Budget);
}
