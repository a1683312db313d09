//! Every limit of the server, gone past: each gets a clear refusal (an HTTP status or
//! a WebSocket close code with a reason), and the server goes on serving others.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use tickdb_net::ServerConfig;
use tickdb_protocol::{ClientMessage, ServerMessage};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

fn chat_server(name: &str, config: ServerConfig) -> (TestServer, String) {
    let server = start(name, config);
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "chat", &owner, "tickdb-example-chat").status, 201);
    (server, owner)
}

/// A client that still works: it calls a reducer and gets the result.
fn still_serving(server: &TestServer) {
    let mut client = connect(server.addr, "chat", "");
    client.recv();
    client.call(1, "send_message", tickdb::Type::to_bytes(&"still here".to_string()));
    assert!(matches!(client.recv(), ServerMessage::ReducerResult { request_id: 1, outcome: Ok(_), .. }));
}

/// Past `connections_max`, a new connection gets a 503 saying so.
#[test]
fn connections_are_bounded() {
    // Two loops: the count is the server's, wherever connections are served.
    let config = ServerConfig { connections_max: 2, io_threads: 2, ..ServerConfig::default() };
    let server = start("limits-connections", config);
    // Accepted in order: by the time the third is taken, the first two are held.
    let _held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    let mut third = TcpStream::connect(server.addr).unwrap();
    third.set_read_timeout(Some(TIMEOUT)).unwrap();
    let reply = read_reply(&mut third);
    assert_eq!(reply.status, 503);
    assert!(reply.text().contains("connections_max"), "{}", reply.text());
}

