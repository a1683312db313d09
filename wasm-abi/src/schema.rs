//! Table schemas: columns, keys, constraints, indexes and access, as a module declares
//! them and as the engine enforces them.
//!
//! Schemas are built by name with [`TableSchemaBuilder`] and checked once in
//! [`TableSchemaBuilder::build`]; a built [`TableSchema`] refers to columns by position
//! ([`ColId`]) and is known to be valid, so storage never re-checks it.

use crate::types::{TypeError, ValueType};

/// The most columns a table may have.
pub const TABLE_COLUMNS_MAX: usize = 255;
/// The longest table, column, constraint or index name, in bytes.
pub const NAME_LEN_MAX: usize = 64;

/// A column's position in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct ColId(pub u16);

impl ColId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Who may read a table from outside the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TableAccess {
    /// Any client may query and subscribe to it.
    Public,
    /// Only the module's reducers (and the database owner) may read it.
    #[default]
    Private,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnSchema {
    pub name: String,
    pub ty: ValueType,
    /// The value (in the value encoding) that rows stored before the column existed
    /// get when a republished module adds it: a column added to an existing table
    /// needs one.
    pub default: Option<Vec<u8>>,
}

/// A set of columns whose values no two rows may share. The primary key is one of these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UniqueConstraint {
    pub name: String,
    pub columns: Vec<ColId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexKind {
    /// Ordered: point, prefix and range scans.
    BTree,
    /// Spatial: rows filed by the cell of a grid over two or three numeric columns,
    /// cells `2^cell_log2` wide on each; finds the rows in a window (an area of
    /// interest) by the cells it covers.
    Grid { cell_log2: i8 },
}

/// The finest and coarsest grid cells: `2^-20` to `2^40` wide.
pub const GRID_CELL_LOG2: std::ops::RangeInclusive<i8> = -20..=40;

/// The cell of a grid with cells `2^cell_log2` wide that holds coordinate `v`: cells
/// keep the coordinates' order. (A power of two scales exactly; coordinates past the
/// `i64` cells saturate, NaN is in cell 0.)
pub fn grid_cell(v: f64, cell_log2: i8) -> i64 {
    (v * 2f64.powi(-i32::from(cell_log2))).floor() as i64
}

/// A non-unique index over one or more columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexSchema {
    pub name: String,
    pub columns: Vec<ColId>,
    pub kind: IndexKind,
}

/// A valid table schema. Build one with [`TableSchema::builder`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<ColumnSchema>,
    /// Position in `unique` of the primary key, if the table has one.
    pub primary_key: Option<usize>,
    pub unique: Vec<UniqueConstraint>,
    pub indexes: Vec<IndexSchema>,
    /// Integer columns filled from a sequence when a row is inserted with 0 there.
    pub auto_inc: Vec<ColId>,
    pub access: TableAccess,
}

impl TableSchema {
    pub fn builder(name: impl Into<String>) -> TableSchemaBuilder {
        TableSchemaBuilder { name: name.into(), ..TableSchemaBuilder::default() }
    }

    pub fn primary_key(&self) -> Option<&UniqueConstraint> {
        self.primary_key.map(|i| &self.unique[i])
    }

    pub fn column(&self, name: &str) -> Option<ColId> {
        let i = self.columns.iter().position(|c| c.name == name)?;
        Some(ColId(i as u16))
    }

    pub fn column_types(&self) -> impl ExactSizeIterator<Item = &ValueType> + Clone {
        self.columns.iter().map(|c| &c.ty)
    }

    /// Checks every rule a schema must follow. [`TableSchemaBuilder::build`] returns
    /// only schemas that pass; the engine checks again when a table is created, since
    /// the fields are public.
    pub fn validate(&self) -> Result<(), SchemaError> {
        let table = &self.name;
        check_name(table).map_err(|why| SchemaError::InvalidTableName { table: table.clone(), why })?;
        check_columns(table, &self.columns)?;
        if self.primary_key.is_some_and(|pk| pk >= self.unique.len()) {
            return Err(SchemaError::DuplicatePrimaryKey { table: table.clone() });
        }
        for u in &self.unique {
            self.check_column_list(&format!("unique constraint `{}`", u.name), &u.columns)?;
        }
        for i in &self.indexes {
            self.check_column_list(&format!("index `{}`", i.name), &i.columns)?;
            if let IndexKind::Grid { cell_log2 } = i.kind {
                self.check_grid(&i.name, &i.columns, cell_log2)?;
            }
        }
        let names = self.unique.iter().map(|u| &u.name).chain(self.indexes.iter().map(|i| &i.name));
        check_unique_names(table, names)?;
        self.check_column_list("auto_inc", &self.auto_inc)?;
        for col in &self.auto_inc {
            let column = &self.columns[col.index()];
            if !column.ty.is_integer() {
                let (table, name, ty) = (table.clone(), column.name.clone(), column.ty.clone());
                return Err(SchemaError::AutoIncNotInteger { table, column: name, ty });
            }
        }
        Ok(())
    }

