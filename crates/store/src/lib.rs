//! The store: the worker registry, the work-order queue with leases, results and receipts; the
//! only thing the listener and the worker roles share.
//!
//! [`Store`] is the interface every role uses, with typed records and typed look-ups;
//! [`RedbStore`] is the embedded backend (one process, one file), and `afallon-store-postgres`
//! the shared one. What stays the same across backends lives here: the records, the retention
//! rule ([`retention`]), the wake-ups ([`Wakeups`]), and the behaviour every backend must show,
//! as a suite of tests any backend runs ([`conformance`], with the `conformance` feature).
//!
//! Guarantees every backend gives:
//! - [`Store::submit`] inserts a work order only if its worker exists and its id is new (a
//!   replay is refused atomically) and enqueues it for its worker; when it returns, the order is
//!   durable.
//! - [`Store::submit_volatile`] enqueues an order that a backend may write only with its
//!   response (or on [`Store::persist`]): for synchronous submissions, whose only
//!   acknowledgement is the result. A backend without such a fast path writes it at once.
//! - [`Store::claim`] hands the oldest queued order of a worker to one holder under a lease, which
//!   the holder extends while it works ([`Store::renew`]); an order whose lease expires goes back
//!   to the head of the queue ([`Store::requeue_expired`]).
//! - A worker has a shared queue and one queue per tenant ([`Store::put_tenant`]): a requester
//!   that is a tenant of the worker has its orders, submitted from then on, queued apart, and
//!   only claims for that tenant take them; claims for the shared queue never do.
//! - [`Store::complete`] stores a result once, and only from the holder of the order's lease:
//!   the first completion wins, and a holder that lost its lease (expired and queued again, or
//!   claimed by another) cannot complete the order.
//! - At most `max_orders` orders are kept: a submission beyond that purges the oldest finished
//!   order, or is refused as busy when every stored order is still unfinished ([`retention`]).
//! - A work-order id is accepted once, ever: a purged order leaves a compact record of its id
//!   behind, written in the transaction that purges it, so that a captured request replayed
//!   after the purge is refused as a duplicate and the order reads as [`OrderStatus::Purged`].
//! - A receipt of a finished order without its worker's update is listed by
//!   [`Store::receipts_awaiting_update`] until the worker adds it: nothing is lost if a worker
//!   dies between the two.
//! - Every change a role waits for is announced on [`Store::wakeups`] once committed, so that
//!   nobody polls.
//! - A write whose commit fails changes nothing and its caller gets [`StoreError::NotStored`];
//!   while the store cannot write it reports [`StoreHealth::Failing`] and answers writes with
//!   [`StoreError::Unavailable`]; [`StoreHealth::Lost`] means what was answered may differ from
//!   what is stored, and only a restart brings them together again.
//!
//! Lease time comes in as an argument (milliseconds), so backends read no wall clock for leases.
//!
//! # Cancel safety
//!
//! Every write hands itself to the backend when first polled: dropping the future after that
//! does not undo or stop the write, only the caller's learning of its outcome (which a read can
//! tell). Reads are cancel safe.

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod records;
mod redb_store;
pub mod retention;
mod wakeups;

use std::future::Future;
use std::sync::Arc;

pub use records::{
    Claimed, Completion, LookUp, NewOrder, OrderCounts, OrderResult, OrderStatus, ReceiptCreation,
    ReceiptFilter, SealedBlob, StoredReceipt, SubmitOutcome, WorkerFilter, current_status,
    unix_millis,
};
pub use redb_store::{RedbStore, RedbStoreOptions};
pub use wakeups::{Wakeup, WakeupSender, Wakeups};

pub use afallon_proto::{ReceiptCreate, ReceiptUpdate, WorkerRecord};

/// The longest tenant (requester) id [`Store::put_tenant`] takes, in bytes.
pub const MAX_TENANT_BYTES: usize = 1024;

