//! A swarm of simulated chat players (the `chat` scenario) against a real server on
//! 127.0.0.1: 200 of them on 2 threads, each naming itself and sending 10 messages a
//! second. Every call is
//! answered and measured, every player sees the others' messages, and nothing
//! disconnects. Bounded: the swarm stops after its duration.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tickdb_engine::store::DataDir;
use tickdb_loadtest::SwarmConfig;
use tickdb_loadtest::scenarios::Chatter;

#[test]
fn a_swarm_of_chatters_is_served_and_measured() {
    let dir = std::env::temp_dir().join(format!("tickdb-swarm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = tickdb_net::start(
        tickdb_net::ServerConfig::default(),
        DataDir::new(&dir),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let (_, owner) = server.keys().new_identity();
    let wasm = tickdb_test_modules::wasm("tickdb-example-chat");
    let published = ureq::post(format!("http://{}/v1/database/chat", server.addr()))
        .header("Authorization", format!("Bearer {owner}"))
        .send(wasm)
        .unwrap();
    assert_eq!(published.status(), 201);

    let config = SwarmConfig {
        addr: server.addr(),
        database: "chat".into(),
        players: 200,
        threads: 2,
        ramp_per_second: 2_000.0,
        duration: Duration::from_millis(1_500),
        warmup: Duration::from_millis(300),
    };
    let stop = AtomicBool::new(false);
    let live = tickdb_loadtest::Live::default();
    let report = tickdb_loadtest::run(&config, &|id| Box::new(Chatter::new(id, 10.0)), &stop, &live).unwrap();
    assert_eq!(live.connected.load(std::sync::atomic::Ordering::Relaxed), 200);
    assert!(report.disconnects.is_empty(), "{:?}", report.disconnects);
    assert_eq!(report.connected, 200);
    assert!(report.calls >= 200 * 10, "each player calls about 15 times: {}", report.calls);
    assert!(
        report.results + 200 * 2 >= report.calls,
        "calls answered: {} of {}",
        report.results,
        report.calls
    );
    assert_eq!(report.errors, 0);
    assert_eq!(report.round_trip_us.len(), report.results);
    assert!(report.updates >= report.results, "each message reaches every subscriber: {}", report.updates);
    assert!(report.bytes_received > 0);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
