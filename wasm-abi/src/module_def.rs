//! The module definition: what a module declares about itself when the host calls its
//! describe export. Tables (with their schemas), reducers (with their parameter and
//! return types), lifecycle reducers, scheduled reducers and tick systems.
//!
//! It travels as bytes from guest to host, so it has its own binary encoding, built
//! from the same pieces as the value encoding: little-endian integers, `u32`-prefixed
//! strings and lists, one tag byte per enum. [`ModuleDef::decode`] never trusts its
//! input (every length is checked against what remains, type nesting is capped) and
//! [`ModuleDef::validate`] checks every rule a module must follow, naming the table or
//! reducer at fault.

use crate::encoding::{DecodeError, Reader};
use crate::schema::{
    ColId, ColumnSchema, IndexKind, IndexSchema, SchemaError, TableAccess, TableSchema, UniqueConstraint,
};
use crate::types::{Field, ProductType, SumType, TYPE_DEPTH_MAX, ValueType};

/// The version of this encoding; the first byte of every encoded definition.
pub const MODULE_DEF_VERSION: u8 = 4;
/// The oldest version still read: version 1 has no visibility rules, version 2 no
/// column defaults, version 3 no `batch_calls` on tick systems.
pub const MODULE_DEF_VERSION_MIN: u8 = 1;

/// When the host calls a reducer by itself rather than for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    /// Once, when the module is first published into a database.
    Init,
    /// When a client connects; an `Err` refuses the client.
    ClientConnected,
    /// When a client disconnects.
    ClientDisconnected,
}

/// A reducer: a function clients (or the host) call, run as one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReducerDef {
    pub name: String,
    /// The arguments, in order, as named fields.
    pub params: ProductType,
    /// The type of the value an `Ok` result carries back to the caller (`()` if none).
    pub returns: ValueType,
    pub lifecycle: Option<Lifecycle>,
}

/// A table whose rows schedule calls of a reducer: each row names, in its
/// `at_column`, when (or how often) the host calls `reducer` with that row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScheduleDef {
    pub table: String,
    pub at_column: String,
    pub reducer: String,
}

/// The type of a schedule table's `at_column`: when to call, either once at a time
/// or repeatedly at an interval (the first call one interval after the row is inserted).
pub fn schedule_at_type() -> ValueType {
    ValueType::Sum(SumType::new([("Interval", ValueType::TimeDuration), ("Time", ValueType::Timestamp)]))
}

/// Variant tags of [`schedule_at_type`].
pub const SCHEDULE_AT_INTERVAL: u8 = 0;
pub const SCHEDULE_AT_TIME: u8 = 1;

/// A tick system: a reducer the host calls at a fixed rate, with the tick's delta time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TickSystemDef {
    pub reducer: String,
    pub hz: u32,
    /// Client calls wait for this system's next tick and run together in it, so that
    /// each client gets at most one update per tick: the pace of a game that
    /// simulates at a fixed rate. Otherwise a tick starts as soon as a call arrives.
    pub batch_calls: bool,
}

/// Everything a module declares about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ModuleDef {
    pub tables: Vec<TableSchema>,
    pub reducers: Vec<ReducerDef>,
    pub schedules: Vec<ScheduleDef>,
    pub tick_systems: Vec<TickSystemDef>,
    /// Row-level visibility rules: SQL queries returning rows of one table, which may
    /// name the reading client as `:sender`. The SQL layer checks them when the module
    /// is published.
    pub visibility: Vec<String>,
}

/// The most tables, reducers, schedules or tick systems a module may declare, and the
/// most items in any list inside a definition.
pub const MODULE_ITEMS_MAX: usize = 4096;
/// The fastest rate a tick system may ask for.
pub const TICK_HZ_MAX: u32 = 1000;

