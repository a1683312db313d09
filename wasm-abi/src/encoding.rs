//! The binary value encoding, shared by the module ABI, storage, the commit log and the
//! wire protocol.
//!
//! Compact and little-endian, with no type tags (the reader knows the type):
//!
//! | type | bytes |
//! |---|---|
//! | `bool` | 1 byte, 0 or 1 |
//! | integers, `f32`, `f64` | their width, little-endian (floats as IEEE 754 bits) |
//! | `Identity`, `ConnectionId` | 32 and 16 raw bytes |
//! | `Timestamp`, `TimeDuration` | `i64` microseconds |
//! | `String`, `Bytes` | `u32` byte length, then the bytes (UTF-8 for strings) |
//! | `Array<T>` | `u32` element count, then the elements |
//! | `Option<T>` | 1 byte (0 none, 1 some), then the value if some |
//! | struct | its fields in order |
//! | enum | 1 byte variant index, then the payload |
//!
//! A row is the struct of its columns. Fixed-size values are always the same length,
//! so storage keeps them in arrays and copies them with `memcpy`.
//!
//! Decoding never trusts its input: every read is bounds-checked, lengths are checked
//! against the bytes that remain before anything is allocated, and every failure is a
//! [`DecodeError`] that says what was wrong and where.

use crate::types::{SumType, ValueType};
use crate::value::{ConnectionId, Identity, TimeDuration, Timestamp, Value};

/// Why bytes are not a valid encoding of a value of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("input ends at byte {offset}: {needed} more bytes needed for {what}")]
    UnexpectedEnd { offset: usize, needed: usize, what: &'static str },
    #[error("byte {offset}: {byte} is not a bool (must be 0 or 1)")]
    InvalidBool { offset: usize, byte: u8 },
    #[error("byte {offset}: {byte} is not an option tag (must be 0 or 1)")]
    InvalidOptionTag { offset: usize, byte: u8 },
    #[error("byte {offset}: variant {tag} does not exist; the enum has {variants} variants")]
    InvalidVariant { offset: usize, tag: u8, variants: usize },
    #[error("byte {offset}: string is not valid UTF-8")]
    InvalidUtf8 { offset: usize },
    #[error("{extra} bytes left over after the value")]
    TrailingBytes { extra: usize },
}

/// Why a value cannot be encoded as the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("expected a value of type {expected}, found {found}")]
    TypeMismatch { expected: String, found: String },
    #[error("{what} of {len} elements is longer than the encoding allows (u32::MAX)")]
    TooLong { what: &'static str, len: usize },
    #[error("{found} values given for {expected} fields")]
    WrongCount { expected: usize, found: usize },
}

