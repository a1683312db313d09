//! The commands that talk to a database: over the HTTP API (`publish`, `call`, `sql`,
//! `logs`, `describe`, `list`, `delete`, `identity show`) and over the WebSocket
//! protocol, in its JSON form (`subscribe`).

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::{Value as Json, json};
use tickdb_wasm_abi::{ModuleDef, ValueType};

use crate::api::{Api, expect_ok};
use crate::{CliError, spinner};

/// Database names go into URLs as they are; refuse what would change the path.
fn check_name(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match ok {
        true => Ok(()),
        false => {
            Err(CliError::new(format!("`{name}` is not a database name: use letters, digits, `-` and `_`")))
        }
    }
}

pub fn publish(api: &mut Api, name: &str, wasm: &[u8], clear: bool, as_json: bool) -> Result<(), CliError> {
    check_name(name)?;
    let path = format!("/v1/database/{name}{}", if clear { "?clear=true" } else { "" });
    let progress = spinner(format!("publishing `{name}` ({} KB) to {}", wasm.len() / 1024, api.server));
    let reply = api.authed("POST", &path, wasm);
    progress.finish_and_clear();
    let answer = expect_ok(&format!("publishing `{name}`"), &reply?)?;
    if as_json {
        println!("{answer}");
        return Ok(());
    }
    let outcome = answer["outcome"].as_str().unwrap_or("published");
    println!("{outcome} `{name}` on {}", api.server);
    for change in answer["changes"].as_array().into_iter().flatten() {
        println!("  {}", change.as_str().unwrap_or_default());
    }
    Ok(())
}

/// The module definition of a published database.
pub fn module_def(api: &Api, name: &str) -> Result<ModuleDef, CliError> {
    check_name(name)?;
    let reply = api.maybe_authed("GET", &format!("/v1/database/{name}/module_def"), &[])?;
    if reply.status != 200 {
        expect_ok(&format!("database `{name}`"), &reply)?;
    }
    ModuleDef::decode(&reply.body)
        .map_err(|e| CliError::new(format!("the server's module definition of `{name}`: {e}")))
}

/// A reducer's signature, as `name(a: T, b: U)`.
fn signature(r: &tickdb_wasm_abi::ReducerDef) -> String {
    let params: Vec<String> = r.params.fields.iter().map(|f| format!("{}: {}", f.name, f.ty)).collect();
    format!("{}({})", r.name, params.join(", "))
}

pub fn call(
    api: &mut Api,
    name: &str,
    reducer: &str,
    args: &[String],
    as_json: bool,
) -> Result<(), CliError> {
    let def = module_def(api, name)?;
    let Some(r) = def.reducers.iter().find(|r| r.name == reducer) else {
        let callable: Vec<String> = def
            .reducers
            .iter()
            .filter(|r| crate::generate::client_callable(&def, r))
            .map(signature)
            .collect();
        return Err(CliError::new(format!(
            "database `{name}` has no reducer `{reducer}`; its reducers are:\n  {}",
            callable.join("\n  ")
        )));
    };
    if !crate::generate::client_callable(&def, r) {
        return Err(CliError::new(format!(
            "`{reducer}` is called by the database itself (a lifecycle reducer, tick system or schedule), not by clients"
        )));
    }

    if args.len() != r.params.fields.len() {
        return Err(CliError::new(format!(
            "`{reducer}` takes {} argument(s), not {}: {}",
            r.params.fields.len(),
            args.len(),
            signature(r)
        )));
    }
    let mut values = Vec::with_capacity(args.len());
    for (i, (arg, param)) in args.iter().zip(&r.params.fields).enumerate() {
        let value: Json = serde_json::from_str(arg).map_err(|_| {
            let hint = if param.ty == ValueType::String {
                format!(" (strings go in quotes: '\"{arg}\"')")
            } else {
                String::new()
            };
            CliError::new(format!(
                "argument {} (`{}`: {}) is not a JSON value: {arg}{hint}",
                i + 1,
                param.name,
                param.ty
            ))
        })?;
        tickdb_net::json::from_json(&value, &param.ty).map_err(|e| {
            CliError::new(format!("argument {} (`{}`: {}): {e}", i + 1, param.name, param.ty))
        })?;
        values.push(value);
    }
    let body = Json::Array(values).to_string();
    let reply = api.authed("POST", &format!("/v1/database/{name}/call/{reducer}"), body.as_bytes())?;
    let answer = expect_ok(&format!("`{reducer}`"), &reply)?;
    if as_json {
        println!("{answer}");
    } else if answer["ok"].is_null() || answer["ok"] == json!([]) {
        println!("ok (tick {})", answer["tick"]);
    } else {
        println!("{} (tick {})", answer["ok"], answer["tick"]);
    }
    Ok(())
}

