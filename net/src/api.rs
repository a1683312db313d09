//! The HTTP API, served by worker threads so that the event loop never waits for a
//! module to compile or a reducer to run.
//!
//! | method and path | what | who |
//! |---|---|---|
//! | `POST /v1/identity` | a new identity and its token | anyone |
//! | `GET /v1/database` | the databases | anyone |
//! | `POST /v1/database/NAME[?clear=true]` | publish the wasm in the body | the owner (a new name: anyone with a token) |
//! | `DELETE /v1/database/NAME` | delete it and its data | the owner |
//! | `GET /v1/database/NAME/schema` | tables, columns, indexes, reducers | anyone |
//! | `GET /v1/database/NAME/module_def` | the module definition, binary (`ModuleDef::encode`), for bindings | anyone |
//! | `POST /v1/database/NAME/call/REDUCER` | call with JSON arguments | anyone (as their token's identity) |
//! | `POST /v1/database/NAME/sql` | run SQL from the body | reads: anyone, as visibility allows; writes: the owner |
//! | `GET /v1/database/NAME/logs[?n=100][&after=SEQ&wait=S]` | the module's recent log lines; or follow them | the owner |
//! | `GET /metrics` | Prometheus metrics | anyone |
//! | `GET /v1/database/NAME/subscribe` | the WebSocket client protocol | anyone |
//!
//! Tokens go in `Authorization: Bearer TOKEN`. Errors are JSON: `{"error": "...", "status": N}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use serde_json::{Value as Json, json};
use tickdb_engine::{CallReply, ModuleWork, ReplyTo};
use tickdb_sql::Reader;
use tickdb_wasm_abi::{ConnectionId, Identity, IndexKind, TableAccess, ValueType, decode_exact};

use crate::databases::{ApiError, Databases, Published, Served};
use crate::http::{Request, Response};
use crate::identity::{Keys, new_connection_id};
use crate::json::{from_json, to_json};

/// Server-wide counters, shown by `GET /metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub websocket_clients: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub reducer_calls: AtomicU64,
    pub reducer_errors: AtomicU64,
    pub slow_clients_dropped: AtomicU64,
    pub http_requests: AtomicU64,
}

/// The longest a request for log lines waits for one.
const LOG_WAIT_SECONDS_MAX: u64 = 30;

/// What the HTTP workers share.
#[derive(Debug)]
pub struct Api {
    pub databases: Arc<Databases>,
    pub keys: Arc<Keys>,
    pub metrics: Arc<Metrics>,
    /// Workers waiting for log lines.
    pub log_waiters: AtomicU64,
}

