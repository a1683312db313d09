//! Values as JSON, by their types: for the HTTP API (reducer arguments, SQL results)
//! and for tools.
//!
//! Integers are JSON numbers, except 128-bit ones and `u64`/`i64` beyond 2^53, which
//! are strings so that JavaScript reads them exactly (either form is accepted).
//! Identities, connection ids and bytes are hex strings; timestamps and durations are
//! microseconds. A product is an array of its fields in order (an object by field name
//! is accepted too); an option is `null` or its value; a sum is `{"Variant": value}`.

use serde_json::{Map, Number, Value as Json};
use tickdb_wasm_abi::{ConnectionId, Identity, TimeDuration, Timestamp, Value, ValueType};

/// Nesting deeper than this is refused before it is followed.
const DEPTH_MAX: usize = 64;

/// A value as JSON.
pub fn to_json(value: &Value, ty: &ValueType) -> Json {
    match (value, ty) {
        (Value::Bool(v), _) => Json::Bool(*v),
        (Value::U8(v), _) => Json::from(*v),
        (Value::U16(v), _) => Json::from(*v),
        (Value::U32(v), _) => Json::from(*v),
        (Value::U64(v), _) => exact_u64(*v),
        (Value::I8(v), _) => Json::from(*v),
        (Value::I16(v), _) => Json::from(*v),
        (Value::I32(v), _) => Json::from(*v),
        (Value::I64(v), _) => exact_i64(*v),
        (Value::U128(v), _) => Json::String(v.to_string()),
        (Value::I128(v), _) => Json::String(v.to_string()),
        (Value::F32(v), _) => Number::from_f64(f64::from(*v)).map_or(Json::Null, Json::Number),
        (Value::F64(v), _) => Number::from_f64(*v).map_or(Json::Null, Json::Number),
        (Value::String(s), _) => Json::String(s.to_string()),
        (Value::Bytes(b), _) => Json::String(hex(b)),
        (Value::Identity(i), _) => Json::String(i.to_string()),
        (Value::ConnectionId(c), _) => Json::String(c.to_string()),
        (Value::Timestamp(t), _) => exact_i64(t.micros_since_epoch),
        (Value::TimeDuration(d), _) => exact_i64(d.micros),
        (Value::Array(items), ValueType::Array(inner)) => items.iter().map(|v| to_json(v, inner)).collect(),
        (Value::Option(v), ValueType::Option(inner)) => {
            v.as_deref().map_or(Json::Null, |v| to_json(v, inner))
        }
        (Value::Product(fields), ValueType::Product(p)) => {
            fields.iter().zip(&p.fields).map(|(v, f)| to_json(v, &f.ty)).collect()
        }
        (Value::Sum { tag, value }, ValueType::Sum(s)) => {
            let variant = &s.variants[usize::from(*tag)];
            let mut map = Map::new();
            map.insert(variant.name.clone(), to_json(value, &variant.ty));
            Json::Object(map)
        }
        // A value that does not match its type: a bug upstream, shown rather than hidden.
        (v, _) => Json::String(format!("{v:?}")),
    }
}

fn exact_u64(v: u64) -> Json {
    if v <= 1 << 53 { Json::from(v) } else { Json::String(v.to_string()) }
}

