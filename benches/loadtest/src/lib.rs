//! `tickdb-loadtest`: simulated players for load tests. Thousands of them run in one
//! process: they share a few event-loop threads (mio), each thread serving its
//! share of the connections, with no thread per player. A player is a [`Bot`]: it
//! gets each message from the server and a timer, and queues client messages.
//!
//! The swarm measures, with hdrhistogram: reducer round trips (a call's send to its
//! result), update latency (a player's call to another player seeing its change,
//! matched exactly through [`Stamps`]) and connect times; it counts calls, results,
//! errors, updates and bytes received, and disconnects by reason; and it keeps the
//! same per second of the run, for a report over time ([`chart`]). [`scenarios`] holds
//! the ready players, and the `tickdb loadtest` command runs them.

use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use tickdb_protocol::{ClientMessage, Compression, ServerMessage, frame, unframe};
use tungstenite::handshake::MidHandshake;
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::{HandshakeError, Message, WebSocket};

/// What a bot may do: queue messages to the server.
#[derive(Debug, Default)]
pub struct Outbox {
    messages: Vec<ClientMessage>,
    next_request: u32,
    /// Calls sent and not answered: request id → when sent.
    pending: HashMap<u32, Instant>,
    /// Update latencies the bot observed, in µs, for the swarm to record.
    seen_us: Vec<u64>,
}

impl Outbox {
    /// Calls `reducer` with encoded `args`; its round trip is measured.
    pub fn call(&mut self, reducer: &str, args: Vec<u8>, now: Instant) -> u32 {
        self.next_request = self.next_request.wrapping_add(1);
        let request_id = self.next_request;
        self.pending.insert(request_id, now);
        self.messages.push(ClientMessage::CallReducer { request_id, reducer: reducer.into(), args });
        request_id
    }

    /// Sends any other message (subscriptions, say).
    pub fn send(&mut self, message: ClientMessage) {
        self.messages.push(message);
    }

    /// Calls sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The bot saw, at `now`, the change of a call sent at `sent` (see [`Stamps`]).
    pub fn saw(&mut self, sent: Instant, now: Instant) {
        self.seen_us.push(now.saturating_duration_since(sent).as_micros() as u64);
    }
}

/// Stamps: when each player sent the calls whose changes other players will see, so
/// update latency is measured exactly. A player's bot records a key for each call
/// (a value the change will carry, such as the position moved to); a bot that sees
/// that value in another player's row looks the key up and gets the send time.
/// Each player keeps its last [`Stamps::KEPT`] keys.
#[derive(Debug, Default)]
pub struct Stamps {
    shards: [RwLock<HashMap<[u8; 32], SharedRing>>; 32],
}

/// A player's stamps, shared by its bot and those that see it.
pub type SharedRing = Arc<Mutex<StampRing>>;

/// One player's recent stamps.
#[derive(Debug, Default)]
pub struct StampRing {
    keys: Vec<(u64, Instant)>,
    next: usize,
}

impl StampRing {
    /// Records that the call carrying `key` was sent at `at`.
    pub fn stamp(&mut self, key: u64, at: Instant) {
        if self.keys.len() < Stamps::KEPT {
            self.keys.push((key, at));
        } else {
            self.keys[self.next] = (key, at);
        }
        self.next = (self.next + 1) % Stamps::KEPT;
    }

    /// When the call carrying `key` was sent, if it is among the recent ones. The
    /// newest are looked at first: a change is seen soon after it is sent.
    pub fn sent(&self, key: u64) -> Option<Instant> {
        // Slots before `next` were written last (newest last); those after, earlier.
        let (recent, earlier) = self.keys.split_at(self.next.min(self.keys.len()));
        recent.iter().rev().chain(earlier.iter().rev()).find(|(k, _)| *k == key).map(|(_, at)| *at)
    }
}

impl Stamps {
    /// The stamps each player keeps: at 20 calls a second, 1.6 s of them.
    pub const KEPT: usize = 32;

    fn shard(&self, identity: &[u8; 32]) -> &RwLock<HashMap<[u8; 32], Arc<Mutex<StampRing>>>> {
        &self.shards[usize::from(identity[0]) % self.shards.len()]
    }

