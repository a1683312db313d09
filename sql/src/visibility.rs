//! Who may read what. Private tables are readable by the database's owner alone.
//! Row-level rules restrict the rows of a table each client sees: a rule is a query
//! returning rows of one table, which may name the reading client as `:sender`:
//!
//! ```sql
//! SELECT * FROM inventory WHERE owner = :sender
//! SELECT item.* FROM item JOIN player ON item.holder = player.id WHERE player.identity = :sender
//! ```
//!
//! A client sees the rows of a table that meet at least one of its rules; a table
//! without rules shows every row. The owner sees everything. Rules apply wherever a
//! table is read, in one-off queries and subscriptions, joined or not: each query is
//! rewritten for its reader, its tables' rules joined and their conditions added.
//!
//! A rule that joins other tables must reach each of them through a unique column, so
//! that it filters rows without repeating them, and must be its table's only rule.
//! Rules are applied to the query, not to one another: the tables a rule joins are
//! read whole.

use std::collections::HashMap;

use sqlparser::ast::Statement;
use tickdb_engine::{Database, TableId};
use tickdb_wasm_abi::{Identity, TableAccess};

use crate::bind::{self, BoundQuery, ColRef, Params, Pred};
use crate::error::{ErrorKind, SqlError};
use crate::plan::conjuncts;

/// Who reads: a client's identity, and whether it owns the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    pub identity: Identity,
    pub owner: bool,
}

impl Reader {
    pub fn owner(identity: Identity) -> Reader {
        Reader { identity, owner: true }
    }

    pub fn client(identity: Identity) -> Reader {
        Reader { identity, owner: false }
    }
}

/// A database's row-level rules, by table.
#[derive(Debug, Default)]
pub struct Visibility {
    rules: HashMap<TableId, Vec<Rule>>,
}

#[derive(Debug)]
struct Rule {
    sql: String,
    statement: Statement,
    /// Whether it reads its table alone.
    single: bool,
}

impl Visibility {
    /// Checks and keeps `rules`, each `SELECT t.* FROM t [JOIN ...] WHERE ...`.
    pub fn new(db: &Database, rules: &[impl AsRef<str>]) -> Result<Visibility, SqlError> {
        let mut visibility = Visibility::default();
        for sql in rules {
            let sql = sql.as_ref();
            let context =
                |e: SqlError| SqlError { message: format!("visibility rule `{sql}`: {}", e.message), ..e };
            let statement = crate::parse_one(sql).map_err(context)?;
            // Bound for some identity, to check it; each reader binds it again.
            let bound = bind::bind(db, &statement, Params { literals: &[], sender: Some(Identity([0; 32])) })
                .map_err(context)?;
            let (table, single) = check_rule(db, &bound).map_err(context)?;
            let rules = visibility.rules.entry(table).or_default();
            rules.push(Rule { sql: sql.to_string(), statement, single });
            if rules.len() > 1 && rules.iter().any(|r| !r.single) {
                let name = &db.table(table).schema().name;
                let why = format!(
                    "visibility rule `{sql}`: table `{name}` has a rule that joins other tables, which \
                     must be its only rule"
                );
                return Err(SqlError::new(ErrorKind::Unsupported, why, None));
            }
        }
        Ok(visibility)
    }

