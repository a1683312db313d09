//! Round trips of the binary value encoding over random types and values, and decoding
//! of random bytes, which must fail cleanly and never panic.

use proptest::prelude::*;
use tickdb_wasm_abi::encoding::{decode, decode_exact, encode, skip};
use tickdb_wasm_abi::{
    ConnectionId, DecodeError, Identity, ProductType, Reader, SumType, TimeDuration, Timestamp, Value,
    ValueType,
};

fn leaf_type() -> impl Strategy<Value = ValueType> {
    use ValueType::*;
    prop_oneof![
        Just(Bool),
        Just(U8),
        Just(U16),
        Just(U32),
        Just(U64),
        Just(U128),
        Just(I8),
        Just(I16),
        Just(I32),
        Just(I64),
        Just(I128),
        Just(F32),
        Just(F64),
        Just(String),
        Just(Bytes),
        Just(Identity),
        Just(ConnectionId),
        Just(Timestamp),
        Just(TimeDuration),
    ]
}

fn named(types: Vec<ValueType>) -> Vec<(String, ValueType)> {
    types.into_iter().enumerate().map(|(i, t)| (format!("f{i}"), t)).collect()
}

/// Random valid types, nested up to four levels.
fn any_type() -> impl Strategy<Value = ValueType> {
    leaf_type().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_filter("array elements take space", |t| t.min_size() > 0)
                .prop_map(ValueType::array),
            inner.clone().prop_map(ValueType::option),
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|f| ValueType::Product(ProductType::new(named(f)))),
            prop::collection::vec(inner, 1..4).prop_map(|v| ValueType::Sum(SumType::new(named(v)))),
        ]
    })
}

fn value_of(ty: &ValueType) -> BoxedStrategy<Value> {
    use ValueType as T;
    match ty {
        T::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        T::U8 => any::<u8>().prop_map(Value::U8).boxed(),
        T::U16 => any::<u16>().prop_map(Value::U16).boxed(),
        T::U32 => any::<u32>().prop_map(Value::U32).boxed(),
        T::U64 => any::<u64>().prop_map(Value::U64).boxed(),
        T::U128 => any::<u128>().prop_map(Value::U128).boxed(),
        T::I8 => any::<i8>().prop_map(Value::I8).boxed(),
        T::I16 => any::<i16>().prop_map(Value::I16).boxed(),
        T::I32 => any::<i32>().prop_map(Value::I32).boxed(),
        T::I64 => any::<i64>().prop_map(Value::I64).boxed(),
        T::I128 => any::<i128>().prop_map(Value::I128).boxed(),
        T::F32 => any::<f32>().prop_map(Value::F32).boxed(),
        T::F64 => any::<f64>().prop_map(Value::F64).boxed(),
        T::String => ".{0,12}".prop_map(Value::string).boxed(),
        T::Bytes => prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| Value::Bytes(b.into())).boxed(),
        T::Identity => any::<[u8; 32]>().prop_map(|b| Value::Identity(Identity(b))).boxed(),
        T::ConnectionId => any::<[u8; 16]>().prop_map(|b| Value::ConnectionId(ConnectionId(b))).boxed(),
        T::Timestamp => any::<i64>().prop_map(|m| Value::Timestamp(Timestamp::from_micros(m))).boxed(),
        T::TimeDuration => {
            any::<i64>().prop_map(|m| Value::TimeDuration(TimeDuration::from_micros(m))).boxed()
        }
        T::Array(e) => prop::collection::vec(value_of(e), 0..4).prop_map(Value::Array).boxed(),
        T::Option(inner) => {
            prop::option::of(value_of(inner)).prop_map(|o| Value::Option(o.map(Box::new))).boxed()
        }
        T::Product(p) => {
            let fields: Vec<_> = p.fields.iter().map(|f| value_of(&f.ty)).collect();
            fields.prop_map(Value::Product).boxed()
        }
        T::Sum(s) => {
            let variants: Vec<_> = s
                .variants
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    value_of(&v.ty).prop_map(move |value| Value::Sum { tag: i as u8, value: Box::new(value) })
                })
                .collect();
            prop::strategy::Union::new(variants).boxed()
        }
    }
}

fn typed_value() -> impl Strategy<Value = (ValueType, Value)> {
    any_type().prop_flat_map(|ty| {
        let values = value_of(&ty);
        (Just(ty), values)
    })
}

