//! The embedded store on redb: one file, one process.
//!
//! What must survive a crash is on disk: workers, every acknowledged order with its raw request,
//! results, receipts, their look-up indexes and sealed blobs. What need not is in memory: the
//! per-worker queues and the leases, rebuilt when the store opens (every unfinished order queued
//! again, in submission order, which is also what an expired lease would do), and the
//! synchronous submissions nobody has been answered for yet. So a claim touches no disk at all,
//! and an order costs two durable writes (its submission and its completion), or one for a
//! synchronous submission (written with its result).
//!
//! Reads use redb's MVCC snapshots from any thread. Every durable write goes to one writer thread
//! (`writer.rs`), which takes all the writes waiting for it, applies them in one transaction and
//! commits once (one fsync), then answers each caller: group commit, so that many concurrent
//! submissions share a single fsync and none is acknowledged before it is on disk.
//!
//! A commit can fail (a full disk, an I/O error), and redb then refuses everything, reads too,
//! until the database is opened again. So the writer answers every write of the failed batch with
//! [`StoreError::NotStored`], applies none of its changes in memory (nothing of it is in the
//! file), ends the leases of the completions in it (their orders are queued again) and forgets
//! synchronous submissions whose write failed. Then it reopens the file, which runs redb's
//! recovery, and tries commits of its own (writing 256 KiB, then freeing it inside the file),
//! again and again with a growing pause, answering writes [`StoreError::Unavailable`] meanwhile;
//! once they succeed the store writes as before. Every commit records its number in the file
//! (`meta`), so that a reopened file shows whether the failed commit reached it after all (its
//! writes all made it to the file, and only the sync failed); then what was answered and what is
//! in memory may differ from the file, and the store refuses every write until a restart
//! ([`StoreHealth::Lost`]). A full disk does not lead there: the file takes its space on disk as
//! it grows (`space.rs`), so a commit runs out of space while its transaction is filled, before
//! any of it reaches the file.
//!
//! Files: `tables.rs` (the tables, record encoding, indexes), `queues.rs` (what lives in memory),
//! `space.rs` (the file takes its space on disk as it grows), `writer.rs` (the writer thread and
//! recovery), `ops.rs` (each write).

mod ops;
mod queues;
mod space;
mod tables;
mod writer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::time::Duration;

use redb::{Database, ReadableDatabase};
use tokio::sync::watch;

use afallon_proto::{ReceiptCreate, ReceiptUpdate, WorkerRecord};

use self::queues::{QueueKey, Queued, Queues, Volatile};
use self::tables::{
    AWAITING, ORDERS, PURGED, RECEIPT_INDEX, RECEIPT_UPDATES, RECEIPTS, SEALED, WORKER_INDEX,
    WORKERS,
};
use self::writer::{Job, Pending, WriteOp, Writer};
use crate::wakeups::WakeupSender;
use crate::{
    Claimed, Completion, LookUp, MAX_TENANT_BYTES, NewOrder, OrderCounts, OrderResult, OrderStatus,
    ReceiptCreation, ReceiptFilter, SealedBlob, Store, StoreError, StoreHealth, StoreStats,
    StoredReceipt, SubmitOutcome, Wakeup, Wakeups, WorkerFilter,
};

/// Opens the database file: when the store opens, and again after a failed commit.
type Opener = Box<dyn Fn(&Path) -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// What opens the file (again, after a failed commit) with the storage backend that `backend`
/// makes of it.
fn opener<B, F>(cache: usize, backend: F) -> Opener
where
    B: redb::StorageBackend,
    F: Fn(std::fs::File) -> Result<B, redb::DatabaseError> + Send + Sync + 'static,
{
    Box::new(move |path: &Path| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Database::builder().set_cache_size(cache).create_with_backend(backend(file)?)
    })
}

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
    /// How long the writer gathers writes before a commit when the previous commit ended less
    /// than this long ago (zero: never wait).
    pub commit_window: Duration,
}

impl Default for RedbStoreOptions {
    fn default() -> Self {
        Self {
            max_orders: 10_000,
            max_batch: 1024,
            cache_bytes: 64 << 20,
            commit_window: Duration::from_micros(500),
        }
    }
}