/// The cause of a backend failure, shared between the callers of a failed batch.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed to read or write, for a reason of its own.
    #[error("storage failure: {0}")]
    Backend(#[source] Cause),
    /// Stored data is not what this store wrote.
    #[error("corrupt store data: {what}")]
    Corrupt {
        /// Which record.
        what: &'static str,
    },
    /// The store has shut down.
    #[error("the store is closed")]
    Closed,
    /// The commit this write was in failed: nothing of it was stored.
    #[error("storage failure: nothing was stored ({0}); retry later")]
    NotStored(#[source] Cause),
    /// The store cannot write until its storage recovers (a commit failed, or the database
    /// cannot be reached), or cannot read until it has reopened its file: nothing was stored.
    #[error("storage unavailable: the store cannot write now; nothing was stored; retry later")]
    Unavailable,
    /// A commit that failed was found in the file afterwards: the store refuses every write until
    /// it is opened again (by a restart).
    #[error(
        "storage failure: a failed commit reached the file after all; the store must be reopened"
    )]
    Uncertain,
    /// An argument the store does not take (an empty or over-long tenant id); nothing was
    /// stored.
    #[error("invalid {what}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
    },
    /// The database's schema is newer than this program knows.
    #[error("the store's schema is version {found}, newer than this program's {known}")]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest version this program knows.
        known: i64,
    },
}

impl StoreError {
    /// Whether nothing of the write was stored, because the storage failed or could not be
    /// reached: a caller may retry later.
    pub fn not_stored(&self) -> bool {
        matches!(self, Self::NotStored(_) | Self::Unavailable)
    }

    /// A backend failure with `cause`.
    pub fn backend(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Arc::new(cause))
    }
}

impl PartialEq for StoreError {
    /// Same variant (and, for [`StoreError::Corrupt`] and [`StoreError::SchemaTooNew`], same
    /// details); causes are not compared.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Corrupt { what: a }, Self::Corrupt { what: b })
            | (Self::Invalid { what: a }, Self::Invalid { what: b }) => a == b,
            (
                Self::SchemaTooNew { found: a, known: b },
                Self::SchemaTooNew { found: c, known: d },
            ) => (a, b) == (c, d),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

/// Whether a store can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    /// Writes are committed.
    Writable,
    /// A commit failed or the database cannot be reached; writes are refused
    /// ([`StoreError::Unavailable`]) until the store can write again, which it finds out by
    /// itself.
    Failing,
    /// A failed commit was found in the file afterwards: what was answered and what is in memory
    /// may differ from the file. Writes are refused for good; a restart reopens the store.
    Lost,
}

/// Counters a backend keeps, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Write transactions committed since the store was opened (fewer than the writes when
    /// commits are grouped).
    pub commits: u64,
    /// Commits that failed since the store was opened, with failed attempts to recover.
    pub write_failures: u64,
}

