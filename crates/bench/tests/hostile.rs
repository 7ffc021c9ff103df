//! The bench's hostile requests against a real node: each is refused with a clear bare error
//! (code 2), and the node still serves honest orders afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use afallon_node::{Node, NodeConfig};
use afallon_proto::RequestLimits;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worst_requests_within_the_limits_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir.path());
    config.insecure_simulation = true;
    config.processors_per_worker = 1;
    let node = Node::start(config).await.expect("node starts");
    let addr = node.local_addr();

    let limits = RequestLimits::default();
    let expected = [
        ("most items, duplicate last", "Invalid data format for inData"),
        ("items beyond the limit", "Improper Json request: more than 65536 JSON values"),
        ("escaped string, duplicate key", r#"Improper Json request: duplicate key "workOrderId""#),
        ("deep nesting, repeated", "Improper Json request: more than 65536 JSON values"),
    ];
    let bodies = afallon_bench::hostile_bodies(limits.max_request_bytes, limits.max_data_items);
    assert_eq!(bodies.len(), expected.len());
    for (body, (name, message)) in bodies.iter().zip(expected) {
        assert_eq!(body.name, name);
        let answer = afallon_bench::raw_post(addr, &body.body, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let answer: Value = serde_json::from_slice(&answer).expect("a JSON answer");
        assert_eq!(answer["error"]["code"], 2, "{name}: {answer}");
        let got = answer["error"]["message"].as_str().expect("message");
        assert!(got.starts_with(message), "{name}: {got}");
    }

    // Still serving.
    let lookup =
        br#"{"jsonrpc": "2.0", "method": "WorkerLookUp", "id": 1, "params": {"workerType": 1}}"#;
    let answer =
        afallon_bench::raw_post(addr, lookup, Duration::from_secs(10)).await.expect("answer");
    let answer: Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(answer["result"]["totalCount"], 1, "{answer}");
    node.shutdown().await;
}
