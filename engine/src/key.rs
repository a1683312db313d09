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
