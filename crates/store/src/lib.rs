//! The store: the worker registry, the work-order queue with leases, results and receipts.
//!
//! [`Store`] is the interface the listener and the worker hosts use; [`RedbStore`] is the embedded
//! backend (one process, one file), built on redb.
//!
//! Guarantees every backend gives:
//! - [`Store::submit`] inserts a work order only if its id is new (a replay is refused atomically)
//!   and enqueues it for its worker; when it returns, the order is durable (fsync'd).
//! - [`Store::submit_volatile`] enqueues an order that is written only with its response (or on
//!   [`Store::persist`]): for synchronous submissions, whose only acknowledgement is the result.
//! - [`Store::claim`] hands the oldest queued order of a worker to one holder under a lease, which
//!   the holder extends while it works ([`Store::renew`]); an order whose lease expires goes back
//!   to the head of the queue ([`Store::requeue_expired`]).
//! - [`Store::complete`] stores a response once, and only from the holder of the order's lease:
//!   the first completion wins, and a holder that lost its lease (expired and queued again, or
//!   claimed by another) cannot complete the order.
//! - At most `max_orders` orders are kept: a submission beyond that purges the oldest finished
//!   order, or is refused as busy when every stored order is still unfinished.
//! - A work-order id is accepted once, ever: a purged order leaves a compact record of its id
//!   behind, written in the transaction that purges it, so that a captured request replayed
//!   after the purge is refused as a duplicate and the order reads as [`OrderStatus::Purged`].
//!   That record only grows: [`RedbStore`] keeps 16 bytes (a truncated SHA-256 of the id) per
//!   purged order, at most 36 bytes of file with its B-tree's overhead: 36 MB per million
//!   orders purged.
//! - A write whose commit fails changes nothing, on disk or in memory, and its caller gets
//!   [`StoreError::NotStored`]: an order submitted in it is not stored (nor queued), a response
//!   completed in it is not stored and the order goes back to its queue, and a synchronous
//!   submission whose [`Store::persist`] fails is forgotten. The store then reports
//!   [`StoreHealth::Failing`] and answers writes with [`StoreError::Unavailable`] until it can
//!   write again, which it finds out by itself; if it finds that a failed commit reached the file
//!   after all, it reports [`StoreHealth::Lost`] and refuses every write
//!   ([`StoreError::Uncertain`]): its in-memory state, and its users', may then differ from the
//!   file, and only a restart brings them together again.
//!
//! Lease time comes in as an argument (milliseconds), so backends read no wall clock.

mod redb_store;

use std::future::Future;

pub use redb_store::{RedbStore, RedbStoreOptions};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed to read or write.
    #[error("storage failure: {0}")]
    Storage(String),
    /// Stored data is not what this store wrote.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// The store has shut down.
    #[error("the store is closed")]
    Closed,
    /// The commit this write was in failed: nothing of it was stored.
    #[error("storage failure: nothing was stored ({0}); retry later")]
    NotStored(String),
    /// The store cannot write until its storage recovers (a commit failed), or cannot read
    /// until it has reopened its file: nothing was stored.
    #[error(
        "storage unavailable: a commit failed and the store cannot write yet; nothing was stored; retry later"
    )]
    Unavailable,
    /// A commit that failed was found in the file afterwards: the store refuses every write until
    /// it is opened again (by a restart).
    #[error(
        "storage failure: a failed commit reached the file after all; the store must be reopened"
    )]
    Uncertain,
}

impl StoreError {
    /// Whether nothing of the write was stored, because the storage failed: a caller may retry
    /// later.
    pub fn not_stored(&self) -> bool {
        matches!(self, Self::NotStored(_) | Self::Unavailable)
    }
}

/// Whether a store can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    /// Writes are committed.
    Writable,
    /// A commit failed; writes are refused ([`StoreError::Unavailable`]) until a trial commit
    /// succeeds, which the store tries by itself with a growing pause between tries.
    Failing,
    /// A failed commit was found in the file afterwards: what was answered and what is in memory
    /// may differ from the file. Writes are refused for good; a restart reopens the store.
    Lost,
}