/// The embedded store.
pub struct RedbStore {
    /// The open database; none while the writer reopens it after a failed commit. Readers hold
    /// the lock while they read, so that the writer can drop the database to reopen it.
    db: Arc<RwLock<Option<Database>>>,
    queues: Arc<Mutex<Queues>>,
    next_submit: Arc<AtomicU64>,
    /// Finished orders in the file.
    finished: Arc<AtomicU64>,
    max_orders: u64,
    writer: Option<mpsc::Sender<Box<dyn Job>>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    commits: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    health: Arc<watch::Sender<StoreHealth>>,
    wakeups: WakeupSender,
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

/// A redb failure as the store reports it.
fn backend(error: impl Into<redb::Error>) -> StoreError {
    StoreError::backend(error.into())
}

fn lock(queues: &Mutex<Queues>) -> MutexGuard<'_, Queues> {
    queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read_db(db: &RwLock<Option<Database>>) -> RwLockReadGuard<'_, Option<Database>> {
    db.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_db(db: &RwLock<Option<Database>>) -> RwLockWriteGuard<'_, Option<Database>> {
    db.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The number of the last batch committed to the file.
fn read_marker(db: &Database) -> Result<u64, redb::Error> {
    let txn = db.begin_read()?;
    Ok(txn.open_table(tables::META)?.get(tables::BATCH)?.map_or(0, |v| v.value()))
}

/// See [`crate::fuzzing::order_record`].
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_order_record(bytes: &[u8]) {
    if let Ok(record) = tables::decode_order(bytes)
        && record.finished.is_none()
    {
        let again =
            tables::encode_order(record.seq, record.worker, record.tenant, record.request, None);
        assert_eq!(again, bytes, "an unfinished order record re-encodes to itself");
    }
}

/// How many announcements a subscriber may fall behind before it is told it missed some.
const WAKEUP_CAPACITY: usize = 8192;

impl RedbStore {
    /// Opens (or creates) the store in the file `path`, queues every unfinished order again, and
    /// starts the writer thread. The file is readable and writable by its owner only (0600)
    /// whatever the umask; an existing one loses any group and other access.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the file cannot be opened (another process holding it, say).
    pub fn open(path: &Path, options: RedbStoreOptions) -> Result<Self, StoreError> {
        Self::open_with(path, options, opener(options.cache_bytes, space::Allocated::new))
    }

    /// As [`RedbStore::open`], with redb reaching the file through the storage backend that
    /// `backend` makes of it, every time the file is opened (again after a failed commit): for
    /// tests that make the storage fail.
    ///
    /// # Errors
    /// As [`RedbStore::open`].
    pub fn open_with_backend<B, F>(
        path: &Path,
        options: RedbStoreOptions,
        backend: F,
    ) -> Result<Self, StoreError>
    where
        B: redb::StorageBackend,
        F: Fn(std::fs::File) -> B + Send + Sync + 'static,
    {
        Self::open_with(path, options, opener(options.cache_bytes, move |file| Ok(backend(file))))
    }

    fn open_with(
        path: &Path,
        options: RedbStoreOptions,
        opener: Opener,
    ) -> Result<Self, StoreError> {
        create_private_file(path).map_err(StoreError::backend)?;
        let db = opener(path).map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        tables::create_all(&txn).map_err(StoreError::backend)?;
        txn.commit().map_err(backend)?;
        let committed = read_marker(&db).map_err(StoreError::backend)?;
        let (queues, sequences) = queues::rebuild(&db).map_err(StoreError::backend)?;
        let next_submit = Arc::clone(&sequences.next_submit);
        let finished = Arc::clone(&sequences.finished_count);
        let queues = Arc::new(Mutex::new(queues));
        let db = Arc::new(RwLock::new(Some(db)));
        let (writer, jobs) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let health = Arc::new(watch::Sender::new(StoreHealth::Writable));
        let wakeups = WakeupSender::new(WAKEUP_CAPACITY);
        let state = Writer {
            db: Arc::clone(&db),
            queues: Arc::clone(&queues),
            options,
            sequences,
            commits: Arc::clone(&commits),
            failures: Arc::clone(&failures),
            health: Arc::clone(&health),
            wakeups: wakeups.clone(),
            opener,
            path: path.to_owned(),
            committed,
            trial_failed: false,
        };
        let writer_thread = std::thread::Builder::new()
            .name("afallon-store-writer".into())
            .spawn(move || state.run(&jobs))
            .map_err(StoreError::backend)?;
        Ok(Self {
            db,
            queues,
            next_submit,
            finished,
            max_orders: options.max_orders,
            writer: Some(writer),
            writer_thread: Some(writer_thread),
            commits,
            failures,
            health,
            wakeups,
        })
    }

