//! The event loop: one mio thread that accepts connections, reads HTTP requests and
//! WebSocket messages, and writes responses and updates, never blocking.
//!
//! A connection starts as an HTTP request. An API request goes to a worker thread
//! ([`crate::api`]) and its response comes back through a channel. A WebSocket
//! upgrade first runs the database's `client_connected` reducer (an `Err` refuses the
//! client with its message), then becomes a client: its reducer calls go into the
//! database's inbox, its subscriptions and queries are posted to the tick thread, and
//! what comes back (reducer results through the reply channel, updates through the
//! hubs' gates) is written out. Everything another thread has for the loop arrives on
//! a channel, followed by a wake of the loop's [`mio::Waker`].
//!
//! Writes are batched: the loop drains everything that arrived, queuing each client's
//! messages in its WebSocket's buffer, then flushes each client once. A client whose
//! buffer holds more than `send_buffer_bytes_max` is dropped with a close frame
//! that says why.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use tickdb_engine::store::DataDir;
use tickdb_engine::{CallReply, Database, ModuleWork, ReplyTo};
use tickdb_protocol::{ClientMessage, Compression, QuerySetUpdate, ServerMessage, unframe};
use tickdb_sql::Reader;
use tickdb_wasm_abi::{ConnectionId, Identity, Lifecycle};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::api::{Api, Metrics};
use crate::config::ServerConfig;
use crate::databases::{ApiError, Databases, Served};
use crate::http::{Head, Request, Response, parse_head, switching_protocols};
use crate::hub::{ClientKey, Format, Outgoing, Routes, Shared, query_result};
use crate::identity::{Keys, new_connection_id};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
/// How often timeouts are checked, at least.
const TIMER_PERIOD: Duration = Duration::from_millis(100);
/// How long a closing connection may take to read our close frame before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// HTTP requests waiting for a worker; past it, new ones get 503 at once.
const JOBS_QUEUED_MAX: usize = 256;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Databases(#[from] ApiError),
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    databases: Arc<Databases>,
    keys: Arc<Keys>,
}