/// Headers past `header_bytes_max` get 431, a body past `body_bytes_max` 413 (before
/// it is read), a request that dawdles past `request_timeout` 408, and garbage 400.
#[test]
fn requests_are_bounded_in_size_and_time() {
    let config = ServerConfig {
        header_bytes_max: 1024,
        body_bytes_max: 1000,
        request_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = start("limits-requests", config);
    let big = format!("GET /v1/database HTTP/1.1\r\nX-Padding: {}\r\n\r\n", "x".repeat(2000));
    let reply = raw(server.addr, big.as_bytes());
    assert_eq!(reply.status, 431, "{}", reply.text());
    let reply = raw(server.addr, b"POST /v1/database/x HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
    assert_eq!(reply.status, 413, "{}", reply.text());
    let reply = raw(server.addr, b"GET /v1/data");
    assert_eq!(reply.status, 408, "slowloris: {}", reply.text());
    let reply = raw(server.addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
    assert_eq!(reply.status, 400, "{}", reply.text());
    let reply = raw(server.addr, b"POST /v1/identity HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(reply.status, 411, "{}", reply.text());
}

/// Malformed handshakes are refused with a status and a reason.
#[test]
fn malformed_handshakes_are_refused() {
    let (server, _) = chat_server("limits-handshakes", ServerConfig::default());
    let upgrade = |path: &str, extra: &str| {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
        );
        raw(server.addr, request.as_bytes())
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert_eq!(upgrade("/v1/database/chat/subscribe", "Sec-WebSocket-Version: 13\r\n").status, 400, "no key");
    assert_eq!(upgrade("/v1/database/chat/subscribe", key).status, 400, "no version");
    let unknown = upgrade("/v1/database/nope/subscribe", &format!("{key}Sec-WebSocket-Version: 13\r\n"));
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let codec = upgrade(
        "/v1/database/chat/subscribe?compression=zip",
        &format!("{key}Sec-WebSocket-Version: 13\r\n"),
    );
    assert_eq!(codec.status, 400, "{}", codec.text());
    assert_eq!(upgrade("/elsewhere", &format!("{key}Sec-WebSocket-Version: 13\r\n")).status, 404);
    still_serving(&server);
}

/// Garbage, truncated FlatBuffers, unknown compression tags and text messages close
/// that client with a reason; others go on.
#[test]
fn malformed_messages_close_only_their_client() {
    let (server, _) = chat_server("limits-messages", ServerConfig::default());
    let call = ClientMessage::CallReducer { request_id: 1, reducer: "send_message".into(), args: vec![1, 2] }
        .encode();
    let mut truncated = vec![0u8];
    truncated.extend_from_slice(&call[..call.len() / 2]);
    let cases: Vec<(Message, CloseCode)> = vec![
        (Message::Binary(vec![0, 1, 2, 3, 4, 5, 6, 7, 8].into()), CloseCode::Invalid),
        (Message::Binary(truncated.into()), CloseCode::Invalid),
        (Message::Binary(vec![7, 1, 2].into()), CloseCode::Invalid),
        (Message::Binary(vec![].into()), CloseCode::Invalid),
        (Message::Text("{\"call\": 1}".into()), CloseCode::Unsupported),
    ];
    for (message, code) in cases {
        let mut client = connect(server.addr, "chat", "");
        client.recv();
        client.ws.send(message).unwrap();
        let (closed, reason) = client.closed();
        assert_eq!(closed, code, "{reason}");
        assert!(!reason.is_empty());
    }
    // Bad arguments to a real reducer are the reducer's error, not a protocol one.
    let mut client = connect(server.addr, "chat", "");
    client.recv();
    client.call(5, "send_message", vec![0xFF; 3]);
    match client.recv() {
        ServerMessage::ReducerResult { request_id: 5, outcome: Err(why), .. } => {
            assert!(why.contains("invalid arguments"), "{why}")
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    still_serving(&server);
}

/// A message past `message_bytes_max` closes the client with 1009; one past the
/// limit once decompressed is refused as well.
#[test]
fn oversized_messages_are_refused() {
    let config = ServerConfig { message_bytes_max: 4096, ..ServerConfig::default() };
    let (server, _) = chat_server("limits-size", config);
    let mut client = connect(server.addr, "chat", "");
    client.recv();
    client.ws.send(Message::Binary(vec![0u8; 10_000].into())).unwrap();
    let (code, reason) = client.closed();
    assert_eq!(code, CloseCode::Size, "{reason}");
    assert!(reason.contains("message_bytes_max"), "{reason}");

    let mut client = connect(server.addr, "chat", "?compression=lz4");
    client.recv();
    let big = ClientMessage::OneOffQuery { request_id: 1, sql: " ".repeat(100_000) }.encode();
    let bomb = tickdb_protocol::frame(tickdb_protocol::Compression::Lz4, &big);
    assert!(bomb.len() < 4096, "compresses to {}", bomb.len());
    client.ws.send(Message::Binary(bomb.into())).unwrap();
    let (code, reason) = client.closed();
    assert_eq!(code, CloseCode::Invalid, "{reason}");
    assert!(reason.contains("decompresses"), "{reason}");
    still_serving(&server);
}

/// More messages than `messages_per_second_max` allows (after the burst) close the
/// client with a policy violation.
#[test]
fn message_rate_is_bounded() {
    let config =
        ServerConfig { messages_per_second_max: 1, messages_burst_max: 5, ..ServerConfig::default() };
    let (server, _) = chat_server("limits-rate", config);
    let mut client = connect(server.addr, "chat", "");
    client.recv();
    for set in 0..50 {
        // Sends may fail once the server has closed: the close frame is what counts.
        if client
            .ws
            .send(Message::Binary(
                tickdb_protocol::frame(
                    Default::default(),
                    &ClientMessage::Unsubscribe { query_set_id: set }.encode(),
                )
                .into(),
            ))
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = client.closed();
    assert_eq!(code, CloseCode::Policy, "{reason}");
    assert!(reason.contains("messages_per_second_max"), "{reason}");
}

/// A subscriber that stops reading is dropped once `send_buffer_bytes_max` bytes wait
/// for it, with a close frame that says why; the server's memory for it stays bounded
/// and others keep their updates.
#[test]
fn slow_readers_are_dropped() {
    let config = ServerConfig { send_buffer_bytes_max: 256 << 10, ..ServerConfig::default() };
    let server = start("limits-slow", config);
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "game", &owner, "tickdb-test-features").status, 201);
    let mut slow = connect(server.addr, "game", "");
    slow.recv();
    slow.subscribe(1, &["SELECT * FROM event"]);
    assert!(matches!(slow.recv(), ServerMessage::SubscribeApplied { .. }));
    // Big rows until the server gives up on the client that does not read; bounded,
    // so a server that never drops it fails the test.
    let kind = "k".repeat(60_000);
    let mut dropped = false;
    for id in 1000..2000 {
        let insert = format!("INSERT INTO event (id, kind, micros) VALUES ({id}, '{kind}', 0)");
        let reply = http(server.addr, "POST", "/v1/database/game/sql", Some(&owner), insert.as_bytes());
        assert_eq!(reply.status, 200, "{}", reply.text());
        if id % 20 == 0 {
            let metrics = http(server.addr, "GET", "/metrics", None, b"").text();
            if metrics.contains("tickdb_slow_clients_dropped_total 1") {
                dropped = true;
                break;
            }
        }
    }
    assert!(dropped, "the slow client was never dropped");
    let (code, reason) = slow.closed();
    assert_eq!(code, CloseCode::Policy, "{reason}");
    assert!(reason.contains("reads too slowly"), "{reason}");
}

/// A client that answers nothing (not even pings) is closed after twice
/// `idle_timeout`, with 1001 and a reason; read here as raw frames, so that nothing
/// answers the server's ping.
#[test]
fn silent_clients_time_out() {
    let config = ServerConfig { idle_timeout: Duration::from_millis(200), ..ServerConfig::default() };
    let (server, _) = chat_server("limits-idle", config);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(
            b"GET /v1/database/chat/subscribe HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(bytes.starts_with(b"HTTP/1.1 101"));
    // Unmasked server frames: opcode, then a length (16-bit past 125).
    let mut frames = Vec::new();
    let mut at = head_end;
    while at + 2 <= bytes.len() {
        let (opcode, mut len, mut start) = (bytes[at] & 0x0F, usize::from(bytes[at + 1] & 0x7F), at + 2);
        if len == 126 {
            len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
            start += 2;
        }
        frames.push((opcode, bytes[start..start + len].to_vec()));
        at = start + len;
    }
    let opcodes: Vec<u8> = frames.iter().map(|f| f.0).collect();
    assert_eq!(opcodes, [0x2, 0x9, 0x8], "identity, ping, close");
    let close = &frames[2].1;
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1001);
    assert!(String::from_utf8_lossy(&close[2..]).contains("idle_timeout"));
}

/// A client may hold `query_sets_max` sets of at most `queries_per_set_max` queries,
/// and `calls_in_flight_max` calls waiting.
#[test]
fn subscriptions_and_calls_per_client_are_bounded() {
    let config = ServerConfig { query_sets_max: 2, queries_per_set_max: 2, ..ServerConfig::default() };
    let (server, _) = chat_server("limits-sets", config);
    let mut client = connect(server.addr, "chat", "");
    client.recv();
    client.subscribe(
        1,
        &["SELECT * FROM user", "SELECT * FROM message", "SELECT * FROM user WHERE online = true"],
    );
    match client.recv() {
        ServerMessage::SubscriptionError { query_set_id: 1, message } => {
            assert!(message.contains("queries_per_set_max"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    for set in [1, 2] {
        client.subscribe(set, &["SELECT * FROM user"]);
        assert!(matches!(client.recv(), ServerMessage::SubscribeApplied { .. }));
    }
    client.subscribe(3, &["SELECT * FROM user"]);
    match client.recv() {
        ServerMessage::SubscriptionError { query_set_id: 3, message } => {
            assert!(message.contains("query_sets_max"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Replacing a live set is allowed at the limit.
    client.subscribe(2, &["SELECT * FROM message"]);
    assert!(matches!(client.recv(), ServerMessage::SubscribeApplied { query_set_id: 2, .. }));
}
