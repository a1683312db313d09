//! One-off SELECTs: query text in, access path and rows out; and mistakes, each with
//! the error and the position it names.

use std::ops::Bound;

use tickdb_engine::{Database, EngineConfig, TableId};
use tickdb_sql::{Access, ErrorKind, QueryLimits, query};
use tickdb_wasm_abi::{Identity, TableSchema, Value, ValueType};

/// `player(id pk, identity unique, zone btree, level, name, guild option, x)`, 100 rows.
fn db() -> (Database, TableId) {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let schema = TableSchema::builder("player")
        .column("id", ValueType::U64)
        .column("identity", ValueType::Identity)
        .column("zone", ValueType::U32)
        .column("level", ValueType::I32)
        .column("name", ValueType::String)
        .column("guild", ValueType::option(ValueType::U32))
        .column("x", ValueType::F32)
        .primary_key(["id"])
        .unique(["identity"])
        .btree_index(["zone"])
        .build()
        .unwrap();
    let t = db.create_table(schema).unwrap();
    let mut tx = db.begin();
    for i in 0..100u64 {
        let guild = if i % 3 == 0 {
            Value::Option(None)
        } else {
            Value::Option(Some(Box::new(Value::U32(i as u32 % 4))))
        };
        let row = [
            Value::U64(i),
            Value::Identity(Identity([i as u8; 32])),
            Value::U32((i % 10) as u32),
            Value::I32(i as i32 - 50),
            Value::string(format!("p{i:02}")),
            guild,
            Value::F32(i as f32 / 2.0),
        ];
        tx.insert_values(t, &row).unwrap();
    }
    tx.commit();
    (db, t)
}

fn ids(sql: &str) -> (Access, Vec<u64>) {
    let (db, _) = db();
    let result = query(&db, sql, &QueryLimits::default()).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let ids = result
        .rows
        .iter()
        .map(|r| match r[0] {
            Value::U64(id) => id,
            ref other => panic!("{sql}: {other}"),
        })
        .collect();
    (result.plan.first, ids)
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort();
    v
}

#[test]
fn where_clauses_select_the_right_rows() {
    let cases: &[(&str, Vec<u64>)] = &[
        ("SELECT id FROM player WHERE id = 7", vec![7]),
        ("SELECT id FROM player WHERE 7 = id", vec![7]),
        ("SELECT id FROM player WHERE id < 3", vec![0, 1, 2]),
        ("SELECT id FROM player WHERE zone = 3 AND level > 20", vec![73, 83, 93]),
        ("SELECT id FROM player WHERE zone = 3 AND NOT level > -20", vec![3, 13, 23]),
        ("SELECT id FROM player WHERE id BETWEEN 10 AND 12", vec![10, 11, 12]),
        ("SELECT id FROM player WHERE id NOT BETWEEN 2 AND 98", vec![0, 1, 99]),
        ("SELECT id FROM player WHERE id IN (5, 50, 500)", vec![5, 50]),
        ("SELECT id FROM player WHERE id < 10 AND guild IS NULL", vec![0, 3, 6, 9]),
        ("SELECT id FROM player WHERE id < 6 AND guild IS NOT NULL", vec![1, 2, 4, 5]),
        ("SELECT id FROM player WHERE guild = 2 AND id < 20", vec![2, 10, 14]),
        ("SELECT id FROM player WHERE name = 'p42'", vec![42]),
        ("SELECT id FROM player WHERE level = -50", vec![0]),
        ("SELECT id FROM player WHERE x >= 49.0", vec![98, 99]),
        ("SELECT id FROM player WHERE id = 1 OR id = 2 OR name = 'p03'", vec![1, 2, 3]),
        ("SELECT id FROM player p WHERE p.zone = 9 AND p.id > 80", vec![89, 99]),
        (
            "SELECT id FROM player WHERE identity = '0x0505050505050505050505050505050505050505050505050505050505050505'",
            vec![5],
        ),
    ];
    for (sql, expected) in cases {
        let (_, got) = ids(sql);
        assert_eq!(sorted(got), *expected, "{sql}");
    }
}