    /// A grid spans two or three numeric columns that are never NULL, with a cell
    /// width in [`GRID_CELL_LOG2`].
    fn check_grid(&self, name: &str, columns: &[ColId], cell_log2: i8) -> Result<(), SchemaError> {
        let fail =
            |why: String| SchemaError::InvalidGridIndex { table: self.name.clone(), name: name.into(), why };
        if !(2..=3).contains(&columns.len()) {
            return Err(fail(format!("it spans {} columns; a grid spans 2 or 3", columns.len())));
        }
        for col in columns {
            let column = &self.columns[col.index()];
            use ValueType as T;
            let numeric = matches!(
                column.ty,
                T::U8 | T::U16 | T::U32 | T::U64 | T::I8 | T::I16 | T::I32 | T::I64 | T::F32 | T::F64
            );
            if !numeric {
                return Err(fail(format!(
                    "column `{}` is a {}; a grid spans numbers (integers up to 64 bits, floats)",
                    column.name, column.ty
                )));
            }
        }
        if !GRID_CELL_LOG2.contains(&cell_log2) {
            return Err(fail(format!(
                "cells 2^{cell_log2} wide; from 2^{} to 2^{} are allowed",
                GRID_CELL_LOG2.start(),
                GRID_CELL_LOG2.end()
            )));
        }
        Ok(())
    }

    fn check_column_list(&self, what: &str, columns: &[ColId]) -> Result<(), SchemaError> {
        let (table, what) = (self.name.clone(), what.to_string());
        if columns.is_empty() && what != "auto_inc" {
            return Err(SchemaError::EmptyColumnList { table, what });
        }
        for (i, col) in columns.iter().enumerate() {
            let Some(column) = self.columns.get(col.index()) else {
                return Err(SchemaError::ColumnOutOfRange { table, what, col: col.0 });
            };
            if columns[..i].contains(col) {
                return Err(SchemaError::RepeatedColumn { table, what, column: column.name.clone() });
            }
        }
        Ok(())
    }

    /// Column names joined for messages, e.g. `player(zone, x)`.
    pub fn describe_columns(&self, columns: &[ColId]) -> String {
        let names: Vec<&str> = columns.iter().map(|c| self.columns[c.index()].name.as_str()).collect();
        format!("{}({})", self.name, names.join(", "))
    }
}

/// Why a table schema is invalid. Every variant names the table, and the column where
/// one is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("table name `{table}` is invalid: {why}")]
    InvalidTableName { table: String, why: &'static str },
    #[error("table `{table}`: column name `{column}` is invalid: {why}")]
    InvalidColumnName { table: String, column: String, why: &'static str },
    #[error("table `{table}` has no columns; add at least one")]
    NoColumns { table: String },
    #[error("table `{table}`: every column is empty (`()`), so a row would be zero bytes")]
    EmptyRow { table: String },
    #[error("table `{table}` has {count} columns; at most {TABLE_COLUMNS_MAX} are allowed")]
    TooManyColumns { table: String, count: usize },
    #[error("table `{table}`: column `{column}` is declared twice")]
    DuplicateColumn { table: String, column: String },
    #[error("table `{table}`: the default of column `{column}` is not a value of its type: {why}")]
    InvalidDefault { table: String, column: String, why: String },
    #[error("table `{table}`: column `{column}` has an invalid type: {source}")]
    InvalidType { table: String, column: String, source: TypeError },
    #[error("table `{table}`: {what} names column `{column}`, which the table does not have")]
    UnknownColumn { table: String, what: String, column: String },
    #[error("table `{table}`: {what} lists column `{column}` twice")]
    RepeatedColumn { table: String, what: String, column: String },
    #[error("table `{table}`: {what} has no columns")]
    EmptyColumnList { table: String, what: String },
    #[error("table `{table}` declares a primary key twice; declare one (it may span several columns)")]
    DuplicatePrimaryKey { table: String },
    #[error("table `{table}`: auto_inc column `{column}` has type {ty:?}; it must be an integer")]
    AutoIncNotInteger { table: String, column: String, ty: ValueType },
    #[error(
        "table `{table}`: two constraints or indexes are named `{name}` (names not given are made \
         from the column names; name the index explicitly)"
    )]
    DuplicateIndexName { table: String, name: String },
    #[error("table `{table}`: {what} refers to column number {col}, which the table does not have")]
    ColumnOutOfRange { table: String, what: String, col: u16 },
    #[error("table `{table}`: index name `{name}` is invalid: {why}")]
    InvalidIndexName { table: String, name: String, why: &'static str },
    #[error("table `{table}`: grid index `{name}`: {why}")]
    InvalidGridIndex { table: String, name: String, why: String },
}

