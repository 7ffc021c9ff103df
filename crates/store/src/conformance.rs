//! The behaviour every backend must show, as tests any backend runs against itself:
//! [`conformance_suite!`](crate::conformance_suite) expands to one `#[tokio::test]` per case.
//!
//! A backend's test file implements [`Backend`] (how to open a fresh, empty store, and how to
//! open the same data again, as after a restart) and invokes the macro.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use afallon_proto::{ReceiptCreate, ReceiptUpdate, WorkerDetails, WorkerRecord, WorkerTypeData};

use crate::{
    Completion, LookUp, NewOrder, OrderResult, OrderStatus, ReceiptCreation, ReceiptFilter,
    SealedBlob, Store, StoreError, SubmitOutcome, Wakeup, WorkerFilter,
};

/// How the suite opens stores of a backend.
pub trait Backend: Send + Sync + Sized + 'static {
    /// The store.
    type Store: Store;

    /// A fresh, empty store keeping at most `max_orders` work orders.
    fn open(&self, max_orders: u64) -> impl Future<Output = Self::Store> + Send;

    /// The data of `store` opened again, as by a restarted process (what a backend keeps only
    /// in memory is gone).
    fn reopen(
        &self,
        store: Self::Store,
        max_orders: u64,
    ) -> impl Future<Output = Self::Store> + Send;
}

/// One `#[tokio::test]` per conformance case, each calling `$backend` (an expression giving an
/// `Option` of a [`Backend`]; `None` skips the case, saying so on stderr).
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance_suite!(@cases $backend;
            submission_is_insert_if_absent,
            claims_are_fifo_per_worker_and_exclusive,
            concurrent_claims_never_share_an_order,
            expired_leases_return_to_the_head_of_the_queue,
            first_completion_wins,
            a_holder_that_lost_its_lease_cannot_complete,
            a_renewed_lease_does_not_expire,
            retention_purges_the_oldest_finished_and_is_busy_otherwise,
            a_purged_id_is_never_accepted_again,
            receipts_and_updates,
            a_receipt_gets_exactly_one_worker_update,
            everything_durable_survives_a_reopen,
            sealed_state_commits_with_the_result_and_never_goes_back,
            a_persisted_volatile_order_survives,
            volatile_and_durable_submissions_refuse_each_others_duplicates,
            worker_look_ups_filter_and_page,
            receipt_look_ups_filter_on_current_status_and_page,
            wakeups_announce_queued_and_finished_orders,
            a_receipt_created_for_a_finished_order_is_announced,
            a_state_based_on_an_old_version_is_refused_and_the_order_queued_again,
            a_tenant_s_orders_are_queued_for_its_claims_only,
        );
    };
    (@cases $backend:expr; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                match $backend {
                    Some(backend) => $crate::conformance::$case(&backend).await,
                    None => eprintln!(concat!("SKIPPED: ", stringify!($case), ": backend not available")),
                }
            }
        )*
    };
}

/// A worker record with the given look-up fields.
pub fn worker(worker_type: i64, organization_id: &str, application_type_id: &str) -> WorkerRecord {
    WorkerRecord {
        worker_type,
        organization_id: organization_id.into(),
        application_type_id: application_type_id.into(),
        details: WorkerDetails {
            work_order_sync_uri: String::new(),
            work_order_async_uri: String::new(),
            work_order_pull_uri: String::new(),
            work_order_notify_uri: String::new(),
            receipt_invocation_uri: String::new(),
            work_order_invocation_address: String::new(),
            receipt_invocation_address: String::new(),
            from_address: String::new(),
            hashing_algorithm: "SHA-256".into(),
            signing_algorithm: "SECP256K1".into(),
            key_encryption_algorithm: "RSA-OAEP-3072".into(),
            data_encryption_algorithm: "AES-GCM-256".into(),
            work_order_payload_formats: "JSON-RPC".into(),
            worker_type_data: WorkerTypeData {
                verification_key: "key".into(),
                extended_measurements: vec![],
                proof_data_type: String::new(),
                proof_data: String::new(),
                encryption_key: String::new(),
                encryption_key_signature: String::new(),
                encryption_key_nonce: None,
                enclave_certificate: None,
            },
        },
        status: 1,
    }
}

fn order(id: &str, worker: &str) -> NewOrder {
    NewOrder {
        work_order_id: id.into(),
        worker_id: worker.into(),
        requester_id: "r".into(),
        request: format!("request {id}").into_bytes(),
    }
}

fn blob(key: &str, version: u64, bytes: &[u8]) -> SealedBlob {
    SealedBlob { key: key.into(), version, based_on: None, blob: bytes.to_vec() }
}

