//! The conformance suite every backend passes, then what only PostgreSQL does: several stores
//! (as several processes would) on one schema, migrations, the queue-depth query, connection
//! loss. Each test works in a schema of its own, in the database of `AFALLON_TEST_POSTGRES`
//! (skipped without it, unless `AFALLON_REQUIRE_SERVICES=1`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use afallon_store::conformance::{Backend, worker};
use afallon_store::{
    Completion, NewOrder, OrderResult, OrderStatus, Store, StoreError, StoreHealth, SubmitOutcome,
    Wakeup, Wakeups,
};
use afallon_store_postgres::{PgStore, PgStoreOptions, QUEUE_DEPTH_SQL, SCHEMA_VERSION};
use tokio_postgres::NoTls;

/// A schema of its own in the test database, dropped with it.
struct Pg {
    url: String,
    schema: String,
}

/// The backend, if a test database is given.
fn pg_backend() -> Option<Pg> {
    match std::env::var("AFALLON_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(Pg::new(url)),
        _ => {
            assert!(
                std::env::var("AFALLON_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "AFALLON_REQUIRE_SERVICES=1 but AFALLON_TEST_POSTGRES is not set: \
                 set it to a PostgreSQL URL (postgres://user@host:port/db) to run these tests"
            );
            None
        }
    }
}

/// Runs `test` with a backend, or says it was skipped.
macro_rules! with_pg {
    ($name:literal, |$pg:ident| $body:expr) => {
        match pg_backend() {
            Some($pg) => $body,
            None => eprintln!(concat!("SKIPPED: ", $name, ": AFALLON_TEST_POSTGRES is not set")),
        }
    };
}

impl Pg {
    fn new(url: String) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let schema = format!(
            "afallon_test_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self { url, schema }
    }

    /// The URL with the schema as search path, and as application name (which names this
    /// test's connections, to cut them).
    fn store_url(&self) -> String {
        self.url_to(&self.url)
    }

    fn url_to(&self, url: &str) -> String {
        let join = if url.contains('?') { '&' } else { '?' };
        format!("{url}{join}options=-csearch_path%3D{0}&application_name={0}", self.schema)
    }

    /// A connection of the test's own, outside any store.
    async fn admin(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url, NoTls).await.expect("connect to the test database");
        tokio::spawn(connection);
        client
    }

    async fn create_schema(&self) {
        let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema);
        self.admin().await.batch_execute(&sql).await.expect("create the test schema");
    }

    async fn connect(&self, max_orders: u64) -> PgStore {
        let options = PgStoreOptions { max_orders, pool_size: 4, ..PgStoreOptions::default() };
        PgStore::connect(&self.store_url(), options).await.expect("connect the store")
    }
}

impl Drop for Pg {
    /// Drops the schema, from a thread of its own (this may run inside a runtime).
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let dropped = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await.ok()?;
                tokio::spawn(connection);
                let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                client.batch_execute(&sql).await.ok()
            })
        });
        let _ = dropped.join();
    }
}

impl Backend for Pg {
    type Store = PgStore;

    async fn open(&self, max_orders: u64) -> PgStore {
        self.create_schema().await;
        self.connect(max_orders).await
    }

    async fn reopen(&self, store: PgStore, max_orders: u64) -> PgStore {
        drop(store);
        self.connect(max_orders).await
    }
}

afallon_store::conformance_suite!(pg_backend());

fn order(id: &str) -> NewOrder {
    NewOrder {
        work_order_id: id.into(),
        worker_id: "w".into(),
        requester_id: "r".into(),
        request: format!("request {id}").into_bytes(),
    }
}

async fn with_worker(pg: &Pg, max_orders: u64) -> PgStore {
    let store = pg.open(max_orders).await;
    store.put_worker("w", &worker(1, "0a", "0b")).await.expect("worker");
    store
}

