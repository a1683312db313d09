//! Index keys: an order-preserving byte encoding of one or more column values.
//!
//! Indexes compare keys as plain bytes, so the key encoding is built such that byte
//! order equals value order ([`Value`](tickdb_wasm_abi::Value)'s `Ord`), and equal keys
//! mean equal values:
//!
//! - unsigned integers big-endian; signed integers big-endian with the sign bit flipped;
//! - floats by IEEE 754 `totalOrder`: negative values have all bits flipped, others the
//!   sign bit, so `-NaN < -inf < -0.0 < +0.0 < +inf < NaN`;
//! - strings and bytes with every `0x00` escaped as `0x00 0xFF` and a `0x00 0x00`
//!   terminator, so a shorter string sorts before its extensions and every column ends
//!   where its key bytes say: a prefix of columns is a prefix of bytes;
//! - options `0x00` (none) or `0x01` then the value; arrays each element after `0x01`,
//!   then `0x00`; structs field by field; enums the tag, then the payload.
//!
//! Keys of up to 24 bytes (any integer, two `u64`s, a connection id) live inline.

use smallvec::SmallVec;
use tickdb_wasm_abi::{DecodeError, Reader, ValueType};

/// An encoded index key.
pub type KeyBytes = SmallVec<[u8; 24]>;

/// Appends the key encoding of one column's stored value (see [`crate::chunk`]): the
/// value encoding, except that `String` and `Bytes` columns hold the bare payload.
pub fn push_stored(ty: &ValueType, stored: &[u8], out: &mut KeyBytes) {
    match ty {
        ValueType::String | ValueType::Bytes => push_escaped(stored, out),
        _ => {
            let mut r = Reader::new(stored);
            push_encoded(ty, &mut r, out).expect("stored values are valid encodings");
        }
    }
}

/// A grid index's key: each column's cell, as a signed integer in key order.
pub fn grid_key(cells: &[i64]) -> KeyBytes {
    let mut key = KeyBytes::new();
    for cell in cells {
        key.extend_from_slice(&((*cell as u64) ^ (1 << 63)).to_be_bytes());
    }
    key
}

/// A numeric column's stored value as an `f64` (order kept; wide integers rounded).
pub fn stored_number(ty: &ValueType, stored: &[u8]) -> f64 {
    let bytes = |n: usize| -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..n].copy_from_slice(&stored[..n]);
        out
    };
    match ty {
        ValueType::U8 => f64::from(stored[0]),
        ValueType::U16 => f64::from(u16::from_le_bytes([stored[0], stored[1]])),
        ValueType::U32 => f64::from(u32::from_le_bytes(bytes(4)[..4].try_into().expect("4 bytes"))),
        ValueType::U64 => u64::from_le_bytes(bytes(8)) as f64,
        ValueType::I8 => f64::from(stored[0] as i8),
        ValueType::I16 => f64::from(i16::from_le_bytes([stored[0], stored[1]])),
        ValueType::I32 => f64::from(i32::from_le_bytes(bytes(4)[..4].try_into().expect("4 bytes"))),
        ValueType::I64 => i64::from_le_bytes(bytes(8)) as f64,
        ValueType::F32 => f64::from(f32::from_le_bytes(bytes(4)[..4].try_into().expect("4 bytes"))),
        ValueType::F64 => f64::from_le_bytes(bytes(8)),
        other => unreachable!("a grid spans numeric columns, not {other}"),
    }
}