fn receipt_create(worker_id: &str, requester: &str, status: i64) -> ReceiptCreate {
    ReceiptCreate {
        worker_id: Some(worker_id.into()),
        worker_service_id: Some("5e5e".into()),
        requester_id: Some(requester.into()),
        receipt_create_status: Some(status),
        ..ReceiptCreate::default()
    }
}

fn update(data: &str, update_type: i64) -> ReceiptUpdate {
    ReceiptUpdate {
        update_data: Some(data.into()),
        update_type: Some(update_type),
        ..ReceiptUpdate::default()
    }
}

async fn with_workers<B: Backend>(backend: &B, max_orders: u64) -> B::Store {
    let store = backend.open(max_orders).await;
    for id in ["w", "other"] {
        store.put_worker(id, &worker(1, "0a", "0b")).await.expect("worker");
    }
    store
}

async fn done<S: Store>(store: &S, id: &str, holder: &str, response: &str) -> Completion {
    store.complete(id, holder, OrderResult::ok(response), None).await.expect("complete")
}

async fn status<S: Store>(store: &S, id: &str) -> OrderStatus {
    store.status(id).await.expect("status")
}

fn finished(response: &str) -> OrderStatus {
    OrderStatus::Done(OrderResult::ok(response))
}

/// Submission is insert-if-absent, for known workers only.
pub async fn submission_is_insert_if_absent<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    assert_eq!(store.submit(order("a", "w")).await, Ok(SubmitOutcome::Accepted));
    assert_eq!(
        store.submit(NewOrder { request: b"other".to_vec(), ..order("a", "w") }).await,
        Ok(SubmitOutcome::Duplicate)
    );
    assert_eq!(store.submit(order("b", "nobody")).await, Ok(SubmitOutcome::NoSuchWorker));
    assert_eq!(store.submit_volatile(order("b", "nobody")).await, Ok(SubmitOutcome::NoSuchWorker));
    assert_eq!(store.request("a").await, Ok(Some(b"request a".to_vec())));
    assert_eq!(status(&store, "a").await, OrderStatus::Pending);
    assert_eq!(status(&store, "b").await, OrderStatus::Unknown);
}

/// Claims are first in, first out per worker, and each order goes to one holder.
pub async fn claims_are_fifo_per_worker_and_exclusive<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    for id in ["1", "2", "3"] {
        store.submit(order(id, "w")).await.expect("submit");
    }
    store.submit(order("x", "other")).await.expect("submit");
    let first = store.claim("w", None, "h1", 1000, 500).await.expect("claim").expect("an order");
    assert_eq!(first.work_order_id, "1");
    assert_eq!(first.request, b"request 1");
    let claim = |worker: &'static str, holder: &'static str| {
        let store = &store;
        async move {
            store
                .claim(worker, None, holder, 1000, 500)
                .await
                .expect("claim")
                .map(|c| c.work_order_id)
        }
    };
    assert_eq!(claim("w", "h2").await, Some("2".into()));
    assert_eq!(claim("other", "h3").await, Some("x".into()));
    assert_eq!(claim("other", "h4").await, None);
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.queued, counts.processing, counts.finished), (1, 3, 0));
}

/// Many claimers at once: every order is handed out exactly once.
pub async fn concurrent_claims_never_share_an_order<B: Backend>(backend: &B) {
    let store = Arc::new(with_workers(backend, 1000).await);
    for i in 0..60 {
        store.submit(order(&format!("o{i:02}"), "w")).await.expect("submit");
    }
    let claimers: Vec<_> = (0..6)
        .map(|c| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(claimed) =
                    store.claim("w", None, &format!("c{c}"), 0, 60_000).await.expect("claim")
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
    let expected: Vec<String> = (0..60).map(|i| format!("o{i:02}")).collect();
    assert_eq!(all, expected, "each order claimed once");
}

/// An expired lease puts the order back where it was.
pub async fn expired_leases_return_to_the_head_of_the_queue<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    store.submit(order("1", "w")).await.expect("submit");
    store.submit(order("2", "w")).await.expect("submit");
    store.claim("w", None, "dead-worker", 1000, 500).await.expect("claim");
    assert_eq!(store.requeue_expired(1499).await, Ok(0), "the lease still runs");
    assert_eq!(store.requeue_expired(1501).await, Ok(1));
    assert_eq!(store.requeue_expired(1502).await, Ok(0), "requeued once");
    let again =
        store.claim("w", None, "live-worker", 2000, 500).await.expect("claim").expect("an order");
    assert_eq!(again.work_order_id, "1", "a requeued order keeps its place");
}

