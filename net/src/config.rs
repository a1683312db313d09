//! The server's limits, each named with its unit, in one place.

use std::time::Duration;

use tickdb_engine::{EngineConfig, HostConfig};
use tickdb_sql::QueryLimits;

/// Everything a server can be told. Every limit has a default and a test that goes past it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections open at once, HTTP and WebSocket; past it new ones are closed at once.
    pub connections_max: usize,
    /// The request line and headers of an HTTP request (and of a WebSocket handshake).
    pub header_bytes_max: usize,
    /// How long a client may take to send its request's headers (and body): slowloris.
    pub request_timeout: Duration,
    /// An HTTP request's body: a published module is the largest.
    pub body_bytes_max: usize,
    /// One WebSocket message from a client (after decompression), and one frame of it.
    pub message_bytes_max: usize,
    /// Messages a connection may send per second, on average ...
    pub messages_per_second_max: u32,
    /// ... with bursts of up to this many.
    pub messages_burst_max: u32,
    /// Bytes queued for one client; a client that reads slower than its updates come
    /// is disconnected when it is this far behind.
    pub send_buffer_bytes_max: usize,
    /// A connection that sends nothing for this long is pinged; one that stays silent
    /// for twice this long is closed.
    pub idle_timeout: Duration,
    /// Query sets one connection may hold at once, and queries in one set.
    pub query_sets_max: usize,
    pub queries_per_set_max: usize,
    /// Reducer calls one connection may have waiting for their results.
    pub calls_in_flight_max: usize,
    /// How much of each database's recent changes is kept for clients that reconnect
    /// and resume their subscriptions: at most this many bytes of rows ...
    pub resume_history_bytes_max: usize,
    /// ... over at most this many ticks (that changed anything).
    pub resume_history_ticks_max: usize,
    /// Databases one server holds.
    pub databases_max: usize,
    /// Event loop threads; connections are spread over them as they are accepted.
    /// Default: one per core (at most 16): they spend most of their time in the
    /// kernel's send path, and measured on 2 cores, 2 loops beat 1 (BENCHMARKS.md).
    pub io_threads: usize,
    /// Worker threads that serve HTTP API requests (publishing compiles modules); all
    /// but one may wait for log lines.
    pub http_workers: usize,
    /// Serves `/v1/echo`, a WebSocket that echoes every message, for the Autobahn
    /// conformance suite (`net/conformance.sh`); off by default.
    pub echo_endpoint: bool,
    pub engine: EngineConfig,
    pub host: HostConfig,
    /// One-off queries and initial subscription rows.
    pub query_limits: QueryLimits,
    /// How much of a big subscription's initial rows is read between two ticks.
    pub initial_slice: QueryLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            connections_max: 20_000,
            header_bytes_max: 8 << 10,
            request_timeout: Duration::from_secs(10),
            body_bytes_max: 64 << 20,
            message_bytes_max: 1 << 20,
            messages_per_second_max: 1_000,
            messages_burst_max: 2_000,
            send_buffer_bytes_max: 16 << 20,
            idle_timeout: Duration::from_secs(30),
            query_sets_max: 64,
            queries_per_set_max: 64,
            calls_in_flight_max: 1_024,
            resume_history_bytes_max: 64 << 20,
            resume_history_ticks_max: 1_200,
            databases_max: 64,
            io_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(16)),
            http_workers: 4,
            echo_endpoint: false,
            engine: EngineConfig::default(),
            host: HostConfig::default(),
            query_limits: QueryLimits::default(),
            initial_slice: QueryLimits { rows_max: 50_000, time_max: Duration::from_millis(2) },
        }
    }
}