/// Builds a [`TableSchema`] by column name; see [`TableSchema::builder`].
#[derive(Debug, Clone, Default)]
pub struct TableSchemaBuilder {
    name: String,
    columns: Vec<ColumnSchema>,
    primary_keys: Vec<Vec<String>>,
    unique: Vec<Vec<String>>,
    indexes: Vec<(Option<String>, Vec<String>, IndexKind)>,
    auto_inc: Vec<String>,
    access: TableAccess,
    unknown_defaults: Vec<String>,
}

impl TableSchemaBuilder {
    pub fn column(mut self, name: impl Into<String>, ty: ValueType) -> Self {
        self.columns.push(ColumnSchema { name: name.into(), ty, default: None });
        self
    }

    /// Gives column `name` (declared before) a default: `value` in the value encoding.
    /// An unknown column is reported by [`TableSchemaBuilder::build`].
    pub fn column_default(mut self, name: &str, value: Vec<u8>) -> Self {
        match self.columns.iter_mut().find(|c| c.name == name) {
            Some(column) => column.default = Some(value),
            None => self.unknown_defaults.push(name.to_string()),
        }
        self
    }

    /// Declares the primary key: unique, and how updates are recognised.
    pub fn primary_key<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.primary_keys.push(columns.into_iter().map(Into::into).collect());
        self
    }

    pub fn unique<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.unique.push(columns.into_iter().map(Into::into).collect());
        self
    }

    /// A btree index with a generated name.
    pub fn btree_index<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.indexes.push((None, columns.into_iter().map(Into::into).collect(), IndexKind::BTree));
        self
    }

    /// A grid index with a generated name, over two or three numeric columns, with
    /// cells `2^cell_log2` wide.
    pub fn grid_index<S: Into<String>>(
        mut self,
        columns: impl IntoIterator<Item = S>,
        cell_log2: i8,
    ) -> Self {
        let columns = columns.into_iter().map(Into::into).collect();
        self.indexes.push((None, columns, IndexKind::Grid { cell_log2 }));
        self
    }

    pub fn named_grid_index<S: Into<String>>(
        mut self,
        name: impl Into<String>,
        columns: impl IntoIterator<Item = S>,
        cell_log2: i8,
    ) -> Self {
        let columns = columns.into_iter().map(Into::into).collect();
        self.indexes.push((Some(name.into()), columns, IndexKind::Grid { cell_log2 }));
        self
    }

    pub fn named_btree_index<S: Into<String>>(
        mut self,
        name: impl Into<String>,
        columns: impl IntoIterator<Item = S>,
    ) -> Self {
        self.indexes.push((
            Some(name.into()),
            columns.into_iter().map(Into::into).collect(),
            IndexKind::BTree,
        ));
        self
    }

    pub fn auto_inc(mut self, column: impl Into<String>) -> Self {
        self.auto_inc.push(column.into());
        self
    }

    pub fn access(mut self, access: TableAccess) -> Self {
        self.access = access;
        self
    }

    pub fn public(self) -> Self {
        self.access(TableAccess::Public)
    }

    /// Checks every rule and resolves names to positions.
    pub fn build(self) -> Result<TableSchema, SchemaError> {
        let table = self.name.clone();
        check_name(&table).map_err(|why| SchemaError::InvalidTableName { table: table.clone(), why })?;
        check_columns(&table, &self.columns)?;
        if let Some(column) = self.unknown_defaults.first() {
            let (what, column) = ("a default".to_string(), column.clone());
            return Err(SchemaError::UnknownColumn { table, what, column });
        }
        if self.primary_keys.len() > 1 {
            return Err(SchemaError::DuplicatePrimaryKey { table });
        }
        let mut unique = Vec::new();
        for cols in &self.primary_keys {
            let columns = self.resolve(cols, "primary key")?;
            unique.push(UniqueConstraint { name: format!("{table}_pkey"), columns });
        }
        for cols in &self.unique {
            let columns = self.resolve(cols, "unique constraint")?;
            unique.push(UniqueConstraint { name: format!("{table}_{}_key", cols.join("_")), columns });
        }
        let mut indexes = Vec::new();
        for (name, cols, kind) in &self.indexes {
            if let Some(name) = name {
                check_name(name).map_err(|why| SchemaError::InvalidIndexName {
                    table: table.clone(),
                    name: name.clone(),
                    why,
                })?;
            }
            let what = match kind {
                IndexKind::BTree => "btree index",
                IndexKind::Grid { .. } => "grid index",
            };
            let columns = self.resolve(cols, what)?;
            let name = name.clone().unwrap_or_else(|| format!("{table}_{}_idx", cols.join("_")));
            indexes.push(IndexSchema { name, columns, kind: *kind });
        }
        let auto_inc = self.resolve_auto_inc()?;
        let primary_key = (!self.primary_keys.is_empty()).then_some(0);
        let TableSchemaBuilder { name, columns, access, .. } = self;
        let schema = TableSchema { name, columns, primary_key, unique, indexes, auto_inc, access };
        schema.validate()?;
        Ok(schema)
    }

    fn resolve(&self, names: &[String], what: &str) -> Result<Vec<ColId>, SchemaError> {
        let table = self.name.clone();
        let what = format!("{what} ({})", names.join(", "));
        if names.is_empty() {
            return Err(SchemaError::EmptyColumnList { table, what });
        }
        let mut columns = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(SchemaError::RepeatedColumn { table, what, column: name.clone() });
            }
            let Some(pos) = self.columns.iter().position(|c| &c.name == name) else {
                return Err(SchemaError::UnknownColumn { table, what, column: name.clone() });
            };
            columns.push(ColId(pos as u16));
        }
        Ok(columns)
    }

    /// Resolves auto-inc column names; [`TableSchema::validate`] checks the rest.
    fn resolve_auto_inc(&self) -> Result<Vec<ColId>, SchemaError> {
        let names = self.auto_inc.iter().map(|name| self.resolve(std::slice::from_ref(name), "auto_inc"));
        names.map(|cols| cols.map(|c| c[0])).collect()
    }
}