/// The first completion wins.
pub async fn first_completion_wins<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    store.submit(order("1", "w")).await.expect("submit");
    store.claim("w", None, "slow", 0, 10).await.expect("claim");
    store.requeue_expired(100).await.expect("requeue");
    store.claim("w", None, "fast", 100, 10).await.expect("claim");
    assert_eq!(done(&store, "1", "fast", "fast response").await, Completion::Stored);
    assert_eq!(done(&store, "1", "slow", "slow response").await, Completion::AlreadyDone);
    assert_eq!(status(&store, "1").await, finished("fast response"));
    assert_eq!(done(&store, "never-submitted", "nobody", "x").await, Completion::Unknown);
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.queued, counts.processing, counts.finished), (0, 0, 1));
    // Whether it failed is stored with it.
    store.submit(order("2", "w")).await.expect("submit");
    store.claim("w", None, "h", 0, 1000).await.expect("claim");
    let failure = OrderResult::failed("{\"error\": {}}");
    assert_eq!(store.complete("2", "h", failure.clone(), None).await, Ok(Completion::Stored));
    assert_eq!(status(&store, "2").await, OrderStatus::Done(failure));
}

/// Only the holder of the lease completes an order.
pub async fn a_holder_that_lost_its_lease_cannot_complete<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    store.submit(order("1", "w")).await.expect("submit");
    store.claim("w", None, "stale", 0, 10).await.expect("claim");
    store.requeue_expired(100).await.expect("requeue");
    // Queued again, not claimed yet: the stale holder still cannot complete it.
    assert_eq!(done(&store, "1", "stale", "stale response").await, Completion::LeaseLost);
    assert_eq!(store.renew("1", "stale", 100, 10).await, Ok(false));
    store.claim("w", None, "current", 100, 10).await.expect("claim");
    // Claimed by another: still refused, and nothing is stored, sealed state included.
    let stale = store.complete("1", "stale", OrderResult::ok("stale"), Some(blob("s", 1, b"x")));
    assert_eq!(stale.await, Ok(Completion::LeaseLost));
    assert_eq!(status(&store, "1").await, OrderStatus::Pending);
    assert_eq!(store.sealed("s").await, Ok(vec![]));
    let current = store.complete("1", "current", OrderResult::ok("won"), Some(blob("s", 2, b"y")));
    assert_eq!(current.await, Ok(Completion::Stored));
    assert_eq!(status(&store, "1").await, finished("won"));
    assert_eq!(store.sealed("s").await, Ok(vec![blob("s", 2, b"y")]));
    assert_eq!(done(&store, "1", "stale", "late").await, Completion::AlreadyDone);
}

/// Renewing a lease keeps it.
pub async fn a_renewed_lease_does_not_expire<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    store.submit(order("1", "w")).await.expect("submit");
    store.claim("w", None, "h", 0, 100).await.expect("claim");
    assert_eq!(store.renew("1", "h", 90, 100).await, Ok(true));
    assert_eq!(store.renew("1", "someone else", 90, 100).await, Ok(false));
    assert_eq!(store.requeue_expired(150).await, Ok(0), "renewed until 190");
    assert_eq!(store.requeue_expired(191).await, Ok(1));
    assert_eq!(store.renew("1", "h", 200, 100).await, Ok(false), "expired and queued again");
}

/// Retention purges the oldest finished order, or refuses as busy.
pub async fn retention_purges_the_oldest_finished_and_is_busy_otherwise<B: Backend>(backend: &B) {
    let store = with_workers(backend, 2).await;
    store.submit(order("1", "w")).await.expect("submit");
    store.submit(order("2", "w")).await.expect("submit");
    assert_eq!(store.submit(order("3", "w")).await, Ok(SubmitOutcome::Busy), "nothing finished");
    assert_eq!(store.submit_volatile(order("3", "w")).await, Ok(SubmitOutcome::Busy));
    store.claim("w", None, "h", 0, 1000).await.expect("claim");
    done(&store, "1", "h", "done").await;
    let receipt = receipt_create("w", "0c", 0);
    store.create_receipt("1", &receipt).await.expect("receipt");
    assert_eq!(store.submit(order("3", "w")).await, Ok(SubmitOutcome::Accepted));
    assert_eq!(status(&store, "1").await, OrderStatus::Purged, "the oldest finished was purged");
    assert_eq!(store.receipt("1").await, Ok(None), "with its receipt");
    assert_eq!(store.receipts_awaiting_update("w", 10).await.map(|r| r.len()), Ok(0));
    assert_eq!(status(&store, "2").await, OrderStatus::Pending);
    // The oldest to finish goes first, whatever the submission order.
    store.claim("w", None, "h", 0, 1000).await.expect("claim");
    store.claim("w", None, "h", 0, 1000).await.expect("claim");
    done(&store, "3", "h", "done 3").await;
    done(&store, "2", "h", "done 2").await;
    assert_eq!(store.submit(order("4", "w")).await, Ok(SubmitOutcome::Accepted));
    assert_eq!(status(&store, "3").await, OrderStatus::Purged);
    assert_eq!(status(&store, "2").await, finished("done 2"));
}