/// Why a module definition is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleDefError {
    #[error("module definition is malformed: {0}")]
    Malformed(#[from] DecodeError),
    #[error(
        "module definition has version {found}; this host reads versions {MODULE_DEF_VERSION_MIN} to {MODULE_DEF_VERSION}"
    )]
    Version { found: u8 },
    #[error("module definition has an unknown {what} tag {tag} at byte {offset}")]
    UnknownTag { what: &'static str, tag: u8, offset: usize },
    #[error("module definition nests types deeper than {TYPE_DEPTH_MAX} levels")]
    TooDeep,
    #[error("module definition lists {len} {what}; at most {MODULE_ITEMS_MAX} are allowed")]
    TooMany { what: &'static str, len: usize },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("two tables are named `{0}`")]
    DuplicateTable(String),
    #[error("two reducers are named `{0}`")]
    DuplicateReducer(String),
    #[error("reducer `{reducer}`: {why}")]
    InvalidReducer { reducer: String, why: String },
    #[error("two reducers are the {0:?} reducer; a module has at most one")]
    DuplicateLifecycle(Lifecycle),
    #[error("schedule on table `{table}`: {why}")]
    InvalidSchedule { table: String, why: String },
    #[error("tick system `{reducer}`: {why}")]
    InvalidTickSystem { reducer: String, why: String },
}

/// A type in the module definition's type encoding: a tag byte per type (scalars 0 to
/// 18, then array, option, product, sum), products and sums with their named fields.
/// The client protocol describes query results' rows with it.
pub fn encode_type(ty: &ValueType) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.ty(ty);
    w.0
}

/// Reads a type written by [`encode_type`]; the whole input must be one type.
pub fn decode_type(bytes: &[u8]) -> Result<ValueType, ModuleDefError> {
    let mut r = DefReader(Reader::new(bytes), MODULE_DEF_VERSION);
    let ty = r.ty(0)?;
    if r.0.remaining() != 0 {
        return Err(DecodeError::TrailingBytes { extra: r.0.remaining() }.into());
    }
    Ok(ty)
}