    /// The ring of the player `identity`, made on first use.
    pub fn ring(&self, identity: [u8; 32]) -> Arc<Mutex<StampRing>> {
        let shard = self.shard(&identity);
        if let Some(ring) = shard.read().expect("stamps lock").get(&identity) {
            return Arc::clone(ring);
        }
        Arc::clone(shard.write().expect("stamps lock").entry(identity).or_default())
    }

    /// The ring of the player `identity`, if it has one (observers keep it).
    pub fn ring_of(&self, identity: &[u8; 32]) -> Option<Arc<Mutex<StampRing>>> {
        self.shard(identity).read().expect("stamps lock").get(identity).map(Arc::clone)
    }
}

/// A simulated player.
pub trait Bot: Send {
    /// The connection is open (the server's `IdentityToken` arrived).
    fn connected(&mut self, identity: [u8; 32], out: &mut Outbox, now: Instant);
    /// A message from the server.
    fn message(&mut self, message: &ServerMessage, out: &mut Outbox, now: Instant);
    /// The bot's timer, as it set it: returns when to be called next.
    fn timer(&mut self, out: &mut Outbox, now: Instant) -> Option<Instant>;
}

/// Where the swarm connects, and how many players over how many threads.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// The server's address.
    pub addr: SocketAddr,
    pub database: String,
    pub players: usize,
    pub threads: usize,
    /// New connections per second while ramping up.
    pub ramp_per_second: f64,
    /// How long the swarm runs after the ramp-up.
    pub duration: Duration,
    /// Measurements start this long after the ramp-up.
    pub warmup: Duration,
    /// Whether the server compresses what it sends (LZ4); bytes are counted as sent.
    pub lz4: bool,
}

/// Counters the swarm's threads keep up to date while it runs, for a progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub connected: AtomicU64,
    pub calls: AtomicU64,
    pub results: AtomicU64,
    pub updates: AtomicU64,
    pub disconnects: AtomicU64,
}

/// What the players did and received over some time: one second of the run, or the
/// whole measured time.
#[derive(Debug, Clone)]
pub struct Counts {
    pub calls: u64,
    pub results: u64,
    pub errors: u64,
    pub updates: u64,
    /// All bytes received, and those of tick updates (what seeing the world costs).
    pub bytes: u64,
    pub update_bytes: u64,
    pub round_trip_us: Histogram<u64>,
    /// A player's call to another player seeing its change.
    pub update_latency_us: Histogram<u64>,
}

impl Counts {
    /// With histograms of `digits` significant digits.
    fn new(digits: u8) -> Counts {
        let histogram = || Histogram::new(digits).expect("2 or 3 significant digits is valid");
        Counts {
            calls: 0,
            results: 0,
            errors: 0,
            updates: 0,
            bytes: 0,
            update_bytes: 0,
            round_trip_us: histogram(),
            update_latency_us: histogram(),
        }
    }

    fn merge(&mut self, other: &Counts) {
        self.calls += other.calls;
        self.results += other.results;
        self.errors += other.errors;
        self.updates += other.updates;
        self.bytes += other.bytes;
        self.update_bytes += other.update_bytes;
        self.round_trip_us.add(&other.round_trip_us).expect("same bounds");
        self.update_latency_us.add(&other.update_latency_us).expect("same bounds");
    }
}

/// One second of a run, from the start of the ramp-up.
#[derive(Debug, Clone)]
pub struct Second {
    pub counts: Counts,
    pub connects: u64,
    pub disconnects: u64,
}

impl Second {
    fn new() -> Second {
        // Two significant digits: enough for a chart, small enough to keep one a second.
        Second { counts: Counts::new(2), connects: 0, disconnects: 0 }
    }
}

/// What a swarm measured. `totals` cover the measured time (after ramp-up and
/// warm-up); `seconds` the whole run.
#[derive(Debug)]
pub struct SwarmReport {
    pub totals: Counts,
    pub connect_us: Histogram<u64>,
    /// Subscriptions the server refused.
    pub subscription_errors: u64,
    pub connected: u64,
    /// Disconnects and failed connects, by reason.
    pub disconnects: HashMap<String, u64>,
    /// The measured time (after warm-up).
    pub measured: Duration,
    /// When measuring started, from the start of the run.
    pub measured_from: Duration,
    /// The run, second by second from its start.
    pub seconds: Vec<Second>,
}