/// A work order to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// `workOrderId`, the key.
    pub work_order_id: String,
    /// The worker it is queued for.
    pub worker_id: String,
    /// The raw `WorkOrderSubmit` request body, stored and handed to the worker as it is.
    pub request: Vec<u8>,
}

/// The outcome of [`Store::submit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Stored durably and queued.
    Accepted,
    /// An order with this id exists already, or existed and was purged; nothing was changed.
    Duplicate,
    /// The store holds `max_orders` orders and none is finished; nothing was changed.
    Busy,
}

/// Where a work order stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderStatus {
    /// No such order: never submitted (or submitted synchronously and lost in a crash before
    /// anyone was answered).
    Unknown,
    /// The order finished and was purged from storage to make room; its id stays taken.
    Purged,
    /// Queued or being processed.
    Pending,
    /// Finished: the worker's JSON-RPC response, as stored.
    Done(String),
}

/// An order handed to a worker under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The order's id.
    pub work_order_id: String,
    /// The raw request body.
    pub request: Vec<u8>,
}

/// A sealed blob the store keeps for an enclave (its keys, a workload's state). `version` orders
/// blobs under one key: an older version never replaces a newer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob {
    /// What it is, e.g. `worker/<name>/keys`.
    pub key: String,
    /// Its version.
    pub version: u64,
    /// The sealed bytes.
    pub blob: Vec<u8>,
}

/// The outcome of [`Store::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The response was stored.
    Stored,
    /// The response was stored, but the order has a receipt and no receipt update was given:
    /// the caller should add it with [`Store::add_receipt_update_if_finished`].
    StoredReceiptPending,
    /// A response was stored before; this one was dropped.
    AlreadyDone,
    /// The order's lease is not this holder's (it expired and the order was queued again, or
    /// another holder claimed it); nothing was stored.
    LeaseLost,
    /// The order no longer exists (purged); nothing was stored.
    Unknown,
}

/// The outcome of [`Store::create_receipt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptCreation {
    /// Stored.
    Created,
    /// The work order does not exist.
    NoSuchOrder,
    /// The work order has a receipt already.
    Exists,
}

/// A receipt: the create request and its updates, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    /// The `WorkOrderReceiptCreate` params, JSON.
    pub create: String,
    /// Every update object, JSON, oldest first.
    pub updates: Vec<String>,
}

/// Counts for metrics and autoscaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderCounts {
    /// Waiting in a queue.
    pub queued: u64,
    /// Under a lease.
    pub processing: u64,
    /// With a stored response.
    pub finished: u64,
}

