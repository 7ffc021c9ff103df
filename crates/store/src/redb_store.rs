//! The embedded store on redb: one file, one process.
//!
//! What must survive a crash is on disk: workers, every acknowledged order with its raw request,
//! responses, receipts and sealed blobs. What need not is in memory: the per-worker queues and the
//! leases, rebuilt when the store opens (every unfinished order queued again, in submission order,
//! which is also what an expired lease would do), and the synchronous submissions nobody has been
//! answered for yet. So a claim touches no disk at all, and an order costs two durable writes (its
//! submission and its completion), or one for a synchronous submission (written with its result).
//!
//! Reads use redb's MVCC snapshots from any thread. Every durable write goes to one writer thread,
//! which takes all the writes waiting for it, applies them in one transaction and commits once
//! (one fsync), then answers each caller: group commit, so that many concurrent submissions share
//! a single fsync and none is acknowledged before it is on disk.
//!
//! A commit can fail (a full disk, an I/O error), and redb then refuses everything, reads too,
//! until the database is opened again. So the writer answers every write of the failed batch with
//! [`StoreError::NotStored`], applies none of its changes in memory (nothing of it is in the
//! file), ends the leases of the completions in it (their orders are queued again) and forgets
//! synchronous submissions whose write failed. Then it reopens the file, which runs redb's
//! recovery, and tries commits of its own (writing 256 KiB, then freeing it inside the file),
//! again and again with a growing pause, answering writes [`StoreError::Unavailable`] meanwhile;
//! once they succeed the store writes as before. Every commit records its number in the file (`meta`), so that a reopened file shows
//! whether the failed commit reached it after all (its writes all made it to the file, and only
//! the sync failed); then what was answered and what is in memory may differ from the file, and
//! the store refuses every write until a restart ([`StoreHealth::Lost`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::time::{Duration, Instant};

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use tokio::sync::{oneshot, watch};

use crate::{
    Claimed, Completion, NewOrder, OrderCounts, OrderStatus, ReceiptCreation, SealedBlob, Store,
    StoreError, StoreHealth, StoredReceipt, SubmitOutcome,
};

const WORKERS: TableDefinition<'static, &str, &str> = TableDefinition::new("workers");
/// Work-order id → the order and, once finished, its response, in one record (see
/// [`encode_order`]): one B-tree entry written per order in synchronous mode, and one removed when
/// it is purged.
const ORDERS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("work_orders");
const RECEIPTS: TableDefinition<'static, &str, &str> = TableDefinition::new("receipts");
const RECEIPT_UPDATES: TableDefinition<'static, (&str, u64), &str> =
    TableDefinition::new("receipt_updates");
/// Sealed blob key → version (8 bytes BE) || blob.
const SEALED: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("sealed");
/// [`purged_key`] of every order ever purged → nothing: what keeps a purged id from being accepted
/// again, written in the transaction that purges the order. It only grows: 16 bytes of key per
/// purged order, 24 to 36 bytes of file with redb's B-tree (measured over a million purges in
/// batches of a thousand: 36 MB, 23 MB once compacted).
const PURGED: TableDefinition<'static, [u8; PURGED_KEY_BYTES], ()> =
    TableDefinition::new("purged_orders");

/// The store's own records: under [`BATCH`], the number of the last batch committed, written by
/// every commit.
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
const BATCH: &str = "batch";

/// Where a trial commit after a failure writes [`HEADROOM_BYTES`], removed by the next commit: the
/// store writes again only once it has that much room, and then has it inside its file.
const HEADROOM: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("headroom");
const HEADROOM_BYTES: usize = 256 << 10;

/// The first pause between trial commits while the store is failing; it doubles with each
/// trial, up to [`RETRY_MOST`]. A trial that fails leaves redb refusing reads too until the file
/// is opened again, which scans it: trials are spaced so that reads are served nearly all the
/// time, and a store that can write again finds out within a few seconds.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MOST: Duration = Duration::from_secs(5);

/// Opens the database file: when the store opens, and again after a failed commit.
type Opener = Box<dyn Fn(&Path) -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// The length of a [`purged_key`].
const PURGED_KEY_BYTES: usize = 16;

