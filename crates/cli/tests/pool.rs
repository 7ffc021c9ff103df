//! `afallon up --pool NAME`: a worker pool beside the singleton worker, its KMEs holding the
//! pool's keys and record, its WPEs running the orders. Requesters see one worker; its results
//! carry a per-order key the pool's key vouches for and verify in two steps (the SDK's check);
//! a stateful workload's orders run on either WPE on the last stored state. With each enclave in a
//! process of its own and two KMEs, the first KME killed under load loses no order: the WPEs go
//! on through the second.

mod common;

use std::time::{Duration, Instant};

use afallon_client::{Client, InputProtection, Submission, Worker};
use common::{Service, children};

const POOL: &str = "pool-1";

async fn pool_worker(service: &Service) -> Worker {
    service
        .client()
        .verify_worker(&afallon_proto::worker_id_from_name(POOL), &service.policy())
        .await
        .expect("the pool's record verifies as a worker's")
}

/// Submits an order to the pool and returns its verified, decrypted outputs and whether the
/// result carried a per-order key.
async fn pool_order(client: &Client, pool: &Worker, workload: &str, input: &str) -> (String, bool) {
    let mut builder = pool.work_order(workload).expect("builder");
    builder.input(input.as_bytes(), InputProtection::Session).expect("input");
    let (request, pending) = builder.build(None).expect("build");
    assert!(matches!(client.submit(&request).await.expect("submit"), Submission::Pending));
    let result = client
        .wait_result(&request.work_order_id, Duration::from_millis(10), Duration::from_secs(120))
        .await
        .expect("result");
    let per_order_key = result.ext_verification_key.is_some();
    let outputs = pending.open(&result, &pool.verification_key).expect("two steps verify");
    (String::from_utf8(outputs[0].1.clone()).expect("utf-8"), per_order_key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_serves_orders_signed_with_per_order_keys_beside_a_singleton_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = Service::start(&dir.path().join("data"), &["--pool", POOL]);
    let client = service.client();
    let pool = pool_worker(&service).await;
    let (echo, per_order_key) = pool_order(&client, &pool, "echo-result", "hello pool").await;
    assert_eq!(echo, "RESULT: hello pool");
    assert!(per_order_key, "a pool result carries extVerificationKey");
    // The wallet's orders run on either WPE, each on the last stored state.
    let mut balances = Vec::new();
    for deposit in ["deposit alice 100", "deposit alice 5", "deposit alice 1", "withdraw alice 6"] {
        balances.push(pool_order(&client, &pool, "simple-wallet", deposit).await.0);
    }
    assert_eq!(
        balances,
        [
            "WALLET RESULT: alice::100",
            "WALLET RESULT: alice::105",
            "WALLET RESULT: alice::106",
            "WALLET RESULT: alice::100"
        ]
    );
    // The singleton worker goes on as before, signing its results itself.
    let single = service.order("echo-result", &[("alone", InputProtection::Session)], None).await;
    assert_eq!(single, ["RESULT: alone"]);
    let pool_record = client
        .worker_record(&afallon_proto::worker_id_from_name(POOL))
        .await
        .expect("the pool's record");
    assert_eq!(pool_record.details.worker_type_data.extended_measurements.len(), 2, "KME and WPE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kmes_the_first_killed_under_load_and_no_order_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--pool", POOL, "--kmes", "2", "--enclave-process"];
    let service = Service::start(&dir.path().join("data"), &args);
    let kmes: Vec<u32> = children(service.pid())
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains("--role kme"))
        .map(|(pid, _)| pid)
        .collect();
    let wpes = children(service.pid()).iter().filter(|(_, c)| c.contains("--role wpe")).count();
    assert_eq!((kmes.len(), wpes), (2, 2), "two KME and two WPE processes");
    let pool = std::sync::Arc::new(pool_worker(&service).await);

    // Requesters keep submitting; the first KME is killed a moment in.
    let started = Instant::now();
    let mut requesters = Vec::new();
    for requester in 0..4 {
        let (client, pool) = (service.client(), std::sync::Arc::clone(&pool));
        requesters.push(tokio::spawn(async move {
            let mut done = 0;
            while started.elapsed() < Duration::from_secs(3) {
                let text = format!("order {requester}/{done}");
                let (echo, _) = pool_order(&client, &pool, "echo-result", &text).await;
                assert_eq!(echo, format!("RESULT: {text}"));
                done += 1;
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = std::process::Command::new("kill")
        .args(["-9", &kmes[0].to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let killed_at = started.elapsed();
    let mut completed = 0;
    for requester in requesters {
        completed += requester.await.expect("every order completes and verifies");
    }
    eprintln!(
        "{completed} orders completed and verified; the first KME was killed at {killed_at:?}"
    );
    assert!(completed > 8, "orders completed after the kill too: {completed}");
    let after = pool_order(&service.client(), &pool, "echo-result", "after").await.0;
    assert_eq!(after, "RESULT: after");
}
