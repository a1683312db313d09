//! The network server under load, server and load generator on this one machine.
//!
//! The server runs in a child process (this binary again, with `TICKDB_BENCH_SERVE`
//! set), so that its CPU time and memory are read apart from the load generator's
//! (`/proc/PID/stat` and `status`). The load generator drives thousands of
//! WebSocket clients from one thread with mio, as game clients would be: each its own
//! connection, handshake and subscription.
//!
//! `TICKDB_BENCH_IO_THREADS` sets the server's event loop threads (default: its own).
//!
//! Sections (pass names to pick some; default all):
//! - `fanout`: N clients (default 10,000; `TICKDB_BENCH_CLIENTS`), each subscribed to
//!   one of 100 zones of 1,000 rows; a driver moves all 1,000 rows 20 times a second,
//!   stamping each with its clock. Reported: updates per client per second (20 when
//!   the server holds the rate), latency from the driver's call to a client seeing
//!   the row (p50, p99, max), server CPU, server RSS, bytes per client per second.
//! - `calls`: 64 clients with 40 calls in flight each, for 5 s: reducer calls per
//!   second over WebSocket, for a reducer that writes nothing and for one that inserts
//!   (from clients without subscriptions, and from subscribed ones, whose results
//!   carry their own changes).
//! - `idle`: server memory per idle connection, over 5,000 connections.
//! - `codecs`: real tick updates and initial rows captured from a server, compressed
//!   with LZ4, Snappy, zstd and deflate: size and time, to choose the protocol's codec.
//! - `sends`: the cost of one small send on each of 2,000 loopback connections, with
//!   a `write` call each (what the event loop does) and with io_uring (all of a
//!   round's sends submitted with one system call).

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use tickdb::Type;
use tickdb_protocol::{ClientMessage, Compression, ServerMessage, fb, frame, unframe};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

const ZONES: u32 = 100;
const ROWS: u32 = 1_000;
const HZ: u64 = 20;