/// A purged id stays taken, across a reopen too.
pub async fn a_purged_id_is_never_accepted_again<B: Backend>(backend: &B) {
    let store = with_workers(backend, 1).await;
    store.submit(order("replayed", "w")).await.expect("submit");
    store.claim("w", None, "h", 0, 1000).await.expect("claim");
    done(&store, "replayed", "h", "done").await;
    assert_eq!(store.submit(order("next", "w")).await, Ok(SubmitOutcome::Accepted));
    assert_eq!(status(&store, "replayed").await, OrderStatus::Purged);
    assert_eq!(store.request("replayed").await, Ok(None));
    store.claim("w", None, "h", 0, 1000).await.expect("claim");
    done(&store, "next", "h", "done").await;
    // The replay would find room (by purging "next"), but its id is taken.
    assert_eq!(store.submit(order("replayed", "w")).await, Ok(SubmitOutcome::Duplicate));
    assert_eq!(store.submit_volatile(order("replayed", "w")).await, Ok(SubmitOutcome::Duplicate));
    assert_eq!(store.counts().await.expect("counts").queued, 0, "nothing was queued");
    let store = backend.reopen(store, 1).await;
    assert_eq!(status(&store, "replayed").await, OrderStatus::Purged);
    assert_eq!(store.submit(order("replayed", "w")).await, Ok(SubmitOutcome::Duplicate));
    assert_eq!(store.counts().await.expect("counts").queued, 0);
}

/// Receipts, requesters' updates, and the current status.
pub async fn receipts_and_updates<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    let create = receipt_create("w", "0c", 0);
    assert_eq!(store.create_receipt("1", &create).await, Ok(ReceiptCreation::NoSuchOrder));
    store.submit(order("1", "w")).await.expect("submit");
    assert_eq!(store.add_receipt_update("1", &update("u", 1)).await, Ok(None));
    assert_eq!(store.create_receipt("1", &create).await, Ok(ReceiptCreation::Created));
    assert_eq!(store.create_receipt("1", &create).await, Ok(ReceiptCreation::Exists));
    let stored = store.receipt("1").await.expect("read").expect("exists");
    assert_eq!(stored.current_status(), 0);
    assert_eq!(store.add_receipt_update("1", &update("u1", 4)).await, Ok(Some(1)));
    assert_eq!(store.add_receipt_update("1", &update("u2", 1)).await, Ok(Some(2)));
    let stored = store.receipt("1").await.expect("read").expect("exists");
    assert_eq!(stored.create, create);
    assert_eq!(stored.updates, vec![update("u1", 4), update("u2", 1)]);
    assert_eq!(stored.current_status(), 1);
}

/// Exactly one worker update per receipt, whichever came first, and the receipt waits for it.
pub async fn a_receipt_gets_exactly_one_worker_update<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    let create = receipt_create("w", "0c", 0);
    // Receipt first: the completion makes it await the worker's update.
    store.submit(order("1", "w")).await.expect("submit");
    store.claim("w", None, "h", 0, 1000).await.expect("claim");
    store.create_receipt("1", &create).await.expect("receipt");
    assert_eq!(store.receipts_awaiting_update("w", 10).await, Ok(vec![]), "not finished");
    assert_eq!(
        store.add_worker_receipt_update("1", &update("early", 2)).await,
        Ok(false),
        "not finished yet"
    );
    done(&store, "1", "h", "r1").await;
    // Order first: the receipt awaits the update as soon as it exists.
    store.submit(order("2", "w")).await.expect("submit");
    store.claim("w", None, "h", 0, 1000).await.expect("claim");
    done(&store, "2", "h", "r2").await;
    store.create_receipt("2", &create).await.expect("receipt");
    let awaiting = store.receipts_awaiting_update("w", 10).await.expect("awaiting");
    assert_eq!(
        awaiting,
        vec![("1".into(), OrderResult::ok("r1")), ("2".into(), OrderResult::ok("r2"))]
    );
    assert_eq!(store.receipts_awaiting_update("other", 10).await, Ok(vec![]));
    assert_eq!(store.receipts_awaiting_update("w", 1).await.map(|r| r.len()), Ok(1), "limit");
    for id in ["1", "2"] {
        assert_eq!(store.add_worker_receipt_update(id, &update("worker", 2)).await, Ok(true));
        assert_eq!(store.add_worker_receipt_update(id, &update("again", 2)).await, Ok(false));
        let stored = store.receipt(id).await.expect("read").expect("receipt");
        assert_eq!(stored.updates, vec![update("worker", 2)]);
    }
    assert_eq!(store.receipts_awaiting_update("w", 10).await, Ok(vec![]));
}