/// Encodes `value` as a value of type `ty` at the end of `out`, checking that the value
/// has that type. On error `out` may hold a partial encoding; truncate it if you keep it.
pub fn encode(ty: &ValueType, value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    use ValueType as T;
    match (ty, value) {
        (T::Bool, Value::Bool(v)) => out.push(u8::from(*v)),
        (T::U8, Value::U8(v)) => out.push(*v),
        (T::U16, Value::U16(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::U32, Value::U32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::U64, Value::U64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::U128, Value::U128(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::I8, Value::I8(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::I16, Value::I16(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::I32, Value::I32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::I64, Value::I64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::I128, Value::I128(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::F32, Value::F32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::F64, Value::F64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (T::String, Value::String(s)) => encode_len_prefixed(s.as_bytes(), "string", out)?,
        (T::Bytes, Value::Bytes(b)) => encode_len_prefixed(b, "bytes", out)?,
        (T::Identity, Value::Identity(v)) => out.extend_from_slice(&v.0),
        (T::ConnectionId, Value::ConnectionId(v)) => out.extend_from_slice(&v.0),
        (T::Timestamp, Value::Timestamp(v)) => out.extend_from_slice(&v.micros_since_epoch.to_le_bytes()),
        (T::TimeDuration, Value::TimeDuration(v)) => out.extend_from_slice(&v.micros.to_le_bytes()),
        (T::Array(element), Value::Array(items)) => {
            out.extend_from_slice(&len_u32(items.len(), "array")?.to_le_bytes());
            for item in items {
                encode(element, item, out)?;
            }
        }
        (T::Option(_), Value::Option(None)) => out.push(0),
        (T::Option(inner), Value::Option(Some(v))) => {
            out.push(1);
            encode(inner, v, out)?;
        }
        (T::Product(p), Value::Product(fields)) if p.fields.len() == fields.len() => {
            for (field, v) in p.fields.iter().zip(fields) {
                encode(&field.ty, v, out)?;
            }
        }
        (T::Sum(s), Value::Sum { tag, value }) if usize::from(*tag) < s.variants.len() => {
            out.push(*tag);
            encode(&s.variants[usize::from(*tag)].ty, value, out)?;
        }
        _ => {
            return Err(EncodeError::TypeMismatch { expected: ty.to_string(), found: value.to_string() });
        }
    }
    Ok(())
}

fn len_u32(len: usize, what: &'static str) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| EncodeError::TooLong { what, len })
}

fn encode_len_prefixed(bytes: &[u8], what: &'static str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.extend_from_slice(&len_u32(bytes.len(), what)?.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Encodes values of the given types one after another: a row from its columns.
pub fn encode_product<'a>(
    types: impl ExactSizeIterator<Item = &'a ValueType>,
    values: &[Value],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if types.len() != values.len() {
        return Err(EncodeError::WrongCount { expected: types.len(), found: values.len() });
    }
    types.zip(values).try_for_each(|(ty, value)| encode(ty, value, out))
}

/// A bounds-checked reader over encoded bytes that remembers its position for errors.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            let needed = n - self.remaining();
            return Err(DecodeError::UnexpectedEnd { offset: self.bytes.len(), needed, what });
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N, what)?;
        let mut out = [0; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    /// Reads a `u32` length and checks that at least `len * min_element_size` bytes
    /// remain, so that no caller allocates for elements that are not there.
    fn len(&mut self, min_element_size: usize, what: &'static str) -> Result<usize, DecodeError> {
        let len = u32::from_le_bytes(self.array(what)?) as usize;
        let needed = len.saturating_mul(min_element_size.max(1));
        if needed > self.remaining() {
            let offset = self.bytes.len();
            return Err(DecodeError::UnexpectedEnd { offset, needed: needed - self.remaining(), what });
        }
        Ok(len)
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        let offset = self.pos;
        match self.u8("bool")? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(DecodeError::InvalidBool { offset, byte }),
        }
    }

    fn option_tag(&mut self) -> Result<bool, DecodeError> {
        let offset = self.pos;
        match self.u8("option tag")? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(DecodeError::InvalidOptionTag { offset, byte }),
        }
    }

    fn sum_tag(&mut self, sum: &SumType) -> Result<u8, DecodeError> {
        let offset = self.pos;
        let tag = self.u8("enum tag")?;
        if usize::from(tag) >= sum.variants.len() {
            return Err(DecodeError::InvalidVariant { offset, tag, variants: sum.variants.len() });
        }
        Ok(tag)
    }

    /// Reads a `String`: a `u32` length, then that many bytes of UTF-8.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.len(1, "string")?;
        let offset = self.pos;
        let bytes = self.take(len, "string")?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { offset })
    }

    /// Steps over a `String`, checking that it is UTF-8. Short ASCII strings (most
    /// names) are checked a word at a time, without the general decoder's setup.
    pub fn skip_str(&mut self) -> Result<(), DecodeError> {
        let len = self.len(1, "string")?;
        let offset = self.pos;
        let bytes = self.take(len, "string")?;
        if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
            Ok(())
        } else {
            Err(DecodeError::InvalidUtf8 { offset })
        }
    }

    /// Reads `Bytes`: a `u32` length, then that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.len(1, "bytes")?;
        self.take(len, "bytes")
    }
}

