//! Replay after purge: a captured, signed wallet deposit sent again, byte for byte, after its order
//! fell out of retention, is refused, and the balance does not move; the purged order says that
//! it was purged.

mod common;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use afallon_client::{ClientError, InputProtection};
use afallon_crypto::EcdsaSigningKey;
use common::Service;
use serde_json::{Value, json};

/// POSTs `body` to the service as it is, on a connection of its own, and returns the JSON-RPC
/// answer.
fn post(service: &Service, body: &[u8]) -> Value {
    let address = service.url.strip_prefix("http://").expect("an http:// URL");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body).expect("write");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read");
    let reply = String::from_utf8(reply).expect("utf-8");
    let (_, json) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"))
}

/// Runs a wallet or echo order to its result and returns its one output.
async fn run(service: &Service, workload: &str, input: &str) -> String {
    let outputs = service.order(workload, &[(input, InputProtection::Session)], None).await;
    outputs.into_iter().next().expect("an output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_replayed_after_its_purge_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("afallon-data");
    let service = Service::start(&data, &["--max-orders", "2"]);
    let client = service.client();
    let worker = service.worker().await;

    // The deposit, signed by its requester, as an eavesdropper captures it.
    let requester = EcdsaSigningKey::generate().expect("rng");
    let mut builder = worker.work_order("simple-wallet").expect("builder");
    builder.input(b"deposit erin 100", InputProtection::Session).expect("input");
    let (request, pending) = builder.build(Some(&requester)).expect("build");
    let id = request.work_order_id.clone();
    let captured =
        json!({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 7, "params": request})
            .to_string()
            .into_bytes();
    assert_eq!(post(&service, &captured)["error"]["code"], 5, "accepted");
    let result = client
        .wait_result(&id, Duration::from_millis(10), Duration::from_secs(60))
        .await
        .expect("result");
    let outputs = pending.open(&result, &worker.verification_key).expect("opens");
    assert_eq!(outputs[0].1, b"WALLET RESULT: erin::100");

    // Two more orders: the second pushes the deposit out of retention.
    assert_eq!(run(&service, "echo-result", "one").await, "RESULT: one");
    assert_eq!(run(&service, "echo-result", "two").await, "RESULT: two");
    match client.result(&id).await {
        Err(ClientError::Rpc(error)) => {
            assert_eq!(error.code, 2);
            assert!(error.message.contains("purged"), "{}", error.message);
            eprintln!("the purged deposit answers: {}", error.message);
        }
        other => panic!("the deposit should read as purged: {other:?}"),
    }

    // The captured body, byte for byte: refused as a duplicate, and nothing ran.
    let answer = post(&service, &captured);
    eprintln!("the replay answers: {answer}");
    assert_eq!(answer["error"]["code"], 2, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "Work order id already exists in the database. Hence invalid parameter"
    );
    assert_eq!(run(&service, "simple-wallet", "deposit erin 1").await, "WALLET RESULT: erin::101");

    // And after a restart.
    service.kill();
    let service = Service::start(&data, &["--max-orders", "2"]);
    assert_eq!(post(&service, &captured)["error"]["code"], 2);
    assert_eq!(run(&service, "simple-wallet", "deposit erin 1").await, "WALLET RESULT: erin::102");
}
