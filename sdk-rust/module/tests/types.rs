//! The SDK's encodings are the ABI's: what `#[derive(Type)]` and the built-in impls
//! write decodes with `tickdb_wasm_abi` as a value of the declared type, and reads back.

use tickdb::{Identity, ScheduleAt, TimeDuration, Timestamp, Type};
use tickdb_wasm_abi::{Value, ValueType, decode_exact};

#[derive(Type, Debug, Clone, PartialEq)]
enum Shape {
    Point,
    Circle(f32),
    Rect { w: u16, h: u16 },
    Pair(i8, i8),
}

#[derive(Type, Debug, Clone, PartialEq)]
struct Entity {
    id: u64,
    owner: Identity,
    name: String,
    shape: Shape,
    tags: Vec<String>,
    previous: Option<Box<Shape>>,
    at: ScheduleAt,
    pos: (f32, f32),
}

#[derive(Type, Debug, Clone, PartialEq)]
struct Wrapper(u32, bool);

fn round_trip<T: Type + PartialEq + std::fmt::Debug>(value: T) -> Value {
    let ty = T::value_type();
    ty.validate().expect("derived types are valid");
    let bytes = value.to_bytes();
    let decoded = decode_exact(&ty, &bytes).unwrap_or_else(|e| panic!("{value:?} as {ty}: {e}"));
    assert_eq!(T::from_bytes(&bytes).expect("reads back"), value);
    decoded
}

#[test]
fn derived_types_encode_as_the_abi_decodes() {
    let child = Entity {
        id: 7,
        owner: Identity([3; 32]),
        name: "child".into(),
        shape: Shape::Rect { w: 2, h: 3 },
        tags: vec!["a".into(), "bc".into()],
        previous: None,
        at: ScheduleAt::Interval(TimeDuration::from_micros(50)),
        pos: (1.0, -1.0),
    };
    let parent = Entity {
        previous: Some(Box::new(Shape::Circle(1.0))),
        shape: Shape::Pair(-1, 2),
        at: ScheduleAt::Time(Timestamp::from_micros(99)),
        ..child.clone()
    };
    let value = round_trip(parent);
    let Value::Product(fields) = value else { panic!("a struct is a product") };
    assert_eq!(fields[2], Value::string("child"));
    assert_eq!(
        fields[3],
        Value::Sum { tag: 3, value: Box::new(Value::Product(vec![Value::I8(-1), Value::I8(2)])) }
    );
    for shape in [Shape::Point, Shape::Circle(2.5)] {
        round_trip(shape);
    }
    assert_eq!(round_trip(Wrapper(5, true)), Value::Product(vec![Value::U32(5), Value::Bool(true)]));
    assert_eq!(ScheduleAt::value_type(), tickdb_wasm_abi::schedule_at_type());
}

#[test]
fn bad_bytes_fail_to_decode() {
    assert!(Shape::from_bytes(&[4]).is_err(), "no fifth variant");
    assert!(bool::from_bytes(&[2]).is_err());
    assert!(Option::<u8>::from_bytes(&[2, 0]).is_err());
    assert!(Vec::<u64>::from_bytes(&u32::MAX.to_le_bytes()).is_err(), "a length past the input");
    assert!(String::from_bytes(&[1, 0, 0, 0, 0xFF]).is_err(), "not UTF-8");
    assert!(u32::from_bytes(&[1, 2, 3, 4, 5]).is_err(), "trailing bytes");
    assert_eq!(<()>::value_type(), ValueType::unit());
}
