//! The typed records and outcomes that cross the [`Store`](crate::Store) interface.

use afallon_proto::{ReceiptCreate, ReceiptStatus, ReceiptUpdate};

/// A work order to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// `workOrderId`, the key.
    pub work_order_id: String,
    /// The worker it is queued for.
    pub worker_id: String,
    /// Its `requesterId`: if the requester is a tenant of the worker
    /// ([`Store::put_tenant`](crate::Store::put_tenant)), the order is queued for that tenant's
    /// claims only.
    pub requester_id: String,
    /// The raw `WorkOrderSubmit` request body, stored and handed to the worker as it is.
    pub request: Vec<u8>,
}

/// The outcome of [`Store::submit`](crate::Store::submit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Stored durably and queued.
    Accepted,
    /// An order with this id exists already, or existed and was purged; nothing was changed.
    Duplicate,
    /// The store holds `max_orders` orders and none is finished; nothing was changed.
    Busy,
    /// No worker has this id; nothing was changed.
    NoSuchWorker,
}

/// A finished order's result: the worker's JSON-RPC response as it wrote it, and whether it
/// is an error (decided once, by the worker, and stored with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderResult {
    /// `{"jsonrpc": "2.0", "id": .., "result" | "error": ..}`, byte for byte as the worker
    /// signed and hashed it.
    pub response: String,
    /// The response is an error.
    pub failed: bool,
}

impl OrderResult {
    /// A successful result.
    pub fn ok(response: impl Into<String>) -> Self {
        Self { response: response.into(), failed: false }
    }

    /// A failed order's error response.
    pub fn failed(response: impl Into<String>) -> Self {
        Self { response: response.into(), failed: true }
    }
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
    /// Finished, with its result.
    Done(OrderResult),
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
/// blobs under one key: only a newer version replaces a stored one, so the first of several
/// processes to store version 0 of a worker's keys is the one every process then uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob {
    /// What it is, e.g. `worker/<name>/keys`.
    pub key: String,
    /// Its version.
    pub version: u64,
    /// For a workload's state stored with a result: the version it was computed from. The
    /// completion is stored only if no newer version than that is stored (another process
    /// serving the worker changed the state first: [`Completion::StateConflict`]).
    pub based_on: Option<u64>,
    /// The sealed bytes.
    pub blob: Vec<u8>,
}

/// The outcome of [`Store::complete`](crate::Store::complete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The result was stored.
    Stored,
    /// A result was stored before; this one was dropped.
    AlreadyDone,
    /// The order's lease is not this holder's (it expired and the order was queued again, or
    /// another holder claimed it); nothing was stored.
    LeaseLost,
    /// The order no longer exists (purged); nothing was stored.
    Unknown,
    /// The state the run computed is based on a version older than the one stored (another
    /// process serving the worker changed it first): nothing was stored, the lease ended, and
    /// the order is queued again, to run on the newer state.
    StateConflict,
}

/// The outcome of [`Store::create_receipt`](crate::Store::create_receipt).
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
    /// The `WorkOrderReceiptCreate` params.
    pub create: ReceiptCreate,
    /// Every update, oldest first.
    pub updates: Vec<ReceiptUpdate>,
}

impl StoredReceipt {
    /// The receipt's status now: the type of its last update, else its create status.
    pub fn current_status(&self) -> i64 {
        current_status(&self.create, self.updates.last())
    }
}

/// A receipt's status given its create request and its last update.
pub fn current_status(create: &ReceiptCreate, last: Option<&ReceiptUpdate>) -> i64 {
    last.and_then(|u| u.update_type)
        .or(create.receipt_create_status)
        .unwrap_or(ReceiptStatus::Pending.code())
}

/// Counts for metrics and autoscaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderCounts {
    /// Waiting in a queue.
    pub queued: u64,
    /// Under a lease.
    pub processing: u64,
    /// With a stored result.
    pub finished: u64,
}

/// Which page of a look-up: the ids after `after` (exclusive), at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookUp {
    /// The last id of the previous page (a look-up tag), if any.
    pub after: Option<String>,
    /// The most ids to return.
    pub limit: usize,
}

impl LookUp {
    /// The first page of at most `limit` ids.
    pub fn first(limit: usize) -> Self {
        Self { after: None, limit }
    }
}

/// `WorkerLookUp`'s filters: a worker matches when every filter given equals its field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerFilter {
    /// `workerType`.
    pub worker_type: Option<i64>,
    /// `organizationId`.
    pub organization_id: Option<String>,
    /// `applicationTypeId`.
    pub application_type_id: Option<String>,
}

/// `WorkOrderReceiptLookUp`'s filters: a receipt matches when every filter given equals its
/// create request's field (and `status` its current status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptFilter {
    /// `workerServiceId`.
    pub worker_service_id: Option<String>,
    /// `workerId`.
    pub worker_id: Option<String>,
    /// `requesterId`.
    pub requester_id: Option<String>,
    /// The receipt's current status.
    pub status: Option<i64>,
}

/// Milliseconds since the Unix epoch by this machine's clock: what callers pass the store as
/// lease times.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