/// Workers, orders, results, receipts and sealed blobs are durable; leases are not needed to
/// survive (an unfinished order is queued again, now or when its lease runs out).
pub async fn everything_durable_survives_a_reopen<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    store.submit(order("1", "w")).await.expect("submit");
    store.submit(order("2", "w")).await.expect("submit");
    store.claim("w", None, "h", 0, 1000).await.expect("claim");
    done(&store, "1", "h", "done").await;
    store.claim("w", None, "h", 0, 1000).await.expect("claim");
    store.put_sealed(blob("worker/a/keys", 0, b"keys")).await.expect("sealed");
    store.create_receipt("1", &receipt_create("w", "0c", 0)).await.expect("receipt");
    let store = backend.reopen(store, 100).await;
    assert_eq!(store.worker("w").await, Ok(Some(worker(1, "0a", "0b"))));
    assert_eq!(store.worker("nobody").await, Ok(None));
    assert_eq!(status(&store, "1").await, finished("done"));
    assert_eq!(store.sealed("worker/a/").await, Ok(vec![blob("worker/a/keys", 0, b"keys")]));
    assert!(store.receipt("1").await.expect("receipt").is_some());
    assert_eq!(store.receipts_awaiting_update("w", 10).await.map(|r| r.len()), Ok(1));
    // "2" was claimed when the process went away: after its lease at the latest, it is queued
    // again, at its place.
    store.requeue_expired(u64::MAX).await.expect("requeue");
    let claimed = store.claim("w", None, "h2", 2000, 1000).await.expect("claim");
    assert_eq!(
        claimed.map(|c| (c.work_order_id, c.request)),
        Some(("2".into(), b"request 2".to_vec()))
    );
}

/// Sealed state is stored with the winning result only, and never goes back a version.
pub async fn sealed_state_commits_with_the_result_and_never_goes_back<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    store.put_sealed(blob("worker/a/keys", 0, b"keys")).await.expect("put");
    store.submit(order("1", "w")).await.expect("submit");
    store.submit(order("2", "w")).await.expect("submit");
    store.claim("w", None, "h1", 0, 1000).await.expect("claim");
    store.claim("w", None, "h2", 0, 1000).await.expect("claim");
    let state = |version, bytes: &[u8]| Some(blob("worker/a/state/wallet", version, bytes));
    store.complete("1", "h1", OrderResult::ok("r1"), state(2, b"v2")).await.expect("complete");
    store.complete("2", "h2", OrderResult::ok("r2"), state(1, b"v1")).await.expect("complete");
    store.complete("1", "h1", OrderResult::ok("r"), state(9, b"v9")).await.expect("complete");
    assert_eq!(
        store.sealed("worker/a/").await,
        Ok(vec![blob("worker/a/keys", 0, b"keys"), blob("worker/a/state/wallet", 2, b"v2")])
    );
    assert_eq!(store.sealed("worker/b/").await, Ok(vec![]));
    // The first to store a version keeps it: two processes creating a worker's keys at once
    // both end up with the first one's.
    store.put_sealed(blob("worker/a/keys", 0, b"other keys")).await.expect("put");
    let keys = store.sealed("worker/a/keys").await.expect("read");
    assert_eq!(keys, vec![blob("worker/a/keys", 0, b"keys")]);
}

/// A volatile order that was persisted (its requester told "pending") survives a restart, and
/// one completed is stored with its result.
pub async fn a_persisted_volatile_order_survives<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    assert_eq!(store.submit_volatile(order("kept", "w")).await, Ok(SubmitOutcome::Accepted));
    assert_eq!(store.submit_volatile(order("done", "w")).await, Ok(SubmitOutcome::Accepted));
    assert_eq!(status(&store, "kept").await, OrderStatus::Pending);
    assert_eq!(store.request("kept").await, Ok(Some(b"request kept".to_vec())));
    store.persist("kept").await.expect("persist");
    assert_eq!(store.persist("never-submitted").await, Ok(false));
    let claimed = store.claim("w", None, "h", 0, 1000).await.expect("claim").expect("queued");
    assert_eq!(claimed.work_order_id, "kept");
    let claimed = store.claim("w", None, "h2", 0, 1000).await.expect("claim").expect("queued");
    assert_eq!(claimed.work_order_id, "done");
    assert_eq!(done(&store, "done", "h2", "result").await, Completion::Stored);
    assert_eq!(store.persist("done").await, Ok(false), "written with its result");
    let store = backend.reopen(store, 100).await;
    assert_eq!(status(&store, "kept").await, OrderStatus::Pending);
    assert_eq!(status(&store, "done").await, finished("result"));
    store.requeue_expired(u64::MAX).await.expect("requeue");
    let claimed = store.claim("w", None, "h3", 0, 1000).await.expect("claim");
    assert_eq!(claimed.map(|c| c.work_order_id), Some("kept".into()));
}

