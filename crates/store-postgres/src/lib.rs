//! The store on PostgreSQL: several processes (listeners, workers, on several machines) share
//! one database, with the guarantees of [`afallon_store`]'s [`Store`] (its conformance suite
//! runs against this backend).
//!
//! # Connections
//!
//! [`PgStore::connect`] takes a libpq-style URL (`postgres://user@host:port/db?...`). Queries
//! go through a pool of [`PgStoreOptions::pool_size`] connections (deadpool-postgres over
//! tokio-postgres); one more connection, outside the pool, LISTENs for wake-ups. TLS to the
//! database is **not supported yet**: connections are plain TCP (or a Unix socket), so keep the
//! database on a trusted network or loopback.
//!
//! Table names are unqualified: the connection's `search_path` decides the schema, e.g.
//! `?options=-csearch_path%3Dafallon` in the URL (the schema must exist). Stores in different
//! schemas of one database are independent, wake-ups included.
//!
//! # Schema and migrations
//!
//! `migrations/NNNN_*.sql`, compiled in, are applied when a store connects, in order, one per
//! transaction, each recorded in `schema_migrations(version, applied_at)`, under a
//! `pg_advisory_xact_lock` per schema, so that processes starting at once are safe. A schema
//! migrated by a newer program is refused ([`StoreError::SchemaTooNew`]).
//!
//! `work_orders` holds each order: queued (no holder, no response), processing (a holder and
//! its lease expiry, in the callers' milliseconds: no database clock is read for leases), or
//! finished (`response`, as `text`, byte for byte, with `failed`). The raw request is `bytea`.
//! The queue depth an autoscaler reads is [`QUEUE_DEPTH_SQL`] (`sql/queue_depth.sql`), the
//! only copy of that query. Workers and receipts keep their typed records as JSON beside the
//! columns look-ups filter on; each look-up is `WHERE <filters> AND id > $after ORDER BY id
//! LIMIT $limit` over an index on (filter column, id), ids in the `"C"` collation (byte order).
//! A receipt's `current_status` follows each update.
//!
//! # Writes
//!
//! Each write is one transaction (or one statement); claims take the oldest queued order of a
//! worker with `FOR NO KEY UPDATE SKIP LOCKED`, so concurrent claims never share an order and
//! never wait for each other; [`Store::requeue_expired`] is one `UPDATE` that any number of
//! processes may run at once.
//!
//! Retention ([`afallon_store::retention`]) needs the number of stored and finished orders
//! inside each submission's transaction. They are kept in 16 counter rows (`order_counts`),
//! each transaction adding its changes, last, to the row its connection's backend pid picks, so
//! that submissions and completions seldom queue behind one row lock (and its commit's fsync:
//! the connections of several processes do share rows), and no transaction waits for a counter
//! while holding one. (A row per connection, tried, cost more CPU in summing 1,024 rows per
//! submission than it saved in waiting.) A full store
//! purges the oldest finished order (by finish order) with `FOR UPDATE SKIP LOCKED`, so two
//! submissions never purge the same order, and neither waits for the other; the purged order's
//! receipt and updates go with it (by cascade), and 16 bytes of SHA-256 of its id stay in
//! `purged_orders`, so that the id is refused as a duplicate forever, as by the embedded store.
//! Submissions committing at the same moment read the counts before each other's commits, so
//! the store can hold a few more orders than `max_orders` (at most one per submission in
//! flight); every later submission then purges up to 16 orders instead of one until the store
//! is back under its limit. No lock serializes submissions, full store or not.
//!
//! PostgreSQL has no in-memory fast path: [`Store::submit_volatile`] writes the order at once,
//! like [`Store::submit`], and [`Store::persist`] has nothing left to write (`Ok(false)`).
//!
//! # Wake-ups
//!
//! Every write that queues work, finishes an order or makes a receipt await its worker's update
//! sends `pg_notify('afallon_wakeups', payload)` inside its transaction, so it is delivered when
//! the transaction commits and never if it does not. The payload is `<kind>:<schema oid>:<id>`
//! with kind `q` (work for worker `id`), `f` (order `id` finished), `r` (a receipt awaits worker
//! `id`'s update), or `m` (re-read everything: an id too long for a notification). Every store,
//! in every process, forwards the notifications of its schema to its [`Wakeups`] subscribers,
//! its own writes' included. If the listening connection fails, or stops answering the ping sent
//! every [`PgStoreOptions::listen_ping`], it connects again with a growing pause and then
//! announces [`Wakeup::Missed`](afallon_store::Wakeup::Missed): notifications are lost only
//! while no connection listens.
//!
//! # Health and errors
//!
//! [`Store::health`] is [`StoreHealth::Writable`] while the database answers. A connection that
//! fails (no connection can be made, or one breaks) makes it [`StoreHealth::Failing`]: the
//! operation gets [`StoreError::Unavailable`], later writes are refused with it at once, and a
//! background task tries the database with a growing pause until it answers, then makes the
//! store writable again. Statements the database refuses are [`StoreError::Backend`]; a commit
//! that fails is [`StoreError::NotStored`]. This backend never reports [`StoreHealth::Lost`]:
//! it holds no state of its own that could disagree with the database. One case is uncertain, as
//! with any client of a server: a connection lost while a `COMMIT` (or a single-statement write)
//! is on its way may have committed it, although the caller is told it was not stored; a retry
//! then finds it (a submission is refused as a duplicate, a completion as already done).
//!
//! # Cancel safety
//!
//! Each write runs in a task of its own, started when its future is first polled: dropping the
//! future does not roll the write back (it may still commit), the caller only does not learn its
//! outcome. Reads are cancel safe.

