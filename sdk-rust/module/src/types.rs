//! [`Type`]: Rust types that can be columns, reducer arguments and return values, with
//! their tickdb type and value encoding. `#[derive(tickdb::Type)]` implements it for
//! structs (a product of named fields) and enums (a sum of variants).

use tickdb_wasm_abi::{
    ConnectionId, DecodeError, Identity, ProductType, Reader, SumType, TimeDuration, Timestamp, ValueType,
};

/// A type tickdb can store and send. See the module docs.
pub trait Type: Sized {
    /// The tickdb type this Rust type is encoded as.
    fn value_type() -> ValueType;
    /// Appends the value encoding.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// The encoding as a new buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes `bytes`, which must hold exactly one value.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let value = Self::decode(&mut r)?;
        match r.remaining() {
            0 => Ok(value),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }
}

/// Reads `N` bytes.
pub fn take_array<const N: usize>(r: &mut Reader<'_>, what: &'static str) -> Result<[u8; N], DecodeError> {
    Ok(r.take(N, what)?.try_into().expect("took N bytes"))
}

/// Reads a sum type's tag, checking it against the number of variants.
pub fn take_tag(r: &mut Reader<'_>, variants: usize) -> Result<u8, DecodeError> {
    let offset = r.position();
    let tag = r.take(1, "variant tag")?[0];
    if usize::from(tag) >= variants {
        return Err(DecodeError::InvalidVariant { offset, tag, variants });
    }
    Ok(tag)
}

/// Appends a `u32` length prefix.
pub fn encode_len(len: usize, out: &mut Vec<u8>) {
    let len = u32::try_from(len).expect("values are smaller than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
}

macro_rules! number {
    ($($t:ty => $vt:ident),*) => {$(
        impl Type for $t {
            fn value_type() -> ValueType {
                ValueType::$vt
            }
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(<$t>::from_le_bytes(take_array(r, stringify!($t))?))
            }
        }
    )*};
}

number!(u8 => U8, u16 => U16, u32 => U32, u64 => U64, u128 => U128, i8 => I8, i16 => I16, i32 => I32,
    i64 => I64, i128 => I128, f32 => F32, f64 => F64);

impl Type for bool {
    fn value_type() -> ValueType {
        ValueType::Bool
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.position();
        match r.take(1, "bool")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(DecodeError::InvalidBool { offset, byte }),
        }
    }
}

impl Type for String {
    fn value_type() -> ValueType {
        ValueType::String
    }
    fn encode(&self, out: &mut Vec<u8>) {
        encode_len(self.len(), out);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.str().map(str::to_string)
    }
}

impl Type for Identity {
    fn value_type() -> ValueType {
        ValueType::Identity
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Identity(take_array(r, "identity")?))
    }
}

impl Type for ConnectionId {
    fn value_type() -> ValueType {
        ValueType::ConnectionId
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConnectionId(take_array(r, "connection id")?))
    }
}

impl Type for Timestamp {
    fn value_type() -> ValueType {
        ValueType::Timestamp
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.micros_since_epoch.to_le_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Timestamp::from_micros(i64::from_le_bytes(take_array(r, "timestamp")?)))
    }
}

impl Type for TimeDuration {
    fn value_type() -> ValueType {
        ValueType::TimeDuration
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.micros.to_le_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(TimeDuration::from_micros(i64::from_le_bytes(take_array(r, "duration")?)))
    }
}

/// `Vec<T>` is an array (`Vec<u8>` included: an array of `u8`, encoded the same as bytes).
impl<T: Type> Type for Vec<T> {
    fn value_type() -> ValueType {
        ValueType::array(T::value_type())
    }
    fn encode(&self, out: &mut Vec<u8>) {
        encode_len(self.len(), out);
        self.iter().for_each(|item| item.encode(out));
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = u32::from_le_bytes(take_array(r, "array length")?) as usize;
        // Every element takes at least one byte (zero-sized elements are not valid
        // types), so a length past the remaining input fails before allocating.
        if len > r.remaining() {
            let (offset, remaining) = (r.position(), r.remaining());
            return Err(DecodeError::UnexpectedEnd { offset, needed: len - remaining, what: "array" });
        }
        (0..len).map(|_| T::decode(r)).collect()
    }
}

impl<T: Type> Type for Option<T> {
    fn value_type() -> ValueType {
        ValueType::option(T::value_type())
    }
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.position();
        match r.take(1, "option tag")?[0] {
            0 => Ok(None),
            1 => T::decode(r).map(Some),
            byte => Err(DecodeError::InvalidOptionTag { offset, byte }),
        }
    }
}

impl<T: Type> Type for Box<T> {
    fn value_type() -> ValueType {
        T::value_type()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        T::decode(r).map(Box::new)
    }
}

/// `()` is the empty struct: zero bytes.
impl Type for () {
    fn value_type() -> ValueType {
        ValueType::unit()
    }
    fn encode(&self, _: &mut Vec<u8>) {}
    fn decode(_: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(())
    }
}

macro_rules! tuple {
    ($(($($n:tt $t:ident),+)),*) => {$(
        /// Tuples are structs with fields named `0`, `1`, ….
        impl<$($t: Type),+> Type for ($($t,)+) {
            fn value_type() -> ValueType {
                ValueType::Product(ProductType::new([$((stringify!($n), $t::value_type())),+]))
            }
            fn encode(&self, out: &mut Vec<u8>) {
                $(self.$n.encode(out);)+
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(($($t::decode(r)?,)+))
            }
        }
    )*};
}

tuple!((0 A), (0 A, 1 B), (0 A, 1 B, 2 C), (0 A, 1 B, 2 C, 3 D));

/// When a scheduled reducer runs: once at a time, or repeatedly at an interval (the
/// first call one interval after the row is inserted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleAt {
    Interval(TimeDuration),
    Time(Timestamp),
}

impl Type for ScheduleAt {
    fn value_type() -> ValueType {
        tickdb_wasm_abi::schedule_at_type()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ScheduleAt::Interval(d) => {
                out.push(tickdb_wasm_abi::SCHEDULE_AT_INTERVAL);
                d.encode(out);
            }
            ScheduleAt::Time(t) => {
                out.push(tickdb_wasm_abi::SCHEDULE_AT_TIME);
                t.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match take_tag(r, 2)? {
            tickdb_wasm_abi::SCHEDULE_AT_INTERVAL => TimeDuration::decode(r).map(ScheduleAt::Interval),
            _ => Timestamp::decode(r).map(ScheduleAt::Time),
        }
    }
}

impl From<TimeDuration> for ScheduleAt {
    fn from(d: TimeDuration) -> Self {
        ScheduleAt::Interval(d)
    }
}

impl From<Timestamp> for ScheduleAt {
    fn from(t: Timestamp) -> Self {
        ScheduleAt::Time(t)
    }
}

/// A struct's type from its fields, for the derive macro.
pub fn product(fields: Vec<(&'static str, ValueType)>) -> ValueType {
    ValueType::Product(ProductType::new(fields))
}

/// An enum's type from its variants, for the derive macro.
pub fn sum(variants: Vec<(&'static str, ValueType)>) -> ValueType {
    ValueType::Sum(SumType::new(variants))
}
