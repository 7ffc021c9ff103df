//! The embedded store on redb: one file, one process.
//!
//! Reads use redb's MVCC snapshots from any thread. Every write goes to one writer thread, which
//! takes all the writes waiting for it, applies them in one transaction and commits once (one
//! fsync), then answers each caller: group commit, so that many concurrent submissions share a
//! single fsync and none is acknowledged before it is on disk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{
    Claimed, Completion, NewOrder, OrderCounts, OrderStatus, ReceiptCreation, SealedBlob, Store,
    StoreError, StoredReceipt, SubmitOutcome,
};

const WORKERS: TableDefinition<'static, &str, &str> = TableDefinition::new("workers");
/// Work-order id → [`OrderRecord`] (JSON).
const ORDERS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("orders");
const REQUESTS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("requests");
/// (worker id, submission sequence) → work-order id: each worker's FIFO.
const QUEUE: TableDefinition<'static, (&str, u64), &str> = TableDefinition::new("queue");
/// (lease end in ms, work-order id) → holder, ordered by expiry for the sweep.
const LEASES: TableDefinition<'static, (u64, &str), &str> = TableDefinition::new("leases");
const RESPONSES: TableDefinition<'static, &str, &str> = TableDefinition::new("responses");
/// Finish sequence → work-order id: the purge order.
const FINISHED: TableDefinition<'static, u64, &str> = TableDefinition::new("finished");
const RECEIPTS: TableDefinition<'static, &str, &str> = TableDefinition::new("receipts");
const RECEIPT_UPDATES: TableDefinition<'static, (&str, u64), &str> =
    TableDefinition::new("receipt_updates");
/// Sealed blob key → version (8 bytes BE) || blob.
const SEALED: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("sealed");
const COUNTERS: TableDefinition<'static, &str, u64> = TableDefinition::new("counters");

/// Settings of the embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedbStoreOptions {
    /// The most work orders kept; beyond it the oldest finished one is purged, or submissions are
    /// refused as busy.
    pub max_orders: u64,
    /// The most writes committed together.
    pub max_batch: usize,
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
}

