//! Ready scenarios:
//! - `chat` ([`Chatter`]): each player names itself, subscribes to the messages and
//!   sends one at its call rate (`examples/chat`).
//! - `mmo` ([`Walker`]): each player joins the world, walks at its call rate and keeps
//!   an area-of-interest subscription around itself, moved as it moves
//!   (`examples/mmo`). Positions are the stamps of update latency.
//! - `bank` ([`Banker`]): each connection keeps a number of transfers in flight
//!   between accounts picked with a skew (`examples/bank`).

use hashbrown::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tickdb_protocol::{ClientMessage, ServerMessage, TableUpdate};
use tickdb_wasm_abi::{Identity, Reader, Type};

use crate::{Bot, Outbox, SharedRing, StampRing, Stamps};

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

/// How an `mmo` player sees the world.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Interest {
    /// A square around the player, `side` units wide.
    Area { side: f32 },
    /// The whole world.
    All,
    /// Nothing: the player only moves (others see it).
    Blind,
}

impl Interest {
    /// The square that holds, on average, `players` of `total` players spread over
    /// the world.
    pub fn around(players: f64, total: usize) -> Interest {
        let density = total.max(1) as f64 / f64::from(MMO_WORLD * MMO_WORLD);
        let side = (players.max(1.0) / density).sqrt().min(f64::from(MMO_WORLD));
        Interest::Area { side: side as f32 }
    }
}

/// The world's side in `examples/mmo` (its `WORLD_SIZE`).
pub const MMO_WORLD: f32 = 1024.0;
/// The longest single move `examples/mmo` accepts (its `MOVE_MAX`).
pub const MMO_MOVE_MAX: f32 = 32.0;

/// The `mmo` scenario's player: joins as `bot-N`, learns where it was placed, then
/// walks, turning a little at each step, and calls `move_to` at its call rate. Its
/// area of interest (players and NPCs) is one query set; when the player has walked
/// a quarter of the area away from its centre, a new set around it is subscribed and
/// the old one dropped once the new one is applied.
#[derive(Debug)]
pub struct Walker {
    id: usize,
    every: Duration,
    speed: f32,
    interest: Interest,
    stamps: Arc<Stamps>,
    ring: Option<Arc<Mutex<StampRing>>>,
    me: [u8; 32],
    rng: fastrand::Rng,
    /// Position and heading, once known.
    at: Option<(f32, f32, f32)>,
    /// The current area's centre and query set, and the one it replaces.
    area: Option<(f32, f32, u32)>,
    replaced: Option<(f32, f32, u32)>,
    next_set: u32,
    /// Per other player seen: the last stamp seen, so a change seen twice counts
    /// once, and the player's stamps once known.
    seen: HashMap<[u8; 32], (u64, Option<SharedRing>)>,
}

/// The query set of the player's own row, to learn where it was placed.
const OWN_ROW: u32 = 1;

