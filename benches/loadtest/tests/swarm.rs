//! Swarms of simulated players against a real server on 127.0.0.1, one per scenario:
//! chat, mmo (walking with areas of interest that follow the players) and bank
//! (transfers at saturation). Each is bounded by its duration; every assertion is on
//! what the swarm measured or what the database holds afterwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tickdb_engine::store::DataDir;
use tickdb_loadtest::scenarios::{BANK_ACCOUNTS, Banker, Chatter, Interest, Walker};
use tickdb_loadtest::{Bot, Live, Stamps, SwarmConfig, SwarmReport};

/// A server with `package` published as `name`; returns it with its owner's token.
fn serve(name: &str, package: &str) -> (tickdb_net::ServerHandle, String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("tickdb-swarm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = tickdb_net::start(
        tickdb_net::ServerConfig { messages_per_second_max: 100_000, ..Default::default() },
        DataDir::new(&dir),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let (_, owner) = server.keys().new_identity();
    let published = ureq::post(format!("http://{}/v1/database/{name}", server.addr()))
        .header("Authorization", format!("Bearer {owner}"))
        .send(tickdb_test_modules::wasm(package))
        .unwrap();
    assert_eq!(published.status(), 201);
    (server, owner, dir)
}

fn swarm(addr: SocketAddr, database: &str, players: usize, seconds: f64) -> SwarmConfig {
    SwarmConfig {
        addr,
        database: database.into(),
        players,
        threads: 2,
        ramp_per_second: 2_000.0,
        duration: Duration::from_secs_f64(seconds),
        warmup: Duration::from_millis(300),
        lz4: false,
    }
}

fn run(config: &SwarmConfig, make: &(dyn Fn(usize) -> Box<dyn Bot> + Sync)) -> (SwarmReport, Live) {
    let (stop, live) = (AtomicBool::new(false), Live::default());
    let report = tickdb_loadtest::run(config, make, &stop, &live).unwrap();
    assert!(report.disconnects.is_empty(), "{:?}", report.disconnects);
    assert_eq!(report.connected, config.players as u64);
    assert_eq!(report.totals.round_trip_us.len(), report.totals.results);
    (report, live)
}

/// 200 chat players on 2 threads, each naming itself and sending 10 messages a
/// second: every call is answered and measured, every player sees the others'
/// messages, nothing disconnects.
#[test]
fn a_swarm_of_chatters_is_served_and_measured() {
    let (server, _, dir) = serve("chat", "tickdb-example-chat");
    let config = swarm(server.addr(), "chat", 200, 1.5);
    let (report, live) = run(&config, &|id| Box::new(Chatter::new(id, 10.0)));
    assert_eq!(live.connected.load(Ordering::Relaxed), 200);
    assert!(report.totals.calls >= 200 * 10, "each player calls about 15 times: {}", report.totals.calls);
    assert!(
        report.totals.results + 200 * 2 >= report.totals.calls,
        "calls answered: {} of {}",
        report.totals.results,
        report.totals.calls
    );
    assert_eq!(report.totals.errors, 0);
    assert!(
        report.totals.updates >= report.totals.results,
        "each message reaches every subscriber: {}",
        report.totals.updates
    );
    assert!(report.totals.bytes > 0);
    let seconds: u64 = report.seconds.iter().map(|s| s.counts.results).sum();
    assert!(seconds >= report.totals.results, "the seconds cover the measured time and the rest");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// 60 players walk fast through the MMO world (15 units a step at 20 Hz) with small
/// areas of interest that follow them: every move is accepted (never too far, never
/// out of the world), and they keep seeing each other's moves, matched to the calls
/// that made them, to the end. (`scenarios`' unit tests check the areas' moves.)
#[test]
fn mmo_walkers_see_each_others_moves() {
    let (server, _, dir) = serve("mmo", "tickdb-example-mmo");
    let config = swarm(server.addr(), "mmo", 60, 2.5);
    let stamps = Arc::new(Stamps::default());
    let interest = Interest::Area { side: 300.0 };
    let make = |id| Box::new(Walker::new(id, 20.0, 300.0, interest, Arc::clone(&stamps))) as Box<dyn Bot>;
    let (report, _) = run(&config, &make);
    assert_eq!(report.totals.errors, 0, "a move was refused");
    assert!(
        report.totals.results >= 60 * 20,
        "each walker moves 20 times a second: {}",
        report.totals.results
    );
    let seen = report.totals.update_latency_us.len();
    assert!(seen > report.totals.results, "each move is seen by others, and matched to its call: {seen}");
    let last = &report.seconds[report.seconds.len() - 2];
    assert!(
        last.counts.update_latency_us.len() > 60 * 20,
        "the last full second saw {}",
        last.counts.update_latency_us.len()
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// 8 connections keep 8 transfers each in flight between skewed accounts: every
/// call is answered, none fails, and the bank's money is all still there, with each
/// answered transfer recorded on both accounts.
#[test]
fn bank_transfers_at_saturation_conserve_money() {
    let (server, owner, dir) = serve("bank", "tickdb-example-bank");
    let config = swarm(server.addr(), "bank", 8, 1.0);
    let (report, _) = run(&config, &|id| Box::new(Banker::new(id, 8)));
    assert_eq!(report.totals.errors, 0);
    assert!(report.totals.results > 1_000, "transfers answered: {}", report.totals.results);
    let mut reply = ureq::post(format!("http://{}/v1/database/bank/sql", server.addr()))
        .header("Authorization", format!("Bearer {owner}"))
        .send("SELECT * FROM account")
        .unwrap();
    let body: serde_json::Value = reply.body_mut().read_json().unwrap();
    let rows = body["rows"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(rows.len() as u64, BANK_ACCOUNTS);
    let column = |i: usize| rows.iter().map(|r| r[i].as_i64().unwrap()).sum::<i64>();
    assert_eq!(column(1), BANK_ACCOUNTS as i64 * 1_000_000, "money is conserved");
    assert!(column(2) as u64 >= 2 * report.totals.results, "each transfer touched two accounts");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
