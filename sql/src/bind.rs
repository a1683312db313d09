//! Binding: a parsed statement checked against the database's tables, with names
//! resolved to columns and every literal converted to the type of what it is
//! compared with.

use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, LimitClause, ObjectName, OrderByKind, Query, Select,
    SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Spanned, Statement, TableFactor, UnaryOperator,
    Value as SqlValue,
};
use std::borrow::Cow;

use sqlparser::tokenizer::Span;
use tickdb_engine::{Database, TableId};
use tickdb_wasm_abi::{ColId, Identity, TableSchema, Timestamp, Value, ValueType};

use crate::error::{ErrorKind, SqlError};

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }

    pub(crate) fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ordering == Equal,
            CmpOp::Ne => ordering != Equal,
            CmpOp::Lt => ordering == Less,
            CmpOp::Le => ordering != Greater,
            CmpOp::Gt => ordering == Greater,
            CmpOp::Ge => ordering != Less,
        }
    }
}

/// A column of one of the query's tables: the table's place in `FROM`, and the column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ColRef {
    pub table: usize,
    pub col: ColId,
}

/// A bound condition (`WHERE` and `ON`).
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    /// `column op literal`, the literal of the column's type (inner type for options).
    Cmp {
        col: ColRef,
        op: CmpOp,
        value: Value,
    },
    /// `column op column`, both of one type.
    Cols {
        left: ColRef,
        op: CmpOp,
        right: ColRef,
    },
    /// `column [NOT] IN (...)`: the values sorted, without repeats.
    In {
        col: ColRef,
        values: Vec<Value>,
        negated: bool,
    },
    Between {
        col: ColRef,
        low: Value,
        high: Value,
        negated: bool,
    },
    IsNull {
        col: ColRef,
        negated: bool,
    },
    And(Vec<Pred>),
    Or(Vec<Pred>),
    Not(Box<Pred>),
    Const(bool),
}

impl Pred {
    /// The highest table (in `FROM` order) the condition reads: it can be checked once
    /// that table's row is chosen.
    pub(crate) fn last_table(&self) -> usize {
        match self {
            Pred::Cmp { col, .. }
            | Pred::In { col, .. }
            | Pred::Between { col, .. }
            | Pred::IsNull { col, .. } => col.table,
            Pred::Cols { left, right, .. } => left.table.max(right.table),
            Pred::And(parts) | Pred::Or(parts) => parts.iter().map(Pred::last_table).max().unwrap_or(0),
            Pred::Not(inner) => inner.last_table(),
            Pred::Const(_) => 0,
        }
    }
}

/// What a query returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// These columns, under these names.
    Columns(Vec<(String, ColRef)>),
    /// `COUNT(*)`, under this name.
    Count(String),
}

/// A query ready to plan and run.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundQuery {
    /// The tables, in `FROM` order: the first, then each joined one.
    pub tables: Vec<TableId>,
    /// The whole condition: `WHERE` and every `ON`.
    pub filter: Option<Pred>,
    pub output: Output,
    /// Columns to sort by, each descending or not.
    pub order_by: Vec<(ColRef, bool)>,
    pub limit: Option<u64>,
}

impl BoundQuery {
    /// The table (by its place in `FROM`) whose every column, in order and nothing
    /// else, the query returns: what subscriptions and visibility rules return.
    pub(crate) fn whole_rows_of(&self, db: &Database) -> Option<usize> {
        let Output::Columns(columns) = &self.output else { return None };
        let t = columns.first()?.1.table;
        let whole = columns.len() == db.table(self.tables[t]).schema().columns.len()
            && columns.iter().enumerate().all(|(i, (_, c))| c.table == t && c.col.index() == i);
        whole.then_some(t)
    }
}

/// The most tables one query may join.
pub const JOIN_TABLES_MAX: usize = 8;

pub(crate) fn unsupported(what: &str, span: Span) -> SqlError {
    SqlError::at(ErrorKind::Unsupported, format!("{what} is not supported yet"), span)
}

pub(crate) fn bind(db: &Database, statement: &Statement, params: Params<'_>) -> Result<BoundQuery, SqlError> {
    let Statement::Query(query) = statement else {
        return Err(unsupported("this kind of statement (only SELECT)", statement.span()));
    };
    bind_query(db, query, params)
}

