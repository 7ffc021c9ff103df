//! The split deployment for real: PostgreSQL, two `afallon listener` processes behind nginx
//! (the documented `deploy/nginx/afallon.conf`), two `afallon worker` processes serving
//! `singleton-worker-1` from one data directory (their shared volume). Orders go through the SDK
//! to nginx, and every result is verified and decrypted. Then processes die: a worker in the
//! middle of an order, a listener under load.
//!
//! Needs PostgreSQL and nginx from `scripts/services`; without them each test says loudly that it
//! was skipped (and fails under `AFALLON_REQUIRE_SERVICES=1`).

mod common;
#[path = "../../tidy/tests/support/services.rs"]
mod services;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use afallon_client::{Client, InputProtection, Policy, Submission, Worker};
use common::{Service, WORKER};

/// A database of its own on the test PostgreSQL, or `None` (said loudly) without one.
fn fresh_database(test: &str) -> Option<String> {
    let base = services::tool(
        test,
        "PostgreSQL (AFALLON_TEST_POSTGRES)",
        std::env::var_os("AFALLON_TEST_POSTGRES").map(PathBuf::from),
    )?;
    let base = base.to_str().expect("a UTF-8 URL").to_owned();
    let (server, _) = base.rsplit_once('/').expect("postgres://HOST:PORT/DATABASE");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!("split_{}_{nanos}", std::process::id());
    let output = Command::new("psql")
        .args([base.as_str(), "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Some(format!("{server}/{name}"))
}

/// Listeners and workers on one store, nginx in front of the listeners.
struct Deployment {
    store: String,
    dir: tempfile::TempDir,
    listener_ports: Vec<u16>,
    listeners: Vec<Option<Service>>,
    workers: Vec<Option<Service>>,
    nginx: services::Nginx,
}

impl Deployment {
    /// `workers` worker processes (started one after the other: the first creates the worker's
    /// keys), two listeners and nginx.
    fn start(test: &str, workers: usize, config: &str) -> Option<Self> {
        let nginx = services::tool(test, "nginx", services::nginx())?;
        let store = fresh_database(test)?;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("afallon.toml"), config).expect("config");
        let listener_ports = vec![services::free_port(), services::free_port()];
        let mut deployment = Self {
            nginx: services::Nginx::start(&nginx, &listener_ports),
            store,
            dir,
            listener_ports,
            listeners: Vec::new(),
            workers: Vec::new(),
        };
        for _ in 0..workers {
            let worker = deployment.start_worker();
            deployment.workers.push(Some(worker));
        }
        for index in 0..2 {
            let listener = deployment.start_listener(index, &[]);
            deployment.listeners.push(Some(listener));
        }
        Some(deployment)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("worker-data")
    }

    fn common_args(&self) -> Vec<String> {
        let config = self.dir.path().join("afallon.toml");
        vec![
            "--store".into(),
            self.store.clone(),
            "--config".into(),
            config.to_str().expect("utf-8").into(),
        ]
    }

    /// A worker process on the shared data directory; its `url` serves health and metrics.
    fn start_worker(&self) -> Service {
        let mut args = self.common_args();
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Service::start_role("worker", &self.data_dir(), &args, "health and metrics on ")
    }

    /// Listener `index` on its port behind nginx, with `extra` arguments (`--sync`).
    fn start_listener(&self, index: usize, extra: &[&str]) -> Service {
        let mut args = self.common_args();
        args.extend(["--listen".into(), format!("127.0.0.1:{}", self.listener_ports[index])]);
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(extra);
        let data = self.dir.path().join(format!("listener-{index}"));
        Service::start_role("listener", &data, &args, "listening on ")
    }

    /// A client of the deployment: through nginx.
    fn client(&self) -> Arc<Client> {
        Arc::new(Client::new(&format!("http://127.0.0.1:{}", self.nginx.port)).expect("client"))
    }

    fn policy(&self) -> Policy {
        let key = afallon_attest::SimPlatform::local_attestation_key(&self.data_dir().join("sim"))
            .expect("read")
            .expect("the workers made their simulation key");
        Policy::new().insecure_allow_simulation().trust_simulation_key(key)
    }

    async fn worker(&self) -> Worker {
        self.client()
            .verify_worker(&afallon_proto::worker_id_from_name(WORKER), &self.policy())
            .await
            .expect("the worker verifies through nginx")
    }

    /// Work orders each worker process stored a result for.
    async fn completed_by_each(&self) -> Vec<f64> {
        let mut counts = Vec::new();
        for worker in self.workers.iter().flatten() {
            counts.push(worker.metric(COMPLETED).await);
        }
        counts
    }
}

const COMPLETED: &str = "afallon_workorders_completed_total{outcome=\"success\"}";

/// One echo order through `client`: submitted, its result awaited (or answered at once in
/// synchronous mode), verified and decrypted. Returns an error message rather than panicking, so
/// that callers can count failures under faults.
async fn echo(client: &Client, worker: &Worker, text: &str) -> Result<(), String> {
    let mut builder = worker.work_order("echo-result").map_err(|e| e.to_string())?;
    builder.input(text.as_bytes(), InputProtection::Session).map_err(|e| e.to_string())?;
    let (request, pending) = builder.build(None).map_err(|e| e.to_string())?;
    let result = match client.submit(&request).await.map_err(|e| format!("submit: {e}"))? {
        Submission::Done(result) => *result,
        Submission::Pending => client
            .wait_result(
                &request.work_order_id,
                Duration::from_millis(20),
                Duration::from_secs(120),
            )
            .await
            .map_err(|e| format!("result: {e}"))?,
    };
    let outputs = pending.open(&result, &worker.verification_key).map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&outputs[0].1).into_owned();
    if answer == format!("RESULT: {text}") { Ok(()) } else { Err(format!("answered {answer:?}")) }
}

