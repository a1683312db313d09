//! The HTTP API client: requests to a tickdb server as the identity the config holds
//! for it (a new one is made and saved the first time it is needed).

use serde_json::Value as Json;

use crate::CliError;
use crate::config::{Config, Credentials};

#[derive(Debug)]
pub struct Api {
    /// `http://HOST:PORT`, no trailing slash.
    pub server: String,
    agent: ureq::Agent,
    config: Config,
}

/// A response's status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Result<Json, CliError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| CliError::new(format!("the server's answer is not JSON: {e}")))
    }
}

impl Api {
    pub fn new(server: &str, config: Config) -> Api {
        let server = normalize(server);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(300)))
            .build()
            .into();
        Api { server, agent, config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn config_owned(&self) -> Config {
        self.config.clone()
    }

    /// The saved identity for this server, if any.
    pub fn saved(&self) -> Option<&Credentials> {
        self.config.servers.get(&self.server)
    }

    /// The identity to act as: the saved one, or a new one (saved).
    pub fn credentials(&mut self) -> Result<Credentials, CliError> {
        if let Some(c) = self.saved() {
            return Ok(c.clone());
        }
        self.new_identity()
    }

    /// Asks the server for a new identity and saves it as this server's.
    pub fn new_identity(&mut self) -> Result<Credentials, CliError> {
        let reply = self.request("POST", "/v1/identity", None, &[])?;
        let json = expect_ok("POST /v1/identity", &reply)?;
        let text = |key: &str| {
            json[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| CliError::new(format!("no `{key}` in the answer")))
        };
        let credentials = Credentials { identity: text("identity")?, token: text("token")? };
        self.config.servers.insert(self.server.clone(), credentials.clone());
        self.config.save()?;
        Ok(credentials)
    }

    /// A request as the saved identity (making one if needed).
    pub fn authed(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Reply, CliError> {
        let token = self.credentials()?.token;
        self.request(method, path, Some(&token), body)
    }

    /// A request as the saved identity if there is one, else anonymous.
    pub fn maybe_authed(&self, method: &str, path: &str, body: &[u8]) -> Result<Reply, CliError> {
        let token = self.saved().map(|c| c.token.clone());
        self.request(method, path, token.as_deref(), body)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, CliError> {
        let url = format!("{}{path}", self.server);
        let auth = token.map(|t| format!("Bearer {t}"));
        let result = match method {
            "GET" => with_auth(self.agent.get(&url), auth.as_deref()).call(),
            "DELETE" => with_auth(self.agent.delete(&url), auth.as_deref()).call(),
            _ => with_auth(self.agent.post(&url), auth.as_deref()).send(body),
        };
        let mut response = result.map_err(|e| match e {
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => CliError::new(format!(
                "cannot reach the tickdb server at {}: {e}\n  start one with `tickdb start` (or pass --server URL)",
                self.server
            )),
            e => CliError::new(format!("{method} {url}: {e}")),
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| CliError::new(format!("reading the answer to {method} {path}: {e}")))?;
        Ok(Reply { status, body })
    }
}

fn with_auth<B>(request: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(auth) => request.header("Authorization", auth),
        None => request,
    }
}

/// The JSON body of a successful reply, or the server's error.
pub fn expect_ok(what: &str, reply: &Reply) -> Result<Json, CliError> {
    if (200..300).contains(&reply.status) {
        return reply.json();
    }
    let message = reply
        .json()
        .ok()
        .and_then(|j| j["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).into_owned());
    let hint = match reply.status {
        401 => {
            "\n  the server does not accept the saved token (was it started with another data directory?); \
                `tickdb identity new` makes a new identity"
        }
        _ => "",
    };
    Err(CliError::new(format!("{what}: {message} ({}){hint}", reply.status)))
}

/// `127.0.0.1:3000` and `http://127.0.0.1:3000/` alike become `http://127.0.0.1:3000`.
pub fn normalize(server: &str) -> String {
    let server = server.trim_end_matches('/');
    match server.split_once("://") {
        Some(("ws", rest)) => format!("http://{rest}"),
        Some(_) => server.to_string(),
        None => format!("http://{server}"),
    }
}
