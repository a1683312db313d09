//! The MMO example world (`examples/mmo`) played through the client SDK with its
//! generated bindings: joining, moving (and the anti-teleport check), private
//! inventories, combat, death and the scheduled respawn, zone chat, items, NPCs moved
//! by the tick system, and an area-of-interest subscription. Every wait is for a
//! condition, bounded by a deadline.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tickdb_engine::store::DataDir;
use tickdb_sdk::{DbConnection, Identity};

mod common;

use common::{temp_dir, until};

#[path = "../../examples/mmo/client/src/bindings/mod.rs"]
#[rustfmt::skip]
mod bindings;

use bindings::{AttackTarget, Player, RemoteReducers, Tables};

type Outcome = Arc<Mutex<Option<Result<(), String>>>>;

/// Waits for a call's result, sent with `call(then)`.
fn result(
    conn: &DbConnection,
    call: impl FnOnce(Box<dyn FnOnce(Result<(), String>) + Send>),
) -> Result<(), String> {
    let outcome: Outcome = Arc::new(Mutex::new(None));
    let o = Arc::clone(&outcome);
    call(Box::new(move |r| *o.lock().unwrap() = Some(r)));
    until(conn, "a call's result", || outcome.lock().unwrap().is_some());
    outcome.lock().unwrap().take().unwrap()
}

fn move_to(conn: &DbConnection, x: f32, y: f32) -> Result<(), String> {
    result(conn, |done| conn.reducers().move_to_then(x, y, 0.0, move |_, r| done(r)).unwrap())
}

fn attack(conn: &DbConnection, target: AttackTarget) -> Result<(), String> {
    result(conn, |done| conn.reducers().attack_then(target, move |_, r| done(r)).unwrap())
}

/// A player in the world: connected, joined, seeing every player and its own
/// inventory.
fn join(addr: SocketAddr, name: &str) -> (DbConnection, Identity) {
    let conn = DbConnection::builder(bindings::tables())
        .with_uri(format!("http://{addr}"))
        .with_database_name("mmo")
        .on_error(|_, e| panic!("the client could not apply a message: {e}"))
        .build()
        .unwrap();
    let applied = Arc::new(Mutex::new(false));
    let a = Arc::clone(&applied);
    conn.subscription_builder().on_applied(move |_| *a.lock().unwrap() = true).subscribe([
        "SELECT * FROM player",
        "SELECT * FROM inventory",
        "SELECT * FROM zone_chat",
    ]);
    until(&conn, "the subscription", || *applied.lock().unwrap());
    let name = name.to_string();
    assert_eq!(result(&conn, |done| conn.reducers().join_then(name, move |_, r| done(r)).unwrap()), Ok(()));
    let me = conn.identity().unwrap();
    until(&conn, "the player's row", || conn.db().player().identity().find(&me).is_some());
    (conn, me)
}

fn player(conn: &DbConnection, who: Identity) -> Player {
    conn.db().player().identity().find(&who).expect("in the cache")
}

/// Walks `conn`'s player next to `(x, y)`, in steps the anti-teleport check allows.
fn walk_to(conn: &DbConnection, me: Identity, x: f32, y: f32) {
    loop {
        let p = player(conn, me);
        let (dx, dy) = (x - p.x, y - p.y);
        let distance = dx.hypot(dy);
        if distance <= 1.0 {
            return;
        }
        let step = distance.min(30.0) / distance;
        assert_eq!(move_to(conn, p.x + dx * step, p.y + dy * step), Ok(()));
        let moved = (p.x + dx * step, p.y + dy * step);
        until(conn, "the move", || {
            let q = player(conn, me);
            (q.x - moved.0).abs() < 0.01 && (q.y - moved.1).abs() < 0.01
        });
    }
}