impl ModuleDef {
    /// The definition's binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(vec![MODULE_DEF_VERSION]);
        w.list(&self.tables, Writer::table);
        w.list(&self.reducers, |w, r| {
            w.str(&r.name);
            w.fields(&r.params.fields);
            w.ty(&r.returns);
            w.u8(match r.lifecycle {
                None => 0,
                Some(Lifecycle::Init) => 1,
                Some(Lifecycle::ClientConnected) => 2,
                Some(Lifecycle::ClientDisconnected) => 3,
            });
        });
        w.list(&self.schedules, |w, s| {
            w.str(&s.table);
            w.str(&s.at_column);
            w.str(&s.reducer);
        });
        w.list(&self.tick_systems, |w, t| {
            w.str(&t.reducer);
            w.u32(t.hz);
            w.u8(u8::from(t.batch_calls));
        });
        w.list(&self.visibility, |w, rule| w.str(rule));
        w.0
    }

    /// Reads a definition from its encoding. Checks the encoding only; call
    /// [`ModuleDef::validate`] for the rules.
    pub fn decode(bytes: &[u8]) -> Result<ModuleDef, ModuleDefError> {
        let mut r = DefReader(Reader::new(bytes), MODULE_DEF_VERSION);
        let version = r.u8()?;
        if !(MODULE_DEF_VERSION_MIN..=MODULE_DEF_VERSION).contains(&version) {
            return Err(ModuleDefError::Version { found: version });
        }
        r.1 = version;
        let tables = r.list("tables", DefReader::table)?;
        let reducers = r.list("reducers", DefReader::reducer)?;
        let schedules = r.list("schedules", |r| {
            Ok(ScheduleDef { table: r.string()?, at_column: r.string()?, reducer: r.string()? })
        })?;
        let tick_systems = r.list("tick systems", |r| {
            let (reducer, hz) = (r.string()?, r.u32()?);
            let batch_calls = match r.1 {
                ..4 => false,
                _ => r.u8()? != 0,
            };
            Ok(TickSystemDef { reducer, hz, batch_calls })
        })?;
        let visibility = match version {
            1 => Vec::new(),
            _ => r.list("visibility rules", |r| r.string())?,
        };
        if r.0.remaining() != 0 {
            return Err(DecodeError::TrailingBytes { extra: r.0.remaining() }.into());
        }
        Ok(ModuleDef { tables, reducers, schedules, tick_systems, visibility })
    }

    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn reducer(&self, name: &str) -> Option<&ReducerDef> {
        self.reducers.iter().find(|r| r.name == name)
    }

    /// Checks every rule a module must follow.
    pub fn validate(&self) -> Result<(), ModuleDefError> {
        for (i, table) in self.tables.iter().enumerate() {
            table.validate()?;
            if self.tables[..i].iter().any(|t| t.name == table.name) {
                return Err(ModuleDefError::DuplicateTable(table.name.clone()));
            }
        }
        for (i, reducer) in self.reducers.iter().enumerate() {
            self.validate_reducer(i, reducer)?;
        }
        self.schedules.iter().try_for_each(|s| self.validate_schedule(s))?;
        for system in &self.tick_systems {
            let fail = |why: &str| ModuleDefError::InvalidTickSystem {
                reducer: system.reducer.clone(),
                why: why.into(),
            };
            let Some(reducer) = self.reducer(&system.reducer) else {
                return Err(fail("no reducer has this name"));
            };
            if !(1..=TICK_HZ_MAX).contains(&system.hz) {
                return Err(fail("its rate must be from 1 to 1000 ticks per second"));
            }
            if reducer.lifecycle.is_some() || !reducer.params.fields.is_empty() {
                return Err(fail("a tick system takes only the context: no arguments, no lifecycle"));
            }
            if reducer.returns != ValueType::unit() {
                return Err(fail("a tick system returns nothing (or a Result with no value)"));
            }
        }
        Ok(())
    }

    fn validate_reducer(&self, i: usize, reducer: &ReducerDef) -> Result<(), ModuleDefError> {
        let fail = |why: String| ModuleDefError::InvalidReducer { reducer: reducer.name.clone(), why };
        if self.reducers[..i].iter().any(|r| r.name == reducer.name) {
            return Err(ModuleDefError::DuplicateReducer(reducer.name.clone()));
        }
        if !is_identifier(&reducer.name) {
            return Err(fail("its name must be an identifier (ASCII letters, digits, `_`)".into()));
        }
        let params = ValueType::Product(reducer.params.clone());
        params.validate().map_err(|e| fail(format!("invalid parameters: {e}")))?;
        reducer.returns.validate().map_err(|e| fail(format!("invalid return type: {e}")))?;
        if let Some(lifecycle) = reducer.lifecycle {
            if self.reducers[..i].iter().any(|r| r.lifecycle == Some(lifecycle)) {
                return Err(ModuleDefError::DuplicateLifecycle(lifecycle));
            }
            if !reducer.params.fields.is_empty() {
                return Err(fail(format!("the {lifecycle:?} reducer takes no arguments")));
            }
        }
        Ok(())
    }

    fn validate_schedule(&self, schedule: &ScheduleDef) -> Result<(), ModuleDefError> {
        let fail = |why: String| ModuleDefError::InvalidSchedule { table: schedule.table.clone(), why };
        let Some(table) = self.table(&schedule.table) else {
            return Err(fail("no table has this name".into()));
        };
        if self.schedules.iter().filter(|s| s.table == schedule.table).count() > 1 {
            return Err(fail("a table schedules at most one reducer".into()));
        }
        let Some(at) = table.column(&schedule.at_column) else {
            return Err(fail(format!("it has no column `{}`", schedule.at_column)));
        };
        if table.columns[at.index()].ty != schedule_at_type() {
            return Err(fail(format!("column `{}` must be a ScheduleAt", schedule.at_column)));
        }
        if table.primary_key.is_none() {
            return Err(fail("a schedule table needs a primary key".into()));
        }
        let Some(reducer) = self.reducer(&schedule.reducer) else {
            return Err(fail(format!("no reducer is named `{}`", schedule.reducer)));
        };
        let row = ValueType::Product(ProductType::new(
            table.columns.iter().map(|c| (c.name.clone(), c.ty.clone())),
        ));
        let takes_row = matches!(&reducer.params.fields[..], [only] if only.ty == row);
        if !takes_row {
            return Err(fail(format!(
                "reducer `{}` must take exactly one argument: a row of the table",
                reducer.name
            )));
        }
        Ok(())
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn len(&mut self, len: usize) {
        self.u32(u32::try_from(len).expect("definitions are far smaller than 4 GiB"));
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn list<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        self.len(items.len());
        items.iter().for_each(|i| item(self, i));
    }

    fn cols(&mut self, cols: &[ColId]) {
        self.list(cols, |w, c| w.0.extend_from_slice(&c.0.to_le_bytes()));
    }

    fn fields(&mut self, fields: &[Field]) {
        self.list(fields, |w, f| {
            w.str(&f.name);
            w.ty(&f.ty);
        });
    }

    fn ty(&mut self, ty: &ValueType) {
        use ValueType::*;
        match ty {
            Array(inner) => {
                self.u8(19);
                self.ty(inner);
            }
            Option(inner) => {
                self.u8(20);
                self.ty(inner);
            }
            Product(p) => {
                self.u8(21);
                self.fields(&p.fields);
            }
            Sum(s) => {
                self.u8(22);
                self.fields(&s.variants);
            }
            scalar => {
                self.u8(SCALARS.iter().position(|s| s == scalar).expect("every other type is a scalar") as u8)
            }
        }
    }

    fn table(&mut self, t: &TableSchema) {
        self.str(&t.name);
        self.list(&t.columns, |w, c| {
            w.str(&c.name);
            w.ty(&c.ty);
            match &c.default {
                None => w.u8(0),
                Some(value) => {
                    w.u8(1);
                    w.u32(value.len() as u32);
                    w.0.extend_from_slice(value);
                }
            }
        });
        // The primary key as an index into `unique`, plus one; zero for none.
        self.u32(t.primary_key.map_or(0, |pk| pk as u32 + 1));
        self.list(&t.unique, |w, u| {
            w.str(&u.name);
            w.cols(&u.columns);
        });
        self.list(&t.indexes, |w, i| {
            w.str(&i.name);
            w.cols(&i.columns);
            match i.kind {
                IndexKind::BTree => w.u8(0),
                IndexKind::Grid { cell_log2 } => {
                    w.u8(1);
                    w.u8(cell_log2 as u8);
                }
            }
        });
        self.cols(&t.auto_inc);
        self.u8(match t.access {
            TableAccess::Private => 0,
            TableAccess::Public => 1,
        });
    }
}

