//! End to end: the real `afallon` binary on a free loopback port, driven through the SDK and
//! through the CLI as a newcomer would.

mod common;

use std::time::Duration;

use afallon_client::{Attestation, InputProtection, Policy, WorkerError};
use afallon_crypto::EcdsaSigningKey;
use common::{Service, WORKER};

async fn run(
    service: &Service,
    workload: &str,
    inputs: &[(&str, InputProtection)],
    signer: Option<&EcdsaSigningKey>,
) -> Vec<String> {
    service.order(workload, inputs, signer).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_orders_through_the_sdk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("afallon-data"), &[]);
    let worker = service.worker().await;
    assert!(matches!(worker.attestation, Attestation::Verified(_)));
    assert!(worker.is_simulated());

    assert_eq!(
        run(
            &service,
            "echo-result",
            &[("Hello", InputProtection::Session), ("World", InputProtection::Session)],
            None
        )
        .await,
        ["RESULT: Hello", "RESULT: World"]
    );
    assert_eq!(
        run(
            &service,
            "heart-disease-eval",
            &[("Data: 25 10 1 67 102 125 1 95 5 10 1 11 36 1", InputProtection::Session)],
            None
        )
        .await,
        ["You have a 47% risk of heart disease"]
    );
    assert_eq!(
        run(&service, "echo-result", &[("in the clear", InputProtection::Plain)], None).await,
        ["RESULT: in the clear"]
    );
    let requester = EcdsaSigningKey::generate().expect("rng");
    assert_eq!(
        run(
            &service,
            "echo-result",
            &[("signed", InputProtection::Session), ("own key", InputProtection::DataKey)],
            Some(&requester)
        )
        .await,
        ["RESULT: signed", "RESULT: own key"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_through_the_sdk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("afallon-data"), &[]);
    let client = service.client();
    let worker = service.worker().await;
    let requester = EcdsaSigningKey::generate().expect("rng");
    let mut builder = worker.work_order("echo-result").expect("builder");
    builder.input(b"with a receipt", InputProtection::Session).expect("input");
    let (request, _) = builder.build(Some(&requester)).expect("build");
    client.submit(&request).await.expect("submit");
    client.create_receipt(&request, &requester).await.expect("receipt created");
    client
        .wait_result(&request.work_order_id, Duration::from_millis(10), Duration::from_secs(60))
        .await
        .expect("result");

    // The worker's signed "processed" update is there (whether the order finished before or
    // after the receipt was created).
    let mut status = 0;
    for _ in 0..100 {
        status =
            client.receipt(&request.work_order_id).await.expect("receipt").receipt_current_status;
        if status == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 2);
    let last = client.receipt_update_retrieve(&request.work_order_id, None).await.expect("update");
    assert_eq!((last.update.update_type, last.update_count), (Some(2), 1));

    // The requester marks it completed.
    let mut update = afallon_proto::ReceiptUpdate {
        work_order_id: Some(request.work_order_id.clone()),
        updater_id: Some(afallon_proto::updater_id(&requester.verifying_key().to_pem())),
        update_type: Some(1),
        update_data: last.update.update_data.clone(),
        update_signature: None,
        signature_rules: Some("SHA-256/SECP256K1".into()),
        receipt_verification_key: Some(requester.verifying_key().to_pem()),
    };
    update.update_signature = Some(afallon_proto::protection::sign_digest_base64(
        &requester,
        &afallon_proto::receipt_update_digest(&update),
    ));
    client.receipt_update(&update).await.expect("update accepted");
    assert_eq!(
        client.receipt(&request.work_order_id).await.expect("receipt").receipt_current_status,
        1
    );
    let first =
        client.receipt_update_retrieve(&request.work_order_id, Some(1)).await.expect("update 1");
    assert_eq!(first.update.update_type, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requesters_refuse_simulated_workers_unless_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("afallon-data"), &[]);
    let worker_id = afallon_proto::worker_id_from_name(WORKER);
    let error =
        service.client().verify_worker(&worker_id, &Policy::default()).await.expect_err("refused");
    assert!(
        matches!(error, afallon_client::ClientError::Worker(WorkerError::Attestation(_))),
        "{error}"
    );
    // Another node's simulation key is not this one's.
    let stranger =
        afallon_platform::SimPlatform::ephemeral(afallon_attest::Measurement::from([0; 32]))
            .expect("platform");
    let policy =
        Policy::new().insecure_allow_simulation().trust_simulation_key(stranger.attestation_key());
    assert!(service.client().verify_worker(&worker_id, &policy).await.is_err());
}

