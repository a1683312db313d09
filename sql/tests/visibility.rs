//! Who reads what: private tables for the owner alone, row-level rules with `:sender`
//! in one-off queries, joins and subscriptions, and rules that are refused.

mod common;

use common::{apply, multiset};
use tickdb_engine::{Database, EngineConfig, TableId};
use tickdb_sql::{ErrorKind, QueryLimits, Reader, Subscription, SubscriptionSet, Visibility, query_for};
use tickdb_wasm_abi::{Identity, TableSchema, Value, ValueType};

struct World {
    db: Database,
    player: TableId,
    item: TableId,
}

fn identity(n: u8) -> Identity {
    Identity([n; 32])
}

/// Players 1 to 3 (identity `[n; 32]`), each with two bag entries and two items; a
/// private table of secrets.
fn world() -> World {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let player = TableSchema::builder("player")
        .column("id", ValueType::U64)
        .column("identity", ValueType::Identity)
        .column("name", ValueType::String)
        .primary_key(["id"])
        .unique(["identity"])
        .public()
        .build()
        .unwrap();
    let bag = TableSchema::builder("bag")
        .column("id", ValueType::U64)
        .column("owner", ValueType::Identity)
        .column("gold", ValueType::U32)
        .primary_key(["id"])
        .btree_index(["owner"])
        .public()
        .build()
        .unwrap();
    let item = TableSchema::builder("item")
        .column("id", ValueType::U64)
        .column("holder", ValueType::U64)
        .column("kind", ValueType::String)
        .primary_key(["id"])
        .btree_index(["holder"])
        .public()
        .build()
        .unwrap();
    let secret = TableSchema::builder("secret").column("text", ValueType::String).build().unwrap();
    let (player, bag) = (db.create_table(player).unwrap(), db.create_table(bag).unwrap());
    let (item, secret) = (db.create_table(item).unwrap(), db.create_table(secret).unwrap());
    let mut tx = db.begin();
    for n in 1..=3u64 {
        let who = Value::Identity(identity(n as u8));
        tx.insert_values(player, &[Value::U64(n), who.clone(), Value::string(format!("p{n}"))]).unwrap();
        for k in 0..2 {
            tx.insert_values(bag, &[Value::U64(n * 10 + k), who.clone(), Value::U32(k as u32)]).unwrap();
            tx.insert_values(item, &[Value::U64(n * 10 + k), Value::U64(n), Value::string("sword")]).unwrap();
        }
    }
    tx.insert_values(secret, &[Value::string("the cake")]).unwrap();
    tx.commit();
    World { db, player, item }
}

const RULES: &[&str] = &[
    "SELECT * FROM bag WHERE owner = :sender",
    "SELECT item.* FROM item JOIN player ON item.holder = player.id WHERE player.identity = :sender",
];

fn ids(w: &World, vis: &Visibility, reader: Reader, sql: &str) -> Result<Vec<u64>, tickdb_sql::SqlError> {
    let result = query_for(&w.db, vis, reader, sql, &QueryLimits::default())?;
    let mut ids: Vec<u64> = result
        .rows
        .iter()
        .map(|r| match r[0] {
            Value::U64(id) => id,
            ref other => panic!("{sql}: {other}"),
        })
        .collect();
    ids.sort();
    Ok(ids)
}

#[test]
fn rules_restrict_rows_for_clients_and_not_for_the_owner() {
    let w = world();
    let vis = Visibility::new(&w.db, RULES).unwrap();
    let two = Reader::client(identity(2));
    let owner = Reader::owner(identity(9));
    assert_eq!(ids(&w, &vis, two, "SELECT id FROM bag").unwrap(), [20, 21]);
    assert_eq!(ids(&w, &vis, two, "SELECT id FROM bag WHERE gold = 1").unwrap(), [21]);
    assert_eq!(ids(&w, &vis, owner, "SELECT id FROM bag WHERE gold = 1").unwrap(), [11, 21, 31]);
    // Through a rule that joins: the items player 2 holds.
    assert_eq!(ids(&w, &vis, two, "SELECT id FROM item").unwrap(), [20, 21]);
    let count = query_for(&w.db, &vis, two, "SELECT COUNT(*) FROM item", &QueryLimits::default()).unwrap();
    assert_eq!(count.rows, [[Value::U64(2)]]);
    // Through the query's own joins: every player is public, the bags are not.
    let sql = "SELECT p.id FROM player p JOIN bag b ON p.identity = b.owner";
    assert_eq!(ids(&w, &vis, two, sql).unwrap(), [2, 2]);
    assert_eq!(ids(&w, &vis, owner, sql).unwrap(), [1, 1, 2, 2, 3, 3]);
    // A table without rules shows every row.
    assert_eq!(ids(&w, &vis, two, "SELECT id FROM player").unwrap(), [1, 2, 3]);
}

