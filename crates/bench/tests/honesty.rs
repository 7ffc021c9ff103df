//! The bench counts only results it verified, decrypted and checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use afallon_bench::{BenchConfig, Mode, Stop, run};
use afallon_client::{Client, Policy};
use afallon_crypto::EcdsaSigningKey;
use afallon_node::{Node, NodeConfig};

fn config(mode: Mode, workload: &str) -> BenchConfig {
    BenchConfig {
        concurrency: 4,
        stop: Stop::Count(40),
        workload: workload.into(),
        input_size: 1024,
        mode,
        signed: true,
        result_timeout: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_results_count_and_nothing_else_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node_config = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir.path());
    node_config.insecure_simulation = true;
    let node = Node::start(node_config).await.expect("node");
    let client = Arc::new(Client::new(&format!("http://{}", node.local_addr())).expect("client"));
    let worker_id = afallon_proto::worker_id_from_name("singleton-worker-1");
    let worker = client
        .verify_worker(&worker_id, &Policy::new().insecure_allow_simulation())
        .await
        .expect("worker");
    let quiet = Arc::new(|_: u64, _: u64| {});

    let report = run(
        Arc::clone(&client),
        Arc::new(worker.clone()),
        config(Mode::Async, "echo-result"),
        quiet.clone(),
    )
    .await;
    assert_eq!((report.completed, report.errors.len()), (40, 0), "{report:?}");
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.max >= report.latency_ms.p99);

    // Results signed by a key other than the one the requester trusts: none counts.
    let mut impostor = worker.clone();
    let stranger = EcdsaSigningKey::generate().expect("rng").verifying_key();
    impostor.verification_key = stranger.to_pem();
    impostor.verifying_key = stranger;
    let report = run(
        Arc::clone(&client),
        Arc::new(impostor),
        config(Mode::Sync, "echo-result"),
        quiet.clone(),
    )
    .await;
    assert_eq!(report.completed, 0);
    assert_eq!(report.errors.get("signature"), Some(&40), "{report:?}");

    // Orders the worker refuses count as errors by code (an unknown workload is code 9).
    let report =
        run(Arc::clone(&client), Arc::new(worker), config(Mode::Async, "no-such-workload"), quiet)
            .await;
    assert_eq!(report.completed, 0);
    assert_eq!(report.errors.get("code 9"), Some(&40), "{report:?}");
    node.shutdown().await;
}