fn bind_query(db: &Database, query: &Query, params: Params<'_>) -> Result<BoundQuery, SqlError> {
    if let Some(with) = &query.with {
        return Err(unsupported("WITH", with.span()));
    }
    let SetExpr::Select(select) = &*query.body else {
        return Err(unsupported("this query form (UNION, VALUES…)", query.body.span()));
    };
    let (scope, on) = scope(db, select, params)?;
    let mut conditions = on.into_iter().map(|e| bind_pred(&scope, e)).collect::<Result<Vec<_>, _>>()?;
    if let Some(e) = &select.selection {
        conditions.push(bind_pred(&scope, e)?);
    }
    let filter = match conditions.len() {
        0 => None,
        1 => conditions.pop(),
        _ => Some(Pred::And(conditions)),
    };
    let output = bind_output(&scope, &select.projection)?;
    let mut order_by = Vec::new();
    if let Some(order) = &query.order_by {
        let OrderByKind::Expressions(exprs) = &order.kind else {
            return Err(unsupported("ORDER BY ALL", order.span()));
        };
        for e in exprs {
            order_by.push((column(&scope, &e.expr)?, e.options.asc == Some(false)));
        }
    }
    let limit = match &query.limit_clause {
        None => None,
        Some(LimitClause::LimitOffset { limit, offset: None, limit_by }) if limit_by.is_empty() => {
            match limit {
                None => None,
                Some(Expr::Value(v)) => match &*scope.params.resolve(&v.value, v.span)? {
                    SqlValue::Number(n, _) => Some(n.parse::<u64>().map_err(|_| {
                        SqlError::at(
                            ErrorKind::TypeMismatch,
                            format!("LIMIT needs a whole number, not {n}"),
                            v.span,
                        )
                    })?),
                    _ => return Err(SqlError::at(ErrorKind::TypeMismatch, "LIMIT needs a number", v.span)),
                },
                Some(other) => return Err(unsupported("a LIMIT that is not a number", other.span())),
            }
        }
        Some(other) => return Err(unsupported("OFFSET", other.span())),
    };
    let tables = scope.tables.iter().map(|t| t.id).collect();
    Ok(BoundQuery { tables, filter, output, order_by, limit })
}

/// One table of the query and the names it may be called by.
pub(crate) struct ScopeTable {
    pub(crate) id: TableId,
    pub(crate) schema: std::sync::Arc<TableSchema>,
    names: Vec<String>,
}

/// The tables a query reads, in `FROM` order, and the values its placeholders stand for.
pub(crate) struct Scope<'p> {
    pub(crate) tables: Vec<ScopeTable>,
    pub(crate) params: Params<'p>,
}

/// What a statement's placeholders stand for: `$n` for the n-th literal taken out of a
/// cached query's text, `:sender` for the identity a visibility rule is applied for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Params<'p> {
    pub(crate) literals: &'p [Literal<'p>],
    pub(crate) sender: Option<Identity>,
}

/// A literal taken out of a query's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Literal<'s> {
    Number(&'s str),
    String(std::borrow::Cow<'s, str>),
}

impl Scope<'_> {
    pub(crate) fn new(tables: Vec<ScopeTable>) -> Scope<'static> {
        Scope { tables, params: Params::default() }
    }
}

impl Params<'_> {
    /// The literal a value stands for: itself, or what its placeholder stands for.
    pub(crate) fn resolve<'v>(&self, v: &'v SqlValue, span: Span) -> Result<Cow<'v, SqlValue>, SqlError> {
        let SqlValue::Placeholder(name) = v else { return Ok(Cow::Borrowed(v)) };
        if name == ":sender" {
            return match self.sender {
                Some(identity) => Ok(Cow::Owned(SqlValue::HexStringLiteral(identity.to_string()))),
                None => {
                    let why = ":sender is known only in visibility rules";
                    Err(SqlError::at(ErrorKind::Unsupported, why, span))
                }
            };
        }
        let literal = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| self.literals.get(n.checked_sub(1)?));
        match literal {
            Some(Literal::Number(n)) => Ok(Cow::Owned(SqlValue::Number(n.to_string(), false))),
            Some(Literal::String(s)) => Ok(Cow::Owned(SqlValue::SingleQuotedString(s.to_string()))),
            None => Err(unsupported(&format!("the placeholder {name}"), span)),
        }
    }
}

