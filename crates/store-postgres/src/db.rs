//! The shared state behind a [`PgStore`](crate::PgStore): the pool, how a write runs in a
//! transaction, how failures are told apart (the database out of reach, or a refusal of its
//! own), and the health that follows from them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Pool, PoolError, Transaction};
use tokio::sync::{Notify, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use afallon_store::{StoreError, StoreHealth};

use crate::PgStoreError;

/// The channel every wake-up is sent on.
pub(crate) const CHANNEL: &str = "afallon_wakeups";

/// What a store's tasks share.
pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) max_orders: u64,
    /// The oid of the schema the store's tables are in: wake-ups carry it, so that stores in
    /// other schemas of the same database ignore them.
    pub(crate) schema: u32,
    pub(crate) commits: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) health: watch::Sender<StoreHealth>,
    /// Wakes the health task to find out when the database can be reached again.
    pub(crate) recheck: Notify,
}

/// Why an operation failed, before it is told to the caller as a [`StoreError`].
#[derive(Debug)]
pub(crate) enum Fail {
    /// No connection could be had.
    Pool(PoolError),
    /// A statement failed.
    Pg(tokio_postgres::Error),
    /// The commit failed.
    Commit(tokio_postgres::Error),
    /// A failure of the store's own.
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Pg(error)
    }
}

impl From<StoreError> for Fail {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// How a write's transaction ends, with the write's outcome.
pub(crate) enum End<T> {
    Commit(T),
    /// Nothing to store (a refusal): the transaction is rolled back.
    Rollback(T),
}

/// How many times a transaction that lost a deadlock or a serialization conflict is tried.
pub(crate) const ATTEMPTS: u32 = 3;

/// Whether `error` says the database cannot be reached (or is shutting down), rather than
/// refusing a statement.
pub(crate) fn is_connection_error(error: &tokio_postgres::Error) -> bool {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    error.is_closed()
        || std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>())
}

