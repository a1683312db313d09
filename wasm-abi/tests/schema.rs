//! Schema validation: every rule is broken once, and the error must name the table and,
//! where one is at fault, the column.

use tickdb_wasm_abi::{ColId, SchemaError, TableAccess, TableSchema, TypeError, ValueType};

fn player() -> tickdb_wasm_abi::TableSchemaBuilder {
    TableSchema::builder("player").column("id", ValueType::U64).column("name", ValueType::String)
}

/// A schema using every feature builds, with names resolved to column positions.
#[test]
fn valid_schema_resolves_names() {
    let schema = player()
        .column("zone", ValueType::U32)
        .column("x", ValueType::F32)
        .primary_key(["id"])
        .auto_inc("id")
        .unique(["name"])
        .btree_index(["zone", "x"])
        .public()
        .build()
        .unwrap();
    assert_eq!(schema.primary_key().unwrap().name, "player_pkey");
    assert_eq!(schema.unique[1].name, "player_name_key");
    assert_eq!(schema.unique[1].columns, vec![ColId(1)]);
    assert_eq!(schema.indexes[0].name, "player_zone_x_idx");
    assert_eq!(schema.indexes[0].columns, vec![ColId(2), ColId(3)]);
    assert_eq!(schema.auto_inc, vec![ColId(0)]);
    assert_eq!(schema.access, TableAccess::Public);
}

fn err(builder: tickdb_wasm_abi::TableSchemaBuilder) -> (SchemaError, String) {
    let e = builder.build().unwrap_err();
    let message = e.to_string();
    assert!(message.contains("`player`") || message.contains("`9lives`"), "{message}");
    (e, message)
}

/// Each broken rule gives its own error, naming the offending column.
#[test]
fn invalid_schemas_name_table_and_column() {
    let (e, m) = err(player().column("id", ValueType::U8));
    assert!(matches!(e, SchemaError::DuplicateColumn { .. }) && m.contains("`id`"), "{m}");

    let (e, m) = err(player().primary_key(["ghost"]));
    assert!(matches!(e, SchemaError::UnknownColumn { .. }) && m.contains("`ghost`"), "{m}");

    let (e, m) = err(player().auto_inc("name"));
    assert!(matches!(e, SchemaError::AutoIncNotInteger { .. }) && m.contains("`name`"), "{m}");

    let (e, m) = err(player().btree_index(["id", "id"]));
    assert!(matches!(e, SchemaError::RepeatedColumn { .. }) && m.contains("`id`"), "{m}");

    let (e, _) = err(player().primary_key(["id"]).primary_key(["name"]));
    assert!(matches!(e, SchemaError::DuplicatePrimaryKey { .. }));

    let (e, m) = err(player().column("bad name", ValueType::U8));
    assert!(matches!(e, SchemaError::InvalidColumnName { .. }) && m.contains("`bad name`"), "{m}");

    let (e, m) = err(player().column("units", ValueType::array(ValueType::unit())));
    assert!(matches!(e, SchemaError::InvalidType { source: TypeError::ZeroSizedArrayElement, .. }), "{m}");
    assert!(m.contains("`units`"), "{m}");

    let (e, _) = err(player().named_btree_index("dup", ["id"]).named_btree_index("dup", ["name"]));
    assert!(matches!(e, SchemaError::DuplicateIndexName { .. }));

    let (e, _) = err(TableSchema::builder("9lives").column("a", ValueType::U8));
    assert!(matches!(e, SchemaError::InvalidTableName { .. }));

    let (e, _) = err(TableSchema::builder("player"));
    assert!(matches!(e, SchemaError::NoColumns { .. }));

    let (e, m) = err(TableSchema::builder("player").column("unit", ValueType::unit()));
    assert!(matches!(e, SchemaError::EmptyRow { .. }), "{m}");

    let (e, _) = err(player().unique(Vec::<String>::new()));
    assert!(matches!(e, SchemaError::EmptyColumnList { .. }));
}

/// Types nested deeper than the limit are refused, so decoding recursion stays bounded.
#[test]
fn deep_types_are_refused() {
    let mut ty = ValueType::U8;
    for _ in 0..tickdb_wasm_abi::types::TYPE_DEPTH_MAX {
        ty = ValueType::option(ty);
    }
    let (e, m) = err(player().column("deep", ty));
    assert!(matches!(e, SchemaError::InvalidType { source: TypeError::TooDeep, .. }), "{m}");
}

/// More columns than the limit is a clear error.
#[test]
fn too_many_columns() {
    let mut b = TableSchema::builder("player");
    for i in 0..=tickdb_wasm_abi::schema::TABLE_COLUMNS_MAX {
        b = b.column(format!("c{i}"), ValueType::U8);
    }
    let (e, _) = err(b);
    assert!(matches!(e, SchemaError::TooManyColumns { count: 256, .. }));
}

/// A schema changed by hand after building (its fields are public) is checked again by
/// `validate`: out-of-range columns and non-integer auto-inc columns are refused.
#[test]
fn validate_catches_hand_edited_schemas() {
    let good = player().primary_key(["id"]).btree_index(["name"]).build().unwrap();
    assert_eq!(good.validate(), Ok(()));

    let mut bad = good.clone();
    bad.indexes[0].columns.push(ColId(7));
    assert!(matches!(bad.validate(), Err(SchemaError::ColumnOutOfRange { col: 7, .. })));

    let mut bad = good.clone();
    bad.auto_inc.push(ColId(1));
    let e = bad.validate().unwrap_err();
    assert!(matches!(e, SchemaError::AutoIncNotInteger { .. }) && e.to_string().contains("`name`"), "{e}");

    let mut bad = good;
    bad.primary_key = Some(3);
    assert!(bad.validate().is_err());

    let (e, m) = err(player().named_btree_index("bad name", ["id"]));
    assert!(matches!(e, SchemaError::InvalidIndexName { .. }) && m.contains("`bad name`"), "{m}");
}
