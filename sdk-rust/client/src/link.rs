//! The link: one WebSocket connection to the server, served by one I/O thread.
//!
//! The thread owns the socket (non-blocking, under a mio `Poll`). Outgoing messages
//! reach it through a channel and a `Waker`; every incoming message is unframed,
//! decoded and passed on to the connection's inbound channel, where `frame_tick` or the
//! background thread applies it. The thread never runs user code and never blocks on
//! anything but the poll, so a slow game loop only lets messages queue up.

use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use tickdb_protocol::{ServerMessage, unframe};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::SdkError;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);

/// What the I/O thread passes on. `generation` tells links apart across reconnects.
pub(crate) enum Inbound {
    Message {
        generation: u64,
        message: ServerMessage,
    },
    /// A message that could not be read; the link goes on.
    Bad(SdkError),
    /// The link is gone: closed by either side (`None` when asked to), or failed.
    Closed {
        generation: u64,
        error: Option<SdkError>,
    },
    /// A new link, made by the reconnect thread.
    Linked {
        generation: u64,
        link: Link,
    },
    /// The reconnect thread gave up or was told to stop.
    ReconnectFailed(SdkError),
    /// The client dropped a query set: its rows leave the cache.
    Unsubscribed(u32),
}

enum Outbound {
    Send(Vec<u8>),
    Close,
}

/// Lets a new link's I/O thread start: until then it passes nothing on, so whoever
/// made the link can announce it (`Inbound::Linked`) before its first message.
#[derive(Debug)]
pub(crate) struct Start(mpsc::Sender<()>);

impl Start {
    pub(crate) fn go(self) {
        let _ = self.0.send(());
    }
}

/// The sending side of a link; dropping it closes the connection.
pub(crate) struct Link {
    outbox: mpsc::Sender<Outbound>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

/// Limits of one link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkLimits {
    pub(crate) connect_timeout: Duration,
    pub(crate) message_bytes_max: usize,
}

