//! `afallon bench`: load against a listener (or one started in this process), the crypto limit
//! measured in the same run, and the ratio of the two.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use afallon_bench::{BenchConfig, HostileReport, Limit, Mode, Report, Stop};
use afallon_client::{Client, Policy};
use afallon_platform::SimPlatform;
use anyhow::Context as _;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Async,
    Sync,
}

/// The pool `afallon bench --pool` loads.
const BENCH_POOL: &str = "bench-pool";

/// `afallon bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// A running listener; without it (or with --embedded) the bench starts its own node in this
    /// process.
    #[arg(long, env = "AFALLON_URL", conflicts_with = "embedded")]
    url: Option<String>,
    /// For an https:// URL: the PEM file of the CA that signed the listener's certificate.
    #[arg(long, env = "AFALLON_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Start a node in this process (embedded store in a temporary directory, simulated TEE).
    #[arg(long)]
    embedded: bool,
    /// Requesters working at once.
    #[arg(long, short = 'c', default_value_t = 32)]
    concurrency: usize,
    /// Run for this many seconds...
    #[arg(long, short = 'd', default_value_t = 10.0, conflicts_with = "count")]
    duration: f64,
    /// ...or until this many orders are done.
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// The workload (echo-result outputs are also checked against their inputs).
    #[arg(long, short = 'l', default_value = "echo-result")]
    workload: String,
    /// Bytes per input.
    #[arg(long, default_value_t = 1024)]
    input_size: usize,
    /// async: submit, then poll; sync: the result comes with the submit answer.
    #[arg(long, value_enum, default_value = "async")]
    mode: ModeArg,
    /// Sign every request.
    #[arg(long)]
    sign: bool,
    /// Seconds spent on each in-process limit measurement (the crypto limit is measured before
    /// the load and after it, the enclave limit after it).
    #[arg(long, default_value_t = 3.0)]
    limit_seconds: f64,
    /// The local node's data directory (its simulation key is trusted).
    #[arg(long, default_value = "afallon-data")]
    data_dir: PathBuf,
    /// Accept simulated workers from anywhere.
    #[arg(long)]
    insecure_allow_simulation: bool,
    /// After the load, run it again while this many connections per kind send the most
    /// expensive requests that fit within the listener's default limits, and compare.
    #[arg(long, value_name = "SENDERS")]
    hostile: Option<usize>,
    /// Instead of the order load alone: fill the embedded store with up to this many finished
    /// orders with receipts, time look-ups as it grows, and compare order throughput with and
    /// without 50 look-up callers.
    #[arg(long, value_name = "RECORDS", conflicts_with_all = ["url", "hostile"])]
    look_ups: Option<u64>,
    /// The bench's own node runs its worker's enclave in a process of its own (`afallon
    /// enclave`, over pipes), as `afallon up --enclave-process` does.
    #[arg(long, conflicts_with = "url")]
    enclave_process: bool,
    /// The bench's own node hosts a worker pool of this many KMEs (and `--wpes` WPEs), and the
    /// load goes to the pool instead of the singleton worker.
    #[arg(long, value_name = "KMES", conflicts_with = "url")]
    pool: Option<usize>,
    /// The pool's WPEs.
    #[arg(long, default_value_t = 2, requires = "pool")]
    wpes: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mode = match args.mode {
        ModeArg::Async => Mode::Async,
        ModeArg::Sync => Mode::Sync,
    };
    if let Some(records) = args.look_ups {
        return crate::bench_look_ups::bench(records, mode, args.duration).await;
    }
    let embedded_dir = std::env::temp_dir().join(format!("afallon-bench-{}", std::process::id()));
    let (url, node, sim_dir) = match &args.url {
        Some(url) if !args.embedded => (url.clone(), None, args.data_dir.join("sim")),
        _ => {
            let mut config =
                afallon_node::NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), &embedded_dir);
            config.insecure_simulation = true;
            config.sync_mode = mode == Mode::Sync;
            config.max_orders = 200_000;
            if args.enclave_process {
                let program = std::env::current_exe().context("finding this program")?;
                config.enclave_process = Some(vec![
                    program.into(),
                    "enclave".into(),
                    "--data-dir".into(),
                    embedded_dir.clone().into(),
                ]);
            }
            if let Some(kmes) = args.pool {
                let mut pool = afallon_node::PoolConfig::new(BENCH_POOL);
                (pool.kmes, pool.wpes) = (kmes, args.wpes);
                config.pool = Some(pool);
            }
            let node = EmbeddedNode::start(config).await?;
            (format!("http://{}", node.addr), Some(node), embedded_dir.join("sim"))
        }
    };
    let client = Arc::new(crate::requester::client(&url, args.ca_file.as_deref())?);
    let policy = if args.insecure_allow_simulation {
        Policy::new().insecure_allow_simulation()
    } else {
        match SimPlatform::local_attestation_key(&sim_dir)? {
            Some(key) => Policy::new().insecure_allow_simulation().trust_simulation_key(key),
            None => Policy::new(),
        }
    };
    let worker_name = if args.pool.is_some() { BENCH_POOL } else { "singleton-worker-1" };
    let worker_id = afallon_proto::worker_id_from_name(worker_name);
    let worker =
        Arc::new(client.verify_worker(&worker_id, &policy).await.context("verifying the worker")?);

    let stop = match args.count {
        Some(count) => Stop::Count(count),
        None => Stop::Duration(Duration::from_secs_f64(args.duration)),
    };
    let config = BenchConfig {
        concurrency: args.concurrency,
        stop,
        workload: args.workload.clone(),
        input_size: args.input_size,
        mode,
        signed: args.sign,
        result_timeout: Duration::from_secs(60),
    };
    // The crypto limit is measured before the load and again after it: this kind of machine
    // drifts in speed by a tenth from one minute to the next, and the load is compared with the
    // mean of the two.
    let limit_time = Duration::from_secs_f64(args.limit_seconds);
    let input_size = args.input_size;
    let crypto_limit = || async move {
        tokio::task::spawn_blocking(move || {
            afallon_bench::crypto_limit(input_size, threads, limit_time)
        })
        .await?
        .context("measuring the crypto limit")
    };
    let crypto_before = crypto_limit().await?;
    let bar = progress_bar(stop, args.json);
    let progress_bar = bar.clone();
    let report = afallon_bench::run(
        Arc::clone(&client),
        Arc::clone(&worker),
        config.clone(),
        Arc::new(move |done, failed| {
            progress_bar.set_position(done + failed);
            if failed > 0 {
                progress_bar.set_message(format!("{failed} errors"));
            }
        }),
    )
    .await;
    bar.finish_and_clear();
    let hostile = match args.hostile {
        Some(senders) => Some(under_attack(&url, &client, &worker, config.clone(), senders).await?),
        None => None,
    };

    let server_peak = peak_memory(&client).await;
    if let Some(node) = node {
        node.shutdown().await;
        let _ = std::fs::remove_dir_all(&embedded_dir);
    }
    let crypto_after = crypto_limit().await?;
    let crypto = crypto_before.mean(&crypto_after);
    let enclave = tokio::task::spawn_blocking(move || {
        afallon_bench::enclave_limit(input_size, threads, limit_time)
    })
    .await?
    .context("measuring the enclave limit")?;
    let ratio = report.orders_per_second / crypto.orders_per_second;
    if args.json {
        println!(
            "{}",
            json!({
                "setup": {"url": url, "embedded": args.url.is_none() || args.embedded, "concurrency": args.concurrency,
                          "workload": args.workload, "inputSize": args.input_size, "mode": mode, "signed": args.sign},
                "report": report,
                "cryptoLimit": crypto,
                "cryptoLimitBefore": crypto_before,
                "cryptoLimitAfter": crypto_after,
                "enclaveLimit": enclave,
                "ratio": ratio,
                "serverPeakResidentBytes": server_peak,
                "hostile": hostile.as_ref().map(|(load, kinds)| json!({"load": load, "requests": kinds})),
            })
        );
    } else {
        let limits = Limits { crypto, crypto_before, crypto_after, enclave };
        print_report(&args, mode, &report, &limits, ratio, server_peak);
        if let Some((load, kinds)) = &hostile {
            print_hostile(&report, load, kinds);
        }
    }
    Ok(())
}

