//! The proxy model for real: anvil (the Ethereum dev node from npm), the registries deployed by
//! `afallon deploy-contracts`, `afallon up` and `afallon connector ethereum` sharing one
//! PostgreSQL store, and requesters that submit on chain with the SDK and verify and decrypt
//! what the completion events carry. Then the connector dies in the middle of a stream of
//! orders, the chain reorganises under it, and a connector that lies tries to pass off wrong
//! results.
//!
//! Needs anvil (`npm ci` in contracts/, which scripts/services runs) and PostgreSQL from
//! `scripts/services`; without them each test says loudly that it was skipped (and fails under
//! `AFALLON_REQUIRE_SERVICES=1`).

#![cfg(feature = "ethereum")]

mod common;
#[path = "../../tidy/tests/support/services.rs"]
mod services;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afallon_chain::{ChainError, ChainRequester, Connector, ConnectorConfig, Deployment};
use afallon_client::{Client, InputProtection, PendingResult, Policy, Worker};
use afallon_proto::WorkOrderRequest;
use common::{BIN, Service, WORKER};
use serde_json::{Value, json};

/// anvil's first dev account (public test mnemonic): the deployer and the connector.
const SERVICE_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// anvil's second dev account: the requester.
const REQUESTER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// anvil's third dev account: an attacker.
const ATTACKER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