#[test]
fn indexes_are_used_where_they_can_be() {
    let (access, _) = ids("SELECT id FROM player WHERE id = 7");
    assert!(matches!(access, Access::Unique { .. }), "{access:?}");
    let (access, ids_) = ids("SELECT id FROM player WHERE zone = 3 AND level > 20");
    assert!(matches!(access, Access::Range { lower: Bound::Included(_), upper: Bound::Included(_), .. }));
    assert_eq!(ids_.len(), 3);
    let (access, _) = ids("SELECT id FROM player WHERE zone > 7");
    assert!(matches!(access, Access::Range { lower: Bound::Excluded(_), upper: Bound::Unbounded, .. }));
    let (access, got) = ids("SELECT id FROM player WHERE zone BETWEEN 8 AND 9");
    assert!(matches!(access, Access::Range { .. }));
    assert_eq!(got.len(), 20);
    let (access, _) = ids("SELECT id FROM player WHERE level > 20");
    assert_eq!(access, Access::Scan);
    // The unique lookup reads one row.
    let (db, _) = db();
    let r = query(&db, "SELECT * FROM player WHERE identity = '0x0707070707070707070707070707070707070707070707070707070707070707'", &QueryLimits::default()).unwrap();
    assert_eq!((r.rows_read, r.rows.len()), (1, 1));
}

#[test]
fn projections_order_limit_and_count() {
    let (db, _) = db();
    let limits = QueryLimits::default();
    let r = query(
        &db,
        "SELECT name AS who, zone FROM player WHERE zone = 4 ORDER BY level DESC LIMIT 3",
        &limits,
    )
    .unwrap();
    assert_eq!(r.columns, vec![("who".to_string(), ValueType::String), ("zone".to_string(), ValueType::U32)]);
    let names: Vec<String> = r.rows.iter().map(|row| row[0].to_string()).collect();
    assert_eq!(names, ["\"p94\"", "\"p84\"", "\"p74\""]);
    let r = query(&db, "SELECT * FROM player WHERE id = 1", &limits).unwrap();
    assert_eq!(r.columns.len(), 7);
    assert_eq!(r.rows[0][4], Value::string("p01"));
    let r = query(&db, "SELECT COUNT(*) FROM player WHERE zone = 2", &limits).unwrap();
    assert_eq!(r.rows, vec![vec![Value::U64(10)]]);
    let r = query(&db, "SELECT COUNT(*) AS n FROM player", &limits).unwrap();
    assert_eq!((r.columns[0].0.as_str(), &r.rows[0][0]), ("n", &Value::U64(100)));
    let r = query(&db, "SELECT id FROM player LIMIT 5", &limits).unwrap();
    assert_eq!((r.rows.len(), r.rows_read), (5, 5), "a LIMIT without ORDER BY stops early");
    // `LIMIT` counts rows returned: a count is one row, whatever it counts.
    assert!(query(&db, "SELECT id FROM player LIMIT 0", &limits).unwrap().rows.is_empty());
    let r = query(&db, "SELECT COUNT(*) FROM player LIMIT 5", &limits).unwrap();
    assert_eq!(r.rows, vec![vec![Value::U64(100)]]);
    assert!(query(&db, "SELECT COUNT(*) FROM player LIMIT 0", &limits).unwrap().rows.is_empty());
}