pub fn sql(api: &mut Api, name: &str, query: Option<&str>, as_json: bool) -> Result<(), CliError> {
    check_name(name)?;
    let Some(query) = query else { return shell(api, name, as_json) };
    run_sql(api, name, query, as_json, &mut std::io::stdout())
}

fn run_sql(
    api: &mut Api,
    name: &str,
    query: &str,
    as_json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let reply = api.authed("POST", &format!("/v1/database/{name}/sql"), query.as_bytes())?;
    let answer = expect_ok("the query", &reply)?;
    let io = |e: std::io::Error| CliError::new(e.to_string());
    if as_json {
        return writeln!(out, "{answer}").map_err(io);
    }
    if let Some(affected) = answer["rows_affected"].as_u64() {
        return writeln!(out, "{affected} row(s) changed (tick {})", answer["tick"]).map_err(io);
    }
    let columns: Vec<String> = answer["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or("?").to_string())
        .collect();
    let rows: Vec<Vec<String>> = answer["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| row.as_array().into_iter().flatten().map(cell).collect())
        .collect();
    out.write_all(table(&columns, &rows).as_bytes()).map_err(io)
}

/// A JSON value as a table cell: strings without quotes.
fn cell(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        Json::Null => "null".into(),
        other => other.to_string(),
    }
}

/// Rows as an aligned text table, as psql prints them.
pub fn table(columns: &[String], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        let cells = rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count()));
        cells.chain([columns[i].chars().count()]).max().unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns.len()).map(width).collect();
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| format!(" {:w$} ", cells.get(i).map_or("", |c| c.as_str())))
            .collect();
        padded.join("|").trim_end().to_string() + "\n"
    };
    let mut out = line(columns);
    out.push_str(&widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"));
    out.push('\n');
    rows.iter().for_each(|r| out.push_str(&line(r)));
    out.push_str(&format!("({} row{})\n", rows.len(), if rows.len() == 1 { "" } else { "s" }));
    out
}

/// The interactive SQL shell: one statement per line (or ending with `;`), until EOF
/// or `\q`. Errors are printed and the shell goes on.
fn shell(api: &mut Api, name: &str, as_json: bool) -> Result<(), CliError> {
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!("SQL on `{name}` at {}; one statement per line, \\q to quit", api.server);
    }
    let mut stdout = std::io::stdout();
    let mut lines = std::io::stdin().lock().lines();
    let mut failed = false;
    loop {
        if interactive {
            print!("{name}> ");
            let _ = stdout.flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| CliError::new(e.to_string()))?;
        let statement = line.trim().trim_end_matches(';').trim();
        match statement {
            "" => continue,
            "\\q" | "quit" | "exit" => break,
            _ => {}
        }
        if let Err(e) = run_sql(api, name, statement, as_json, &mut stdout) {
            eprintln!("error: {e}");
            failed = true;
        }
    }
    match failed && !interactive {
        true => Err(CliError::new("some statements failed")),
        false => Ok(()),
    }
}

pub fn logs(api: &mut Api, name: &str, follow: bool, n: u64, as_json: bool) -> Result<(), CliError> {
    check_name(name)?;
    let mut path = format!("/v1/database/{name}/logs?n={n}");
    loop {
        let answer = expect_ok(&format!("the logs of `{name}`"), &api.authed("GET", &path, &[])?)?;
        for line in answer["lines"].as_array().into_iter().flatten() {
            match as_json {
                true => println!("{line}"),
                false => println!("{}", log_line(line)),
            }
        }
        if !follow {
            return Ok(());
        }
        let next =
            answer["next"].as_u64().ok_or_else(|| CliError::new("the server's log answer has no `next`"))?;
        path = format!("/v1/database/{name}/logs?after={next}&wait=25");
    }
}