    async fn write<O: WriteOp>(&self, op: O) -> Result<O::Output, StoreError> {
        let (job, answer) = Pending::new(op);
        let writer = self.writer.as_ref().ok_or(StoreError::Closed)?;
        writer.send(Box::new(job)).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a snapshot. An I/O error (or redb's refusal after one, until the writer has
    /// reopened the file) is [`StoreError::Unavailable`], and has the writer find out whether
    /// the store can still write (redb refuses writes too after one).
    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let guard = read_db(&self.db);
        let db = guard.as_ref().ok_or(StoreError::Unavailable)?;
        let outcome = db.begin_read().map_err(redb::Error::from).and_then(|txn| f(&txn));
        drop(guard);
        outcome.map_err(|error| match error {
            redb::Error::Io(_) | redb::Error::PreviousIo => {
                self.probe();
                StoreError::Unavailable
            }
            redb::Error::Corrupted(_) => StoreError::Corrupt { what: "a stored record" },
            error => StoreError::backend(error),
        })
    }

    /// Has the writer try a commit, without waiting for it.
    fn probe(&self) {
        if let Some(writer) = &self.writer {
            let (job, _) = Pending::new(ops::Probe);
            let _ = writer.send(Box::new(job));
        }
    }

    /// [`StoreError::Unavailable`] or [`StoreError::Uncertain`] unless the store can write.
    fn writable(&self) -> Result<(), StoreError> {
        match *self.health.borrow() {
            StoreHealth::Writable => Ok(()),
            StoreHealth::Failing => Err(StoreError::Unavailable),
            StoreHealth::Lost => Err(StoreError::Uncertain),
        }
    }
}

/// Creates the store's file readable and writable by its owner only (0600, whatever the umask)
/// before redb opens it, and takes group and other access away from an existing one: it holds
/// every request, result and receipt.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Store for RedbStore {
    async fn put_worker(&self, worker_id: &str, record: &WorkerRecord) -> Result<(), StoreError> {
        self.write(ops::PutWorker { id: worker_id.to_owned(), record: record.clone() }).await
    }

    async fn worker(&self, worker_id: &str) -> Result<Option<WorkerRecord>, StoreError> {
        let json = self.read(|txn| {
            Ok(txn.open_table(WORKERS)?.get(worker_id)?.map(|v| v.value().to_owned()))
        })?;
        json.map(|json| tables::decode_json(&json, "worker record")).transpose()
    }

    async fn look_up_workers(
        &self,
        filter: &WorkerFilter,
        look_up: &LookUp,
    ) -> Result<Vec<String>, StoreError> {
        let fields = tables::worker_filter(filter);
        self.read(|txn| {
            let index = txn.open_table(WORKER_INDEX)?;
            let all = txn.open_table(WORKERS)?;
            tables::look_up(&index, &all, &fields, look_up.after.as_deref(), look_up.limit)
        })
    }

    async fn submit(&self, order: NewOrder) -> Result<SubmitOutcome, StoreError> {
        {
            let mut queues = lock(&self.queues);
            let id = &order.work_order_id;
            if queues.volatile.contains_key(id) || !queues.writing.insert(id.clone()) {
                return Ok(SubmitOutcome::Duplicate);
            }
        }
        // The writer takes the id out of `writing` once the batch is committed or failed.
        self.write(ops::Submit(order)).await
    }

    async fn submit_volatile(&self, mut order: NewOrder) -> Result<SubmitOutcome, StoreError> {
        // Its requester waits for a result that could not be stored.
        self.writable()?;
        let id = order.work_order_id.clone();
        let full = {
            let mut queues = lock(&self.queues);
            if queues.volatile.contains_key(&id) || queues.writing.contains(&id) {
                return Ok(SubmitOutcome::Duplicate);
            }
            let full = queues.stored + queues.volatile.len() as u64 >= self.max_orders
                || order.worker_id.len() > tables::MAX_RECORD_ID;
            if !full {
                // Reserved before the file is read: a durable submission of the same id from now
                // on sees it, and one committed before is in the snapshot read below.
                let seq = self.next_submit.fetch_add(1, Ordering::Relaxed);
                let request: Arc<[u8]> = Arc::from(std::mem::take(&mut order.request));
                let queue = queues.queue_for(&order.worker_id, &order.requester_id);
                queues.volatile.insert(id.clone(), Volatile { queue, seq, request });
            }
            full
        };
        if full {
            // Making room (or refusing as busy) is the writer's part.
            return self.submit(order).await;
        }
        // An id in the file, or purged from it, is taken; the worker must exist.
        let worker = lock(&self.queues).volatile.get(&id).map(|v| v.queue.worker.clone());
        let checked = self.read(|txn| {
            if txn.open_table(ORDERS)?.get(id.as_str())?.is_some()
                || tables::was_purged(&txn.open_table(PURGED)?, &id)?
            {
                return Ok(SubmitOutcome::Duplicate);
            }
            let known = match &worker {
                Some(worker) => txn.open_table(WORKERS)?.get(worker.as_str())?.is_some(),
                None => false,
            };
            Ok(if known { SubmitOutcome::Accepted } else { SubmitOutcome::NoSuchWorker })
        });
        let mut queues = lock(&self.queues);
        let volatile = match checked {
            Ok(SubmitOutcome::Accepted) => queues.volatile.get(&id).cloned(),
            _ => None,
        };
        let Some(volatile) = volatile else {
            queues.volatile.remove(&id);
            return checked;
        };
        let worker_id = volatile.queue.worker.clone();
        let queued = Queued { id, request: volatile.request };
        queues.enqueue(volatile.queue, volatile.seq, queued);
        drop(queues);
        self.wakeups.send(Wakeup::Queued { worker_id });
        Ok(SubmitOutcome::Accepted)
    }