/// Volatile and durable submissions refuse each other's ids.
pub async fn volatile_and_durable_submissions_refuse_each_others_duplicates<B: Backend>(
    backend: &B,
) {
    let store = with_workers(backend, 100).await;
    store.submit(order("d", "w")).await.expect("submit");
    store.submit_volatile(order("v", "w")).await.expect("submit");
    assert_eq!(store.submit_volatile(order("d", "w")).await, Ok(SubmitOutcome::Duplicate));
    assert_eq!(store.submit_volatile(order("v", "w")).await, Ok(SubmitOutcome::Duplicate));
    assert_eq!(store.submit(order("v", "w")).await, Ok(SubmitOutcome::Duplicate));
    assert_eq!(store.counts().await.expect("counts").queued, 2, "nothing queued twice");
}

/// Worker look-ups: every filter, in id order, one page at a time.
pub async fn worker_look_ups_filter_and_page<B: Backend>(backend: &B) {
    let store = backend.open(100).await;
    for (id, record) in [
        ("a1", worker(1, "aa", "01")),
        ("a2", worker(1, "aa", "02")),
        ("b1", worker(2, "bb", "01")),
        ("b2", worker(1, "bb", "01")),
        ("c1", worker(1, "aa", "01")),
    ] {
        store.put_worker(id, &record).await.expect("worker");
    }
    // A replaced record is found by its new fields only.
    store.put_worker("c1", &worker(3, "cc", "03")).await.expect("worker");
    let look = |filter: WorkerFilter, after: Option<&str>, limit| {
        let store = &store;
        let page = LookUp { after: after.map(Into::into), limit };
        async move { store.look_up_workers(&filter, &page).await.expect("look up") }
    };
    let by_org = WorkerFilter { organization_id: Some("aa".into()), ..WorkerFilter::default() };
    assert_eq!(look(by_org.clone(), None, 10).await, ["a1", "a2"]);
    let by_type = WorkerFilter { worker_type: Some(1), ..WorkerFilter::default() };
    assert_eq!(look(by_type.clone(), None, 10).await, ["a1", "a2", "b2"]);
    assert_eq!(look(by_type.clone(), None, 2).await, ["a1", "a2"]);
    assert_eq!(look(by_type.clone(), Some("a2"), 2).await, ["b2"]);
    assert_eq!(look(by_type, Some("b2"), 2).await, Vec::<String>::new());
    let both = WorkerFilter {
        worker_type: Some(1),
        application_type_id: Some("01".into()),
        ..WorkerFilter::default()
    };
    assert_eq!(look(both, None, 10).await, ["a1", "b2"]);
    assert_eq!(look(WorkerFilter::default(), Some("b1"), 10).await, ["b2", "c1"]);
    let by_new = WorkerFilter { organization_id: Some("cc".into()), ..WorkerFilter::default() };
    assert_eq!(look(by_new, None, 10).await, ["c1"]);
    assert_eq!(look(by_org, None, 0).await, Vec::<String>::new());
}

/// Receipt look-ups: every filter, the current status included, one page at a time.
pub async fn receipt_look_ups_filter_on_current_status_and_page<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    for (id, worker, requester) in
        [("r1", "w", "0c"), ("r2", "w", "0d"), ("r3", "other", "0c"), ("r4", "w", "0c")]
    {
        store.submit(order(id, worker)).await.expect("submit");
        store.create_receipt(id, &receipt_create(worker, requester, 0)).await.expect("receipt");
    }
    store.add_receipt_update("r4", &update("x", 1)).await.expect("update");
    let look = |filter: ReceiptFilter, after: Option<&str>, limit| {
        let store = &store;
        let page = LookUp { after: after.map(Into::into), limit };
        async move { store.look_up_receipts(&filter, &page).await.expect("look up") }
    };
    let by_requester =
        ReceiptFilter { requester_id: Some("0c".into()), ..ReceiptFilter::default() };
    assert_eq!(look(by_requester.clone(), None, 10).await, ["r1", "r3", "r4"]);
    assert_eq!(look(by_requester.clone(), Some("r1"), 1).await, ["r3"]);
    let pending = ReceiptFilter { status: Some(0), ..by_requester.clone() };
    assert_eq!(look(pending, None, 10).await, ["r1", "r3"]);
    let completed = ReceiptFilter { status: Some(1), ..ReceiptFilter::default() };
    assert_eq!(look(completed, None, 10).await, ["r4"]);
    let mine = ReceiptFilter { worker_id: Some("w".into()), ..by_requester };
    assert_eq!(look(mine, None, 10).await, ["r1", "r4"]);
    let service =
        ReceiptFilter { worker_service_id: Some("5e5e".into()), ..ReceiptFilter::default() };
    assert_eq!(look(service, Some("r2"), 10).await, ["r3", "r4"]);
}

