//! The embedded store's guarantees: insert-if-absent submission, FIFO claims under leases,
//! renewal, requeue on expiry, first completion wins and only from the lease's holder, retention and BUSY, no id accepted twice even after
//! its purge, receipts, durability across a reopen, and group commit.

use std::sync::Arc;

use afallon_store::{
    Completion, NewOrder, OrderStatus, ReceiptCreation, RedbStore, RedbStoreOptions, SealedBlob,
    Store, SubmitOutcome,
};

fn order(id: &str, worker: &str) -> NewOrder {
    NewOrder {
        work_order_id: id.into(),
        worker_id: worker.into(),
        request: format!("request {id}").into_bytes(),
    }
}

fn open(dir: &tempfile::TempDir, max_orders: u64) -> RedbStore {
    RedbStore::open(
        &dir.path().join("store.redb"),
        RedbStoreOptions { max_orders, ..Default::default() },
    )
    .expect("open")
}

#[tokio::test]
async fn submission_is_insert_if_absent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 100);
    assert_eq!(store.submit(order("a", "w")).await, Ok(SubmitOutcome::Accepted));
    assert_eq!(
        store.submit(NewOrder { request: b"other".to_vec(), ..order("a", "w") }).await,
        Ok(SubmitOutcome::Duplicate)
    );
    assert_eq!(store.request("a"), Ok(Some(b"request a".to_vec())));
    assert_eq!(store.status("a"), Ok(OrderStatus::Pending));
    assert_eq!(store.status("nope"), Ok(OrderStatus::Unknown));
}

#[tokio::test]
async fn claims_are_fifo_per_worker_and_exclusive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 100);
    for id in ["1", "2", "3"] {
        store.submit(order(id, "w")).await.expect("submit");
    }
    store.submit(order("x", "other")).await.expect("submit");
    let first = store.claim("w", "h1", 1000, 500).await.expect("claim").expect("an order");
    assert_eq!(first.work_order_id, "1");
    assert_eq!(first.request, b"request 1");
    assert_eq!(
        store.claim("w", "h2", 1000, 500).await.expect("claim").map(|c| c.work_order_id),
        Some("2".into())
    );
    assert_eq!(
        store.claim("other", "h3", 1000, 500).await.expect("claim").map(|c| c.work_order_id),
        Some("x".into())
    );
    let counts = store.counts().expect("counts");
    assert_eq!((counts.queued, counts.processing, counts.finished), (1, 3, 0));
}

#[tokio::test]
async fn expired_leases_return_to_the_head_of_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 100);
    store.submit(order("1", "w")).await.expect("submit");
    store.submit(order("2", "w")).await.expect("submit");
    store.claim("w", "dead-worker", 1000, 500).await.expect("claim");
    assert_eq!(store.requeue_expired(1499).await, Ok(0), "the lease still runs");
    assert_eq!(store.requeue_expired(1501).await, Ok(1));
    let again = store.claim("w", "live-worker", 2000, 500).await.expect("claim").expect("an order");
    assert_eq!(again.work_order_id, "1", "a requeued order keeps its place");
}

#[tokio::test]
async fn first_completion_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 100);
    store.submit(order("1", "w")).await.expect("submit");
    store.claim("w", "slow", 0, 10).await.expect("claim");
    store.requeue_expired(100).await.expect("requeue");
    store.claim("w", "fast", 100, 10).await.expect("claim");
    assert_eq!(
        store.complete("1", "fast", "fast response".into(), None, None).await,
        Ok(Completion::Stored)
    );
    assert_eq!(
        store.complete("1", "slow", "slow response".into(), None, None).await,
        Ok(Completion::AlreadyDone)
    );
    assert_eq!(store.status("1"), Ok(OrderStatus::Done("fast response".into())));
    assert_eq!(
        store.complete("never-submitted", "nobody", "x".into(), None, None).await,
        Ok(Completion::Unknown)
    );
    let counts = store.counts().expect("counts");
    assert_eq!((counts.queued, counts.processing, counts.finished), (0, 0, 1));
}

