//! The module definition: its encoding round-trips, hostile bytes fail cleanly, and
//! each rule of a valid module is broken once and named in the error.

use proptest::prelude::*;
use tickdb_wasm_abi::{
    Lifecycle, ModuleDef, ModuleDefError, ProductType, ReducerDef, ScheduleDef, SumType, TableSchema,
    TickSystemDef, ValueType, schedule_at_type,
};

fn player() -> TableSchema {
    let state = ValueType::Sum(SumType::new([("idle", ValueType::unit()), ("moving", ValueType::F32)]));
    TableSchema::builder("player")
        .column("id", ValueType::U64)
        .column("owner", ValueType::Identity)
        .column("state", state)
        .column("tags", ValueType::array(ValueType::option(ValueType::String)))
        .column_default("tags", vec![0, 0, 0, 0])
        .primary_key(["id"])
        .auto_inc("id")
        .unique(["owner"])
        .btree_index(["state", "id"])
        .public()
        .build()
        .unwrap()
}

fn timer() -> TableSchema {
    TableSchema::builder("timer")
        .column("id", ValueType::U64)
        .column("at", schedule_at_type())
        .primary_key(["id"])
        .build()
        .unwrap()
}

fn reducer(name: &str, params: Vec<(&str, ValueType)>) -> ReducerDef {
    ReducerDef {
        name: name.into(),
        params: ProductType::new(params),
        returns: ValueType::unit(),
        lifecycle: None,
    }
}

fn module() -> ModuleDef {
    let timer_row =
        ValueType::Product(ProductType::new([("id", ValueType::U64), ("at", schedule_at_type())]));
    let mut init = reducer("init", vec![]);
    init.lifecycle = Some(Lifecycle::Init);
    let mut spawn = reducer("spawn", vec![("name", ValueType::String), ("x", ValueType::F32)]);
    spawn.returns = ValueType::U64;
    ModuleDef {
        tables: vec![player(), timer()],
        reducers: vec![init, spawn, reducer("ring", vec![("timer", timer_row)]), reducer("physics", vec![])],
        schedules: vec![ScheduleDef {
            table: "timer".into(),
            at_column: "at".into(),
            reducer: "ring".into(),
        }],
        tick_systems: vec![TickSystemDef { reducer: "physics".into(), hz: 20, batch_calls: true }],
        visibility: vec!["SELECT * FROM player WHERE identity = :sender".into()],
    }
}

/// A module using every feature encodes, decodes to the same definition, and is valid.
#[test]
fn module_def_round_trips() {
    let def = module();
    assert_eq!(def.validate(), Ok(()));
    let bytes = def.encode();
    assert_eq!(ModuleDef::decode(&bytes), Ok(def.clone()));
    // Version 3, from before `batch_calls` (a byte after each tick system's rate),
    // reads as tick systems that do not batch; version 1, from before visibility
    // rules too (it ends after the tick systems), as a definition without rules.
    // (Without tables: their columns have defaults since version 3.)
    let mut older = ModuleDef { visibility: Vec::new(), tables: Vec::new(), ..def };
    older.tick_systems[0].batch_calls = false;
    let mut bytes = older.encode();
    // The last tick system's batch byte, then the empty visibility list's length.
    assert_eq!(bytes.split_off(bytes.len() - 5), [0, 0, 0, 0, 0]);
    bytes[0] = 1;
    assert_eq!(ModuleDef::decode(&bytes), Ok(older.clone()));
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    bytes[0] = 3;
    assert_eq!(ModuleDef::decode(&bytes), Ok(older));
}

/// A column default must be a value of the column's type, and name a column.
#[test]
fn column_defaults_are_checked() {
    let table = |default: Vec<u8>| {
        TableSchema::builder("t").column("hp", ValueType::U32).column_default("hp", default).build()
    };
    assert_eq!(table(7u32.to_le_bytes().to_vec()).unwrap().columns[0].default, Some(vec![7, 0, 0, 0]));
    let err = table(vec![7]).unwrap_err().to_string();
    assert!(err.contains("the default of column `hp` is not a value of its type"), "{err}");
    let err = TableSchema::builder("t")
        .column("hp", ValueType::U32)
        .column_default("mp", vec![0; 4])
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("a default names column `mp`"), "{err}");
}

