//! The client protocol as JSON text, for browsers and debugging: a client that connects
//! with `?format=json` sends and receives text messages, each one JSON object with one
//! key, the message's name (as in `tickdb.fbs`), whose value holds its fields.
//!
//! Rows, keys and reducer arguments are JSON values by their types ([`crate::json`]):
//! a row is an array of its column values, an update is
//! `{"key": [...], "changed": {"column": value, ...}}`, a call's `args` is an array of
//! its parameters (or an object by parameter name). Everything else is as in the
//! binary protocol.
//!
//! ```json
//! {"CallReducer": {"request_id": 1, "reducer": "send_message", "args": ["hello"]}}
//! {"Subscribe": {"query_set_id": 1, "queries": ["SELECT * FROM message"]}}
//! ```

use serde_json::{Map, Value as Json, json};
use tickdb_protocol::{ClientMessage, QuerySetUpdate, RowList, ServerMessage, TableUpdate};
use tickdb_wasm_abi::{ModuleDef, ProductType, Reader, TableSchema, ValueType, decode, decode_exact};

use crate::json::{from_json, hex, to_json};

/// Reads a client's JSON message; reducer arguments are checked against the module's
/// reducer and encoded.
pub fn client_message(text: &str, def: &ModuleDef) -> Result<ClientMessage, String> {
    let json: Json = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let (name, body) = match json.as_object() {
        Some(map) if map.len() == 1 => map.iter().next().expect("one entry"),
        _ => return Err("a message is an object with one key: the message's name".into()),
    };
    let u32_field = |field: &str| -> Result<u32, String> {
        let value = body
            .get(field)
            .and_then(Json::as_u64)
            .ok_or_else(|| format!("{name}: `{field}` must be a number"))?;
        u32::try_from(value).map_err(|_| format!("{name}: `{field}` is larger than a u32"))
    };
    let str_field = |field: &str| -> Result<String, String> {
        body.get(field)
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{name}: `{field}` must be a string"))
    };
    Ok(match name.as_str() {
        "CallReducer" => {
            let reducer = str_field("reducer")?;
            let def = def.reducer(&reducer).ok_or_else(|| format!("no reducer `{reducer}`"))?;
            let params = ValueType::Product(def.params.clone());
            let value = from_json(body.get("args").unwrap_or(&Json::Array(Vec::new())), &params)
                .map_err(|e| format!("reducer `{reducer}`: {e}"))?;
            let mut args = Vec::new();
            tickdb_wasm_abi::encode(&params, &value, &mut args).map_err(|e| e.to_string())?;
            ClientMessage::CallReducer { request_id: u32_field("request_id")?, reducer, args }
        }
        "Subscribe" => {
            let queries = body
                .get("queries")
                .and_then(Json::as_array)
                .ok_or("Subscribe: `queries` must be an array")?;
            let queries = queries
                .iter()
                .map(|q| q.as_str().map(str::to_string).ok_or("Subscribe: each query is a string"))
                .collect::<Result<_, _>>()?;
            let resume_after_tick = body.get("resume_after_tick").and_then(Json::as_u64).unwrap_or(0);
            let resume_epoch = body.get("resume_epoch").and_then(Json::as_u64).unwrap_or(0);
            ClientMessage::Subscribe {
                query_set_id: u32_field("query_set_id")?,
                queries,
                resume_after_tick,
                resume_epoch,
            }
        }
        "Unsubscribe" => ClientMessage::Unsubscribe { query_set_id: u32_field("query_set_id")? },
        "OneOffQuery" => {
            ClientMessage::OneOffQuery { request_id: u32_field("request_id")?, sql: str_field("sql")? }
        }
        other => return Err(format!("unknown message `{other}`")),
    })
}