/// `count` echo orders, `in_flight` at a time; returns the failures' messages.
async fn echoes(client: &Arc<Client>, worker: &Worker, label: &str, count: usize) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, worker, next, label) =
            (Arc::clone(client), worker.clone(), Arc::clone(&next), label.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return failures;
                }
                if let Err(error) = echo(&client, &worker, &format!("{label} {n}")).await {
                    failures.push(error);
                }
            }
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.expect("task"));
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_listeners_behind_nginx_and_two_workers_serve_2000_orders_async_and_sync() {
    let test = "two_listeners_behind_nginx_and_two_workers_serve_2000_orders_async_and_sync";
    let Some(mut deployment) = Deployment::start(test, 2, "") else { return };
    let client = deployment.client();
    let worker = deployment.worker().await;

    let started = Instant::now();
    let failures = echoes(&client, &worker, "async", 1000).await;
    let took = started.elapsed();
    eprintln!(
        "1000 asynchronous orders through nginx in {took:?} ({:.0}/s)",
        1000.0 / took.as_secs_f64()
    );
    assert_eq!(failures, Vec::<String>::new());

    // The same listeners' ports, now in synchronous mode: nginx does not notice.
    for index in 0..2 {
        deployment.listeners[index].take().expect("listener").kill();
        let listener = deployment.start_listener(index, &["--sync"]);
        deployment.listeners[index] = Some(listener);
    }
    let started = Instant::now();
    let failures = echoes(&client, &worker, "sync", 1000).await;
    let took = started.elapsed();
    eprintln!(
        "1000 synchronous orders through nginx in {took:?} ({:.0}/s)",
        1000.0 / took.as_secs_f64()
    );
    assert_eq!(failures, Vec::<String>::new());

    let completed = deployment.completed_by_each().await;
    eprintln!("results stored by each worker process: {completed:?}");
    assert_eq!(completed.iter().sum::<f64>(), 2000.0, "every order completed exactly once");
    assert!(completed.iter().all(|&n| n > 0.0), "both worker processes took orders: {completed:?}");
}

/// Sends `signal` to `pid`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
}

/// An echo order slow enough to catch a worker in the middle of it: a thousand inputs, each
/// under a data key of its own (an RSA decryption each).
async fn slow_order(
    client: &Client,
    worker: &Worker,
) -> (afallon_proto::WorkOrderRequest, afallon_client::PendingResult) {
    let mut builder = worker.work_order("echo-result").expect("builder");
    for n in 0..1000 {
        builder.input(format!("slow {n}").as_bytes(), InputProtection::DataKey).expect("input");
    }
    let (request, pending) = builder.build(None).expect("build");
    assert_eq!(client.submit(&request).await.expect("submit"), Submission::Pending);
    (request, pending)
}