/// Decodes one value of type `ty` from the reader.
pub fn decode(ty: &ValueType, r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    use ValueType as T;
    Ok(match ty {
        T::Bool => Value::Bool(r.bool()?),
        T::U8 => Value::U8(r.u8("u8")?),
        T::U16 => Value::U16(u16::from_le_bytes(r.array("u16")?)),
        T::U32 => Value::U32(u32::from_le_bytes(r.array("u32")?)),
        T::U64 => Value::U64(u64::from_le_bytes(r.array("u64")?)),
        T::U128 => Value::U128(u128::from_le_bytes(r.array("u128")?)),
        T::I8 => Value::I8(i8::from_le_bytes(r.array("i8")?)),
        T::I16 => Value::I16(i16::from_le_bytes(r.array("i16")?)),
        T::I32 => Value::I32(i32::from_le_bytes(r.array("i32")?)),
        T::I64 => Value::I64(i64::from_le_bytes(r.array("i64")?)),
        T::I128 => Value::I128(i128::from_le_bytes(r.array("i128")?)),
        T::F32 => Value::F32(f32::from_le_bytes(r.array("f32")?)),
        T::F64 => Value::F64(f64::from_le_bytes(r.array("f64")?)),
        T::String => Value::String(r.str()?.into()),
        T::Bytes => Value::Bytes(r.bytes()?.into()),
        T::Identity => Value::Identity(Identity(r.array("identity")?)),
        T::ConnectionId => Value::ConnectionId(ConnectionId(r.array("connection id")?)),
        T::Timestamp => Value::Timestamp(Timestamp::from_micros(i64::from_le_bytes(r.array("timestamp")?))),
        T::TimeDuration => {
            Value::TimeDuration(TimeDuration::from_micros(i64::from_le_bytes(r.array("duration")?)))
        }
        T::Array(element) => {
            let len = r.len(element.min_size(), "array")?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(decode(element, r)?);
            }
            Value::Array(items)
        }
        T::Option(inner) => match r.option_tag()? {
            false => Value::Option(None),
            true => Value::Option(Some(Box::new(decode(inner, r)?))),
        },
        T::Product(p) => {
            let fields = p.fields.iter().map(|f| decode(&f.ty, r));
            Value::Product(fields.collect::<Result<_, _>>()?)
        }
        T::Sum(s) => {
            let tag = r.sum_tag(s)?;
            let value = Box::new(decode(&s.variants[usize::from(tag)].ty, r)?);
            Value::Sum { tag, value }
        }
    })
}

/// Decodes a value that must use up all of `bytes`.
pub fn decode_exact(ty: &ValueType, bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader::new(bytes);
    let value = decode(ty, &mut r)?;
    match r.remaining() {
        0 => Ok(value),
        extra => Err(DecodeError::TrailingBytes { extra }),
    }
}

/// Checks that the reader holds a valid value of type `ty` and steps over it, without
/// allocating. Storage uses this to accept encoded rows straight from a module.
pub fn skip(ty: &ValueType, r: &mut Reader<'_>) -> Result<(), DecodeError> {
    use ValueType as T;
    match ty {
        T::Bool => {
            r.bool()?;
        }
        T::String => r.skip_str()?,
        T::Bytes => {
            r.bytes()?;
        }
        T::Array(element) => {
            let len = r.len(element.min_size(), "array")?;
            match element.fixed_size().filter(|_| !needs_validation(element)) {
                Some(size) => {
                    r.take(len * size, "array")?;
                }
                None => (0..len).try_for_each(|_| skip(element, r))?,
            }
        }
        T::Option(inner) => {
            if r.option_tag()? {
                skip(inner, r)?;
            }
        }
        T::Product(p) => p.fields.iter().try_for_each(|f| skip(&f.ty, r))?,
        T::Sum(s) => {
            let tag = r.sum_tag(s)?;
            skip(&s.variants[usize::from(tag)].ty, r)?;
        }
        fixed => {
            let size = fixed.fixed_size().expect("every other type is fixed-size");
            r.take(size, "value")?;
        }
    }
    Ok(())
}

/// Whether some byte patterns of this type's encoding are invalid (bools, tags, UTF-8).
/// Values of types that need no validation can be copied without looking at them.
pub fn needs_validation(ty: &ValueType) -> bool {
    use ValueType as T;
    match ty {
        T::Bool | T::String | T::Option(_) | T::Sum(_) => true,
        T::Array(element) => needs_validation(element),
        T::Product(p) => p.fields.iter().any(|f| needs_validation(&f.ty)),
        _ => false,
    }
}