impl SwarmReport {
    fn new() -> SwarmReport {
        SwarmReport {
            totals: Counts::new(3),
            connect_us: Histogram::new(3).expect("3 significant digits is valid"),
            subscription_errors: 0,
            connected: 0,
            disconnects: HashMap::new(),
            measured: Duration::ZERO,
            measured_from: Duration::ZERO,
            seconds: Vec::new(),
        }
    }

    /// Counts something in second `sec`, and in the totals when `measuring`.
    fn count(&mut self, sec: usize, measuring: bool, f: impl Fn(&mut Counts)) {
        f(&mut self.seconds[sec].counts);
        if measuring {
            f(&mut self.totals);
        }
    }

    /// The second `at` falls in, made on first use.
    fn second(&mut self, at: Duration) -> &mut Second {
        let i = self.second_index(at);
        &mut self.seconds[i]
    }

    fn second_index(&mut self, at: Duration) -> usize {
        let i = at.as_secs() as usize;
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, Second::new);
        }
        i
    }

    fn merge(&mut self, other: SwarmReport) {
        self.totals.merge(&other.totals);
        self.connect_us.add(&other.connect_us).expect("same bounds");
        self.subscription_errors += other.subscription_errors;
        self.connected += other.connected;
        for (why, n) in other.disconnects {
            *self.disconnects.entry(why).or_default() += n;
        }
        self.measured = self.measured.max(other.measured);
        self.measured_from = self.measured_from.max(other.measured_from);
        for (i, second) in other.seconds.iter().enumerate() {
            let mine = self.second(Duration::from_secs(i as u64));
            mine.counts.merge(&second.counts);
            mine.connects += second.connects;
            mine.disconnects += second.disconnects;
        }
    }
}

type Socket = mio::net::TcpStream;

enum State {
    Handshaking(MidHandshake<ClientHandshake<Socket>>),
    Open(Box<WebSocket<Socket>>),
    Closed,
}

struct Player {
    state: State,
    bot: Box<dyn Bot>,
    out: Outbox,
    started: Instant,
}

/// Runs the swarm: `make_bot(i)` makes player `i`. Returns when the duration is up
/// or `stop` is set.
pub fn run(
    config: &SwarmConfig,
    make_bot: &(dyn Fn(usize) -> Box<dyn Bot> + Sync),
    stop: &AtomicBool,
    live: &Live,
) -> std::io::Result<SwarmReport> {
    let threads = config.threads.max(1);
    let started = Instant::now();
    let mut report = SwarmReport::new();
    std::thread::scope(|scope| {
        let loops: Vec<_> = (0..threads)
            .map(|t| {
                let players: Vec<usize> = (t..config.players).step_by(threads).collect();
                scope.spawn(move || EventLoop::run(config, &players, make_bot, started, stop, live))
            })
            .collect();
        for handle in loops {
            match handle.join() {
                Ok(Ok(part)) => report.merge(part),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(std::io::Error::other("a load-test thread panicked")),
            }
        }
        Ok(())
    })?;
    Ok(report)
}

struct EventLoop<'a> {
    config: &'a SwarmConfig,
    live: &'a Live,
    poll: Poll,
    players: Vec<Player>,
    timers: BinaryHeap<std::cmp::Reverse<(Instant, usize)>>,
    report: SwarmReport,
    started: Instant,
    measure_from: Instant,
}