#[tokio::test]
async fn a_holder_that_lost_its_lease_cannot_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 100);
    store.submit(order("1", "w")).await.expect("submit");
    store.claim("w", "stale", 0, 10).await.expect("claim");
    store.requeue_expired(100).await.expect("requeue");
    // Queued again, not claimed yet: the stale holder still cannot complete it.
    assert_eq!(
        store.complete("1", "stale", "stale response".into(), None, None).await,
        Ok(Completion::LeaseLost)
    );
    assert_eq!(store.renew("1", "stale", 100, 10).await, Ok(false));
    store.claim("w", "current", 100, 10).await.expect("claim");
    // Claimed by another: still refused, and nothing is stored, sealed state included.
    assert_eq!(
        store
            .complete("1", "stale", "stale response".into(), Some(blob("s", 1, b"stale")), None)
            .await,
        Ok(Completion::LeaseLost)
    );
    assert_eq!(store.status("1"), Ok(OrderStatus::Pending));
    assert_eq!(store.sealed("s"), Ok(vec![]));
    assert_eq!(
        store.complete("1", "current", "response".into(), Some(blob("s", 2, b"won")), None).await,
        Ok(Completion::Stored)
    );
    assert_eq!(store.status("1"), Ok(OrderStatus::Done("response".into())));
    assert_eq!(store.sealed("s"), Ok(vec![blob("s", 2, b"won")]));
    assert_eq!(
        store.complete("1", "stale", "late".into(), None, None).await,
        Ok(Completion::AlreadyDone)
    );
}

#[tokio::test]
async fn a_renewed_lease_does_not_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 100);
    store.submit(order("1", "w")).await.expect("submit");
    store.claim("w", "h", 0, 100).await.expect("claim");
    assert_eq!(store.renew("1", "h", 90, 100).await, Ok(true));
    assert_eq!(store.renew("1", "someone else", 90, 100).await, Ok(false));
    assert_eq!(store.requeue_expired(150).await, Ok(0), "renewed until 190");
    assert_eq!(store.requeue_expired(191).await, Ok(1));
    assert_eq!(store.renew("1", "h", 200, 100).await, Ok(false), "expired and queued again");
}

#[tokio::test]
async fn retention_purges_the_oldest_finished_and_is_busy_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 2);
    store.submit(order("1", "w")).await.expect("submit");
    store.submit(order("2", "w")).await.expect("submit");
    assert_eq!(
        store.submit(order("3", "w")).await,
        Ok(SubmitOutcome::Busy),
        "nothing finished to purge"
    );
    store.claim("w", "h", 0, 1000).await.expect("claim");
    store.complete("1", "h", "done".into(), None, None).await.expect("complete");
    store.create_receipt("1", "{}".into()).await.expect("receipt");
    assert_eq!(store.submit(order("3", "w")).await, Ok(SubmitOutcome::Accepted));
    assert_eq!(store.status("1"), Ok(OrderStatus::Purged), "the oldest finished order was purged");
    assert_eq!(store.receipt("1"), Ok(None), "with its receipt");
    assert_eq!(store.status("2"), Ok(OrderStatus::Pending));
}

