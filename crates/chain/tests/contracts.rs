//! The registries in `contracts/`: the committed artifacts are what the sources compile to, their
//! ABI is the one Avalon's Ethereum clients call (wire spec §8), and on a real dev chain (anvil)
//! they do what the proxy model needs and refuse what it must not allow.
//!
//! Needs node with `npm ci` done in contracts/ (scripts/services does it); without it each test
//! says loudly that it was skipped (and fails under `AFALLON_REQUIRE_SERVICES=1`).

#[path = "../../tidy/tests/support/services.rs"]
mod services;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use afallon_chain::contracts::{
    DirectRegistry, WorkOrderReceiptRegistry, WorkOrderRegistry, WorkerRegistry,
};
use afallon_chain::{Deployment, DynProvider, id_to_bytes32};
use alloy::json_abi::JsonAbi;
use alloy::primitives::{Address, B256, Bytes, FixedBytes, U256};

const DEPLOYER: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const OTHER: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

fn artifact_abi(contract: &str) -> JsonAbi {
    let text = services::read(&format!("contracts/artifacts/{contract}.json"));
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    serde_json::from_value(value["abi"].clone()).expect("an ABI")
}

fn functions(abi: &JsonAbi) -> Vec<String> {
    abi.functions().map(|f| f.signature_with_outputs()).collect()
}

fn events(abi: &JsonAbi) -> Vec<String> {
    abi.events()
        .map(|event| {
            let inputs: Vec<String> = event
                .inputs
                .iter()
                .map(|p| if p.indexed { format!("{} indexed", p.ty) } else { p.ty.clone() })
                .collect();
            format!("{}({})", event.name, inputs.join(","))
        })
        .collect()
}

#[test]
fn the_abi_is_the_one_avalon_clients_call() {
    let expect = |contract: &str, wanted_functions: &[&str], wanted_events: &[&str]| {
        let abi = artifact_abi(contract);
        let (have_functions, have_events) = (functions(&abi), events(&abi));
        for wanted in wanted_functions {
            assert!(
                have_functions.iter().any(|f| f == wanted),
                "{contract}: no {wanted} in {have_functions:?}"
            );
        }
        for wanted in wanted_events {
            assert!(
                have_events.iter().any(|e| e == wanted),
                "{contract}: no event {wanted} in {have_events:?}"
            );
        }
    };
    expect(
        "WorkerRegistry",
        &[
            "workerRegister(bytes32,uint256,bytes32,bytes32[],string)()",
            "workerUpdate(bytes32,string)()",
            "workerSetStatus(bytes32,uint256)()",
            "workerLookUp(uint256,bytes32,bytes32)(uint256,uint256,bytes32[])",
            "workerLookUpNext(uint256,bytes32,bytes32,uint256)(uint256,uint256,bytes32[])",
            "workerRetrieve(bytes32)(uint256,uint256,bytes32,bytes32[],string)",
        ],
        &[],
    );
    expect(
        "WorkOrderRegistry",
        &[
            "workOrderSubmit(bytes32,bytes32,bytes32,string)(uint256)",
            "workOrderComplete(bytes32,string)(uint256)",
            "workOrderGet(bytes32)(uint256,bytes32,string,string,uint256)",
        ],
        &[
            "workOrderSubmitted(bytes32 indexed,bytes32 indexed,bytes32 indexed,string,uint256,address,bytes4)",
            "workOrderCompleted(bytes32,bytes32,uint256,string,uint256,bytes4)",
        ],
    );
    expect(
        "WorkOrderReceiptRegistry",
        &[
            "workOrderReceiptCreate(bytes32,bytes32,bytes32,bytes32,uint256,bytes)(uint256)",
            "workOrderReceiptUpdate(bytes32,bytes32,uint256,bytes,bytes,string)(uint256)",
            "workOrderReceiptUpdateRetrieve(bytes32,bytes32,uint256)(bytes32,uint256,bytes,bytes,string,uint256)",
            "workOrderReceiptRetrieve(bytes32)(bytes32,bytes32,bytes32,uint256,bytes,uint256)",
            "workOrderReceiptLookUp(bytes32,bytes32,bytes32,uint256)(uint256,uint256,bytes32[])",
            "workOrderReceiptLookUpNext(bytes32,bytes32,bytes32,uint256,uint256)(uint256,uint256,bytes32[])",
        ],
        &[
            "workOrderReceiptCreated(bytes32 indexed,bytes32 indexed,bytes32 indexed,bytes32,uint256,bytes,uint256)",
            "workOrderReceiptUpdated(bytes32 indexed,bytes32 indexed,uint256 indexed,bytes,bytes,string,uint256)",
        ],
    );
    expect(
        "DirectRegistry",
        &[
            "registryAdd(bytes32,string,bytes32,bytes32[])()",
            "registryUpdate(bytes32,string,bytes32,bytes32[])()",
            "registrySetStatus(bytes32,uint8)()",
            "registryLookUp(bytes32)(uint256,string,bytes32[])",
            "registryLookUpNext(bytes32,string)(int256,string,bytes32[])",
            "registryRetrieve(bytes32)(string,bytes32,bytes32[],uint8)",
        ],
        &[
            "RegistryAddEvent(bytes32,string,bytes32,bytes32[],uint8)",
            "RegistryUpdateEvent(bytes32,string,bytes32,bytes32[])",
            "RegistrySetStatusEvent(bytes32,uint8)",
        ],
    );
}

