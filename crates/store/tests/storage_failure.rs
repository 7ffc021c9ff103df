//! The embedded store on storage that fails, injected in redb's storage backend: a write whose
//! commit fails is answered with an error and leaves nothing behind, on disk or in memory; the
//! store says it cannot write, recovers by itself once the storage can write again, and its
//! in-memory queues then match what a fresh open of the file finds. A failed commit that reached
//! the file after all (only its sync failed) is found, and the store refuses to write on.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use afallon_store::conformance::worker;
use afallon_store::{
    Completion, NewOrder, OrderResult, OrderStatus, RedbStore, RedbStoreOptions, SealedBlob, Store,
    StoreError, StoreHealth, SubmitOutcome,
};
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// What the storage does wrong, switched by the test.
#[derive(Debug, Default)]
struct Fault {
    /// Writes that still succeed before every write fails, as on a full disk; negative: no
    /// fault.
    writes_left: AtomicI64,
    /// Every sync fails.
    syncs: AtomicBool,
}

impl Fault {
    fn new() -> Arc<Self> {
        Arc::new(Self { writes_left: AtomicI64::new(-1), syncs: AtomicBool::new(false) })
    }

    /// Lets `writes` more writes through, then fails every write (and growth of the file).
    fn fill_after(&self, writes: i64) {
        self.writes_left.store(writes, Ordering::SeqCst);
    }

    fn fail_syncs(&self) {
        self.syncs.store(true, Ordering::SeqCst);
    }

    fn clear(&self) {
        self.writes_left.store(-1, Ordering::SeqCst);
        self.syncs.store(false, Ordering::SeqCst);
    }

    /// Whether this write fails.
    fn write_fails(&self) -> bool {
        self.writes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| (left > 0).then(|| left - 1))
            .is_err_and(|left| left == 0)
    }
}

fn no_space() -> std::io::Error {
    std::io::Error::from_raw_os_error(28) // ENOSPC
}

/// redb's own file backend, failing as [`Fault`] says.
#[derive(Debug)]
struct Faulty {
    file: FileBackend,
    fault: Arc<Fault>,
}

impl StorageBackend for Faulty {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if len > self.file.len()? && self.fault.writes_left.load(Ordering::SeqCst) == 0 {
            return Err(no_space());
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        if self.fault.syncs.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5)); // EIO
        }
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.fault.write_fails() {
            return Err(no_space());
        }
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

fn options() -> RedbStoreOptions {
    RedbStoreOptions { max_orders: 1000, ..Default::default() }
}

/// The store on failing storage, with the worker `w` registered.
async fn open_faulty(path: &Path, fault: &Arc<Fault>) -> RedbStore {
    let fault = Arc::clone(fault);
    let store = RedbStore::open_with_backend(path, options(), move |file| Faulty {
        file: FileBackend::new(file).expect("redb's file backend"),
        fault: Arc::clone(&fault),
    })
    .expect("open");
    store.put_worker("w", &worker(1, "0a", "0b")).await.expect("worker");
    store
}

fn order(id: &str) -> NewOrder {
    NewOrder {
        work_order_id: id.into(),
        worker_id: "w".into(),
        requester_id: "r".into(),
        request: format!("request {id}").into_bytes(),
    }
}

fn blob(version: u64) -> SealedBlob {
    SealedBlob {
        key: "worker/w/state/wallet".into(),
        version,
        based_on: None,
        blob: vec![version as u8; 16],
    }
}

/// Waits until the store's health is `wanted`, and says how long that took. The bound is only
/// there so that a store that never gets there fails the test instead of hanging it.
async fn until(store: &RedbStore, wanted: StoreHealth) -> Duration {
    let started = Instant::now();
    let mut health = store.health();
    tokio::time::timeout(Duration::from_secs(60), health.wait_for(|h| *h == wanted))
        .await
        .unwrap_or_else(|_| panic!("the store never became {wanted:?}"))
        .expect("the store is alive");
    started.elapsed()
}

/// Every queued order, by claiming them all, then queued again as they were: what the store
/// holds in memory.
async fn drain(store: &RedbStore) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(claimed) = store.claim("w", None, "drain", 0, 1).await.expect("claim") {
        ids.push(claimed.work_order_id);
    }
    store.requeue_expired(u64::MAX).await.expect("requeue");
    ids
}

