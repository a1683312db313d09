//! HTTP/1.1 requests as the event loop reads them, parsed with httparse, and the
//! responses it writes. One request per connection: every response closes it.

use crate::databases::ApiError;

/// The most headers a request may have.
const HEADERS_MAX: usize = 48;

/// A request's line and headers.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub method: String,
    pub path: String,
    /// Query parameters, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// Where the body starts in the bytes read.
    pub len: usize,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body's length, from `Content-Length` (chunked bodies are refused).
    pub fn content_length(&self) -> Result<usize, ApiError> {
        if self.header("transfer-encoding").is_some() {
            return Err(ApiError::new(
                411,
                "send the body with a Content-Length; chunked bodies are not accepted",
            ));
        }
        match self.header("content-length") {
            None => Ok(0),
            Some(v) => {
                v.trim().parse().map_err(|_| ApiError::bad_request(format!("bad Content-Length `{v}`")))
            }
        }
    }

    /// The bearer token, from the `Authorization` header or the `token` parameter
    /// (browsers cannot set headers on WebSocket connections).
    pub fn token(&self) -> Option<&str> {
        let header = self.header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::trim));
        header.or_else(|| self.param("token"))
    }

    /// Whether this is a WebSocket upgrade request.
    pub fn is_upgrade(&self) -> bool {
        let has = |name: &str, token: &str| {
            self.header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        has("upgrade", "websocket") && has("connection", "upgrade")
    }
}

/// A request read whole.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub head: Head,
    pub body: Vec<u8>,
}

/// Parses the head of a request from the bytes read so far: `None` until it is all
/// there. Fails on anything httparse refuses, or on more than [`HEADERS_MAX`] headers.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::new(431, format!("a request may have at most {HEADERS_MAX} headers")));
        }
        Err(e) => return Err(ApiError::bad_request(format!("malformed HTTP request: {e}"))),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    Ok(Some(Head {
        method: req.method.unwrap_or_default().to_string(),
        path: path.to_string(),
        query: form_urlencoded::parse(query.as_bytes()).into_owned().collect(),
        headers,
        len,
    }))
}

/// A response, written whole and followed by closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response { status, content_type: "application/json", body: value.to_string().into_bytes() }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.into().into_bytes() }
    }

    pub fn error(e: &ApiError) -> Response {
        Response::json(e.status, &serde_json::json!({ "error": e.message, "status": e.status }))
    }

    /// The response's bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The answer to a WebSocket handshake with key `key`.
pub fn switching_protocols(key: &str) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heads parse once complete, with lower-cased names and decoded parameters;
    /// malformed ones and too many headers are refused with a status.
    #[test]
    fn heads_parse_and_bad_ones_are_refused() {
        assert!(parse_head(b"GET /v1/database HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let request = b"GET /v1/x?token=a%2Eb&n=3 HTTP/1.1\r\nAuthorization: Bearer t0k\r\n\r\nbody";
        let head = parse_head(request).unwrap().unwrap();
        assert_eq!((head.method.as_str(), head.path.as_str()), ("GET", "/v1/x"));
        assert_eq!(&request[head.len..], b"body");
        assert_eq!(head.param("token"), Some("a.b"));
        assert_eq!(head.token(), Some("t0k"));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").unwrap_err().status, 400);
        let many: String = (0..60).map(|i| format!("h{i}: v\r\n")).collect();
        let request = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(request.as_bytes()).unwrap_err().status, 431);
    }
}