/// A running anvil, and a miner that adds a block every 100 ms unless paused (transactions are
/// mined at once as well), so that confirmations come.
struct Anvil {
    child: Child,
    url: String,
    rpc: Client,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Anvil {
    async fn start(test: &str) -> Option<Self> {
        let anvil = services::tool(test, "anvil (npm ci in contracts/)", services::anvil())?;
        let port =
            TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("addr").port();
        let child = Command::new(anvil)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("anvil starts");
        let url = format!("http://127.0.0.1:{port}");
        let rpc = Client::new(&url).expect("client");
        let anvil = Self { child, url, rpc, paused: Arc::default(), stop: Arc::default() };
        for _ in 0..200 {
            if anvil.rpc.call("eth_blockNumber", json!([])).await.is_ok() {
                anvil.spawn_miner();
                return Some(anvil);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("anvil did not answer");
    }

    fn spawn_miner(&self) {
        let (url, paused, stop) =
            (self.url.clone(), Arc::clone(&self.paused), Arc::clone(&self.stop));
        tokio::spawn(async move {
            let rpc = Client::new(&url).expect("client");
            while !stop.load(Ordering::Relaxed) {
                if !paused.load(Ordering::Relaxed) {
                    let _ = rpc.call("evm_mine", json!([])).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    async fn call(&self, method: &str, params: Value) -> Value {
        self.rpc.call(method, params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    async fn head(&self) -> u64 {
        let head = self.call("eth_blockNumber", json!([])).await;
        u64::from_str_radix(head.as_str().expect("hex").trim_start_matches("0x"), 16)
            .expect("a number")
    }

    fn pause_miner(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `afallon deploy-contracts` into `dir/deployment.json`.
fn deploy(anvil: &Anvil, dir: &Path) -> (PathBuf, Deployment) {
    let path = dir.join("deployment.json");
    let output = Command::new(BIN)
        .args(["deploy-contracts", "--rpc", &anvil.url, "--out"])
        .arg(&path)
        .env("AFALLON_ETH_KEY", SERVICE_KEY)
        .output()
        .expect("afallon runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let deployment =
        Deployment::from_json(&std::fs::read(&path).expect("written")).expect("parses");
    (path, deployment)
}

/// `afallon connector ethereum` on `store`, once it says it runs, and the block it reads after.
fn start_connector(
    anvil: &Anvil,
    contracts: &Path,
    store: &str,
    confirmations: u64,
    dir: &Path,
) -> (Service, u64) {
    let mut command = Command::new(BIN);
    command
        .args(["connector", "ethereum", "--rpc", &anvil.url, "--contracts"])
        .arg(contracts)
        .args(["--store", store, "--poll-ms", "100", "--registry-sync-seconds", "1"])
        .args(["--confirmations", &confirmations.to_string()])
        .env("AFALLON_ETH_KEY", SERVICE_KEY);
    let connector = Service::spawn_until(command, dir, "connector on chain ");
    let from = connector
        .url
        .rsplit_once("reading after block ")
        .and_then(|(_, block)| block.parse().ok())
        .expect("the block it reads after");
    (connector, from)
}

/// `afallon up --contracts` in `dir`: the service on its embedded store with its connector
/// (one confirmation), the account's key in a file.
fn up_with_connector(anvil: &Anvil, dir: &Path, contracts: &Path) -> Service {
    let service_key = dir.join("service.key");
    std::fs::write(&service_key, SERVICE_KEY).expect("write");
    Service::start(
        &dir.join("data"),
        &[
            "--contracts",
            contracts.to_str().expect("UTF-8"),
            "--ethereum-rpc",
            &anvil.url,
            "--eth-key-file",
            service_key.to_str().expect("UTF-8"),
            "--confirmations",
            "1",
        ],
    )
}

fn requester(anvil: &Anvil, deployment: Deployment) -> ChainRequester {
    let signer = afallon_chain::signer_from_hex(REQUESTER_KEY).expect("a key");
    let (provider, _) = afallon_chain::connect(&anvil.url, signer).expect("connects");
    ChainRequester::new(provider, deployment)
}

/// The default worker, from the on-chain registry (once the connector put it there), verified
/// under `policy`.
async fn chain_worker(requester: &ChainRequester, policy: &Policy) -> Worker {
    let id = afallon_proto::worker_id_from_name(WORKER);
    for _ in 0..300 {
        match requester.verify_worker(&id, policy).await {
            Ok(worker) => return worker,
            Err(ChainError::Unexpected(_)) => {}
            Err(error) => panic!("the on-chain record does not verify: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the connector did not register the worker on chain");
}

fn order(worker: &Worker, input: &str, id: Option<&str>) -> (WorkOrderRequest, PendingResult) {
    order_with(worker, input, id, worker.item_protection())
}

fn order_with(
    worker: &Worker,
    input: &str,
    id: Option<&str>,
    protection: InputProtection,
) -> (WorkOrderRequest, PendingResult) {
    let mut builder = worker.work_order("echo-result").expect("builder");
    if let Some(id) = id {
        builder = builder.work_order_id(id);
    }
    builder.input(input.as_bytes(), protection).expect("input");
    builder.build(None).expect("build")
}

/// Waits for the order's completion, verifies and decrypts it, and returns what it echoed.
async fn completed(
    requester: &ChainRequester,
    worker: &Worker,
    request: &WorkOrderRequest,
    pending: &PendingResult,
    from: u64,
) -> String {
    let completion = requester
        .wait_completion(
            &request.work_order_id,
            from,
            0,
            Duration::from_millis(100),
            Duration::from_secs(180),
        )
        .await
        .expect("the order completes on chain");
    let result = completion.result().expect("a result");
    let outputs = pending
        .open_with_key(&result, &worker.verifying_key)
        .expect("the result verifies and decrypts");
    let output = String::from_utf8(outputs[0].1.clone()).expect("utf-8");
    // What the echo workload answers.
    output.strip_prefix("RESULT: ").expect("an echo").to_owned()
}

/// The worker's update of an order's receipt, once the connector posted it on chain.
async fn worker_update(
    requester: &ChainRequester,
    worker: &Worker,
    work_order_id: &str,
) -> afallon_proto::ReceiptUpdate {
    for _ in 0..600 {
        if let Some(update) =
            requester.worker_receipt_update(work_order_id, worker).await.expect("verifies")
        {
            return update;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no update of {work_order_id}'s receipt by its worker on chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_submitted_on_chain_complete_exactly_once_across_a_connector_restart() {
    let test = "orders_submitted_on_chain_complete_exactly_once_across_a_connector_restart";
    let Some(store) = services::fresh_postgres_database(test) else { return };
    let Some(anvil) = Anvil::start(test).await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (contracts, deployment) = deploy(&anvil, dir.path());
    let node = Service::start(&dir.path().join("data"), &["--store", &store]);
    let (first, from) = start_connector(&anvil, &contracts, &store, 2, dir.path());
    assert_eq!(from, deployment.deployed_at_block);
    let mut connector = Some(first);
    let requester = requester(&anvil, deployment);
    let worker = chain_worker(&requester, &node.policy()).await;

    let mut orders: Vec<(String, WorkOrderRequest, PendingResult, u64)> = Vec::new();
    for i in 0..12 {
        if i == 4 {
            // SIGKILL in the middle of the stream: orders are in every state.
            connector.take().expect("running").kill();
        }
        if i == 8 {
            let (restarted, from) = start_connector(&anvil, &contracts, &store, 2, dir.path());
            // It goes on from its stored cursor, not from the deployment.
            assert!(from > deployment.deployed_at_block, "restarted from block {from}");
            assert!(from < orders[4].3, "the cursor is before the orders it had not settled");
            connector = Some(restarted);
        }
        let input = format!("on-chain order {i}");
        let (request, pending) = order(&worker, &input, None);
        let block = requester.submit(&request).await.expect("submitted on chain");
        if i % 4 == 0 {
            // Some with a receipt, created on chain and mirrored by the connector.
            requester.create_receipt(&request).await.expect("receipt created on chain");
        }
        orders.push((input, request, pending, block));
        // A stream: when the connector dies, some orders are settled and some in progress.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (input, request, pending, block) in &orders {
        assert_eq!(&completed(&requester, &worker, request, pending, *block).await, input);
    }
    for (_, request, _, _) in &orders {
        let completions = requester.completions(&request.work_order_id, 0).await.expect("logs");
        assert_eq!(completions.len(), 1, "one completion event for {}", request.work_order_id);
    }
    // The worker's updates of the receipts, posted on chain by the connector, verify with the
    // worker's key and are the ones its worker signed in the service: the same data (the hash
    // of the stored response) under the same signature.
    let service = node.client();
    for (_, request, _, _) in orders.iter().step_by(4) {
        let on_chain = worker_update(&requester, &worker, &request.work_order_id).await;
        let stored = service
            .receipt_update_retrieve(&request.work_order_id, None)
            .await
            .expect("the service has the receipt")
            .update;
        assert_eq!(
            (&on_chain.update_data, &on_chain.update_signature, on_chain.update_type),
            (&stored.update_data, &stored.update_signature, stored.update_type)
        );
        assert!(on_chain.update_data.as_ref().is_some_and(|data| data.len() == 64));
    }
    // Each ran once: the worker's process counts every order it ran.
    assert_eq!(node.metric("afallon_workorders_completed_total{outcome=\"success\"}").await, 12.0);
    drop(connector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorganisation_before_confirmation_neither_runs_an_order_twice_nor_loses_it() {
    let test = "a_reorganisation_before_confirmation_neither_runs_an_order_twice_nor_loses_it";
    let Some(store) = services::fresh_postgres_database(test) else { return };
    let Some(anvil) = Anvil::start(test).await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (contracts, deployment) = deploy(&anvil, dir.path());
    let node = Service::start(&dir.path().join("data"), &["--store", &store]);
    let (_connector, _) = start_connector(&anvil, &contracts, &store, 3, dir.path());
    let requester = requester(&anvil, deployment);
    let worker = chain_worker(&requester, &node.policy()).await;

    // 1. An order that a reorganisation takes back before it is confirmed never runs: the id
    //    then carries another request, and that one's result is what completes it.
    anvil.pause_miner(true);
    let snapshot = anvil.call("evm_snapshot", json!([])).await;
    let (first, _) = order(&worker, "first request", None);
    requester.submit(&first).await.expect("submitted");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let unknown =
        node.client().result(&first.work_order_id).await.expect_err("not confirmed, not run");
    assert!(
        matches!(&unknown, afallon_client::ClientError::Rpc(e) if e.is_unknown_order()),
        "{unknown}"
    );
    assert_eq!(anvil.call("evm_revert", json!([snapshot])).await, json!(true));
    let (second, pending) = order(&worker, "second request", Some(&first.work_order_id));
    let block = requester.submit(&second).await.expect("the id is free again");
    anvil.pause_miner(false);
    assert_eq!(completed(&requester, &worker, &second, &pending, block).await, "second request");
    assert_eq!(requester.completions(&second.work_order_id, 0).await.expect("logs").len(), 1);

    // 2. A completion that a reorganisation takes back is sent again.
    anvil.pause_miner(true);
    let (request, pending) = order(&worker, "completed twice, counted once", None);
    let block = requester.submit(&request).await.expect("submitted");
    let snapshot = anvil.call("evm_snapshot", json!([])).await;
    for _ in 0..3 {
        anvil.call("evm_mine", json!([])).await;
    }
    let mut completed_once = false;
    for _ in 0..300 {
        if !requester.completions(&request.work_order_id, block).await.expect("logs").is_empty() {
            completed_once = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(completed_once, "the connector completed the order once it was confirmed");
    assert!(anvil.head().await > block);
    assert_eq!(anvil.call("evm_revert", json!([snapshot])).await, json!(true));
    assert!(requester.completions(&request.work_order_id, block).await.expect("logs").is_empty());
    anvil.pause_miner(false);
    assert_eq!(
        completed(&requester, &worker, &request, &pending, block).await,
        "completed twice, counted once"
    );
    // Confirmed now, and once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(requester.completions(&request.work_order_id, 0).await.expect("logs").len(), 1);
    assert_eq!(node.metric("afallon_workorders_completed_total{outcome=\"success\"}").await, 2.0);
}

/// The service in this process on its embedded store, and a connector (one confirmation) on the
/// same store, speaking to the service through what `wrap` makes of the store's listener.
struct InProcess {
    node: afallon_node::RunningNode,
    data_dir: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    running: tokio::task::JoinHandle<Result<(), ChainError>>,
}

type Listener = afallon_node::LocalListener<afallon_node::afallon_store::RedbStore>;

impl InProcess {
    async fn start<W: afallon_chain::Service>(
        anvil: &Anvil,
        deployment: Deployment,
        dir: &Path,
        max_open: usize,
        wrap: impl FnOnce(Listener) -> W,
    ) -> Self {
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).expect("mkdir");
        let store = Arc::new(
            afallon_node::afallon_store::RedbStore::open(
                &data_dir.join("store.redb"),
                Default::default(),
            )
            .expect("store"),
        );
        let mut config =
            afallon_node::NodeConfig::new("127.0.0.1:0".parse().expect("addr"), &data_dir);
        config.insecure_simulation = true;
        let node = afallon_node::Node::start_with_store(config.clone(), Arc::clone(&store))
            .await
            .expect("node");
        let service = wrap(afallon_node::LocalListener::new(config, Arc::clone(&store)));
        let signer = afallon_chain::signer_from_hex(SERVICE_KEY).expect("key");
        let (provider, account) = afallon_chain::connect(&anvil.url, signer).expect("connect");
        let config = ConnectorConfig {
            confirmations: 1,
            poll: Duration::from_millis(100),
            max_open,
            ..ConnectorConfig::default()
        };
        let connector = Connector::new(provider, account, deployment, service, store, config)
            .await
            .expect("connector");
        let resume = connector.resume().await.expect("resume");
        assert_eq!(resume.from_block, deployment.deployed_at_block);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(connector.run(resume, stopped));
        Self { node, data_dir, stop, running }
    }

    /// The policy of a requester on this machine: this node's simulated TEE.
    fn policy(&self) -> Policy {
        let key = afallon_platform::SimPlatform::local_attestation_key(&self.data_dir.join("sim"))
            .expect("read")
            .expect("key");
        Policy::new().insecure_allow_simulation().trust_simulation_key(key)
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.running.await.expect("joins").expect("runs");
        self.node.shutdown().await;
    }
}

/// The store's listener as it is.
struct Honest(Listener);

impl afallon_chain::Service for Honest {
    async fn call(&self, request: String) -> String {
        self.0.call(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_that_never_reach_the_service_and_their_receipts_do_not_hold_the_connector() {
    let test = "orders_that_never_reach_the_service_and_their_receipts_do_not_hold_the_connector";
    let Some(anvil) = Anvil::start(test).await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, deployment) = deploy(&anvil, dir.path());
    // One open order or receipt at a time: anything that never ended would stop all reading.
    let service = InProcess::start(&anvil, deployment, dir.path(), 1, Honest).await;
    let requester = requester(&anvil, deployment);
    let worker = chain_worker(&requester, &service.policy()).await;
    let (attacker_provider, _) = afallon_chain::connect(
        &anvil.url,
        afallon_chain::signer_from_hex(ATTACKER_KEY).expect("key"),
    )
    .expect("connect");
    let attacker = ChainRequester::new(attacker_provider, deployment);

    // Orders whose params lie about their id (refused before the service), each with a receipt.
    let mut lying = Vec::new();
    for n in 0..3 {
        let (mut request, _) = order(&worker, "never runs", None);
        let on_chain_id = request.work_order_id.clone();
        request.work_order_id = format!("{:064x}", n + 1);
        let params = serde_json::to_string(&request).expect("JSON");
        let orders = afallon_chain::contracts::WorkOrderRegistry::new(
            deployment.work_order_registry,
            attacker.provider(),
        );
        let worker_id = afallon_chain::id_to_bytes32(&request.worker_id).expect("id");
        let submitted = orders
            .workOrderSubmit(
                afallon_chain::id_to_bytes32(&on_chain_id).expect("id"),
                worker_id,
                afallon_chain::id_to_bytes32(&request.requester_id).expect("id"),
                params,
            )
            .send()
            .await
            .expect("sent")
            .get_receipt()
            .await
            .expect("mined");
        assert!(submitted.status());
        request.work_order_id = on_chain_id;
        attacker.create_receipt(&request).await.expect("receipt created");
        lying.push((request.work_order_id, submitted.block_number.expect("block")));
    }
    // An honest order after them completes: nothing held the one place.
    let (honest, pending) = order(&worker, "still served", None);
    let block = requester.submit(&honest).await.expect("submitted");
    assert_eq!(completed(&requester, &worker, &honest, &pending, block).await, "still served");
    // The lying orders were completed with an error that says why.
    for (id, block) in lying {
        let completion = requester
            .wait_completion(&id, block, 0, Duration::from_millis(100), Duration::from_secs(60))
            .await
            .expect("completed");
        let refusal = completion.result().expect_err("an error");
        assert!(refusal.to_string().contains("workOrderId"), "{refusal}");
    }
    service.stop().await;
}

/// What the lying connector does to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lie {
    /// Changes the input before the service sees it (recomputing its hash).
    AlterInput,
    /// Completes it with another order's response.
    Swap,
    /// Changes a byte of the result's output.
    FlipOutput,
    /// Never completes it.
    Drop,
}

/// A service that lies about the orders named in `lies`, and passes the others through.
struct Lying {
    listener: afallon_node::LocalListener<afallon_node::afallon_store::RedbStore>,
    lies: Mutex<HashMap<String, Lie>>,
    /// The last honest result response, for swapping.
    last: Mutex<Option<String>>,
}

impl afallon_chain::Service for Lying {
    async fn call(&self, request: String) -> String {
        let mut body: Value = serde_json::from_str(&request).expect("JSON");
        let id = body["params"]["workOrderId"].as_str().unwrap_or_default().to_owned();
        let lie = self.lies.lock().expect("lock").get(&id).copied();
        let method = body["method"].as_str().unwrap_or_default().to_owned();
        if method == "WorkOrderSubmit" && lie == Some(Lie::AlterInput) {
            let item = &mut body["params"]["inData"][0];
            let data = b"pay the connector 1000";
            item["data"] = json!(base64_of(data));
            item["dataHash"] = json!(afallon_crypto::sha256(data).to_hex_upper());
            return self.listener.call(body.to_string()).await;
        }
        if method == "WorkOrderGetResult" && lie == Some(Lie::Drop) {
            return json!({"jsonrpc": "2.0", "id": body["id"], "error": {"code": 5, "message": "pending"}}).to_string();
        }
        let answer = self.listener.call(request).await;
        if method != "WorkOrderGetResult" || answer.contains("\"error\"") {
            return answer;
        }
        match lie {
            Some(Lie::Swap) => self.last.lock().expect("lock").clone().expect("an earlier result"),
            Some(Lie::FlipOutput) => {
                let mut value: Value = serde_json::from_str(&answer).expect("JSON");
                let data = value["result"]["outData"][0]["data"].as_str().expect("data").to_owned();
                let mut bytes = base64_decode(&data);
                bytes[0] ^= 1;
                value["result"]["outData"][0]["data"] = json!(base64_of(&bytes));
                value.to_string()
            }
            _ => {
                *self.last.lock().expect("lock") = Some(answer.clone());
                answer
            }
        }
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_connector_cannot_make_a_requester_accept_a_wrong_result() {
    let test = "a_lying_connector_cannot_make_a_requester_accept_a_wrong_result";
    let Some(anvil) = Anvil::start(test).await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, deployment) = deploy(&anvil, dir.path());
    let mut lies = None;
    let service = InProcess::start(&anvil, deployment, dir.path(), 256, |listener| {
        let lying = Arc::new(Lying { listener, lies: Mutex::default(), last: Mutex::default() });
        lies = Some(Arc::clone(&lying));
        Shared(lying)
    })
    .await;
    let lies = lies.expect("the lying service");
    let requester = requester(&anvil, deployment);
    let worker = chain_worker(&requester, &service.policy()).await;

    // An honest order first: the check passes when nothing lies (and gives Swap its result).
    let (honest, pending) = order(&worker, "pay the requester 10", None);
    let block = requester.submit(&honest).await.expect("submitted");
    assert_eq!(
        completed(&requester, &worker, &honest, &pending, block).await,
        "pay the requester 10"
    );

    for lie in [Lie::AlterInput, Lie::Swap, Lie::FlipOutput, Lie::Drop] {
        // Plain inputs: the connector can read and change them.
        let (request, pending) =
            order_with(&worker, "pay the requester 10", None, InputProtection::Plain);
        lies.lies.lock().expect("lock").insert(request.work_order_id.clone(), lie);
        let block = requester.submit(&request).await.expect("submitted");
        let timeout =
            if lie == Lie::Drop { Duration::from_secs(5) } else { Duration::from_secs(120) };
        let completion = requester
            .wait_completion(&request.work_order_id, block, 0, Duration::from_millis(100), timeout)
            .await;
        match (lie, completion) {
            (Lie::Drop, Err(ChainError::Timeout(_))) => {}
            (Lie::Drop, other) => panic!("a dropped order completed: {other:?}"),
            (_, Err(error)) => panic!("{lie:?}: no completion: {error}"),
            (_, Ok(completion)) => {
                // A changed input makes the worker refuse the order (its hash is not the one
                // the requester sealed) or sign a result for another request; either way
                // nothing opens. Swapped and flipped results are well formed and fail to verify.
                let result = completion.result();
                if lie != Lie::AlterInput {
                    assert!(result.is_ok(), "{lie:?}: {result:?}");
                }
                let opened =
                    result.ok().map(|result| pending.open_with_key(&result, &worker.verifying_key));
                assert!(
                    !matches!(opened, Some(Ok(_))),
                    "{lie:?}: the requester accepted {opened:?}"
                );
            }
        }
    }
    service.stop().await;
}

/// The lying service, shared with the test that tells it what to lie about.
struct Shared(Arc<Lying>);

impl afallon_chain::Service for Shared {
    async fn call(&self, request: String) -> String {
        self.0.call(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn afallon_up_runs_the_connector_on_its_embedded_store_and_afallon_submit_uses_the_chain() {
    let test =
        "afallon_up_runs_the_connector_on_its_embedded_store_and_afallon_submit_uses_the_chain";
    let Some(anvil) = Anvil::start(test).await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (contracts, deployment) = deploy(&anvil, dir.path());
    let requester_key = dir.path().join("requester.key");
    std::fs::write(&requester_key, REQUESTER_KEY).expect("write");
    let contracts_arg = contracts.to_str().expect("UTF-8");
    let node = up_with_connector(&anvil, dir.path(), &contracts);
    let requester = requester(&anvil, deployment);
    chain_worker(&requester, &node.policy()).await;
    let output = Command::new(BIN)
        .args([
            "submit",
            "-w",
            WORKER,
            "-l",
            "echo-result",
            "-i",
            "hello from the chain",
            "--receipt",
        ])
        .args(["--chain-rpc", &anvil.url, "--contracts", contracts_arg, "--eth-key-file"])
        .arg(&requester_key)
        .current_dir(dir.path())
        .args(["--data-dir", "data"])
        .output()
        .expect("afallon submit runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "RESULT: hello from the chain");
    assert!(stderr.contains("submitted on chain in block"), "{stderr}");
    assert!(stderr.contains("signature verified"), "{stderr}");
    // The receipt: created on chain, mirrored into the service, its worker's signed update
    // posted back on chain and verified with the worker's key.
    assert!(stderr.contains("its receipt created on chain"), "{stderr}");
    assert!(stderr.contains("receipt status: "), "{stderr}");
}

/// Python with web3 from the tools venv (scripts/services), if it is there.
fn web3_python(test: &str) -> Option<PathBuf> {
    let python = services::tools_dir().join("venv/bin/python3");
    let found = Command::new(&python)
        .args(["-c", "import web3"])
        .output()
        .is_ok_and(|output| output.status.success())
        .then_some(python);
    services::tool(test, "web3 in the tools venv (scripts/services install)", found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avalon_style_web3_client_gets_a_result_that_verifies_from_the_chain() {
    let test = "an_avalon_style_web3_client_gets_a_result_that_verifies_from_the_chain";
    let Some(python) = web3_python(test) else { return };
    let Some(anvil) = Anvil::start(test).await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (contracts, deployment) = deploy(&anvil, dir.path());
    let contracts_arg = contracts.to_str().expect("UTF-8");
    let node = up_with_connector(&anvil, dir.path(), &contracts);
    let requester = requester(&anvil, deployment);
    let worker = chain_worker(&requester, &node.policy()).await;
    let (request, pending) = order(&worker, "from web3", None);
    let params = serde_json::to_string(&request).expect("params JSON");
    // web3.py with an ABI written from wire spec §8 only, as Avalon's client calls it.
    let mut client = Command::new(python)
        .arg(services::root().join("scripts/avalon-chain-client"))
        .args(["--rpc", &anvil.url, "--contracts", contracts_arg, "--key", REQUESTER_KEY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client starts");
    std::io::Write::write_all(&mut client.stdin.take().expect("stdin"), params.as_bytes())
        .expect("params written");
    let output = tokio::task::spawn_blocking(move || client.wait_with_output())
        .await
        .expect("joins")
        .expect("the client runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let completion = afallon_chain::Completion {
        block: 0,
        response: String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned(),
    };
    let result = completion.result().expect("a result");
    let outputs = pending.open_with_key(&result, &worker.verifying_key).expect("verifies");
    assert_eq!(String::from_utf8_lossy(&outputs[0].1), "RESULT: from web3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_with_a_key_of_its_own_registers_workers_once_the_deployer_names_it() {
    let test = "a_connector_with_a_key_of_its_own_registers_workers_once_the_deployer_names_it";
    let Some(anvil) = Anvil::start(test).await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (contracts, deployment) = deploy(&anvil, dir.path());
    let connector_key = ATTACKER_KEY;
    let connector =
        afallon_chain::signer_from_hex(connector_key).expect("a key").address().to_string();
    let registrar = |key: &str| {
        Command::new(BIN)
            .args(["registrar", "--rpc", &anvil.url, "--contracts"])
            .arg(&contracts)
            .arg(&connector)
            .env("AFALLON_ETH_KEY", key)
            .output()
            .expect("afallon runs")
    };
    // A deployment file that is not this chain's is noticed, not reported as done.
    let stale =
        Deployment { worker_registry: afallon_chain::Address::repeat_byte(7), ..deployment };
    let stale_file = dir.path().join("stale.json");
    std::fs::write(&stale_file, stale.to_json()).expect("write");
    let on_stale = Command::new(BIN)
        .args(["registrar", "--rpc", &anvil.url, "--contracts"])
        .arg(&stale_file)
        .arg(&connector)
        .env("AFALLON_ETH_KEY", SERVICE_KEY)
        .output()
        .expect("afallon runs");
    assert!(!on_stale.status.success(), "{}", String::from_utf8_lossy(&on_stale.stderr));
    // Only the deployer names registrars.
    let refused = registrar(connector_key);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("names registrars"));
    let named = registrar(SERVICE_KEY);
    assert!(named.status.success(), "{}", String::from_utf8_lossy(&named.stderr));
    let key_file = dir.path().join("connector.key");
    std::fs::write(&key_file, connector_key).expect("write");
    let node = Service::start(
        &dir.path().join("data"),
        &[
            "--contracts",
            contracts.to_str().expect("UTF-8"),
            "--ethereum-rpc",
            &anvil.url,
            "--eth-key-file",
            key_file.to_str().expect("UTF-8"),
        ],
    );
    let requester = requester(&anvil, deployment);
    let worker = chain_worker(&requester, &node.policy()).await;
    let registry = afallon_chain::contracts::WorkerRegistry::new(
        deployment.worker_registry,
        requester.provider(),
    );
    let owner = registry
        .workerOwner(afallon_chain::id_to_bytes32(&worker.worker_id).expect("id"))
        .call()
        .await
        .expect("answers");
    assert_eq!(owner.to_string(), connector);
}
