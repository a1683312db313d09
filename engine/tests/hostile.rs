//! Rows and keys from an untrusted sender: random bytes, and valid rows with bytes
//! flipped or cut, must be refused with an error or stored correctly, never panic, and
//! never leave the table inconsistent.

use proptest::prelude::*;
use tickdb_engine::{Database, EngineConfig};
use tickdb_wasm_abi::{ColId, ProductType, SumType, TableSchema, Value, ValueType, encode_product};

fn schema() -> TableSchema {
    let shape = ValueType::Sum(SumType::new([("dot", ValueType::unit()), ("circle", ValueType::F32)]));
    let tags = ValueType::array(ValueType::option(ValueType::String));
    TableSchema::builder("thing")
        .column("id", ValueType::U64)
        .column("alive", ValueType::Bool)
        .column("name", ValueType::String)
        .column("shape", shape)
        .column("tags", tags)
        .column("pos", ValueType::Product(ProductType::new([("x", ValueType::F32), ("y", ValueType::F32)])))
        .column("blob", ValueType::Bytes)
        .primary_key(["id"])
        .unique(["name"])
        .btree_index(["shape", "alive"])
        .build()
        .unwrap()
}

fn valid_row(id: u64) -> Vec<u8> {
    let values = vec![
        Value::U64(id),
        Value::Bool(id.is_multiple_of(2)),
        Value::string(format!("thing number {id}")),
        Value::Sum { tag: 1, value: Box::new(Value::F32(1.5)) },
        Value::Array(vec![Value::Option(Some(Box::new(Value::string("a")))), Value::Option(None)]),
        Value::Product(vec![Value::F32(1.0), Value::F32(2.0)]),
        Value::Bytes(vec![0, 1, 2].into()),
    ];
    let mut row = Vec::new();
    encode_product(schema().column_types(), &values, &mut row).unwrap();
    row
}

#[derive(Debug, Clone)]
enum Hostile {
    Random(Vec<u8>),
    Flipped { id: u64, at: prop::sample::Index, byte: u8 },
    Cut { id: u64, at: prop::sample::Index },
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..96).prop_map(Hostile::Random),
        (0u64..8, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(id, at, byte)| Hostile::Flipped {
            id,
            at,
            byte
        }),
        (0u64..8, any::<prop::sample::Index>()).prop_map(|(id, at)| Hostile::Cut { id, at }),
    ]
}

fn bytes_of(h: &Hostile) -> Vec<u8> {
    match h {
        Hostile::Random(bytes) => bytes.clone(),
        Hostile::Flipped { id, at, byte } => {
            let mut row = valid_row(*id);
            let i = at.index(row.len());
            row[i] = *byte;
            row
        }
        Hostile::Cut { id, at } => {
            let row = valid_row(*id);
            row[..at.index(row.len())].to_vec()
        }
    }
}

proptest! {
    /// Whatever the bytes, insert, update and key lookups answer with a value or an
    /// error; every row that got in reads back as the bytes that were sent, and the
    /// primary-key index finds each of them.
    #[test]
    fn hostile_rows_never_break_a_table(inputs in prop::collection::vec(hostile(), 1..24)) {
        let mut db = Database::new(EngineConfig::default()).unwrap();
        let t = db.create_table(schema()).unwrap();
        let mut tx = db.begin();
        let anchor = tx.insert(t, &valid_row(100)).unwrap();
        let mut stored = vec![(anchor, valid_row(100))];
        for input in &inputs {
            let bytes = bytes_of(input);
            if let Ok(row) = tx.insert(t, &bytes) {
                stored.push((row, bytes.clone()));
            }
            if tx.update(t, anchor, &bytes).is_ok() {
                stored[0].1 = bytes.clone();
            }
            let table = tx.table(t);
            let _ = table.find_unique_encoded(0, &bytes);
            let _ = table.key_from_encoded(&[ColId(3), ColId(1)], &bytes);
        }
        let table = tx.table(t);
        prop_assert_eq!(table.len(), stored.len());
        for (row, bytes) in &stored {
            prop_assert_eq!(&table.get(*row).unwrap().to_bytes(), bytes);
            let found = table.find_unique_encoded(0, &bytes[..8]).unwrap();
            prop_assert_eq!(found, Some(*row));
        }
        tx.rollback();
        prop_assert_eq!(db.table(t).len(), 0);
    }
}