#[tokio::test]
async fn a_purged_id_is_never_accepted_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir, 1);
        store.submit(order("replayed", "w")).await.expect("submit");
        store.claim("w", "h", 0, 1000).await.expect("claim");
        store.complete("replayed", "h", "done".into(), None, None).await.expect("complete");
        // Making room purges it.
        assert_eq!(store.submit(order("next", "w")).await, Ok(SubmitOutcome::Accepted));
        assert_eq!(store.status("replayed"), Ok(OrderStatus::Purged));
        assert_eq!(store.request("replayed"), Ok(None));
        store.claim("w", "h", 0, 1000).await.expect("claim");
        store.complete("next", "h", "done".into(), None, None).await.expect("complete");
        // The replay would find room (by purging "next"), but its id is taken.
        assert_eq!(store.submit(order("replayed", "w")).await, Ok(SubmitOutcome::Duplicate));
        assert_eq!(
            store.submit_volatile(order("replayed", "w")).await,
            Ok(SubmitOutcome::Duplicate)
        );
        assert_eq!(store.counts().expect("counts").queued, 0, "nothing was queued");
        assert_eq!(store.status("never-submitted"), Ok(OrderStatus::Unknown));
    }
    // The record of purged ids is durable.
    let store = open(&dir, 1);
    assert_eq!(store.status("replayed"), Ok(OrderStatus::Purged));
    assert_eq!(store.submit(order("replayed", "w")).await, Ok(SubmitOutcome::Duplicate));
    assert_eq!(store.submit_volatile(order("replayed", "w")).await, Ok(SubmitOutcome::Duplicate));
    assert_eq!(store.counts().expect("counts").queued, 0);
}

#[tokio::test]
async fn receipts_and_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 100);
    assert_eq!(store.create_receipt("1", "c".into()).await, Ok(ReceiptCreation::NoSuchOrder));
    store.submit(order("1", "w")).await.expect("submit");
    assert_eq!(store.add_receipt_update("1", "u".into()).await, Ok(None));
    assert_eq!(store.create_receipt("1", "c".into()).await, Ok(ReceiptCreation::Created));
    assert_eq!(store.create_receipt("1", "c2".into()).await, Ok(ReceiptCreation::Exists));
    assert_eq!(store.add_receipt_update("1", "u1".into()).await, Ok(Some(1)));
    assert_eq!(store.add_receipt_update("1", "u2".into()).await, Ok(Some(2)));
    let receipt = store.receipt("1").expect("read").expect("exists");
    assert_eq!(
        (receipt.create.as_str(), receipt.updates),
        ("c", vec!["u1".to_owned(), "u2".to_owned()])
    );
    assert_eq!(store.receipt_ids(), Ok(vec!["1".to_owned()]));
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir, 100);
        store.put_worker("w", "{\"status\": 1}").await.expect("worker");
        store.submit(order("1", "w")).await.expect("submit");
        store.submit(order("2", "w")).await.expect("submit");
        store.claim("w", "h", 0, 1000).await.expect("claim");
        store.complete("1", "h", "done".into(), None, None).await.expect("complete");
        store.claim("w", "h", 0, 1000).await.expect("claim");
    }
    let store = open(&dir, 100);
    assert_eq!(store.worker("w"), Ok(Some("{\"status\": 1}".into())));
    assert_eq!(store.worker_ids(), Ok(vec!["w".to_owned()]));
    assert_eq!(store.status("1"), Ok(OrderStatus::Done("done".into())));
    // "2" was claimed when the process went away: leases live in memory, so on reopen it is
    // simply queued again, at its place.
    assert_eq!(store.counts().expect("counts").queued, 1);
    assert_eq!(store.requeue_expired(u64::MAX).await, Ok(0));
    assert_eq!(
        store.claim("w", "h", 0, 1000).await.expect("claim").map(|c| (c.work_order_id, c.request)),
        Some(("2".into(), b"request 2".to_vec()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_share_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(&dir, 10_000));
    let before = store.commits();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.submit(order(&format!("o{i}"), "w")).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), Ok(SubmitOutcome::Accepted));
    }
    let commits = store.commits() - before;
    assert_eq!(store.counts().expect("counts").queued, 200);
    assert!(commits < 200, "200 submissions took {commits} commits: no group commit");
}

fn blob(key: &str, version: u64, bytes: &[u8]) -> SealedBlob {
    SealedBlob { key: key.into(), version, blob: bytes.to_vec() }
}

