//! A swarm of simulated chat players against a real server on 127.0.0.1: 200 of them
//! on 2 threads, each naming itself and sending messages on a timer. Every call is
//! answered and measured, every player sees the others' messages, and nothing
//! disconnects. Bounded: the swarm stops after its duration.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tickdb_engine::store::DataDir;
use tickdb_loadtest::{Bot, Outbox, SwarmConfig};
use tickdb_protocol::{ClientMessage, ServerMessage};
use tickdb_wasm_abi::Type;

/// Names itself, subscribes to the messages, and says something every 100 ms.
struct Chatter {
    id: usize,
    said: u32,
}

impl Bot for Chatter {
    fn connected(&mut self, _: [u8; 32], out: &mut Outbox, now: Instant) {
        out.call("set_name", format!("bot-{}", self.id).to_bytes(), now);
        let queries = vec!["SELECT * FROM message".to_string()];
        out.send(ClientMessage::Subscribe {
            query_set_id: 1,
            queries,
            resume_after_tick: 0,
            resume_epoch: 0,
        });
    }

    fn message(&mut self, _: &ServerMessage, _: &mut Outbox, _: Instant) {}

    fn timer(&mut self, out: &mut Outbox, now: Instant) -> Option<Instant> {
        if self.said > 0 {
            out.call("send_message", format!("hello {} from {}", self.said, self.id).to_bytes(), now);
        }
        self.said += 1;
        Some(now + Duration::from_millis(100))
    }
}

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
    let report = tickdb_loadtest::run(&config, &|id| Box::new(Chatter { id, said: 0 }), &stop).unwrap();
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