impl ServerHandle {
    /// Where the server listens (with the port the system chose, for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn databases(&self) -> &Arc<Databases> {
        &self.databases
    }

    /// Stops accepting, closes every connection, and stops every database after the
    /// work already queued.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.wakers.iter().for_each(|w| drop(w.wake()));
        if !self.threads.is_empty() {
            self.threads.drain(..).for_each(|t| drop(t.join()));
            self.databases.shutdown();
        }
    }

    /// Waits until the event loop ends (for `tickdb start`).
    pub fn wait(mut self) {
        self.threads.drain(..).for_each(|t| drop(t.join()));
        self.databases.shutdown();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Starts a server for the databases in `data`, listening on `listen`.
pub fn start(config: ServerConfig, data: DataDir, listen: SocketAddr) -> Result<ServerHandle, ServerError> {
    let loops = config.io_threads.max(1);
    let polls: Vec<Poll> = (0..loops).map(|_| Poll::new()).collect::<Result<_, _>>()?;
    let wakers: Vec<Arc<Waker>> =
        polls.iter().map(|p| Waker::new(p.registry(), WAKER).map(Arc::new)).collect::<Result<_, _>>()?;
    let mut listener =
        TcpListener::bind(listen).map_err(|source| ServerError::Listen { addr: listen, source })?;
    let addr = listener.local_addr()?;
    polls[0].registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let keys = Arc::new(Keys::load_or_create(&data.root().join("server.key"))?);
    let (outs, outgoing): (Vec<_>, Vec<_>) = (0..loops).map(|_| mpsc::channel()).unzip();
    let routes = Routes::new(outs.into_iter().zip(wakers.iter().cloned()).collect());
    let databases = Arc::new(Databases::open(data, config.clone(), Arc::clone(&routes))?);
    let metrics = Arc::new(Metrics::default());
    let api = Arc::new(Api {
        databases: Arc::clone(&databases),
        keys: Arc::clone(&keys),
        metrics: Arc::clone(&metrics),
        log_waiters: Default::default(),
    });
    let (done, responses): (Vec<_>, Vec<_>) = (0..loops).map(|_| mpsc::channel()).unzip();
    let done: Vec<_> = done.into_iter().zip(wakers.iter().cloned()).collect();
    let jobs = start_workers(&api, config.http_workers, done)?;
    let (handoffs, accepted): (Vec<_>, Vec<_>) = (0..loops).map(|_| mpsc::channel()).unzip();
    let handoffs: Vec<_> = handoffs.into_iter().zip(wakers.iter().cloned()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let mut listener = Some(listener);
    let mut threads = Vec::with_capacity(loops);
    let parts = polls.into_iter().zip(outgoing).zip(responses).zip(accepted).enumerate();
    for (index, (((poll, outgoing), responses), accepted)) in parts {
        let (replies_to, replies) = mpsc::channel();
        let mut event_loop = EventLoop {
            poll,
            index,
            loops,
            listener: listener.take(),
            handoffs: if index == 0 { handoffs.clone() } else { Vec::new() },
            accepted,
            next_loop: 0,
            open: Arc::clone(&open),
            config: config.clone(),
            conns: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            next_key: index as u64 + 1,
            outgoing,
            replies,
            replies_to,
            jobs: jobs.clone(),
            responses,
            calls: HashMap::new(),
            next_call: 1,
            databases: Arc::clone(&databases),
            keys: Arc::clone(&keys),
            metrics: Arc::clone(&metrics),
            dirty: Vec::new(),
            batches: Vec::new(),
            stop: Arc::clone(&stop),
        };
        let name = format!("tickdb-net-{index}");
        threads.push(std::thread::Builder::new().name(name).spawn(move || event_loop.run())?);
    }
    Ok(ServerHandle { addr, stop, wakers, threads, databases, keys })
}

type Jobs = mpsc::SyncSender<(ClientKey, Request)>;
type Responses = mpsc::Receiver<(ClientKey, Response)>;
/// Where a worker sends an answer for each loop, and how it wakes the loop.
type Answers = Vec<(mpsc::Sender<(ClientKey, Response)>, Arc<Waker>)>;

/// HTTP API workers: each takes a request, answers it, and sends the answer to the
/// loop that serves the request's connection (`done`, one per loop).
fn start_workers(api: &Arc<Api>, workers: usize, done: Answers) -> std::io::Result<Jobs> {
    let (jobs, queue) = mpsc::sync_channel::<(ClientKey, Request)>(JOBS_QUEUED_MAX);
    let queue = Arc::new(Mutex::new(queue));
    let done = Arc::new(done);
    for i in 0..workers.max(1) {
        let (api, queue, done) = (Arc::clone(api), Arc::clone(&queue), Arc::clone(&done));
        std::thread::Builder::new().name(format!("tickdb-http-{i}")).spawn(move || {
            loop {
                let job = queue.lock().expect("job queue lock").recv();
                let Ok((key, request)) = job else { return };
                let response =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| api.handle(&request)))
                        .unwrap_or_else(|_| {
                            Response::error(&ApiError::internal("the request handler panicked"))
                        });
                let (to, waker) = &done[((key - 1) % done.len() as u64) as usize];
                if to.send((key, response)).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        })?;
    }
    Ok(jobs)
}

/// A WebSocket client.
struct Client {
    ws: WebSocket<TcpStream>,
    served: Arc<Served>,
    identity: Identity,
    connection_id: ConnectionId,
    format: Format,
    calls_in_flight: usize,
    /// Whether the client ever subscribed: then its calls' results carry their own
    /// changes, unless it asked for `light` results.
    subscribed: bool,
    light: bool,
    /// Token bucket of the inbound message rate.
    tokens: f64,
    refilled: Instant,
    last_heard: Instant,
    pinged: bool,
}

/// A WebSocket handshake waiting for `client_connected`.
struct Upgrade {
    served: Arc<Served>,
    identity: Identity,
    token: String,
    connection_id: ConnectionId,
    format: Format,
    light: bool,
    accept: Vec<u8>,
    /// Bytes the client sent after its handshake.
    rest: Vec<u8>,
}

/// What a connection becomes once its handshake answer is written.
enum Then {
    Client(Box<Upgrade>),
    /// With the bytes read after the handshake.
    Echo(Vec<u8>),
}

enum State {
    /// Reading a request: its head, then its body.
    Request {
        buf: Vec<u8>,
        head: Option<Head>,
    },
    /// A worker has the request; or `client_connected` is running.
    Waiting,
    Connecting(Box<Upgrade>),
    /// Writing `out`, then closing, or (for a handshake) becoming a client.
    Responding {
        out: Vec<u8>,
        written: usize,
        then: Option<Then>,
    },
    Client(Box<Client>),
    /// The conformance endpoint: a WebSocket that echoes every message.
    Echo(Box<WebSocket<TcpStream>>),
    /// A close frame was sent: waiting a little for the client to close its side.
    Closing {
        until: Instant,
        /// A client's WebSocket, still sending what it queued and then its close frame.
        ws: Option<Box<WebSocket<TcpStream>>>,
    },
}

struct Conn {
    key: ClientKey,
    /// The socket, except while a client's WebSocket holds it.
    stream: Option<TcpStream>,
    state: State,
    /// When a request must be whole (slowloris).
    deadline: Instant,
}

enum PendingCall {
    Reducer {
        client: ClientKey,
        request_id: u32,
        started: Instant,
    },
    /// `client_connected` for a handshake: if the connection is gone by the time it
    /// succeeds, the module is told it disconnected.
    Connect {
        client: ClientKey,
        served: Arc<Served>,
        identity: Identity,
        connection_id: ConnectionId,
    },
}

struct EventLoop {
    poll: Poll,
    /// This loop's place among `loops`: it serves the clients whose key is
    /// `index + 1` modulo `loops`.
    index: usize,
    loops: usize,
    /// The first loop accepts connections, and hands each to a loop in turn.
    listener: Option<TcpListener>,
    handoffs: Vec<(mpsc::Sender<TcpStream>, Arc<Waker>)>,
    accepted: mpsc::Receiver<TcpStream>,
    next_loop: usize,
    /// Connections open on every loop.
    open: Arc<AtomicUsize>,
    config: ServerConfig,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    by_key: HashMap<ClientKey, usize>,
    next_key: ClientKey,
    outgoing: mpsc::Receiver<Outgoing>,
    replies: mpsc::Receiver<CallReply>,
    replies_to: mpsc::Sender<CallReply>,
    jobs: Jobs,
    responses: Responses,
    calls: HashMap<u64, PendingCall>,
    next_call: u64,
    databases: Arc<Databases>,
    keys: Arc<Keys>,
    metrics: Arc<Metrics>,
    /// Clients with messages queued since their last flush.
    dirty: Vec<ClientKey>,
    /// Reducer calls read this loop turn, per database: submitted together (one inbox
    /// slot per batch), so that a busy loop turn costs the tick thread one wake-up.
    batches: Vec<Batch>,
    stop: Arc<AtomicBool>,
}

/// Calls for one database, each with its reply id.
struct Batch {
    served: Arc<Served>,
    calls: Vec<(u64, ModuleWork)>,
}

/// How a connection should end.
struct Close {
    code: CloseCode,
    reason: String,
}

impl Close {
    fn new(code: CloseCode, reason: impl Into<String>) -> Close {
        // A close frame's reason is at most 123 bytes.
        let mut reason: String = reason.into();
        while reason.len() > 123 {
            reason.pop();
        }
        Close { code, reason }
    }
}

impl EventLoop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_timers = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self.poll.poll(&mut events, Some(TIMER_PERIOD)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("tickdb: the event loop failed: {e}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => {
                        self.ready_guarded(t - FIRST_CONNECTION, event.is_readable(), event.is_writable())
                    }
                }
            }
            self.submit_batches();
            self.drain_channels();
            self.flush_dirty();
            if last_timers.elapsed() >= TIMER_PERIOD {
                last_timers = Instant::now();
                self.timers();
            }
        }
        let keys: Vec<ClientKey> = self.by_key.keys().copied().collect();
        for key in keys {
            self.close(key, Close::new(CloseCode::Away, "the server is stopping"));
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else { return };
            let (mut stream, _) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Out of file descriptors, say: the connection waits in the backlog.
                    eprintln!("tickdb: accepting a connection: {e}");
                    return;
                }
            };
            if self.open.load(Ordering::Acquire) >= self.config.connections_max {
                self.metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                let body =
                    format!("the server has {} connections (connections_max)", self.config.connections_max);
                let _ = stream.write(&Response::error(&ApiError::unavailable(body)).to_bytes());
                continue;
            }
            self.open.fetch_add(1, Ordering::AcqRel);
            self.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
            self.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
            let target = self.next_loop;
            self.next_loop = (self.next_loop + 1) % self.loops;
            if target == self.index {
                self.adopt(stream);
            } else {
                let (to, waker) = &self.handoffs[target];
                // A loop gone means the server is stopping.
                if to.send(stream).is_ok() {
                    let _ = waker.wake();
                }
            }
        }
    }

    /// Takes a new connection into this loop.
    fn adopt(&mut self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let token = Token(slot + FIRST_CONNECTION);
        if self.poll.registry().register(&mut stream, token, Interest::READABLE).is_err() {
            self.free.push(slot);
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let key = self.next_key;
        self.next_key += self.loops as u64;
        let deadline = Instant::now() + self.config.request_timeout;
        let state = State::Request { buf: Vec::new(), head: None };
        self.conns[slot] = Some(Conn { key, stream: Some(stream), state, deadline });
        self.by_key.insert(key, slot);
        // Bytes may have arrived before the socket was registered (edge-triggered).
        if let Err(close) = self.read_request(slot) {
            self.close(key, close);
        }
    }

    /// Serves one connection's event; a panic there (a bug, ours or a library's)
    /// drops that connection only, and the loop serves the others.
    fn ready_guarded(&mut self, slot: usize, readable: bool, writable: bool) {
        let served =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.ready(slot, readable, writable)));
        if let Err(panic) = served {
            let key = self.conns.get(slot).and_then(Option::as_ref).map(|c| c.key);
            eprintln!("tickdb: a connection's handler panicked and the connection was dropped: {panic:?}");
            if let Some(key) = key {
                self.drop_conn(key);
            }
        }
    }

    fn ready(&mut self, slot: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get(slot).and_then(Option::as_ref) else { return };
        let key = conn.key;
        let outcome = match &conn.state {
            State::Request { .. } if readable => self.read_request(slot),
            State::Responding { .. } if writable => self.write_response(slot),
            State::Client(_) => self.client_ready(slot, readable, writable),
            State::Echo(_) => self.echo_ready(slot, writable),
            State::Closing { .. } => self.drain_closing(slot, writable),
            _ => Ok(()),
        };
        if let Err(close) = outcome {
            self.close(key, close);
        }
    }

    fn conn(&mut self, slot: usize) -> &mut Conn {
        self.conns[slot].as_mut().expect("live connection")
    }

    /// Reads what the client sent of its request; acts once it is whole. mio reports
    /// readiness once per change (edge-triggered), so it reads until the socket has
    /// nothing more or the request is whole or refused.
    fn read_request(&mut self, slot: usize) -> Result<(), Close> {
        let (header_max, body_max) = (self.config.header_bytes_max, self.config.body_bytes_max);
        let conn = self.conns[slot].as_mut().expect("live connection");
        let stream = conn.stream.as_mut().expect("requests own their socket");
        let State::Request { buf, head } = &mut conn.state else { return Ok(()) };
        let mut chunk = [0u8; 16 << 10];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return Err(Close::new(CloseCode::Normal, "")),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(Close::new(CloseCode::Abnormal, "")),
            }
            if head.is_none() {
                match parse_head(buf) {
                    Ok(Some(h)) if h.len > header_max => {
                        let why = format!(
                            "the request's headers are larger than {header_max} bytes (header_bytes_max)"
                        );
                        return self.respond(slot, &ApiError::new(431, why));
                    }
                    Ok(Some(h)) => *head = Some(h),
                    Ok(None) if buf.len() > header_max => {
                        let why = format!(
                            "the request's headers are larger than {header_max} bytes (header_bytes_max)"
                        );
                        return self.respond(slot, &ApiError::new(431, why));
                    }
                    Ok(None) => continue,
                    Err(e) => return self.respond(slot, &e),
                }
            }
            let h = head.as_ref().expect("parsed above");
            let length = match h.content_length() {
                Ok(length) if length > body_max => {
                    let why = format!(
                        "the body is {length} bytes; at most {body_max} are accepted (body_bytes_max)"
                    );
                    return self.respond(slot, &ApiError::new(413, why));
                }
                Ok(length) => length,
                Err(e) => return self.respond(slot, &e),
            };
            if h.is_upgrade() {
                let (head, buf) = (h.clone(), std::mem::take(buf));
                return self.upgrade(slot, head, buf);
            }
            if buf.len() >= h.len + length {
                let (head, mut body) = (head.take().expect("parsed above"), std::mem::take(buf));
                body.drain(..head.len);
                body.truncate(length);
                let key = conn.key;
                conn.state = State::Waiting;
                return match self.jobs.try_send((key, Request { head, body })) {
                    Ok(()) => Ok(()),
                    Err(_) => self.respond(
                        slot,
                        &ApiError::unavailable("the server is busy with other requests; retry"),
                    ),
                };
            }
        }
    }

    /// Starts writing an error response, closing afterwards.
    fn respond(&mut self, slot: usize, e: &ApiError) -> Result<(), Close> {
        self.start_response(slot, Response::error(e).to_bytes(), None)
    }

    fn start_response(&mut self, slot: usize, out: Vec<u8>, then: Option<Then>) -> Result<(), Close> {
        let conn = self.conns[slot].as_mut().expect("live connection");
        conn.state = State::Responding { out, written: 0, then };
        // A client that does not read its response is dropped (it would hold a slot).
        conn.deadline = Instant::now() + self.config.request_timeout;
        let token = Token(slot + FIRST_CONNECTION);
        let stream = conn.stream.as_mut().expect("responses own their socket");
        let _ = self.poll.registry().reregister(stream, token, Interest::READABLE | Interest::WRITABLE);
        self.write_response(slot)
    }
    fn write_response(&mut self, slot: usize) -> Result<(), Close> {
        let request_timeout = self.config.request_timeout;
        let conn = self.conns[slot].as_mut().expect("live connection");
        let stream = conn.stream.as_mut().expect("responses own their socket");
        let State::Responding { out, written, then } = &mut conn.state else { return Ok(()) };
        while *written < out.len() {
            match stream.write(&out[*written..]) {
                Ok(0) => return Err(Close::new(CloseCode::Abnormal, "")),
                Ok(n) => {
                    *written += n;
                    conn.deadline = Instant::now() + request_timeout;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err(Close::new(CloseCode::Abnormal, "")),
            }
        }
        match then.take() {
            Some(Then::Client(upgrade)) => self.become_client(slot, *upgrade),
            Some(Then::Echo(rest)) => {
                let stream = conn.stream.take().expect("the handshake owns its socket");
                let ws =
                    WebSocket::from_partially_read(stream, rest, Role::Server, Some(ws_config(&self.config)));
                conn.state = State::Echo(Box::new(ws));
                self.echo_ready(slot, true)
            }
            None => {
                let _ = stream.shutdown(std::net::Shutdown::Write);
                conn.state = State::Closing { until: Instant::now() + CLOSE_GRACE, ws: None };
                let token = Token(slot + FIRST_CONNECTION);
                let _ = self.poll.registry().reregister(stream, token, Interest::READABLE);
                Ok(())
            }
        }
    }

    /// A closing connection: reads and discards what the client still sends; a
    /// client's WebSocket also writes out what it queued, its close frame last. Ends
    /// when the client closes its side, or at the grace period's end.
    fn drain_closing(&mut self, slot: usize, writable: bool) -> Result<(), Close> {
        let conn = self.conns[slot].as_mut().expect("live connection");
        let gone = || Err(Close::new(CloseCode::Normal, ""));
        if let State::Closing { ws: Some(ws), .. } = &mut conn.state
            && writable
        {
            match ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return gone(),
            }
        }
        // Bytes are discarded unparsed: after a read error the WebSocket must not read again.
        let stream = match &mut conn.state {
            State::Closing { ws: Some(ws), .. } => ws.get_mut(),
            _ => match conn.stream.as_mut() {
                Some(stream) => stream,
                None => return gone(),
            },
        };
        let mut sink = [0u8; 4096];
        loop {
            match stream.read(&mut sink) {
                Ok(0) => return gone(),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return gone(),
            }
        }
    }

    /// A WebSocket handshake: checks it, then runs `client_connected`.
    fn upgrade(&mut self, slot: usize, head: Head, buf: Vec<u8>) -> Result<(), Close> {
        if self.config.echo_endpoint && head.path == "/v1/echo" {
            if let Err(e) = check_handshake(&head) {
                return self.respond(slot, &e);
            }
            let accept = switching_protocols(head.header("sec-websocket-key").unwrap_or_default());
            return self.start_response(slot, accept, Some(Then::Echo(buf[head.len..].to_vec())));
        }
        let checked = self.check_upgrade(&head);
        let (served, identity, token, format, light) = match checked {
            Ok(checked) => checked,
            Err(e) => return self.respond(slot, &e),
        };
        let key = head.header("sec-websocket-key").unwrap_or_default();
        let accept = switching_protocols(key);
        let connection_id = new_connection_id();
        let call = self.next_call;
        self.next_call += 1;
        let reply = ReplyTo { id: call, to: self.replies_to.clone() };
        let work = ModuleWork::lifecycle(Lifecycle::ClientConnected, identity, connection_id, Some(reply));
        match served.with_handle(|h| h.submit(work)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return self.respond(slot, &ApiError::unavailable(e.to_string())),
            Err(e) => return self.respond(slot, &e),
        }
        let conn = self.conns[slot].as_mut().expect("live connection");
        let pending =
            PendingCall::Connect { client: conn.key, served: Arc::clone(&served), identity, connection_id };
        self.calls.insert(call, pending);
        // The module may take its time, but not for ever: a stopped database never answers.
        conn.deadline = Instant::now() + self.config.request_timeout;
        let rest = buf[head.len..].to_vec();
        let upgrade = Upgrade { served, identity, token, connection_id, format, light, accept, rest };
        conn.state = State::Connecting(Box::new(upgrade));
        Ok(())
    }

    /// The database, the client's identity and token, its format, and whether it
    /// asked for light results (`light=true`: a call's result carries no changes of
    /// its own, which come in the tick's update anyway).
    fn check_upgrade(&self, head: &Head) -> Result<(Arc<Served>, Identity, String, Format, bool), ApiError> {
        let parts: Vec<&str> = head.path.trim_matches('/').split('/').collect();
        let ["v1", "database", name, "subscribe"] = parts.as_slice() else {
            return Err(ApiError::not_found(format!("no WebSocket endpoint at {}", head.path)));
        };
        check_handshake(head)?;
        let compression = match head.param("compression") {
            None => Compression::None,
            Some(c) => Compression::from_name(c).ok_or_else(|| {
                ApiError::bad_request(format!("unknown compression `{c}`; use none or lz4"))
            })?,
        };
        let format = match head.param("format") {
            None | Some("binary") => Format::Binary(compression),
            Some("json") => Format::Json,
            Some(f) => {
                return Err(ApiError::bad_request(format!("unknown format `{f}`; use binary or json")));
            }
        };
        let (identity, token) = match head.token() {
            Some(token) => (
                self.keys.verify(token).map_err(|e| ApiError::unauthorized(e.to_string()))?,
                token.to_string(),
            ),
            None => self.keys.new_identity(),
        };
        let light = match head.param("light") {
            None | Some("false") => false,
            Some("true") => true,
            Some(l) => return Err(ApiError::bad_request(format!("`light` is true or false, not `{l}`"))),
        };
        Ok((self.databases.get(name)?, identity, token, format, light))
    }

    /// `client_connected` said yes: the handshake is answered and the client starts.
    /// Echoes what the client sends (the conformance endpoint).
    /// Reads until the socket has nothing more, whatever the event (a read that
    /// would block costs one call).
    fn echo_ready(&mut self, slot: usize, writable: bool) -> Result<(), Close> {
        let token = Token(slot + FIRST_CONNECTION);
        let State::Echo(ws) = &mut self.conns[slot].as_mut().expect("live").state else { return Ok(()) };
        loop {
            match ws.read() {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => match ws.write(message) {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(read_error(e)),
                },
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(read_error(e)),
            }
        }
        let blocked = match ws.flush() {
            Ok(()) => false,
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => true,
            Err(e) => return Err(read_error(e)),
        };
        let interest =
            if blocked || !writable { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        let _ = self.poll.registry().reregister(ws.get_mut(), token, interest);
        Ok(())
    }

    fn become_client(&mut self, slot: usize, upgrade: Upgrade) -> Result<(), Close> {
        let config = ws_config(&self.config);
        let conn = self.conns[slot].as_mut().expect("live connection");
        let key = conn.key;
        let stream = conn.stream.take().expect("the handshake owns its socket");
        let Upgrade { served, identity, token, connection_id, format, light, rest, .. } = upgrade;
        let ws = WebSocket::from_partially_read(stream, rest, Role::Server, Some(config));
        let now = Instant::now();
        let burst = f64::from(self.config.messages_burst_max);
        let client = Client {
            ws,
            served: Arc::clone(&served),
            identity,
            connection_id,
            format,
            calls_in_flight: 0,
            subscribed: false,
            light,
            tokens: burst,
            refilled: now,
            last_heard: now,
            pinged: false,
        };
        conn.state = State::Client(Box::new(client));
        self.metrics.websocket_clients.fetch_add(1, Ordering::Relaxed);
        // The hub learns of the client before any of its subscriptions: both go
        // through the database's inbox, in order.
        let hub = Arc::clone(&served.hub);
        let reader =
            if served.is_owner(identity) { Reader::owner(identity) } else { Reader::client(identity) };
        let tick = served.status.tick.load(Ordering::Acquire);
        let posted = served
            .with_handle(|h| h.post(move |_| crate::hub::lock(&hub).connect(key, connection_id, reader)));
        if !matches!(posted, Ok(Ok(()))) {
            return Err(Close::new(CloseCode::Again, "the database is busy; retry"));
        }
        let hello = ServerMessage::IdentityToken {
            identity: identity.0,
            token,
            connection_id: connection_id.0,
            tick,
            epoch: served.epoch,
        };
        self.send(key, &Shared::new(&hello));
        self.client_ready(slot, true, true)
    }

    /// Reads a client's messages and flushes what it has queued.
    fn client_ready(&mut self, slot: usize, readable: bool, writable: bool) -> Result<(), Close> {
        if writable {
            self.flush_slot(slot)?;
        }
        if !readable {
            return Ok(());
        }
        loop {
            let conn = self.conns[slot].as_mut().expect("live connection");
            let key = conn.key;
            let State::Client(client) = &mut conn.state else { return Ok(()) };
            let message = match client.ws.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(read_error(e)),
            };
            client.last_heard = Instant::now();
            client.pinged = false;
            self.client_message(key, slot, message)?;
        }
        // Pongs and close replies that reading queued.
        self.flush_slot(slot)
    }

    fn client_message(&mut self, key: ClientKey, slot: usize, message: Message) -> Result<(), Close> {
        let (rate, burst) =
            (f64::from(self.config.messages_per_second_max), f64::from(self.config.messages_burst_max));
        let len_max = self.config.message_bytes_max;
        let State::Client(client) = &mut self.conns[slot].as_mut().expect("live").state else {
            return Ok(());
        };
        let json = client.format == Format::Json;
        let bytes = match message {
            Message::Binary(bytes) if !json => bytes,
            Message::Text(text) if json => tungstenite::Bytes::from(text),
            Message::Binary(_) | Message::Text(_) => {
                let why = if json {
                    "this connection speaks JSON: send text"
                } else {
                    "send binary messages (FlatBuffers), or connect with ?format=json"
                };
                return Err(Close::new(CloseCode::Unsupported, why));
            }
            Message::Close(_) => return Err(Close::new(CloseCode::Normal, "")),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(()),
        };
        let now = Instant::now();
        client.tokens = (client.tokens + now.duration_since(client.refilled).as_secs_f64() * rate).min(burst);
        client.refilled = now;
        if client.tokens < 1.0 {
            let why = format!("more than {rate} messages per second (messages_per_second_max)");
            return Err(Close::new(CloseCode::Policy, why));
        }
        client.tokens -= 1.0;
        self.metrics.messages_received.fetch_add(1, Ordering::Relaxed);
        self.metrics.bytes_received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let decoded = if json {
            let text = std::str::from_utf8(&bytes).expect("tungstenite checked the text");
            crate::json_protocol::client_message(text, &client.served.module().def)
        } else {
            unframe(&bytes, len_max)
                .map_err(|e| e.to_string())
                .and_then(|m| ClientMessage::decode(&m).map_err(|e| e.to_string()))
        };
        match decoded {
            Ok(message) => self.handle(key, slot, message),
            Err(why) => Err(Close::new(CloseCode::Invalid, format!("malformed message: {why}"))),
        }
    }

    fn handle(&mut self, key: ClientKey, slot: usize, message: ClientMessage) -> Result<(), Close> {
        let State::Client(client) = &self.conn(slot).state else { return Ok(()) };
        let served = Arc::clone(&client.served);
        match message {
            ClientMessage::CallReducer { request_id, reducer, args } => {
                self.call(key, slot, served, request_id, &reducer, &args)
            }
            ClientMessage::Subscribe { query_set_id, queries, resume_after_tick, resume_epoch } => {
                // Calls read before it go first: the database sees the client's messages in order.
                self.submit_batches();
                if let State::Client(client) = &mut self.conn(slot).state {
                    client.subscribed = true;
                }
                let hub = Arc::clone(&served.hub);
                let resume = (resume_epoch, resume_after_tick);
                let subscribe = move |db: &Database| {
                    crate::hub::lock(&hub).subscribe(db, key, query_set_id, &queries, resume)
                };
                if !matches!(served.with_handle(|h| h.post(subscribe)), Ok(Ok(()))) {
                    let message = "the database is busy; subscribe again later".to_string();
                    self.send(key, &Shared::new(&ServerMessage::SubscriptionError { query_set_id, message }));
                }
            }
            ClientMessage::Unsubscribe { query_set_id } => {
                let hub = Arc::clone(&served.hub);
                // The inbox is full only under overload; the set then goes with the connection.
                let unsubscribe = move |_: &Database| crate::hub::lock(&hub).unsubscribe(key, query_set_id);
                let _ = served.with_handle(|h| h.post(unsubscribe));
            }
            ClientMessage::OneOffQuery { request_id, sql } => self.query(key, slot, &served, request_id, sql),
        }
        Ok(())
    }

    /// Queues a reducer call for the end of the loop turn; refuses it at once when the
    /// reducer does not exist or the client has too many calls waiting.
    fn call(
        &mut self,
        key: ClientKey,
        slot: usize,
        served: Arc<Served>,
        request_id: u32,
        reducer: &str,
        args: &[u8],
    ) {
        let State::Client(client) = &mut self.conns[slot].as_mut().expect("live").state else { return };
        let refuse = |why: String| {
            Shared::new(&ServerMessage::ReducerResult {
                request_id,
                tick: 0,
                outcome: Err(why),
                duration_us: 0,
                changes: Vec::new(),
            })
        };
        let module = served.module();
        let Some(id) = module.reducer_id(reducer) else {
            let why = format!("database `{}` has no reducer `{reducer}`", served.name);
            return self.send(key, &refuse(why));
        };
        let calls_max = self.config.calls_in_flight_max;
        if client.calls_in_flight >= calls_max {
            let why =
                format!("{calls_max} calls are waiting for their results already (calls_in_flight_max)");
            return self.send(key, &refuse(why));
        }
        client.calls_in_flight += 1;
        let call = self.next_call;
        self.next_call += 1;
        let reply = ReplyTo { id: call, to: self.replies_to.clone() };
        let mut work =
            ModuleWork::call_of(&module, id, client.identity, client.connection_id, args, Some(reply));
        if client.subscribed && !client.light {
            work = work.with_own_changes();
        }
        self.metrics.reducer_calls.fetch_add(1, Ordering::Relaxed);
        self.calls.insert(call, PendingCall::Reducer { client: key, request_id, started: Instant::now() });
        match self.batches.iter_mut().find(|b| Arc::ptr_eq(&b.served, &served)) {
            Some(batch) => batch.calls.push((call, work)),
            None => self.batches.push(Batch { served, calls: vec![(call, work)] }),
        }
    }

    /// Runs a one-off query on the tick thread, as the client may read.
    fn query(&mut self, key: ClientKey, slot: usize, served: &Served, request_id: u32, sql: String) {
        self.submit_batches();
        let State::Client(client) = &self.conn(slot).state else { return };
        let identity = client.identity;
        let reader =
            if served.is_owner(identity) { Reader::owner(identity) } else { Reader::client(identity) };
        let (hub, limits) = (Arc::clone(&served.hub), self.config.query_limits.clone());
        let query = move |db: &Database| {
            let hub = crate::hub::lock(&hub);
            let message = query_result(db, &hub, reader, request_id, &sql, &limits);
            hub.answer(key, &message);
        };
        if !matches!(served.with_handle(|h| h.post(query)), Ok(Ok(()))) {
            let outcome = Err("the database is busy; retry".to_string());
            self.send(key, &Shared::new(&ServerMessage::QueryResult { request_id, outcome, duration_us: 0 }));
        }
    }

    /// Submits the calls read so far, in batches of at most the inbox's batch size; the
    /// calls of a batch the database refuses (its inbox is full) get the reason.
    fn submit_batches(&mut self) {
        let batch_max = self.config.engine.tick_work_max;
        for Batch { served, mut calls } in std::mem::take(&mut self.batches) {
            while !calls.is_empty() {
                let rest = calls.split_off(calls.len().min(batch_max));
                let (ids, works): (Vec<u64>, Vec<ModuleWork>) = calls.into_iter().unzip();
                let refused = match served.with_handle(|h| h.submit_batch(works)) {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(why) = refused {
                    for id in ids {
                        self.refuse_call(id, &why);
                    }
                }
                calls = rest;
            }
        }
    }

    /// Answers a call the database did not take.
    fn refuse_call(&mut self, id: u64, why: &str) {
        let Some(PendingCall::Reducer { client, request_id, .. }) = self.calls.remove(&id) else { return };
        if let Some(&slot) = self.by_key.get(&client)
            && let State::Client(c) = &mut self.conn(slot).state
        {
            c.calls_in_flight -= 1;
        }
        let message = ServerMessage::ReducerResult {
            request_id,
            tick: 0,
            outcome: Err(why.to_string()),
            duration_us: 0,
            changes: Vec::new(),
        };
        self.send(client, &Shared::new(&message));
    }

    /// Queues a message in a client's WebSocket; it is flushed with the others.
    fn send(&mut self, key: ClientKey, message: &Shared) {
        let Some(&slot) = self.by_key.get(&key) else { return };
        let State::Client(client) = &mut self.conn(slot).state else { return };
        let message = message.to_send(client.format, || client.served.module());
        let len = message.len() as u64;
        match client.ws.write(message) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                self.metrics.slow_clients_dropped.fetch_add(1, Ordering::Relaxed);
                let why = format!(
                    "the client reads too slowly: more than {} bytes waited to be sent (send_buffer_bytes_max)",
                    self.config.send_buffer_bytes_max
                );
                return self.close(key, Close::new(CloseCode::Policy, why));
            }
            Err(_) => return self.close(key, Close::new(CloseCode::Abnormal, "")),
        }
        self.metrics.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.bytes_sent.fetch_add(len, Ordering::Relaxed);
        self.dirty.push(key);
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for key in dirty.drain(..) {
            let Some(&slot) = self.by_key.get(&key) else { continue };
            if let Err(close) = self.flush_slot(slot) {
                self.close(key, close);
            }
        }
        self.dirty = dirty;
    }

    /// Writes what a client has queued; asks to hear when it can write more.
    fn flush_slot(&mut self, slot: usize) -> Result<(), Close> {
        let token = Token(slot + FIRST_CONNECTION);
        let State::Client(client) = &mut self.conns[slot].as_mut().expect("live").state else {
            return Ok(());
        };
        let blocked = match client.ws.flush() {
            Ok(()) => false,
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => true,
            Err(e) => return Err(read_error(e)),
        };
        let interest = if blocked { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        let _ = self.poll.registry().reregister(client.ws.get_mut(), token, interest);
        Ok(())
    }

    fn drain_channels(&mut self) {
        while let Ok(stream) = self.accepted.try_recv() {
            self.adopt(stream);
        }
        while let Ok((key, response)) = self.responses.try_recv() {
            if let Some(&slot) = self.by_key.get(&key)
                && let Err(close) = self.start_response(slot, response.to_bytes(), None)
            {
                self.close(key, close);
            }
        }
        // Replies first: a caller gets its result before the update of the same tick.
        // The tick thread sends a tick's replies before its updates, so once an update
        // is here, the replies before it are too: they are taken before each update.
        self.drain_replies();
        while let Ok(outgoing) = self.outgoing.try_recv() {
            self.drain_replies();
            match outgoing {
                Outgoing::Message { client, message } => {
                    self.guarded(Some(client), |l| l.send(client, &message))
                }
                Outgoing::Stopped { database, epoch, why } => self.stopped(&database, epoch, &why),
            }
        }
    }

    fn drain_replies(&mut self) {
        while let Ok(reply) = self.replies.try_recv() {
            self.guarded(None, |l| l.reply(reply));
        }
    }

    /// Runs `f` for one message; a panic in it drops `client`'s connection (when
    /// known) and no other: the loop goes on serving the rest.
    fn guarded(&mut self, client: Option<ClientKey>, f: impl FnOnce(&mut Self)) {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            eprintln!("tickdb: handling a message for a client panicked: {panic:?}");
            if let Some(key) = client {
                self.drop_conn(key);
            }
        }
    }

    /// A database stopped: its clients, and handshakes waiting for it, are closed.
    fn stopped(&mut self, database: &str, epoch: u64, why: &str) {
        let of_it = |state: &State| match state {
            State::Client(c) => c.served.epoch == epoch,
            State::Connecting(u) => u.served.epoch == epoch,
            _ => false,
        };
        let keys: Vec<ClientKey> = self
            .by_key
            .iter()
            .filter(|(_, slot)| of_it(&self.conns[**slot].as_ref().expect("live").state))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.close(key, Close::new(CloseCode::Error, format!("database `{database}` stopped: {why}")));
        }
    }

    fn reply(&mut self, reply: CallReply) {
        match self.calls.remove(&reply.id) {
            Some(PendingCall::Reducer { client, request_id, started }) => {
                let Some(&slot) = self.by_key.get(&client) else { return };
                if let State::Client(c) = &mut self.conn(slot).state {
                    c.calls_in_flight -= 1;
                }
                if reply.outcome.is_err() {
                    self.metrics.reducer_errors.fetch_add(1, Ordering::Relaxed);
                }
                let changes = reply.own_changes.and_then(|c| c.downcast::<Vec<QuerySetUpdate>>().ok());
                let message = ServerMessage::ReducerResult {
                    request_id,
                    tick: reply.tick.0,
                    outcome: reply.outcome.map_err(|e| e.to_string()),
                    duration_us: started.elapsed().as_micros() as u64,
                    changes: changes.map(|c| *c).unwrap_or_default(),
                };
                self.send(client, &Shared::new(&message));
            }
            Some(PendingCall::Connect { client, served, identity, connection_id }) => {
                let connecting = self.by_key.get(&client).copied().filter(|&slot| {
                    matches!(self.conns[slot].as_ref().expect("live connection").state, State::Connecting(_))
                });
                let Some(slot) = connecting else {
                    // The client left (or timed out) while the module ran `client_connected`.
                    if reply.outcome.is_ok() {
                        disconnected(&served, identity, connection_id);
                    }
                    return;
                };
                let conn = self.conns[slot].as_mut().expect("live connection");
                let State::Connecting(upgrade) = std::mem::replace(&mut conn.state, State::Waiting) else {
                    unreachable!("checked above");
                };
                let outcome = match reply.outcome {
                    Ok(_) => {
                        let accept = upgrade.accept.clone();
                        self.start_response(slot, accept, Some(Then::Client(upgrade)))
                    }
                    Err(e) => {
                        let why = format!("the database refused the connection: {e}");
                        self.start_response(slot, Response::error(&ApiError::forbidden(why)).to_bytes(), None)
                    }
                };
                if let Err(close) = outcome {
                    self.close(client, close);
                }
            }
            None => {}
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        let idle = self.config.idle_timeout;
        let mut expired = Vec::new();
        for conn in self.conns.iter_mut().flatten() {
            match &mut conn.state {
                State::Request { .. } | State::Responding { .. } | State::Connecting(_)
                    if now >= conn.deadline =>
                {
                    expired.push((conn.key, None))
                }
                State::Closing { until, .. } if now >= *until => expired.push((conn.key, None)),
                State::Client(client) => {
                    let silent = now.duration_since(client.last_heard);
                    if silent >= 2 * idle {
                        let why = format!("nothing heard for {} s (idle_timeout)", silent.as_secs());
                        expired.push((conn.key, Some(Close::new(CloseCode::Away, why))));
                    } else if silent >= idle && !client.pinged {
                        client.pinged = true;
                        let _ = client.ws.write(Message::Ping(Default::default()));
                        self.dirty.push(conn.key);
                    }
                }
                _ => {}
            }
        }
        for (key, close) in expired {
            let Some(&slot) = self.by_key.get(&key) else { continue };
            match (close, &self.conn(slot).state) {
                (None, State::Request { .. }) => {
                    let why = "the request took too long to arrive (request_timeout)";
                    if let Err(close) = self.respond(slot, &ApiError::new(408, why)) {
                        self.close(key, close);
                    }
                }
                (None, State::Connecting(_)) => {
                    // Should `client_connected` succeed later, the module hears of the disconnect.
                    let why = "the database did not take the connection in time (request_timeout); retry";
                    if let Err(close) = self.respond(slot, &ApiError::unavailable(why)) {
                        self.close(key, close);
                    }
                }
                (None, _) => self.drop_conn(key),
                (Some(close), _) => self.close(key, close),
            }
        }
        self.flush_dirty();
        if self.index == 0 {
            self.step_scans();
            // Connections left in the backlog when an accept failed (out of descriptors).
            self.accept();
        }
    }

    /// Initial scans of big subscriptions read on between ticks, even when no tick comes.
    fn step_scans(&mut self) {
        for served in self.databases.list() {
            let hub = Arc::clone(&served.hub);
            if served.status.scanning.load(Ordering::Acquire) {
                let _ = served.with_handle(|h| h.post(move |db| crate::hub::lock(&hub).step_scans(db)));
            }
        }
    }

    /// Ends a connection: a client gets a close frame with `close`'s reason and a
    /// moment to read it; anything else is dropped.
    fn close(&mut self, key: ClientKey, close: Close) {
        let Some(&slot) = self.by_key.get(&key) else { return };
        // The client's calls read so far go before its disconnect.
        self.submit_batches();
        let until = Instant::now() + CLOSE_GRACE;
        let mut ws = match std::mem::replace(&mut self.conn(slot).state, State::Closing { until, ws: None }) {
            State::Client(client) => {
                self.client_gone(key, &client);
                client.ws
            }
            State::Echo(ws) => *ws,
            _ => return self.drop_conn(key),
        };
        // The close frame goes after what is queued: a slow client that reads on
        // within the grace period gets it, one that does not is dropped without it.
        let frame = CloseFrame { code: close.code, reason: close.reason.into() };
        let _ = ws.close(Some(frame));
        let _ = ws.flush();
        let token = Token(slot + FIRST_CONNECTION);
        let _ = self.poll.registry().reregister(ws.get_mut(), token, Interest::READABLE | Interest::WRITABLE);
        self.conn(slot).state = State::Closing { until, ws: Some(Box::new(ws)) };
    }

    /// Tells the database the client left: its subscriptions go, its
    /// `client_disconnected` runs.
    fn client_gone(&self, key: ClientKey, client: &Client) {
        self.metrics.websocket_clients.fetch_sub(1, Ordering::Relaxed);
        let hub = Arc::clone(&client.served.hub);
        let (identity, connection) = (client.identity, client.connection_id);
        let _ = client.served.with_handle(|h| {
            // A full inbox loses these only under overload; the hub then keeps the
            // client's sets until the database restarts, and sends to a closed key.
            let _ = h.post(move |_| crate::hub::lock(&hub).disconnect(key));
        });
        disconnected(&client.served, identity, connection);
    }
    fn drop_conn(&mut self, key: ClientKey) {
        // The client's calls read so far go before its disconnect.
        self.submit_batches();
        let Some(slot) = self.by_key.remove(&key) else { return };
        let mut conn = self.conns[slot].take().expect("live");
        match &conn.state {
            State::Client(client) => self.client_gone(key, client),
            // `client_connected` succeeded, but the handshake's answer never went out.
            State::Responding { then: Some(Then::Client(u)), .. } => {
                disconnected(&u.served, u.identity, u.connection_id)
            }
            _ => {}
        }
        if let Some(stream) = conn.stream.as_mut() {
            let _ = self.poll.registry().deregister(stream);
        }
        match conn.state {
            State::Client(mut client) => {
                let _ = self.poll.registry().deregister(client.ws.get_mut());
            }
            State::Closing { ws: Some(mut ws), .. } => {
                let _ = self.poll.registry().deregister(ws.get_mut());
            }
            State::Echo(mut ws) => {
                let _ = self.poll.registry().deregister(ws.get_mut());
            }
            _ => {}
        }
        self.free.push(slot);
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `client_disconnected` for a connection whose `client_connected` succeeded.
fn disconnected(served: &Served, identity: Identity, connection: ConnectionId) {
    // A full inbox loses it only under overload; the module then never hears of it.
    let _ = served.with_handle(|h| {
        h.submit(ModuleWork::lifecycle(Lifecycle::ClientDisconnected, identity, connection, None))
    });
}

/// Whether a WebSocket handshake is well formed.
fn check_handshake(head: &Head) -> Result<(), ApiError> {
    if head.method != "GET" || head.header("sec-websocket-version") != Some("13") {
        return Err(ApiError::bad_request("a WebSocket handshake is a GET with Sec-WebSocket-Version: 13"));
    }
    if head.header("sec-websocket-key").is_none_or(|k| k.trim().len() != 24) {
        return Err(ApiError::bad_request("the handshake has no valid Sec-WebSocket-Key"));
    }
    Ok(())
}

/// The WebSocket limits of every connection, from the server's.
fn ws_config(config: &ServerConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(0)
        .max_write_buffer_size(config.send_buffer_bytes_max)
        .max_message_size(Some(config.message_bytes_max))
        .max_frame_size(Some(config.message_bytes_max))
}

/// How a failed read ends a client.
fn read_error(e: tungstenite::Error) -> Close {
    use tungstenite::error::{CapacityError, Error};
    match e {
        Error::ConnectionClosed | Error::AlreadyClosed => Close::new(CloseCode::Normal, ""),
        Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => Close::new(
            CloseCode::Size,
            format!("a message of {size} bytes is over the limit of {max_size} (message_bytes_max)"),
        ),
        Error::Capacity(e) => Close::new(CloseCode::Size, e.to_string()),
        Error::Protocol(e) => Close::new(CloseCode::Protocol, e.to_string()),
        Error::Utf8(e) => Close::new(CloseCode::Invalid, e),
        other => Close::new(CloseCode::Abnormal, other.to_string()),
    }
}
