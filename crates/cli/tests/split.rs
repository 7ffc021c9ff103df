//! The split deployment for real: PostgreSQL, two `afallon listener` processes behind nginx
//! (the documented `deploy/nginx/afallon.conf`), two `afallon worker` processes serving
//! `singleton-worker-1` from one data directory (their shared volume). Orders go through the SDK
//! to nginx, and every result is verified and decrypted. Then processes die: a worker in the
//! middle of an order, a listener under load; and PostgreSQL itself is restarted under load (on
//! a cluster of that test's own, made with the binaries in `AFALLON_PG_BIN`).
//!
//! Needs PostgreSQL and nginx from `scripts/services`; without them each test says loudly that it
//! was skipped (and fails under `AFALLON_REQUIRE_SERVICES=1`).

mod common;
#[path = "../../tidy/tests/support/services.rs"]
mod services;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use afallon_client::{
    Client, ClientError, InputProtection, PendingResult, Policy, Submission, Worker,
};
use afallon_crypto::EcdsaSigningKey;
use afallon_proto::{WorkOrderResult, WorkOrderStatus};
use common::{Service, WORKER};

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
        let store = services::fresh_postgres_database(test)?;
        Some(Self::start_on(&nginx, store, workers, config))
    }

    /// As [`Deployment::start`], on the database at `store`, with the nginx binary `nginx`.
    fn start_on(nginx: &Path, store: String, workers: usize, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("afallon.toml"), config).expect("config");
        let listener_ports = vec![services::free_port(), services::free_port()];
        let mut deployment = Self {
            nginx: services::Nginx::start(nginx, &listener_ports),
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
        deployment
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
        let key =
            afallon_platform::SimPlatform::local_attestation_key(&self.data_dir().join("sim"))
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

/// One order of `workload` with one input through `client`: submitted, its result awaited (or
/// answered at once in synchronous mode), verified and decrypted; its first output. Returns an
/// error message rather than panicking, so that callers can count failures under faults.
async fn one_order(
    client: &Client,
    worker: &Worker,
    workload: &str,
    input: &str,
) -> Result<String, String> {
    let mut builder = worker.work_order(workload).map_err(|e| e.to_string())?;
    builder.input(input.as_bytes(), InputProtection::Session).map_err(|e| e.to_string())?;
    let (request, pending) = builder.build(None).map_err(|e| e.to_string())?;
    let result = match client.submit_surely(&request).await.map_err(|e| format!("submit: {e}"))? {
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

/// One echo order, checked to answer `text`.
async fn echo(client: &Client, worker: &Worker, text: &str) -> Result<(), String> {
    let answer = one_order(client, worker, "echo-result", text).await?;
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
    // Load while a listener dies: nginx does not send a POST a listener received twice, so a
    // request in that listener when it died fails with 502 to the requester, whose SDK finds
    // out whether the order was stored before submitting it again.
    let load = tokio::spawn({
        let (client, worker) = (Arc::clone(&client), worker.clone());
        async move { echoes(&client, &worker, "through", 400).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    deployment.listeners[0].take().expect("listener").kill();
    let failures = load.await.expect("load");
    eprintln!("orders that failed as the listener died: {failures:?}");
    // The SDK rides over the dead listener: a submission that died with it is looked for and
    // submitted again only if no listener has it, and a result poll is made again.
    assert_eq!(failures, Vec::<String>::new());
    // From now on nginx sends everything to the other listener.
    let failures = echoes(&client, &worker, "after", 200).await;
    assert_eq!(failures, Vec::<String>::new());
    assert!(deployment.nginx_log_mentions_the_dead_listener());
    // Resubmissions neither lost an order nor ran one twice.
    let completed = deployment.completed_by_each().await;
    assert_eq!(completed.iter().sum::<f64>(), 600.0, "{completed:?}");
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
    one_order(client, worker, "simple-wallet", command).await
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

/// A PostgreSQL cluster of a test's own, for a test that stops and starts it (the shared one of
/// `scripts/services` serves the other tests): `initdb` in a temp dir with the binaries in
/// `AFALLON_PG_BIN`, run as `postgres` when the test runs as root (PostgreSQL refuses root), on
/// a loopback port, fsync on. Stopped and removed when dropped, after a panic too.
struct OwnPostgres {
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
    /// Last, so that it is removed after the server stopped.
    dir: services::TempDir,
}

impl OwnPostgres {
    /// A running cluster with a database `afallon`, or `None` (said loudly) without PostgreSQL.
    fn start(test: &str) -> Option<Self> {
        let bin = services::tool(
            test,
            "PostgreSQL's binaries (AFALLON_PG_BIN)",
            std::env::var_os("AFALLON_PG_BIN").map(PathBuf::from),
        )?;
        let as_postgres = running_as_root();
        if as_postgres {
            let user = Command::new("id")
                .arg("postgres")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            let what = "a postgres user to run PostgreSQL as (the test runs as root)";
            services::tool(test, what, user.then(|| PathBuf::from("postgres")))?;
        }
        let dir = services::TempDir::new("pg");
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&dir.0), "chown");
        }
        let mut cluster = Self { bin, as_postgres, port: 0, dir };
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(cluster.data()).args(["-A", "trust", "-U", "postgres", "-E", "UTF8"]);
        run(&mut initdb, "initdb");
        for attempt in 1..=3 {
            cluster.port = port_outside_ephemeral_range();
            if cluster.pg_ctl_start() {
                break;
            }
            assert!(attempt < 3, "PostgreSQL did not start:\n{}", cluster.log());
        }
        let mut createdb = cluster.command("createdb");
        createdb.arg("-h").arg(&cluster.dir.0).args([
            "-p",
            &cluster.port.to_string(),
            "-U",
            "postgres",
            "afallon",
        ]);
        run(&mut createdb, "createdb");
        Some(cluster)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/afallon", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("postgres.log")).unwrap_or_default()
    }

    /// One of PostgreSQL's programs, as `postgres` when the test runs as root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        // Somewhere the postgres user may be.
        command.current_dir(&self.dir.0).stdout(Stdio::null());
        command
    }

    /// `pg_ctl start` on the cluster's port and data directory, waiting until it answers.
    fn start_command(&self) -> Command {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on \
             -c synchronous_commit=on",
            self.port,
            self.dir.0.display()
        );
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.0.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        command
    }

    /// `pg_ctl stop -m MODE`, waiting until the server is gone.
    fn stop_command(&self, mode: &str) -> Command {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data()).args(["-m", mode, "-w", "-t", "30", "stop"]);
        command
    }

    fn pg_ctl_start(&self) -> bool {
        succeeds(&mut self.start_command())
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let pid_file = self.data().join("postmaster.pid");
        if pid_file.exists() && !succeeds(&mut self.stop_command("immediate")) {
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok());
            if let Some(pid) = pid {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

fn succeeds(command: &mut Command) -> bool {
    command.stderr(Stdio::null()).status().is_ok_and(|status| status.success())
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(output.status.success(), "{what}: {}", String::from_utf8_lossy(&output.stderr));
}

fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().next())
        .is_some_and(|uid| uid == "0")
}

/// A free loopback port below the kernel's range for outgoing connections: a server that goes
/// away and comes back must find its port free again, and while it is away, the processes
/// trying to reach it open connections from ports of that range.
fn port_outside_ephemeral_range() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    if low <= 12_000 {
        return services::free_port();
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default()
        ^ std::process::id();
    (0..1000)
        .map(|n| 10_000 + (seed.wrapping_add(n * 7919)) % (low - 10_000))
        .filter_map(|port| u16::try_from(port).ok())
        .find(|&port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
        .unwrap_or_else(services::free_port)
}

/// One order of a load, as its requester saw it.
struct Sent {
    text: String,
    work_order_id: String,
    pending: PendingResult,
    submitted: Instant,
    /// When the submission was answered.
    answered: Instant,
    /// Why the submission was not acknowledged (acknowledged: code 5, or the result in
    /// synchronous mode), as the client said.
    refused: Option<String>,
    /// Every result returned for it, first to last.
    results: Vec<WorkOrderResult>,
}

/// One requester: echo orders through `client` until `stop`, each with a second to get its
/// result (every result returned is kept); a submission is never retried.
async fn requester(
    client: Arc<Client>,
    worker: Worker,
    label: String,
    stop: Arc<AtomicBool>,
) -> Vec<Sent> {
    let mut sent = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let text = format!("{label} {}", sent.len());
        let mut builder = worker.work_order("echo-result").expect("builder");
        builder.input(text.as_bytes(), InputProtection::Session).expect("input");
        let (request, pending) = builder.build(None).expect("build");
        let submitted = Instant::now();
        let answer = client.submit(&request).await;
        let mut order = Sent {
            text,
            work_order_id: request.work_order_id.clone(),
            pending,
            submitted,
            answered: Instant::now(),
            refused: None,
            results: Vec::new(),
        };
        match answer {
            Ok(Submission::Done(result)) => order.results.push(*result),
            Ok(Submission::Pending) => {
                let until = Instant::now() + Duration::from_secs(1);
                while Instant::now() < until {
                    if let Fetched::Result(result) = fetch(&client, &order.work_order_id).await {
                        order.results.push(result);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Err(error) => {
                order.refused = Some(error.to_string());
                // No storm of refused submissions while the database is away.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        sent.push(order);
    }
    sent
}

/// What `WorkOrderGetResult` answered.
enum Fetched {
    Result(WorkOrderResult),
    Pending,
    /// "Work order Id not found": the store never had it.
    Unknown,
    Failed(String),
}

async fn fetch(client: &Client, work_order_id: &str) -> Fetched {
    match client.result(work_order_id).await {
        Ok(Some(result)) => Fetched::Result(result),
        Ok(None) => Fetched::Pending,
        Err(ClientError::Rpc(error))
            if error.code == WorkOrderStatus::InvalidParameter.code()
                && error.message.contains("not found") =>
        {
            Fetched::Unknown
        }
        Err(error) => Fetched::Failed(error.to_string()),
    }
}

/// Asks for `order`'s result until there is one (kept with the others) or the store says it
/// never had the order (only allowed for a refused submission), until `deadline`. Returns
/// whether the order has a result.
async fn settle(client: &Client, order: &mut Sent, deadline: Instant) -> bool {
    let id = order.work_order_id.clone();
    loop {
        let last = match fetch(client, &id).await {
            Fetched::Result(result) => {
                order.results.push(result);
                return true;
            }
            Fetched::Unknown => {
                assert!(
                    order.refused.is_some(),
                    "acknowledged order {id} ({:?}) is unknown to the store: lost",
                    order.text
                );
                return false;
            }
            Fetched::Pending => "pending".to_owned(),
            Fetched::Failed(error) => error,
        };
        assert!(
            Instant::now() < deadline,
            "order {id} ({:?}, submission refused: {:?}) has no result; last answer: {last}",
            order.text,
            order.refused
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first `width` characters of an error, to count errors by kind.
fn kind_of(error: &str, width: usize) -> String {
    error.chars().take(width).collect::<String>().replace("\r\n", " ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_no_acknowledged_order_and_answers_none_twice() {
    let test = "postgres_restarted_under_load_loses_no_acknowledged_order_and_answers_none_twice";
    let Some(nginx) = services::tool(test, "nginx", services::nginx()) else { return };
    let Some(postgres) = OwnPostgres::start(test) else { return };
    // Leases of a few seconds: orders whose worker could not renew them during the outage run
    // again afterwards, and only one result may ever be stored for each.
    let mut deployment = Deployment::start_on(&nginx, postgres.url(), 2, "lease_seconds = 3\n");
    // One listener of each mode behind nginx: acknowledgements are "pending" and results.
    deployment.listeners[1].take().expect("listener").kill();
    let listener = deployment.start_listener(1, &["--sync"]);
    deployment.listeners[1] = Some(listener);
    let client = deployment.client();
    let worker = deployment.worker().await;

    let stop = Arc::new(AtomicBool::new(false));
    let requesters: Vec<_> = (0..16)
        .map(|n| {
            let (client, worker, stop) = (Arc::clone(&client), worker.clone(), Arc::clone(&stop));
            tokio::spawn(requester(client, worker, format!("requester {n}"), stop))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let stopping = Instant::now();
    let mut stop_command = postgres.stop_command("fast");
    let stopped_cleanly = tokio::task::spawn_blocking(move || succeeds(&mut stop_command));
    assert!(stopped_cleanly.await.expect("pg_ctl"), "pg_ctl stop -m fast");
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let restarting = Instant::now();
    // pg_ctl start blocks until the server answers; the requesters go on meanwhile.
    let mut start_command = postgres.start_command();
    let started = tokio::task::spawn_blocking(move || succeeds(&mut start_command));
    assert!(started.await.expect("pg_ctl"), "PostgreSQL started again:\n{}", postgres.log());
    let restarted = Instant::now();
    let mut completed_before = Vec::new();
    for worker in deployment.workers.iter().flatten() {
        completed_before.push(worker.metric(COMPLETED).await);
    }
    let mut submitted_before = Vec::new();
    for listener in deployment.listeners.iter().flatten() {
        submitted_before.push(listener.metric(SUBMITTED).await);
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    let mut orders = Vec::new();
    for task in requesters {
        orders.extend(task.await.expect("requester"));
    }

    for service in deployment.listeners.iter_mut().chain(deployment.workers.iter_mut()).flatten() {
        assert_eq!(service.exited(), None, "a process at {} exited", service.url);
    }

    // Every order's result, as the store has it now; for an acknowledged order there must be one.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut absent = Vec::new();
    for order in &mut orders {
        if !settle(&client, order, deadline).await {
            absent.push(order.work_order_id.clone());
        }
    }
    // Still unknown at the end: nothing of theirs committed late.
    for id in &absent {
        assert!(
            matches!(fetch(&client, id).await, Fetched::Unknown),
            "order {id}, unknown a moment ago, now is known"
        );
    }
    for order in &orders {
        let Some(first) = order.results.first() else { continue };
        for other in &order.results[1..] {
            assert_eq!(other, first, "order {} answered twice differently", order.work_order_id);
        }
        let outputs = order
            .pending
            .open(first, &worker.verification_key)
            .unwrap_or_else(|e| panic!("order {}'s result: {e}", order.work_order_id));
        let answer = String::from_utf8_lossy(&outputs[0].1);
        assert_eq!(answer, format!("RESULT: {}", order.text));
    }

    // What happened, in figures.
    let since = |at: Instant, from: Instant| at.saturating_duration_since(from).as_secs_f64();
    let acknowledged = orders.iter().filter(|o| o.refused.is_none()).count();
    let refused: Vec<&Sent> = orders.iter().filter(|o| o.refused.is_some()).collect();
    let completed_anyway = refused.iter().filter(|o| !o.results.is_empty()).count();
    let with_result_at_once =
        orders.iter().filter(|o| o.refused.is_none() && o.results.len() > 1).count();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for order in &refused {
        *kinds.entry(kind_of(order.refused.as_deref().unwrap_or_default(), 100)).or_default() += 1;
    }
    // Submissions made once the server was gone: the first acknowledged one, and the last
    // refused one.
    let first_ack_after = orders
        .iter()
        .filter(|o| o.refused.is_none() && o.submitted >= stopped)
        .map(|o| o.answered)
        .min();
    let first_refusal = refused.iter().map(|o| o.answered).min();
    let last_refusal = refused.iter().map(|o| o.answered).max();
    eprintln!(
        "{} orders submitted through nginx: {acknowledged} acknowledged ({with_result_at_once} \
         with a result during the load), {} refused or failed",
        orders.len(),
        refused.len()
    );
    eprintln!(
        "refused: {} absent from the store, {completed_anyway} stored and completed anyway",
        absent.len()
    );
    eprintln!("refusals by answer: {kinds:#?}");
    eprintln!(
        "PostgreSQL: stopping took {:.2} s, down {:.2} s, starting took {:.2} s",
        since(stopped, stopping),
        since(restarting, stopped),
        since(restarted, restarting),
    );
    eprintln!(
        "submissions refused from {:.2} s after the stop began to {:.2} s after PostgreSQL was \
         started again; the first acknowledged one submitted after the stop was answered {:.2} s \
         after the start",
        first_refusal.map_or(f64::NAN, |at| since(at, stopping)),
        last_refusal.map_or(f64::NAN, |at| since(at, restarted)),
        first_ack_after.map_or(f64::NAN, |at| since(at, restarted)),
    );
    // Before the outage, nothing was refused; after it, submissions succeed again.
    let early: Vec<_> =
        refused.iter().filter(|o| o.answered < stopping).map(|o| &o.refused).collect();
    assert!(early.is_empty(), "refused before PostgreSQL stopped: {early:?}");
    let acknowledged_after =
        orders.iter().filter(|o| o.refused.is_none() && o.submitted >= restarted).count();
    eprintln!("acknowledged orders submitted after PostgreSQL started again: {acknowledged_after}");
    assert!(acknowledged_after > 0, "no submission succeeded after PostgreSQL came back");
    let refused_late: Vec<_> = refused
        .iter()
        .filter(|o| o.submitted > restarted + Duration::from_secs(7))
        .map(|o| &o.refused)
        .collect();
    assert!(refused_late.is_empty(), "still refused 7 s after the restart: {refused_late:?}");

    // Every process is back on the database: the workers store results, the listeners take
    // orders, and all say the store is writable.
    let completed = deployment.completed_by_each().await;
    eprintln!(
        "results stored by each worker: {completed_before:?} at the restart, {completed:?} now"
    );
    for (before, now) in completed_before.iter().zip(&completed) {
        assert!(now > before, "a worker stored no result after the restart: {completed:?}");
    }
    let mut requeued = Vec::new();
    for worker in deployment.workers.iter().flatten() {
        requeued.push(worker.metric("afallon_workorders_requeued_total").await);
    }
    eprintln!("orders requeued after their lease ran out, by each worker: {requeued:?}");
    let with_results = orders.iter().filter(|o| !o.results.is_empty()).count();
    assert!(
        completed.iter().sum::<f64>() <= with_results as f64,
        "more results stored ({completed:?}) than orders completed ({with_results})"
    );
    let mut submitted = Vec::new();
    for listener in deployment.listeners.iter().flatten() {
        submitted.push(listener.metric(SUBMITTED).await);
    }
    eprintln!(
        "orders taken by each listener: {submitted_before:?} at the restart, {submitted:?} now"
    );
    for (before, now) in submitted_before.iter().zip(&submitted) {
        assert!(now > before, "a listener took no order after the restart: {submitted:?}");
    }
    for service in deployment.listeners.iter().chain(deployment.workers.iter()).flatten() {
        assert_eq!(service.metric("afallon_store_writable").await, 1.0, "{}", service.url);
    }
    let failures = echoes(&client, &worker, "after", 200).await;
    assert_eq!(failures, Vec::<String>::new());
}

const SUBMITTED: &str = "afallon_workorders_submitted_total";

/// A listener on `store`, a client of it, and the pool `pool` verified through it (its record,
/// registered by its KME host).
async fn pool_listener(store: &str, data: &Path, pool: &str) -> (Service, Arc<Client>, Worker) {
    let any = "127.0.0.1:0";
    let listener = Service::start_role(
        "listener",
        data,
        &["--store", store, "--listen", any],
        "listening on ",
    );
    let client = Arc::new(listener.client());
    let worker = client
        .verify_worker(&afallon_proto::worker_id_from_name(pool), &listener.policy())
        .await
        .expect("the pool's record verifies");
    (listener, client, worker)
}

/// A worker pool split across processes on one store: two `afallon kme` hosts (the second
/// joined the first by attesting to it), an `afallon worker --pool` host running the WPEs with
/// both KMEs, and a listener. Pool results verify in two steps; the first KME killed under load
/// loses no order; a WPE host that restarts registers again and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_split_across_kme_hosts_and_a_wpe_host_survives_a_kme_and_a_wpe_host_dying() {
    let test = "a_pool_split_across_kme_hosts_and_a_wpe_host_survives_a_kme_and_a_wpe_host_dying";
    let Some(store) = services::fresh_postgres_database(test) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let pool = "pool-1";
    let any = "127.0.0.1:0";
    let kme = |extra: &[&str]| {
        let mut args =
            vec!["--store", &store, "--pool", pool, "--kme-listen", any, "--listen", any];
        args.extend_from_slice(extra);
        Service::start_role("kme", &data, &args, "kme endpoint on ")
    };
    let first = kme(&[]);
    let second = kme(&["--join", &first.url]);
    let wpe_host = |kmes: &[&str]| {
        let mut args = vec!["--store", &store, "--pool", pool, "--listen", any];
        for address in kmes {
            args.extend_from_slice(&["--kme", address]);
        }
        Service::start_role("worker", &data, &args, "health and metrics on ")
    };
    let mut wpes = Some(wpe_host(&[&first.url, &second.url]));
    let (_listener, client, worker) = pool_listener(&store, &data, pool).await;
    assert_eq!(echoes(&client, &worker, "before", 100).await, Vec::<String>::new());

    // The first KME killed under load: every order completes through the second.
    let load = {
        let (client, worker) = (Arc::clone(&client), worker.clone());
        tokio::spawn(async move { echoes(&client, &worker, "under load", 300).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill();
    assert_eq!(load.await.expect("load"), Vec::<String>::new(), "no order lost or refused");

    // The WPE host dies and comes back: its new WPEs register with the live KME again.
    if let Some(host) = wpes.take() {
        host.kill();
    }
    let _wpes = wpe_host(&[&second.url]);
    assert_eq!(echoes(&client, &worker, "after", 50).await, Vec::<String>::new());
    let (result, two_steps) = {
        let mut builder = worker.work_order("echo-result").expect("builder");
        builder.input(b"two steps", InputProtection::Session).expect("input");
        let (request, pending) = builder.build(None).expect("build");
        client.submit(&request).await.expect("submit");
        let result = client
            .wait_result(&request.work_order_id, Duration::from_millis(20), Duration::from_secs(60))
            .await
            .expect("result");
        let opened = pending.open(&result, &worker.verification_key).expect("two steps verify");
        (opened, result.ext_verification_key.is_some())
    };
    assert_eq!(result[0].1, b"RESULT: two steps");
    assert!(two_steps, "signed by a per-order key");
}

/// One echo order under the requesterId `requester`, signed by `signer` if given, submitted and
/// awaited; its first output, or the error.
async fn echo_as(
    client: &Client,
    worker: &Worker,
    requester: &str,
    signer: Option<&EcdsaSigningKey>,
    text: &str,
) -> Result<String, ClientError> {
    let mut builder = worker.work_order("echo-result")?.requester_id(requester);
    builder.input(text.as_bytes(), InputProtection::Session)?;
    let (request, pending) = builder.build(signer)?;
    client.submit_surely(&request).await?;
    let result = client
        .wait_result(&request.work_order_id, Duration::from_millis(20), Duration::from_secs(60))
        .await?;
    assert!(result.ext_verification_key.is_some(), "a pool result carries a per-order key");
    let outputs = pending.open(&result, &worker.verification_key)?;
    Ok(String::from_utf8_lossy(&outputs[0].1).into_owned())
}

/// A requester with a key of its own, named by it (as a tenant is), shared between tasks.
fn keyed_requester() -> (Arc<EcdsaSigningKey>, Arc<str>) {
    let key = EcdsaSigningKey::generate().expect("key");
    let id = afallon_proto::requester_id_for_key(&key.verifying_key());
    (Arc::new(key), id.into())
}

/// A pool with a tenant: an `afallon kme` host, an `afallon worker --pool --tenant` host whose
/// WPEs are dedicated to one requester, a shared WPE host, and a listener, on PostgreSQL. The
/// tenant's signed orders run on its WPEs only and everyone else's on the shared ones (each
/// host's completed-order counter says where each ran); an order that only writes the tenant's
/// requesterId gets no keys on the tenant's WPEs; with the tenant's host down its orders wait for
/// it and others' go on; an order the tenant queued before its WPEs registered is refused by the
/// KME when a shared WPE takes it, with an error that says to submit it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_s_orders_run_on_its_dedicated_wpes_only_and_no_one_else_s_do() {
    let test = "a_tenant_s_orders_run_on_its_dedicated_wpes_only_and_no_one_else_s_do";
    let Some(store) = services::fresh_postgres_database(test) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (pool, any) = ("pool-t", "127.0.0.1:0");
    let (tenant_key, tenant) = keyed_requester();
    let kme = Service::start_role(
        "kme",
        &data,
        &["--store", &store, "--pool", pool, "--kme-listen", any, "--listen", any],
        "kme endpoint on ",
    );
    let wpe_host = |extra: &[&str]| {
        let mut args = vec!["--store", &store, "--pool", pool, "--kme", &kme.url, "--listen", any];
        args.extend_from_slice(extra);
        Service::start_role("worker", &data, &args, "health and metrics on ")
    };
    let (listener, client, worker) = pool_listener(&store, &data, pool).await;

    // An order of the tenant's, queued before any WPE (and before the tenant had WPEs).
    let straggler = {
        let (client, worker) = (Arc::clone(&client), worker.clone());
        let (key, tenant) = (Arc::clone(&tenant_key), Arc::clone(&tenant));
        tokio::spawn(async move { echo_as(&client, &worker, &tenant, Some(&key), "early").await })
    };
    wait_for_metric(&listener, SUBMITTED, 1.0).await;
    let tenant_host = wpe_host(&["--tenant", &tenant]);
    let shared_host = wpe_host(&[]);
    let refused = straggler.await.expect("task").expect_err("a shared WPE gets no keys for it");
    assert!(refused.to_string().contains("submit it again"), "{refused}");

    // The tenant's orders and other requesters' at once, every result verified in two steps.
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (client, worker) = (Arc::clone(&client), worker.clone());
        let (key, requester) = if task % 2 == 0 {
            (Arc::clone(&tenant_key), Arc::clone(&tenant))
        } else {
            keyed_requester()
        };
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                let text = format!("{task} {n}");
                let echo = echo_as(&client, &worker, &requester, Some(&key), &text).await;
                assert_eq!(echo.expect("order"), format!("RESULT: {text}"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("every order completes and verifies");
    }
    let completed = [tenant_host.metric(COMPLETED).await, shared_host.metric(COMPLETED).await];
    assert_eq!(
        completed,
        [40.0, 40.0],
        "the tenant's 40 on its WPEs, the others' 40 on the shared"
    );

    // Another requester writing the tenant's requesterId: unsigned, or signed with its own key.
    let (other_key, _) = keyed_requester();
    for signer in [None, Some(&*other_key)] {
        let error = echo_as(&client, &worker, &tenant, signer, "posing").await.expect_err("posing");
        assert!(error.to_string().contains("signed by the tenant's key"), "{error}");
    }

    // The tenant's host down: its order waits, while another requester's completes.
    tenant_host.kill();
    let waiting = {
        let (client, worker) = (Arc::clone(&client), worker.clone());
        let (key, tenant) = (Arc::clone(&tenant_key), Arc::clone(&tenant));
        tokio::spawn(async move { echo_as(&client, &worker, &tenant, Some(&key), "waits").await })
    };
    let goes_on = echo_as(&client, &worker, "b0", None, "goes on").await;
    assert_eq!(goes_on.expect("order"), "RESULT: goes on");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "no shared WPE took the tenant's order");
    assert_eq!(shared_host.metric(COMPLETED).await, 41.0);
    let _tenant_host = wpe_host(&["--tenant", &tenant]);
    assert_eq!(waiting.await.expect("task").expect("order"), "RESULT: waits");
    assert_eq!(shared_host.metric(COMPLETED).await, 41.0, "the shared WPEs ran none of it");
}