    async fn persist(&self, work_order_id: &str) -> Result<bool, StoreError> {
        if !lock(&self.queues).volatile.contains_key(work_order_id) {
            return Ok(false);
        }
        self.write(ops::Persist { id: work_order_id.to_owned() }).await
    }

    async fn status(&self, work_order_id: &str) -> Result<OrderStatus, StoreError> {
        // Volatile first: an order leaves `volatile` only after its write is visible to readers.
        if lock(&self.queues).volatile.contains_key(work_order_id) {
            return Ok(OrderStatus::Pending);
        }
        self.read(|txn| {
            let Some(record) = txn.open_table(ORDERS)?.get(work_order_id)? else {
                return Ok(if tables::was_purged(&txn.open_table(PURGED)?, work_order_id)? {
                    OrderStatus::Purged
                } else {
                    OrderStatus::Unknown
                });
            };
            Ok(match tables::decode_order(record.value())?.finished {
                Some(done) => OrderStatus::Done(OrderResult {
                    response: done.response.to_owned(),
                    failed: done.failed,
                }),
                None => OrderStatus::Pending,
            })
        })
    }

    async fn request(&self, work_order_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(volatile) = lock(&self.queues).volatile.get(work_order_id) {
            return Ok(Some(volatile.request.to_vec()));
        }
        self.read(|txn| {
            let orders = txn.open_table(ORDERS)?;
            let Some(record) = orders.get(work_order_id)? else { return Ok(None) };
            Ok(Some(tables::decode_order(record.value())?.request.to_vec()))
        })
    }

    async fn put_tenant(&self, worker_id: &str, requester_id: &str) -> Result<(), StoreError> {
        if requester_id.len() > MAX_TENANT_BYTES || requester_id.is_empty() {
            return Err(StoreError::Invalid { what: "tenant id" });
        }
        let (worker, requester) = (worker_id.to_owned(), requester_id.to_owned());
        self.write(ops::PutTenant { worker, requester }).await
    }