impl Walker {
    /// The reducers the scenario calls, to check the database has them.
    pub const REDUCERS: [&'static str; 2] = ["join", "move_to"];

    /// Player `id`, moving `rate` times a second at `speed` units a second.
    pub fn new(id: usize, rate: f64, speed: f32, interest: Interest, stamps: Arc<Stamps>) -> Walker {
        Walker {
            id,
            every: Duration::from_secs_f64(1.0 / rate.max(1e-3)),
            speed,
            interest,
            stamps,
            ring: None,
            me: [0; 32],
            rng: fastrand::Rng::with_seed(id as u64),
            at: None,
            area: None,
            replaced: None,
            next_set: OWN_ROW + 1,
            seen: HashMap::new(),
        }
    }

    /// A position's stamp: the change a `move_to` makes carries it.
    fn stamp(x: f32, y: f32) -> u64 {
        (u64::from(x.to_bits()) << 32) | u64::from(y.to_bits())
    }

    fn subscribe_area(&mut self, x: f32, y: f32, out: &mut Outbox) {
        if self.interest == Interest::Blind {
            return;
        }
        let query_set_id = self.next_set;
        self.next_set += 1;
        let queries = match self.interest {
            Interest::Blind => return,
            Interest::All => vec!["SELECT * FROM player".to_string(), "SELECT * FROM npc".to_string()],
            Interest::Area { side } => {
                let (x0, y0) = (x - side / 2.0, y - side / 2.0);
                let (x1, y1) = (x0 + side, y0 + side);
                ["player", "npc"]
                    .iter()
                    .map(|t| {
                        format!("SELECT * FROM {t} WHERE x BETWEEN {x0} AND {x1} AND y BETWEEN {y0} AND {y1}")
                    })
                    .collect()
            }
        };
        out.send(ClientMessage::Subscribe { query_set_id, queries, resume_after_tick: 0, resume_epoch: 0 });
        match (self.area, self.replaced) {
            // An area not applied yet is dropped; the one in place stays until then.
            (Some((_, _, pending)), Some(_)) => {
                out.send(ClientMessage::Unsubscribe { query_set_id: pending })
            }
            (current, _) => self.replaced = current,
        }
        self.area = Some((x, y, query_set_id));
    }

    /// Another player's change was seen carrying `stamp`: its latency, once.
    fn saw(&mut self, identity: [u8; 32], stamp: u64, out: &mut Outbox, now: Instant) {
        if identity == self.me {
            return;
        }
        let (last, ring) = self.seen.entry(identity).or_insert((!stamp, None));
        if std::mem::replace(last, stamp) == stamp {
            return;
        }
        if ring.is_none() {
            *ring = self.stamps.ring_of(&identity);
        }
        if let Some(sent) = ring.as_ref().and_then(|r| r.lock().expect("stamp ring lock").sent(stamp)) {
            out.saw(sent, now);
        }
    }

    fn table_update(&mut self, table: &TableUpdate, out: &mut Outbox, now: Instant) {
        if table.table_name != "player" {
            return;
        }
        for row in table.inserts.iter() {
            if let Ok((identity, x, y)) = player_position(row) {
                self.saw(identity, Self::stamp(x, y), out, now);
            }
        }
        let updates = &table.updates;
        let width = PLAYER_COLUMNS.div_ceil(8);
        for (i, key) in updates.keys.iter().enumerate() {
            let (Ok(identity), Some(changed)) =
                (Identity::from_bytes(key), updates.changed.get(i * width..(i + 1) * width))
            else {
                continue;
            };
            if let Ok(Some((x, y))) = moved_to(changed, updates.values.row(i)) {
                self.saw(identity.0, Self::stamp(x, y), out, now);
            }
        }
    }
}

/// `player`'s columns in `examples/mmo`: identity, name, x, y, heading, hp, zone,
/// alive, online.
const PLAYER_COLUMNS: usize = 9;

/// A whole `player` row's identity and position.
fn player_position(row: &[u8]) -> Result<([u8; 32], f32, f32), tickdb_wasm_abi::DecodeError> {
    let mut r = Reader::new(row);
    let identity = Identity::decode(&mut r)?;
    r.skip_str()?;
    Ok((identity.0, f32::decode(&mut r)?, f32::decode(&mut r)?))
}

/// The new position in a `player` update, when both x and y changed: `values` holds
/// the changed columns in order, and only the name (column 1) comes before x.
fn moved_to(changed: &[u8], values: &[u8]) -> Result<Option<(f32, f32)>, tickdb_wasm_abi::DecodeError> {
    let bit = |c: usize| changed[c / 8] & (1 << (c % 8)) != 0;
    if !(bit(2) && bit(3)) || bit(0) {
        return Ok(None);
    }
    let mut r = Reader::new(values);
    if bit(1) {
        r.skip_str()?;
    }
    Ok(Some((f32::decode(&mut r)?, f32::decode(&mut r)?)))
}

impl Bot for Walker {
    fn connected(&mut self, identity: [u8; 32], out: &mut Outbox, now: Instant) {
        self.me = identity;
        self.ring = Some(self.stamps.ring(identity));
        self.subscribe_own_row(out);
        out.call("join", format!("bot-{}", self.id).to_bytes(), now);
    }