/// A server message as JSON text, rows decoded by the module's table schemas.
pub fn server_message(message: &ServerMessage, def: &ModuleDef) -> String {
    let json = match message {
        ServerMessage::IdentityToken { identity, token, connection_id, tick, epoch } => {
            json!({"IdentityToken": {
                "identity": hex(identity), "token": token, "connection_id": hex(connection_id), "tick": tick, "epoch": epoch,
            }})
        }
        ServerMessage::SubscribeApplied { query_set_id, tick, tables, resumed, missed } => {
            let tables: Vec<Json> = tables
                .iter()
                .map(|t| json!({"table_id": t.table_id, "table_name": t.table_name, "rows": rows(def, &t.table_name, &t.rows)}))
                .collect();
            let missed: Vec<Json> = missed
                .iter()
                .map(|m| json!({"tick": m.tick, "tables": m.tables.iter().map(|t| table_update(def, t)).collect::<Vec<_>>()}))
                .collect();
            json!({"SubscribeApplied": {
                "query_set_id": query_set_id, "tick": tick, "tables": tables, "resumed": resumed, "missed": missed,
            }})
        }
        ServerMessage::TickUpdate { tick, timestamp_us, query_sets } => {
            let sets = query_sets_json(def, query_sets);
            json!({"TickUpdate": {"tick": tick, "timestamp_us": timestamp_us, "query_sets": sets}})
        }
        ServerMessage::ReducerResult { request_id, tick, outcome, duration_us, changes } => {
            let changes = query_sets_json(def, changes);
            let mut body = json!({"request_id": request_id, "tick": tick, "duration_us": duration_us, "changes": changes});
            match outcome {
                // The return value's type is the reducer's; the result does not name it,
                // so the value goes as the hex of its encoding.
                Ok(value) => body["ok"] = Json::String(hex(value)),
                Err(e) => body["error"] = Json::String(e.clone()),
            }
            json!({ "ReducerResult": body })
        }
        ServerMessage::QueryResult { request_id, outcome, duration_us } => {
            let mut body = json!({"request_id": request_id, "duration_us": duration_us});
            match outcome {
                Ok(result) => {
                    let ty = tickdb_wasm_abi::decode_type(&result.row_type).unwrap_or(ValueType::unit());
                    let rows: Vec<Json> = result
                        .rows
                        .iter()
                        .map(|r| decode_exact(&ty, r).map_or(Json::Null, |v| to_json(&v, &ty)))
                        .collect();
                    body["columns"] = json!(result.columns);
                    body["rows"] = Json::Array(rows);
                }
                Err(e) => body["error"] = Json::String(e.clone()),
            }
            json!({ "QueryResult": body })
        }
        ServerMessage::SubscriptionError { query_set_id, message } => {
            json!({"SubscriptionError": {"query_set_id": query_set_id, "message": message}})
        }
    };
    json.to_string()
}

fn row_type(schema: &TableSchema) -> ValueType {
    ValueType::Product(ProductType::new(schema.columns.iter().map(|c| (c.name.clone(), c.ty.clone()))))
}

fn rows(def: &ModuleDef, table: &str, list: &RowList) -> Json {
    let Some(schema) = def.table(table) else { return Json::Array(Vec::new()) };
    let ty = row_type(schema);
    list.iter().map(|r| decode_exact(&ty, r).map_or(Json::Null, |v| to_json(&v, &ty))).collect()
}

fn query_sets_json(def: &ModuleDef, sets: &[QuerySetUpdate]) -> Json {
    let sets = sets.iter().map(|s| {
        let tables: Vec<Json> = s.tables.iter().map(|t| table_update(def, t)).collect();
        json!({"query_set_id": s.query_set_id, "tables": tables})
    });
    Json::Array(sets.collect())
}

fn table_update(def: &ModuleDef, t: &TableUpdate) -> Json {
    let mut updates = Vec::new();
    if let Some(schema) = def.table(&t.table_name) {
        let key_columns: Vec<usize> = schema
            .primary_key
            .map(|pk| schema.unique[pk].columns.iter().map(|c| c.0 as usize).collect())
            .unwrap_or_default();
        let key_type = ValueType::Product(ProductType::new(
            key_columns.iter().map(|&c| (schema.columns[c].name.clone(), schema.columns[c].ty.clone())),
        ));
        let width = schema.columns.len().div_ceil(8);
        for i in 0..t.updates.len() {
            let key =
                decode_exact(&key_type, t.updates.keys.row(i)).map_or(Json::Null, |v| to_json(&v, &key_type));
            // A message built against other tables (across a migration) reads as no change.
            let Some(bits) = t.updates.changed.get(i * width..(i + 1) * width) else { continue };
            let mut values = Reader::new(t.updates.values.row(i));
            let mut changed = Map::new();
            for (c, column) in schema.columns.iter().enumerate() {
                if bits[c / 8] & (1 << (c % 8)) != 0 {
                    let value =
                        decode(&column.ty, &mut values).map_or(Json::Null, |v| to_json(&v, &column.ty));
                    changed.insert(column.name.clone(), value);
                }
            }
            updates.push(json!({"key": key, "changed": changed}));
        }
    }
    json!({
        "table_id": t.table_id,
        "table_name": t.table_name,
        "inserts": rows(def, &t.table_name, &t.inserts),
        "deletes": rows(def, &t.table_name, &t.deletes),
        "updates": updates,
    })
}