/// The query's tables, and its `ON` conditions.
fn scope<'s, 'p>(
    db: &Database,
    select: &'s Select,
    params: Params<'p>,
) -> Result<(Scope<'p>, Vec<&'s Expr>), SqlError> {
    if select.distinct.is_some() {
        return Err(unsupported("DISTINCT", select.select_token.0.span));
    }
    if let Some(having) = &select.having {
        return Err(unsupported("HAVING", having.span()));
    }
    let [from] = &select.from[..] else {
        let span = select.from.get(1).map_or(select.span(), |f| f.span());
        return Err(unsupported("a query over several tables without JOIN (comma joins)", span));
    };
    let mut scope = Scope { tables: vec![scope_table(db, &from.relation)?], params };
    let mut on = Vec::new();
    for join in &from.joins {
        let constraint = match &join.join_operator {
            JoinOperator::Join(c) | JoinOperator::Inner(c) => c,
            _ => return Err(unsupported("this kind of join (only inner joins)", join.span())),
        };
        let JoinConstraint::On(condition) = constraint else {
            return Err(unsupported("a join without ON", join.span()));
        };
        if scope.tables.len() == JOIN_TABLES_MAX {
            let why = format!("a query joins at most {JOIN_TABLES_MAX} tables");
            return Err(SqlError::at(ErrorKind::TooLarge, why, join.span()));
        }
        let table = scope_table(db, &join.relation)?;
        if let Some(clash) = table.names.iter().find(|n| scope.tables.iter().any(|t| t.names.contains(n))) {
            let why = format!("`{clash}` names two tables here; give one an alias");
            return Err(SqlError::at(ErrorKind::Unsupported, why, join.relation.span()));
        }
        scope.tables.push(table);
        on.push(condition);
    }
    Ok((scope, on))
}

pub(crate) fn scope_table(db: &Database, factor: &TableFactor) -> Result<ScopeTable, SqlError> {
    let TableFactor::Table { name, alias, .. } = factor else {
        return Err(unsupported("this kind of FROM (subqueries, functions)", factor.span()));
    };
    let table_name = single_name(name)?;
    let id = db.table_id(&table_name).map_err(|_| {
        SqlError::at(ErrorKind::UnknownTable, format!("no table is named `{table_name}`"), name.span())
    })?;
    let mut names = vec![table_name];
    if let Some(alias) = alias {
        names = vec![alias.name.value.clone()];
    }
    Ok(ScopeTable { id, schema: db.table(id).schema().clone(), names })
}

fn single_name(name: &ObjectName) -> Result<String, SqlError> {
    match &name.0[..] {
        [part] => Ok(part.as_ident().map(|i| i.value.clone()).unwrap_or_else(|| part.to_string())),
        _ => Err(unsupported("qualified table names", name.span())),
    }
}

impl Scope<'_> {
    fn ty(&self, c: ColRef) -> &ValueType {
        &self.tables[c.table].schema.columns[c.col.index()].ty
    }

    fn name(&self, c: ColRef) -> &str {
        &self.tables[c.table].schema.columns[c.col.index()].name
    }

    /// The table a qualifier names.
    fn table_named(&self, q: &sqlparser::ast::Ident) -> Result<usize, SqlError> {
        self.tables.iter().position(|t| t.names.contains(&q.value)).ok_or_else(|| {
            SqlError::at(ErrorKind::UnknownTable, format!("no table or alias `{}` here", q.value), q.span)
        })
    }
}