/// A log line as text: time, level, reducer, message.
fn log_line(line: &Json) -> String {
    let micros = line["timestamp_us"].as_i64().unwrap_or(0);
    let time = UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64);
    let reducer = line["reducer"].as_str().map(|r| format!(" [{r}]")).unwrap_or_default();
    format!(
        "{} {:5}{reducer} {}",
        humantime::format_rfc3339_millis(time),
        line["level"].as_str().unwrap_or("?"),
        line["message"].as_str().unwrap_or_default()
    )
}

pub fn describe(api: &Api, name: &str, as_json: bool) -> Result<(), CliError> {
    check_name(name)?;
    let schema = expect_ok(
        &format!("database `{name}`"),
        &api.maybe_authed("GET", &format!("/v1/database/{name}/schema"), &[])?,
    )?;
    if as_json {
        println!("{schema}");
        return Ok(());
    }
    println!("database `{name}`, owner {}", schema["owner"].as_str().unwrap_or("?"));
    println!("tables:");
    for t in schema["tables"].as_array().into_iter().flatten() {
        let access = if t["public"].as_bool() == Some(true) { "public" } else { "private" };
        println!("  {} ({access})", t["name"].as_str().unwrap_or("?"));
        let names = |v: &Json| {
            v.as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
        };
        for c in t["columns"].as_array().into_iter().flatten() {
            println!("    {}: {}", c["name"].as_str().unwrap_or("?"), c["type"].as_str().unwrap_or("?"));
        }
        if !t["primary_key"].is_null() {
            println!("    primary key ({})", names(&t["primary_key"]));
        }
        for u in t["unique"].as_array().into_iter().flatten() {
            if u["columns"] != t["primary_key"] {
                println!("    unique ({})", names(&u["columns"]));
            }
        }
        for i in t["indexes"].as_array().into_iter().flatten() {
            let kind = i["kind"].as_str().map_or_else(|| i["kind"].to_string(), str::to_string);
            println!("    index {} {kind} ({})", i["name"].as_str().unwrap_or("?"), names(&i["columns"]));
        }
    }
    println!("reducers:");
    for r in schema["reducers"].as_array().into_iter().flatten() {
        let params: Vec<String> = r["params"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}: {}", p["name"].as_str().unwrap_or("?"), p["type"].as_str().unwrap_or("?")))
            .collect();
        let returns =
            r["returns"].as_str().filter(|t| *t != "()").map(|t| format!(" -> {t}")).unwrap_or_default();
        let lifecycle = r["lifecycle"].as_str().map(|l| format!("  (lifecycle: {l})")).unwrap_or_default();
        println!("  {}({}){returns}{lifecycle}", r["name"].as_str().unwrap_or("?"), params.join(", "));
    }
    Ok(())
}

pub fn list(api: &Api, as_json: bool) -> Result<(), CliError> {
    let answer = expect_ok("listing the databases", &api.maybe_authed("GET", "/v1/database", &[])?)?;
    if as_json {
        println!("{answer}");
        return Ok(());
    }
    let mine = api.saved().map(|c| c.identity.clone());
    let rows: Vec<Vec<String>> = answer["databases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let owner = d["owner"].as_str().unwrap_or("?");
            let owner =
                if Some(owner) == mine.as_deref() { format!("{owner} (you)") } else { owner.to_string() };
            vec![
                d["name"].as_str().unwrap_or("?").to_string(),
                owner,
                d["module_hash"].as_str().map_or("?", |h| h.get(..16).unwrap_or(h)).to_string(),
            ]
        })
        .collect();
    print!("{}", table(&["name".into(), "owner".into(), "module".into()], &rows));
    Ok(())
}