mod db;
mod listen;
mod migrate;
mod ops;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{Notify, watch};
use tokio_postgres::NoTls;

use afallon_store::{
    Claimed, Completion, LookUp, MAX_TENANT_BYTES, NewOrder, OrderCounts, OrderResult, OrderStatus,
    ReceiptCreate, ReceiptCreation, ReceiptFilter, ReceiptUpdate, SealedBlob, Store, StoreError,
    StoreHealth, StoreStats, StoredReceipt, SubmitOutcome, WakeupSender, Wakeups, WorkerFilter,
    WorkerRecord,
};

use crate::db::{AbortOnDrop, Fail, Inner};

/// The number of orders waiting for a result (queued or processing): the query an autoscaler
/// (KEDA's PostgreSQL scaler) runs too, from the same file.
pub const QUEUE_DEPTH_SQL: &str = include_str!("../sql/queue_depth.sql");

/// The newest schema version this program knows (the last file of `migrations/`).
pub const SCHEMA_VERSION: i64 = migrate::SCHEMA_VERSION;

/// How many announcements a subscriber may fall behind before it is told it missed some.
const WAKEUP_CAPACITY: usize = 8192;

/// Settings of the PostgreSQL store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgStoreOptions {
    /// The most work orders kept; beyond it the oldest finished one is purged, or submissions
    /// are refused as busy.
    pub max_orders: u64,
    /// Pooled connections (the wake-up connection is one more).
    pub pool_size: usize,
    /// How long connecting may take, unless the URL sets `connect_timeout`.
    pub connect_timeout: Duration,
    /// How often the wake-up connection is pinged, to find out that it broke.
    pub listen_ping: Duration,
    /// The longest a statement may run, and a query may wait for a pooled connection: a database
    /// that stops answering (without closing connections) is then reported failing instead of
    /// holding every request. Connections also probe the peer with TCP keepalives and give up on
    /// unacknowledged data after this long.
    pub statement_timeout: Duration,
    /// The most this machine's clock may differ from the database's: leases are stamped by one
    /// process's clock and expired by another's, so processes whose clocks disagree by more than
    /// a fraction of a lease would take each other's orders. Connecting fails beyond it.
    pub max_clock_skew: Duration,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        Self {
            max_orders: 10_000,
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            listen_ping: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            max_clock_skew: Duration::from_secs(5),
        }
    }
}

