//! An order that takes longer than its lease runs once as far as the workload's state goes: the
//! worker renews the lease while it processes the order, a run that lost its lease cannot
//! complete it, and only the winning completion's state takes effect, in memory and sealed.

mod common;

use std::time::{Duration, Instant};

use afallon_client::InputProtection;
use common::Service;

/// Deposits in the long order, each under a data key of its own (one RSA decryption each) and
/// padded after a NUL, which the wallet ignores as Avalon's does (but which is decoded, decrypted
/// and hashed), so that the order takes well over its one-second lease.
const DEPOSITS: usize = 1000;
const PADDING: usize = 4500;

/// Runs a wallet order to its result and returns its outputs.
async fn wallet(service: &Service, inputs: &[String], protection: InputProtection) -> Vec<String> {
    let inputs: Vec<(&str, InputProtection)> =
        inputs.iter().map(|input| (input.as_str(), protection)).collect();
    service.order("simple-wallet", &inputs, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_longer_than_its_lease_changes_the_state_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("afallon-data");
    let config = dir.path().join("afallon.toml");
    std::fs::write(&config, "lease_seconds = 1\n").expect("config");
    let args = ["--config", config.to_str().expect("utf-8")];
    let service = Service::start(&data, &args);

    let padded = format!("deposit frank 1\0{}", "p".repeat(PADDING));
    let deposits = vec![padded; DEPOSITS];
    let started = Instant::now();
    let outputs = wallet(&service, &deposits, InputProtection::DataKey).await;
    let took = started.elapsed();
    eprintln!("{DEPOSITS} deposits took {took:?} with a one-second lease");
    assert_eq!(outputs.last().map(String::as_str), Some("WALLET RESULT: frank::1000"));
    let in_enclave = service.metric("afallon_workorder_processing_seconds_sum").await;
    eprintln!("in the enclave for {in_enclave:.2} s");
    assert!(in_enclave > 1.2, "the order must outlast its lease to show anything");
    // Any other run of the order has ended by now.
    tokio::time::sleep(took + Duration::from_secs(1)).await;
    let runs = service.metric("afallon_workorder_processing_seconds_count").await;
    let requeued = service.metric("afallon_workorders_requeued_total").await;
    eprintln!("enclave runs: {runs}, requeued: {requeued}");

    let next = ["deposit frank 1".to_owned()];
    assert_eq!(
        wallet(&service, &next, InputProtection::Session).await,
        ["WALLET RESULT: frank::1001"],
        "the deposits ran more than once"
    );
    assert_eq!((runs, requeued), (1.0, 0.0), "the lease was renewed while the order ran");

    service.kill();
    let service = Service::start(&data, &args);
    assert_eq!(
        wallet(&service, &next, InputProtection::Session).await,
        ["WALLET RESULT: frank::1002"],
        "the sealed state took a losing run"
    );
}