impl Link {
    /// Connects to `url` (`ws://HOST:PORT/...`) and makes the link's I/O thread,
    /// which waits for [`Start::go`].
    pub(crate) fn open(
        url: &str,
        limits: LinkLimits,
        generation: u64,
        inbound: mpsc::Sender<Inbound>,
    ) -> Result<(Link, Start), SdkError> {
        let (ws, poll) = handshake(url, limits)?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKE).map_err(|e| SdkError::Connect(e.to_string()))?);
        let (outbox, rx) = mpsc::channel();
        let (start, started) = mpsc::channel();
        let io = IoThread {
            ws,
            poll,
            outbox: rx,
            inbound,
            generation,
            message_bytes_max: limits.message_bytes_max,
        };
        let thread = std::thread::Builder::new()
            .name("tickdb-sdk-io".into())
            .spawn(move || {
                if started.recv().is_ok() {
                    io.run();
                }
            })
            .map_err(|e| SdkError::Connect(format!("cannot start the I/O thread: {e}")))?;
        Ok((Link { outbox, waker, thread: Some(thread) }, Start(start)))
    }

    /// Queues one framed message.
    pub(crate) fn send(&self, framed: Vec<u8>) -> Result<(), SdkError> {
        self.outbox
            .send(Outbound::Send(framed))
            .map_err(|_| SdkError::Disconnected("the connection is closed".into()))?;
        self.waker.wake().map_err(|e| SdkError::Disconnected(e.to_string()))
    }

    /// Asks the I/O thread to close the connection; it reports `Closed` when done.
    pub(crate) fn close(&self) {
        if self.outbox.send(Outbound::Close).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
        if let Some(thread) = self.thread.take() {
            // The I/O thread ends within its close timeout; it runs no user code.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// Connects and performs the WebSocket handshake within the connect timeout.
fn handshake(url: &str, limits: LinkLimits) -> Result<(WebSocket<mio::net::TcpStream>, Poll), SdkError> {
    // Errors name the address without its query, which holds the token.
    let shown = url.split('?').next().unwrap_or_default();
    let connect = |e: &dyn std::fmt::Display| SdkError::Connect(format!("{shown}: {e}"));
    let request = url.into_client_request().map_err(|e| connect(&e))?;
    let host = request.uri().host().ok_or_else(|| connect(&"no host in the address"))?.to_string();
    let port = request.uri().port_u16().unwrap_or(80);
    let addrs: Vec<_> = (host.as_str(), port).to_socket_addrs().map_err(|e| connect(&e))?.collect();
    // `localhost` may name ::1 first while the server listens on 127.0.0.1: try each.
    let mut stream = Err(connect(&"the host has no address"));
    for addr in &addrs {
        stream = TcpStream::connect_timeout(addr, limits.connect_timeout).map_err(|e| connect(&e));
        if stream.is_ok() {
            break;
        }
    }
    let stream = stream?;
    stream.set_nodelay(true).map_err(|e| connect(&e))?;
    stream.set_nonblocking(true).map_err(|e| connect(&e))?;
    let mut stream = mio::net::TcpStream::from_std(stream);
    let poll = Poll::new().map_err(|e| connect(&e))?;
    poll.registry()
        .register(&mut stream, SOCKET, Interest::READABLE | Interest::WRITABLE)
        .map_err(|e| connect(&e))?;
    // tungstenite zero-fills a read buffer's worth of memory on every read: the
    // default 128 KiB made reading cost more than decoding. Larger messages take
    // several reads.
    let config = WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .max_message_size(Some(limits.message_bytes_max))
        .max_frame_size(Some(limits.message_bytes_max));
    let deadline = Instant::now() + limits.connect_timeout;
    let mut events = Events::with_capacity(4);
    let mut poll = poll;
    let mut attempt = tungstenite::client::client_with_config(request, stream, Some(config));
    loop {
        match attempt {
            Ok((ws, _)) => return Ok((ws, poll)),
            Err(HandshakeError::Failure(e)) => return Err(refused(shown, e)),
            Err(HandshakeError::Interrupted(mid)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(connect(&"the handshake timed out"));
                }
                if let Err(e) = poll.poll(&mut events, Some(left))
                    && e.kind() != ErrorKind::Interrupted
                {
                    return Err(connect(&e));
                }
                attempt = mid.handshake();
            }
        }
    }
}

/// The error for a refused handshake, with the server's message when it sent one.
fn refused(url: &str, e: tungstenite::Error) -> SdkError {
    if let tungstenite::Error::Http(response) = &e {
        let status = response.status().as_u16();
        let body = response.body().as_deref().unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        return SdkError::Refused { status, message };
    }
    SdkError::Connect(format!("{url}: {e}"))
}

struct IoThread {
    ws: WebSocket<mio::net::TcpStream>,
    poll: Poll,
    outbox: mpsc::Receiver<Outbound>,
    inbound: mpsc::Sender<Inbound>,
    generation: u64,
    message_bytes_max: usize,
}

/// How long a closing link waits for the server's close before it drops the socket.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

impl IoThread {
    fn run(mut self) {
        let error = self.serve().err();
        let _ = self.inbound.send(Inbound::Closed { generation: self.generation, error });
    }

    /// Moves messages until the link closes: `Ok` when asked to or closed cleanly.
    ///
    /// Each turn reads and writes before it waits: the handshake may have read the
    /// first messages along with the server's answer, and the poll, edge-triggered,
    /// would not wake for bytes already read.
    fn serve(&mut self) -> Result<(), SdkError> {
        let mut events = Events::with_capacity(16);
        let mut closing: Option<Instant> = None;
        loop {
            if closing.is_none() && self.drain_outbox()? {
                closing = Some(Instant::now());
                match self.ws.close(None) {
                    Ok(()) => {}
                    Err(e) if would_block(&e) => {}
                    Err(_) => return Ok(()),
                }
            }
            match self.ws.flush() {
                Ok(()) => {}
                Err(e) if would_block(&e) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(());
                }
                Err(e) => return Err(SdkError::Disconnected(e.to_string())),
            }
            if self.read_all()? {
                return Ok(());
            }
            let timeout = closing.map(|at| (at + CLOSE_WAIT).saturating_duration_since(Instant::now()));
            if timeout.is_some_and(|t| t.is_zero()) {
                return Ok(());
            }
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != ErrorKind::Interrupted
            {
                return Err(SdkError::Disconnected(e.to_string()));
            }
        }
    }

    /// Writes every queued message; `true` when a close was asked for.
    fn drain_outbox(&mut self) -> Result<bool, SdkError> {
        loop {
            match self.outbox.try_recv() {
                Ok(Outbound::Send(bytes)) => match self.ws.write(Message::Binary(bytes.into())) {
                    Ok(()) => {}
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(SdkError::Disconnected(format!("cannot send: {e}"))),
                },
                Ok(Outbound::Close) | Err(mpsc::TryRecvError::Disconnected) => return Ok(true),
                Err(mpsc::TryRecvError::Empty) => return Ok(false),
            }
        }
    }

    /// Reads every message that has arrived; `true` when the connection closed cleanly.
    fn read_all(&mut self) -> Result<bool, SdkError> {
        loop {
            let message = match self.ws.read() {
                Ok(message) => message,
                Err(e) if would_block(&e) => return Ok(false),
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(true);
                }
                Err(e) => return Err(SdkError::Disconnected(e.to_string())),
            };
            let inbound = match message {
                Message::Binary(bytes) => match unframe(&bytes, self.message_bytes_max)
                    .and_then(|body| ServerMessage::decode(&body))
                {
                    Ok(message) => Inbound::Message { generation: self.generation, message },
                    Err(e) => Inbound::Bad(SdkError::Protocol(format!("a message from the server: {e}"))),
                },
                Message::Close(Some(frame))
                    if frame.code != tungstenite::protocol::frame::coding::CloseCode::Normal =>
                {
                    return Err(SdkError::Disconnected(format!(
                        "the server closed the connection: {}",
                        frame.reason
                    )));
                }
                Message::Text(_) => Inbound::Bad(SdkError::Protocol(
                    "the server sent text; this client speaks the binary protocol".into(),
                )),
                _ => continue,
            };
            if self.inbound.send(inbound).is_err() {
                // The connection was dropped: nobody reads any more.
                return Ok(true);
            }
        }
    }
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == ErrorKind::WouldBlock)
}
