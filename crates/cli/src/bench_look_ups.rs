//! `afallon bench --look-ups RECORDS`: look-up latency as the store grows to `RECORDS` finished
//! orders with receipts, and what 50 look-up callers cost order throughput.
//!
//! The records are written straight into the embedded store (a look-up does not care how an
//! order got there), between runs of a node on it: 1,000, then 10,000, then 100,000 (up to
//! `RECORDS`). A few receipts belong to one requester at every size, so the selective look-up
//! answers the same ids whatever the store holds, and a page look-up always answers one page.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use afallon_bench::{BenchConfig, LookUpLatency, Mode, Stop};
use afallon_client::{Client, Policy};
use afallon_node::NodeConfig;
use afallon_node::afallon_store::{
    NewOrder, OrderResult, ReceiptCreate, ReceiptUpdate, RedbStore, RedbStoreOptions, Store,
};
use anyhow::Context as _;
use tokio::task::JoinSet;

use crate::bench::EmbeddedNode;

/// The requester whose receipts the selective look-up finds: the first ten, at every size.
const REQUESTER: &str = "5e1ec7";
/// Receipts of [`REQUESTER`].
const SELECTIVE: u64 = 10;
/// Look-up callers during the second load run.
const CALLERS: usize = 50;
/// Look-ups timed per kind and size.
const ROUNDS: usize = 200;

/// Runs the look-up bench; `load_seconds` for each of the two load runs.
pub(crate) async fn bench(records: u64, mode: Mode, load_seconds: f64) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("afallon-bench-look-ups-{}", std::process::id()));
    let outcome = run(&dir, records, mode, load_seconds).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn run(dir: &Path, records: u64, mode: Mode, load_seconds: f64) -> anyhow::Result<()> {
    let mut config = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir);
    config.insecure_simulation = true;
    config.sync_mode = mode == Mode::Sync;
    config.max_orders = records + 1_000_000;
    // A first run registers the worker.
    EmbeddedNode::start(config.clone()).await?.shutdown().await;
    let worker_id = afallon_proto::worker_id_from_name("singleton-worker-1");
    let mut sizes: Vec<u64> =
        [1_000, 10_000, 100_000].into_iter().filter(|&n| n < records).collect();
    sizes.push(records.max(SELECTIVE));
    println!("look-ups, {ROUNDS} of each kind one at a time (ms: p50 / p99)");
    println!(
        "{:>9}  {:>22}  {:>22}  {:>16}",
        "records", "receipts of 1 requester", "receipts, one page", "workers"
    );
    let mut filled = 0;
    for (index, &size) in sizes.iter().enumerate() {
        fill(dir, &config, filled, size, &worker_id).await?;
        filled = size;
        let node = EmbeddedNode::start(config.clone()).await?;
        let client = Arc::new(Client::new(&format!("http://{}", node.addr))?);
        let latency =
            afallon_bench::look_up_latency(&client, REQUESTER, &worker_id, ROUNDS).await?;
        print_row(size, &latency);
        if index + 1 == sizes.len() {
            under_look_ups(&client, dir, mode, load_seconds, &worker_id).await?;
        }
        node.shutdown().await;
    }
    Ok(())
}

fn print_row(records: u64, latency: &LookUpLatency) {
    let cell =
        |l: &afallon_bench::Latency, ids: usize| format!("{:.2} / {:.2} ({ids} ids)", l.p50, l.p99);
    println!(
        "{records:>9}  {:>22}  {:>22}  {:>16}",
        cell(&latency.selective, latency.selective_ids),
        cell(&latency.page, latency.page_ids),
        format!("{:.2} / {:.2}", latency.workers.p50, latency.workers.p99),
    );
}