/// The same load again while hostile senders work.
async fn under_attack(
    url: &str,
    client: &Arc<Client>,
    worker: &Arc<afallon_client::Worker>,
    config: BenchConfig,
    senders: usize,
) -> anyhow::Result<(Report, BTreeMap<&'static str, HostileReport>)> {
    let Some(rest) = url.strip_prefix("http://") else {
        anyhow::bail!("--hostile speaks plain HTTP: give an http:// URL");
    };
    let authority = rest.split('/').next().context("the URL names no host")?.to_owned();
    let addr = tokio::net::lookup_host(&authority)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .context("the listener's host resolves to no address")?;
    let limits = afallon_proto::RequestLimits::default();
    let bodies = afallon_bench::hostile_bodies(limits.max_request_bytes, limits.max_data_items);
    let stop = Arc::new(AtomicBool::new(false));
    let attack =
        tokio::spawn(afallon_bench::send_hostile(addr, bodies, senders, Arc::clone(&stop)));
    let report =
        afallon_bench::run(Arc::clone(client), Arc::clone(worker), config, Arc::new(|_, _| {}))
            .await;
    stop.store(true, Ordering::Relaxed);
    Ok((report, attack.await?))
}

fn print_hostile(alone: &Report, load: &Report, kinds: &BTreeMap<&'static str, HostileReport>) {
    let errors: u64 = load.errors.values().sum();
    println!(
        "under attack   {:.1} orders/s, {errors} errors, p99 {:.1} ms: {:.2} of the load alone",
        load.orders_per_second,
        load.latency_ms.p99,
        load.orders_per_second / alone.orders_per_second
    );
    for (name, kind) in kinds {
        println!(
            "  hostile {name} ({:.1} MiB): {} answered, {} failed, mean {:.0} ms, max {:.0} ms",
            kind.bytes as f64 / (1 << 20) as f64,
            kind.answered,
            kind.failed,
            kind.mean_ms,
            kind.max_ms
        );
        println!("    answer: {}", kind.answer);
    }
}