fn main() {
    if let Ok(dir) = std::env::var("TICKDB_BENCH_SERVE") {
        return serve(&dir);
    }
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let wasm = tickdb_test_modules::wasm("tickdb-test-bench");
    println!("machine: {} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));
    if run("fanout") {
        let clients =
            std::env::var("TICKDB_BENCH_CLIENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
        fanout(&wasm, clients, Compression::None);
    }
    if run("fanout-lz4") {
        fanout(&wasm, 1_000, Compression::Lz4);
    }
    if run("calls") {
        calls(&wasm, "empty", &[], None);
        calls(&wasm, "insert_item", &7u64.to_bytes(), None);
        // Subscribed callers get their own changes with each result: what computing
        // them costs, with a query the inserts do not match (no updates go out).
        calls(&wasm, "insert_item", &7u64.to_bytes(), Some("SELECT * FROM item WHERE value = 0"));
    }
    if run("idle") {
        idle(&wasm, 5_000);
    }
    if run("codecs") {
        codecs(&wasm);
    }
    if run("sends") {
        sends(2_000, 600);
    }
}

/// The child: a server on an ephemeral port, its address on the first line of stdout.
fn serve(dir: &str) {
    let config = tickdb_net::ServerConfig {
        connections_max: 30_000,
        messages_per_second_max: 1_000_000,
        messages_burst_max: 1_000_000,
        calls_in_flight_max: 4_096,
        ..tickdb_net::ServerConfig::default()
    };
    let config = match std::env::var("TICKDB_BENCH_IO_THREADS").ok().and_then(|n| n.parse().ok()) {
        Some(io_threads) => tickdb_net::ServerConfig { io_threads, ..config },
        None => config,
    };
    std::fs::create_dir_all(dir).unwrap();
    let data = tickdb_engine::store::DataDir::new(dir);
    let server = tickdb_net::start(config, data, "127.0.0.1:0".parse().unwrap()).unwrap();
    println!("{}", server.addr());
    server.wait();
}

/// A server in a child process, with a database `bench` of the bench module.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
    token: String,
}

impl Server {
    fn start(wasm: &[u8]) -> Server {
        let dir = std::env::temp_dir().join(format!("tickdb-bench-net-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("TICKDB_BENCH_SERVE", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = Vec::new();
        let stdout = child.stdout.as_mut().unwrap();
        let mut byte = [0u8];
        while stdout.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let addr = String::from_utf8(line).unwrap().parse().unwrap();
        let token = http(addr, "POST", "/v1/identity", None, b"")["token"].as_str().unwrap().to_string();
        let published = http(addr, "POST", "/v1/database/bench", Some(&token), wasm);
        assert_eq!(published["outcome"], "created", "{published}");
        Server { child, addr, dir, token }
    }

    fn call(&self, reducer: &str, args: &str) {
        let path = format!("/v1/database/bench/call/{reducer}");
        let reply = http(self.addr, "POST", &path, Some(&self.token), args.as_bytes());
        assert!(reply.get("ok").is_some(), "{reply}");
    }

    /// CPU seconds used so far (user and system).
    fn cpu(&self) -> f64 {
        let (user, system) = self.cpu_split();
        user + system
    }

    /// CPU seconds used so far: in user space, and in the kernel.
    fn cpu_split(&self) -> (f64, f64) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        // SAFETY: sysconf has no preconditions.
        #[allow(unsafe_code)]
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (fields[11].parse::<f64>().unwrap() / hz, fields[12].parse::<f64>().unwrap() / hz)
    }

    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One blocking HTTP request; the JSON answer.
fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!("{method} {path} HTTP/1.1\r\n{auth}Content-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    let start = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    serde_json::from_slice(&out[start..]).unwrap()
}

/// A load-generator client: a non-blocking WebSocket.
struct Client {
    ws: WebSocket<TcpStream>,
    compression: Compression,
    bytes: u64,
    updates: u64,
    results: u64,
    in_flight: u32,
}

/// Opens `n` WebSocket connections to `bench`, handshakes in batches (each
/// connection runs `client_connected` on the server, so batching keeps them flowing).
fn connect_all(poll: &Poll, addr: SocketAddr, n: usize, compression: Compression) -> Vec<Client> {
    let query = if compression == Compression::Lz4 { "?compression=lz4" } else { "" };
    let request = format!(
        "GET /v1/database/bench/subscribe{query} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let config = WebSocketConfig::default().read_buffer_size(16 << 10).write_buffer_size(0);
    let mut clients = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut streams: Vec<std::net::TcpStream> = batch
            .iter()
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(request.as_bytes()).unwrap();
                s
            })
            .collect();
        for stream in &mut streams {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            let end = loop {
                let got = stream.read(&mut chunk).unwrap();
                assert!(got > 0, "the server closed during the handshake");
                buf.extend_from_slice(&chunk[..got]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
            };
            assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf));
            stream.set_nonblocking(true).unwrap();
            let mut stream = TcpStream::from_std(stream.try_clone().unwrap());
            let token = Token(clients.len());
            poll.registry().register(&mut stream, token, Interest::READABLE).unwrap();
            let ws = WebSocket::from_partially_read(stream, buf[end..].to_vec(), Role::Client, Some(config));
            clients.push(Client { ws, compression, bytes: 0, updates: 0, results: 0, in_flight: 0 });
        }
    }
    clients
}

impl Client {
    fn send(&mut self, message: &ClientMessage) {
        let bytes = frame(self.compression, &message.encode());
        match self.ws.send(Message::Binary(bytes.into())) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("sending: {e}"),
        }
    }

    /// Reads every message waiting; `seen` gets each one's framed bytes.
    fn read_all(&mut self, mut seen: impl FnMut(&mut Client, &[u8])) {
        loop {
            match self.ws.read() {
                Ok(Message::Binary(bytes)) => {
                    self.bytes += bytes.len() as u64;
                    seen(self, &bytes);
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("reading: {e}"),
            }
        }
    }
}