/// The column an expression names: `col`, or `table.col` / `alias.col`.
pub(crate) fn column(scope: &Scope<'_>, expr: &Expr) -> Result<ColRef, SqlError> {
    let (qualifier, ident) = match expr {
        Expr::Identifier(ident) => (None, ident),
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => (Some(&parts[0]), &parts[1]),
        Expr::Nested(inner) => return column(scope, inner),
        other => return Err(unsupported("this expression here (only column names)", other.span())),
    };
    let candidates: Vec<usize> = match qualifier {
        Some(q) => vec![scope.table_named(q)?],
        None => (0..scope.tables.len()).collect(),
    };
    let found: Vec<ColRef> = candidates
        .into_iter()
        .filter_map(|t| scope.tables[t].schema.column(&ident.value).map(|col| ColRef { table: t, col }))
        .collect();
    match found[..] {
        [one] => Ok(one),
        [] => {
            let tables: Vec<&str> = scope.tables.iter().map(|t| t.schema.name.as_str()).collect();
            let why = format!("table `{}` has no column `{}`", tables.join("` or `"), ident.value);
            Err(SqlError::at(ErrorKind::UnknownColumn, why, ident.span))
        }
        _ => {
            let why = format!("column `{}` is in more than one table; qualify it", ident.value);
            Err(SqlError::at(ErrorKind::UnknownColumn, why, ident.span))
        }
    }
}

fn all_columns<'s>(scope: &'s Scope<'_>, table: usize) -> impl Iterator<Item = (String, ColRef)> + 's {
    let schema = &scope.tables[table].schema;
    schema
        .columns
        .iter()
        .enumerate()
        .map(move |(i, c)| (c.name.clone(), ColRef { table, col: ColId(i as u16) }))
}

fn bind_output(scope: &Scope<'_>, items: &[SelectItem]) -> Result<Output, SqlError> {
    if let [item] = items {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (Some(e), None),
            SelectItem::ExprWithAlias { expr, alias } => (Some(expr), Some(alias.value.clone())),
            _ => (None, None),
        };
        if let Some(Expr::Function(f)) = expr {
            if f.to_string().eq_ignore_ascii_case("COUNT(*)") {
                return Ok(Output::Count(alias.unwrap_or_else(|| "count".into())));
            }
            return Err(unsupported(&format!("the function `{}`", f.name), f.span()));
        }
    }
    let mut columns = Vec::new();
    for item in items {
        match item {
            SelectItem::Wildcard(_) => {
                (0..scope.tables.len()).for_each(|t| columns.extend(all_columns(scope, t)))
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                let [part] = &name.0[..] else {
                    return Err(unsupported("qualified table names", name.span()));
                };
                let ident =
                    part.as_ident().cloned().unwrap_or_else(|| sqlparser::ast::Ident::new(part.to_string()));
                columns.extend(all_columns(scope, scope.table_named(&ident)?));
            }
            SelectItem::QualifiedWildcard(_, _) => return Err(unsupported("this wildcard", item.span())),
            SelectItem::UnnamedExpr(e) => {
                let col = column(scope, e)?;
                columns.push((scope.name(col).to_string(), col));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                columns.push((alias.value.clone(), column(scope, expr)?))
            }
        }
    }
    Ok(Output::Columns(columns))
}

fn cmp_op(op: &BinaryOperator) -> Option<CmpOp> {
    Some(match op {
        BinaryOperator::Eq => CmpOp::Eq,
        BinaryOperator::NotEq => CmpOp::Ne,
        BinaryOperator::Lt => CmpOp::Lt,
        BinaryOperator::LtEq => CmpOp::Le,
        BinaryOperator::Gt => CmpOp::Gt,
        BinaryOperator::GtEq => CmpOp::Ge,
        _ => return None,
    })
}

fn is_column(e: &Expr) -> bool {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) => is_column(inner),
        _ => false,
    }
}