    /// The rules' text, for each table that has rules.
    pub fn rules(&self, table: TableId) -> impl Iterator<Item = &str> + '_ {
        self.rules.get(&table).into_iter().flatten().map(|r| r.sql.as_str())
    }

    /// `query` as `reader` may run it: refused if it reads a private table the reader
    /// does not own, and restricted by the rules of each table it reads.
    pub fn restrict(
        &self,
        db: &Database,
        reader: Reader,
        mut query: BoundQuery,
    ) -> Result<BoundQuery, SqlError> {
        if reader.owner {
            return Ok(query);
        }
        for &table in &query.tables {
            let schema = db.table(table).schema();
            if schema.access == TableAccess::Private {
                let why =
                    format!("table `{}` is private: only the database's owner may read it", schema.name);
                return Err(SqlError::new(ErrorKind::Forbidden, why, None));
            }
        }
        let params = Params { literals: &[], sender: Some(reader.identity) };
        for k in 0..query.tables.len() {
            let Some(rules) = self.rules.get(&query.tables[k]) else { continue };
            let mut alternatives = Vec::with_capacity(rules.len());
            for rule in rules {
                let bound = bind::bind(db, &rule.statement, params)?;
                let result = bound.whole_rows_of(db).expect("checked when the rule was added");
                // The rule's tables join the query's: its own table is the query's `k`,
                // the others come after the query's.
                let base = query.tables.len();
                let mut others = 0;
                let mut place = Vec::with_capacity(bound.tables.len());
                for j in 0..bound.tables.len() {
                    if j == result {
                        place.push(k);
                    } else {
                        place.push(base + others);
                        others += 1;
                    }
                }
                query
                    .tables
                    .extend(bound.tables.iter().enumerate().filter(|(j, _)| *j != result).map(|(_, t)| t));
                alternatives.push(bound.filter.map(|f| remap(&f, &place)).unwrap_or(Pred::Const(true)));
            }
            let rule = if alternatives.len() == 1 {
                alternatives.pop().expect("one")
            } else {
                Pred::Or(alternatives)
            };
            query.filter = Some(match query.filter.take() {
                None => rule,
                Some(Pred::And(mut parts)) => {
                    parts.push(rule);
                    Pred::And(parts)
                }
                Some(other) => Pred::And(vec![other, rule]),
            });
        }
        if query.tables.len() > TABLES_WITH_RULES_MAX {
            let why = format!(
                "with its visibility rules the query reads {} tables; at most {TABLES_WITH_RULES_MAX} are read at once",
                query.tables.len()
            );
            return Err(SqlError::new(ErrorKind::TooLarge, why, None));
        }
        Ok(query)
    }
}

/// The most tables a query may read once its tables' rules are joined.
pub const TABLES_WITH_RULES_MAX: usize = 32;

/// The table a rule restricts, and whether it reads that table alone.
fn check_rule(db: &Database, bound: &BoundQuery) -> Result<(TableId, bool), SqlError> {
    let unsupported = |why: String| SqlError::new(ErrorKind::Unsupported, why, None);
    let result = bound
        .whole_rows_of(db)
        .ok_or_else(|| unsupported("a rule returns whole rows of one table (SELECT t.* ...)".into()))?;
    if bound.limit.is_some() || !bound.order_by.is_empty() {
        return Err(unsupported("a rule has no ORDER BY or LIMIT".into()));
    }
    // Every other table is reached through a unique column equal to a column of a
    // table reached before it, so each row of the rule's table meets at most one
    // combination of the others.
    let conditions = bound.filter.as_ref().map(conjuncts).unwrap_or_default();
    let mut reached = vec![false; bound.tables.len()];
    reached[result] = true;
    while let Some(next) = conditions.iter().find_map(|c| match c {
        Pred::Cols { left, op: bind::CmpOp::Eq, right } => [(*left, *right), (*right, *left)]
            .into_iter()
            .find(|(to, from)| !reached[to.table] && reached[from.table] && unique(db, bound, *to)),
        _ => None,
    }) {
        reached[next.0.table] = true;
    }
    if let Some(t) = reached.iter().position(|r| !r) {
        let name = &db.table(bound.tables[t]).schema().name;
        let why = format!(
            "a rule joins `{name}` on a column that is not unique, so it could repeat rows; join it \
             through a unique column (a primary key or #[unique])"
        );
        return Err(unsupported(why));
    }
    Ok((bound.tables[result], bound.tables.len() == 1))
}

fn unique(db: &Database, bound: &BoundQuery, c: ColRef) -> bool {
    db.table(bound.tables[c.table]).schema().unique.iter().any(|u| u.columns[..] == [c.col])
}

/// A condition with its tables moved: table `j` becomes `place[j]`.
fn remap(pred: &Pred, place: &[usize]) -> Pred {
    let at = |c: &ColRef| ColRef { table: place[c.table], col: c.col };
    match pred {
        Pred::Cmp { col, op, value } => Pred::Cmp { col: at(col), op: *op, value: value.clone() },
        Pred::Cols { left, op, right } => Pred::Cols { left: at(left), op: *op, right: at(right) },
        Pred::In { col, values, negated } => {
            Pred::In { col: at(col), values: values.clone(), negated: *negated }
        }
        Pred::Between { col, low, high, negated } => {
            Pred::Between { col: at(col), low: low.clone(), high: high.clone(), negated: *negated }
        }
        Pred::IsNull { col, negated } => Pred::IsNull { col: at(col), negated: *negated },
        Pred::And(parts) => Pred::And(parts.iter().map(|p| remap(p, place)).collect()),
        Pred::Or(parts) => Pred::Or(parts.iter().map(|p| remap(p, place)).collect()),
        Pred::Not(inner) => Pred::Not(Box::new(remap(inner, place))),
        Pred::Const(b) => Pred::Const(*b),
    }
}