/// A worker waiting for log lines; the count goes down when it is done.
struct WaitSlot<'a>(&'a AtomicU64);

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Api {
    /// Answers one request.
    pub fn handle(&self, request: &Request) -> Response {
        self.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
        match self.route(request) {
            Ok(response) => response,
            Err(e) => Response::error(&e),
        }
    }

    fn route(&self, request: &Request) -> Result<Response, ApiError> {
        let head = &request.head;
        let parts: Vec<&str> = head.path.trim_matches('/').split('/').collect();
        match (head.method.as_str(), parts.as_slice()) {
            ("POST", ["v1", "identity"]) => {
                let (identity, token) = self.keys.new_identity();
                Ok(Response::json(200, &json!({ "identity": identity.to_string(), "token": token })))
            }
            ("GET", ["metrics"]) => Ok(Response::text(200, self.prometheus())),
            ("GET", ["v1", "database"]) => Ok(Response::json(200, &self.list())),
            ("POST", ["v1", "database", name]) => self.publish(request, name),
            ("DELETE", ["v1", "database", name]) => {
                self.databases.delete(name, self.caller(request)?)?;
                Ok(Response::json(200, &json!({ "deleted": name })))
            }
            ("GET", ["v1", "database", name, "schema"]) => {
                Ok(Response::json(200, &schema(&*self.databases.get(name)?)))
            }
            ("GET", ["v1", "database", name, "module_def"]) => {
                let def = self.databases.get(name)?.module().def.encode();
                Ok(Response { status: 200, content_type: "application/octet-stream", body: def })
            }
            ("POST", ["v1", "database", name, "call", reducer]) => self.call(request, name, reducer),
            ("POST", ["v1", "database", name, "sql"]) => self.sql(request, name),
            ("GET", ["v1", "database", name, "logs"]) => self.logs(request, name),
            ("GET", ["v1", "database", _, "subscribe"]) => {
                Err(ApiError::new(426, "this is the WebSocket endpoint: connect with a WebSocket client"))
            }
            _ => Err(ApiError::not_found(format!("no API at {} {}", head.method, head.path))),
        }
    }

    /// The identity of the request's token; a request without one is refused.
    fn caller(&self, request: &Request) -> Result<Identity, ApiError> {
        let token = request.head.token().ok_or_else(|| {
            ApiError::unauthorized(
                "this needs an identity: send `Authorization: Bearer TOKEN` (POST /v1/identity makes one)",
            )
        })?;
        self.keys.verify(token).map_err(|e| ApiError::unauthorized(e.to_string()))
    }

    /// The identity of the request's token, or a new anonymous one.
    fn caller_or_anonymous(&self, request: &Request) -> Result<Identity, ApiError> {
        match request.head.token() {
            Some(_) => self.caller(request),
            None => Ok(self.keys.new_identity().0),
        }
    }

    fn list(&self) -> Json {
        let databases: Vec<Json> = self
            .databases
            .list()
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "owner": s.owner.to_string(),
                    "module_hash": s.module().hash.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                })
            })
            .collect();
        json!({ "databases": databases })
    }

    fn publish(&self, request: &Request, name: &str) -> Result<Response, ApiError> {
        let owner = self.caller(request)?;
        if request.body.is_empty() {
            return Err(ApiError::bad_request("send the module's wasm as the request body"));
        }
        let clear = request.head.param("clear").is_some_and(|v| v == "true" || v == "1");
        let outcome = self.databases.publish(name, owner, &request.body, clear)?;
        let (what, changes) = match &outcome {
            Published::Created => ("created", &[][..]),
            Published::Unchanged => ("unchanged", &[][..]),
            Published::Replaced => ("replaced", &[][..]),
            Published::Migrated(changes) => ("migrated", &changes[..]),
        };
        let status = if outcome == Published::Created { 201 } else { 200 };
        let body = json!({ "name": name, "owner": owner.to_string(), "outcome": what, "changes": changes });
        Ok(Response::json(status, &body))
    }

    fn call(&self, request: &Request, name: &str, reducer: &str) -> Result<Response, ApiError> {
        let caller = self.caller_or_anonymous(request)?;
        let served = self.databases.get(name)?;
        let module = served.module();
        let (id, def) = module
            .reducer_id(reducer)
            .map(|id| (id, &module.def.reducers[id as usize]))
            .ok_or_else(|| ApiError::not_found(format!("database `{name}` has no reducer `{reducer}`")))?;
        let body: Json = match request.body.is_empty() {
            true => Json::Array(Vec::new()),
            false => serde_json::from_slice(&request.body)
                .map_err(|e| ApiError::bad_request(format!("the arguments are not JSON: {e}")))?,
        };
        let params = ValueType::Product(def.params.clone());
        let args = from_json(&body, &params)
            .map_err(|e| ApiError::bad_request(format!("reducer `{reducer}`: {e}")))?;
        let mut encoded = Vec::new();
        tickdb_wasm_abi::encode(&params, &args, &mut encoded)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let (to, reply) = mpsc::channel::<CallReply>();
        let started = Instant::now();
        let reply_to = Some(ReplyTo { id: 0, to });
        let work = ModuleWork::call_of(&module, id, caller, new_connection_id(), &encoded, reply_to);
        served.with_handle(|h| h.submit(work))?.map_err(|e| ApiError::unavailable(e.to_string()))?;
        self.metrics.reducer_calls.fetch_add(1, Ordering::Relaxed);
        let reply = reply.recv().map_err(|_| ApiError::unavailable("the database stopped"))?;
        let duration_us = started.elapsed().as_micros() as u64;
        match reply.outcome {
            Ok(value) => {
                let value = decode_exact(&def.returns, &value)
                    .map(|v| to_json(&v, &def.returns))
                    .unwrap_or(Json::Null);
                Ok(Response::json(
                    200,
                    &json!({ "ok": value, "tick": reply.tick.0, "duration_us": duration_us }),
                ))
            }
            Err(e) => {
                self.metrics.reducer_errors.fetch_add(1, Ordering::Relaxed);
                let status = match e {
                    tickdb_engine::CallError::NotCallable(_) => 403,
                    tickdb_engine::CallError::InvalidArguments { .. } => 400,
                    tickdb_engine::CallError::Failed(_) => 400,
                    _ => 500,
                };
                Err(ApiError::new(status, e.to_string()))
            }
        }
    }

    fn sql(&self, request: &Request, name: &str) -> Result<Response, ApiError> {
        let caller = self.caller_or_anonymous(request)?;
        let served = self.databases.get(name)?;
        let sql = std::str::from_utf8(&request.body)
            .map_err(|_| ApiError::bad_request("the SQL must be UTF-8"))?
            .to_string();
        let reader = if served.is_owner(caller) { Reader::owner(caller) } else { Reader::client(caller) };
        let is_write = {
            let first = sql.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
            matches!(first.as_str(), "INSERT" | "UPDATE" | "DELETE")
        };
        if is_write {
            return self.dml(&served, caller, sql);
        }
        let hub = Arc::clone(&served.hub);
        let limits = self.databases.config().query_limits.clone();
        let result = served
            .with_handle(|h| {
                h.read(move |db| {
                    let hub = crate::hub::lock(&hub);
                    tickdb_sql::query_for(db, hub.visibility(), reader, &sql, &limits)
                })
            })?
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let result = result.map_err(|e| match e.kind {
            tickdb_sql::ErrorKind::Forbidden => ApiError::forbidden(e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        })?;
        let columns: Vec<Json> =
            result.columns.iter().map(|(n, t)| json!({ "name": n, "type": t.to_string() })).collect();
        let rows: Vec<Json> = result
            .rows
            .iter()
            .map(|row| row.iter().zip(&result.columns).map(|(v, (_, t))| to_json(v, t)).collect())
            .collect();
        Ok(Response::json(200, &json!({ "columns": columns, "rows": rows })))
    }

    fn dml(&self, served: &Served, caller: Identity, sql: String) -> Result<Response, ApiError> {
        if !served.is_owner(caller) {
            return Err(ApiError::forbidden(format!(
                "only the owner of `{}` may change its tables with SQL",
                served.name
            )));
        }
        let (to, reply) = mpsc::channel::<CallReply>();
        let limits = self.databases.config().query_limits.clone();
        let to = Some(ReplyTo { id: 0, to });
        let work = tickdb_sql::dml_work(served.owner, caller, ConnectionId::default(), sql, limits, to);
        served.with_handle(|h| h.submit(work))?.map_err(|e| ApiError::unavailable(e.to_string()))?;
        let reply = reply.recv().map_err(|_| ApiError::unavailable("the database stopped"))?;
        match reply.outcome {
            Ok(count) => {
                let rows = count.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                Ok(Response::json(200, &json!({ "rows_affected": rows, "tick": reply.tick.0 })))
            }
            Err(e) => Err(ApiError::bad_request(e.to_string())),
        }
    }

    /// The module's log: the last `n` lines; or, with `after=SEQ`, the lines numbered
    /// SEQ on, waiting up to `wait` seconds (at most 30) for one: a client follows the
    /// log by asking again from the `next` it was given.
    fn logs(&self, request: &Request, name: &str) -> Result<Response, ApiError> {
        let caller = self.caller(request)?;
        let served = self.databases.get(name)?;
        if !served.is_owner(caller) {
            return Err(ApiError::forbidden(format!("only the owner of `{name}` may read its logs")));
        }
        let param = |key: &str| {
            request.head.param(key).map(|v| {
                v.parse::<u64>().map_err(|_| ApiError::bad_request(format!("`{key}` must be a number")))
            })
        };
        let n = param("n").transpose()?.unwrap_or(100).min(10_000) as usize;
        let (first, lines) = match param("after").transpose()? {
            None => served.logs.last(n),
            Some(after) => {
                let wait = std::time::Duration::from_secs(
                    param("wait").transpose()?.unwrap_or(0).min(LOG_WAIT_SECONDS_MAX),
                );
                let _waiting = self.wait_slot(wait)?;
                served.logs.since(after, n, wait)
            }
        };
        let json: Vec<Json> = lines
            .iter()
            .zip(first..)
            .map(|(l, seq)| {
                json!({
                    "seq": seq,
                    "level": l.level_name(),
                    "timestamp_us": l.timestamp.micros_since_epoch,
                    "reducer": l.reducer.as_deref(),
                    "target": l.target,
                    "message": l.message,
                })
            })
            .collect();
        Ok(Response::json(200, &json!({ "lines": json, "next": first + lines.len() as u64 })))
    }

    /// A worker may wait for log lines only while another worker stays free for
    /// everything else.
    fn wait_slot(&self, wait: std::time::Duration) -> Result<Option<WaitSlot<'_>>, ApiError> {
        if wait.is_zero() {
            return Ok(None);
        }
        let waiting = self.log_waiters.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = WaitSlot(&self.log_waiters);
        if waiting as usize >= self.databases.config().http_workers {
            return Err(ApiError::new(
                429,
                "every HTTP worker but one is following a log already; retry without `wait`",
            ));
        }
        Ok(Some(slot))
    }

    fn prometheus(&self) -> String {
        let m = &self.metrics;
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, value: &AtomicU64| {
            out.push_str(&format!(
                "# HELP tickdb_{name} {help}\n# TYPE tickdb_{name} {kind}\ntickdb_{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        };
        counter("connections_open", "Connections open now.", "gauge", &m.connections_open);
        counter("connections_total", "Connections accepted.", "counter", &m.connections_total);
        counter(
            "connections_refused_total",
            "Connections refused at a limit.",
            "counter",
            &m.connections_refused,
        );
        counter("websocket_clients", "WebSocket clients connected now.", "gauge", &m.websocket_clients);
        counter("messages_received_total", "WebSocket messages received.", "counter", &m.messages_received);
        counter("messages_sent_total", "WebSocket messages sent.", "counter", &m.messages_sent);
        counter("bytes_sent_total", "WebSocket bytes queued to clients.", "counter", &m.bytes_sent);
        counter("bytes_received_total", "WebSocket message bytes received.", "counter", &m.bytes_received);
        counter("reducer_calls_total", "Reducer calls from clients.", "counter", &m.reducer_calls);
        counter("reducer_errors_total", "Reducer calls that failed.", "counter", &m.reducer_errors);
        counter(
            "slow_clients_dropped_total",
            "Clients dropped for a full send buffer.",
            "counter",
            &m.slow_clients_dropped,
        );
        counter("http_requests_total", "HTTP API requests.", "counter", &m.http_requests);
        if let Some(cpu) = process_cpu_seconds() {
            out.push_str(&format!(
                "# HELP process_cpu_seconds_total CPU time of the server process, user and system.\n\
                 # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu:.6}\n"
            ));
        }
        out.push_str(
            "# HELP tickdb_tick_duration_us Tick durations.\n# TYPE tickdb_tick_duration_us summary\n",
        );
        let mut evaluation = String::from(
            "# HELP tickdb_subscription_eval_us Subscription evaluation per tick.\n# TYPE tickdb_subscription_eval_us summary\n",
        );
        for served in self.databases.list() {
            let name = &served.name;
            let Ok(metrics) = served.with_handle(|h| h.metrics()) else { continue };
            let h = &metrics.tick_duration_us;
            for q in [0.5, 0.99, 0.999] {
                out.push_str(&format!(
                    "tickdb_tick_duration_us{{database=\"{name}\",quantile=\"{q}\"}} {}\n",
                    h.value_at_quantile(q)
                ));
            }
            out.push_str(&format!("tickdb_tick_duration_us_count{{database=\"{name}\"}} {}\n", h.len()));
            out.push_str(&format!(
                "tickdb_transactions_committed_total{{database=\"{name}\"}} {}\n",
                metrics.committed
            ));
            out.push_str(&format!(
                "tickdb_transactions_rolled_back_total{{database=\"{name}\"}} {}\n",
                metrics.rolled_back
            ));
            let e = crate::hub::lock(&served.hub).eval_us().clone();
            for q in [0.5, 0.99] {
                evaluation.push_str(&format!(
                    "tickdb_subscription_eval_us{{database=\"{name}\",quantile=\"{q}\"}} {}\n",
                    e.value_at_quantile(q)
                ));
            }
        }
        out.push_str(&evaluation);
        out
    }
}

/// The CPU time the process has used, user and system, over all its threads.
fn process_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes one rusage into the pointer it is given, which points
    // to memory of that size living for the call; it is read only when the call
    // succeeded.
    #[allow(unsafe_code)]
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// A database's schema as JSON.
pub fn schema(served: &Served) -> Json {
    let module = served.module();
    let def = &module.def;
    let tables: Vec<Json> = def
        .tables
        .iter()
        .map(|t| {
            let columns: Vec<Json> =
                t.columns.iter().map(|c| json!({ "name": c.name, "type": c.ty.to_string() })).collect();
            let names = |cols: &[tickdb_wasm_abi::ColId]| -> Vec<String> {
                cols.iter().map(|c| t.columns[c.0 as usize].name.clone()).collect()
            };
            let unique: Vec<Json> =
                t.unique.iter().map(|u| json!({ "name": u.name, "columns": names(&u.columns) })).collect();
            let indexes: Vec<Json> = t
                .indexes
                .iter()
                .map(|i| {
                    let kind = match i.kind {
                        IndexKind::BTree => json!("btree"),
                        IndexKind::Grid { cell_log2 } => json!({ "grid": { "cell": 1u64 << cell_log2 } }),
                    };
                    json!({ "name": i.name, "columns": names(&i.columns), "kind": kind })
                })
                .collect();
            json!({
                "name": t.name,
                "public": t.access == TableAccess::Public,
                "columns": columns,
                "primary_key": t.primary_key.map(|pk| names(&t.unique[pk].columns)),
                "unique": unique,
                "indexes": indexes,
            })
        })
        .collect();
    let reducers: Vec<Json> = def
        .reducers
        .iter()
        .map(|r| {
            let params: Vec<Json> =
                r.params.fields.iter().map(|f| json!({ "name": f.name, "type": f.ty.to_string() })).collect();
            json!({
                "name": r.name,
                "params": params,
                "returns": r.returns.to_string(),
                "lifecycle": r.lifecycle.map(|l| format!("{l:?}")),
            })
        })
        .collect();
    json!({ "name": served.name, "owner": served.owner.to_string(), "tables": tables, "reducers": reducers })
}
