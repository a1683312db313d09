//! `tickdb-loadtest`: simulated players for load tests. Thousands of them run in one
//! process: they share a few event-loop threads (mio), each thread serving its
//! share of the connections, with no thread per player. A player is a [`Bot`]: it
//! gets each message from the server and a timer, and queues client messages.
//!
//! The swarm measures, with hdrhistogram: reducer round trips (a call's send to its
//! result) and connect times; it counts calls, results, errors, updates and bytes
//! received, and disconnects by reason. [`scenarios`] holds the ready players, and
//! the `tickdb loadtest` command runs them.

use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// What a swarm measured.
#[derive(Debug)]
pub struct SwarmReport {
    pub round_trip_us: Histogram<u64>,
    pub connect_us: Histogram<u64>,
    pub calls: u64,
    pub results: u64,
    pub errors: u64,
    pub updates: u64,
    pub bytes_received: u64,
    pub connected: u64,
    /// Disconnects and failed connects, by reason.
    pub disconnects: HashMap<String, u64>,
    /// The measured time (after warm-up).
    pub measured: Duration,
}

impl SwarmReport {
    fn new() -> SwarmReport {
        SwarmReport {
            round_trip_us: Histogram::new(3).expect("3 significant digits is valid"),
            connect_us: Histogram::new(3).expect("3 significant digits is valid"),
            calls: 0,
            results: 0,
            errors: 0,
            updates: 0,
            bytes_received: 0,
            connected: 0,
            disconnects: HashMap::new(),
            measured: Duration::ZERO,
        }
    }

    fn merge(&mut self, other: SwarmReport) {
        self.round_trip_us.add(&other.round_trip_us).expect("same bounds");
        self.connect_us.add(&other.connect_us).expect("same bounds");
        self.calls += other.calls;
        self.results += other.results;
        self.errors += other.errors;
        self.updates += other.updates;
        self.bytes_received += other.bytes_received;
        self.connected += other.connected;
        for (why, n) in other.disconnects {
            *self.disconnects.entry(why).or_default() += n;
        }
        self.measured = self.measured.max(other.measured);
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
        let url = format!("ws://{}/v1/database/{}/subscribe", self.config.addr, self.config.database);
        match tungstenite::client::client(url, socket) {
            Ok((ws, _)) => Ok(State::Open(Box::new(ws))),
            Err(HandshakeError::Interrupted(mid)) => Ok(State::Handshaking(mid)),
            Err(HandshakeError::Failure(e)) => Err(format!("handshake: {e}")),
        }
    }

    fn disconnected(&mut self, why: String) {
        self.live.disconnects.fetch_add(1, Ordering::Relaxed);
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
            if measuring {
                self.report.bytes_received += bytes.len() as u64;
            }
            let message = match unframe(&bytes, 64 << 20).and_then(|b| ServerMessage::decode(&b)) {
                Ok(message) => message,
                Err(e) => {
                    gone = Some(format!("bad message: {e}"));
                    break;
                }
            };
            match &message {
                ServerMessage::IdentityToken { identity, .. } => {
                    self.report.connected += 1;
                    self.live.connected.fetch_add(1, Ordering::Relaxed);
                    let us = now.duration_since(player.started).as_micros() as u64;
                    let _ = self.report.connect_us.record(us);
                    player.bot.connected(*identity, &mut player.out, now);
                    if let Some(at) = player.bot.timer(&mut player.out, now) {
                        self.timers.push(std::cmp::Reverse((at, index)));
                    }
                    continue;
                }
                ServerMessage::ReducerResult { request_id, outcome, .. } => {
                    if let Some(sent) = player.out.pending.remove(request_id)
                        && measuring
                    {
                        self.report.results += 1;
                        self.live.results.fetch_add(1, Ordering::Relaxed);
                        self.report.errors += u64::from(outcome.is_err());
                        let _ = self.report.round_trip_us.record(now.duration_since(sent).as_micros() as u64);
                    }
                }
                ServerMessage::TickUpdate { .. } if measuring => {
                    self.report.updates += 1;
                    self.live.updates.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            player.bot.message(&message, &mut player.out, now);
        }
        if gone.is_none() {
            let before = self.report.calls;
            gone = flush(ws, &mut player.out, measuring, &mut self.report.calls).err();
            self.live.calls.fetch_add(self.report.calls - before, Ordering::Relaxed);
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

/// Writes the bot's queued messages; counts the calls among them.
fn flush(
    ws: &mut WebSocket<Socket>,
    out: &mut Outbox,
    measuring: bool,
    calls: &mut u64,
) -> Result<(), String> {
    for message in out.messages.drain(..) {
        if measuring && matches!(message, ClientMessage::CallReducer { .. }) {
            *calls += 1;
        }
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

pub mod scenarios;
