//! A bank ledger: accounts and transfers between them. It is the saturation workload
//! of `tickdb loadtest --scenario bank`: many small transactions, each reading and
//! writing two rows by primary key, some accounts far hotter than others.
//!
//! `init` opens [`ACCOUNTS`] accounts of [`OPENING_BALANCE`] each. A transfer moves
//! money only when the payer has it, so the total never changes. Balances are private:
//! only the database's owner reads them (with `tickdb sql`).

use tickdb::{ReducerContext, Table, reducer, table};

/// Accounts opened by `init`, numbered from 0.
pub const ACCOUNTS: u64 = 10_000;
/// Each account's balance when opened.
pub const OPENING_BALANCE: i64 = 1_000_000;
/// The largest single transfer.
pub const TRANSFER_MAX: i64 = 1_000_000;

#[table(accessor = account)]
#[derive(Debug, Clone)]
pub struct Account {
    #[primary_key]
    id: u64,
    balance: i64,
    /// Transfers in and out, for auditing.
    transfers: u64,
}

#[reducer(init)]
pub fn init(ctx: &ReducerContext) {
    for id in 0..ACCOUNTS {
        ctx.db.account().insert(Account { id, balance: OPENING_BALANCE, transfers: 0 });
    }
}

/// Moves `amount` from account `from` to account `to`; fails, changing nothing, when
/// an account does not exist or `from` has less than `amount`.
#[reducer]
pub fn transfer(ctx: &ReducerContext, from: u64, to: u64, amount: i64) -> Result<(), String> {
    if from == to {
        return Err("an account cannot pay itself".into());
    }
    if !(1..=TRANSFER_MAX).contains(&amount) {
        return Err(format!("an amount is from 1 to {TRANSFER_MAX}"));
    }
    let payer = ctx.db.account().id().find(from).ok_or_else(|| format!("no account {from}"))?;
    let payee = ctx.db.account().id().find(to).ok_or_else(|| format!("no account {to}"))?;
    if payer.balance < amount {
        return Err(format!("account {from} holds {}, less than {amount}", payer.balance));
    }
    let transfers = |a: &Account| a.transfers + 1;
    ctx.db.account().id().update(Account {
        balance: payer.balance - amount,
        transfers: transfers(&payer),
        ..payer
    });
    ctx.db.account().id().update(Account {
        balance: payee.balance + amount,
        transfers: transfers(&payee),
        ..payee
    });
    Ok(())
}