pub(crate) fn bind_pred(scope: &Scope<'_>, expr: &Expr) -> Result<Pred, SqlError> {
    let pred = |e: &Expr| bind_pred(scope, e);
    let col = |e: &Expr| column(scope, e);
    let lit = |c: ColRef, e: &Expr| literal(scope.ty(c), scope.name(c), e, &scope.params);
    Ok(match expr {
        Expr::Nested(inner) => pred(inner)?,
        Expr::BinaryOp { op: op @ (BinaryOperator::And | BinaryOperator::Or), .. } => {
            // Chains of one operator are flattened without recursion: a long `OR` list
            // is one level, not thousands.
            let parts = chain(expr, op).into_iter().map(pred).collect::<Result<Vec<_>, _>>()?;
            if *op == BinaryOperator::And { Pred::And(parts) } else { Pred::Or(parts) }
        }
        Expr::UnaryOp { op: UnaryOperator::Not, expr } => Pred::Not(Box::new(pred(expr)?)),
        Expr::BinaryOp { left, op, right } => {
            let Some(op) = cmp_op(op) else {
                return Err(unsupported(&format!("the operator `{op}`"), expr.span()));
            };
            match (is_column(left), is_column(right)) {
                (true, true) => {
                    let (l, r) = (col(left)?, col(right)?);
                    // An option compares by its value; integers of any width with one
                    // another, and floats of either width.
                    let kind = |ty: &ValueType| match ty {
                        ValueType::Option(inner) => inner.as_ref().clone(),
                        ty if ty.is_integer() => ValueType::I128,
                        ValueType::F32 => ValueType::F64,
                        ty => ty.clone(),
                    };
                    let kind = |ty: &ValueType| kind(&kind(ty));
                    let (lt, rt) = (scope.ty(l), scope.ty(r));
                    if kind(lt) != kind(rt) {
                        let why = format!("cannot compare a {lt} with a {rt}");
                        return Err(SqlError::at(ErrorKind::TypeMismatch, why, expr.span()));
                    }
                    Pred::Cols { left: l, op, right: r }
                }
                (true, false) => {
                    let c = col(left)?;
                    Pred::Cmp { col: c, op, value: lit(c, right)? }
                }
                (false, true) => {
                    let c = col(right)?;
                    Pred::Cmp { col: c, op: op.flipped(), value: lit(c, left)? }
                }
                (false, false) => return Err(unsupported("a comparison without a column", expr.span())),
            }
        }
        Expr::Between { expr: e, negated, low, high } => {
            let c = col(e)?;
            Pred::Between { col: c, low: lit(c, low)?, high: lit(c, high)?, negated: *negated }
        }
        Expr::InList { expr: e, list, negated } => {
            let c = col(e)?;
            let mut values: Vec<Value> = list.iter().map(|v| lit(c, v)).collect::<Result<_, _>>()?;
            // Sorted, so that a long list is searched, not walked, for each row.
            values.sort();
            values.dedup();
            Pred::In { col: c, values, negated: *negated }
        }
        Expr::IsNull(e) => Pred::IsNull { col: nullable(scope, col(e)?, e)?, negated: false },
        Expr::IsNotNull(e) => Pred::IsNull { col: nullable(scope, col(e)?, e)?, negated: true },
        Expr::Value(v) => match v.value {
            SqlValue::Boolean(b) => Pred::Const(b),
            _ => {
                return Err(SqlError::at(
                    ErrorKind::TypeMismatch,
                    "a condition must be true or false",
                    v.span,
                ));
            }
        },
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
            let c = col(expr)?;
            if *scope.ty(c) != ValueType::Bool {
                let why = format!("column `{}` is not a bool, so it cannot be a condition", scope.name(c));
                return Err(SqlError::at(ErrorKind::TypeMismatch, why, expr.span()));
            }
            Pred::Cmp { col: c, op: CmpOp::Eq, value: Value::Bool(true) }
        }
        other => return Err(unsupported("this expression in WHERE", other.span())),
    })
}

/// The operands of a chain of `op` (`a OR b OR c`), left to right, found with a stack.
fn chain<'e>(expr: &'e Expr, op: &BinaryOperator) -> Vec<&'e Expr> {
    let mut operands = Vec::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        match e {
            Expr::BinaryOp { left, op: o, right } if o == op => {
                stack.push(right);
                stack.push(left);
            }
            other => operands.push(other),
        }
    }
    operands
}

fn nullable(scope: &Scope<'_>, col: ColRef, e: &Expr) -> Result<ColRef, SqlError> {
    match scope.ty(col) {
        ValueType::Option(_) => Ok(col),
        ty => {
            let why = format!("column `{}` is a {ty}, which is never NULL", scope.name(col));
            Err(SqlError::at(ErrorKind::TypeMismatch, why, e.span()))
        }
    }
}

