//! Ready scenarios. `chat`: each player names itself, subscribes to the messages and
//! sends one at its call rate (the chat example's module).

use std::time::{Duration, Instant};

use tickdb_protocol::{ClientMessage, ServerMessage};
use tickdb_wasm_abi::Type;

use crate::{Bot, Outbox};

/// The `chat` scenario's player.
#[derive(Debug)]
pub struct Chatter {
    id: usize,
    every: Duration,
    said: u64,
}

impl Chatter {
    /// Player `id`, sending `rate` messages a second.
    pub fn new(id: usize, rate: f64) -> Chatter {
        Chatter { id, every: Duration::from_secs_f64(1.0 / rate.max(1e-3)), said: 0 }
    }

    /// The reducers the scenario calls, to check the database has them.
    pub const REDUCERS: [&'static str; 2] = ["set_name", "send_message"];
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
            let text = format!("message {} from bot-{}", self.said, self.id);
            out.call("send_message", text.to_bytes(), now);
        }
        self.said += 1;
        Some(now + self.every)
    }
}