#[tokio::test]
async fn sealed_state_commits_with_the_result_and_never_goes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 100);
    store.put_sealed(blob("worker/a/keys", 0, b"keys")).await.expect("put");
    store.submit(order("1", "w")).await.expect("submit");
    store.submit(order("2", "w")).await.expect("submit");
    store.claim("w", "h1", 0, 1000).await.expect("claim");
    store.claim("w", "h2", 0, 1000).await.expect("claim");
    store
        .complete("1", "h1", "r1".into(), Some(blob("worker/a/state/wallet", 2, b"v2")), None)
        .await
        .expect("complete");
    // An older version does not replace a newer one, and a losing completion stores nothing.
    store
        .complete("2", "h2", "r2".into(), Some(blob("worker/a/state/wallet", 1, b"v1")), None)
        .await
        .expect("complete");
    store
        .complete("1", "h1", "again".into(), Some(blob("worker/a/state/wallet", 9, b"v9")), None)
        .await
        .expect("complete");
    let sealed = store.sealed("worker/a/").expect("read");
    assert_eq!(
        sealed,
        vec![blob("worker/a/keys", 0, b"keys"), blob("worker/a/state/wallet", 2, b"v2")]
    );
    assert_eq!(store.sealed("worker/b/").expect("read"), vec![]);
}

#[tokio::test]
async fn a_receipt_gets_exactly_one_worker_update() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 100);
    // Receipt first: the completion appends the update; the late path then does nothing.
    store.submit(order("1", "w")).await.expect("submit");
    store.claim("w", "h", 0, 1000).await.expect("claim");
    store.create_receipt("1", "c".into()).await.expect("receipt");
    assert_eq!(
        store.add_receipt_update_if_finished("1", "early".into()).await,
        Ok(false),
        "not finished yet"
    );
    store
        .complete("1", "h", "r".into(), None, Some("worker update".into()))
        .await
        .expect("complete");
    assert_eq!(store.add_receipt_update_if_finished("1", "late".into()).await, Ok(false));
    assert_eq!(
        store.receipt("1").expect("read").expect("receipt").updates,
        vec!["worker update".to_owned()]
    );
    // Order finished first: the completion had no receipt to update; the late path does it once.
    store.submit(order("2", "w")).await.expect("submit");
    store.claim("w", "h", 0, 1000).await.expect("claim");
    store.complete("2", "h", "r".into(), None, Some("dropped".into())).await.expect("complete");
    store.create_receipt("2", "c".into()).await.expect("receipt");
    assert_eq!(store.add_receipt_update_if_finished("2", "late".into()).await, Ok(true));
    assert_eq!(store.add_receipt_update_if_finished("2", "again".into()).await, Ok(false));
    assert_eq!(
        store.receipt("2").expect("read").expect("receipt").updates,
        vec!["late".to_owned()]
    );
}

#[tokio::test]
async fn completion_reports_a_receipt_it_had_no_update_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 100);
    store.submit(order("1", "w")).await.expect("submit");
    store.claim("w", "h", 0, 1000).await.expect("claim");
    store.create_receipt("1", "c".into()).await.expect("receipt");
    assert_eq!(
        store.complete("1", "h", "r".into(), None, None).await,
        Ok(Completion::StoredReceiptPending)
    );
    assert_eq!(store.add_receipt_update_if_finished("1", "late".into()).await, Ok(true));
    assert_eq!(
        store.receipt("1").expect("read").expect("receipt").updates,
        vec!["late".to_owned()]
    );
}

#[tokio::test]
async fn a_volatile_order_is_written_with_its_response() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir, 100);
        assert_eq!(store.submit_volatile(order("v", "w")).await, Ok(SubmitOutcome::Accepted));
        assert_eq!(store.status("v"), Ok(OrderStatus::Pending));
        assert_eq!(store.request("v"), Ok(Some(b"request v".to_vec())));
        let commits = store.commits();
        let claimed = store.claim("w", "h", 0, 1000).await.expect("claim").expect("queued");
        assert_eq!(claimed.work_order_id, "v");
        assert_eq!(store.commits(), commits, "queuing and claiming wrote nothing");
        assert_eq!(
            store.complete("v", "h", "done".into(), None, None).await,
            Ok(Completion::Stored)
        );
        assert_eq!(store.commits(), commits + 1, "the order and its response in one commit");
        assert_eq!(store.persist("v").await, Ok(false));
    }
    let store = open(&dir, 100);
    assert_eq!(store.status("v"), Ok(OrderStatus::Done("done".into())));
    assert_eq!(store.request("v"), Ok(Some(b"request v".to_vec())));
}