/// A server with the world published as `mmo`, its data in `dir`.
fn serve_the_world(dir: &std::path::Path) -> tickdb_net::ServerHandle {
    let server = tickdb_net::start(
        tickdb_net::ServerConfig::default(),
        DataDir::new(dir.join("data")),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let owner = server.keys().new_identity().1;
    let published = ureq::post(format!("http://{}/v1/database/mmo", server.addr()))
        .header("Authorization", format!("Bearer {owner}"))
        .send(tickdb_test_modules::wasm("tickdb-example-mmo"))
        .unwrap();
    assert_eq!(published.status(), 201);
    server
}

#[test]
fn the_mmo_world_plays_by_its_rules() {
    let dir = temp_dir("mmo");
    let server = serve_the_world(&dir);
    let addr = server.addr();

    let (ada, ada_id) = join(addr, "Ada");
    let (bo, bo_id) = join(addr, "Bo");
    until(&ada, "Bo in Ada's view", || ada.db().player().count() == 2);

    // Inventories are private: each sees its own two stacks only.
    until(&ada, "Ada's inventory", || ada.db().inventory().count() == 2);
    assert!(ada.db().inventory().iter().all(|i| i.owner == ada_id));
    until(&bo, "Bo's inventory", || bo.db().inventory().count() == 2);

    // No teleporting; walking is fine.
    let start = player(&ada, ada_id);
    let far = if start.x < 500.0 { start.x + 100.0 } else { start.x - 100.0 };
    assert_eq!(move_to(&ada, far, start.y), Err("too far for one move (at most 32)".into()));
    let target = player(&ada, bo_id);
    assert_eq!(attack(&ada, AttackTarget::Player(bo_id)), Err("the target is out of range".into()));
    walk_to(&ada, ada_id, target.x, target.y);
    assert_eq!(player(&ada, ada_id).zone, target.zone, "the zone follows the position");

    // Ten blows bring Bo down; the schedule brings him back with full hit points.
    let deaths = Arc::new(Mutex::new(Vec::new()));
    let d = Arc::clone(&deaths);
    ada.db().player().on_update(move |_, old, new| {
        if old.alive != new.alive {
            d.lock().unwrap().push(new.alive);
        }
    });
    for blow in 1..=10 {
        assert_eq!(attack(&ada, AttackTarget::Player(bo_id)), Ok(()), "blow {blow}");
    }
    until(&ada, "Bo's fall", || !player(&ada, bo_id).alive);
    assert_eq!(player(&ada, bo_id).hp, 0);
    assert_eq!(
        attack(&ada, AttackTarget::Player(bo_id)),
        Err("the target is out of range".into()),
        "the dead"
    );
    assert_eq!(move_to(&bo, 1.0, 1.0), Err("the dead do not move".into()));
    until(&ada, "Bo's respawn", || player(&ada, bo_id).alive);
    assert_eq!(player(&ada, bo_id).hp, 100);
    assert_eq!(*deaths.lock().unwrap(), [false, true]);

    // Zone chat and items.
    let zone = player(&ada, ada_id).zone;
    let said =
        result(&ada, |done| ada.reducers().say_then("for the horde".into(), move |_, r| done(r)).unwrap());
    assert_eq!(said, Ok(()));
    until(&ada, "the chat line", || {
        ada.db().zone_chat().iter().any(|c| c.text == "for the horde" && c.zone == zone)
    });
    let used =
        result(&ada, |done| ada.reducers().use_item_then("potion".into(), move |_, r| done(r)).unwrap());
    assert_eq!(used, Ok(()));
    until(&ada, "the potion used", || {
        ada.db().inventory().iter().any(|i| i.item == "potion" && i.count == 2)
    });
    let none =
        result(&ada, |done| ada.reducers().use_item_then("sword".into(), move |_, r| done(r)).unwrap());
    assert_eq!(none, Err("you carry no sword".into()));

    // NPCs wander at 20 Hz, seen through an area-of-interest window.
    let npc_moves = Arc::new(Mutex::new(0));
    let n = Arc::clone(&npc_moves);
    bo.db().npc().on_update(move |_, old, new| {
        if (old.x, old.y) != (new.x, new.y) {
            *n.lock().unwrap() += 1;
        }
    });
    bo.subscription_builder()
        .subscribe(["SELECT * FROM npc WHERE x >= 0 AND x < 512 AND y >= 0 AND y < 512"]);
    until(&bo, "NPCs moving", || *npc_moves.lock().unwrap() >= 20);
    assert!(bo.db().npc().iter().all(|n| n.x < 512.0 && n.y < 512.0), "only the window's NPCs");
    assert!(bo.db().npc().count() > 0);

    ada.disconnect();
    bo.disconnect();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tickdb loadtest --scenario mmo` against the world: 20 walkers, measured as JSON
/// (round trips, update latency from stamped moves, the server's own CPU and ticks
/// from its metrics) and drawn as an HTML report with its charts.
#[test]
fn loadtest_walks_the_world_and_writes_a_report() {
    let dir = temp_dir("mmo-loadtest");
    let server = serve_the_world(&dir);
    let addr = server.addr();
    let report = dir.join("report.html");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tickdb"))
        .env("TICKDB_CONFIG", dir.join("cli.json"))
        .args([
            "loadtest",
            "mmo",
            "--scenario",
            "mmo",
            "--players",
            "20",
            "--rate",
            "10",
            "--interest",
            "all",
        ])
        .args(["--duration", "2", "--warmup", "0.5", "--json", "--server", &format!("http://{addr}")])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((json["connected"].as_u64(), json["errors"].as_u64()), (Some(20), Some(0)), "{json}");
    assert!(json["round_trip_us"]["count"].as_u64().unwrap() >= 20 * 10, "{json}");
    assert!(json["update_latency_us"]["count"].as_u64().unwrap() >= 20 * 10, "every move is seen: {json}");
    assert!(json["server"]["cpu_cores"].as_f64().unwrap() > 0.0, "{json}");
    let ticks = json["server"]["ticks_per_s"].as_f64().unwrap();
    // 200 calls a second run in the world's 20 Hz ticks (batch_calls), not in ticks of
    // their own.
    assert!(ticks > 0.0 && ticks <= 25.0, "ticks a second: {ticks}");
    let page = std::fs::read_to_string(&report).unwrap();
    for part in ["<svg", "<h2>Latency</h2>", "update latency p99", "<h2>Server CPU</h2>", "measured"] {
        assert!(page.contains(part), "the report lacks {part}");
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