pub(crate) fn is_retryable(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// Runs `$body` (an expression that may `return` early and use `?`, with `$tx` the
/// transaction) in a transaction of `$inner` and commits it or rolls it back as the body's
/// [`End`] says, trying again if it lost a deadlock or a serialization conflict.
macro_rules! transact {
    ($inner:expr, |$tx:ident| $body:expr) => {{
        let inner: &$crate::db::Inner = $inner;
        let mut attempt = 1;
        loop {
            let outcome = async {
                let mut client = inner.client().await?;
                let tx = client.transaction().await?;
                let end: Result<_, $crate::db::Fail> = {
                    let $tx = &tx;
                    async { $body }.await
                };
                let end = match end {
                    Ok(end) => end,
                    Err(fail) => {
                        // At once, rather than when the dropped transaction gets to it.
                        let _ = tx.rollback().await;
                        return Err(fail);
                    }
                };
                inner.end(tx, end).await
            }
            .await;
            match outcome {
                Err($crate::db::Fail::Pg(error))
                    if $crate::db::is_retryable(&error) && attempt < $crate::db::ATTEMPTS =>
                {
                    attempt += 1;
                }
                outcome => break outcome.map_err(|fail| inner.failed(fail, true)),
            }
        }
    }};
}

/// Runs `$body` (as for [`transact!`]) with `$client` a pooled connection; the result of a
/// read, or of a write of one statement (which commits by itself) once given to
/// [`Inner::written`].
macro_rules! with_client {
    ($inner:expr, |$client:ident| $body:expr) => {{
        let inner: &$crate::db::Inner = $inner;
        let outcome: Result<_, $crate::db::Fail> = async {
            let client = inner.client().await?;
            let $client = &client;
            $body
        }
        .await;
        outcome
    }};
}

/// Runs the read `$body` (as for [`with_client!`]).
macro_rules! read {
    ($inner:expr, |$client:ident| $body:expr) => {{
        let inner: &$crate::db::Inner = $inner;
        $crate::db::with_client!(inner, |$client| $body).map_err(|fail| inner.failed(fail, false))
    }};
}

pub(crate) use {read, transact, with_client};

/// The statement cache and queries of a pooled connection or of a transaction on one.
pub(crate) trait Conn: Sync {
    fn prepare_cached(
        &self,
        sql: &str,
    ) -> impl Future<Output = Result<Statement, tokio_postgres::Error>> + Send;

    fn query_prepared(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send;

    fn execute_prepared(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, tokio_postgres::Error>> + Send;
}

impl Conn for deadpool_postgres::Client {
    fn prepare_cached(
        &self,
        sql: &str,
    ) -> impl Future<Output = Result<Statement, tokio_postgres::Error>> + Send {
        deadpool_postgres::ClientWrapper::prepare_cached(self, sql)
    }

    fn query_prepared(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send {
        tokio_postgres::Client::query(self, statement, params)
    }

    fn execute_prepared(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, tokio_postgres::Error>> + Send {
        tokio_postgres::Client::execute(self, statement, params)
    }
}

impl Conn for Transaction<'_> {
    fn prepare_cached(
        &self,
        sql: &str,
    ) -> impl Future<Output = Result<Statement, tokio_postgres::Error>> + Send {
        Transaction::prepare_cached(self, sql)
    }

    fn query_prepared(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send {
        tokio_postgres::Transaction::query(self, statement, params)
    }

    fn execute_prepared(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, tokio_postgres::Error>> + Send {
        tokio_postgres::Transaction::execute(self, statement, params)
    }
}

/// Runs `sql` (prepared once per connection) and returns its rows.
pub(crate) async fn query(
    conn: &impl Conn,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, Fail> {
    let statement = conn.prepare_cached(sql).await?;
    Ok(conn.query_prepared(&statement, params).await?)
}

/// Runs `sql` (prepared once per connection) and returns how many rows it changed.
pub(crate) async fn execute(
    conn: &impl Conn,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, Fail> {
    let statement = conn.prepare_cached(sql).await?;
    Ok(conn.execute_prepared(&statement, params).await?)
}

/// Sends a wake-up, delivered when the transaction commits (and dropped if it does not).
pub(crate) async fn notify(conn: &impl Conn, payload: &str) -> Result<(), Fail> {
    query(conn, "SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await.map(drop)
}

/// The longest id a wake-up names; a longer one is announced as
/// [`Wakeup::Missed`](afallon_store::Wakeup::Missed) (`m`), since PostgreSQL refuses payloads
/// of 8000 bytes and more.
const MAX_PAYLOAD_ID: usize = 7000;

/// A wake-up's payload: `<kind>:<schema oid>:<id>`, kind `q` (work queued for worker `id`),
/// `f` (order `id` finished), `r` (a receipt awaits worker `id`'s update) or `m` (re-read
/// everything; no id).
pub(crate) fn payload(kind: char, schema: u32, id: &str) -> String {
    if id.len() > MAX_PAYLOAD_ID { format!("m:{schema}:") } else { format!("{kind}:{schema}:{id}") }
}

/// A value for a `bigint` column, refused if it does not fit.
pub(crate) fn to_bigint(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::backend(PgStoreError::OutOfRange { what, value }))
}

/// A millisecond time for a `bigint` column: times past `i64::MAX` are `i64::MAX`.
pub(crate) fn millis(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A count read from the database.
pub(crate) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Inner {
    /// Refuses writes while the database cannot be reached.
    pub(crate) fn writable(&self) -> Result<(), StoreError> {
        match *self.health.borrow() {
            StoreHealth::Writable => Ok(()),
            StoreHealth::Failing | StoreHealth::Lost => Err(StoreError::Unavailable),
        }
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client, Fail> {
        self.pool.get().await.map_err(Fail::Pool)
    }

    /// Ends a write's transaction as its body said.
    pub(crate) async fn end<T>(&self, tx: Transaction<'_>, end: End<T>) -> Result<T, Fail> {
        match end {
            End::Commit(value) => {
                tx.commit().await.map_err(Fail::Commit)?;
                self.commits.fetch_add(1, Ordering::Relaxed);
                Ok(value)
            }
            End::Rollback(value) => {
                // Nothing was written; if the rollback fails the server drops the
                // transaction with the connection.
                let _ = tx.rollback().await;
                Ok(value)
            }
        }
    }

    /// The outcome of a write made of one statement (which commits by itself); `changed` tells
    /// whether it wrote anything, for the commit count.
    pub(crate) fn written<T>(
        &self,
        outcome: Result<T, Fail>,
        changed: impl FnOnce(&T) -> bool,
    ) -> Result<T, StoreError> {
        match outcome {
            Ok(value) => {
                if changed(&value) {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                }
                Ok(value)
            }
            Err(fail) => Err(self.failed(fail, true)),
        }
    }

    /// The error a caller gets for `fail`; a database out of reach makes the store
    /// [`StoreHealth::Failing`] until the health task reaches it again.
    pub(crate) fn failed(&self, fail: Fail, write: bool) -> StoreError {
        match fail {
            Fail::Store(error) => error,
            Fail::Pool(PoolError::Closed) => StoreError::Closed,
            Fail::Pool(error) => {
                tracing::warn!(%error, "no connection to PostgreSQL");
                self.unreachable(write);
                StoreError::Unavailable
            }
            Fail::Pg(error) if is_connection_error(&error) => {
                tracing::warn!(%error, "PostgreSQL connection failed");
                self.unreachable(write);
                StoreError::Unavailable
            }
            Fail::Pg(error) => match error.as_db_error() {
                // tokio-postgres shows a database's error as "db error": keep what it said.
                Some(db) => StoreError::backend(crate::PgStoreError::Database {
                    code: db.code().code().to_owned(),
                    message: db.message().to_owned(),
                }),
                None => StoreError::backend(error),
            },
            Fail::Commit(error) => {
                tracing::warn!(%error, "commit failed");
                if is_connection_error(&error) {
                    self.unreachable(true);
                } else {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                }
                StoreError::NotStored(Arc::new(error))
            }
        }
    }

    /// The database cannot be reached: writes are refused until the health task reaches it.
    fn unreachable(&self, write: bool) {
        if write {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let changed = self.health.send_if_modified(|health| {
            let writable = *health == StoreHealth::Writable;
            if writable {
                *health = StoreHealth::Failing;
            }
            writable
        });
        if changed {
            tracing::warn!("PostgreSQL unreachable: refusing writes until it answers again");
        }
        self.recheck.notify_one();
    }

    /// Whether the database answers.
    async fn probe(&self) -> Result<(), Fail> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// The health task: after a failure, tries the database again and again, with a growing pause,
/// until it answers; then the store is writable again.
pub(crate) async fn watch_health(inner: Arc<Inner>) {
    loop {
        inner.recheck.notified().await;
        let mut pause = Duration::from_millis(50);
        loop {
            if *inner.health.borrow() == StoreHealth::Writable {
                break;
            }
            tokio::time::sleep(pause).await;
            match tokio::time::timeout(Duration::from_secs(10), inner.probe()).await {
                Ok(Ok(())) => {
                    tracing::info!("PostgreSQL answers again: the store is writable");
                    inner.health.send_replace(StoreHealth::Writable);
                    break;
                }
                _ => {
                    inner.failures.fetch_add(1, Ordering::Relaxed);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// A task that is stopped when this is dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
