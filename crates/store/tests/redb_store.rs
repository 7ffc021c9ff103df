//! The embedded store: the conformance suite every backend passes, then what only redb does
//! (volatile orders written with their results, leases in memory, group commit).

use std::path::PathBuf;
use std::sync::Arc;

use afallon_store::conformance::{Backend, worker};
use afallon_store::{
    Completion, NewOrder, OrderResult, OrderStatus, RedbStore, RedbStoreOptions, Store,
    SubmitOutcome,
};

/// A store in a temporary directory of its own.
struct Redb {
    dir: tempfile::TempDir,
}

impl Redb {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("store.redb")
    }

    fn open_now(&self, max_orders: u64) -> RedbStore {
        RedbStore::open(&self.path(), RedbStoreOptions { max_orders, ..Default::default() })
            .expect("open")
    }
}

impl Backend for Redb {
    type Store = RedbStore;

    async fn open(&self, max_orders: u64) -> RedbStore {
        self.open_now(max_orders)
    }

    async fn reopen(&self, store: RedbStore, max_orders: u64) -> RedbStore {
        drop(store);
        self.open_now(max_orders)
    }
}

afallon_store::conformance_suite!(Some(Redb::new()));

fn order(id: &str) -> NewOrder {
    NewOrder {
        work_order_id: id.into(),
        worker_id: "w".into(),
        requester_id: "r".into(),
        request: format!("request {id}").into_bytes(),
    }
}

async fn with_worker(redb: &Redb, max_orders: u64) -> RedbStore {
    let store = redb.open_now(max_orders);
    store.put_worker("w", &worker(1, "0a", "0b")).await.expect("worker");
    store
}

#[tokio::test]
async fn a_volatile_order_is_written_once_with_its_result() {
    let redb = Redb::new();
    {
        let store = with_worker(&redb, 100).await;
        assert_eq!(store.submit_volatile(order("v")).await, Ok(SubmitOutcome::Accepted));
        let commits = store.stats().commits;
        let claimed = store.claim("w", None, "h", 0, 1000).await.expect("claim").expect("queued");
        assert_eq!(claimed.work_order_id, "v");
        assert_eq!(store.stats().commits, commits, "queuing and claiming wrote nothing");
        let completion = store.complete("v", "h", OrderResult::ok("done"), None).await;
        assert_eq!(completion, Ok(Completion::Stored));
        assert_eq!(store.stats().commits, commits + 1, "the order and its result in one commit");
    }
    let store = redb.open_now(100);
    assert_eq!(store.status("v").await, Ok(OrderStatus::Done(OrderResult::ok("done"))));
    assert_eq!(store.request("v").await, Ok(Some(b"request v".to_vec())));
}

#[tokio::test]
async fn a_volatile_order_is_lost_with_the_process_unless_persisted() {
    let redb = Redb::new();
    {
        let store = with_worker(&redb, 100).await;
        store.submit_volatile(order("lost")).await.expect("submit");
        store.submit_volatile(order("kept")).await.expect("submit");
        assert_eq!(store.persist("kept").await, Ok(true));
        assert_eq!(store.persist("kept").await, Ok(false));
    }
    let store = redb.open_now(100);
    assert_eq!(store.status("lost").await, Ok(OrderStatus::Unknown));
    assert_eq!(store.status("kept").await, Ok(OrderStatus::Pending));
}

#[tokio::test]
async fn a_receipt_for_a_volatile_order_writes_the_order() {
    let redb = Redb::new();
    {
        let store = with_worker(&redb, 100).await;
        store.submit_volatile(order("v")).await.expect("submit");
        let created = store.create_receipt("v", &afallon_store::ReceiptCreate::default()).await;
        assert_eq!(created, Ok(afallon_store::ReceiptCreation::Created));
    }
    let store = redb.open_now(100);
    assert_eq!(store.status("v").await, Ok(OrderStatus::Pending));
    assert!(store.receipt("v").await.expect("receipt").is_some());
}

#[tokio::test]
async fn leases_live_in_memory_so_a_reopened_store_queues_claimed_orders_at_once() {
    let redb = Redb::new();
    {
        let store = with_worker(&redb, 100).await;
        store.submit(order("1")).await.expect("submit");
        store.claim("w", None, "h", 0, 1_000_000).await.expect("claim");
    }
    let store = redb.open_now(100);
    assert_eq!(store.counts().await.expect("counts").queued, 1);
    assert_eq!(store.requeue_expired(u64::MAX).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_share_commits() {
    let redb = Redb::new();
    let store = Arc::new(with_worker(&redb, 10_000).await);
    let before = store.stats().commits;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.submit(order(&format!("o{i}"))).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), Ok(SubmitOutcome::Accepted));
    }
    let commits = store.stats().commits - before;
    assert_eq!(store.counts().await.expect("counts").queued, 200);
    assert!(commits < 200, "200 submissions took {commits} commits: no group commit");
}

#[tokio::test]
async fn the_purge_order_survives_a_reopen() {
    let redb = Redb::new();
    {
        let store = with_worker(&redb, 2).await;
        for id in ["first", "second"] {
            store.submit(order(id)).await.expect("submit");
            store.claim("w", None, id, 0, 1000).await.expect("claim");
        }
        // Finished in the other order than submitted.
        for id in ["second", "first"] {
            let result = OrderResult::ok(format!("done {id}"));
            store.complete(id, id, result, None).await.expect("complete");
        }
    }
    let store = redb.open_now(2);
    assert_eq!(store.counts().await.expect("counts").finished, 2);
    assert_eq!(store.submit(order("third")).await, Ok(SubmitOutcome::Accepted));
    assert_eq!(store.status("second").await, Ok(OrderStatus::Purged), "first finished goes first");
    assert_eq!(store.status("first").await, Ok(OrderStatus::Done(OrderResult::ok("done first"))));
}
