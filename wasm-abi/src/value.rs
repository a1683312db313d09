//! Values: the dynamically typed form of data, for APIs that do not know a row's shape
//! at compile time (SQL, the CLI, tests). Hot paths never build these; they move the
//! binary encoding around instead (see [`crate::encoding`]).
//!
//! Values are totally ordered and hashable, floats included: floats compare with
//! IEEE 754 `totalOrder` (`-0.0 < +0.0`, NaNs ordered by their bits), so a float column
//! can be indexed and a NaN key found again.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// A 32-byte identity: who a client or a module's owner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Identity(pub [u8; 32]);

/// A 16-byte id of one connection; one identity may hold several connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConnectionId(pub [u8; 16]);

/// A point in time: microseconds since the Unix epoch (negative before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub micros_since_epoch: i64,
}

/// A signed span of time in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeDuration {
    pub micros: i64,
}

/// Lowercase hex, as identities are written.
impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Timestamp {
    pub const fn from_micros(micros_since_epoch: i64) -> Self {
        Timestamp { micros_since_epoch }
    }

    /// The span from `earlier` to `self`, saturating at the ends of the range.
    pub fn duration_since(self, earlier: Timestamp) -> TimeDuration {
        let micros = self.micros_since_epoch.saturating_sub(earlier.micros_since_epoch);
        TimeDuration { micros }
    }
}

impl TimeDuration {
    pub const fn from_micros(micros: i64) -> Self {
        TimeDuration { micros }
    }
}

/// A dynamically typed value. Its type is not stored in it: it is the [`ValueType`]
/// of the column or argument it belongs to.
///
/// [`ValueType`]: crate::ValueType
#[derive(Debug, Clone)]
pub enum Value {
    Bool(bool),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    U128(u128),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    I128(i128),
    F32(f32),
    F64(f64),
    String(Box<str>),
    Bytes(Box<[u8]>),
    Identity(Identity),
    ConnectionId(ConnectionId),
    Timestamp(Timestamp),
    TimeDuration(TimeDuration),
    Array(Vec<Value>),
    Option(Option<Box<Value>>),
    /// A struct's field values, in the order of its type's fields.
    Product(Vec<Value>),
    /// An enum value: the variant's index and its payload.
    Sum {
        tag: u8,
        value: Box<Value>,
    },
}

impl Value {
    /// The unit value, the empty struct.
    pub fn unit() -> Value {
        Value::Product(Vec::new())
    }

    pub fn string(s: impl Into<Box<str>>) -> Value {
        Value::String(s.into())
    }

    /// Orders the variant kinds, so that values of different types still compare
    /// consistently (they only meet in buggy code, but `Ord` must be total).
    fn kind(&self) -> u8 {
        match self {
            Value::Bool(_) => 0,
            Value::U8(_) => 1,
            Value::U16(_) => 2,
            Value::U32(_) => 3,
            Value::U64(_) => 4,
            Value::U128(_) => 5,
            Value::I8(_) => 6,
            Value::I16(_) => 7,
            Value::I32(_) => 8,
            Value::I64(_) => 9,
            Value::I128(_) => 10,
            Value::F32(_) => 11,
            Value::F64(_) => 12,
            Value::String(_) => 13,
            Value::Bytes(_) => 14,
            Value::Identity(_) => 15,
            Value::ConnectionId(_) => 16,
            Value::Timestamp(_) => 17,
            Value::TimeDuration(_) => 18,
            Value::Array(_) => 19,
            Value::Option(_) => 20,
            Value::Product(_) => 21,
            Value::Sum { .. } => 22,
        }
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a.cmp(b),
            (U8(a), U8(b)) => a.cmp(b),
            (U16(a), U16(b)) => a.cmp(b),
            (U32(a), U32(b)) => a.cmp(b),
            (U64(a), U64(b)) => a.cmp(b),
            (U128(a), U128(b)) => a.cmp(b),
            (I8(a), I8(b)) => a.cmp(b),
            (I16(a), I16(b)) => a.cmp(b),
            (I32(a), I32(b)) => a.cmp(b),
            (I64(a), I64(b)) => a.cmp(b),
            (I128(a), I128(b)) => a.cmp(b),
            (F32(a), F32(b)) => a.total_cmp(b),
            (F64(a), F64(b)) => a.total_cmp(b),
            (String(a), String(b)) => a.cmp(b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (Identity(a), Identity(b)) => a.cmp(b),
            (ConnectionId(a), ConnectionId(b)) => a.cmp(b),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (TimeDuration(a), TimeDuration(b)) => a.cmp(b),
            (Array(a), Array(b)) => a.cmp(b),
            (Option(a), Option(b)) => a.cmp(b),
            (Product(a), Product(b)) => a.cmp(b),
            (Sum { tag: ta, value: va }, Sum { tag: tb, value: vb }) => ta.cmp(tb).then_with(|| va.cmp(vb)),
            _ => self.kind().cmp(&other.kind()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.kind());
        match self {
            // Floats hash their bits: equal under `total_cmp` means equal bits.
            Value::F32(f) => state.write_u32(f.to_bits()),
            Value::F64(f) => state.write_u64(f.to_bits()),
            Value::Bool(v) => v.hash(state),
            Value::U8(v) => v.hash(state),
            Value::U16(v) => v.hash(state),
            Value::U32(v) => v.hash(state),
            Value::U64(v) => v.hash(state),
            Value::U128(v) => v.hash(state),
            Value::I8(v) => v.hash(state),
            Value::I16(v) => v.hash(state),
            Value::I32(v) => v.hash(state),
            Value::I64(v) => v.hash(state),
            Value::I128(v) => v.hash(state),
            Value::String(v) => v.hash(state),
            Value::Bytes(v) => v.hash(state),
            Value::Identity(v) => v.hash(state),
            Value::ConnectionId(v) => v.hash(state),
            Value::Timestamp(v) => v.hash(state),
            Value::TimeDuration(v) => v.hash(state),
            Value::Array(v) | Value::Product(v) => v.hash(state),
            Value::Option(v) => v.hash(state),
            Value::Sum { tag, value } => {
                tag.hash(state);
                value.hash(state);
            }
        }
    }
}

fn hex(f: &mut std::fmt::Formatter<'_>, bytes: &[u8]) -> std::fmt::Result {
    f.write_str("0x")?;
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

fn list(f: &mut std::fmt::Formatter<'_>, open: &str, items: &[Value], close: &str) -> std::fmt::Result {
    f.write_str(open)?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    f.write_str(close)
}

/// Values print compactly for messages: `5`, `-1.5`, `"ann"`, `0x00ff`, `[1, 2]`,
/// `None`, `Some(3)`, `(1, "a")` for structs, `#1(2.5)` for enum variant 1.
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Bool(v) => write!(f, "{v}"),
            Value::U8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::U128(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::I128(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::String(v) => write!(f, "{v:?}"),
            Value::Bytes(v) => hex(f, v),
            Value::Identity(v) => hex(f, &v.0),
            Value::ConnectionId(v) => hex(f, &v.0),
            Value::Timestamp(v) => write!(f, "{}µs", v.micros_since_epoch),
            Value::TimeDuration(v) => write!(f, "{}µs", v.micros),
            Value::Array(items) => list(f, "[", items, "]"),
            Value::Option(None) => f.write_str("None"),
            Value::Option(Some(v)) => write!(f, "Some({v})"),
            Value::Product(fields) => list(f, "(", fields, ")"),
            Value::Sum { tag, value } => write!(f, "#{tag}({value})"),
        }
    }
}