async fn wait_for_metric(service: &Service, name: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = service.metric(name).await;
        if value >= at_least {
            return value;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_mid_order_loses_it_to_the_other_and_its_late_completion_is_refused() {
    let test =
        "a_worker_stopped_mid_order_loses_it_to_the_other_and_its_late_completion_is_refused";
    let Some(mut deployment) = Deployment::start(test, 1, "lease_seconds = 2\n") else { return };
    let client = deployment.client();
    let worker = deployment.worker().await;
    let (request, pending) = slow_order(&client, &worker).await;
    let first = deployment.workers[0].as_ref().expect("worker");
    // The first worker claims it (it is the only one); stopped in the middle of it, it renews
    // its lease no more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(first.pid(), "STOP");
    let second = deployment.start_worker();
    let result = client
        .wait_result(&request.work_order_id, Duration::from_millis(50), Duration::from_secs(120))
        .await
        .expect("the second worker completes the order after the lease");
    let outputs = pending.open(&result, &worker.verification_key).expect("verified");
    assert_eq!(outputs.len(), 1000);
    assert_eq!(second.metric(COMPLETED).await, 1.0, "the second worker stored the result");

    // The first one wakes up, finishes its run, and is refused.
    signal(first.pid(), "CONT");
    let runs = "afallon_workorder_processing_seconds_count";
    wait_for_metric(first, runs, 1.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(first.metric(COMPLETED).await, 0.0, "the late completion was refused");
    assert_eq!(client.result(&request.work_order_id).await.expect("result"), Some(result));
    deployment.workers.push(Some(second));

    // SIGKILL in the middle of an order: the other worker completes it after the lease.
    let (request, pending) = slow_order(&client, &worker).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = deployment.workers[0].take().expect("worker");
    let second = deployment.workers[1].as_ref().expect("worker");
    let before = second.metric(COMPLETED).await;
    killed.kill();
    let result = client
        .wait_result(&request.work_order_id, Duration::from_millis(50), Duration::from_secs(120))
        .await
        .expect("the order completes on the surviving worker");
    pending.open(&result, &worker.verification_key).expect("verified");
    assert!(second.metric(COMPLETED).await >= before + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_leaves_nginx_serving_through_the_other() {
    let test = "a_killed_listener_leaves_nginx_serving_through_the_other";
    let Some(mut deployment) = Deployment::start(test, 2, "") else { return };
    let client = deployment.client();
    let worker = deployment.worker().await;
    // Load while a listener dies: an order whose request was in that listener when it died may
    // fail (nginx does not send a POST twice), every acknowledged one completes.
    let load = tokio::spawn({
        let (client, worker) = (Arc::clone(&client), worker.clone());
        async move { echoes(&client, &worker, "through", 400).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    deployment.listeners[0].take().expect("listener").kill();
    let failures = load.await.expect("load");
    eprintln!("orders that failed as the listener died: {failures:?}");
    assert!(failures.len() <= 32, "at most the orders in flight: {failures:?}");
    // From now on nginx sends everything to the other listener.
    let failures = echoes(&client, &worker, "after", 200).await;
    assert_eq!(failures, Vec::<String>::new());
    assert!(deployment.nginx_log_mentions_the_dead_listener());
}

impl Deployment {
    /// nginx noticed the first listener was gone (a refused connection in its error log).
    fn nginx_log_mentions_the_dead_listener(&self) -> bool {
        let log = self.nginx.error_log();
        let dead = format!("127.0.0.1:{}", self.listener_ports[0]);
        log.lines().any(|line| line.contains(&dead))
    }
}

/// One wallet order through `client`: its only output, verified and decrypted.
async fn wallet(client: &Client, worker: &Worker, command: &str) -> Result<String, String> {
    let mut builder = worker.work_order("simple-wallet").map_err(|e| e.to_string())?;
    builder.input(command.as_bytes(), InputProtection::Session).map_err(|e| e.to_string())?;
    let (request, pending) = builder.build(None).map_err(|e| e.to_string())?;
    let result = match client.submit(&request).await.map_err(|e| format!("submit: {e}"))? {
        Submission::Done(result) => *result,
        Submission::Pending => client
            .wait_result(
                &request.work_order_id,
                Duration::from_millis(20),
                Duration::from_secs(120),
            )
            .await
            .map_err(|e| format!("result: {e}"))?,
    };
    let outputs = pending.open(&result, &worker.verification_key).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&outputs[0].1).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_keep_one_wallet_right() {
    let test = "two_worker_processes_keep_one_wallet_right";
    let Some(deployment) = Deployment::start(test, 2, "") else { return };
    let client = deployment.client();
    let worker = deployment.worker().await;
    // Deposits from many requesters at once, spread over both worker processes: each runs on
    // the state the last committed deposit left, whichever process committed it.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, worker) = (Arc::clone(&client), worker.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..10 {
                answers.push(wallet(&client, &worker, "deposit bob 1").await);
            }
            answers
        }));
    }
    let mut balances = Vec::new();
    for task in tasks {
        for answer in task.await.expect("task") {
            let answer = answer.expect("every deposit completes");
            let balance = answer.strip_prefix("WALLET RESULT: bob::").expect("a balance");
            balances.push(balance.parse::<u32>().expect("a number"));
        }
    }
    balances.sort_unstable();
    let expected: Vec<u32> = (1..=80).collect();
    assert_eq!(balances, expected, "each deposit saw every one before it, once");
    assert_eq!(
        wallet(&client, &worker, "deposit bob 1").await.as_deref(),
        Ok("WALLET RESULT: bob::81")
    );
    let completed = deployment.completed_by_each().await;
    eprintln!("wallet orders stored by each worker process: {completed:?}");
    assert_eq!(completed.iter().sum::<f64>(), 81.0);
}
