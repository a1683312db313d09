//! `INSERT`, `UPDATE` and `DELETE`, for the database's owner, run as one transaction in
//! the tick loop and logged like any other ([`dml_work`]).

use sqlparser::ast::{
    AssignmentTarget, Expr, FromTable, SetExpr, Spanned, Statement, TableObject, Value as SqlValue,
};
use tickdb_engine::{ModuleWork, ReplyTo, RowId, TableId, Tx};
use tickdb_wasm_abi::{ColId, ConnectionId, Identity, TableSchema, Value, ValueType};

use crate::bind::{Params, Pred, Scope, bind_pred, column, literal, scope_table, unsupported};
use crate::error::{ErrorKind, SqlError};
use crate::exec::{QueryLimits, matching_rows};

/// Runs one `INSERT`, `UPDATE` or `DELETE` in `tx`; returns the rows it changed.
pub fn execute(tx: &mut Tx<'_>, sql: &str, limits: &QueryLimits) -> Result<u64, SqlError> {
    let statement = crate::parse_one(sql)?;
    match &statement {
        Statement::Insert(insert) => {
            let TableObject::TableName(name) = &insert.table else {
                return Err(unsupported("inserting into a table function", insert.table.span()));
            };
            let factor = sqlparser::ast::TableFactor::Table {
                name: name.clone(),
                alias: None,
                args: None,
                with_hints: Vec::new(),
                version: None,
                with_ordinality: false,
                partitions: Vec::new(),
                json_path: None,
                sample: None,
                index_hints: Vec::new(),
            };
            let table = scope_table(tx.db(), &factor)?;
            let Some(source) = &insert.source else {
                return Err(unsupported("INSERT without VALUES", insert.span()));
            };
            let SetExpr::Values(values) = &*source.body else {
                return Err(unsupported("INSERT from a query", source.span()));
            };
            let schema = table.schema.clone();
            let columns: Vec<ColId> = if insert.columns.is_empty() {
                (0..schema.columns.len()).map(|c| ColId(c as u16)).collect()
            } else {
                let scope = Scope::new(vec![table]);
                let named = insert.columns.iter().map(|c| column(&scope, &Expr::Identifier(c.clone())));
                named.map(|c| c.map(|c| c.col)).collect::<Result<_, _>>()?
            };
            let mut rows = Vec::with_capacity(values.rows.len());
            for row in &values.rows {
                rows.push(insert_row(&schema, &columns, row, insert.span())?);
            }
            let id = tx.db().table_id(&schema.name).expect("bound above");
            for row in &rows {
                tx.insert_values(id, row).map_err(engine_error)?;
            }
            Ok(rows.len() as u64)
        }
        Statement::Update {
            table,
            assignments,
            from: None,
            selection,
            returning: None,
            or: None,
            limit: None,
        } => {
            if !table.joins.is_empty() {
                return Err(unsupported("UPDATE with joins", table.span()));
            }
            let scope = Scope::new(vec![scope_table(tx.db(), &table.relation)?]);
            let schema = scope.tables[0].schema.clone();
            let mut sets = Vec::new();
            for a in assignments {
                let AssignmentTarget::ColumnName(name) = &a.target else {
                    return Err(unsupported("assigning a tuple", a.target.span()));
                };
                let mut parts: Vec<_> = name.0.iter().filter_map(|p| p.as_ident().cloned()).collect();
                let target = match parts.len() {
                    1 => Expr::Identifier(parts.remove(0)),
                    _ => Expr::CompoundIdentifier(parts),
                };
                let col = column(&scope, &target)?;
                let column = &schema.columns[col.col.index()];
                sets.push((col.col, value_for(&column.ty, &column.name, &a.value)?));
            }
            let filter = selection.as_ref().map(|e| bind_pred(&scope, e)).transpose()?;
            let id = scope.tables[0].id;
            let rows = matching(tx, id, filter.as_ref(), limits)?;
            let updated: Vec<(RowId, Vec<Value>)> = rows
                .into_iter()
                .filter_map(|row| {
                    let mut values = tx.table(id).get(row)?.to_values();
                    sets.iter().for_each(|(c, v)| values[c.index()] = v.clone());
                    Some((row, values))
                })
                .collect();
            for (row, values) in &updated {
                tx.update_values(id, *row, values).map_err(engine_error)?;
            }
            Ok(updated.len() as u64)
        }
        Statement::Delete(delete) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
            let [from] = &from[..] else {
                return Err(unsupported("DELETE from several tables", delete.span()));
            };
            if delete.using.is_some()
                || delete.returning.is_some()
                || delete.limit.is_some()
                || !from.joins.is_empty()
            {
                return Err(unsupported("this form of DELETE", delete.span()));
            }
            let scope = Scope::new(vec![scope_table(tx.db(), &from.relation)?]);
            let filter = delete.selection.as_ref().map(|e| bind_pred(&scope, e)).transpose()?;
            let id = scope.tables[0].id;
            let rows = matching(tx, id, filter.as_ref(), limits)?;
            for &row in &rows {
                tx.delete(id, row).map_err(engine_error)?;
            }
            Ok(rows.len() as u64)
        }
        other => {
            Err(unsupported("this statement (only INSERT, UPDATE and DELETE change data)", other.span()))
        }
    }
}