fn check_columns(table: &str, columns: &[ColumnSchema]) -> Result<(), SchemaError> {
    let table = table.to_string();
    if columns.is_empty() {
        return Err(SchemaError::NoColumns { table });
    }
    if columns.len() > TABLE_COLUMNS_MAX {
        return Err(SchemaError::TooManyColumns { table, count: columns.len() });
    }
    if columns.iter().all(|c| c.ty.fixed_size() == Some(0)) {
        return Err(SchemaError::EmptyRow { table });
    }
    for (i, col) in columns.iter().enumerate() {
        let column = || col.name.clone();
        check_name(&col.name).map_err(|why| SchemaError::InvalidColumnName {
            table: table.clone(),
            column: column(),
            why,
        })?;
        if columns[..i].iter().any(|c| c.name == col.name) {
            return Err(SchemaError::DuplicateColumn { table: table.clone(), column: column() });
        }
        col.ty.validate().map_err(|source| SchemaError::InvalidType {
            table: table.clone(),
            column: column(),
            source,
        })?;
        if let Some(default) = &col.default
            && let Err(e) = crate::encoding::decode_exact(&col.ty, default)
        {
            let why = e.to_string();
            return Err(SchemaError::InvalidDefault { table: table.clone(), column: column(), why });
        }
    }
    Ok(())
}

fn check_unique_names<'a>(table: &str, names: impl Iterator<Item = &'a String>) -> Result<(), SchemaError> {
    let mut seen: Vec<&String> = Vec::new();
    for name in names {
        if seen.contains(&name) {
            return Err(SchemaError::DuplicateIndexName { table: table.into(), name: name.clone() });
        }
        seen.push(name);
    }
    Ok(())
}

/// Names are SQL identifiers: a letter or `_`, then letters, digits or `_`.
fn check_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("it is empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err("it must start with an ASCII letter or `_`");
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("only ASCII letters, digits and `_` are allowed");
    }
    if name.len() > NAME_LEN_MAX {
        return Err("it is longer than 64 bytes");
    }
    Ok(())
}