/// Polls until `done` says so, reading every client that has something.
fn pump(
    poll: &mut Poll,
    clients: &mut [Client],
    mut on: impl FnMut(&mut Client, &[u8]),
    done: impl Fn(&[Client]) -> bool,
) {
    let mut events = Events::with_capacity(4096);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(clients) {
        assert!(Instant::now() < deadline, "the server stopped answering");
        poll.poll(&mut events, Some(Duration::from_millis(10))).unwrap();
        for event in &events {
            clients[event.token().0].read_all(&mut on);
        }
    }
}

fn decode(bytes: &[u8]) -> ServerMessage {
    ServerMessage::decode(&unframe(bytes, 64 << 20).unwrap()).unwrap()
}

/// The stamp of the first updated row of a tick update (the mover's last column), read
/// without building the whole message.
fn stamp_of(bytes: &[u8]) -> Option<u64> {
    let inner = unframe(bytes, 64 << 20).ok()?;
    let message = flatbuffers::root::<fb::ServerMessage<'_>>(&inner).ok()?;
    let update = message.body_as_tick_update()?;
    let table = update.query_sets()?.get(0).tables()?.get(0);
    let values = table.updates()?.values()?;
    let data = values.data()?.bytes();
    let end = values.offsets()?.iter().nth(1).map_or(data.len(), |o| o as usize);
    Some(u64::from_le_bytes(data.get(end.checked_sub(8)?..end)?.try_into().ok()?))
}

fn percentiles(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    )
}

fn fanout(wasm: &[u8], n: usize, compression: Compression) {
    let server = Server::start(wasm);
    server.call("spawn_movers", &format!("[{ROWS}, {ZONES}]"));
    let mut poll = Poll::new().unwrap();
    let started = Instant::now();
    let mut clients = connect_all(&poll, server.addr, n, compression);
    let connected = started.elapsed();
    for (i, c) in clients.iter_mut().enumerate() {
        let sql = format!("SELECT * FROM mover WHERE zone = {}", i as u32 % ZONES);
        c.send(&ClientMessage::Subscribe {
            query_set_id: 1,
            queries: vec![sql],
            resume_after_tick: 0,
            resume_epoch: 0,
        });
    }
    pump(
        &mut poll,
        &mut clients,
        |c, bytes| {
            if matches!(decode(bytes), ServerMessage::SubscribeApplied { .. }) {
                c.results += 1;
            }
        },
        |cs| cs.iter().all(|c| c.results == 1),
    );
    println!(
        "fanout ({compression:?}): {n} clients connected in {:.1?}, subscribed in {:.1?}; server RSS {} MiB",
        connected,
        started.elapsed() - connected,
        server.rss_bytes() >> 20
    );

    // The driver moves every row 20 times a second from its own thread.
    let epoch = Instant::now();
    let (addr, token) = (server.addr, server.token.clone());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver_stop = std::sync::Arc::clone(&stop);
    let driver = std::thread::spawn(move || drive(addr, &token, epoch, &driver_stop));
    let warmup = Duration::from_secs(3);
    let measure = Duration::from_secs(10);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut measuring = false;
    let (mut cpu0, mut at0) = ((0.0, 0.0), Instant::now());
    let mut events = Events::with_capacity(4096);
    loop {
        let now = Instant::now();
        if !measuring && now >= epoch + warmup {
            measuring = true;
            clients.iter_mut().for_each(|c| (c.bytes, c.updates) = (0, 0));
            (cpu0, at0) = (server.cpu_split(), now);
        }
        if now >= epoch + warmup + measure {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(10))).unwrap();
        for event in &events {
            clients[event.token().0].read_all(|c, bytes| {
                c.updates += 1;
                if measuring && let Some(stamp) = stamp_of(bytes) {
                    let now_us = epoch.elapsed().as_micros() as u64;
                    latency.saturating_record(now_us.saturating_sub(stamp).max(1));
                }
            });
        }
    }
    let wall = at0.elapsed().as_secs_f64();
    let cpu1 = server.cpu_split();
    let (user, system) = ((cpu1.0 - cpu0.0) / wall, (cpu1.1 - cpu0.1) / wall);
    stop.store(true, std::sync::atomic::Ordering::Release);
    let calls = driver.join().unwrap();
    let updates: u64 = clients.iter().map(|c| c.updates).sum();
    let bytes: u64 = clients.iter().map(|c| c.bytes).sum();
    let per_client = updates as f64 / n as f64 / wall;
    println!(
        "fanout ({compression:?}): {n} clients × {ROWS} rows moved at {HZ} Hz ({ZONES} zones): {per_client:.1} updates/client/s; \
         call→client {}; server CPU {:.0}% of a core ({:.0}% in the kernel); server RSS {} MiB; {:.0} B/client/s; driver: {}",
        percentiles(&latency),
        (user + system) * 100.0,
        system * 100.0,
        server.rss_bytes() >> 20,
        bytes as f64 / n as f64 / wall,
        percentiles(&calls),
    );
}