fn matching(
    tx: &Tx<'_>,
    table: TableId,
    filter: Option<&Pred>,
    limits: &QueryLimits,
) -> Result<Vec<RowId>, SqlError> {
    matching_rows(tx.db(), table, filter, limits)
}

fn engine_error(e: tickdb_engine::Error) -> SqlError {
    SqlError::new(ErrorKind::TypeMismatch, e.to_string(), None)
}

/// A literal as a whole value of column type `ty`: options take `NULL` or a value.
fn value_for(ty: &ValueType, name: &str, e: &Expr) -> Result<Value, SqlError> {
    match (ty, e) {
        (ValueType::Option(_), Expr::Value(v)) if v.value == SqlValue::Null => Ok(Value::Option(None)),
        (ValueType::Option(_), _) => {
            Ok(Value::Option(Some(Box::new(literal(ty, name, e, &Params::default())?))))
        }
        _ => literal(ty, name, e, &Params::default()),
    }
}

fn insert_row(
    schema: &TableSchema,
    columns: &[ColId],
    exprs: &[Expr],
    span: sqlparser::tokenizer::Span,
) -> Result<Vec<Value>, SqlError> {
    if exprs.len() != columns.len() {
        let why = format!("{} values for {} columns", exprs.len(), columns.len());
        return Err(SqlError::at(ErrorKind::TypeMismatch, why, span));
    }
    let mut row: Vec<Option<Value>> = vec![None; schema.columns.len()];
    for (col, e) in columns.iter().zip(exprs) {
        let column = &schema.columns[col.index()];
        row[col.index()] = Some(value_for(&column.ty, &column.name, e)?);
    }
    row.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Some(v) => Ok(v),
            // An auto-inc column left out takes its sequence's next value, an option NULL.
            None if schema.auto_inc.contains(&ColId(i as u16)) => Ok(zero(&schema.columns[i].ty)),
            None if matches!(schema.columns[i].ty, ValueType::Option(_)) => Ok(Value::Option(None)),
            None => {
                let why = format!("column `{}` has no value and no default", schema.columns[i].name);
                Err(SqlError::at(ErrorKind::TypeMismatch, why, span))
            }
        })
        .collect()
}

fn zero(ty: &ValueType) -> Value {
    match ty {
        ValueType::U8 => Value::U8(0),
        ValueType::U16 => Value::U16(0),
        ValueType::U32 => Value::U32(0),
        ValueType::U64 => Value::U64(0),
        ValueType::U128 => Value::U128(0),
        ValueType::I8 => Value::I8(0),
        ValueType::I16 => Value::I16(0),
        ValueType::I32 => Value::I32(0),
        ValueType::I64 => Value::I64(0),
        _ => Value::I128(0),
    }
}

/// A DML statement as a unit of work for the database's tick loop: run as one
/// transaction, logged as a call of `sql` with the statement's text, and refused
/// unless `caller` is the database's `owner`. The reply's value is the number of rows
/// changed (`u64`).
pub fn dml_work(
    owner: Identity,
    caller: Identity,
    connection: ConnectionId,
    sql: String,
    limits: QueryLimits,
    reply: Option<ReplyTo>,
) -> ModuleWork {
    let args = sql.as_bytes().to_vec();
    let run = Box::new(move |tx: &mut Tx<'_>| {
        if caller != owner {
            return Err("only the database's owner may change its data through SQL".to_string());
        }
        execute(tx, &sql, &limits).map(|n| n.to_le_bytes().to_vec()).map_err(|e| e.to_string())
    });
    ModuleWork::native("sql", caller, connection, args, run, reply)
}