impl<'a> EventLoop<'a> {
    fn run(
        config: &'a SwarmConfig,
        ids: &[usize],
        make_bot: &(dyn Fn(usize) -> Box<dyn Bot> + Sync),
        started: Instant,
        stop: &AtomicBool,
        live: &'a Live,
    ) -> std::io::Result<SwarmReport> {
        let ramp = Duration::from_secs_f64(config.players as f64 / config.ramp_per_second.max(1e-3));
        let measure_from = started + ramp + config.warmup;
        let end = measure_from + config.duration;
        let mut this = EventLoop {
            config,
            live,
            poll: Poll::new()?,
            players: Vec::with_capacity(ids.len()),
            timers: BinaryHeap::new(),
            report: SwarmReport::new(),
            started,
            measure_from,
        };
        let mut events = Events::with_capacity(1024);
        let mut next = 0;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            // Ramp: player i connects at i / ramp_per_second.
            while next < ids.len()
                && started + Duration::from_secs_f64(ids[next] as f64 / config.ramp_per_second.max(1e-3))
                    <= Instant::now()
            {
                this.connect(make_bot(ids[next]));
                next += 1;
            }
            let wake = this.timers.peek().map(|r| r.0.0).unwrap_or(end).min(end);
            let timeout = wake.saturating_duration_since(Instant::now()).min(Duration::from_millis(5));
            if let Err(e) = this.poll.poll(&mut events, Some(timeout))
                && e.kind() != ErrorKind::Interrupted
            {
                return Err(e);
            }
            for event in &events {
                this.ready(event.token().0);
            }
            this.fire_timers();
        }
        this.report.measured = Instant::now().saturating_duration_since(measure_from);
        this.report.measured_from = measure_from.saturating_duration_since(started);
        Ok(this.report)
    }

    fn measuring(&self) -> bool {
        Instant::now() >= self.measure_from
    }

    fn connect(&mut self, bot: Box<dyn Bot>) {
        let index = self.players.len();
        let started = Instant::now();
        let mut player = Player { state: State::Closed, bot, out: Outbox::default(), started };
        match self.open(index) {
            Ok(state) => player.state = state,
            Err(why) => self.disconnected(why),
        }
        self.players.push(player);
        self.advance(index);
    }

    fn open(&mut self, index: usize) -> Result<State, String> {
        let mut socket = Socket::connect(self.config.addr).map_err(|e| format!("connect: {}", e.kind()))?;
        socket.set_nodelay(true).map_err(|e| format!("connect: {e}"))?;
        self.poll
            .registry()
            .register(&mut socket, Token(index), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("register: {e}"))?;
        // Light results: a call's own changes come in the tick's update, which the bots
        // read anyway, and not in its result as well.
        let compression = if self.config.lz4 { "&compression=lz4" } else { "" };
        let (addr, database) = (self.config.addr, &self.config.database);
        let url = format!("ws://{addr}/v1/database/{database}/subscribe?light=true{compression}");
        // tungstenite zero-fills a read buffer's worth on every read: 128 KiB by
        // default, which cost more than the bots' own work.
        let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4 << 10);
        match tungstenite::client::client_with_config(url, socket, Some(config)) {
            Ok((ws, _)) => Ok(State::Open(Box::new(ws))),
            Err(HandshakeError::Interrupted(mid)) => Ok(State::Handshaking(mid)),
            Err(HandshakeError::Failure(e)) => Err(format!("handshake: {e}")),
        }
    }

    fn disconnected(&mut self, why: String) {
        self.live.disconnects.fetch_add(1, Ordering::Relaxed);
        self.report.second(self.started.elapsed()).disconnects += 1;
        *self.report.disconnects.entry(why).or_default() += 1;
    }

    fn ready(&mut self, index: usize) {
        let Some(player) = self.players.get_mut(index) else { return };
        if let State::Handshaking(_) = player.state {
            let State::Handshaking(mid) = std::mem::replace(&mut player.state, State::Closed) else {
                unreachable!()
            };
            player.state = match mid.handshake() {
                Ok((ws, _)) => State::Open(Box::new(ws)),
                Err(HandshakeError::Interrupted(mid)) => State::Handshaking(mid),
                Err(HandshakeError::Failure(e)) => {
                    self.disconnected(format!("handshake: {e}"));
                    return;
                }
            };
        }
        self.advance(index);
    }

    /// Reads what arrived, lets the bot answer, writes what it queued.
    fn advance(&mut self, index: usize) {
        let measuring = self.measuring();
        let (report, started) = (&mut self.report, self.started);
        let player = &mut self.players[index];
        let State::Open(ws) = &mut player.state else { return };
        let mut gone = None;
        loop {
            let bytes = match ws.read() {
                Ok(Message::Binary(bytes)) => bytes,
                Ok(Message::Close(frame)) => {
                    gone = Some(format!(
                        "closed by the server: {}",
                        frame.map(|f| f.reason.to_string()).unwrap_or_default()
                    ));
                    break;
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    gone = Some(format!("read: {e}"));
                    break;
                }
            };
            let now = Instant::now();
            let sec = report.second_index(now.saturating_duration_since(started));
            let len = bytes.len() as u64;
            report.count(sec, measuring, |c| c.bytes += len);
            let message = match unframe(&bytes, 64 << 20).and_then(|b| ServerMessage::decode(&b)) {
                Ok(message) => message,
                Err(e) => {
                    gone = Some(format!("bad message: {e}"));
                    break;
                }
            };
            match &message {
                ServerMessage::IdentityToken { identity, .. } => {
                    report.seconds[sec].connects += 1;
                    report.connected += 1;
                    self.live.connected.fetch_add(1, Ordering::Relaxed);
                    let us = now.duration_since(player.started).as_micros() as u64;
                    let _ = report.connect_us.record(us);
                    player.bot.connected(*identity, &mut player.out, now);
                    if let Some(at) = player.bot.timer(&mut player.out, now) {
                        self.timers.push(std::cmp::Reverse((at, index)));
                    }
                    continue;
                }
                ServerMessage::ReducerResult { request_id, outcome, .. } => {
                    if let Some(sent) = player.out.pending.remove(request_id) {
                        let us = now.duration_since(sent).as_micros() as u64;
                        let failed = u64::from(outcome.is_err());
                        report.count(sec, measuring, |c| {
                            c.results += 1;
                            c.errors += failed;
                            let _ = c.round_trip_us.record(us);
                        });
                        self.live.results.fetch_add(1, Ordering::Relaxed);
                    }
                }
                ServerMessage::TickUpdate { .. } => {
                    report.count(sec, measuring, |c| {
                        c.updates += 1;
                        c.update_bytes += len;
                    });
                    self.live.updates.fetch_add(1, Ordering::Relaxed);
                }
                ServerMessage::SubscriptionError { .. } => {
                    report.subscription_errors += u64::from(measuring);
                }
                _ => {}
            }
            player.bot.message(&message, &mut player.out, now);
            for us in player.out.seen_us.drain(..) {
                report.count(sec, measuring, |c| {
                    let _ = c.update_latency_us.record(us);
                });
            }
        }
        if gone.is_none() {
            let calls = player.out.messages.iter().filter(|m| matches!(m, ClientMessage::CallReducer { .. }));
            let calls = calls.count() as u64;
            let sec = report.second_index(started.elapsed());
            report.count(sec, measuring, |c| c.calls += calls);
            self.live.calls.fetch_add(calls, Ordering::Relaxed);
            gone = flush(ws, &mut player.out).err();
        }
        if let Some(why) = gone {
            player.state = State::Closed;
            self.disconnected(why);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(std::cmp::Reverse((at, index))) = self.timers.peek().copied() {
            if at > now {
                return;
            }
            self.timers.pop();
            let player = &mut self.players[index];
            if !matches!(player.state, State::Open(_)) {
                continue;
            }
            if let Some(at) = player.bot.timer(&mut player.out, now) {
                self.timers.push(std::cmp::Reverse((at, index)));
            }
            self.advance(index);
        }
    }
}