/// The store's interface. See the [crate documentation](crate) for what every backend
/// guarantees, and its cancel safety.
pub trait Store: Send + Sync + 'static {
    /// Registers or replaces a worker's record.
    fn put_worker(
        &self,
        worker_id: &str,
        record: &WorkerRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A worker's record.
    fn worker(
        &self,
        worker_id: &str,
    ) -> impl Future<Output = Result<Option<WorkerRecord>, StoreError>> + Send;

    /// Ids of the workers matching `filter`, in byte order, after `look_up.after`, at most
    /// `look_up.limit`: one page, found through an index.
    fn look_up_workers(
        &self,
        filter: &WorkerFilter,
        look_up: &LookUp,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Inserts a work order if its worker exists and its id was never accepted before (not even
    /// by an order since purged), and queues it; durable when it returns.
    fn submit(
        &self,
        order: NewOrder,
    ) -> impl Future<Output = Result<SubmitOutcome, StoreError>> + Send;

    /// Queues a work order whose requester will hear nothing until its result is stored (a
    /// synchronous submission). A backend may keep it in memory until [`Store::complete`] writes
    /// it with its result, or [`Store::persist`] writes it because its requester is told it is
    /// pending: if the process dies before either, the order is gone, but nobody was told it had
    /// been accepted. Refusals as by [`Store::submit`].
    fn submit_volatile(
        &self,
        order: NewOrder,
    ) -> impl Future<Output = Result<SubmitOutcome, StoreError>> + Send;

    /// Writes an order queued by [`Store::submit_volatile`] if it is not written yet; durable
    /// when it returns. Returns whether it wrote anything.
    fn persist(&self, work_order_id: &str)
    -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Where a work order stands, with its result once finished.
    fn status(
        &self,
        work_order_id: &str,
    ) -> impl Future<Output = Result<OrderStatus, StoreError>> + Send;

    /// The raw request of a work order, if it exists.
    fn request(
        &self,
        work_order_id: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Makes `requester_id` a tenant of `worker_id`: the requester's orders for the worker,
    /// submitted from now on, are queued apart, and only claims for that tenant take them (orders
    /// queued before stay in the shared queue). Idempotent; there is no undoing it.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty id or one longer than [`MAX_TENANT_BYTES`].
    fn put_tenant(
        &self,
        worker_id: &str,
        requester_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Hands the oldest queued order of `worker_id` to `holder` until `now_ms + lease_ms`: from
    /// the worker's shared queue, or with `tenant`, from that tenant's queue. A holder names one
    /// claim: only it can renew the lease and complete the order.
    fn claim(
        &self,
        worker_id: &str,
        tenant: Option<&str>,
        holder: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> impl Future<Output = Result<Option<Claimed>, StoreError>> + Send;

    /// Extends `holder`'s lease on a work order it is still processing to `now_ms + lease_ms`;
    /// returns false (and changes nothing) if the lease is not `holder`'s any more.
    fn renew(
        &self,
        work_order_id: &str,
        holder: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores the result of a work order if `holder` holds its lease and no result is stored
    /// already, ends the lease, and in the same transaction stores `sealed` (the workload's new
    /// state): a result and the state it produced are durable together or not at all. A state
    /// computed from an older version than the stored one is refused with the whole completion
    /// ([`Completion::StateConflict`]), and the order queued again. If the order has a receipt,
    /// the receipt now awaits its worker's update ([`Store::receipts_awaiting_update`]).
    fn complete(
        &self,
        work_order_id: &str,
        holder: &str,
        result: OrderResult,
        sealed: Option<SealedBlob>,
    ) -> impl Future<Output = Result<Completion, StoreError>> + Send;

    /// Puts every order whose lease ended before `now_ms` back at the head of its queue; returns
    /// how many. Safe to call from any number of processes at once.
    fn requeue_expired(&self, now_ms: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How many orders are queued, processing and finished.
    fn counts(&self) -> impl Future<Output = Result<OrderCounts, StoreError>> + Send;

    /// Stores a sealed blob unless the same or a newer version is stored under its key.
    fn put_sealed(&self, sealed: SealedBlob)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every sealed blob whose key starts with `prefix`, in key order.
    fn sealed(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<SealedBlob>, StoreError>> + Send;

    /// Stores a receipt for an existing work order that has none. If the order is finished,
    /// the receipt awaits its worker's update at once.
    fn create_receipt(
        &self,
        work_order_id: &str,
        create: &ReceiptCreate,
    ) -> impl Future<Output = Result<ReceiptCreation, StoreError>> + Send;

    /// Appends a requester's update to a receipt; returns the number of updates, or `None`
    /// without a receipt.
    fn add_receipt_update(
        &self,
        work_order_id: &str,
        update: &ReceiptUpdate,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Appends the worker's update to a receipt that awaits it (its order finished, the receipt
    /// has no update yet); returns whether it did. A receipt gets exactly one worker update.
    fn add_worker_receipt_update(
        &self,
        work_order_id: &str,
        update: &ReceiptUpdate,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Receipts of `worker_id`'s finished orders that await the worker's update, with the
    /// orders' results, at most `limit`, in an order of the backend's (redb: work-order id;
    /// PostgreSQL: the order in which they began to await).
    fn receipts_awaiting_update(
        &self,
        worker_id: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, OrderResult)>, StoreError>> + Send;

    /// A receipt and its updates.
    fn receipt(
        &self,
        work_order_id: &str,
    ) -> impl Future<Output = Result<Option<StoredReceipt>, StoreError>> + Send;

    /// Work-order ids of the receipts matching `filter` (on their current status, too), in
    /// byte order, after `look_up.after`, at most `look_up.limit`: one page, through an index.
    fn look_up_receipts(
        &self,
        filter: &ReceiptFilter,
        look_up: &LookUp,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Announcements of committed changes: new work for a worker, an order finished, a receipt
    /// awaiting its worker's update. Subscribe before reading what you will wait on, so that
    /// nothing committed in between is missed.
    fn wakeups(&self) -> Wakeups;

    /// Whether the store can write, now and as it changes.
    fn health(&self) -> tokio::sync::watch::Receiver<StoreHealth>;

    /// Counters for metrics (no I/O).
    fn stats(&self) -> StoreStats;
}