#[test]
fn the_committed_artifacts_are_what_the_sources_compile_to() {
    let test = "the_committed_artifacts_are_what_the_sources_compile_to";
    let root = services::root();
    let solc = root.join("contracts/node_modules/solc");
    let found = solc.is_dir().then_some(solc);
    let Some(_) = services::tool(test, "solc-js (npm ci in contracts/)", found) else { return };
    let output = Command::new("node")
        .arg(root.join("contracts/build.js"))
        .arg("--check")
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A running anvil, stopped on drop.
struct Anvil {
    child: Child,
    url: String,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn anvil(test: &str) -> Option<Anvil> {
    let binary = services::tool(test, "anvil (npm ci in contracts/)", services::anvil())?;
    let port = TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let child = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("anvil starts");
    let anvil = Anvil { child, url: format!("http://127.0.0.1:{port}") };
    let (provider, _) = account(&anvil, DEPLOYER);
    for _ in 0..200 {
        if alloy::providers::Provider::get_block_number(&provider).await.is_ok() {
            return Some(anvil);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("anvil did not answer");
}

fn account(anvil: &Anvil, key: &str) -> (DynProvider, Address) {
    afallon_chain::connect(&anvil.url, afallon_chain::signer_from_hex(key).expect("key"))
        .expect("connect")
}

fn id(n: u8) -> B256 {
    B256::repeat_byte(n)
}

/// Whether a transaction was refused (reverted when estimated or mined).
async fn refused<P: alloy::providers::Provider, C: alloy::contract::CallDecoder>(
    call: alloy::contract::CallBuilder<P, C>,
) -> bool {
    match call.send().await {
        Err(_) => true,
        Ok(pending) => !pending.get_receipt().await.expect("a receipt").status(),
    }
}

async fn sent<P: alloy::providers::Provider, C: alloy::contract::CallDecoder>(
    call: alloy::contract::CallBuilder<P, C>,
) {
    let receipt = call.send().await.expect("sent").get_receipt().await.expect("mined");
    assert!(receipt.status(), "reverted");
}

async fn deployed(test: &str) -> Option<(Anvil, Deployment, DynProvider, DynProvider)> {
    let anvil = anvil(test).await?;
    let (deployer, _) = account(&anvil, DEPLOYER);
    let (other, _) = account(&anvil, OTHER);
    let deployment = afallon_chain::deploy(&deployer).await.expect("deployed");
    Some((anvil, deployment, deployer, other))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_orders_are_submitted_once_and_completed_once_by_their_worker_s_registrant() {
    let test = "work_orders_are_submitted_once_and_completed_once_by_their_worker_s_registrant";
    let Some((_anvil, deployment, service, requester)) = deployed(test).await else { return };
    let workers = WorkerRegistry::new(deployment.worker_registry, &service);
    sent(workers.workerRegister(id(1), U256::from(1), id(9), vec![id(7)], "{}".into())).await;
    let as_requester = WorkOrderRegistry::new(deployment.work_order_registry, &requester);
    let as_service = WorkOrderRegistry::new(deployment.work_order_registry, &service);
    assert_eq!(as_service.VERSION().call().await.expect("VERSION"), FixedBytes([1, 1, 0, 0]));

    // Unknown ids answer status 0 and empty strings; they do not revert.
    let unknown = as_requester.workOrderGet(id(42)).call().await.expect("answers");
    assert_eq!((unknown.status, unknown.request.as_str()), (U256::ZERO, ""));
    // Only active, registered workers take orders.
    assert!(refused(as_requester.workOrderSubmit(id(2), id(8), id(3), "{}".into())).await);
    sent(as_requester.workOrderSubmit(id(2), id(1), id(3), "{\"a\":1}".into())).await;
    // An id is used once.
    assert!(refused(as_requester.workOrderSubmit(id(2), id(1), id(3), "{\"b\":2}".into())).await);
    let order = as_requester.workOrderGet(id(2)).call().await.expect("answers");
    assert_eq!(
        (order.status, order.workerID, order.request.as_str()),
        (U256::from(1), id(1), "{\"a\":1}")
    );
    // Only the worker's registrant completes it, once.
    assert!(refused(as_requester.workOrderComplete(id(2), "forged".into())).await);
    sent(as_service.workOrderComplete(id(2), "{\"result\":{}}".into())).await;
    assert!(refused(as_service.workOrderComplete(id(2), "again".into())).await);
    let order = as_requester.workOrderGet(id(2)).call().await.expect("answers");
    assert_eq!((order.status, order.response.as_str()), (U256::from(2), "{\"result\":{}}"));
    // A worker that is not active takes no more orders, and only its registrant changes it.
    assert!(
        refused(
            WorkerRegistry::new(deployment.worker_registry, &requester)
                .workerSetStatus(id(1), U256::from(2))
        )
        .await
    );
    sent(workers.workerSetStatus(id(1), U256::from(2))).await;
    assert!(refused(as_requester.workOrderSubmit(id(4), id(1), id(3), "{}".into())).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_registrars_register_workers_and_a_worker_can_be_handed_over() {
    let test = "only_registrars_register_workers_and_a_worker_can_be_handed_over";
    let Some((anvil, deployment, deployer, other)) = deployed(test).await else { return };
    let as_deployer = WorkerRegistry::new(deployment.worker_registry, &deployer);
    let as_other = WorkerRegistry::new(deployment.worker_registry, &other);
    let (_, other_address) = account(&anvil, OTHER);
    let (_, deployer_address) = account(&anvil, DEPLOYER);
    let register = |worker: u8, app_types: Vec<B256>| {
        (id(worker), U256::from(1), id(9), app_types, "{}".to_owned())
    };
    // Nobody takes a worker id first without being named a registrar.
    let (w, t, o, a, d) = register(1, vec![]);
    assert!(refused(as_other.workerRegister(w, t, o, a, d)).await);
    assert!(refused(as_other.setRegistrar(other_address, true)).await);
    sent(as_deployer.setRegistrar(other_address, true)).await;
    let (w, t, o, a, d) = register(1, vec![]);
    sent(as_other.workerRegister(w, t, o, a, d)).await;
    let (w, t, o, a, d) = register(1, vec![]);
    assert!(refused(as_deployer.workerRegister(w, t, o, a, d)).await);
    // Application types are named once each, and never zero.
    let (w, t, o, a, d) = register(2, vec![id(7), id(7)]);
    assert!(refused(as_deployer.workerRegister(w, t, o, a, d)).await);
    let (w, t, o, a, d) = register(2, vec![B256::ZERO]);
    assert!(refused(as_deployer.workerRegister(w, t, o, a, d)).await);
    // Handed to another account (a new connector key), the worker is that account's.
    assert!(refused(as_deployer.workerTransfer(id(1), deployer_address)).await);
    sent(as_other.workerTransfer(id(1), deployer_address)).await;
    assert_eq!(as_other.workerOwner(id(1)).call().await.expect("answers"), deployer_address);
    assert!(refused(as_other.workerSetStatus(id(1), U256::from(2))).await);
    sent(as_deployer.workerSetStatus(id(1), U256::from(2))).await;
    assert!(refused(as_other.workerUpdate(id(1), "{\"x\":1}".into())).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_look_ups_filter_and_page() {
    let test = "worker_look_ups_filter_and_page";
    let Some((_anvil, deployment, service, _)) = deployed(test).await else { return };
    let workers = WorkerRegistry::new(deployment.worker_registry, &service);
    let page = usize::try_from(workers.PAGE().call().await.expect("PAGE")).expect("small");
    let count = page + 20;
    for n in 0..count {
        let mut worker = [0u8; 32];
        worker[..8].copy_from_slice(&(n as u64 + 1).to_be_bytes());
        let app = if n % 2 == 0 { id(7) } else { id(8) };
        sent(workers.workerRegister(
            B256::from(worker),
            U256::from(1),
            id(9),
            vec![app],
            "{}".into(),
        ))
        .await;
    }
    let first =
        workers.workerLookUp(U256::ZERO, B256::ZERO, B256::ZERO).call().await.expect("answers");
    assert_eq!(first.totalCount, U256::from(count));
    assert_eq!(first.ids_.len(), page);
    assert_ne!(first.lookupTag, U256::ZERO);
    let next = workers
        .workerLookUpNext(U256::ZERO, B256::ZERO, B256::ZERO, first.lookupTag)
        .call()
        .await
        .expect("answers");
    assert_eq!(next.ids_.len(), count - page);
    assert_eq!(next.newLookupTag, U256::ZERO);
    let mut all: Vec<B256> = first.ids_.into_iter().chain(next.ids_).collect();
    all.dedup();
    assert_eq!(all.len(), count, "no id twice, none missing");
    let by_app = workers.workerLookUp(U256::ZERO, B256::ZERO, id(8)).call().await.expect("answers");
    assert_eq!(by_app.totalCount, U256::from(count / 2));
    let none =
        workers.workerLookUp(U256::from(2), B256::ZERO, B256::ZERO).call().await.expect("answers");
    assert_eq!((none.totalCount, none.ids_.len()), (U256::ZERO, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_created_by_the_submitter_and_updated_by_the_parties() {
    let test = "receipts_are_created_by_the_submitter_and_updated_by_the_parties";
    let Some((anvil, deployment, service, requester)) = deployed(test).await else { return };
    sent(WorkerRegistry::new(deployment.worker_registry, &service).workerRegister(
        id(1),
        U256::from(1),
        id(9),
        vec![],
        "{}".into(),
    ))
    .await;
    sent(WorkOrderRegistry::new(deployment.work_order_registry, &requester).workOrderSubmit(
        id(2),
        id(1),
        id(3),
        "{}".into(),
    ))
    .await;
    let as_requester = WorkOrderReceiptRegistry::new(deployment.receipt_registry, &requester);
    let as_service = WorkOrderReceiptRegistry::new(deployment.receipt_registry, &service);
    let (stranger, _) =
        account(&anvil, "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a");
    let as_stranger = WorkOrderReceiptRegistry::new(deployment.receipt_registry, &stranger);
    let hash = Bytes::from(vec![0xAB; 32]);
    type Receipts<'a> = WorkOrderReceiptRegistry::WorkOrderReceiptRegistryInstance<&'a DynProvider>;
    // Whether the registry takes a receipt for order 2 of worker service 1 from `registry`'s account.
    let created = async |registry: &Receipts<'_>, worker: B256, requester: B256| {
        let call = registry.workOrderReceiptCreate(
            id(2),
            worker,
            id(1),
            requester,
            U256::ZERO,
            hash.clone(),
        );
        !refused(call).await
    };
    // The submitter creates it, once, for the order's own worker and requester.
    assert!(!created(&as_service, id(1), id(3)).await);
    assert!(!created(&as_requester, id(8), id(3)).await);
    assert!(!created(&as_requester, id(1), id(4)).await);
    assert!(created(&as_requester, id(1), id(3)).await);
    assert!(!created(&as_requester, id(1), id(3)).await);
    let data = Bytes::from(b"done".to_vec());
    let signature = Bytes::from(vec![1u8; 70]);
    let updated = async |registry: &Receipts<'_>, updater: B256, update_type: u64| {
        let call = registry.workOrderReceiptUpdate(
            id(2),
            updater,
            U256::from(update_type),
            data.clone(),
            signature.clone(),
            "SHA-256/SECP256K1".into(),
        );
        !refused(call).await
    };
    assert!(!updated(&as_stranger, id(1), 1).await);
    // Each party updates under its own id only: the worker's registrant as the worker, the
    // submitter as the requester.
    assert!(!updated(&as_service, id(3), 1).await);
    assert!(!updated(&as_requester, id(1), 1).await);
    assert!(updated(&as_requester, id(3), 0).await);
    assert!(updated(&as_service, id(1), 1).await);
    let retrieved = as_stranger.workOrderReceiptRetrieve(id(2)).call().await.expect("answers");
    assert_eq!(
        (retrieved.workOrderRequestHash, retrieved.currentReceiptStatus),
        (hash.clone(), U256::from(1))
    );
    let last = as_stranger
        .workOrderReceiptUpdateRetrieve(id(2), id(1), U256::from(0xFFFF_FFFFu32))
        .call()
        .await
        .expect("answers");
    assert_eq!((last.updateData, last.updateCount), (data, U256::from(1)));
    let found = as_stranger
        .workOrderReceiptLookUp(B256::ZERO, id(1), B256::ZERO, U256::from(1))
        .call()
        .await
        .expect("answers");
    assert_eq!(found.ids_, vec![id(2)]);
    // An order whose requester id is the worker's, or zero: the submitter cannot update as the
    // worker, and a zero id is listed once.
    let orders = WorkOrderRegistry::new(deployment.work_order_registry, &requester);
    sent(orders.workOrderSubmit(id(5), id(1), id(1), "{}".into())).await;
    let created_5 =
        as_requester.workOrderReceiptCreate(id(5), id(1), id(1), id(1), U256::ZERO, hash.clone());
    sent(created_5).await;
    assert!(!updated_as(&as_requester, id(5), id(1)).await);
    sent(orders.workOrderSubmit(id(6), id(1), B256::ZERO, "{}".into())).await;
    let created_6 = as_requester.workOrderReceiptCreate(
        id(6),
        id(1),
        B256::ZERO,
        B256::ZERO,
        U256::ZERO,
        hash.clone(),
    );
    sent(created_6).await;
    let any = as_stranger
        .workOrderReceiptLookUp(B256::ZERO, B256::ZERO, B256::ZERO, U256::from(255))
        .call()
        .await
        .expect("answers");
    assert_eq!((any.totalCount, any.ids_), (U256::from(3), vec![id(2), id(5), id(6)]));
    let other_status = as_stranger
        .workOrderReceiptLookUp(B256::ZERO, id(1), B256::ZERO, U256::ZERO)
        .call()
        .await
        .expect("answers");
    // Order 2 is processed (1) now; 5 and 6 are still as created (0).
    assert_eq!(other_status.ids_, vec![id(5), id(6)]);
}

/// Whether `registry`'s account may post an update of `order`'s receipt under `updater`.
async fn updated_as(
    registry: &WorkOrderReceiptRegistry::WorkOrderReceiptRegistryInstance<&DynProvider>,
    order: B256,
    updater: B256,
) -> bool {
    let call = registry.workOrderReceiptUpdate(
        order,
        updater,
        U256::from(1),
        Bytes::new(),
        Bytes::new(),
        "SHA-256/SECP256K1".into(),
    );
    !refused(call).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_list_is_changed_by_its_deployer_only() {
    let test = "the_registry_list_is_changed_by_its_deployer_only";
    let Some((_anvil, deployment, owner, other)) = deployed(test).await else { return };
    let as_owner = DirectRegistry::new(deployment.registry_list, &owner);
    let as_other = DirectRegistry::new(deployment.registry_list, &other);
    let address = B256::left_padding_from(deployment.worker_registry.as_slice());
    assert!(
        refused(as_other.registryAdd(id(9), "http://example.org".into(), address, vec![id(7)]))
            .await
    );
    sent(as_owner.registryAdd(id(9), "http://example.org".into(), address, vec![id(7)])).await;
    sent(as_owner.registryAdd(id(10), "http://example.net".into(), address, vec![id(8)])).await;
    let found = as_other.registryLookUp(id(7)).call().await.expect("answers");
    assert_eq!((found.totalCount, found.ids), (U256::from(1), vec![id(9)]));
    let all = as_other.registryLookUp(B256::ZERO).call().await.expect("answers");
    assert_eq!(all.ids, vec![id(9), id(10)]);
    assert!(refused(as_other.registrySetStatus(id(9), 3)).await);
    sent(as_owner.registrySetStatus(id(9), 3)).await;
    let retrieved = as_other.registryRetrieve(id(9)).call().await.expect("answers");
    assert_eq!((retrieved.uri.as_str(), retrieved.status), ("http://example.org", 3));
    assert_eq!(id_to_bytes32(&"09".repeat(32)).expect("an id"), id(9));
}