/// The order load alone, then with [`CALLERS`] look-up callers.
async fn under_look_ups(
    client: &Arc<Client>,
    dir: &Path,
    mode: Mode,
    seconds: f64,
    worker_id: &str,
) -> anyhow::Result<()> {
    let key = afallon_platform::SimPlatform::local_attestation_key(&dir.join("sim"))?
        .context("the node made its simulation key")?;
    let policy = Policy::new().insecure_allow_simulation().trust_simulation_key(key);
    let worker = Arc::new(client.verify_worker(worker_id, &policy).await?);
    let config = BenchConfig {
        concurrency: 32,
        stop: Stop::Duration(Duration::from_secs_f64(seconds)),
        workload: "echo-result".into(),
        input_size: 1024,
        mode,
        signed: false,
        result_timeout: Duration::from_secs(60),
    };
    let quiet = Arc::new(|_, _| {});
    let alone =
        afallon_bench::run(Arc::clone(client), Arc::clone(&worker), config.clone(), quiet.clone())
            .await;
    let stop = Arc::new(AtomicBool::new(false));
    let callers = tokio::spawn(afallon_bench::look_up_callers(
        Arc::clone(client),
        REQUESTER.into(),
        worker_id.into(),
        CALLERS,
        Arc::clone(&stop),
    ));
    let loaded = afallon_bench::run(Arc::clone(client), worker, config, quiet).await;
    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = callers.await?;
    let errors = |r: &afallon_bench::Report| r.errors.values().sum::<u64>();
    println!(
        "orders alone           {:.1} orders/s, p99 {:.1} ms, {} errors",
        alone.orders_per_second,
        alone.latency_ms.p99,
        errors(&alone)
    );
    println!(
        "with {CALLERS} look-up callers {:.1} orders/s, p99 {:.1} ms, {} errors; {:.0} look-ups/s ({failed} failed): {:.2} of the orders alone",
        loaded.orders_per_second,
        loaded.latency_ms.p99,
        errors(&loaded),
        answered as f64 / loaded.seconds,
        loaded.orders_per_second / alone.orders_per_second
    );
    Ok(())
}

/// Writes orders `from..to` (finished, each with a receipt its requester marked completed)
/// straight into the node's store.
async fn fill(
    dir: &Path,
    config: &NodeConfig,
    from: u64,
    to: u64,
    worker_id: &str,
) -> anyhow::Result<()> {
    let options = RedbStoreOptions { max_orders: config.max_orders, ..RedbStoreOptions::default() };
    let store = Arc::new(RedbStore::open(&dir.join("store.redb"), options)?);
    let started = std::time::Instant::now();
    let mut next = from;
    while next < to {
        let chunk: Vec<u64> = (next..to.min(next + 2_000)).collect();
        next += chunk.len() as u64;
        let orders = chunk.iter().map(|&i| NewOrder {
            work_order_id: order_id(i),
            worker_id: worker_id.to_owned(),
            requester_id: "look-ups".to_owned(),
            request: b"{}".to_vec(),
        });
        each(&store, orders, |store, order| async move { store.submit(order).await.map(drop) })
            .await?;
        for _ in &chunk {
            store.claim(worker_id, None, "fill", 0, u64::MAX / 2).await?;
        }
        each(&store, chunk.iter().map(|&i| order_id(i)), |store, id| async move {
            store.complete(&id, "fill", OrderResult::ok("{}"), None).await.map(drop)
        })
        .await?;
        let worker = worker_id.to_owned();
        each(&store, chunk.iter().copied(), move |store, i| {
            let worker = worker.clone();
            async move {
                let id = order_id(i);
                let requester = if i < SELECTIVE {
                    REQUESTER.to_owned()
                } else {
                    format!("{:x}", 0x1000 + i % 1000)
                };
                let create = ReceiptCreate {
                    work_order_id: Some(id.clone()),
                    worker_id: Some(worker),
                    worker_service_id: Some("5e5e".into()),
                    requester_id: Some(requester),
                    receipt_create_status: Some(0),
                    ..ReceiptCreate::default()
                };
                store.create_receipt(&id, &create).await?;
                let update = ReceiptUpdate { update_type: Some(1), ..ReceiptUpdate::default() };
                store.add_receipt_update(&id, &update).await.map(drop)
            }
        })
        .await?;
    }
    eprintln!("stored orders {from}..{to} with receipts in {:.1?}", started.elapsed());
    Ok(())
}

fn order_id(i: u64) -> String {
    format!("{i:064x}")
}

/// Runs `write` on every item at once (the store commits them in groups).
async fn each<T, F, Fut>(
    store: &Arc<RedbStore>,
    items: impl Iterator<Item = T>,
    write: F,
) -> anyhow::Result<()>
where
    T: Send + 'static,
    F: Fn(Arc<RedbStore>, T) -> Fut,
    Fut: std::future::Future<Output = Result<(), afallon_node::afallon_store::StoreError>>
        + Send
        + 'static,
{
    let mut tasks = JoinSet::new();
    for item in items {
        tasks.spawn(write(Arc::clone(store), item));
    }
    while let Some(done) = tasks.join_next().await {
        done?.context("writing to the store")?;
    }
    Ok(())
}