#[test]
fn mistakes_are_named_with_their_position() {
    let (db, _) = db();
    let limits = QueryLimits::default();
    type Case<'a> = (&'a str, ErrorKind, &'a str, Option<(u64, u64)>);
    let cases: &[Case<'_>] = &[
        ("SELECT id FROM players", ErrorKind::UnknownTable, "no table is named `players`", Some((1, 16))),
        ("SELECT id, hp FROM player", ErrorKind::UnknownColumn, "no column `hp`", Some((1, 12))),
        (
            "SELECT id FROM player\nWHERE zone = 'north'",
            ErrorKind::TypeMismatch,
            "column `zone` is a u32",
            Some((2, 14)),
        ),
        (
            "SELECT id FROM player WHERE zone = 4294967296",
            ErrorKind::TypeMismatch,
            "out of range",
            Some((1, 36)),
        ),
        (
            "SELECT id FROM player WHERE level = 1.5",
            ErrorKind::TypeMismatch,
            "not a whole number",
            Some((1, 37)),
        ),
        ("SELECT id FROM player WHERE guild = NULL", ErrorKind::TypeMismatch, "use IS NULL", Some((1, 37))),
        ("SELECT id FROM player WHERE zone IS NULL", ErrorKind::TypeMismatch, "never NULL", Some((1, 29))),
        (
            "SELECT id FROM player WHERE zone = name",
            ErrorKind::TypeMismatch,
            "cannot compare a u32 with a",
            Some((1, 29)),
        ),
        (
            "SELECT id FROM player WHERE q.zone = 1",
            ErrorKind::UnknownTable,
            "no table or alias `q`",
            Some((1, 29)),
        ),
        ("DELETE FROM player", ErrorKind::Unsupported, "only SELECT", None),
        ("SELEKT id FROM player", ErrorKind::Syntax, "SELEKT", None),
        ("SELECT id FROM player; SELECT id FROM player", ErrorKind::Unsupported, "one statement", None),
    ];
    for (sql, kind, message, position) in cases {
        let e = query(&db, sql, &limits).expect_err(sql);
        assert_eq!(e.kind, *kind, "{sql}: {e}");
        assert!(e.message.contains(message), "{sql}: {e}");
        if let Some((line, column)) = position {
            let p = e.position.unwrap_or_else(|| panic!("{sql}: no position in {e}"));
            assert_eq!((p.line, p.column), (*line, *column), "{sql}: {e}");
        }
    }
}

#[test]
fn budgets_and_hostile_queries_fail_cleanly() {
    let (db, _) = db();
    let tight = QueryLimits { rows_max: 10, ..QueryLimits::default() };
    let e = query(&db, "SELECT id FROM player WHERE level > 0", &tight).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Budget);
    assert!(query(&db, "SELECT id FROM player WHERE id = 3", &tight).is_ok(), "an indexed point query fits");

    let long = format!("SELECT id FROM player WHERE {}", vec!["id = 1"; 20_000].join(" OR "));
    assert_eq!(query(&db, &long, &QueryLimits::default()).unwrap_err().kind, ErrorKind::TooLarge);
    let deep = format!("SELECT id FROM player WHERE {}id = 1{}", "(".repeat(500), ")".repeat(500));
    assert_eq!(query(&db, &deep, &QueryLimits::default()).unwrap_err().kind, ErrorKind::TooLarge);
    // The longest query accepted, as one chain of ORs.
    let terms = (tickdb_sql::QUERY_BYTES_MAX - 100) / 10;
    let chain = format!("SELECT COUNT(*) FROM player WHERE {}", vec!["id = 1"; terms].join(" OR "));
    assert!(chain.len() <= tickdb_sql::QUERY_BYTES_MAX);
    let r = query(&db, &chain, &QueryLimits::default()).unwrap();
    assert_eq!(r.rows, vec![vec![Value::U64(1)]]);
    let list: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    let huge_in = format!("SELECT COUNT(*) FROM player WHERE id IN ({})", list.join(","));
    let r = query(&db, &huge_in, &QueryLimits::default()).unwrap();
    assert_eq!(r.rows, vec![vec![Value::U64(100)]]);
    // A text past the limit is refused through the cache too, whatever its shape.
    let padded = format!("SELECT id FROM player WHERE name = '{}'", "x".repeat(tickdb_sql::QUERY_BYTES_MAX));
    let cache = tickdb_sql::StatementCache::default();
    assert_eq!(cache.query(&db, &padded, &QueryLimits::default()).unwrap_err().kind, ErrorKind::TooLarge);
    // Through the statement cache: answered the same, and too long a shape to keep.
    let cache = tickdb_sql::StatementCache::default();
    assert_eq!(cache.query(&db, &huge_in, &QueryLimits::default()).unwrap().rows, r.rows);
    assert!(cache.is_empty());
}