#[test]
fn private_tables_are_for_the_owner_alone() {
    let w = world();
    let vis = Visibility::default();
    let e =
        query_for(&w.db, &vis, Reader::client(identity(1)), "SELECT * FROM secret", &QueryLimits::default())
            .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
    assert!(e.message.contains("`secret` is private"), "{e}");
    let sql = "SELECT * FROM secret";
    let rows = query_for(&w.db, &vis, Reader::owner(identity(9)), sql, &QueryLimits::default()).unwrap().rows;
    assert_eq!(rows.len(), 1);
    let e = Subscription::for_reader(&w.db, &vis, Reader::client(identity(1)), sql).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
}

#[test]
fn subscriptions_follow_the_rules_as_rows_change_hands() {
    let mut w = world();
    let vis = Visibility::new(&w.db, RULES).unwrap();
    let limits = QueryLimits::default();
    let mut set = SubscriptionSet::default();
    let mut held = Vec::new();
    for n in 1..=3u8 {
        let sub =
            Subscription::for_reader(&w.db, &vis, Reader::client(identity(n)), "SELECT * FROM item").unwrap();
        let result = multiset(sub.initial(&w.db, &limits).unwrap());
        assert_eq!(result.len(), 2);
        held.push((set.add(sub.clone()), sub, result));
    }
    assert_eq!(set.len(), 3, "one query per reader");
    // Items change hands, a player changes identity (so its items follow), an item
    // is destroyed: each reader's deltas keep its result equal to the query's.
    let ticks: &[&[(u64, Option<u64>)]] = &[&[(10, Some(2)), (21, Some(3))], &[(30, None), (11, Some(1))]];
    for (round, moves) in ticks.iter().enumerate() {
        let mut tx = w.db.begin();
        for &(item, holder) in *moves {
            let row = tx.find_by_primary_key(w.item, &[Value::U64(item)]).unwrap().unwrap();
            match holder {
                Some(h) => tx
                    .update_values(w.item, row, &[Value::U64(item), Value::U64(h), Value::string("sword")])
                    .unwrap(),
                None => tx.delete(w.item, row).unwrap(),
            }
        }
        if round == 1 {
            // Player 3 takes identity 4: reader 3 sees nothing any more.
            let row = tx.find_by_primary_key(w.player, &[Value::U64(3)]).unwrap().unwrap();
            let values = [Value::U64(3), Value::Identity(identity(4)), Value::string("p3")];
            tx.update_values(w.player, row, &values).unwrap();
        }
        let changes = tx.commit().table_changes(&w.db);
        let deltas = set.evaluate(&w.db, &changes).deltas;
        for (id, sub, result) in &mut held {
            let delta = deltas.get(id).cloned().unwrap_or_default();
            apply(result, delta).unwrap();
            assert_eq!(*result, multiset(sub.initial(&w.db, &limits).unwrap()), "round {round}");
        }
    }
    let sizes: Vec<usize> = held.iter().map(|(_, _, r)| r.len()).collect();
    assert_eq!(sizes, [1, 2, 0]);
}

#[test]
fn rules_that_cannot_filter_are_refused() {
    let w = world();
    let cases: &[(&[&str], &str)] = &[
        (&["SELECT id FROM bag WHERE owner = :sender"], "whole rows"),
        (&["SELECT bag.* FROM bag JOIN item ON bag.id = item.holder"], "`item`"),
        (
            &["SELECT * FROM bag WHERE owner = :sender", RULES[1], "SELECT * FROM item WHERE kind = 'axe'"],
            "only rule",
        ),
        (&["SELECT * FROM bag WHERE nope = :sender"], "nope"),
        (&["SELECT * FROM bag WHERE gold = :sender"], "`:sender` (an identity)"),
    ];
    for (rules, says) in cases {
        let e = Visibility::new(&w.db, rules).unwrap_err();
        assert!(e.message.contains("visibility rule") && e.message.contains(says), "{rules:?}: {e}");
    }
    // `:sender` means something only in a rule.
    let e = tickdb_sql::prepare(&w.db, "SELECT * FROM bag WHERE owner = :sender").unwrap_err();
    assert!(e.message.contains(":sender"), "{e}");
}

/// A module declares its rules with `#[client_visibility_filter]`; they reach the
/// module's definition and hold on its tables.
#[test]
fn a_module_declares_its_rules() {
    use std::sync::Arc;
    use tickdb_engine::{HostConfig, ModuleHost, ModuleSystem};
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&tickdb_test_modules::wasm("tickdb-test-features")).unwrap();
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let _system = ModuleSystem::new(&host, Arc::clone(&module), &mut db, Identity::default()).unwrap();
    assert_eq!(module.def.visibility, ["SELECT * FROM hero WHERE owner = :sender"]);
    let vis = Visibility::new(&db, &module.def.visibility).unwrap();
    let hero = db.table_id("hero").unwrap();
    assert_eq!(vis.rules(hero).collect::<Vec<_>>(), ["SELECT * FROM hero WHERE owner = :sender"]);
}
