//! A server on an ephemeral port of 127.0.0.1 with a fresh data directory, and small
//! blocking clients for it: HTTP requests and WebSocket connections. Every socket has
//! a read timeout, so a server that fails to answer fails the test instead of hanging it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tickdb_engine::store::DataDir;
use tickdb_net::{ServerConfig, ServerHandle};
use tickdb_protocol::{ClientMessage, Compression, ServerMessage, frame, unframe};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub server: Option<ServerHandle>,
    pub dir: std::path::PathBuf,
    pub addr: SocketAddr,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn data_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tickdb-net-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn start(name: &str, config: ServerConfig) -> TestServer {
    let dir = data_dir(name);
    start_in(dir, config)
}

pub fn start_in(dir: std::path::PathBuf, config: ServerConfig) -> TestServer {
    let server = tickdb_net::start(config, DataDir::new(&dir), "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.addr();
    TestServer { server: Some(server), dir, addr }
}

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes and reads the response until the server closes.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(bytes).unwrap();
    read_reply(&mut stream)
}

pub fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(&out) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("not an HTTP response ({other:?}): {}", String::from_utf8_lossy(&out)),
    };
    Reply { status: response.code.unwrap(), body: out[len..].to_vec() }
}

pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    request.extend_from_slice(body);
    raw(addr, &request)
}

/// A new identity's token.
pub fn new_token(addr: SocketAddr) -> String {
    let reply = http(addr, "POST", "/v1/identity", None, b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["token"].as_str().unwrap().to_string()
}

pub fn publish(addr: SocketAddr, name: &str, token: &str, module: &str) -> Reply {
    http(addr, "POST", &format!("/v1/database/{name}"), Some(token), &tickdb_test_modules::wasm(module))
}

pub struct Client {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
    pub compression: Compression,
}

/// Connects a WebSocket client; `Err` holds the refusal's status and body.
pub fn try_connect(addr: SocketAddr, db: &str, query: &str) -> Result<Client, (u16, String)> {
    let url = format!("ws://{addr}/v1/database/{db}/subscribe{query}");
    let compression = if query.contains("compression=lz4") { Compression::Lz4 } else { Compression::None };
    match tungstenite::connect(url) {
        Ok((ws, _)) => {
            if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
            }
            Ok(Client { ws, compression })
        }
        Err(tungstenite::Error::Http(response)) => {
            let body =
                response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("connecting: {e}"),
    }
}

pub fn connect(addr: SocketAddr, db: &str, query: &str) -> Client {
    try_connect(addr, db, query).unwrap_or_else(|(status, body)| panic!("refused with {status}: {body}"))
}

impl Client {
    pub fn send(&mut self, message: &ClientMessage) {
        let bytes = frame(self.compression, &message.encode());
        self.ws.send(Message::Binary(bytes.into())).unwrap();
    }

    /// The next protocol message; panics on anything else.
    pub fn recv(&mut self) -> ServerMessage {
        loop {
            match self.ws.read().unwrap() {
                Message::Binary(bytes) => {
                    return ServerMessage::decode(&unframe(&bytes, 64 << 20).unwrap()).unwrap();
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; the close code and reason.
    pub fn closed(&mut self) -> (CloseCode, String) {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(frame))) => return (frame.code, frame.reason.to_string()),
                Ok(Message::Close(None)) => return (CloseCode::Status, String::new()),
                Ok(_) => {}
                Err(e) => panic!("the connection ended without a close frame: {e}"),
            }
        }
    }

    pub fn call(&mut self, request_id: u32, reducer: &str, args: Vec<u8>) {
        self.send(&ClientMessage::CallReducer { request_id, reducer: reducer.into(), args });
    }

    pub fn subscribe(&mut self, query_set_id: u32, queries: &[&str]) {
        let queries = queries.iter().map(|q| q.to_string()).collect();
        self.send(&ClientMessage::Subscribe { query_set_id, queries, resume_after_tick: 0, resume_epoch: 0 });
    }
}