/// `player` joined with `guild_member(player_id btree, guild)` and `guild(id pk, name)`.
fn guild_db() -> Database {
    let (mut db, _) = db();
    let member = TableSchema::builder("guild_member")
        .column("player_id", ValueType::U64)
        .column("guild", ValueType::U32)
        .btree_index(["player_id"])
        .build()
        .unwrap();
    let guild = TableSchema::builder("guild")
        .column("id", ValueType::U32)
        .column("name", ValueType::String)
        .primary_key(["id"])
        .build()
        .unwrap();
    let (m, g) = (db.create_table(member).unwrap(), db.create_table(guild).unwrap());
    let mut tx = db.begin();
    for p in (0..100u64).step_by(7) {
        tx.insert_values(m, &[Value::U64(p), Value::U32((p % 3) as u32 + 6)]).unwrap();
    }
    tx.insert_values(m, &[Value::U64(14), Value::U32(9)]).unwrap();
    for (id, name) in [(6, "red"), (7, "green"), (8, "blue")] {
        tx.insert_values(g, &[Value::U32(id), Value::string(name)]).unwrap();
    }
    tx.commit();
    db
}

#[test]
fn joins_match_rows_across_tables() {
    let db = guild_db();
    let limits = QueryLimits::default();
    // The subscription shape: players of guild 7.
    let r = query(
        &db,
        "SELECT p.* FROM player p JOIN guild_member m ON p.id = m.player_id WHERE m.guild = 7",
        &limits,
    )
    .unwrap();
    let mut ids: Vec<Value> = r.rows.iter().map(|row| row[0].clone()).collect();
    ids.sort();
    // Members p with p % 3 == 1, among multiples of 7: 7, 28, 49, 70, 91.
    assert_eq!(ids, [7, 28, 49, 70, 91].map(Value::U64));
    assert_eq!(r.columns.len(), 7, "p.* is the player's columns");
    assert!(matches!(r.plan.joins[..], [tickdb_sql::JoinAccess::Point { .. }]), "{:?}", r.plan);

    // Three tables, the joined ones looked up through their keys; player 14 is in two guilds.
    let r = query(
        &db,
        "SELECT g.name, p.name FROM guild_member m JOIN player p ON p.id = m.player_id \
         JOIN guild g ON g.id = m.guild WHERE p.id < 15 ORDER BY p.id, g.name",
        &limits,
    )
    .unwrap();
    let pairs: Vec<(String, String)> =
        r.rows.iter().map(|row| (row[0].to_string(), row[1].to_string())).collect();
    // Player 14's second membership names guild 9, which does not exist: no row for it.
    let expected: Vec<(String, String)> = [("red", "p00"), ("green", "p07"), ("blue", "p14")]
        .iter()
        .map(|(g, p)| (format!("\"{g}\""), format!("\"{p}\"")))
        .collect();
    assert_eq!(pairs, expected);
    assert!(matches!(
        r.plan.joins[..],
        [tickdb_sql::JoinAccess::Unique { .. }, tickdb_sql::JoinAccess::Unique { .. }]
    ));

    let r = query(&db, "SELECT COUNT(*) FROM player JOIN guild_member ON id = player_id", &limits).unwrap();
    assert_eq!(r.rows, vec![vec![Value::U64(16)]]);
}