/// Calls `move_movers` every 1/HZ s with its clock as the stamp, without waiting for
/// results (a slow server gets calls at the rate all the same), until told to stop;
/// the round trips of its calls.
fn drive(
    addr: SocketAddr,
    token: &str,
    epoch: Instant,
    stop: &std::sync::atomic::AtomicBool,
) -> Histogram<u64> {
    let url = format!("ws://{addr}/v1/database/bench/subscribe?token={token}");
    let (mut ws, _) = tungstenite::connect(url).unwrap();
    let mut round_trips = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let period = Duration::from_micros(1_000_000 / HZ);
    let mut next = Instant::now();
    let mut sent: std::collections::HashMap<u32, Instant> = std::collections::HashMap::new();
    let mut id = 0;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let now = Instant::now();
        if now >= next {
            let stamp = epoch.elapsed().as_micros() as u64;
            let args = [ROWS.to_bytes(), stamp.to_bytes()].concat();
            let message = ClientMessage::CallReducer { request_id: id, reducer: "move_movers".into(), args };
            ws.send(Message::Binary(frame(Compression::None, &message.encode()).into())).unwrap();
            sent.insert(id, now);
            id += 1;
            next += period;
            continue;
        }
        // Reading until the next call is due paces the driver: the workload's rate.
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some((next - now).max(Duration::from_micros(100)))).unwrap();
        }
        match ws.read() {
            Ok(Message::Binary(bytes)) => {
                if let ServerMessage::ReducerResult { request_id, outcome, .. } = decode(&bytes) {
                    assert!(outcome.is_ok(), "{outcome:?}");
                    if let Some(at) = sent.remove(&request_id) {
                        round_trips.saturating_record(at.elapsed().as_micros() as u64);
                    }
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("the driver's connection failed: {e}"),
        }
    }
    round_trips
}