    fn message(&mut self, message: &ServerMessage, out: &mut Outbox, now: Instant) {
        match message {
            ServerMessage::SubscribeApplied { query_set_id: OWN_ROW, tables, .. } => {
                let rows = tables.iter().filter(|t| t.table_name == "player").flat_map(|t| t.rows.iter());
                self.own_row(rows, out);
            }
            ServerMessage::SubscribeApplied { query_set_id, .. } => {
                // The new area is in place: drop the one it replaces.
                if self.area.is_some_and(|(_, _, set)| set == *query_set_id)
                    && let Some((_, _, old)) = self.replaced.take()
                {
                    out.send(ClientMessage::Unsubscribe { query_set_id: old });
                }
            }
            ServerMessage::SubscriptionError { query_set_id, .. } => {
                // The new area was refused: keep the old one, as if around here, so the
                // next try comes after another stretch of walking (the swarm counts it).
                if self.area.is_some_and(|(_, _, set)| set == *query_set_id)
                    && let (Some((_, _, old)), Some((x, y, _))) = (self.replaced.take(), self.at)
                {
                    self.area = Some((x, y, old));
                }
            }
            ServerMessage::TickUpdate { query_sets, .. } => {
                for set in query_sets {
                    if set.query_set_id == OWN_ROW {
                        self.own_row(inserted_players(&set.tables), out);
                        continue;
                    }
                    for table in &set.tables {
                        self.table_update(table, out, now);
                    }
                }
            }
            ServerMessage::ReducerResult { changes, outcome, .. } => {
                if let Some(set) = changes.iter().find(|s| s.query_set_id == OWN_ROW) {
                    self.own_row(inserted_players(&set.tables), out);
                }
                if outcome.is_err() && self.at.take().is_some() {
                    // A move was refused: the server's position is not ours. Learn it
                    // again before walking on.
                    self.subscribe_own_row(out);
                }
            }
            _ => {}
        }
    }

    fn timer(&mut self, out: &mut Outbox, now: Instant) -> Option<Instant> {
        let next = Some(now + self.every);
        let Some((x, y, heading)) = self.at else { return next };
        let heading = heading + (self.rng.f32() - 0.5) * 0.6;
        let step = self.speed * self.every.as_secs_f32();
        let (mut x, mut y, mut heading) = (x + heading.cos() * step, y + heading.sin() * step, heading);
        if !(1.0..MMO_WORLD - 1.0).contains(&x) || !(1.0..MMO_WORLD - 1.0).contains(&y) {
            // Turn back at the world's edge.
            heading += std::f32::consts::PI;
            (x, y) = (x.clamp(1.0, MMO_WORLD - 1.0), y.clamp(1.0, MMO_WORLD - 1.0));
        }
        self.at = Some((x, y, heading));
        if let Some(ring) = &self.ring {
            ring.lock().expect("stamp ring lock").stamp(Self::stamp(x, y), now);
        }
        let mut args = Vec::with_capacity(12);
        (x, y, heading.rem_euclid(std::f32::consts::TAU)).encode(&mut args);
        out.call("move_to", args, now);
        if let (Interest::Area { side }, Some((cx, cy, _))) = (self.interest, self.area)
            && ((x - cx).abs() > side / 4.0 || (y - cy).abs() > side / 4.0)
            && self.replaced.is_none()
        {
            self.subscribe_area(x, y, out);
        }
        next
    }
}

impl Walker {
    fn subscribe_own_row(&self, out: &mut Outbox) {
        let hex: String = self.me.iter().map(|b| format!("{b:02x}")).collect();
        let queries = vec![format!("SELECT * FROM player WHERE identity = '{hex}'")];
        out.send(ClientMessage::Subscribe {
            query_set_id: OWN_ROW,
            queries,
            resume_after_tick: 0,
            resume_epoch: 0,
        });
    }
}

fn inserted_players(tables: &[TableUpdate]) -> impl Iterator<Item = &[u8]> {
    tables.iter().filter(|t| t.table_name == "player").flat_map(|t| t.inserts.iter())
}

impl Walker {
    /// The player's own row arrived (after `join`): where it was placed. Then the
    /// own-row set is dropped and the area of interest subscribed.
    fn own_row<'r>(&mut self, mut rows: impl Iterator<Item = &'r [u8]>, out: &mut Outbox) {
        if self.at.is_some() {
            return;
        }
        if let Some(Ok((_, x, y))) = rows.next().map(player_position) {
            self.at = Some((x, y, self.rng.f32() * std::f32::consts::TAU));
            out.send(ClientMessage::Unsubscribe { query_set_id: OWN_ROW });
            self.subscribe_area(x, y, out);
        }
    }
}