#[tokio::test]
async fn a_volatile_order_is_lost_with_the_process_unless_persisted() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir, 100);
        store.submit_volatile(order("lost", "w")).await.expect("submit");
        store.submit_volatile(order("kept", "w")).await.expect("submit");
        assert_eq!(store.persist("kept").await, Ok(true));
        assert_eq!(store.persist("kept").await, Ok(false));
        assert_eq!(store.persist("never-submitted").await, Ok(false));
    }
    let store = open(&dir, 100);
    assert_eq!(store.status("lost"), Ok(OrderStatus::Unknown));
    assert_eq!(store.status("kept"), Ok(OrderStatus::Pending));
    assert_eq!(
        store.claim("w", "h", 0, 1000).await.expect("claim").map(|c| c.work_order_id),
        Some("kept".into())
    );
}

#[tokio::test]
async fn volatile_and_durable_submissions_refuse_each_others_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 100);
    store.submit(order("d", "w")).await.expect("submit");
    store.submit_volatile(order("v", "w")).await.expect("submit");
    assert_eq!(store.submit_volatile(order("d", "w")).await, Ok(SubmitOutcome::Duplicate));
    assert_eq!(store.submit_volatile(order("v", "w")).await, Ok(SubmitOutcome::Duplicate));
    assert_eq!(store.submit(order("v", "w")).await, Ok(SubmitOutcome::Duplicate));
    // Nothing was queued twice.
    assert_eq!(store.counts().expect("counts").queued, 2);
}

#[tokio::test]
async fn a_receipt_for_a_volatile_order_writes_the_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir, 100);
        store.submit_volatile(order("v", "w")).await.expect("submit");
        assert_eq!(store.create_receipt("v", "{}".into()).await, Ok(ReceiptCreation::Created));
    }
    let store = open(&dir, 100);
    assert_eq!(store.status("v"), Ok(OrderStatus::Pending));
    assert!(store.receipt("v").expect("receipt").is_some());
}

#[tokio::test]
async fn volatile_orders_count_against_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir, 2);
    store.submit_volatile(order("1", "w")).await.expect("submit");
    store.submit_volatile(order("2", "w")).await.expect("submit");
    // Nothing is finished, so nothing can make room.
    assert_eq!(store.submit_volatile(order("3", "w")).await, Ok(SubmitOutcome::Busy));
    assert_eq!(store.submit(order("3", "w")).await, Ok(SubmitOutcome::Busy));
    store.claim("w", "h", 0, 1000).await.expect("claim");
    store.complete("1", "h", "done".into(), None, None).await.expect("complete");
    assert_eq!(store.submit_volatile(order("3", "w")).await, Ok(SubmitOutcome::Accepted));
    assert_eq!(store.status("1"), Ok(OrderStatus::Purged), "the finished order made room");
}

#[tokio::test]
async fn the_purge_order_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir, 2);
        for id in ["first", "second"] {
            store.submit(order(id, "w")).await.expect("submit");
            store.claim("w", id, 0, 1000).await.expect("claim");
        }
        // Finished in the other order than submitted.
        for id in ["second", "first"] {
            store.complete(id, id, format!("done {id}"), None, None).await.expect("complete");
        }
        assert_eq!(store.counts().expect("counts").finished, 2);
    }
    let store = open(&dir, 2);
    assert_eq!(store.counts().expect("counts").finished, 2);
    assert_eq!(store.submit(order("third", "w")).await, Ok(SubmitOutcome::Accepted));
    assert_eq!(store.status("second"), Ok(OrderStatus::Purged), "the first to finish goes first");
    assert_eq!(store.status("first"), Ok(OrderStatus::Done("done first".into())));
    assert_eq!(store.counts().expect("counts").finished, 1);
}