fn calls(wasm: &[u8], reducer: &str, args: &[u8], subscribed: Option<&str>) {
    const CLIENTS: usize = 64;
    const IN_FLIGHT: u32 = 40;
    let server = Server::start(wasm);
    let mut poll = Poll::new().unwrap();
    let mut clients = connect_all(&poll, server.addr, CLIENTS, Compression::None);
    if let Some(query) = subscribed {
        let message = ClientMessage::Subscribe {
            query_set_id: 1,
            queries: vec![query.to_string()],
            resume_after_tick: 0,
            resume_epoch: 0,
        };
        for c in &mut clients {
            c.ws.send(Message::Binary(frame(Compression::None, &message.encode()).into())).unwrap();
        }
        pump(
            &mut poll,
            &mut clients,
            |c, bytes| {
                c.results += u64::from(matches!(decode(bytes), ServerMessage::SubscribeApplied { .. }))
            },
            |cs| cs.iter().all(|c| c.results == 1),
        );
        clients.iter_mut().for_each(|c| c.results = 0);
    }
    let call = ClientMessage::CallReducer { request_id: 0, reducer: reducer.into(), args: args.to_vec() };
    let framed = frame(Compression::None, &call.encode());
    let send = |c: &mut Client| {
        match c.ws.write(Message::Binary(framed.clone().into())) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        c.in_flight += 1;
    };
    for c in &mut clients {
        (0..IN_FLIGHT).for_each(|_| send(c));
        let _ = c.ws.flush();
    }
    let (start, cpu0) = (Instant::now(), server.cpu());
    let until = start + Duration::from_secs(5);
    let mut failed = 0u64;
    pump(
        &mut poll,
        &mut clients,
        |c, bytes| {
            if let ServerMessage::ReducerResult { outcome, .. } = decode(bytes) {
                failed += u64::from(outcome.is_err());
                c.results += 1;
                c.in_flight -= 1;
                if Instant::now() < until {
                    send(c);
                    let _ = c.ws.flush();
                }
            }
        },
        |cs| Instant::now() >= until && cs.iter().all(|c| c.in_flight == 0),
    );
    let wall = start.elapsed().as_secs_f64();
    let results: u64 = clients.iter().map(|c| c.results).sum();
    let callers = if subscribed.is_some() { "subscribed clients" } else { "clients" };
    println!(
        "calls: `{reducer}` from {CLIENTS} {callers} × {IN_FLIGHT} in flight: {:.0} calls/s ({failed} failed); server CPU {:.0}% of a core",
        results as f64 / wall,
        (server.cpu() - cpu0) / wall * 100.0
    );
}

fn idle(wasm: &[u8], n: usize) {
    let server = Server::start(wasm);
    let poll = Poll::new().unwrap();
    // A few first, so that one-time allocations (thread stacks, tables) are not counted.
    let warm = connect_all(&poll, server.addr, 100, Compression::None);
    let before = server.rss_bytes();
    // Each connection is set up once its handshake's answer has been read.
    let clients = connect_all(&poll, server.addr, n, Compression::None);
    let after = server.rss_bytes();
    println!(
        "idle: {n} idle WebSocket connections: {:.1} KiB of server RSS each",
        (after.saturating_sub(before)) as f64 / n as f64 / 1024.0
    );
    drop((warm, clients));
}

/// Captures real messages from a server: a zone's tick update (10 movers), every
/// mover's (1,000), and the initial rows of all movers.
fn captured(wasm: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let server = Server::start(wasm);
    server.call("spawn_movers", &format!("[{ROWS}, {ZONES}]"));
    let url = format!("ws://{}/v1/database/bench/subscribe", server.addr);
    let next = |ws: &mut WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>| loop {
        if let Message::Binary(bytes) = ws.read().unwrap() {
            return unframe(&bytes, 64 << 20).unwrap().into_owned();
        }
    };
    let (mut zone, _) = tungstenite::connect(&url).unwrap();
    let (mut all, _) = tungstenite::connect(&url).unwrap();
    next(&mut zone);
    next(&mut all);
    let subscribe = |query: &str| {
        let message = ClientMessage::Subscribe {
            query_set_id: 1,
            queries: vec![query.into()],
            resume_after_tick: 0,
            resume_epoch: 0,
        };
        Message::Binary(frame(Compression::None, &message.encode()).into())
    };
    zone.send(subscribe("SELECT * FROM mover WHERE zone = 0")).unwrap();
    all.send(subscribe("SELECT * FROM mover")).unwrap();
    next(&mut zone);
    let initial = next(&mut all);
    server.call("move_movers", &format!("[{ROWS}, 123456789]"));
    vec![
        ("tick update, 10 rows moved", next(&mut zone)),
        ("tick update, 1,000 rows moved", next(&mut all)),
        ("initial rows, 1,000 rows", initial),
    ]
}