#[test]
fn join_mistakes_are_named() {
    let db = guild_db();
    let limits = QueryLimits::default();
    let e = query(&db, "SELECT id FROM player JOIN guild ON id = id", &limits).unwrap_err();
    assert!(e.message.contains("more than one table"), "{e}");
    let e = query(&db, "SELECT 1 FROM player JOIN player ON player.id = player.id", &limits).unwrap_err();
    assert!(e.message.contains("give one an alias"), "{e}");
    let e = query(&db, "SELECT p.id FROM player p LEFT JOIN guild g ON p.id = g.id", &limits).unwrap_err();
    assert!(e.message.contains("only inner joins"), "{e}");
    let e = query(&db, "SELECT p.id FROM player p JOIN guild g ON p.name = g.id", &limits).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TypeMismatch, "{e}");
}

#[test]
fn the_time_budget_stops_a_long_query() {
    let (db, _) = db();
    // A cross join reads 100 × 100 rows; the clock is read every 1024, and any time
    // spent reading them is more than a zero budget.
    let none = QueryLimits { time_max: std::time::Duration::ZERO, ..QueryLimits::default() };
    let e = query(&db, "SELECT a.id FROM player a JOIN player b ON a.level > b.level", &none).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Budget, "{e}");
    assert!(e.to_string().contains("ran longer"), "{e}");
    let r =
        query(&db, "SELECT a.id FROM player a JOIN player b ON a.level > b.level", &QueryLimits::default());
    assert_eq!(r.unwrap().rows.len(), 100 * 99 / 2, "within the default budget it finishes");
}

#[test]
fn the_statement_cache_answers_like_the_parser() {
    let (db, _) = db();
    let cache = tickdb_sql::StatementCache::default();
    let limits = QueryLimits::default();
    let corpus = [
        "SELECT * FROM player WHERE id = 7",
        "SELECT * FROM player WHERE id = 8",
        "SELECT id FROM player WHERE level > -20 AND level < -10",
        "SELECT id FROM player WHERE level > -21 AND level < -11",
        "SELECT id, x FROM player WHERE x >= 1.5e1 AND x < 2e1",
        "SELECT id FROM player WHERE name = 'p07' OR name = 'p''s'",
        "SELECT id FROM player WHERE name IN ('p01', 'p02', 'p1', 'p03')",
        "SELECT p.id FROM player AS p WHERE p.zone = 3 ORDER BY p.id DESC LIMIT 4",
        "SELECT p.id FROM player AS p WHERE p.zone = 4 ORDER BY p.id DESC LIMIT 2",
        "SELECT COUNT(*) AS n FROM player WHERE guild = 1",
        "SELECT id FROM player WHERE identity = '0707070707070707070707070707070707070707070707070707070707070707'",
        "SELECT id FROM player WHERE \"zone\" = 5 AND id BETWEEN 10 AND 60",
        "SELECT id FROM player WHERE guild IS NULL AND id < 10",
        "SELECT id FROM player WHERE zone = 1.5",
        "SELECT id FROM player WHERE zone = 'north'",
        "SELECT id FROM player WHERE zone = 99999999999",
        "SELECT id FROM player WHERE nope = 1",
        "SELECT id FROM player WHERE name = 'unterminated",
        "SELECT id FROM player WHERE id = 1 -- a comment",
        "SELECT id FROM player WHERE id = $1",
        "SELECT id FROM player LIMIT 'ten'",
    ];
    for _ in 0..2 {
        for sql in corpus {
            let direct = query(&db, sql, &limits);
            let cached = cache.query(&db, sql, &limits);
            assert_eq!(cached, direct, "{sql}");
        }
    }
    // Texts that differ only in literals share a shape; texts left to the parser (the
    // comment, the unterminated string, the placeholder) are not kept.
    let one = tickdb_sql::StatementCache::default();
    for sql in &corpus[..4] {
        one.query(&db, sql, &limits).unwrap();
    }
    assert_eq!(one.len(), 2);
    assert_eq!(cache.len(), corpus.len() - 3 - 5);
    let e = cache.query(&db, "SELECT id FROM player WHERE name = 'a long string' AND nope = 1", &limits);
    let e = e.unwrap_err();
    assert_eq!((e.kind, e.position.map(|p| p.column)), (ErrorKind::UnknownColumn, Some(56)));
}