/// The number of accounts in `examples/bank` (its `ACCOUNTS`).
pub const BANK_ACCOUNTS: u64 = 10_000;

/// The `bank` scenario's connection: keeps `in_flight` transfers outstanding, each of
/// 1 to 100 between two accounts picked with a skew: account ⌊n·u³⌋ for uniform u,
/// so the hottest 1% of accounts take about a fifth of the picks.
#[derive(Debug)]
pub struct Banker {
    in_flight: usize,
    rng: fastrand::Rng,
}

impl Banker {
    /// The reducers the scenario calls, to check the database has them.
    pub const REDUCERS: [&'static str; 1] = ["transfer"];

    pub fn new(id: usize, in_flight: usize) -> Banker {
        Banker { in_flight: in_flight.max(1), rng: fastrand::Rng::with_seed(0xba4c ^ id as u64) }
    }

    fn account(&mut self) -> u64 {
        let u = self.rng.f64();
        ((BANK_ACCOUNTS as f64 * u * u * u) as u64).min(BANK_ACCOUNTS - 1)
    }

    fn transfer(&mut self, out: &mut Outbox, now: Instant) {
        let from = self.account();
        let mut to = self.account();
        if to == from {
            to = (from + 1) % BANK_ACCOUNTS;
        }
        let amount = self.rng.i64(1..=100);
        let mut args = Vec::with_capacity(24);
        (from, to, amount).encode(&mut args);
        out.call("transfer", args, now);
    }
}

impl Bot for Banker {
    fn connected(&mut self, _: [u8; 32], out: &mut Outbox, now: Instant) {
        for _ in 0..self.in_flight {
            self.transfer(out, now);
        }
    }

    fn message(&mut self, message: &ServerMessage, out: &mut Outbox, now: Instant) {
        if matches!(message, ServerMessage::ReducerResult { .. }) {
            while out.in_flight() < self.in_flight {
                self.transfer(out, now);
            }
        }
    }

    fn timer(&mut self, _: &mut Outbox, _: Instant) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
    use tickdb_protocol::{RowList, TableRows};

    use super::*;

    fn subscribed(out: &mut Outbox) -> Vec<(u32, Vec<String>)> {
        let subscribes = out.messages.iter().filter_map(|m| match m {
            ClientMessage::Subscribe { query_set_id, queries, .. } => Some((*query_set_id, queries.clone())),
            _ => None,
        });
        subscribes.collect()
    }

    fn unsubscribed(out: &Outbox) -> Vec<u32> {
        let unsubscribes = out.messages.iter().filter_map(|m| match m {
            ClientMessage::Unsubscribe { query_set_id } => Some(*query_set_id),
            _ => None,
        });
        unsubscribes.collect()
    }

