//! The one place the host lends a transaction to host functions for the length of a
//! call into the module.
//!
//! Wasmtime keeps a store's data for the store's whole life (`T: 'static`), but a
//! [`Tx`] borrows the database for one transaction. [`with_tx`] puts a pointer to the
//! transaction in the store for exactly the duration of one guest call, on the calling
//! thread, and takes it out again before returning, even if the call panics; host
//! functions reach it only through [`TxSlot::get`] while the call runs.
#![allow(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr::NonNull;

use wasmtime::Store;

use super::imports::HostState;
use crate::db::Tx;

/// The transaction lent to the running call, if one is running.
#[derive(Debug, Default)]
pub(crate) struct TxSlot(Option<NonNull<Tx<'static>>>);

// SAFETY: the slot holds a pointer only while `with_tx` runs a guest call on the thread
// that owns the transaction; it is empty whenever the store could move to another thread.
unsafe impl Send for TxSlot {}

impl TxSlot {
    /// The transaction of the running call; `None` outside `with_tx`.
    pub(crate) fn get(&mut self) -> Option<&mut Tx<'_>> {
        // SAFETY: a pointer is present only inside `with_tx`, whose caller holds the
        // transaction's unique borrow for the whole guest call; host functions run on
        // that thread during the call, one at a time, and the returned borrow cannot
        // outlive `&mut self`, so no two live `&mut Tx` ever exist.
        self.0.map(|tx| unsafe { &mut *tx.as_ptr().cast::<Tx<'_>>() })
    }
}

/// Runs `call` with `tx` lent to the store's host functions.
pub(crate) fn with_tx<R>(
    store: &mut Store<HostState>,
    tx: &mut Tx<'_>,
    call: impl FnOnce(&mut Store<HostState>) -> R,
) -> R {
    store.data_mut().tx.0 = Some(NonNull::from(tx).cast());
    let result = catch_unwind(AssertUnwindSafe(|| call(&mut *store)));
    store.data_mut().tx.0 = None;
    result.unwrap_or_else(|panic| resume_unwind(panic))
}