#[test]
fn cli_submit_prints_the_verified_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("afallon-data"), &[]);
    // As the README says: `afallon submit -w singleton-worker-1 -l echo-result -i Hello`, run in
    // the directory where `afallon up` keeps ./afallon-data.
    let output = service.cli(&["submit", "-w", WORKER, "-l", "echo-result", "-i", "Hello"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, "RESULT: Hello\n");
    assert!(stderr.contains("signature verified"), "{stderr}");
    assert!(stderr.contains("SIMULATED"), "{stderr}");

    let output = service.cli(&[
        "submit",
        "-w",
        WORKER,
        "-l",
        "simple-wallet",
        "-i",
        "deposit a 5",
        "withdraw a 2",
        "--plain",
        "--sign",
        "--receipt",
        "--json",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["outputs"][0]["data"], "WALLET RESULT: a::5");
    assert_eq!(json["outputs"][1]["data"], "WALLET RESULT: a::3");
    assert_eq!(json["signatureVerified"], true);
    assert_eq!(json["receipt"]["receiptCurrentStatus"], 2);

    let output = service.cli(&["workers"]);
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains(&afallon_proto::worker_id_from_name(WORKER))
    );

    // A requester elsewhere (no local node key) is refused, and says why.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let output = std::process::Command::new(common::BIN)
        .args(["submit", "-w", WORKER, "-l", "echo-result", "-i", "x", "--url", &service.url])
        .current_dir(elsewhere.path())
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("simulated evidence is refused"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_state_and_keys_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("afallon-data");
    let service = Service::start(&data, &[]);
    assert_eq!(
        run(&service, "simple-wallet", &[("deposit carol 100", InputProtection::Session)], None)
            .await,
        ["WALLET RESULT: carol::100"]
    );
    let key_before = service.worker().await.verification_key;
    service.kill();
    let service = Service::start(&data, &[]);
    assert_eq!(service.worker().await.verification_key, key_before);
    assert_eq!(
        run(&service, "simple-wallet", &[("withdraw carol 40", InputProtection::Session)], None)
            .await,
        ["WALLET RESULT: carol::60"]
    );
}

#[test]
fn synchronous_mode_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("afallon-data"), &["--sync"]);
    let output = service.cli(&["submit", "-w", WORKER, "-l", "echo-result", "-i", "now", "--sync"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "RESULT: now\n");
    assert!(!stderr.contains("polling"), "the listener answered with the result: {stderr}");
}

/// Concurrent orders of a stateful workload run one after another, each on the state the last
/// one left, while a stateless workload's orders go on beside them: 40 deposits of 1 answer the
/// balances 1 to 40, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wallet_orders_each_see_the_last_committed_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("afallon-data"), &[]);
    let worker = std::sync::Arc::new(service.worker().await);
    let mut tasks = Vec::new();
    for i in 0..80 {
        let (client, worker) = (service.client(), std::sync::Arc::clone(&worker));
        tasks.push(tokio::spawn(async move {
            let (workload, input) =
                if i % 2 == 0 { ("simple-wallet", "deposit gina 1") } else { ("echo-result", "x") };
            let mut builder = worker.work_order(workload).expect("builder");
            builder.input(input.as_bytes(), worker.item_protection()).expect("input");
            let (request, pending) = builder.build(None).expect("build");
            let result = client
                .submit_and_wait(&request, Duration::from_millis(10), Duration::from_secs(60))
                .await
                .expect("result");
            let outputs = pending.open_with_key(&result, &worker.verifying_key).expect("opens");
            (workload, String::from_utf8(outputs[0].1.clone()).expect("utf-8"))
        }));
    }
    let mut balances = Vec::new();
    for task in tasks {
        let (workload, output) = task.await.expect("task");
        if workload == "simple-wallet" {
            let balance = output.strip_prefix("WALLET RESULT: gina::").expect("a balance");
            balances.push(balance.parse::<u32>().expect("a number"));
        } else {
            assert_eq!(output, "RESULT: x");
        }
    }
    balances.sort_unstable();
    assert_eq!(balances, (1..=40).collect::<Vec<u32>>());
}