/// Where each of `ids` stands, as the store answers.
async fn statuses(store: &RedbStore, ids: &[&str]) -> BTreeMap<String, OrderStatus> {
    let mut statuses = BTreeMap::new();
    for id in ids {
        statuses.insert((*id).to_owned(), store.status(id).await.expect("status"));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_stores_nothing_and_the_store_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let fault = Fault::new();
    let store = open_faulty(&path, &fault).await;
    for id in ["a", "b"] {
        assert_eq!(store.submit(order(id)).await, Ok(SubmitOutcome::Accepted));
    }
    store.put_sealed(blob(1)).await.expect("sealed state 1");
    let claimed =
        store.claim("w", None, "holder-a", 1000, 60_000).await.expect("claim").expect("a");
    assert_eq!(claimed.work_order_id, "a");

    // The disk fills: the next commit fails, whatever is in it.
    fault.fill_after(0);
    let (submitted, completed) = tokio::join!(
        store.submit(order("c")),
        store.complete("a", "holder-a", OrderResult::ok("response a"), Some(blob(2))),
    );
    eprintln!("while the disk is full: submit {submitted:?}, complete {completed:?}");
    for outcome in [submitted.map(|_| ()), completed.map(|_| ())] {
        let error = outcome.expect_err("a write in a failed commit fails");
        assert!(error.not_stored(), "a clear 'not stored' error, not {error:?}");
    }
    assert_ne!(*store.health().borrow(), StoreHealth::Writable, "the store says it cannot write");
    let refused = store.submit(order("d")).await.expect_err("no write while failing");
    assert!(refused.not_stored(), "refused as not stored: {refused:?}");
    assert_eq!(
        store.submit_volatile(order("e")).await,
        Err(StoreError::Unavailable),
        "nor a synchronous submission, which could not be answered"
    );
    // It keeps trying by itself, and keeps failing while the disk is full.
    let started = Instant::now();
    while store.stats().write_failures < 4 {
        assert!(started.elapsed() < Duration::from_secs(60), "the store tries again by itself");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("4 failures (the commit, then tries) within {:?}", started.elapsed());
    assert_eq!(*store.health().borrow(), StoreHealth::Failing);

    // Space returns: the store writes again without being reopened by hand.
    fault.clear();
    let took = until(&store, StoreHealth::Writable).await;
    eprintln!("writable again {took:?} after the disk was freed");

    // Nothing of the failed commit is visible, and memory agrees.
    let ids = ["a", "b", "c", "d", "e"];
    let seen = statuses(&store, &ids).await;
    assert_eq!(seen["a"], OrderStatus::Pending, "a's completion was not stored");
    assert_eq!(seen["c"], OrderStatus::Unknown, "c was not stored");
    assert_eq!(seen["d"], OrderStatus::Unknown);
    assert_eq!(seen["e"], OrderStatus::Unknown);
    let sealed = store.sealed("worker/w/").await.expect("sealed");
    assert_eq!(sealed, [blob(1)], "the state of the failed completion was not stored");
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.queued, counts.processing, counts.finished), (2, 0, 0));
    assert_eq!(
        store.complete("a", "holder-a", OrderResult::ok("late"), None).await,
        Ok(Completion::LeaseLost),
        "the failed completion ended its run: the order is queued again"
    );

    // Writes work, and an id that was not stored is free.
    assert_eq!(store.submit(order("c")).await, Ok(SubmitOutcome::Accepted));
    let next = store.claim("w", None, "holder-a2", 2000, 60_000).await.expect("claim").expect("a");
    assert_eq!(next.work_order_id, "a", "a kept its place");
    assert_eq!(
        store.complete("a", "holder-a2", OrderResult::ok("response a"), Some(blob(2))).await,
        Ok(Completion::Stored)
    );
    assert_eq!(store.sealed("worker/w/").await.expect("sealed"), [blob(2)]);

    // What memory says is what the file says.
    let before = statuses(&store, &ids).await;
    let in_memory = drain(&store).await;
    drop(store);
    let reopened = RedbStore::open(&path, options()).expect("reopen");
    assert_eq!(statuses(&reopened, &ids).await, before, "statuses after a reopen");
    assert_eq!(drain(&reopened).await, in_memory, "queues after a reopen");
    assert_eq!(in_memory, ["b", "c"]);
}