/// Failures of this backend of its own, as causes of [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgStoreError {
    /// A number does not fit PostgreSQL's `bigint`.
    #[error("{what} {value} is larger than PostgreSQL's bigint holds")]
    OutOfRange {
        /// What the number is.
        what: &'static str,
        /// The number.
        value: u64,
    },
    /// The pool could not be made.
    #[error("cannot make the connection pool: {0}")]
    Pool(String),
    /// No connection for wake-ups could be made.
    #[error("cannot listen for wake-ups: {0}")]
    Listen(String),
    /// PostgreSQL refused a statement.
    #[error("PostgreSQL error {code}: {message}")]
    Database {
        /// The SQLSTATE code.
        code: String,
        /// What the database said.
        message: String,
    },
    /// The task running a write ended without an answer (it panicked).
    #[error("a write's task ended without an answer")]
    WriteTask,
    /// This machine's clock and the database's differ by more than
    /// [`PgStoreOptions::max_clock_skew`].
    #[error(
        "this machine's clock is {skew_ms} ms off the database's (at most {max_ms} ms allowed): \
         leases would expire early or late; synchronize the clocks (NTP)"
    )]
    ClockSkew {
        /// The difference, in milliseconds (positive: this machine is ahead).
        skew_ms: i64,
        /// The most allowed.
        max_ms: u128,
    },
}

/// The PostgreSQL store. Dropping it stops its wake-up and health tasks; writes already handed
/// over still finish.
pub struct PgStore {
    inner: Arc<Inner>,
    /// The runtime it was connected on, which drives its connections: writes run there, also
    /// when called from a runtime without I/O (a node's enclave threads claim orders).
    runtime: tokio::runtime::Handle,
    wakeups: WakeupSender,
    _tasks: [AbortOnDrop; 2],
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("schema_oid", &self.inner.schema).finish_non_exhaustive()
    }
}

/// Refuses a machine whose clock is more than `max` off the database's.
async fn check_clock(inner: &Inner, max: Duration) -> Result<(), StoreError> {
    let client = inner.pool.get().await.map_err(|e| inner.failed(Fail::Pool(e), false))?;
    let before = afallon_store::unix_millis();
    let row = client
        .query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint", &[])
        .await
        .map_err(|e| inner.failed(Fail::Pg(e), false))?;
    let after = afallon_store::unix_millis();
    let database: i64 = row.try_get(0).map_err(|e| inner.failed(Fail::Pg(e), false))?;
    // The database read its clock somewhere between the two readings of ours.
    let ours = i64::try_from((before + after) / 2).unwrap_or(i64::MAX);
    let skew_ms = ours.saturating_sub(database);
    if u128::from(skew_ms.unsigned_abs()) > max.as_millis() {
        return Err(StoreError::backend(PgStoreError::ClockSkew {
            skew_ms,
            max_ms: max.as_millis(),
        }));
    }
    Ok(())
}