/// The store's interface.
///
/// # Cancel safety
///
/// The async methods that write ([`Store::submit`], [`Store::complete`] and the rest) hand their
/// write to the backend when first polled: dropping the future after that does not stop the
/// write, only the caller's learning of its outcome (which a read can tell). [`Store::claim`],
/// [`Store::renew`] and [`Store::requeue_expired`] finish at their first poll, and so does
/// [`Store::submit_volatile`] unless the store is full (then it hands its write over as
/// [`Store::submit`] does).
pub trait Store: Send + Sync + 'static {
    /// Registers or replaces a worker record (JSON).
    fn put_worker(
        &self,
        worker_id: &str,
        record: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A worker's record (JSON).
    ///
    /// # Errors
    /// [`StoreError`] on a backend failure.
    fn worker(&self, worker_id: &str) -> Result<Option<String>, StoreError>;

    /// Every worker id, in byte order.
    ///
    /// # Errors
    /// [`StoreError`] on a backend failure.
    fn worker_ids(&self) -> Result<Vec<String>, StoreError>;

    /// Inserts a work order if its id was never accepted before (not even by an order since
    /// purged) and queues it; durable when it returns.
    fn submit(
        &self,
        order: NewOrder,
    ) -> impl Future<Output = Result<SubmitOutcome, StoreError>> + Send;

    /// Queues a work order whose requester will hear nothing until its response is stored (a
    /// synchronous submission), without writing it yet: the order is written in the transaction
    /// that stores its response ([`Store::complete`]), or by [`Store::persist`] when the requester
    /// is to be told it is pending. One durable write per order instead of two. If the process
    /// dies before either, the order is gone, but nobody was told it had been accepted.
    ///
    /// Duplicates and capacity are refused as by [`Store::submit`].
    fn submit_volatile(
        &self,
        order: NewOrder,
    ) -> impl Future<Output = Result<SubmitOutcome, StoreError>> + Send;

    /// Writes an order queued by [`Store::submit_volatile`] if it is not written yet; durable
    /// when it returns. Returns whether it wrote anything (false for an order already written,
    /// finished or unknown).
    fn persist(&self, work_order_id: &str)
    -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Where a work order stands.
    ///
    /// # Errors
    /// [`StoreError`] on a backend failure.
    fn status(&self, work_order_id: &str) -> Result<OrderStatus, StoreError>;

    /// The raw request of a work order, if it exists.
    ///
    /// # Errors
    /// [`StoreError`] on a backend failure.
    fn request(&self, work_order_id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Hands the oldest queued order of `worker_id` to `holder` until `now_ms + lease_ms`. A
    /// holder names one claim: only it can renew the lease and complete the order.
    fn claim(
        &self,
        worker_id: &str,
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

    /// Stores the response of a work order if `holder` holds its lease and no response is stored
    /// already, ends its lease, and in the same transaction stores `sealed` (the workload's new
    /// state) and, if the order has a receipt, appends `receipt_update`: a result, the state it
    /// produced and its receipt update are durable together or not at all.
    fn complete(
        &self,
        work_order_id: &str,
        holder: &str,
        response: String,
        sealed: Option<SealedBlob>,
        receipt_update: Option<String>,
    ) -> impl Future<Output = Result<Completion, StoreError>> + Send;

    /// Appends `update` to a receipt only if the order is finished and the receipt has no update
    /// yet (the worker's update for a receipt created after the order finished); returns whether
    /// it did. Together with [`Store::complete`] this gives a receipt exactly one worker update.
    fn add_receipt_update_if_finished(
        &self,
        work_order_id: &str,
        update: String,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores a sealed blob unless a newer version is stored under its key.
    fn put_sealed(&self, sealed: SealedBlob)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every sealed blob whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// [`StoreError`] on a backend failure.
    fn sealed(&self, prefix: &str) -> Result<Vec<SealedBlob>, StoreError>;

    /// Puts every order whose lease ended before `now_ms` back at the head of its queue; returns
    /// how many.
    fn requeue_expired(&self, now_ms: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How many orders are queued, processing and finished.
    ///
    /// # Errors
    /// [`StoreError`] on a backend failure.
    fn counts(&self) -> Result<OrderCounts, StoreError>;

    /// Stores a receipt for an existing work order that has none.
    fn create_receipt(
        &self,
        work_order_id: &str,
        create: String,
    ) -> impl Future<Output = Result<ReceiptCreation, StoreError>> + Send;

    /// Appends an update to a receipt; returns the number of updates, or `None` without a receipt.
    fn add_receipt_update(
        &self,
        work_order_id: &str,
        update: String,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// A receipt and its updates.
    ///
    /// # Errors
    /// [`StoreError`] on a backend failure.
    fn receipt(&self, work_order_id: &str) -> Result<Option<StoredReceipt>, StoreError>;

    /// How many write transactions have been committed since the store was opened (each durable
    /// one is an fsync): fewer than the writes when group commit batches them.
    fn commits(&self) -> u64;

    /// Every work-order id with a receipt, in byte order.
    ///
    /// # Errors
    /// [`StoreError`] on a backend failure.
    fn receipt_ids(&self) -> Result<Vec<String>, StoreError>;

    /// Whether the store can write, now and as it changes.
    fn health(&self) -> tokio::sync::watch::Receiver<StoreHealth>;

    /// How many commits have failed since the store was opened, with the attempts to recover
    /// from one (reopening the file and a trial commit) that failed.
    fn write_failures(&self) -> u64;
}