/// The disk fills at each point of a commit in turn, from its first write to past its last:
/// every submission and completion is either stored (and answered so) or not (and answered with
/// an error, the order queued again), and after the store recovers, memory and a fresh open of
/// the file agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_cut_short_at_any_write_is_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let fault = Fault::new();
    let mut store = open_faulty(&path, &fault).await;
    let (mut stored, mut failed, mut done) = (Vec::new(), Vec::new(), Vec::new());
    let mut writes = 0;
    let mut failures = 0;
    // Past the last write of a commit, the commit succeeds; a few in a row mean every point
    // was tried.
    let mut successes_in_a_row = 0;
    while successes_in_a_row < 3 {
        let ids: Vec<String> = (0..4).map(|n| format!("{writes}-{n}")).collect();
        // An order stored in an earlier round is completed in this one.
        let holder = format!("holder-{writes}");
        let claimed = store.claim("w", None, &holder, 0, u64::MAX / 2).await.expect("claim");
        fault.fill_after(writes);
        // Sent together, so that they share commits.
        let complete = async {
            match &claimed {
                Some(claimed) => {
                    let id = &claimed.work_order_id;
                    Some(
                        store
                            .complete(id, &holder, OrderResult::ok(format!("done {id}")), None)
                            .await,
                    )
                }
                None => None,
            }
        };
        let (a, b, c, d, completed) = tokio::join!(
            store.submit(order(&ids[0])),
            store.submit(order(&ids[1])),
            store.submit(order(&ids[2])),
            store.submit(order(&ids[3])),
            complete,
        );
        fault.clear();
        let outcomes = [a, b, c, d];
        let mut any_failed = false;
        if let (Some(claimed), Some(completed)) = (&claimed, completed) {
            match completed {
                Ok(Completion::Stored) => done.push(claimed.work_order_id.clone()),
                Err(error) if error.not_stored() => any_failed = true,
                other => panic!("completing {}: {other:?}", claimed.work_order_id),
            }
        }
        for (id, outcome) in ids.iter().zip(outcomes) {
            match outcome {
                Ok(SubmitOutcome::Accepted) => stored.push(id.clone()),
                Err(error) if error.not_stored() => {
                    any_failed = true;
                    failed.push(id.clone());
                }
                other => panic!("{id}: {other:?}"),
            }
        }
        if any_failed {
            successes_in_a_row = 0;
            until(&store, StoreHealth::Writable).await;
        } else {
            successes_in_a_row += 1;
        }
        writes += 1;
        // Every few rounds, memory against a fresh open of the file.
        if writes % 8 == 0 {
            let in_memory = drain(&store).await;
            failures += store.stats().write_failures;
            drop(store);
            store = open_faulty(&path, &fault).await;
            assert_eq!(drain(&store).await, in_memory, "queues after a reopen, round {writes}");
        }
    }
    eprintln!(
        "commits cut at {writes} points: {} orders stored, {} refused, {} failures counted",
        stored.len(),
        failed.len(),
        failures + store.stats().write_failures
    );
    assert!(!failed.is_empty(), "some commits must have failed to show anything");
    for id in &stored {
        let expected = if done.contains(id) {
            OrderStatus::Done(OrderResult::ok(format!("done {id}")))
        } else {
            OrderStatus::Pending
        };
        assert_eq!(store.status(id).await, Ok(expected), "{id} was acknowledged");
    }
    for id in &failed {
        assert_eq!(store.status(id).await, Ok(OrderStatus::Unknown), "{id} was refused");
    }
    let in_memory = drain(&store).await;
    drop(store);
    let reopened = RedbStore::open(&path, options()).expect("reopen");
    let on_disk = drain(&reopened).await;
    assert_eq!(on_disk, in_memory, "queues after a reopen");
    let mut on_disk_sorted = on_disk.clone();
    on_disk_sorted.sort();
    stored.retain(|id| !done.contains(id));
    stored.sort();
    assert_eq!(on_disk_sorted, stored, "exactly the acknowledged, unfinished orders are queued");
    eprintln!("{} orders completed", done.len());
}

/// A commit whose writes all reached the file but whose sync failed is in the file after all:
/// the store finds it when it reopens the file, and refuses to write on, since what it answered
/// and what the file holds differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_found_in_the_file_stops_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let fault = Fault::new();
    let store = open_faulty(&path, &fault).await;
    assert_eq!(store.submit(order("a")).await, Ok(SubmitOutcome::Accepted));
    fault.fail_syncs();
    let error = store.submit(order("b")).await.expect_err("the sync failed");
    assert!(error.not_stored(), "{error:?}");
    fault.clear();
    let took = until(&store, StoreHealth::Lost).await;
    eprintln!("found the failed commit in the file {took:?} after the fault cleared");
    assert_eq!(store.submit(order("c")).await, Err(StoreError::Uncertain));
    drop(store);
    let reopened = RedbStore::open(&path, options()).expect("reopen");
    assert_eq!(
        reopened.status("b").await,
        Ok(OrderStatus::Pending),
        "b reached the file after all"
    );
    assert_eq!(*reopened.health().borrow(), StoreHealth::Writable, "a reopened store writes");
}