impl PgStore {
    /// Connects to the database at `url`, brings its schema up to date, and starts listening
    /// for wake-ups. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// [`StoreError::Backend`] for a bad URL or a failed migration,
    /// [`StoreError::Unavailable`] if the database cannot be reached, and
    /// [`StoreError::SchemaTooNew`] if a newer program migrated the schema.
    pub async fn connect(url: &str, options: PgStoreOptions) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(StoreError::backend)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        let timeout = config.get_connect_timeout().copied();
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.tcp_user_timeout(options.statement_timeout);
        // Notices ("relation already exists, skipping" from a migration run twice) are not
        // worth a log line in every process.
        let statement_timeout = format!(
            "-c statement_timeout={} -c client_min_messages=warning",
            options.statement_timeout.as_millis()
        );
        let session = match config.get_options() {
            Some(given) => format!("{given} {statement_timeout}"),
            None => statement_timeout,
        };
        config.options(session);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .wait_timeout(Some(options.statement_timeout))
            .build()
            .map_err(|e| StoreError::backend(PgStoreError::Pool(e.to_string())))?;
        let health = watch::Sender::new(StoreHealth::Writable);
        let mut inner = Inner {
            pool,
            max_orders: options.max_orders,
            schema: 0,
            commits: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            health,
            recheck: Notify::new(),
        };
        let migrated = async {
            let mut client = inner.pool.get().await.map_err(Fail::Pool)?;
            migrate::migrate(&mut client).await
        };
        inner.schema = migrated.await.map_err(|fail| inner.failed(fail, false))?;
        check_clock(&inner, options.max_clock_skew).await?;
        let listening = listen::listen(&config, timeout.unwrap_or(options.connect_timeout))
            .await
            .map_err(|e| StoreError::backend(PgStoreError::Listen(e)))?;
        let inner = Arc::new(inner);
        let wakeups = WakeupSender::new(WAKEUP_CAPACITY);
        let listener = tokio::spawn(listen::forward(
            listening,
            config,
            inner.schema,
            wakeups.clone(),
            options.listen_ping,
        ));
        let health = tokio::spawn(db::watch_health(Arc::clone(&inner)));
        Ok(Self {
            inner,
            runtime: tokio::runtime::Handle::current(),
            wakeups,
            _tasks: [AbortOnDrop(listener), AbortOnDrop(health)],
        })
    }

    /// How many orders wait for a result (queued or processing), by [`QUEUE_DEPTH_SQL`].
    ///
    /// # Errors
    /// As any read.
    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        self.inner.queue_depth().await
    }

    /// Runs `write` in a task of its own on the store's runtime, so that dropping the caller's
    /// future does not stop it, and a connection it opens has I/O whichever runtime calls.
    async fn write<T, F>(&self, write: impl FnOnce(Arc<Inner>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.inner.writable()?;
        self.runtime
            .spawn(write(Arc::clone(&self.inner)))
            .await
            .unwrap_or_else(|_| Err(StoreError::backend(PgStoreError::WriteTask)))
    }
}

impl Store for PgStore {
    async fn put_worker(&self, worker_id: &str, record: &WorkerRecord) -> Result<(), StoreError> {
        let (id, record) = (worker_id.to_owned(), record.clone());
        self.write(move |inner| async move { inner.put_worker(&id, &record).await }).await
    }

    async fn worker(&self, worker_id: &str) -> Result<Option<WorkerRecord>, StoreError> {
        self.inner.worker(worker_id).await
    }

    async fn look_up_workers(
        &self,
        filter: &WorkerFilter,
        look_up: &LookUp,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.look_up_workers(filter, look_up).await
    }

    async fn submit(&self, order: NewOrder) -> Result<SubmitOutcome, StoreError> {
        self.write(move |inner| async move { inner.submit(&order).await }).await
    }

    /// Written at once, like [`Store::submit`]: PostgreSQL has no in-memory fast path.
    async fn submit_volatile(&self, order: NewOrder) -> Result<SubmitOutcome, StoreError> {
        self.submit(order).await
    }