fn exact_i64(v: i64) -> Json {
    if v.unsigned_abs() <= 1 << 53 { Json::from(v) } else { Json::String(v.to_string()) }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// A JSON value as a value of `ty`, or why it is not one (with the path to the culprit).
pub fn from_json(json: &Json, ty: &ValueType) -> Result<Value, String> {
    read(json, ty, 0).map_err(|(path, why)| if path.is_empty() { why } else { format!("{path}: {why}") })
}

type ReadError = (String, String);

fn read(json: &Json, ty: &ValueType, depth: usize) -> Result<Value, ReadError> {
    if depth > DEPTH_MAX {
        return Err((String::new(), format!("nested deeper than {DEPTH_MAX} levels")));
    }
    let wrong = || (String::new(), format!("expected {ty}, found {}", kind(json)));
    macro_rules! int {
        ($variant:ident, $t:ty) => {
            integer(json).and_then(|n| <$t>::try_from(n).ok()).map(Value::$variant).ok_or_else(wrong)
        };
    }
    Ok(match ty {
        ValueType::Bool => Value::Bool(json.as_bool().ok_or_else(wrong)?),
        ValueType::U8 => int!(U8, u8)?,
        ValueType::U16 => int!(U16, u16)?,
        ValueType::U32 => int!(U32, u32)?,
        ValueType::U64 => int!(U64, u64)?,
        ValueType::U128 => int!(U128, u128)?,
        ValueType::I8 => int!(I8, i8)?,
        ValueType::I16 => int!(I16, i16)?,
        ValueType::I32 => int!(I32, i32)?,
        ValueType::I64 => int!(I64, i64)?,
        ValueType::I128 => int!(I128, i128)?,
        ValueType::F32 => Value::F32(json.as_f64().ok_or_else(wrong)? as f32),
        ValueType::F64 => Value::F64(json.as_f64().ok_or_else(wrong)?),
        ValueType::String => Value::String(json.as_str().ok_or_else(wrong)?.into()),
        ValueType::Bytes => Value::Bytes(json.as_str().and_then(unhex).ok_or_else(wrong)?.into()),
        ValueType::Identity => Value::Identity(Identity(fixed(json).ok_or_else(wrong)?)),
        ValueType::ConnectionId => Value::ConnectionId(ConnectionId(fixed(json).ok_or_else(wrong)?)),
        ValueType::Timestamp => Value::Timestamp(Timestamp {
            micros_since_epoch: integer(json).and_then(|n| i64::try_from(n).ok()).ok_or_else(wrong)?,
        }),
        ValueType::TimeDuration => Value::TimeDuration(TimeDuration::from_micros(
            integer(json).and_then(|n| i64::try_from(n).ok()).ok_or_else(wrong)?,
        )),
        ValueType::Array(inner) => {
            let items = json.as_array().ok_or_else(wrong)?;
            let values =
                items.iter().enumerate().map(|(i, item)| read(item, inner, depth + 1).map_err(at(i)));
            Value::Array(values.collect::<Result<_, _>>()?)
        }
        ValueType::Option(inner) => match json {
            Json::Null => Value::Option(None),
            some => Value::Option(Some(Box::new(read(some, inner, depth + 1)?))),
        },
        ValueType::Product(p) => {
            let fields: Vec<&Json> = match json {
                Json::Array(items) if items.len() == p.fields.len() => items.iter().collect(),
                Json::Object(map) if map.len() == p.fields.len() => {
                    let field = |name: &str| {
                        map.get(name).ok_or_else(|| (String::new(), format!("missing field `{name}`")))
                    };
                    p.fields.iter().map(|f| field(&f.name)).collect::<Result<_, _>>()?
                }
                _ => {
                    return Err((
                        String::new(),
                        format!(
                            "expected {} fields as an array or object, found {}",
                            p.fields.len(),
                            kind(json)
                        ),
                    ));
                }
            };
            let values = fields
                .iter()
                .zip(&p.fields)
                .map(|(json, f)| read(json, &f.ty, depth + 1).map_err(at(&f.name)));
            Value::Product(values.collect::<Result<_, _>>()?)
        }
        ValueType::Sum(s) => {
            let (name, payload) = match json {
                Json::Object(map) if map.len() == 1 => map.iter().next().expect("one entry"),
                _ => return Err(wrong()),
            };
            let tag = s
                .variants
                .iter()
                .position(|v| &v.name == name)
                .ok_or_else(|| (String::new(), format!("no variant `{name}` in {ty}")))?;
            let value = read(payload, &s.variants[tag].ty, depth + 1).map_err(at(name))?;
            Value::Sum { tag: tag as u8, value: Box::new(value) }
        }
    })
}

fn at(step: impl std::fmt::Display) -> impl FnOnce(ReadError) -> ReadError {
    move |(path, why)| (if path.is_empty() { step.to_string() } else { format!("{step}.{path}") }, why)
}

fn integer(json: &Json) -> Option<i128> {
    match json {
        Json::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn fixed<const N: usize>(json: &Json) -> Option<[u8; N]> {
    json.as_str().and_then(unhex).and_then(|b| b.try_into().ok())
}

fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickdb_wasm_abi::{ProductType, SumType};

    /// Values of every kind come back from their JSON unchanged, and mistakes name the
    /// field at fault.
    #[test]
    fn values_round_trip_and_mistakes_are_named() {
        let ty = ValueType::Product(ProductType::new([
            ("id", ValueType::U64),
            ("big", ValueType::U128),
            ("who", ValueType::Identity),
            ("pos", ValueType::Array(Box::new(ValueType::F32))),
            ("nick", ValueType::Option(Box::new(ValueType::String))),
            ("shape", ValueType::Sum(SumType::new([("Circle", ValueType::F64), ("Dot", ValueType::unit())]))),
        ]));
        let value = Value::Product(vec![
            Value::U64(u64::MAX),
            Value::U128(7),
            Value::Identity(Identity([0xAB; 32])),
            Value::Array(vec![Value::F32(1.5), Value::F32(-2.0)]),
            Value::Option(None),
            Value::Sum { tag: 0, value: Box::new(Value::F64(0.25)) },
        ]);
        let json = to_json(&value, &ty);
        assert_eq!(json[0], Json::String(u64::MAX.to_string()), "beyond 2^53 as a string");
        assert_eq!(from_json(&json, &ty), Ok(value));
        let by_name = serde_json::json!({"id": 1, "big": "2", "who": "ab".repeat(32), "pos": [], "nick": "x", "shape": {"Dot": []}});
        assert!(from_json(&by_name, &ty).is_ok());
        let bad = serde_json::json!([1, 2, "ab", [], null, {"Dot": []}]);
        assert_eq!(from_json(&bad, &ty), Err("who: expected Identity, found a string".to_string()));
        let bad = serde_json::json!([1, 2, "ab".repeat(32), [1, "x"], null, {"Dot": []}]);
        assert_eq!(from_json(&bad, &ty), Err("pos.1: expected f32, found a string".to_string()));
        assert_eq!(
            from_json(&serde_json::json!(300), &ValueType::U8),
            Err("expected u8, found a number".to_string())
        );
    }
}