/// A purged order's key in [`PURGED`]: the first 16 bytes of SHA-256 of its id, whatever the id's
/// length. Two ids share a key with probability about n²/2¹²⁹ after n purges (below 10⁻¹⁹ after
/// 10⁹), and a shared key only refuses the newer id as a duplicate.
fn purged_key(id: &str) -> [u8; PURGED_KEY_BYTES] {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let mut key = [0; PURGED_KEY_BYTES];
    key.copy_from_slice(&digest[..PURGED_KEY_BYTES]);
    key
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

/// A stored order.
struct OrderRecord<'a> {
    seq: u64,
    worker: &'a str,
    request: &'a [u8],
    /// The finish sequence (the purge order) and the worker's JSON-RPC response, once finished.
    finished: Option<(u64, &'a str)>,
}

/// Submission sequence (8 bytes BE), worker id length (2 bytes BE), worker id, request length
/// (4 bytes BE), raw request, then, once the order is finished, the finish sequence (8 bytes BE)
/// and the response (UTF-8).
fn encode_order(seq: u64, worker: &str, request: &[u8], finished: Option<(u64, &str)>) -> Vec<u8> {
    let response = finished.map_or("", |(_, response)| response);
    let mut out = Vec::with_capacity(22 + worker.len() + request.len() + response.len());
    out.extend_from_slice(&seq.to_be_bytes());
    // Worker ids are 64 hex characters and requests are capped far below 4 GiB; anything longer
    // was refused by the caller.
    out.extend_from_slice(&u16::try_from(worker.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(worker.as_bytes());
    out.extend_from_slice(&u32::try_from(request.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(request);
    if let Some((finish, response)) = finished {
        out.extend_from_slice(&finish.to_be_bytes());
        out.extend_from_slice(response.as_bytes());
    }
    out
}

fn decode_order(bytes: &[u8]) -> Result<OrderRecord<'_>, redb::Error> {
    let corrupt = || redb::Error::Corrupted("order record".into());
    let (seq, rest) = bytes.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(corrupt)?;
    let (worker, rest) =
        rest.split_at_checked(usize::from(u16::from_be_bytes(*len))).ok_or_else(corrupt)?;
    let worker = std::str::from_utf8(worker).map_err(|_| corrupt())?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| corrupt())?;
    let (request, rest) = rest.split_at_checked(len).ok_or_else(corrupt)?;
    let finished = match rest {
        [] => None,
        rest => {
            let (finish, response) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
            let response = std::str::from_utf8(response).map_err(|_| corrupt())?;
            Some((u64::from_be_bytes(*finish), response))
        }
    };
    Ok(OrderRecord { seq: u64::from_be_bytes(*seq), worker, request, finished })
}

/// An order waiting in memory, with its request, so that claiming reads nothing from disk.
#[derive(Debug, Clone)]
struct Queued {
    id: String,
    request: Arc<[u8]>,
}

#[derive(Debug)]
struct Lease {
    /// Who claimed it: the only one who may renew it and complete the order.
    holder: String,
    worker: String,
    seq: u64,
    expires: u64,
    request: Arc<[u8]>,
}

/// An order queued by `submit_volatile` and not written yet.
#[derive(Debug, Clone)]
struct Volatile {
    worker: String,
    seq: u64,
    request: Arc<[u8]>,
}

/// The queues and leases: memory only.
#[derive(Debug, Default)]
struct Queues {
    by_worker: HashMap<String, BTreeMap<u64, Queued>>,
    leases: HashMap<String, Lease>,
    expiries: BTreeSet<(u64, String)>,
    /// Orders stored (finished or not), for retention.
    stored: u64,
    /// Orders queued without being written, until their write is committed.
    volatile: HashMap<String, Volatile>,
    /// Ids of durable submissions sent to the writer and not yet applied: with `volatile`, what
    /// a submission must not duplicate beyond what the file holds.
    writing: HashSet<String>,
}

impl Queues {
    fn enqueue(&mut self, worker: &str, seq: u64, queued: Queued) {
        self.by_worker.entry(worker.to_owned()).or_default().insert(seq, queued);
    }

    /// Forgets a finished order, whether leased or queued again after its lease expired.
    fn finish(&mut self, id: &str, worker: &str, seq: u64) {
        if let Some(lease) = self.leases.remove(id) {
            self.expiries.remove(&(lease.expires, id.to_owned()));
        }
        if let Some(queue) = self.by_worker.get_mut(worker) {
            queue.remove(&seq);
        }
    }

    /// Forgets a volatile order whose write failed (its requester is told it was not stored),
    /// whether queued or leased.
    fn forget_volatile(&mut self, id: &str) {
        let Some(volatile) = self.volatile.remove(id) else { return };
        if let Some(lease) = self.leases.remove(id) {
            self.expiries.remove(&(lease.expires, id.to_owned()));
        }
        if let Some(queue) = self.by_worker.get_mut(&volatile.worker) {
            queue.remove(&volatile.seq);
        }
    }

    /// Ends `holder`'s lease on an order whose completion was not stored, and queues the order
    /// again in its place: that run is over.
    fn release(&mut self, id: &str, holder: &str) {
        if self.leases.get(id).is_none_or(|lease| lease.holder != holder) {
            return;
        }
        if let Some(lease) = self.leases.remove(id) {
            self.expiries.remove(&(lease.expires, id.to_owned()));
            let queued = Queued { id: id.to_owned(), request: lease.request };
            self.enqueue(&lease.worker, lease.seq, queued);
        }
    }
}

/// What a committed batch changes in memory.
enum Effect {
    Enqueue {
        worker: String,
        seq: u64,
        queued: Queued,
    },
    Finish {
        id: String,
        worker: String,
        seq: u64,
    },
    Stored(u64),
    /// A volatile order is now in the file.
    Written(String),
}

enum Op {
    PutWorker {
        id: String,
        record: String,
    },
    Submit(NewOrder),
    Persist {
        id: String,
    },
    Complete {
        id: String,
        holder: String,
        response: String,
        sealed: Option<SealedBlob>,
        receipt_update: Option<String>,
    },
    AddUpdateIfFinished {
        id: String,
        update: String,
    },
    PutSealed(SealedBlob),
    /// Nothing but the commit itself: a reader met an I/O error, and the writer finds out whether
    /// the store can still write.
    Probe,
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
    Complete(Completion),
    Receipt(ReceiptCreation),
    Update(Option<u64>),
    Appended(bool),
    Persisted(bool),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
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
    writer: Option<mpsc::Sender<Job>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    commits: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    health: Arc<watch::Sender<StoreHealth>>,
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
    Ok(txn.open_table(META)?.get(BATCH)?.map_or(0, |v| v.value()))
}

/// The order counters, submissions (shared with volatile submissions) and finishes, and the
/// purge order, which only the writer uses: kept in memory (rebuilt from the records when the
/// store opens) rather than in a table of its own, one table fewer to write in every commit.
struct Sequences {
    next_submit: Arc<AtomicU64>,
    next_finish: u64,
    /// Finish sequence → id of every finished order, as of the last commit and this batch.
    finished: BTreeMap<u64, String>,
    /// `finished.len()` as of the last commit, for readers.
    finished_count: Arc<AtomicU64>,
    /// This batch's changes to `finished`, to undo if it fails: finishes added, entries purged.
    added: Vec<u64>,
    purged: Vec<(u64, String)>,
}

impl Sequences {
    fn finish(&mut self, id: &str) -> u64 {
        let finish = self.next_finish;
        self.next_finish += 1;
        self.finished.insert(finish, id.to_owned());
        self.added.push(finish);
        finish
    }

    fn pop_oldest_finished(&mut self) -> Option<String> {
        let (finish, id) = self.finished.pop_first()?;
        self.purged.push((finish, id.clone()));
        Some(id)
    }

    /// A new batch begins.
    fn begin(&mut self) {
        self.added.clear();
        self.purged.clear();
    }

    /// The batch failed: the finishes it added and the orders it purged are as before.
    fn undo(&mut self) {
        if let Some(&first) = self.added.first() {
            self.next_finish = first;
        }
        for finish in self.added.drain(..) {
            self.finished.remove(&finish);
        }
        self.finished.extend(self.purged.drain(..));
    }
}

impl RedbStore {
    /// Opens (or creates) the store in the file `path`, queues every unfinished order again, and
    /// starts the writer thread. The file is readable and writable by its owner only (0600)
    /// whatever the umask; an existing one loses any group and other access.
    ///
    /// # Errors
    /// [`StoreError::Storage`] if the file cannot be opened (another process holding it, say).
    pub fn open(path: &Path, options: RedbStoreOptions) -> Result<Self, StoreError> {
        let cache = options.cache_bytes;
        let opener: Opener =
            Box::new(move |path: &Path| Database::builder().set_cache_size(cache).create(path));
        Self::open_with(path, options, opener)
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
        let cache = options.cache_bytes;
        let opener: Opener = Box::new(move |path: &Path| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            Database::builder().set_cache_size(cache).create_with_backend(backend(file))
        });
        Self::open_with(path, options, opener)
    }

    fn open_with(
        path: &Path,
        options: RedbStoreOptions,
        opener: Opener,
    ) -> Result<Self, StoreError> {
        create_private_file(path).map_err(storage)?;
        let db = opener(path).map_err(storage)?;
        // Create every table so that readers never meet a missing one.
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(WORKERS).map_err(storage)?;
            txn.open_table(ORDERS).map_err(storage)?;
            txn.open_table(RECEIPTS).map_err(storage)?;
            txn.open_table(RECEIPT_UPDATES).map_err(storage)?;
            txn.open_table(SEALED).map_err(storage)?;
            txn.open_table(PURGED).map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
            txn.open_table(HEADROOM).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        let committed = read_marker(&db).map_err(storage)?;
        let (queues, sequences) = rebuild(&db).map_err(storage)?;
        let next_submit = Arc::clone(&sequences.next_submit);
        let finished = Arc::clone(&sequences.finished_count);
        let queues = Arc::new(Mutex::new(queues));
        let db = Arc::new(RwLock::new(Some(db)));
        let (writer, jobs) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let health = Arc::new(watch::Sender::new(StoreHealth::Writable));
        let state = Writer {
            db: Arc::clone(&db),
            queues: Arc::clone(&queues),
            options,
            sequences,
            commits: Arc::clone(&commits),
            failures: Arc::clone(&failures),
            health: Arc::clone(&health),
            opener,
            path: path.to_owned(),
            committed,
            trial_failed: false,
        };
        let writer_thread = std::thread::Builder::new()
            .name("afallon-store-writer".into())
            .spawn(move || state.run(&jobs))
            .map_err(storage)?;
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
        })
    }

    async fn write(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, answer) = oneshot::channel();
        let writer = self.writer.as_ref().ok_or(StoreError::Closed)?;
        writer.send(Job { op, reply }).map_err(|_| StoreError::Closed)?;
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
            error => storage(error),
        })
    }

    /// Has the writer try a commit, without waiting for it.
    fn probe(&self) {
        if let Some(writer) = &self.writer {
            let (reply, _) = oneshot::channel();
            let _ = writer.send(Job { op: Op::Probe, reply });
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
/// every request, response and receipt.
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

/// The in-memory state from the file: every unfinished order queued, in submission order.
fn rebuild(db: &Database) -> Result<(Queues, Sequences), redb::Error> {
    let txn = db.begin_read()?;
    let orders = txn.open_table(ORDERS)?;
    let mut queues = Queues { stored: orders.len()?, ..Queues::default() };
    let mut next_submit = 0;
    let mut finished = BTreeMap::new();
    for entry in orders.iter()? {
        let (id, value) = entry?;
        let record = decode_order(value.value())?;
        next_submit = next_submit.max(record.seq + 1);
        match record.finished {
            Some((finish, _)) => {
                finished.insert(finish, id.value().to_owned());
            }
            None => {
                let id = id.value().to_owned();
                queues.enqueue(
                    record.worker,
                    record.seq,
                    Queued { id, request: record.request.into() },
                );
            }
        }
    }
    let next_finish = finished.last_key_value().map_or(0, |(finish, _)| finish + 1);
    let sequences = Sequences {
        next_submit: Arc::new(AtomicU64::new(next_submit)),
        next_finish,
        finished_count: Arc::new(AtomicU64::new(finished.len() as u64)),
        finished,
        added: Vec::new(),
        purged: Vec::new(),
    };
    Ok((queues, sequences))
}

fn unexpected() -> StoreError {
    StoreError::Corrupt("the writer answered with another kind of reply".into())
}

/// The writer thread: every durable write goes through it.
struct Writer {
    db: Arc<RwLock<Option<Database>>>,
    queues: Arc<Mutex<Queues>>,
    options: RedbStoreOptions,
    sequences: Sequences,
    commits: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    health: Arc<watch::Sender<StoreHealth>>,
    opener: Opener,
    path: PathBuf,
    /// The number of the last batch committed, which the file records in [`META`].
    committed: u64,
    /// Whether the last commit that failed was a trial (which holds nothing of anyone's, so
    /// finding it in the file after all is harmless).
    trial_failed: bool,
}

impl Writer {
    fn run(mut self, jobs: &mpsc::Receiver<Job>) {
        let mut last_commit = Instant::now();
        // The pause before the next trial after a failure. It grows with every trial, and is
        // reset only by a commit of writes: a disk with room for a trial commit but not for
        // the writes waiting is tried less and less often.
        let mut pause = Duration::ZERO;
        let mut next_try = Instant::now();
        loop {
            let health = *self.health.borrow();
            if health != StoreHealth::Writable {
                if health == StoreHealth::Failing && Instant::now() >= next_try {
                    pause = (pause * 2).clamp(RETRY_FIRST, RETRY_MOST);
                    if self.recover() {
                        continue;
                    }
                    next_try = Instant::now() + pause;
                }
                // Until the next trial, every write is answered at once.
                let error = match *self.health.borrow() {
                    StoreHealth::Lost => StoreError::Uncertain,
                    _ => StoreError::Unavailable,
                };
                let wait = next_try.saturating_duration_since(Instant::now());
                let wait = if health == StoreHealth::Lost { RETRY_MOST } else { wait };
                match jobs.recv_timeout(wait) {
                    Ok(job) => {
                        let mut batch = vec![job];
                        batch.extend(jobs.try_iter());
                        self.fail(batch, &error);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                continue;
            }
            let Ok(first) = jobs.recv() else { return };
            let mut batch = vec![first];
            while batch.len() < self.options.max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            // Under load (writes arriving while the last commit ran) a commit costs far more
            // than one more write in it, so gather for a moment; an idle store commits at once.
            let window = self.options.commit_window;
            if !window.is_zero() && last_commit.elapsed() < window {
                let deadline = Instant::now() + window;
                while batch.len() < self.options.max_batch {
                    match jobs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
            }
            let outcome = self.commit(&batch);
            last_commit = Instant::now();
            match outcome {
                Ok(replies) => {
                    pause = Duration::ZERO;
                    for (job, reply) in batch.into_iter().zip(replies) {
                        let _ = job.reply.send(Ok(reply));
                    }
                }
                Err(error) => {
                    // Nothing of the batch is in the file, nor in memory: its writers are told
                    // so, and the store reopens the file before it writes again.
                    self.health.send_replace(StoreHealth::Failing);
                    let cause = match error {
                        StoreError::Storage(cause) => cause,
                        error => error.to_string(),
                    };
                    tracing::error!(%cause, writes = batch.len(), "a commit failed: nothing of it was stored; the store reopens its file and tries again");
                    self.fail(batch, &StoreError::NotStored(cause));
                    next_try = Instant::now() + pause;
                }
            }
        }
    }

    /// Applies `batch` in one transaction and commits it; on success its changes take effect in
    /// memory. On failure nothing changes but the failure count.
    fn commit(&mut self, batch: &[Job]) -> Result<Vec<Reply>, StoreError> {
        let stored = lock(&self.queues).stored;
        self.sequences.begin();
        let outcome = {
            let guard = read_db(&self.db);
            match guard.as_ref() {
                Some(db) => apply_batch(
                    db,
                    &self.queues,
                    batch,
                    self.options,
                    stored,
                    &mut self.sequences,
                    self.committed + 1,
                ),
                None => Err(StoreError::Unavailable),
            }
        };
        let (replies, effects) = match outcome {
            Ok(done) => done,
            Err(error) => {
                // Its changes to the purge order are undone.
                self.sequences.undo();
                self.failures.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
        };
        self.committed += 1;
        self.commits.fetch_add(1, Ordering::Relaxed);
        let sequences = &self.sequences;
        sequences.finished_count.store(sequences.finished.len() as u64, Ordering::Relaxed);
        let mut queues = lock(&self.queues);
        for effect in effects {
            match effect {
                Effect::Enqueue { worker, seq, queued } => queues.enqueue(&worker, seq, queued),
                Effect::Finish { id, worker, seq } => queues.finish(&id, &worker, seq),
                Effect::Stored(count) => queues.stored = count,
                Effect::Written(id) => {
                    queues.volatile.remove(&id);
                }
            }
        }
        forget_writing(&mut queues, batch);
        Ok(replies)
    }

    /// Answers every write of `batch` with `error`, none of it stored: a submission is no longer
    /// on its way, a volatile order whose write failed is forgotten, and an order whose
    /// completion failed is queued again.
    fn fail(&self, batch: Vec<Job>, error: &StoreError) {
        let mut queues = lock(&self.queues);
        forget_writing(&mut queues, &batch);
        for job in &batch {
            match &job.op {
                Op::Persist { id } => queues.forget_volatile(id),
                Op::Complete { id, holder, .. } => queues.release(id, holder),
                _ => {}
            }
        }
        drop(queues);
        for job in batch {
            let _ = job.reply.send(Err(error.clone()));
        }
    }

    /// Opens the file again (redb recovers it as it opens) and tries two commits of its own
    /// ([`Writer::trial`]); true if they succeeded, and the store writes again. A failed commit of
    /// anyone's found in the file makes the store [`StoreHealth::Lost`].
    fn recover(&mut self) -> bool {
        let on_disk = match self.reopen() {
            Ok(on_disk) => on_disk,
            Err(error) => {
                tracing::warn!(%error, "the store's file cannot be opened again yet");
                self.failures.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        match on_disk {
            batch if batch == self.committed => {}
            batch if self.trial_failed && batch == self.committed + 1 => self.committed = batch,
            batch => {
                tracing::error!(
                    in_file = batch,
                    committed = self.committed,
                    "a commit that failed is in the store's file after all: the store must be reopened by a restart"
                );
                self.health.send_replace(StoreHealth::Lost);
                return false;
            }
        }
        if let Err(error) = self.trial() {
            tracing::warn!(%error, "the store cannot write yet");
            self.trial_failed = true;
            self.failures.fetch_add(1, Ordering::Relaxed);
            // The failed trial left the database refusing everything: opened again, it serves
            // reads until the next trial. (What the trial may have left in the file is checked
            // then.)
            if let Err(error) = self.reopen() {
                tracing::warn!(%error, "the store's file cannot be opened again yet");
            }
            return false;
        }
        self.trial_failed = false;
        tracing::info!("the store writes again");
        self.health.send_replace(StoreHealth::Writable);
        true
    }

    /// Drops the database and opens the file again (redb recovers it as it opens); returns the
    /// number of the last batch the file holds. Readers hold the lock while they use the
    /// database: once it is out of its slot, nothing uses it, and dropping it closes the file.
    /// Readers meanwhile are told the store is unavailable rather than held up.
    fn reopen(&mut self) -> Result<u64, StoreError> {
        let old = write_db(&self.db).take();
        drop(old);
        let db = (self.opener)(&self.path).map_err(storage)?;
        let on_disk = read_marker(&db).map_err(storage);
        *write_db(&self.db) = Some(db);
        on_disk
    }

    /// Two trial commits: one that writes [`HEADROOM_BYTES`], and one that removes them, which
    /// leaves that much room free inside the file for the writes to come.
    fn trial(&mut self) -> Result<(), StoreError> {
        let room = vec![0; HEADROOM_BYTES];
        for fill in [true, false] {
            let guard = read_db(&self.db);
            let db = guard.as_ref().ok_or(StoreError::Unavailable)?;
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut headroom = txn.open_table(HEADROOM).map_err(storage)?;
                if fill {
                    headroom.insert("room", room.as_slice()).map_err(storage)?;
                } else {
                    headroom.remove("room").map_err(storage)?;
                }
                let mut meta = txn.open_table(META).map_err(storage)?;
                meta.insert(BATCH, self.committed + 1).map_err(storage)?;
            }
            txn.commit().map_err(storage)?;
            self.committed += 1;
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Durable submissions in `batch` are no longer on their way to the file (stored or refused).
fn forget_writing(queues: &mut Queues, batch: &[Job]) {
    for job in batch {
        if let Op::Submit(order) = &job.op {
            queues.writing.remove(&order.work_order_id);
        }
    }
}

fn apply_batch(
    db: &Database,
    queues: &Mutex<Queues>,
    batch: &[Job],
    options: RedbStoreOptions,
    mut stored: u64,
    sequences: &mut Sequences,
    number: u64,
) -> Result<(Vec<Reply>, Vec<Effect>), StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut replies = Vec::with_capacity(batch.len());
    let mut effects = Vec::new();
    let mut filling =
        Batch { txn: &txn, queues, options, stored: &mut stored, effects: &mut effects, sequences };
    for job in batch {
        replies.push(apply(&mut filling, &job.op).map_err(storage)?);
    }
    effects.push(Effect::Stored(stored));
    txn.open_table(META).map_err(storage)?.insert(BATCH, number).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok((replies, effects))
}

/// One write transaction being filled, with what it changes in memory once committed.
struct Batch<'a> {
    txn: &'a WriteTransaction,
    queues: &'a Mutex<Queues>,
    options: RedbStoreOptions,
    /// Orders in the file, as of this transaction.
    stored: &'a mut u64,
    effects: &'a mut Vec<Effect>,
    sequences: &'a mut Sequences,
}

impl Batch<'_> {
    /// Takes the volatile order `id` (if there is one not yet in the file) for the caller to
    /// insert in this transaction, making room for it. It stays volatile in memory until the
    /// transaction commits.
    fn take_volatile(&mut self, id: &str) -> Result<Option<Volatile>, redb::Error> {
        let Some(order) = lock(self.queues).volatile.get(id).cloned() else { return Ok(None) };
        let mut orders = self.txn.open_table(ORDERS)?;
        if orders.get(id)?.is_some() {
            return Ok(None);
        }
        // A volatile order was counted when it was queued; if retention is reached meanwhile, the
        // oldest finished order makes room, or the store holds one more than its limit for a while.
        if *self.stored >= self.options.max_orders && self.purge_oldest(&mut orders)? {
            *self.stored -= 1;
        }
        *self.stored += 1;
        self.effects.push(Effect::Written(id.to_owned()));
        Ok(Some(order))
    }

    /// Writes the volatile order `id` (without a response), if there is one; returns whether it
    /// did.
    fn write_volatile(&mut self, id: &str) -> Result<bool, redb::Error> {
        let Some(order) = self.take_volatile(id)? else { return Ok(false) };
        let record = encode_order(order.seq, &order.worker, &order.request, None);
        self.txn.open_table(ORDERS)?.insert(id, record.as_slice())?;
        Ok(true)
    }

    /// Purges the oldest finished order; false if none is finished.
    fn purge_oldest(
        &mut self,
        orders: &mut redb::Table<'_, &str, &[u8]>,
    ) -> Result<bool, redb::Error> {
        let Some(oldest) = self.sequences.pop_oldest_finished() else { return Ok(false) };
        purge(self.txn, orders, &oldest)?;
        Ok(true)
    }
}

fn apply(batch: &mut Batch<'_>, op: &Op) -> Result<Reply, redb::Error> {
    let txn = batch.txn;
    Ok(match op {
        Op::PutWorker { id, record } => {
            txn.open_table(WORKERS)?.insert(id.as_str(), record.as_str())?;
            Reply::Unit
        }
        Op::Submit(order) => Reply::Submit(submit(batch, order)?),
        Op::Persist { id } => Reply::Persisted(batch.write_volatile(id)?),
        Op::Complete { id, holder, response, sealed, receipt_update } => {
            let held =
                lock(batch.queues).leases.get(id.as_str()).is_some_and(|l| l.holder == *holder);
            if !held {
                return Ok(Reply::Complete(unheld_completion(batch, id)?));
            }
            let volatile = batch.take_volatile(id)?;
            let mut orders = txn.open_table(ORDERS)?;
            let (worker, seq, record) = match volatile {
                // Written once, with its response.
                Some(order) => {
                    let finished = Some((batch.sequences.finish(id), response.as_str()));
                    let record = encode_order(order.seq, &order.worker, &order.request, finished);
                    (order.worker, order.seq, record)
                }
                None => {
                    let Some(stored) = orders.get(id.as_str())? else {
                        return Ok(Reply::Complete(Completion::Unknown));
                    };
                    let stored = decode_order(stored.value())?;
                    if stored.finished.is_some() {
                        return Ok(Reply::Complete(Completion::AlreadyDone));
                    }
                    let finished = Some((batch.sequences.finish(id), response.as_str()));
                    let record = encode_order(stored.seq, stored.worker, stored.request, finished);
                    (stored.worker.to_owned(), stored.seq, record)
                }
            };
            orders.insert(id.as_str(), record.as_slice())?;
            drop(orders);
            batch.effects.push(Effect::Finish { id: id.clone(), worker, seq });
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
        Op::AddUpdateIfFinished { id, update } => {
            let finished = match txn.open_table(ORDERS)?.get(id.as_str())? {
                Some(record) => decode_order(record.value())?.finished.is_some(),
                None => false,
            };
            let has_receipt = txn.open_table(RECEIPTS)?.get(id.as_str())?.is_some();
            let mut updates = txn.open_table(RECEIPT_UPDATES)?;
            let empty = updates.range((id.as_str(), 0)..=(id.as_str(), u64::MAX))?.next().is_none();
            let append = finished && has_receipt && empty;
            if append {
                updates.insert((id.as_str(), 0), update.as_str())?;
            }
            Reply::Appended(append)
        }
        Op::PutSealed(sealed) => {
            put_sealed(txn, sealed)?;
            Reply::Unit
        }
        Op::Probe => Reply::Unit,
        Op::CreateReceipt { id, create } => {
            // A receipt is durable, so the order it is for must be too.
            batch.write_volatile(id)?;
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

/// What a completion from a holder without the order's lease gets: the order is finished, gone,
/// or someone else's (or queued again) to finish.
fn unheld_completion(batch: &Batch<'_>, id: &str) -> Result<Completion, redb::Error> {
    if lock(batch.queues).volatile.contains_key(id) {
        return Ok(Completion::LeaseLost);
    }
    Ok(match batch.txn.open_table(ORDERS)?.get(id)? {
        None => Completion::Unknown,
        Some(record) if decode_order(record.value())?.finished.is_some() => Completion::AlreadyDone,
        Some(_) => Completion::LeaseLost,
    })
}

fn submit(batch: &mut Batch<'_>, order: &NewOrder) -> Result<SubmitOutcome, redb::Error> {
    if order.worker_id.len() > usize::from(u16::MAX) {
        return Ok(SubmitOutcome::Busy);
    }
    let mut orders = batch.txn.open_table(ORDERS)?;
    // Capacity first, then duplicates, as Avalon's listener orders its checks.
    let volatile = lock(batch.queues).volatile.len() as u64;
    if *batch.stored + volatile >= batch.options.max_orders {
        if !batch.purge_oldest(&mut orders)? {
            return Ok(SubmitOutcome::Busy);
        }
        *batch.stored -= 1;
    }
    let id = order.work_order_id.as_str();
    if orders.get(id)?.is_some() || was_purged(batch.txn.open_table(PURGED)?, id)? {
        return Ok(SubmitOutcome::Duplicate);
    }
    let seq = batch.sequences.next_submit.fetch_add(1, Ordering::Relaxed);
    orders.insert(id, encode_order(seq, &order.worker_id, &order.request, None).as_slice())?;
    *batch.stored += 1;
    let queued = Queued { id: id.to_owned(), request: Arc::from(order.request.as_slice()) };
    batch.effects.push(Effect::Enqueue { worker: order.worker_id.clone(), seq, queued });
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

/// Whether `id` is an order that was purged.
fn was_purged(
    purged: impl ReadableTable<[u8; PURGED_KEY_BYTES], ()>,
    id: &str,
) -> Result<bool, redb::Error> {
    Ok(purged.get(purged_key(id))?.is_some())
}

/// Removes a finished order and everything about it, and records that its id was used.
fn purge(
    txn: &WriteTransaction,
    orders: &mut redb::Table<'_, &str, &[u8]>,
    id: &str,
) -> Result<(), redb::Error> {
    orders.remove(id)?;
    txn.open_table(PURGED)?.insert(purged_key(id), ())?;
    if txn.open_table(RECEIPTS)?.remove(id)?.is_none() {
        // Updates exist only for receipts.
        return Ok(());
    }
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
        {
            let mut queues = lock(&self.queues);
            let id = &order.work_order_id;
            if queues.volatile.contains_key(id) || !queues.writing.insert(id.clone()) {
                return Ok(SubmitOutcome::Duplicate);
            }
        }
        // The writer takes the id out of `writing` once the batch is committed or failed.
        match self.write(Op::Submit(order)).await? {
            Reply::Submit(outcome) => Ok(outcome),
            _ => Err(unexpected()),
        }
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
                || order.worker_id.len() > usize::from(u16::MAX);
            if !full {
                // Reserved before the file is read: a durable submission of the same id from now
                // on sees it, and one committed before is in the snapshot read below.
                let seq = self.next_submit.fetch_add(1, Ordering::Relaxed);
                let request: Arc<[u8]> = Arc::from(std::mem::take(&mut order.request));
                let worker = std::mem::take(&mut order.worker_id);
                queues.volatile.insert(id.clone(), Volatile { worker, seq, request });
            }
            full
        };
        if full {
            // Making room (or refusing as busy) is the writer's part.
            return self.submit(order).await;
        }
        // An id in the file, or purged from it, is taken.
        let written = self.read(|txn| {
            Ok(txn.open_table(ORDERS)?.get(id.as_str())?.is_some()
                || was_purged(txn.open_table(PURGED)?, &id)?)
        });
        let mut queues = lock(&self.queues);
        let volatile = match written {
            Ok(false) => queues.volatile.get(&id).cloned(),
            _ => None,
        };
        let Some(volatile) = volatile else {
            queues.volatile.remove(&id);
            drop(queues);
            return written.map(|_| SubmitOutcome::Duplicate);
        };
        let queued = Queued { id, request: volatile.request };
        queues.enqueue(&volatile.worker, volatile.seq, queued);
        Ok(SubmitOutcome::Accepted)
    }

    async fn persist(&self, work_order_id: &str) -> Result<bool, StoreError> {
        if !lock(&self.queues).volatile.contains_key(work_order_id) {
            return Ok(false);
        }
        match self.write(Op::Persist { id: work_order_id.to_owned() }).await? {
            Reply::Persisted(written) => Ok(written),
            _ => Err(unexpected()),
        }
    }

    fn status(&self, work_order_id: &str) -> Result<OrderStatus, StoreError> {
        // Volatile first: an order leaves `volatile` only after its write is visible to readers.
        if lock(&self.queues).volatile.contains_key(work_order_id) {
            return Ok(OrderStatus::Pending);
        }
        self.read(|txn| {
            let Some(record) = txn.open_table(ORDERS)?.get(work_order_id)? else {
                return Ok(if was_purged(txn.open_table(PURGED)?, work_order_id)? {
                    OrderStatus::Purged
                } else {
                    OrderStatus::Unknown
                });
            };
            Ok(match decode_order(record.value())?.finished {
                Some((_, response)) => OrderStatus::Done(response.to_owned()),
                None => OrderStatus::Pending,
            })
        })
    }

    fn request(&self, work_order_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(volatile) = lock(&self.queues).volatile.get(work_order_id) {
            return Ok(Some(volatile.request.to_vec()));
        }
        self.read(|txn| {
            let orders = txn.open_table(ORDERS)?;
            let Some(record) = orders.get(work_order_id)? else { return Ok(None) };
            Ok(Some(decode_order(record.value())?.request.to_vec()))
        })
    }

    async fn claim(
        &self,
        worker_id: &str,
        holder: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<Claimed>, StoreError> {
        let mut queues = lock(&self.queues);
        let Some((seq, queued)) = queues.by_worker.get_mut(worker_id).and_then(BTreeMap::pop_first)
        else {
            return Ok(None);
        };
        let expires = now_ms.saturating_add(lease_ms);
        queues.expiries.insert((expires, queued.id.clone()));
        let request = queued.request.to_vec();
        let lease = Lease {
            holder: holder.to_owned(),
            worker: worker_id.to_owned(),
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
        response: String,
        sealed: Option<SealedBlob>,
        receipt_update: Option<String>,
    ) -> Result<Completion, StoreError> {
        let op = Op::Complete {
            id: work_order_id.to_owned(),
            holder: holder.to_owned(),
            response,
            sealed,
            receipt_update,
        };
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
        let mut queues = lock(&self.queues);
        let expired: Vec<(u64, String)> =
            queues.expiries.iter().take_while(|(expires, _)| *expires < now_ms).cloned().collect();
        for key in &expired {
            queues.expiries.remove(key);
            if let Some(lease) = queues.leases.remove(&key.1) {
                let queued = Queued { id: key.1.clone(), request: lease.request };
                queues.enqueue(&lease.worker, lease.seq, queued);
            }
        }
        Ok(expired.len() as u64)
    }

    fn counts(&self) -> Result<OrderCounts, StoreError> {
        let (queued, processing) = {
            let queues = lock(&self.queues);
            (queues.by_worker.values().map(|q| q.len() as u64).sum(), queues.leases.len() as u64)
        };
        let finished = self.finished.load(Ordering::Relaxed);
        Ok(OrderCounts { queued, processing, finished })
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

    fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
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

    fn health(&self) -> watch::Receiver<StoreHealth> {
        self.health.subscribe()
    }

    fn write_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}