/// A node started by the bench, on a runtime of its own (as `afallon up` has), so that the
/// requesters and the node share the cores as two processes would, not one runtime's threads.
pub(crate) struct EmbeddedNode {
    pub(crate) addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl EmbeddedNode {
    pub(crate) async fn start(config: afallon_node::NodeConfig) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("embedded-node")
            .build()
            .context("starting the embedded node's runtime")?;
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let node = match afallon_node::Node::start(config).await {
                    Ok(node) => node,
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(node.local_addr()));
                let _ = stopped.await;
                node.shutdown().await;
            });
        });
        let addr = started
            .await
            .context("the embedded node's thread ended")?
            .context("starting the embedded node")?;
        Ok(Self { addr, stop, thread })
    }

    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

fn progress_bar(stop: Stop, hidden: bool) -> ProgressBar {
    let bar = match stop {
        Stop::Count(count) => ProgressBar::new(count),
        Stop::Duration(_) => ProgressBar::no_length(),
    };
    if hidden {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = match stop {
        Stop::Count(_) => {
            ProgressStyle::with_template("{bar:40} {pos}/{len} orders, {per_sec} {msg}")
        }
        Stop::Duration(_) => {
            ProgressStyle::with_template("{spinner} {pos} orders in {elapsed}, {per_sec} {msg}")
        }
    };
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The listener's peak resident memory, from its `/metrics`.
async fn peak_memory(client: &Client) -> Option<u64> {
    let text = client.metrics().await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("afallon_process_peak_resident_memory_bytes "))
        .and_then(|value| value.trim().parse().ok())
}

/// The in-process limits of a run.
struct Limits {
    /// The mean of `crypto_before` and `crypto_after`.
    crypto: Limit,
    crypto_before: Limit,
    crypto_after: Limit,
    enclave: Limit,
}

fn print_report(
    args: &BenchArgs,
    mode: Mode,
    report: &Report,
    limits: &Limits,
    ratio: f64,
    server_peak: Option<u64>,
) {
    let (crypto, enclave) = (&limits.crypto, &limits.enclave);
    let errors: u64 = report.errors.values().sum();
    println!(
        "afallon bench: {:.1} s, {} requesters, {}, {}-byte inputs, {}, {}, durable acknowledgements",
        report.seconds,
        args.concurrency,
        args.workload,
        args.input_size,
        if mode == Mode::Sync { "sync" } else { "async" },
        if args.sign { "signed" } else { "unsigned" },
    );
    println!("completed      {} orders verified and decrypted, {errors} errors", report.completed);
    for (label, count) in &report.errors {
        println!("  error {label}: {count}");
    }
    println!("throughput     {:.1} orders/s", report.orders_per_second);
    let l = report.latency_ms;
    println!(
        "latency        p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        l.p50, l.p95, l.p99, l.max
    );
    println!(
        "crypto limit   {:.1} orders/s ({} threads, worker-side crypto only, in-process; \
         {:.1} before the load, {:.1} after)",
        crypto.orders_per_second,
        crypto.threads,
        limits.crypto_before.orders_per_second,
        limits.crypto_after.orders_per_second,
    );
    println!(
        "enclave limit  {:.1} orders/s ({} threads, whole enclave with JSON, in-process)",
        enclave.orders_per_second, enclave.threads
    );
    println!("ratio          {ratio:.2} of the crypto limit");
    match server_peak {
        Some(bytes) => {
            println!("server memory  peak {:.1} MiB resident", bytes as f64 / (1 << 20) as f64)
        }
        None => println!(
            "server memory  unknown (no afallon_process_peak_resident_memory_bytes in /metrics)"
        ),
    }
}