/// Scalar types by tag; composite types take tags 19 to 22.
const SCALARS: [ValueType; 19] = {
    use ValueType::*;
    [
        Bool,
        U8,
        U16,
        U32,
        U64,
        U128,
        I8,
        I16,
        I32,
        I64,
        I128,
        F32,
        F64,
        String,
        Bytes,
        Identity,
        ConnectionId,
        Timestamp,
        TimeDuration,
    ]
};

/// A reader of definitions of one version.
struct DefReader<'a>(Reader<'a>, u8);

impl DefReader<'_> {
    fn u8(&mut self) -> Result<u8, ModuleDefError> {
        Ok(self.0.take(1, "u8")?[0])
    }

    fn u16(&mut self) -> Result<u16, ModuleDefError> {
        Ok(u16::from_le_bytes(self.0.take(2, "u16")?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, ModuleDefError> {
        Ok(u32::from_le_bytes(self.0.take(4, "u32")?.try_into().expect("4 bytes")))
    }

    fn string(&mut self) -> Result<String, ModuleDefError> {
        Ok(self.0.str()?.to_string())
    }

    /// A `u32` count, then that many items; the count is capped before anything is
    /// allocated, and every item takes at least a byte, so a count past the remaining
    /// input fails at once.
    fn list<T>(
        &mut self,
        what: &'static str,
        mut item: impl FnMut(&mut Self) -> Result<T, ModuleDefError>,
    ) -> Result<Vec<T>, ModuleDefError> {
        let len = self.u32()? as usize;
        if len > MODULE_ITEMS_MAX {
            return Err(ModuleDefError::TooMany { what, len });
        }
        if len > self.0.remaining() {
            let offset = self.0.position() + self.0.remaining();
            return Err(DecodeError::UnexpectedEnd { offset, needed: len - self.0.remaining(), what }.into());
        }
        (0..len).map(|_| item(self)).collect()
    }

    fn cols(&mut self) -> Result<Vec<ColId>, ModuleDefError> {
        self.list("column positions", |r| Ok(ColId(r.u16()?)))
    }

    fn fields(&mut self, depth: usize) -> Result<Vec<Field>, ModuleDefError> {
        self.list("fields", |r| Ok(Field { name: r.string()?, ty: r.ty(depth)? }))
    }

    fn ty(&mut self, depth: usize) -> Result<ValueType, ModuleDefError> {
        if depth > TYPE_DEPTH_MAX {
            return Err(ModuleDefError::TooDeep);
        }
        let offset = self.0.position();
        Ok(match self.u8()? {
            tag @ 0..=18 => SCALARS[usize::from(tag)].clone(),
            19 => ValueType::Array(Box::new(self.ty(depth + 1)?)),
            20 => ValueType::Option(Box::new(self.ty(depth + 1)?)),
            21 => ValueType::Product(ProductType { fields: self.fields(depth + 1)? }),
            22 => ValueType::Sum(SumType { variants: self.fields(depth + 1)? }),
            tag => return Err(ModuleDefError::UnknownTag { what: "type", tag, offset }),
        })
    }

    fn table(&mut self) -> Result<TableSchema, ModuleDefError> {
        let name = self.string()?;
        let columns = self.list("columns", |r| {
            let (name, ty) = (r.string()?, r.ty(1)?);
            let default = match r.1 {
                ..3 => None,
                _ => {
                    let offset = r.0.position();
                    match r.u8()? {
                        0 => None,
                        1 => Some(r.0.bytes()?.to_vec()),
                        tag => {
                            return Err(ModuleDefError::UnknownTag { what: "column default", tag, offset });
                        }
                    }
                }
            };
            Ok(ColumnSchema { name, ty, default })
        })?;
        let primary_key = self.u32()?.checked_sub(1).map(|pk| pk as usize);
        let unique = self
            .list("unique constraints", |r| Ok(UniqueConstraint { name: r.string()?, columns: r.cols()? }))?;
        let indexes = self.list("indexes", |r| {
            let (name, columns) = (r.string()?, r.cols()?);
            let offset = r.0.position();
            let kind = match r.u8()? {
                0 => IndexKind::BTree,
                1 => IndexKind::Grid { cell_log2: r.u8()? as i8 },
                tag => return Err(ModuleDefError::UnknownTag { what: "index kind", tag, offset }),
            };
            Ok(IndexSchema { name, columns, kind })
        })?;
        let auto_inc = self.cols()?;
        let offset = self.0.position();
        let access = match self.u8()? {
            0 => TableAccess::Private,
            1 => TableAccess::Public,
            tag => return Err(ModuleDefError::UnknownTag { what: "table access", tag, offset }),
        };
        Ok(TableSchema { name, columns, primary_key, unique, indexes, auto_inc, access })
    }

    fn reducer(&mut self) -> Result<ReducerDef, ModuleDefError> {
        let name = self.string()?;
        let params = ProductType { fields: self.fields(1)? };
        let returns = self.ty(1)?;
        let offset = self.0.position();
        let lifecycle = match self.u8()? {
            0 => None,
            1 => Some(Lifecycle::Init),
            2 => Some(Lifecycle::ClientConnected),
            3 => Some(Lifecycle::ClientDisconnected),
            tag => return Err(ModuleDefError::UnknownTag { what: "lifecycle", tag, offset }),
        };
        Ok(ReducerDef { name, params, returns, lifecycle })
    }
}