fn codecs(wasm: &[u8]) {
    type Codec = (&'static str, fn(&[u8]) -> Vec<u8>, fn(&[u8], usize) -> Vec<u8>);
    let codecs: [Codec; 4] = [
        ("lz4", |m| lz4_flex::block::compress(m), |c, n| lz4_flex::block::decompress(c, n).unwrap()),
        (
            "snappy",
            |m| snap::raw::Encoder::new().compress_vec(m).unwrap(),
            |c, _| snap::raw::Decoder::new().decompress_vec(c).unwrap(),
        ),
        ("zstd-1", |m| zstd::bulk::compress(m, 1).unwrap(), |c, n| zstd::bulk::decompress(c, n).unwrap()),
        (
            "deflate-1",
            |m| miniz_oxide::deflate::compress_to_vec(m, 1),
            |c, _| miniz_oxide::inflate::decompress_to_vec(c).unwrap(),
        ),
    ];
    for (what, message) in captured(wasm) {
        let mut line = format!("codecs: {what}: {} B;", message.len());
        for (name, compress, decompress) in &codecs {
            let compressed = compress(&message);
            assert_eq!(decompress(&compressed, message.len()), message);
            let time = |f: &dyn Fn()| {
                let runs = (200_000 / message.len().max(1)).clamp(20, 20_000);
                let mut samples: Vec<Duration> = (0..7)
                    .map(|_| {
                        let start = Instant::now();
                        (0..runs).for_each(|_| f());
                        start.elapsed() / runs as u32
                    })
                    .collect();
                samples.sort();
                samples[3]
            };
            let c = time(&|| drop(std::hint::black_box(compress(std::hint::black_box(&message)))));
            let d = time(&|| {
                drop(std::hint::black_box(decompress(std::hint::black_box(&compressed), message.len())))
            });
            line.push_str(&format!(
                " {name} {:.0}% in {:.1} µs, back in {:.1} µs;",
                compressed.len() as f64 * 100.0 / message.len() as f64,
                c.as_secs_f64() * 1e6,
                d.as_secs_f64() * 1e6
            ));
        }
        println!("{line}");
    }
}

/// One round of sends through io_uring: one `Send` per socket, all submitted at once.
#[allow(unsafe_code)]
fn uring_round(ring: &mut io_uring::IoUring, fds: &[i32], message: &[u8]) {
    use io_uring::{opcode, types};
    for chunk in fds.chunks(ring.params().sq_entries() as usize) {
        for (i, &fd) in chunk.iter().enumerate() {
            let send = opcode::Send::new(types::Fd(fd), message.as_ptr(), message.len() as u32)
                .build()
                .user_data(i as u64);
            // SAFETY: `message` outlives the submission: every entry's completion is
            // reaped below, before this function returns; `fd` is an open socket.
            unsafe { ring.submission().push(&send).expect("the chunk fits the ring") };
        }
        ring.submit_and_wait(chunk.len()).unwrap();
        for completion in ring.completion() {
            assert_eq!(completion.result(), message.len() as i32, "a short or failed send");
        }
    }
}

fn drain(receivers: &mut [std::net::TcpStream], bytes: usize) {
    let mut buf = vec![0u8; 64 << 10];
    for r in receivers {
        let mut got = 0;
        while got < bytes {
            got += r.read(&mut buf).unwrap();
        }
    }
}

fn sends(n: usize, len: usize) {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut senders = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        senders.push(s);
        receivers.push(listener.accept().unwrap().0);
    }
    let fds: Vec<i32> = senders.iter().map(|s| s.as_raw_fd()).collect();
    let message = vec![7u8; len];
    let mut ring = io_uring::IoUring::new(4096).unwrap();
    let (mut write_us, mut uring_us) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        let start = Instant::now();
        for s in &mut senders {
            assert_eq!(s.write(&message).unwrap(), len);
        }
        write_us.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
        drain(&mut receivers, len);
        let start = Instant::now();
        uring_round(&mut ring, &fds, &message);
        uring_us.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
        drain(&mut receivers, len);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "sends: {len} B to each of {n} loopback connections: write() {:.2} µs per send, io_uring (one submit per round) {:.2} µs per send (medians of 30 rounds)",
        median(&mut write_us),
        median(&mut uring_us)
    );
}
