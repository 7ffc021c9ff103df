//! A node whose disk fills under load, on a small tmpfs of its own (mounting one needs root; the
//! test says it is skipped and passes without it), in asynchronous and synchronous mode:
//! requesters whose orders could not be stored
//! get a clear error (code 8, "not stored"), `/readyz` says not ready, and once space is freed
//! the node recovers by itself: every acknowledged order completes, and the wallet's balance
//! counts each acknowledged deposit once, whatever runs failed to store their results.

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use afallon_client::{ClientError, InputProtection, PendingResult, Submission, Worker};
use afallon_proto::WorkOrderRequest;
use common::Service;

/// The tmpfs's size: room for the node's files and some orders, filled up by the test.
const TMPFS: &str = "size=16m,mode=0700";
/// Padding after the wallet's operation (ignored after the NUL, as Avalon's wallet does), so that
/// each order takes room in the store.
const PADDING: usize = 24 << 10;
const REQUESTERS: usize = 8;
/// Refusals to see before space is freed.
const REFUSALS: usize = 40;
/// Room left on the tmpfs when the test fills it: some orders are stored, and the disk fills
/// while they are processed.
const ROOM: u64 = 2 << 20;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(dir: &Path) -> Option<Self> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", TMPFS, "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !output.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (needs root): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        Some(Self(dir.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the filesystem of `path` with one file until no byte more fits, then frees `room`
/// bytes of it; returns its size.
fn fill(path: &Path, room: u64) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0x5a_u8; 4096];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let size = written.saturating_sub(room);
    file.set_len(size).expect("free some room");
    let _ = file.sync_all();
    size
}

/// The HTTP status of `GET path` on the listener (0 if it cannot be reached).
fn get_status(url: &str, path: &str) -> u16 {
    let addr = url.strip_prefix("http://").expect("http URL");
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return 0 };
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// A wallet order of one operation, padded.
fn deposit(worker: &Worker, operation: &str) -> (WorkOrderRequest, PendingResult) {
    let mut builder = worker.work_order("simple-wallet").expect("builder");
    let input = format!("{operation}\0{}", "p".repeat(PADDING));
    builder.input(input.as_bytes(), InputProtection::Session).expect("input");
    builder.build(None).expect("build")
}

/// The wallet's answer to an order that completed.
async fn answer(
    service: &Service,
    worker: &Worker,
    request: &WorkOrderRequest,
    pending: &PendingResult,
) -> String {
    let result = service
        .client()
        .wait_result(&request.work_order_id, Duration::from_millis(20), Duration::from_secs(300))
        .await
        .expect("the acknowledged order completes");
    let outputs = pending.open(&result, &worker.verification_key).expect("the result opens");
    String::from_utf8(outputs.into_iter().next().expect("an output").1).expect("utf-8")
}