    async fn claim(
        &self,
        worker_id: &str,
        tenant: Option<&str>,
        holder: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<Claimed>, StoreError> {
        let queue = QueueKey::new(worker_id, tenant);
        let mut queues = lock(&self.queues);
        let Some((seq, queued)) = queues.by_queue.get_mut(&queue).and_then(BTreeMap::pop_first)
        else {
            return Ok(None);
        };
        let expires = now_ms.saturating_add(lease_ms);
        queues.expiries.insert((expires, queued.id.clone()));
        let request = queued.request.to_vec();
        let lease = queues::Lease {
            holder: holder.to_owned(),
            queue,
            seq,
            expires,
            request: queued.request,
        };
        queues.leases.insert(queued.id.clone(), lease);
        Ok(Some(Claimed { work_order_id: queued.id, request }))
    }

    async fn renew(
        &self,
        work_order_id: &str,
        holder: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut queues = lock(&self.queues);
        let Some(lease) = queues.leases.get_mut(work_order_id).filter(|l| l.holder == holder)
        else {
            return Ok(false);
        };
        let (before, after) = (lease.expires, now_ms.saturating_add(lease_ms).max(lease.expires));
        lease.expires = after;
        queues.expiries.remove(&(before, work_order_id.to_owned()));
        queues.expiries.insert((after, work_order_id.to_owned()));
        Ok(true)
    }

    async fn complete(
        &self,
        work_order_id: &str,
        holder: &str,
        result: OrderResult,
        sealed: Option<SealedBlob>,
    ) -> Result<Completion, StoreError> {
        let op = ops::Complete {
            id: work_order_id.to_owned(),
            holder: holder.to_owned(),
            result,
            sealed,
        };
        self.write(op).await
    }

    async fn requeue_expired(&self, now_ms: u64) -> Result<u64, StoreError> {
        let workers = lock(&self.queues).requeue_expired(now_ms);
        let count = workers.len() as u64;
        let mut workers = workers;
        workers.sort_unstable();
        workers.dedup();
        for worker_id in workers {
            self.wakeups.send(Wakeup::Queued { worker_id });
        }
        Ok(count)
    }

    async fn counts(&self) -> Result<OrderCounts, StoreError> {
        let (queued, processing) = {
            let queues = lock(&self.queues);
            (queues.by_queue.values().map(|q| q.len() as u64).sum(), queues.leases.len() as u64)
        };
        let finished = self.finished.load(Ordering::Relaxed);
        Ok(OrderCounts { queued, processing, finished })
    }

    async fn put_sealed(&self, sealed: SealedBlob) -> Result<(), StoreError> {
        self.write(ops::PutSealed(sealed)).await
    }

    async fn sealed(&self, prefix: &str) -> Result<Vec<SealedBlob>, StoreError> {
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
                    based_on: None,
                    version: tables::sealed_version(value),
                    blob: value.get(8..).unwrap_or_default().to_vec(),
                });
            }
            Ok(out)
        })
    }

    async fn create_receipt(
        &self,
        work_order_id: &str,
        create: &ReceiptCreate,
    ) -> Result<ReceiptCreation, StoreError> {
        self.write(ops::CreateReceipt { id: work_order_id.to_owned(), create: create.clone() })
            .await
    }

    async fn add_receipt_update(
        &self,
        work_order_id: &str,
        update: &ReceiptUpdate,
    ) -> Result<Option<u64>, StoreError> {
        self.write(ops::AddUpdate { id: work_order_id.to_owned(), update: update.clone() }).await
    }

    async fn add_worker_receipt_update(
        &self,
        work_order_id: &str,
        update: &ReceiptUpdate,
    ) -> Result<bool, StoreError> {
        let op = ops::AddWorkerUpdate { id: work_order_id.to_owned(), update: update.clone() };
        self.write(op).await
    }

    async fn receipts_awaiting_update(
        &self,
        worker_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, OrderResult)>, StoreError> {
        self.read(|txn| {
            let awaiting = txn.open_table(AWAITING)?;
            let orders = txn.open_table(ORDERS)?;
            let mut out = Vec::new();
            for entry in awaiting.range((worker_id, "")..)? {
                if out.len() >= limit {
                    break;
                }
                let key = entry?.0;
                let (worker, id) = key.value();
                if worker != worker_id {
                    break;
                }
                let Some(record) = orders.get(id)? else { continue };
                if let Some(done) = tables::decode_order(record.value())?.finished {
                    let result =
                        OrderResult { response: done.response.to_owned(), failed: done.failed };
                    out.push((id.to_owned(), result));
                }
            }
            Ok(out)
        })
    }

    async fn receipt(&self, work_order_id: &str) -> Result<Option<StoredReceipt>, StoreError> {
        let stored = self.read(|txn| {
            let receipts = txn.open_table(RECEIPTS)?;
            let updates = txn.open_table(RECEIPT_UPDATES)?;
            tables::read_receipt(&receipts, &updates, work_order_id)
        })?;
        let Some((create, updates)) = stored else { return Ok(None) };
        Ok(Some(StoredReceipt {
            create: tables::decode_json(&create, "receipt")?,
            updates: updates
                .iter()
                .map(|update| tables::decode_json(update, "receipt update"))
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn look_up_receipts(
        &self,
        filter: &ReceiptFilter,
        look_up: &LookUp,
    ) -> Result<Vec<String>, StoreError> {
        let fields = tables::receipt_filter(filter);
        self.read(|txn| {
            let index = txn.open_table(RECEIPT_INDEX)?;
            let all = txn.open_table(RECEIPTS)?;
            tables::look_up(&index, &all, &fields, look_up.after.as_deref(), look_up.limit)
        })
    }

    fn wakeups(&self) -> Wakeups {
        self.wakeups.subscribe()
    }

    fn health(&self) -> watch::Receiver<StoreHealth> {
        self.health.subscribe()
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            write_failures: self.failures.load(Ordering::Relaxed),
        }
    }
}