    /// A walker learns where it was placed, subscribes the area around it, and as it
    /// walks away subscribes a new area around where it is, dropping the old one once
    /// the new one is applied.
    #[test]
    fn a_walkers_area_of_interest_follows_it() {
        let now = Instant::now();
        let mut walker = Walker::new(0, 20.0, 300.0, Interest::Area { side: 100.0 }, Arc::default());
        let mut out = Outbox::default();
        walker.connected([1; 32], &mut out, now);
        assert_eq!(subscribed(&mut out)[0].0, OWN_ROW);
        assert_eq!(out.in_flight(), 1, "it joins");
        out.messages.clear();

        let mut rows = RowList::default();
        rows.push(&(Identity([1; 32]), "bot-0".to_string(), 500.0f32, 500.0f32).to_bytes());
        let tables = vec![TableRows { table_id: 0, table_name: "player".into(), rows }];
        let applied = |set| ServerMessage::SubscribeApplied {
            query_set_id: set,
            tick: 1,
            tables: if set == OWN_ROW { tables.clone() } else { Vec::new() },
            resumed: false,
            missed: Vec::new(),
        };
        walker.message(&applied(OWN_ROW), &mut out, now);
        assert_eq!(unsubscribed(&out), [OWN_ROW]);
        let first = subscribed(&mut out);
        assert_eq!(first[0].0, 2);
        assert!(
            first[0].1[0].contains("x BETWEEN 450 AND 550 AND y BETWEEN 450 AND 550"),
            "{:?}",
            first[0].1
        );
        out.messages.clear();

        // 15 units a step: past a quarter of the area (25) within two steps.
        let mut steps = 0;
        while subscribed(&mut out).is_empty() {
            walker.timer(&mut out, now);
            steps += 1;
            assert!(steps <= 3, "the area did not follow");
        }
        let (x, y, _) = walker.at.unwrap();
        let (set, queries) = subscribed(&mut out).remove(0);
        assert_eq!(set, 3);
        assert!(queries[1].contains(&format!("x BETWEEN {} AND {}", x - 50.0, x + 50.0)), "{queries:?}");
        assert!(
            queries[1].starts_with("SELECT * FROM npc")
                && queries[1].contains(&format!("y BETWEEN {}", y - 50.0))
        );
        assert!(unsubscribed(&out).is_empty(), "the old area stays until the new one is applied");
        out.messages.clear();
        walker.message(&applied(3), &mut out, now);
        assert_eq!(unsubscribed(&out), [2]);
        out.messages.clear();

        // A refused move: it stops and learns where the server has it, then subscribes
        // the area around there; a refused area leaves the old one in place.
        let refused = ServerMessage::ReducerResult {
            request_id: 9,
            tick: 2,
            outcome: Err("too far".into()),
            duration_us: 0,
            changes: Vec::new(),
        };
        walker.message(&refused, &mut out, now);
        assert_eq!(subscribed(&mut out)[0].0, OWN_ROW);
        out.messages.clear();
        walker.timer(&mut out, now);
        assert!(out.messages.is_empty(), "no walking until it knows where it is");
        walker.message(&applied(OWN_ROW), &mut out, now);
        assert_eq!(walker.at.map(|(x, y, _)| (x, y)), Some((500.0, 500.0)));
        assert_eq!(subscribed(&mut out)[0].0, 4);
        let error = ServerMessage::SubscriptionError { query_set_id: 4, message: "too many".into() };
        walker.message(&error, &mut out, now);
        assert_eq!((walker.area.map(|a| a.2), walker.replaced), (Some(3), None));
    }

    /// Bank accounts are skewed towards the low numbers and never out of range.
    #[test]
    fn bank_accounts_are_skewed_and_in_range() {
        let mut banker = Banker::new(1, 4);
        let picks: Vec<u64> = (0..100_000).map(|_| banker.account()).collect();
        assert!(picks.iter().all(|&a| a < BANK_ACCOUNTS));
        let hot = picks.iter().filter(|&&a| a < BANK_ACCOUNTS / 100).count();
        // ⌊n·u³⌋ < n/100 when u < 0.01^(1/3) ≈ 0.215.
        assert!((19_000..24_000).contains(&hot), "the hottest 1% took {hot} of 100,000 picks");
    }
}