proptest! {
    /// encode then decode gives back the same value, and skip steps over exactly
    /// the encoded bytes; fixed-size types encode to their fixed size.
    #[test]
    fn round_trip((ty, value) in typed_value()) {
        prop_assert_eq!(ty.validate(), Ok(()));
        let mut bytes = Vec::new();
        encode(&ty, &value, &mut bytes).unwrap();
        prop_assert_eq!(decode_exact(&ty, &bytes).unwrap(), value);
        let mut r = Reader::new(&bytes);
        skip(&ty, &mut r).unwrap();
        prop_assert_eq!(r.remaining(), 0);
        if let Some(size) = ty.fixed_size() {
            prop_assert_eq!(bytes.len(), size);
        }
        prop_assert!(bytes.len() >= ty.min_size());
    }

    /// Random bytes decode to a value or a clean error, never a panic, and decode
    /// and skip agree on whether the bytes are valid and where the value ends.
    #[test]
    fn random_bytes_never_panic(ty in any_type(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut r1 = Reader::new(&bytes);
        let mut r2 = Reader::new(&bytes);
        let decoded = decode(&ty, &mut r1);
        let skipped = skip(&ty, &mut r2);
        prop_assert_eq!(decoded.is_ok(), skipped.is_ok());
        if decoded.is_ok() {
            prop_assert_eq!(r1.position(), r2.position());
        }
    }

    /// Truncating a valid encoding anywhere gives an error, never a panic.
    #[test]
    fn truncated_encodings_fail((ty, value) in typed_value(), cut in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        encode(&ty, &value, &mut bytes).unwrap();
        if !bytes.is_empty() {
            let cut = cut.index(bytes.len());
            prop_assert!(decode_exact(&ty, &bytes[..cut]).is_err());
        }
    }
}

/// A length prefix far beyond the input fails before allocating anything for it.
#[test]
fn huge_length_prefix_is_rejected_without_allocating() {
    let ty = ValueType::array(ValueType::U64);
    let bytes = u32::MAX.to_le_bytes();
    let err = decode_exact(&ty, &bytes).unwrap_err();
    assert!(matches!(err, DecodeError::UnexpectedEnd { what: "array", .. }), "{err}");
}

/// Invalid bools, tags and UTF-8 each get their own error with the offset.
#[test]
fn invalid_bytes_name_the_problem() {
    assert_eq!(decode_exact(&ValueType::Bool, &[2]), Err(DecodeError::InvalidBool { offset: 0, byte: 2 }));
    let opt = ValueType::option(ValueType::U8);
    assert_eq!(decode_exact(&opt, &[7, 1]), Err(DecodeError::InvalidOptionTag { offset: 0, byte: 7 }));
    let string = [2, 0, 0, 0, 0xff, 0xfe];
    assert_eq!(decode_exact(&ValueType::String, &string), Err(DecodeError::InvalidUtf8 { offset: 4 }));
    let sum = ValueType::Sum(SumType::new([("a", ValueType::U16), ("b", ValueType::U16)]));
    assert_eq!(
        decode_exact(&sum, &[2, 0, 0]),
        Err(DecodeError::InvalidVariant { offset: 0, tag: 2, variants: 2 })
    );
    let padded = ValueType::Sum(SumType::new([("a", ValueType::unit()), ("b", ValueType::U16)]));
    assert_eq!(padded.fixed_size(), None);
    let fixed = ValueType::Sum(SumType::new([("a", ValueType::U16), ("b", ValueType::I16)]));
    assert_eq!(fixed.fixed_size(), Some(3));
    assert_eq!(decode_exact(&ValueType::U16, &[1, 2, 3]), Err(DecodeError::TrailingBytes { extra: 1 }));
}

/// Encoding a value of the wrong type is an error naming both types.
#[test]
fn encode_checks_types() {
    let err = encode(&ValueType::U32, &Value::string("x"), &mut Vec::new()).unwrap_err();
    assert_eq!(err.to_string(), "expected a value of type u32, found \"x\"");
    let pos = ValueType::Product(ProductType::new([
        ("x", ValueType::F32),
        ("tags", ValueType::array(ValueType::String)),
    ]));
    let err = encode(&pos, &Value::unit(), &mut Vec::new()).unwrap_err();
    assert_eq!(err.to_string(), "expected a value of type { x: f32, tags: Vec<String> }, found ()");
}

/// Floats are equal and ordered by totalOrder, so NaN equals itself and -0 < +0.
#[test]
fn floats_have_a_total_order() {
    assert_eq!(Value::F64(f64::NAN), Value::F64(f64::NAN));
    assert!(Value::F32(-0.0) < Value::F32(0.0));
    assert!(Value::F64(f64::INFINITY) < Value::F64(f64::NAN));
}