/// A literal as a value of column type `ty` (the inner type, for an option).
pub(crate) fn literal(
    ty: &ValueType,
    column: &str,
    e: &Expr,
    params: &Params<'_>,
) -> Result<Value, SqlError> {
    let mismatch = |what: &str| {
        let why = format!("column `{column}` is a {ty}; {what} cannot be compared with it");
        SqlError::at(ErrorKind::TypeMismatch, why, e.span())
    };
    let (negative, inner) = match e {
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => (true, &**expr),
        Expr::Nested(inner) => return literal(ty, column, inner, params),
        _ => (false, e),
    };
    let Expr::Value(v) = inner else {
        return Err(unsupported("this expression here (only literals)", e.span()));
    };
    let ty = match ty {
        ValueType::Option(inner) => &**inner,
        ty => ty,
    };
    let number = |text: &str| if negative { format!("-{text}") } else { text.to_string() };
    let out_of_range =
        |text: &str| mismatch(&format!("{} (out of range or not a whole number)", number(text)));
    if matches!(&v.value, SqlValue::Placeholder(p) if p == ":sender") && *ty != ValueType::Identity {
        return Err(mismatch("`:sender` (an identity)"));
    }
    let value = params.resolve(&v.value, v.span)?;
    Ok(match (&*value, ty) {
        (SqlValue::Null, _) => {
            let why = format!("comparing `{column}` with NULL is never true; use IS NULL");
            return Err(SqlError::at(ErrorKind::TypeMismatch, why, v.span));
        }
        (SqlValue::Number(n, _), ValueType::U8) => Value::U8(number(n).parse().map_err(|_| out_of_range(n))?),
        (SqlValue::Number(n, _), ValueType::U16) => {
            Value::U16(number(n).parse().map_err(|_| out_of_range(n))?)
        }
        (SqlValue::Number(n, _), ValueType::U32) => {
            Value::U32(number(n).parse().map_err(|_| out_of_range(n))?)
        }
        (SqlValue::Number(n, _), ValueType::U64) => {
            Value::U64(number(n).parse().map_err(|_| out_of_range(n))?)
        }
        (SqlValue::Number(n, _), ValueType::U128) => {
            Value::U128(number(n).parse().map_err(|_| out_of_range(n))?)
        }
        (SqlValue::Number(n, _), ValueType::I8) => Value::I8(number(n).parse().map_err(|_| out_of_range(n))?),
        (SqlValue::Number(n, _), ValueType::I16) => {
            Value::I16(number(n).parse().map_err(|_| out_of_range(n))?)
        }
        (SqlValue::Number(n, _), ValueType::I32) => {
            Value::I32(number(n).parse().map_err(|_| out_of_range(n))?)
        }
        (SqlValue::Number(n, _), ValueType::I64) => {
            Value::I64(number(n).parse().map_err(|_| out_of_range(n))?)
        }
        (SqlValue::Number(n, _), ValueType::I128) => {
            Value::I128(number(n).parse().map_err(|_| out_of_range(n))?)
        }
        (SqlValue::Number(n, _), ValueType::F32) => {
            Value::F32(number(n).parse().map_err(|_| out_of_range(n))?)
        }
        (SqlValue::Number(n, _), ValueType::F64) => {
            Value::F64(number(n).parse().map_err(|_| out_of_range(n))?)
        }
        (SqlValue::Number(n, _), ValueType::Timestamp) => {
            Value::Timestamp(Timestamp::from_micros(number(n).parse().map_err(|_| out_of_range(n))?))
        }
        (SqlValue::Boolean(b), ValueType::Bool) if !negative => Value::Bool(*b),
        (SqlValue::SingleQuotedString(s), ValueType::String) if !negative => Value::String(s.as_str().into()),
        (SqlValue::SingleQuotedString(s) | SqlValue::HexStringLiteral(s), ValueType::Identity)
            if !negative =>
        {
            Value::Identity(Identity(
                hex32(s).ok_or_else(|| mismatch(&format!("'{s}' (not 64 hex digits)")))?,
            ))
        }
        (SqlValue::Number(n, _), _) => return Err(mismatch(&format!("the number {}", number(n)))),
        (SqlValue::SingleQuotedString(s), _) => return Err(mismatch(&format!("the string '{s}'"))),
        (SqlValue::Boolean(b), _) => return Err(mismatch(&format!("{b}"))),
        (other, _) => return Err(unsupported(&format!("the literal {other}"), v.span)),
    })
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