/// Writes the bot's queued messages.
fn flush(ws: &mut WebSocket<Socket>, out: &mut Outbox) -> Result<(), String> {
    for message in out.messages.drain(..) {
        match ws.write(Message::Binary(frame(Compression::None, &message.encode()).into())) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    match ws.flush() {
        Ok(()) => Ok(()),
        Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(format!("write: {e}")),
    }
}

pub mod chart;
pub mod scenarios;

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring keeps the last `KEPT` stamps, finds each of them, and forgets older ones.
    #[test]
    fn stamp_rings_keep_the_latest_stamps() {
        let start = Instant::now();
        let mut ring = StampRing::default();
        let at = |i: u64| start + Duration::from_millis(i);
        for i in 0..(Stamps::KEPT as u64 + 10) {
            ring.stamp(i, at(i));
        }
        for i in 10..(Stamps::KEPT as u64 + 10) {
            assert_eq!(ring.sent(i), Some(at(i)), "stamp {i}");
        }
        assert_eq!(ring.sent(9), None, "the oldest were overwritten");
        let stamps = Stamps::default();
        let ring = stamps.ring([7; 32]);
        ring.lock().unwrap().stamp(42, start);
        assert!(Arc::ptr_eq(&ring, &stamps.ring_of(&[7; 32]).unwrap()));
        assert!(stamps.ring_of(&[8; 32]).is_none());
    }
}