pub fn delete(api: &mut Api, name: &str) -> Result<(), CliError> {
    check_name(name)?;
    expect_ok(&format!("deleting `{name}`"), &api.authed("DELETE", &format!("/v1/database/{name}"), &[])?)?;
    println!("deleted `{name}` and its data from {}", api.server);
    Ok(())
}

pub fn identity_show(api: &Api, token: bool, as_json: bool) -> Result<(), CliError> {
    let Some(c) = api.saved() else {
        return Err(CliError::new(format!(
            "no identity saved for {} in {}; `tickdb identity new` makes one (any command that needs one does too)",
            api.server,
            api.config().path().display()
        )));
    };
    if as_json {
        let mut out = json!({ "server": api.server, "identity": c.identity });
        if token {
            out["token"] = json!(c.token);
        }
        println!("{out}");
        return Ok(());
    }
    println!("identity {} on {}", c.identity, api.server);
    if token {
        println!("token {}", c.token);
    }
    Ok(())
}

/// Subscribes over the WebSocket protocol (its JSON form) and prints the server's
/// messages about the subscription, one JSON object per line: the initial rows
/// (`SubscribeApplied`), then each `TickUpdate`, until `num_updates` updates (0: the
/// initial rows only) or the timeout.
pub fn subscribe(
    api: &mut Api,
    name: &str,
    queries: &[String],
    num_updates: Option<u64>,
    timeout: Option<Duration>,
) -> Result<(), CliError> {
    check_name(name)?;
    let token = api.credentials()?.token;
    let url = format!(
        "{}/v1/database/{name}/subscribe?format=json&token={token}",
        api.server.replacen("http", "ws", 1)
    );
    let (mut ws, _) = tungstenite::connect(&url).map_err(|e| match e {
        tungstenite::Error::Http(response) => {
            let body = response.body().as_deref().unwrap_or_default();
            let message = serde_json::from_slice::<Json>(body)
                .ok()
                .and_then(|j| j["error"].as_str().map(str::to_string));
            CliError::new(format!(
                "subscribing to `{name}`: {} ({})",
                message.unwrap_or_default(),
                response.status()
            ))
        }
        e => CliError::new(format!("connecting to {}: {e}", api.server)),
    })?;
    let subscribe = json!({ "Subscribe": { "query_set_id": 1, "queries": queries } });
    ws.send(tungstenite::Message::Text(subscribe.to_string().into()))
        .map_err(|e| CliError::new(e.to_string()))?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let (mut applied, mut updates) = (false, 0);
    let mut stdout = std::io::stdout();
    while !(applied && num_updates.is_some_and(|n| updates >= n)) {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            set_read_timeout(&ws, left)?;
        }
        let message = match ws.read() {
            Ok(tungstenite::Message::Text(text)) => text,
            Ok(tungstenite::Message::Close(frame)) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(CliError::new(format!("the server closed the subscription: {why}")));
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                break;
            }
            Err(e) => return Err(CliError::new(format!("the subscription ended: {e}"))),
        };
        let message: Json = serde_json::from_str(&message)
            .map_err(|e| CliError::new(format!("the server sent bad JSON: {e}")))?;
        if let Some(error) = message.get("SubscriptionError") {
            let why = error["message"].as_str().unwrap_or("?");
            return Err(CliError::new(format!("the subscription failed: {why}")));
        }
        match (message.get("SubscribeApplied"), message.get("TickUpdate")) {
            (Some(_), _) => applied = true,
            (None, Some(_)) => updates += 1,
            (None, None) => continue,
        }
        writeln!(stdout, "{message}")
            .and_then(|()| stdout.flush())
            .map_err(|e| CliError::new(e.to_string()))?;
    }
    if !applied {
        return Err(CliError::new("the server did not answer the subscription before the timeout"));
    }
    let _ = ws.close(None);
    Ok(())
}

fn set_read_timeout(
    ws: &tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    t: Duration,
) -> Result<(), CliError> {
    match ws.get_ref() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => {
            s.set_read_timeout(Some(t)).map_err(|e| CliError::new(e.to_string()))
        }
        _ => Ok(()),
    }
}