/// Submissions, completions and receipts awaiting an update are announced once committed.
pub async fn wakeups_announce_queued_and_finished_orders<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    let mut wakeups = store.wakeups();
    let mut next = async || {
        loop {
            let wakeup = tokio::time::timeout(Duration::from_secs(10), wakeups.next())
                .await
                .expect("a wake-up within 10 s")
                .expect("the store is open");
            if wakeup != Wakeup::Missed {
                return wakeup;
            }
        }
    };
    store.submit(order("1", "w")).await.expect("submit");
    assert_eq!(next().await, Wakeup::Queued { worker_id: "w".into() });
    store.submit_volatile(order("2", "other")).await.expect("submit");
    assert_eq!(next().await, Wakeup::Queued { worker_id: "other".into() });
    store.claim("w", None, "h", 0, 10).await.expect("claim");
    store.requeue_expired(100).await.expect("requeue");
    assert_eq!(next().await, Wakeup::Queued { worker_id: "w".into() }, "requeued");
    store.claim("w", None, "h", 100, 1000).await.expect("claim");
    store.create_receipt("1", &receipt_create("w", "0c", 0)).await.expect("receipt");
    done(&store, "1", "h", "r").await;
    let mut seen = vec![next().await, next().await];
    seen.sort_by_key(|w| format!("{w:?}"));
    assert_eq!(
        seen,
        vec![
            Wakeup::Finished { work_order_id: "1".into() },
            Wakeup::ReceiptAwaiting { worker_id: "w".into() },
        ]
    );
}

/// A receipt created after its order finished awaits the worker's update at once, and says so.
pub async fn a_receipt_created_for_a_finished_order_is_announced<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    store.submit(order("1", "w")).await.expect("submit");
    store.claim("w", None, "h", 0, 1000).await.expect("claim");
    done(&store, "1", "h", "r").await;
    let mut wakeups = store.wakeups();
    store.create_receipt("1", &receipt_create("w", "0c", 0)).await.expect("receipt");
    let announced = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match wakeups.next().await.expect("the store is open") {
                Wakeup::ReceiptAwaiting { worker_id } => return worker_id,
                _ => continue,
            }
        }
    });
    assert_eq!(announced.await.expect("announced within 10 s"), "w");
}

/// Two processes serving one worker: a completion whose state was computed from a version older
/// than the stored one stores nothing, and its order runs again.
pub async fn a_state_based_on_an_old_version_is_refused_and_the_order_queued_again<B: Backend>(
    backend: &B,
) {
    let store = with_workers(backend, 100).await;
    let key = "worker/a/state/wallet";
    let state = |version, based_on| SealedBlob {
        key: key.into(),
        version,
        based_on: Some(based_on),
        blob: format!("v{version}").into_bytes(),
    };
    for id in ["1", "2"] {
        store.submit(order(id, "w")).await.expect("submit");
    }
    store.claim("w", None, "process-a", 0, 1000).await.expect("claim");
    store.claim("w", None, "process-b", 0, 1000).await.expect("claim");
    // Both ran on the initial state; the first to complete wins.
    let first = store.complete("1", "process-a", OrderResult::ok("r1"), Some(state(1, 0)));
    assert_eq!(first.await, Ok(Completion::Stored));
    let mut wakeups = store.wakeups();
    let second = store.complete("2", "process-b", OrderResult::ok("r2"), Some(state(1, 0)));
    assert_eq!(second.await, Ok(Completion::StateConflict));
    assert_eq!(status(&store, "2").await, OrderStatus::Pending, "nothing of it was stored");
    assert_eq!(store.sealed(key).await.expect("read"), vec![blob(key, 1, b"v1")]);
    let queued = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Wakeup::Queued { worker_id }) = wakeups.next().await {
                return worker_id;
            }
        }
    });
    assert_eq!(queued.await.expect("announced within 10 s"), "w", "queued again, and said so");
    // It runs again, on version 1.
    let again = store.claim("w", None, "process-b2", 0, 1000).await.expect("claim");
    assert_eq!(again.map(|c| c.work_order_id), Some("2".into()));
    let stale = store.complete("2", "process-b", OrderResult::ok("r2"), Some(state(2, 1)));
    assert_eq!(stale.await, Ok(Completion::LeaseLost), "the conflicting run's lease is over");
    let rerun = store.complete("2", "process-b2", OrderResult::ok("r2"), Some(state(2, 1)));
    assert_eq!(rerun.await, Ok(Completion::Stored));
    assert_eq!(store.sealed(key).await.expect("read"), vec![blob(key, 2, b"v2")]);
}