    /// Nothing to write: every submission is written at once.
    async fn persist(&self, _work_order_id: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn status(&self, work_order_id: &str) -> Result<OrderStatus, StoreError> {
        self.inner.status(work_order_id).await
    }

    async fn request(&self, work_order_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.request(work_order_id).await
    }

    async fn put_tenant(&self, worker_id: &str, requester_id: &str) -> Result<(), StoreError> {
        if requester_id.len() > MAX_TENANT_BYTES || requester_id.is_empty() {
            return Err(StoreError::Invalid { what: "tenant id" });
        }
        let (worker, requester) = (worker_id.to_owned(), requester_id.to_owned());
        self.write(move |inner| async move { inner.put_tenant(&worker, &requester).await }).await
    }

    async fn claim(
        &self,
        worker_id: &str,
        tenant: Option<&str>,
        holder: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<Claimed>, StoreError> {
        let (worker, holder) = (worker_id.to_owned(), holder.to_owned());
        let tenant = tenant.map(str::to_owned);
        let expires = now_ms.saturating_add(lease_ms);
        self.write(move |inner| async move {
            inner.claim(&worker, tenant.as_deref(), &holder, expires).await
        })
        .await
    }

    async fn renew(
        &self,
        work_order_id: &str,
        holder: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<bool, StoreError> {
        let (id, holder) = (work_order_id.to_owned(), holder.to_owned());
        let expires = now_ms.saturating_add(lease_ms);
        self.write(move |inner| async move { inner.renew(&id, &holder, expires).await }).await
    }

    async fn complete(
        &self,
        work_order_id: &str,
        holder: &str,
        result: OrderResult,
        sealed: Option<SealedBlob>,
    ) -> Result<Completion, StoreError> {
        let (id, holder) = (work_order_id.to_owned(), holder.to_owned());
        self.write(move |inner| async move {
            inner.complete(&id, &holder, &result, sealed.as_ref()).await
        })
        .await
    }

    async fn requeue_expired(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.write(move |inner| async move { inner.requeue_expired(now_ms).await }).await
    }

    async fn counts(&self) -> Result<OrderCounts, StoreError> {
        self.inner.counts().await
    }

    async fn put_sealed(&self, sealed: SealedBlob) -> Result<(), StoreError> {
        self.write(move |inner| async move { inner.put_sealed(&sealed).await }).await
    }

    async fn sealed(&self, prefix: &str) -> Result<Vec<SealedBlob>, StoreError> {
        self.inner.sealed(prefix).await
    }

    async fn create_receipt(
        &self,
        work_order_id: &str,
        create: &ReceiptCreate,
    ) -> Result<ReceiptCreation, StoreError> {
        let (id, create) = (work_order_id.to_owned(), create.clone());
        self.write(move |inner| async move { inner.create_receipt(&id, &create).await }).await
    }

    async fn add_receipt_update(
        &self,
        work_order_id: &str,
        update: &ReceiptUpdate,
    ) -> Result<Option<u64>, StoreError> {
        let (id, update) = (work_order_id.to_owned(), update.clone());
        self.write(move |inner| async move { inner.add_receipt_update(&id, &update, false).await })
            .await
    }

    async fn add_worker_receipt_update(
        &self,
        work_order_id: &str,
        update: &ReceiptUpdate,
    ) -> Result<bool, StoreError> {
        let (id, update) = (work_order_id.to_owned(), update.clone());
        let added = self
            .write(move |inner| async move { inner.add_receipt_update(&id, &update, true).await });
        Ok(added.await?.is_some())
    }

    async fn receipts_awaiting_update(
        &self,
        worker_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, OrderResult)>, StoreError> {
        self.inner.receipts_awaiting_update(worker_id, limit).await
    }

    async fn receipt(&self, work_order_id: &str) -> Result<Option<StoredReceipt>, StoreError> {
        self.inner.receipt(work_order_id).await
    }

    async fn look_up_receipts(
        &self,
        filter: &ReceiptFilter,
        look_up: &LookUp,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.look_up_receipts(filter, look_up).await
    }

    fn wakeups(&self) -> Wakeups {
        self.wakeups.subscribe()
    }

    fn health(&self) -> watch::Receiver<StoreHealth> {
        self.inner.health.subscribe()
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.inner.commits.load(Ordering::Relaxed),
            write_failures: self.inner.failures.load(Ordering::Relaxed),
        }
    }
}