impl Default for RedbStoreOptions {
    fn default() -> Self {
        Self { max_orders: 10_000, max_batch: 1024, cache_bytes: 64 << 20 }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct OrderRecord {
    seq: u64,
    worker: String,
    /// Lease end (ms) while claimed.
    lease: Option<u64>,
    done: bool,
}

enum Op {
    PutWorker {
        id: String,
        record: String,
    },
    Submit(NewOrder),
    Claim {
        worker: String,
        holder: String,
        now: u64,
        lease: u64,
    },
    Complete {
        id: String,
        response: String,
        sealed: Option<SealedBlob>,
        receipt_update: Option<String>,
    },
    AddUpdateIfFinished {
        id: String,
        update: String,
    },
    PutSealed(SealedBlob),
    Requeue {
        now: u64,
    },
    CreateReceipt {
        id: String,
        create: String,
    },
    AddUpdate {
        id: String,
        update: String,
    },
}

enum Reply {
    Unit,
    Submit(SubmitOutcome),
    Claim(Option<Claimed>),
    Complete(Completion),
    Count(u64),
    Receipt(ReceiptCreation),
    Update(Option<u64>),
    Appended(bool),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// The embedded store.
pub struct RedbStore {
    db: Arc<Database>,
    writer: Option<mpsc::Sender<Job>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

impl Drop for RedbStore {
    /// Stops the writer after the writes already sent, and waits for it, so that the file is
    /// released when the store is gone.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

fn storage(error: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(error.to_string())
}

impl RedbStore {
    /// Opens (or creates) the store in the file `path` and starts its writer thread.
    ///
    /// # Errors
    /// [`StoreError::Storage`] if the file cannot be opened (another process holding it, say).
    pub fn open(path: &Path, options: RedbStoreOptions) -> Result<Self, StoreError> {
        let db = Arc::new(
            Database::builder()
                .set_cache_size(options.cache_bytes)
                .create(path)
                .map_err(storage)?,
        );
        // Create every table so that readers never meet a missing one.
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(WORKERS).map_err(storage)?;
            txn.open_table(ORDERS).map_err(storage)?;
            txn.open_table(REQUESTS).map_err(storage)?;
            txn.open_table(QUEUE).map_err(storage)?;
            txn.open_table(LEASES).map_err(storage)?;
            txn.open_table(RESPONSES).map_err(storage)?;
            txn.open_table(FINISHED).map_err(storage)?;
            txn.open_table(RECEIPTS).map_err(storage)?;
            txn.open_table(RECEIPT_UPDATES).map_err(storage)?;
            txn.open_table(SEALED).map_err(storage)?;
            txn.open_table(COUNTERS).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        let (writer, jobs) = mpsc::channel();
        let writer_db = Arc::clone(&db);
        let commits = Arc::new(AtomicU64::new(0));
        let writer_commits = Arc::clone(&commits);
        let writer_thread = std::thread::Builder::new()
            .name("afallon-store-writer".into())
            .spawn(move || write_loop(&writer_db, &jobs, options, &writer_commits))
            .map_err(storage)?;
        Ok(Self { db, writer: Some(writer), writer_thread: Some(writer_thread), commits })
    }

    /// How many write transactions have been committed (each one fsync): fewer than the writes
    /// when group commit batches them.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    async fn write(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, answer) = oneshot::channel();
        let writer = self.writer.as_ref().ok_or(StoreError::Closed)?;
        writer.send(Job { op, reply }).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        f(&txn).map_err(storage)
    }
}

fn unexpected() -> StoreError {
    StoreError::Corrupt("the writer answered with another kind of reply".into())
}

fn write_loop(
    db: &Database,
    jobs: &mpsc::Receiver<Job>,
    options: RedbStoreOptions,
    commits: &AtomicU64,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < options.max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = apply_batch(db, &batch, options);
        commits.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(replies) => {
                for (job, reply) in batch.into_iter().zip(replies) {
                    let _ = job.reply.send(Ok(reply));
                }
            }
            Err(error) => {
                for job in batch {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

fn apply_batch(
    db: &Database,
    batch: &[Job],
    options: RedbStoreOptions,
) -> Result<Vec<Reply>, StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        replies.push(apply(&txn, &job.op, options).map_err(storage)?);
    }
    txn.commit().map_err(storage)?;
    Ok(replies)
}

fn next(txn: &WriteTransaction, counter: &str) -> Result<u64, redb::Error> {
    let mut counters = txn.open_table(COUNTERS)?;
    let value = counters.get(counter)?.map_or(0, |v| v.value());
    counters.insert(counter, value + 1)?;
    Ok(value)
}

fn order_record(bytes: &[u8]) -> Result<OrderRecord, redb::Error> {
    serde_json::from_slice(bytes).map_err(|e| redb::Error::Corrupted(format!("order record: {e}")))
}

fn encode(record: &OrderRecord) -> Vec<u8> {
    // Serializing this struct to JSON cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

fn apply(txn: &WriteTransaction, op: &Op, options: RedbStoreOptions) -> Result<Reply, redb::Error> {
    Ok(match op {
        Op::PutWorker { id, record } => {
            txn.open_table(WORKERS)?.insert(id.as_str(), record.as_str())?;
            Reply::Unit
        }
        Op::Submit(order) => Reply::Submit(submit(txn, order, options)?),
        Op::Claim { worker, holder, now, lease } => {
            let mut queue = txn.open_table(QUEUE)?;
            let head = queue
                .range((worker.as_str(), 0)..=(worker.as_str(), u64::MAX))?
                .next()
                .transpose()?
                .map(|(key, id)| (key.value().1, id.value().to_owned()));
            let Some((seq, id)) = head else { return Ok(Reply::Claim(None)) };
            queue.remove((worker.as_str(), seq))?;
            let mut orders = txn.open_table(ORDERS)?;
            let mut record = match orders.get(id.as_str())? {
                Some(bytes) => order_record(bytes.value())?,
                None => {
                    return Err(redb::Error::Corrupted(format!("queued order {id} has no record")));
                }
            };
            let expires = now.saturating_add(*lease);
            record.lease = Some(expires);
            orders.insert(id.as_str(), encode(&record).as_slice())?;
            txn.open_table(LEASES)?.insert((expires, id.as_str()), holder.as_str())?;
            let request = txn
                .open_table(REQUESTS)?
                .get(id.as_str())?
                .map(|r| r.value().to_vec())
                .unwrap_or_default();
            Reply::Claim(Some(Claimed { work_order_id: id, request }))
        }
        Op::PutSealed(sealed) => {
            put_sealed(txn, sealed)?;
            Reply::Unit
        }
        Op::AddUpdateIfFinished { id, update } => {
            let finished = txn.open_table(RESPONSES)?.get(id.as_str())?.is_some();
            let has_receipt = txn.open_table(RECEIPTS)?.get(id.as_str())?.is_some();
            let mut updates = txn.open_table(RECEIPT_UPDATES)?;
            let empty = updates.range((id.as_str(), 0)..=(id.as_str(), u64::MAX))?.next().is_none();
            let append = finished && has_receipt && empty;
            if append {
                updates.insert((id.as_str(), 0), update.as_str())?;
            }
            Reply::Appended(append)
        }
        Op::Complete { id, response, sealed, receipt_update } => {
            let mut orders = txn.open_table(ORDERS)?;
            let Some(bytes) = orders.get(id.as_str())?.map(|b| b.value().to_vec()) else {
                return Ok(Reply::Complete(Completion::Unknown));
            };
            let mut record = order_record(&bytes)?;
            if record.done {
                return Ok(Reply::Complete(Completion::AlreadyDone));
            }
            if let Some(expires) = record.lease.take() {
                txn.open_table(LEASES)?.remove((expires, id.as_str()))?;
            } else {
                // Completed while queued (its lease had expired and it was requeued).
                txn.open_table(QUEUE)?.remove((record.worker.as_str(), record.seq))?;
            }
            record.done = true;
            orders.insert(id.as_str(), encode(&record).as_slice())?;
            txn.open_table(RESPONSES)?.insert(id.as_str(), response.as_str())?;
            let finish_seq = next(txn, "finish")?;
            txn.open_table(FINISHED)?.insert(finish_seq, id.as_str())?;
            if let Some(sealed) = sealed {
                put_sealed(txn, sealed)?;
            }
            if txn.open_table(RECEIPTS)?.get(id.as_str())?.is_some() {
                match receipt_update {
                    Some(update) => {
                        append_update(txn, id, update)?;
                    }
                    None => return Ok(Reply::Complete(Completion::StoredReceiptPending)),
                }
            }
            Reply::Complete(Completion::Stored)
        }
        Op::Requeue { now } => {
            let mut leases = txn.open_table(LEASES)?;
            let expired: Vec<(u64, String)> = leases
                .range((0, "")..(*now, ""))?
                .map(|entry| entry.map(|(key, _)| (key.value().0, key.value().1.to_owned())))
                .collect::<Result<_, _>>()?;
            let mut orders = txn.open_table(ORDERS)?;
            let mut queue = txn.open_table(QUEUE)?;
            for (expires, id) in &expired {
                leases.remove((*expires, id.as_str()))?;
                let bytes = orders.get(id.as_str())?.map(|b| b.value().to_vec());
                if let Some(bytes) = bytes {
                    let mut record = order_record(&bytes)?;
                    record.lease = None;
                    queue.insert((record.worker.as_str(), record.seq), id.as_str())?;
                    orders.insert(id.as_str(), encode(&record).as_slice())?;
                }
            }
            Reply::Count(expired.len() as u64)
        }
        Op::CreateReceipt { id, create } => {
            if txn.open_table(ORDERS)?.get(id.as_str())?.is_none() {
                return Ok(Reply::Receipt(ReceiptCreation::NoSuchOrder));
            }
            let mut receipts = txn.open_table(RECEIPTS)?;
            if receipts.get(id.as_str())?.is_some() {
                return Ok(Reply::Receipt(ReceiptCreation::Exists));
            }
            receipts.insert(id.as_str(), create.as_str())?;
            Reply::Receipt(ReceiptCreation::Created)
        }
        Op::AddUpdate { id, update } => {
            if txn.open_table(RECEIPTS)?.get(id.as_str())?.is_none() {
                return Ok(Reply::Update(None));
            }
            Reply::Update(Some(append_update(txn, id, update)?))
        }
    })
}

fn submit(
    txn: &WriteTransaction,
    order: &NewOrder,
    options: RedbStoreOptions,
) -> Result<SubmitOutcome, redb::Error> {
    let mut orders = txn.open_table(ORDERS)?;
    // Capacity first, then duplicates, as Avalon's listener orders its checks.
    if orders.len()? >= options.max_orders {
        let oldest = txn.open_table(FINISHED)?.pop_first()?.map(|(_, id)| id.value().to_owned());
        let Some(oldest) = oldest else { return Ok(SubmitOutcome::Busy) };
        purge(txn, &mut orders, &oldest)?;
    }
    let id = order.work_order_id.as_str();
    if orders.get(id)?.is_some() {
        return Ok(SubmitOutcome::Duplicate);
    }
    let seq = next(txn, "submit")?;
    let record = OrderRecord { seq, worker: order.worker_id.clone(), lease: None, done: false };
    orders.insert(id, encode(&record).as_slice())?;
    txn.open_table(REQUESTS)?.insert(id, order.request.as_slice())?;
    txn.open_table(QUEUE)?.insert((order.worker_id.as_str(), seq), id)?;
    Ok(SubmitOutcome::Accepted)
}

/// Appends an update to a receipt; returns the number of updates.
fn append_update(txn: &WriteTransaction, id: &str, update: &str) -> Result<u64, redb::Error> {
    let mut updates = txn.open_table(RECEIPT_UPDATES)?;
    let count = updates.range((id, 0)..=(id, u64::MAX))?.count() as u64;
    updates.insert((id, count), update)?;
    Ok(count + 1)
}

fn put_sealed(txn: &WriteTransaction, sealed: &SealedBlob) -> Result<(), redb::Error> {
    let mut table = txn.open_table(SEALED)?;
    let current = table.get(sealed.key.as_str())?.map(|v| sealed_version(v.value()));
    if current.is_some_and(|version| version > sealed.version) {
        return Ok(());
    }
    let mut value = Vec::with_capacity(8 + sealed.blob.len());
    value.extend_from_slice(&sealed.version.to_be_bytes());
    value.extend_from_slice(&sealed.blob);
    table.insert(sealed.key.as_str(), value.as_slice())?;
    Ok(())
}

fn sealed_version(value: &[u8]) -> u64 {
    value.first_chunk::<8>().map_or(0, |v| u64::from_be_bytes(*v))
}

fn purge(
    txn: &WriteTransaction,
    orders: &mut redb::Table<'_, &str, &[u8]>,
    id: &str,
) -> Result<(), redb::Error> {
    orders.remove(id)?;
    txn.open_table(REQUESTS)?.remove(id)?;
    txn.open_table(RESPONSES)?.remove(id)?;
    txn.open_table(RECEIPTS)?.remove(id)?;
    let mut updates = txn.open_table(RECEIPT_UPDATES)?;
    let keys: Vec<u64> = updates
        .range((id, 0)..=(id, u64::MAX))?
        .map(|entry| entry.map(|(key, _)| key.value().1))
        .collect::<Result<_, _>>()?;
    for key in keys {
        updates.remove((id, key))?;
    }
    Ok(())
}

impl Store for RedbStore {
    async fn put_worker(&self, worker_id: &str, record: &str) -> Result<(), StoreError> {
        match self
            .write(Op::PutWorker { id: worker_id.to_owned(), record: record.to_owned() })
            .await?
        {
            Reply::Unit => Ok(()),
            _ => Err(unexpected()),
        }
    }

    fn worker(&self, worker_id: &str) -> Result<Option<String>, StoreError> {
        self.read(|txn| Ok(txn.open_table(WORKERS)?.get(worker_id)?.map(|v| v.value().to_owned())))
    }

    fn worker_ids(&self) -> Result<Vec<String>, StoreError> {
        self.read(|txn| {
            txn.open_table(WORKERS)?
                .iter()?
                .map(|entry| entry.map(|(key, _)| key.value().to_owned()))
                .collect::<Result<_, _>>()
                .map_err(Into::into)
        })
    }

    async fn submit(&self, order: NewOrder) -> Result<SubmitOutcome, StoreError> {
        match self.write(Op::Submit(order)).await? {
            Reply::Submit(outcome) => Ok(outcome),
            _ => Err(unexpected()),
        }
    }

    fn status(&self, work_order_id: &str) -> Result<OrderStatus, StoreError> {
        self.read(|txn| {
            if let Some(response) = txn.open_table(RESPONSES)?.get(work_order_id)? {
                return Ok(OrderStatus::Done(response.value().to_owned()));
            }
            Ok(if txn.open_table(ORDERS)?.get(work_order_id)?.is_some() {
                OrderStatus::Pending
            } else {
                OrderStatus::Unknown
            })
        })
    }

    fn request(&self, work_order_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|txn| {
            Ok(txn.open_table(REQUESTS)?.get(work_order_id)?.map(|v| v.value().to_vec()))
        })
    }

    async fn claim(
        &self,
        worker_id: &str,
        holder: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<Claimed>, StoreError> {
        let op = Op::Claim {
            worker: worker_id.to_owned(),
            holder: holder.to_owned(),
            now: now_ms,
            lease: lease_ms,
        };
        match self.write(op).await? {
            Reply::Claim(claimed) => Ok(claimed),
            _ => Err(unexpected()),
        }
    }

    async fn complete(
        &self,
        work_order_id: &str,
        response: String,
        sealed: Option<SealedBlob>,
        receipt_update: Option<String>,
    ) -> Result<Completion, StoreError> {
        let op = Op::Complete { id: work_order_id.to_owned(), response, sealed, receipt_update };
        match self.write(op).await? {
            Reply::Complete(completion) => Ok(completion),
            _ => Err(unexpected()),
        }
    }

    async fn add_receipt_update_if_finished(
        &self,
        work_order_id: &str,
        update: String,
    ) -> Result<bool, StoreError> {
        match self.write(Op::AddUpdateIfFinished { id: work_order_id.to_owned(), update }).await? {
            Reply::Appended(appended) => Ok(appended),
            _ => Err(unexpected()),
        }
    }

    async fn put_sealed(&self, sealed: SealedBlob) -> Result<(), StoreError> {
        match self.write(Op::PutSealed(sealed)).await? {
            Reply::Unit => Ok(()),
            _ => Err(unexpected()),
        }
    }

    fn sealed(&self, prefix: &str) -> Result<Vec<SealedBlob>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(SEALED)?;
            let mut out = Vec::new();
            for entry in table.range(prefix..)? {
                let (key, value) = entry?;
                if !key.value().starts_with(prefix) {
                    break;
                }
                let value = value.value();
                out.push(SealedBlob {
                    key: key.value().to_owned(),
                    version: sealed_version(value),
                    blob: value.get(8..).unwrap_or_default().to_vec(),
                });
            }
            Ok(out)
        })
    }

    async fn requeue_expired(&self, now_ms: u64) -> Result<u64, StoreError> {
        match self.write(Op::Requeue { now: now_ms }).await? {
            Reply::Count(count) => Ok(count),
            _ => Err(unexpected()),
        }
    }

    fn counts(&self) -> Result<OrderCounts, StoreError> {
        self.read(|txn| {
            Ok(OrderCounts {
                queued: txn.open_table(QUEUE)?.len()?,
                processing: txn.open_table(LEASES)?.len()?,
                finished: txn.open_table(FINISHED)?.len()?,
            })
        })
    }

    async fn create_receipt(
        &self,
        work_order_id: &str,
        create: String,
    ) -> Result<ReceiptCreation, StoreError> {
        match self.write(Op::CreateReceipt { id: work_order_id.to_owned(), create }).await? {
            Reply::Receipt(outcome) => Ok(outcome),
            _ => Err(unexpected()),
        }
    }

    async fn add_receipt_update(
        &self,
        work_order_id: &str,
        update: String,
    ) -> Result<Option<u64>, StoreError> {
        match self.write(Op::AddUpdate { id: work_order_id.to_owned(), update }).await? {
            Reply::Update(count) => Ok(count),
            _ => Err(unexpected()),
        }
    }

    fn receipt(&self, work_order_id: &str) -> Result<Option<StoredReceipt>, StoreError> {
        self.read(|txn| {
            let Some(create) =
                txn.open_table(RECEIPTS)?.get(work_order_id)?.map(|v| v.value().to_owned())
            else {
                return Ok(None);
            };
            let updates = txn
                .open_table(RECEIPT_UPDATES)?
                .range((work_order_id, 0)..=(work_order_id, u64::MAX))?
                .map(|entry| entry.map(|(_, value)| value.value().to_owned()))
                .collect::<Result<_, _>>()?;
            Ok(Some(StoredReceipt { create, updates }))
        })
    }

    fn receipt_ids(&self) -> Result<Vec<String>, StoreError> {
        self.read(|txn| {
            txn.open_table(RECEIPTS)?
                .iter()?
                .map(|entry| entry.map(|(key, _)| key.value().to_owned()))
                .collect::<Result<_, _>>()
                .map_err(Into::into)
        })
    }
}