/// A tenant's orders, submitted once it is one, are claimed by claims for that tenant only, across
/// lease expiry and a reopen; orders queued before stay shared; other workers are not affected.
pub async fn a_tenant_s_orders_are_queued_for_its_claims_only<B: Backend>(backend: &B) {
    let store = with_workers(backend, 100).await;
    let from = |id: &str, worker: &str, requester: &str| NewOrder {
        requester_id: requester.into(),
        ..order(id, worker)
    };
    store.submit(from("before", "w", "a")).await.expect("submit");
    store.put_tenant("w", "a").await.expect("tenant");
    store.put_tenant("w", "a").await.expect("a tenant again");
    assert_eq!(store.put_tenant("w", "").await, Err(StoreError::Invalid { what: "tenant id" }));
    let long = "a".repeat(crate::MAX_TENANT_BYTES + 1);
    assert_eq!(store.put_tenant("w", &long).await, Err(StoreError::Invalid { what: "tenant id" }));
    store.submit(from("a1", "w", "a")).await.expect("submit");
    store.submit_volatile(from("a2", "w", "a")).await.expect("submit");
    store.submit(from("b1", "w", "b")).await.expect("submit");
    store.submit(from("o1", "other", "a")).await.expect("submit");
    let claim = |tenant: Option<&'static str>, worker: &'static str| {
        let store = &store;
        async move {
            let claimed = store.claim(worker, tenant, "h", 1000, 500).await.expect("claim");
            claimed.map(|c| c.work_order_id)
        }
    };
    // The shared queue: what was queued before "a" became a tenant, and other requesters'.
    assert_eq!(claim(None, "w").await, Some("before".into()));
    assert_eq!(claim(None, "w").await, Some("b1".into()));
    assert_eq!(claim(None, "w").await, None);
    assert_eq!(claim(Some("b"), "w").await, None);
    assert_eq!(claim(Some("a"), "w").await, Some("a1".into()));
    assert_eq!(claim(Some("a"), "w").await, Some("a2".into()));
    assert_eq!(claim(Some("a"), "w").await, None);
    // "a" is a tenant of "w" only.
    assert_eq!(claim(Some("a"), "other").await, None);
    assert_eq!(claim(None, "other").await, Some("o1".into()));
    // An expired lease returns a tenant's order to the tenant's queue.
    done(&store, "a2", "h", "a2 done").await;
    assert!(store.requeue_expired(u64::MAX).await.expect("requeue") >= 1);
    assert_eq!(claim(None, "w").await, Some("before".into()));
    assert_eq!(claim(None, "w").await, Some("b1".into()));
    assert_eq!(claim(Some("a"), "w").await, Some("a1".into()));
    assert_eq!(claim(None, "other").await, Some("o1".into()));
    for id in ["before", "b1", "a1", "o1"] {
        assert_eq!(done(&store, id, "h", "done").await, Completion::Stored);
    }
    // Queued tenant orders and the tenancy itself survive a reopen.
    store.submit(from("a3", "w", "a")).await.expect("submit");
    let store = backend.reopen(store, 100).await;
    store.submit(from("a4", "w", "a")).await.expect("submit");
    store.submit_volatile(from("b2", "w", "b")).await.expect("submit");
    let claim = |tenant: Option<&'static str>| {
        let store = &store;
        async move {
            let claimed = store.claim("w", tenant, "h2", 1000, 500).await.expect("claim");
            claimed.map(|c| c.work_order_id)
        }
    };
    assert_eq!(claim(None).await, Some("b2".into()));
    assert_eq!(claim(None).await, None);
    assert_eq!(claim(Some("a")).await, Some("a3".into()));
    assert_eq!(claim(Some("a")).await, Some("a4".into()));
    assert_eq!(claim(Some("a")).await, None);
}