/// The next wake-up other than [`Wakeup::Missed`], within 10 s.
async fn next_wakeup(wakeups: &mut Wakeups) -> Wakeup {
    loop {
        let wakeup = tokio::time::timeout(Duration::from_secs(10), wakeups.next())
            .await
            .expect("a wake-up within 10 s")
            .expect("the store is open");
        if wakeup != Wakeup::Missed {
            return wakeup;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_through_one_store_wakes_the_other() {
    with_pg!("a_submission_through_one_store_wakes_the_other", |pg| {
        let first = with_worker(&pg, 100).await;
        let second = pg.connect(100).await;
        let mut wakeups = second.wakeups();
        first.submit(order("1")).await.expect("submit");
        assert_eq!(next_wakeup(&mut wakeups).await, Wakeup::Queued { worker_id: "w".into() });
        let claimed = second.claim("w", None, "h", 0, 1000).await.expect("claim").expect("queued");
        assert_eq!(done(&second, "1", "h", "r").await, Completion::Stored);
        assert_eq!(claimed.work_order_id, "1");
        let mut first_wakeups = first.wakeups();
        assert_eq!(next_wakeup(&mut wakeups).await, Wakeup::Finished { work_order_id: "1".into() });
        // A store in another schema of the same database hears nothing of this one.
        let elsewhere = Pg::new(pg.url.clone());
        let other = with_worker(&elsewhere, 100).await;
        let mut others = other.wakeups();
        first.submit(order("2")).await.expect("submit");
        // The completion's announcement may reach this subscription first.
        let queued = Wakeup::Queued { worker_id: "w".into() };
        while next_wakeup(&mut first_wakeups).await != queued {}
        let heard = tokio::time::timeout(Duration::from_millis(300), others.next()).await;
        assert!(heard.is_err(), "another schema's wake-up was heard: {heard:?}");
    });
}

async fn done(store: &PgStore, id: &str, holder: &str, response: &str) -> Completion {
    store.complete(id, holder, OrderResult::ok(response), None).await.expect("complete")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_through_two_stores_never_share_an_order() {
    with_pg!("claims_through_two_stores_never_share_an_order", |pg| {
        let first = Arc::new(with_worker(&pg, 1000).await);
        let second = Arc::new(pg.connect(1000).await);
        for i in 0..80 {
            first.submit(order(&format!("o{i:02}"))).await.expect("submit");
        }
        let claimers: Vec<_> = (0..8)
            .map(|c| {
                let store = Arc::clone(if c % 2 == 0 { &first } else { &second });
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let holder = format!("c{c}");
                    while let Some(claimed) =
                        store.claim("w", None, &holder, 0, 60_000).await.expect("claim")
                    {
                        got.push(claimed.work_order_id);
                    }
                    got
                })
            })
            .collect();
        let mut all = Vec::new();
        for claimer in claimers {
            all.extend(claimer.await.expect("claimer"));
        }
        all.sort();
        let expected: Vec<String> = (0..80).map(|i| format!("o{i:02}")).collect();
        assert_eq!(all, expected, "each order claimed once");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_at_once_by_several_processes_apply_once() {
    with_pg!("migrations_run_at_once_by_several_processes_apply_once", |pg| {
        pg.create_schema().await;
        let (a, b, c) = tokio::join!(pg.connect(10), pg.connect(10), pg.connect(10));
        drop((a, b, c));
        let again = pg.connect(10).await;
        let admin = pg.admin().await;
        let sql = format!("SELECT count(*), max(version) FROM {}.schema_migrations", pg.schema);
        let row = admin.query_one(&sql, &[]).await.expect("read the migrations");
        assert_eq!(row.get::<_, i64>(0), SCHEMA_VERSION, "each migration applied once");
        assert_eq!(row.get::<_, i64>(1), SCHEMA_VERSION);
        drop(again);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_migrated_by_a_newer_program_is_refused() {
    with_pg!("a_schema_migrated_by_a_newer_program_is_refused", |pg| {
        drop(pg.open(10).await);
        let sql = format!("INSERT INTO {}.schema_migrations (version) VALUES ($1)", pg.schema);
        pg.admin().await.execute(&sql, &[&(SCHEMA_VERSION + 1)]).await.expect("insert");
        let refused = PgStore::connect(&pg.store_url(), PgStoreOptions::default()).await;
        assert_eq!(
            refused.err(),
            Some(StoreError::SchemaTooNew { found: SCHEMA_VERSION + 1, known: SCHEMA_VERSION })
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_depth_query_counts_queued_and_processing_orders() {
    assert_eq!(QUEUE_DEPTH_SQL, "SELECT count(*) FROM work_orders WHERE response IS NULL\n");
    with_pg!("the_queue_depth_query_counts_queued_and_processing_orders", |pg| {
        let store = with_worker(&pg, 100).await;
        for id in ["1", "2", "3", "4"] {
            store.submit(order(id)).await.expect("submit");
        }
        store.claim("w", None, "h", 0, 1000).await.expect("claim");
        store.claim("w", None, "h", 0, 1000).await.expect("claim");
        done(&store, "1", "h", "r").await;
        let counts = store.counts().await.expect("counts");
        assert_eq!((counts.queued, counts.processing, counts.finished), (2, 1, 1));
        assert_eq!(store.queue_depth().await, Ok(counts.queued + counts.processing));
        // The file, run as it is (as an autoscaler runs it), counts the same.
        let admin = pg.admin().await;
        admin.batch_execute(&format!("SET search_path = {}", pg.schema)).await.expect("path");
        let depth: i64 = admin.query_one(QUEUE_DEPTH_SQL, &[]).await.expect("query").get(0);
        assert_eq!(u64::try_from(depth).ok(), Some(counts.queued + counts.processing));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_responses_come_back_byte_for_byte() {
    with_pg!("requests_and_responses_come_back_byte_for_byte", |pg| {
        let store = with_worker(&pg, 100).await;
        let request = vec![0, 0xff, b'{', 0x80, b'\n'];
        let submitted = NewOrder { request: request.clone(), ..order("1") };
        store.submit(submitted).await.expect("submit");
        let claimed = store.claim("w", None, "h", 0, 1000).await.expect("claim").expect("queued");
        assert_eq!(claimed.request, request);
        let response =
            "{\"jsonrpc\":\"2.0\",  \"id\": 1,\n\"result\":{\"b\":1,\"a\":\"\u{e9}\\u0000\"}}  ";
        let result = OrderResult::failed(response);
        assert_eq!(store.complete("1", "h", result.clone(), None).await, Ok(Completion::Stored));
        assert_eq!(store.status("1").await, Ok(OrderStatus::Done(result)));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_to_a_full_store_purge_distinct_orders() {
    with_pg!("concurrent_submissions_to_a_full_store_purge_distinct_orders", |pg| {
        let first = Arc::new(with_worker(&pg, 20).await);
        let second = Arc::new(pg.connect(20).await);
        for i in 0..20 {
            let id = format!("old{i:02}");
            first.submit(order(&id)).await.expect("submit");
            first.claim("w", None, "h", 0, 1000).await.expect("claim");
            assert_eq!(done(&first, &id, "h", "r").await, Completion::Stored);
        }
        let submitters: Vec<_> = (0..40)
            .map(|i| {
                let store = Arc::clone(if i % 2 == 0 { &first } else { &second });
                tokio::spawn(async move { store.submit(order(&format!("new{i:02}"))).await })
            })
            .collect();
        let mut accepted = 0;
        for submitter in submitters {
            match submitter.await.expect("submitter").expect("submit") {
                SubmitOutcome::Accepted => accepted += 1,
                SubmitOutcome::Busy => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let counts = first.counts().await.expect("counts");
        let stored = counts.queued + counts.finished;
        let mut purged = 0;
        for i in 0..20 {
            match first.status(&format!("old{i:02}")).await.expect("status") {
                OrderStatus::Purged => purged += 1,
                OrderStatus::Done(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(counts.queued, accepted, "every accepted submission is queued");
        assert_eq!(stored, 20 - purged + accepted);
        // Two pools of 4 connections: at most 8 submissions commit past the limit together.
        assert!(stored <= 20 + 8, "{stored} orders stored under a limit of 20");
        assert!(accepted >= 20, "only {accepted} accepted with 20 finished orders to purge");
        // The sharded counters add up to what is stored.
        let admin = pg.admin().await;
        let sql = format!(
            "SELECT sum(stored)::bigint, sum(finished)::bigint FROM {}.order_counts",
            pg.schema
        );
        let row = admin.query_one(&sql, &[]).await.expect("counters");
        let counted = (row.get::<_, i64>(0), row.get::<_, i64>(1));
        assert_eq!(counted, (i64::try_from(stored).ok().unwrap_or(-1), 20 - purged as i64));
        // Later submissions bring an overshooting store back under its limit.
        while let Some(claimed) = first.claim("w", None, "h2", 0, 1000).await.expect("claim") {
            done(&first, &claimed.work_order_id, "h2", "r").await;
        }
        for i in 0..4 {
            first.submit(order(&format!("later{i}"))).await.expect("submit");
        }
        let counts = first.counts().await.expect("counts");
        assert!(counts.queued + counts.finished <= 20, "back under the limit: {counts:?}");
    });
}

/// A TCP proxy in front of the database, that a test can cut and restore. It keeps its port
/// throughout (a cut closes every connection and hangs up on new ones at once), so that nothing
/// else can take the port between a cut and a restore.
struct Proxy {
    port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    relays: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let relays: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (open, relays) = (Arc::clone(&open), Arc::clone(&relays));
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(std::sync::atomic::Ordering::SeqCst) {
                        continue; // dropped: the connection is closed at once
                    }
                    let upstream = upstream.clone();
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    relays.lock().expect("relays").push(relay);
                }
            })
        };
        Self { port, open, relays, accept }
    }

    /// Closes every connection and hangs up on new ones.
    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for relay in self.relays.lock().expect("relays").drain(..) {
            relay.abort();
        }
    }

    /// Relays new connections again.
    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_makes_the_store_failing_until_it_answers_again() {
    with_pg!("a_lost_database_makes_the_store_failing_until_it_answers_again", |pg| {
        pg.create_schema().await;
        let config: tokio_postgres::Config = pg.url.parse().expect("url");
        let (Some(tokio_postgres::config::Host::Tcp(host)), Some(port)) =
            (config.get_hosts().first(), config.get_ports().first())
        else {
            eprintln!("SKIPPED: the test database is not reached over TCP");
            return;
        };
        let proxy = Proxy::start(format!("{host}:{port}")).await;
        let url =
            pg.url.replacen(&format!("{host}:{port}"), &format!("127.0.0.1:{}", proxy.port), 1);
        assert_ne!(url, pg.url, "the URL names {host}:{port}");
        let options = PgStoreOptions {
            max_orders: 100,
            pool_size: 2,
            connect_timeout: Duration::from_secs(2),
            listen_ping: Duration::from_millis(200),
            ..PgStoreOptions::default()
        };
        let store = PgStore::connect(&pg.url_to(&url), options).await.expect("connect");
        store.put_worker("w", &worker(1, "0a", "0b")).await.expect("worker");
        let mut health = store.health();
        let mut wakeups = store.wakeups();
        proxy.cut();
        let refused = store.submit(order("1")).await;
        assert_eq!(refused, Err(StoreError::Unavailable));
        assert_eq!(*health.borrow_and_update(), StoreHealth::Failing);
        assert_eq!(store.submit(order("1")).await, Err(StoreError::Unavailable), "refused at once");
        assert!(store.stats().write_failures >= 1);
        proxy.restore();
        let back = tokio::time::timeout(
            Duration::from_secs(20),
            health.wait_for(|h| *h == StoreHealth::Writable),
        );
        assert!(matches!(back.await, Ok(Ok(_))), "writable again once the database answers");
        // The wake-up connection came back too, and said that it may have missed some.
        let missed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if wakeups.next().await == Some(Wakeup::Missed) {
                    return;
                }
            }
        });
        assert!(missed.await.is_ok(), "Wakeup::Missed after listening again");
        assert_eq!(store.submit(order("1")).await, Ok(SubmitOutcome::Accepted));
        assert_eq!(next_wakeup(&mut wakeups).await, Wakeup::Queued { worker_id: "w".into() });
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_no_database_is_unavailable() {
    let options = PgStoreOptions { connect_timeout: Duration::from_secs(2), ..Default::default() };
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let url = format!("postgres://nobody@127.0.0.1:{port}/none");
    let refused = PgStore::connect(&url, options).await;
    assert_eq!(refused.err(), Some(StoreError::Unavailable));
    let bad = PgStore::connect("not a url", PgStoreOptions::default()).await;
    assert!(matches!(bad, Err(StoreError::Backend(_))), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_time() {
    with_pg!("round_trip_time", |pg| {
        let store = with_worker(&pg, 10_000).await;
        const ROUNDS: u32 = 100;
        let start = Instant::now();
        for i in 0..ROUNDS {
            let id = format!("t{i}");
            store.submit(order(&id)).await.expect("submit");
            let claimed =
                store.claim("w", None, "h", 0, 60_000).await.expect("claim").expect("queued");
            assert_eq!(claimed.work_order_id, id);
            assert_eq!(done(&store, &id, "h", "r").await, Completion::Stored);
        }
        let each = start.elapsed() / ROUNDS;
        println!("submit + claim + complete: {each:?} per order ({ROUNDS} orders, one at a time)");
    });
}

/// A node's enclave threads claim orders from a runtime without I/O: a write that opens a
/// pooled connection there must still work (it runs on the store's runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_a_runtime_without_io_open_connections_on_the_store_s_runtime() {
    with_pg!("writes_from_a_runtime_without_io_open_connections_on_the_store_s_runtime", |pg| {
        pg.create_schema().await;
        let options = PgStoreOptions { pool_size: 8, ..PgStoreOptions::default() };
        let store =
            Arc::new(PgStore::connect(&pg.store_url(), options).await.expect("connect the store"));
        store.put_worker("w", &worker(1, "0a", "0b")).await.expect("worker");
        let claims = Arc::clone(&store);
        // More writes at once than the pool has connections open: some open new ones.
        let outcomes = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime without I/O");
            runtime.block_on(async {
                let claims = (0..8).map(|n| {
                    let store = Arc::clone(&claims);
                    async move { store.claim("w", None, &format!("holder-{n}"), 1, 1000).await }
                });
                futures::future::join_all(claims).await
            })
        })
        .join()
        .expect("the thread");
        for outcome in outcomes {
            assert_eq!(outcome, Ok(None), "a claim on an empty queue answers none");
        }
    });
}