/// Every proper prefix of a valid encoding fails to decode; a wrong version is named.
#[test]
fn truncated_and_foreign_definitions_fail() {
    let bytes = module().encode();
    for cut in 0..bytes.len() {
        assert!(ModuleDef::decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes decoded");
    }
    let mut other = bytes.clone();
    other[0] = 9;
    assert_eq!(ModuleDef::decode(&other), Err(ModuleDefError::Version { found: 9 }));
}

/// Types nested past the limit are refused while decoding, before recursing further.
#[test]
fn deep_types_fail_to_decode() {
    let mut bytes = vec![1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'r', 0, 0, 0, 0];
    bytes.extend(std::iter::repeat_n(20u8, 10_000)); // Option<Option<...
    assert_eq!(ModuleDef::decode(&bytes), Err(ModuleDefError::TooDeep));
}

proptest! {
    /// Random bytes, and valid encodings with one byte changed, decode or fail with an
    /// error; nothing panics, and whatever decodes can be validated.
    #[test]
    fn hostile_definitions_never_panic(random in prop::collection::vec(any::<u8>(), 0..200), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        if let Ok(def) = ModuleDef::decode(&random) {
            let _ = def.validate();
        }
        let mut bytes = module().encode();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(def) = ModuleDef::decode(&bytes) {
            let _ = def.validate();
        }
    }
}

/// Each rule broken once gives its own error, naming the table or reducer.
#[test]
fn invalid_modules_name_the_culprit() {
    let mut def = module();
    def.tables.push(timer());
    assert_eq!(def.validate(), Err(ModuleDefError::DuplicateTable("timer".into())));

    let mut def = module();
    def.reducers.push(reducer("spawn", vec![]));
    assert_eq!(def.validate(), Err(ModuleDefError::DuplicateReducer("spawn".into())));

    let mut def = module();
    def.reducers[3].lifecycle = Some(Lifecycle::Init);
    assert_eq!(def.validate(), Err(ModuleDefError::DuplicateLifecycle(Lifecycle::Init)));

    let mut def = module();
    def.reducers[1].lifecycle = Some(Lifecycle::ClientConnected);
    let err = def.validate().unwrap_err();
    assert!(err.to_string().contains("`spawn`") && err.to_string().contains("no arguments"), "{err}");

    let mut def = module();
    def.schedules[0].reducer = "spawn".into();
    let err = def.validate().unwrap_err();
    assert!(
        matches!(err, ModuleDefError::InvalidSchedule { .. }) && err.to_string().contains("`timer`"),
        "{err}"
    );

    let mut def = module();
    def.schedules[0].at_column = "when".into();
    assert!(def.validate().unwrap_err().to_string().contains("`when`"));

    let mut def = module();
    def.tables[1].columns[1].ty = ValueType::Timestamp;
    def.reducers[2].params.fields[0].ty =
        ValueType::Product(ProductType::new([("id", ValueType::U64), ("at", ValueType::Timestamp)]));
    let err = def.validate().unwrap_err();
    assert!(err.to_string().contains("must be a ScheduleAt"), "{err}");

    let mut def = module();
    def.tables[1].primary_key = None;
    let err = def.validate().unwrap_err();
    assert!(err.to_string().contains("needs a primary key"), "{err}");

    let mut def = module();
    def.tick_systems[0].hz = 0;
    let err = def.validate().unwrap_err();
    assert!(
        matches!(err, ModuleDefError::InvalidTickSystem { .. }) && err.to_string().contains("`physics`"),
        "{err}"
    );

    let mut def = module();
    def.tables[0].indexes[0].columns.push(tickdb_wasm_abi::ColId(40));
    assert!(matches!(def.validate(), Err(ModuleDefError::Schema(_))));

    let mut def = module();
    def.reducers[1].name = "no spaces".into();
    assert!(matches!(def.validate(), Err(ModuleDefError::InvalidReducer { .. })));
}