/// Appends the key encoding of one value read from its value encoding.
pub fn push_encoded(ty: &ValueType, r: &mut Reader<'_>, out: &mut KeyBytes) -> Result<(), DecodeError> {
    use ValueType as T;
    match ty {
        T::Bool | T::U8 => out.push(r.take(1, "key")?[0]),
        T::U16 => push_be::<2>(r, false, out)?,
        T::U32 => push_be::<4>(r, false, out)?,
        T::U64 => push_be::<8>(r, false, out)?,
        T::U128 => push_be::<16>(r, false, out)?,
        T::I8 => push_be::<1>(r, true, out)?,
        T::I16 => push_be::<2>(r, true, out)?,
        T::I32 => push_be::<4>(r, true, out)?,
        T::I64 | T::Timestamp | T::TimeDuration => push_be::<8>(r, true, out)?,
        T::I128 => push_be::<16>(r, true, out)?,
        T::F32 => {
            let bits = u32::from_le_bytes(r.take(4, "key")?.try_into().expect("4 bytes"));
            let ordered = if bits >> 31 == 1 { !bits } else { bits | (1 << 31) };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        T::F64 => {
            let bits = u64::from_le_bytes(r.take(8, "key")?.try_into().expect("8 bytes"));
            let ordered = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        T::Identity | T::ConnectionId => out.extend_from_slice(r.take(ty_size(ty), "key")?),
        T::String | T::Bytes => {
            let len = u32::from_le_bytes(r.take(4, "key")?.try_into().expect("4 bytes")) as usize;
            push_escaped(r.take(len, "key")?, out);
        }
        T::Array(element) => {
            let len = u32::from_le_bytes(r.take(4, "key")?.try_into().expect("4 bytes"));
            for _ in 0..len {
                out.push(1);
                push_encoded(element, r, out)?;
            }
            out.push(0);
        }
        T::Option(inner) => {
            let tag = r.take(1, "key")?[0];
            out.push(tag);
            if tag == 1 {
                push_encoded(inner, r, out)?;
            }
        }
        T::Product(p) => p.fields.iter().try_for_each(|f| push_encoded(&f.ty, r, out))?,
        T::Sum(s) => {
            let tag = r.take(1, "key")?[0];
            out.push(tag);
            let variant = s.variants.get(usize::from(tag)).expect("stored values are valid encodings");
            push_encoded(&variant.ty, r, out)?;
        }
    }
    Ok(())
}

fn ty_size(ty: &ValueType) -> usize {
    ty.fixed_size().expect("called for fixed-size types only")
}

/// An `N`-byte little-endian integer as big-endian, with the sign bit flipped for
/// signed integers.
fn push_be<const N: usize>(r: &mut Reader<'_>, signed: bool, out: &mut KeyBytes) -> Result<(), DecodeError> {
    let mut bytes: [u8; N] = r.take(N, "key")?.try_into().expect("took N bytes");
    bytes.reverse();
    if signed {
        bytes[0] ^= 0x80;
    }
    out.extend_from_slice(&bytes);
    Ok(())
}

fn push_escaped(bytes: &[u8], out: &mut KeyBytes) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// A key of up to 8 bytes as an integer. Keys are big-endian, so reading them that way
/// gives back the original integer for integer keys: the values hashers are tuned for.
/// (Read little-endian, ids 1, 2, 3... differ only in their top bits, and hashing them
/// is needlessly risky.)
pub fn key_word(key: &[u8]) -> u64 {
    debug_assert!(key.len() <= 8);
    if let Ok(bytes) = <[u8; 8]>::try_from(key) {
        return u64::from_be_bytes(bytes);
    }
    let mut bytes = [0u8; 8];
    bytes[8 - key.len()..].copy_from_slice(key);
    u64::from_be_bytes(bytes)
}

/// For a key over one scalar column of at most 8 bytes: [`key_word`] of the key,
/// computed straight from the value's encoding, as a module sends it. `None` if the
/// bytes are not a valid value of the type (the caller then takes the general path,
/// which reports the error).
#[inline]
pub fn scalar_word(ty: &ValueType, le: &[u8]) -> Option<u64> {
    use ValueType as T;
    fn int<const N: usize>(le: &[u8]) -> Option<u64> {
        let bytes: [u8; N] = le.try_into().ok()?;
        let mut wide = [0u8; 8];
        wide[..N].copy_from_slice(&bytes);
        Some(u64::from_le_bytes(wide))
    }
    let sign = |bits: u32| 1u64 << (bits - 1);
    Some(match ty {
        T::Bool => int::<1>(le).filter(|&b| b <= 1)?,
        T::U8 => int::<1>(le)?,
        T::U16 => int::<2>(le)?,
        T::U32 => int::<4>(le)?,
        T::U64 => int::<8>(le)?,
        T::I8 => int::<1>(le)? ^ sign(8),
        T::I16 => int::<2>(le)? ^ sign(16),
        T::I32 => int::<4>(le)? ^ sign(32),
        T::I64 | T::Timestamp | T::TimeDuration => int::<8>(le)? ^ sign(64),
        T::F32 => {
            let bits = int::<4>(le)? as u32;
            u64::from(if bits >> 31 == 1 { !bits } else { bits | (1 << 31) })
        }
        T::F64 => {
            let bits = int::<8>(le)?;
            if bits >> 63 == 1 { !bits } else { bits | (1 << 63) }
        }
        _ => return None,
    })
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when
/// no such key exists (the prefix is all `0xFF`).
pub fn prefix_successor(prefix: &[u8]) -> Option<KeyBytes> {
    let last = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut out = KeyBytes::from_slice(&prefix[..=last]);
    out[last] += 1;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tickdb_wasm_abi::{Value, encode};

    fn key_of(ty: &ValueType, v: &Value) -> KeyBytes {
        let mut bytes = Vec::new();
        encode(ty, v, &mut bytes).unwrap();
        let mut key = KeyBytes::new();
        push_encoded(ty, &mut Reader::new(&bytes), &mut key).unwrap();
        key
    }

    fn pair_ty() -> ValueType {
        ValueType::Product(tickdb_wasm_abi::ProductType::new([
            ("s", ValueType::String),
            ("o", ValueType::option(ValueType::I32)),
        ]))
    }

    proptest! {
        /// Key byte order equals value order, for the types whose encodings differ most.
        #[test]
        fn key_order_matches_value_order(a in any::<f64>(), b in any::<f64>(), c in any::<i64>(), d in any::<i64>()) {
            let (fa, fb) = (Value::F64(a), Value::F64(b));
            prop_assert_eq!(key_of(&ValueType::F64, &fa).cmp(&key_of(&ValueType::F64, &fb)), fa.cmp(&fb));
            let (ia, ib) = (Value::I64(c), Value::I64(d));
            prop_assert_eq!(key_of(&ValueType::I64, &ia).cmp(&key_of(&ValueType::I64, &ib)), ia.cmp(&ib));
        }

        /// Strings with embedded zero bytes, inside a struct with a following column,
        /// still order like the values: the escaping keeps columns apart.
        #[test]
        fn composite_key_order(s1 in "[a\\x00b]{0,4}", s2 in "[a\\x00b]{0,4}", o1 in any::<Option<i32>>(), o2 in any::<Option<i32>>()) {
            let mk = |s: &str, o: Option<i32>| Value::Product(vec![
                Value::string(s),
                Value::Option(o.map(|i| Box::new(Value::I32(i)))),
            ]);
            let (va, vb) = (mk(&s1, o1), mk(&s2, o2));
            let ty = pair_ty();
            prop_assert_eq!(key_of(&ty, &va).cmp(&key_of(&ty, &vb)), va.cmp(&vb));
        }
    }

    proptest! {
        /// The word computed from a value's encoding equals the word of its key bytes,
        /// for every scalar type a word index can hold.
        #[test]
        fn scalar_word_matches_key_bytes(bits in any::<u64>(), which in 0usize..12) {
            use ValueType as T;
            let (ty, v) = match which {
                0 => (T::Bool, Value::Bool(bits & 1 == 1)),
                1 => (T::U8, Value::U8(bits as u8)),
                2 => (T::U16, Value::U16(bits as u16)),
                3 => (T::U32, Value::U32(bits as u32)),
                4 => (T::U64, Value::U64(bits)),
                5 => (T::I8, Value::I8(bits as i8)),
                6 => (T::I16, Value::I16(bits as i16)),
                7 => (T::I32, Value::I32(bits as i32)),
                8 => (T::I64, Value::I64(bits as i64)),
                9 => (T::F32, Value::F32(f32::from_bits(bits as u32))),
                10 => (T::F64, Value::F64(f64::from_bits(bits))),
                _ => (T::Timestamp, Value::Timestamp(tickdb_wasm_abi::Timestamp::from_micros(bits as i64))),
            };
            let mut le = Vec::new();
            encode(&ty, &v, &mut le).unwrap();
            prop_assert_eq!(scalar_word(&ty, &le), Some(key_word(&key_of(&ty, &v))));
        }
    }

    /// The successor of a prefix bounds exactly the keys that extend it.
    #[test]
    fn prefix_successor_bounds_extensions() {
        assert_eq!(prefix_successor(&[1, 0xFF]).unwrap().as_slice(), &[2]);
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
        let succ = prefix_successor(&[5, 7]).unwrap();
        assert!([5u8, 7, 0xFF, 0xFF].as_slice() < succ.as_slice());
        assert!([5u8, 8].as_slice() >= succ.as_slice());
    }
}