/// Submits and checks the order was accepted (pending, or done in synchronous mode).
async fn accepted(service: &Service, request: &WorkOrderRequest) {
    match service.client().submit(request).await.expect("submit") {
        Submission::Pending | Submission::Done(_) => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_clearly_and_the_node_recovers_by_itself() {
    full_disk(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_clearly_and_the_node_recovers_by_itself_in_sync_mode() {
    full_disk(&["--sync"]).await;
}

async fn full_disk(args: &[&str]) {
    eprintln!("afallon up {args:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let Some(_mount) = Mount::new(&mnt) else { return };
    let data = mnt.join("afallon-data");
    let service = Service::start(&data, args);
    let worker = Arc::new(service.worker().await);

    let (request, pending) = deposit(&worker, "deposit alice 100");
    accepted(&service, &request).await;
    assert_eq!(answer(&service, &worker, &request, &pending).await, "WALLET RESULT: alice::100");

    let filler = mnt.join("filler");
    let filled = fill(&filler, ROOM);
    eprintln!("filled the tmpfs with {} KiB, leaving {} KiB", filled >> 10, ROOM >> 10);

    // Load until enough submissions were refused; /readyz is watched meanwhile.
    let started = Instant::now();
    let refused = Arc::new(AtomicUsize::new(0));
    let not_ready_seen = Arc::new(AtomicBool::new(false));
    let loaded = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (url, not_ready_seen, loaded) =
            (service.url.clone(), Arc::clone(&not_ready_seen), Arc::clone(&loaded));
        std::thread::spawn(move || {
            while !loaded.load(Ordering::SeqCst) {
                if get_status(&url, "/readyz") == 503 {
                    not_ready_seen.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut requesters = Vec::new();
    for _ in 0..REQUESTERS {
        let (client, worker, refused) =
            (service.client(), Arc::clone(&worker), Arc::clone(&refused));
        requesters.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut other_errors = Vec::new();
            let mut sent = 0;
            while refused.load(Ordering::SeqCst) < REFUSALS && sent < 2000 {
                sent += 1;
                let (request, pending) = deposit(&worker, "deposit alice 1");
                match client.submit(&request).await {
                    Ok(Submission::Pending | Submission::Done(_)) => {
                        acknowledged.push((request, pending))
                    }
                    Err(ClientError::Rpc(error)) if error.code == 8 => {
                        assert_eq!(
                            error.message,
                            "Storage failure: the work order was not stored; retry later"
                        );
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    other => other_errors.push(format!("{other:?}")),
                }
            }
            (acknowledged, other_errors)
        }));
    }
    let mut acknowledged = Vec::new();
    for requester in requesters {
        let (acked, other_errors) = requester.await.expect("requester");
        assert!(other_errors.is_empty(), "only clear refusals: {other_errors:?}");
        acknowledged.extend(acked);
    }
    loaded.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    let refusals = refused.load(Ordering::SeqCst);
    let failures = service.metric("afallon_store_commit_failures_total").await;
    eprintln!(
        "under load on a full disk for {:?}: {} acknowledged, {refusals} refused, {failures} failed commits",
        started.elapsed(),
        acknowledged.len()
    );
    assert!(refusals >= REFUSALS, "the disk must fill to show anything");
    assert!(not_ready_seen.load(Ordering::SeqCst), "/readyz said not ready while the store failed");

    // Space returns; the node recovers by itself.
    std::fs::remove_file(&filler).expect("free the space");
    let freed = Instant::now();
    while get_status(&service.url, "/readyz") != 200 {
        assert!(freed.elapsed() < Duration::from_secs(120), "the node never became ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("ready again {:?} after the space was freed", freed.elapsed());

    // Every acknowledged deposit ran once as far as the wallet goes: its balances are 101 up to
    // 100 + the acknowledged deposits, each once.
    let mut balances = Vec::new();
    for (request, pending) in &acknowledged {
        let answer = answer(&service, &worker, request, pending).await;
        let balance: u64 = answer
            .strip_prefix("WALLET RESULT: alice::")
            .and_then(|b| b.parse().ok())
            .unwrap_or_else(|| panic!("a deposit's answer: {answer}"));
        balances.push(balance);
    }
    balances.sort_unstable();
    let expected: Vec<u64> = (101..101 + acknowledged.len() as u64).collect();
    assert_eq!(balances, expected, "each acknowledged deposit counted once");
    let (request, pending) = deposit(&worker, "deposit alice 1");
    accepted(&service, &request).await;
    let last = answer(&service, &worker, &request, &pending).await;
    assert_eq!(last, format!("WALLET RESULT: alice::{}", 101 + acknowledged.len()));
    let requeued = service.metric("afallon_workorders_requeued_total").await;
    let runs = service.metric("afallon_workorder_processing_seconds_count").await;
    eprintln!(
        "orders: {} acknowledged and completed; enclave runs {runs} (the runs beyond one per order \
         were of orders whose results could not be stored), requeued after lease expiry {requeued}",
        acknowledged.len() + 2
    );
    drop(service);
}
