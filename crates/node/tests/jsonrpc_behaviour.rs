//! The listener's behaviour table (wire spec §1) over raw HTTP against a real node on loopback:
//! every method's success shape, every error code and message, the bare-error shape, HTTP status
//! and Content-Type, and bad input that must not bring the server down.

use std::net::SocketAddr;
use std::time::Duration;

use afallon_crypto::{EcdsaSigningKey, RsaPublicKey, sha256};
use afallon_node::{Node, NodeConfig, RunningNode};
use afallon_proto::protection;
use afallon_proto::requester::{InputProtection, PendingResult, WorkOrderBuilder};
use afallon_proto::{
    ReceiptCreate, ReceiptUpdate, WorkOrderRequest, WorkOrderResult, WorkerRecord,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const WORKER_ID: &str = "0b03616a46ea9cf574f3f8eedc93a62c691a60dbd3783427c0243bacfe5bba94";

struct TestNode {
    node: RunningNode,
    _dir: tempfile::TempDir,
}

async fn start(configure: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir.path());
    config.insecure_simulation = true;
    config.processors_per_worker = 2;
    configure(&mut config);
    TestNode { node: Node::start(config).await.expect("node starts"), _dir: dir }
}

struct HttpReply {
    status: u16,
    content_type: Option<String>,
    body: String,
}

impl HttpReply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection, read to the end.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> HttpReply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let content_type = head.lines().find_map(|line| {
        line.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned())
    });
    HttpReply { status, content_type, body: body.to_owned() }
}

async fn rpc(node: &TestNode, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "id": 11, "params": params}).to_string();
    let reply =
        http(node.node.local_addr(), "POST", "/", Some("application/json"), body.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    reply.json()
}

fn assert_error(reply: &Value, code: i64, message: &str) {
    assert_eq!(reply["jsonrpc"], json!("2.0"), "{reply}");
    assert_eq!(reply["id"], json!(11), "{reply}");
    assert_eq!(reply["error"]["code"], json!(code), "{reply}");
    assert_eq!(reply["error"]["message"], json!(message), "{reply}");
}

fn assert_bare_error(reply: &Value, message: &str) {
    assert_eq!(reply, &json!({"error": {"code": 2, "message": message}}), "{reply}");
}

async fn worker_record(node: &TestNode) -> WorkerRecord {
    let reply = rpc(node, "WorkerRetrieve", json!({"workerId": WORKER_ID})).await;
    serde_json::from_value(reply["result"].clone()).expect("a worker record")
}

async fn work_order(
    node: &TestNode,
    workload: &str,
    input: &str,
    signer: Option<&EcdsaSigningKey>,
) -> (WorkOrderRequest, PendingResult) {
    let record = worker_record(node).await;
    let key = RsaPublicKey::from_pem(&record.details.worker_type_data.encryption_key).expect("key");
    let mut builder =
        WorkOrderBuilder::new(WORKER_ID, &key, afallon_crypto::OaepHash::Sha1, workload)
            .expect("builder");
    builder.input(input.as_bytes(), InputProtection::Session).expect("input");
    builder.build(signer).expect("build")
}

async fn wait_result(node: &TestNode, work_order_id: &str) -> Value {
    for _ in 0..500 {
        let reply = rpc(node, "WorkOrderGetResult", json!({"workOrderId": work_order_id})).await;
        if reply["error"]["code"] != json!(5) {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no result for {work_order_id}");
}

fn open(pending: &PendingResult, reply: &Value, record: &WorkerRecord) -> Vec<String> {
    let result: WorkOrderResult =
        serde_json::from_value(reply["result"].clone()).expect("a result");
    pending
        .open(&result, &record.details.worker_type_data.verification_key)
        .expect("verifies and decrypts")
        .into_iter()
        .map(|(_, data)| String::from_utf8(data).expect("utf-8"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_registry_methods() {
    let node = start(|_| {}).await;
    let reply = rpc(&node, "WorkerLookUp", json!({"workerType": 1})).await;
    assert_eq!(
        reply["result"],
        json!({"totalCount": 1, "lookupTag": WORKER_ID, "ids": [WORKER_ID]})
    );
    let reply = rpc(&node, "WorkerLookUp", json!({"workerType": 2})).await;
    assert_eq!(reply["result"], json!({"totalCount": 0, "lookupTag": "", "ids": []}));
    let reply = rpc(&node, "WorkerLookUp", json!({"organizationId": "aabbcc1234ddeeffaabbcc1234ddeeffaabbcc1234ddeeffaabbcc1234ddeeff"})).await;
    assert_eq!(reply["result"]["totalCount"], json!(1));
    // WorkerLookUpNext works (it was broken in Avalon): nothing after the only worker.
    let reply =
        rpc(&node, "WorkerLookUpNext", json!({"workerType": 1, "lookUpTag": WORKER_ID})).await;
    assert_eq!(reply["result"], json!({"totalCount": 0, "lookupTag": "", "ids": []}));
    let reply = rpc(&node, "WorkerLookUpNext", json!({"workerType": 1, "lookUpTag": "00"})).await;
    assert_eq!(reply["result"]["ids"], json!([WORKER_ID]));

    let reply = rpc(&node, "WorkerRetrieve", json!({"workerId": WORKER_ID})).await;
    let keys: Vec<&str> =
        reply["result"].as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys, ["workerType", "organizationId", "applicationTypeId", "details", "status"]);
    assert_eq!(reply["result"]["status"], json!(1));
    assert_eq!(reply["result"]["details"]["workOrderPayloadFormats"], json!("JSON-RPC"));
    let reply = rpc(&node, "WorkerRetrieve", json!({"workerId": "ab"})).await;
    assert_error(&reply, 2, "Worker Id not found in the database. Hence invalid parameter");
    assert!(reply["error"].get("data").is_none());
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_submission_and_results() {
    let node = start(|_| {}).await;
    let record = worker_record(&node).await;
    let (request, pending) = work_order(&node, "echo-result", "Hello", None).await;
    let reply = rpc(&node, "WorkOrderSubmit", serde_json::to_value(&request).expect("json")).await;
    assert_error(
        &reply,
        5,
        "Work order is computing. Please query for WorkOrderGetResult to view the result",
    );
    assert_eq!(reply["error"]["data"], json!({"workOrderId": request.work_order_id}));

    let reply = wait_result(&node, &request.work_order_id).await;
    assert_eq!(open(&pending, &reply, &record), ["RESULT: Hello"]);
    let keys: Vec<&str> =
        reply["result"].as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "workOrderId",
            "workloadId",
            "workerId",
            "requesterId",
            "workerNonce",
            "workerSignature",
            "outData"
        ]
    );

    // A replay is refused, whatever else it carries.
    let reply = rpc(&node, "WorkOrderSubmit", serde_json::to_value(&request).expect("json")).await;
    assert_error(
        &reply,
        2,
        "Work order id already exists in the database. Hence invalid parameter",
    );
    assert_eq!(reply["error"]["data"], json!({"workOrderId": request.work_order_id}));

    let reply = rpc(&node, "WorkOrderGetResult", json!({"workOrderId": "ffff"})).await;
    assert_error(&reply, 2, "Work order Id not found in the database. Hence invalid parameter");
    assert_eq!(reply["error"]["data"], json!({"workOrderId": "ffff"}));

    let (mut other, _) = work_order(&node, "echo-result", "x", None).await;
    other.worker_id = "abcd".into();
    let reply = rpc(&node, "WorkOrderSubmit", serde_json::to_value(&other).expect("json")).await;
    assert_error(&reply, 2, "worker abcd doesn't exists");

    let (mut bad_signature, _) = work_order(&node, "echo-result", "x", None).await;
    bad_signature.requester_signature = Some("not base64!".into());
    let reply =
        rpc(&node, "WorkOrderSubmit", serde_json::to_value(&bad_signature).expect("json")).await;
    assert_error(&reply, 2, "Invalid data format for requesterSignature");
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_errors_are_mapped() {
    let node = start(|_| {}).await;
    let (request, _) = work_order(&node, "no-such-workload", "x", None).await;
    rpc(&node, "WorkOrderSubmit", serde_json::to_value(&request).expect("json")).await;
    let reply = wait_result(&node, &request.work_order_id).await;
    // The enclave's -12 is code 9 on WorkOrderGetResult.
    assert_error(&reply, 9, "Workload cannot be processed by this worker");
    let (mut tampered, _) = work_order(&node, "echo-result", "x", None).await;
    tampered.requester_nonce = "00".repeat(16);
    rpc(&node, "WorkOrderSubmit", serde_json::to_value(&tampered).expect("json")).await;
    let reply = wait_result(&node, &tampered.work_order_id).await;
    assert_error(&reply, 2, "Decryption of client request hash failed. Request is tampered.");
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_and_busy() {
    // No processing here (a listener-only node) and room for two orders.
    let node = start(|c| {
        c.processors_per_worker = 0;
        c.max_orders = 2;
    })
    .await;
    let (first, _) = work_order(&node, "echo-result", "1", None).await;
    let (second, _) = work_order(&node, "echo-result", "2", None).await;
    let (third, _) = work_order(&node, "echo-result", "3", None).await;
    for request in [&first, &second] {
        let reply =
            rpc(&node, "WorkOrderSubmit", serde_json::to_value(request).expect("json")).await;
        assert_eq!(reply["error"]["code"], json!(5));
    }
    let reply = rpc(&node, "WorkOrderGetResult", json!({"workOrderId": first.work_order_id})).await;
    assert_error(&reply, 5, "Work order result is yet to be updated");
    assert_eq!(reply["error"]["data"], json!({"workOrderId": first.work_order_id}));
    let reply = rpc(&node, "WorkOrderSubmit", serde_json::to_value(&third).expect("json")).await;
    assert_error(&reply, 8, "Work order handler is busy updating the result");
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_mode_answers_with_the_result() {
    let node = start(|c| c.sync_mode = true).await;
    let record = worker_record(&node).await;
    let (request, pending) = work_order(&node, "echo-result", "sync", None).await;
    let reply = rpc(&node, "WorkOrderSubmit", serde_json::to_value(&request).expect("json")).await;
    assert_eq!(open(&pending, &reply, &record), ["RESULT: sync"]);
    // The sync path does not special-case the enclave's -12: it is code 1 there.
    let (request, _) = work_order(&node, "no-such-workload", "x", None).await;
    let reply = rpc(&node, "WorkOrderSubmit", serde_json::to_value(&request).expect("json")).await;
    assert_error(&reply, 1, "Workload cannot be processed by this worker");
    node.node.shutdown().await;
}

/// A node that stops lets the requests in flight finish before its workers stop: synchronous
/// submissions in flight are answered with their results, not "pending" after the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_submissions_in_flight_get_their_results_at_shutdown() {
    let node = start(|c| {
        c.sync_mode = true;
        c.sync_timeout = Duration::from_secs(5);
    })
    .await;
    let addr = node.node.local_addr();
    let mut bodies = Vec::new();
    for _ in 0..120 {
        let (request, _) = work_order(&node, "echo-result", "in flight", None).await;
        bodies.push(
            json!({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 11, "params": request})
                .to_string(),
        );
    }
    let (first, mut answered) = tokio::sync::mpsc::channel::<()>(1);
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let first = first.clone();
            tokio::spawn(async move {
                let reply =
                    http(addr, "POST", "/", Some("application/json"), body.as_bytes()).await;
                let _ = first.try_send(());
                reply
            })
        })
        .collect();
    // Once the first answer is in, the rest are in flight: stop the node.
    answered.recv().await.expect("an answer");
    let TestNode { node, _dir } = node;
    node.shutdown().await;
    let (mut results, mut pending, mut unanswered) = (0, 0, 0);
    for task in tasks {
        let reply = task.await.expect("task");
        if reply.status != 200 {
            unanswered += 1;
            continue;
        }
        let reply = reply.json();
        if reply.get("result").is_some() {
            results += 1;
        } else if reply["error"]["code"] == json!(5) {
            pending += 1;
        }
    }
    println!("at shutdown: {results} results, {pending} pending, {unanswered} not accepted");
    assert_eq!(pending, 0, "no submission in flight is left pending");
    assert!(results > 1, "submissions were in flight");
}

/// A synchronous submission that runs out of time is answered "pending", and from then on it is
/// durable: a node restarted on the same data processes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_submission_answered_pending_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |processors| {
        let mut config = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir.path());
        config.insecure_simulation = true;
        config.sync_mode = true;
        config.sync_timeout = Duration::from_millis(50);
        config.processors_per_worker = processors;
        config
    };
    // No processors: nothing can finish the order in time.
    let node = TestNode { node: Node::start(config(0)).await.expect("starts"), _dir: tempdir() };
    let record = worker_record(&node).await;
    let (request, pending) = work_order(&node, "echo-result", "later", None).await;
    let reply = rpc(&node, "WorkOrderSubmit", serde_json::to_value(&request).expect("json")).await;
    assert_error(
        &reply,
        5,
        "Work order is computing. Please query for WorkOrderGetResult to view the result",
    );
    let get = json!({"workOrderId": request.work_order_id});
    let reply = rpc(&node, "WorkOrderGetResult", get.clone()).await;
    assert_error(&reply, 5, "Work order result is yet to be updated");
    node.node.shutdown().await;

    let node = TestNode { node: Node::start(config(1)).await.expect("restarts"), _dir: tempdir() };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reply = loop {
        let reply = rpc(&node, "WorkOrderGetResult", get.clone()).await;
        if reply.get("result").is_some() || std::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(open(&pending, &reply, &record), ["RESULT: later"]);
    node.node.shutdown().await;
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_failures_are_bare_errors() {
    let node = start(|_| {}).await;
    let addr = node.node.local_addr();
    let send = |body: String| async move {
        http(addr, "POST", "/any/path", Some("application/json"), body.as_bytes()).await
    };
    let reply = send(json!({"jsonrpc": "2.0", "method": "EncryptionKeyGet", "id": 1, "params": {"workerId": "ab"}}).to_string()).await;
    assert_eq!(reply.status, 200);
    assert_bare_error(&reply.json(), "Invalid data format for method or method not supported");
    let reply = send(
        json!({"jsonrpc": "2.0", "method": "WorkerLookUp", "id": 1, "params": {}}).to_string(),
    )
    .await;
    assert_bare_error(&reply.json(), "Empty params in the request");
    let reply = send(
        json!({"jsonrpc": "2.0", "method": "WorkerLookUp", "id": "1", "params": {"workerType": 1}})
            .to_string(),
    )
    .await;
    assert_bare_error(&reply.json(), "Invalid data format for id");
    let reply = send(
        json!({"jsonrpc": "2.0", "method": "WorkerLookUp", "id": 1, "params": {"workerType": 9}})
            .to_string(),
    )
    .await;
    assert_bare_error(&reply.json(), "WorkType should be an Integer of range 1-3");
    let reply = send(json!({"jsonrpc": "2.0", "method": "WorkOrderGetResult", "id": 1, "params": {"workOrderId": "zz"}}).to_string()).await;
    assert_bare_error(&reply.json(), "Invalid work order Id");
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_and_bad_bytes_get_clear_errors_and_the_server_stays_up() {
    let node = start(|c| c.limits.max_request_bytes = 4096).await;
    let addr = node.node.local_addr();

    let reply = http(addr, "GET", "/", None, b"").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["error"]["message"], json!("Only POST request is supported"));

    let reply = http(addr, "POST", "/", Some("text/plain"), b"{}").await;
    assert_eq!(reply.status, 415);
    assert_eq!(
        reply.json()["error"],
        json!({"code": 1, "message": "UNKNOWN_ERROR: unknown message encoding"})
    );

    let reply = http(addr, "POST", "/", Some("application/json"), &vec![b'x'; 5000]).await;
    assert_eq!(reply.status, 413);
    assert_bare_error(&reply.json(), "Request body is too large: the limit is 4096 bytes");

    let reply =
        http(addr, "POST", "/", Some("application/json"), b"{\"jsonrpc\": \"2.0\", \"id\": ").await;
    assert_eq!(reply.status, 200);
    let error = reply.json();
    assert_eq!(error["error"]["code"], json!(2));
    assert!(
        error["error"]["message"].as_str().expect("message").starts_with("Improper Json request: ")
    );
    assert!(error.get("id").is_none());

    let garbage: Vec<u8> = (0..2000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let reply = http(addr, "POST", "/", Some("application/json"), &garbage).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("Improper Json request")
    );

    // Still serving.
    let reply = http(addr, "GET", "/healthz", None, b"").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    let reply = rpc(&node, "WorkerLookUp", json!({"workerType": 1})).await;
    assert_eq!(reply["result"]["totalCount"], json!(1));
    node.node.shutdown().await;
}

/// What the enclave would refuse, the listener refuses first, and stores nothing: more data
/// items than the limit, and a key given twice (the listener's JSON would keep the last one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_refuses_what_the_enclave_would() {
    let node = start(|_| {}).await;
    let addr = node.node.local_addr();
    let (request, _) = work_order(&node, "echo-result", "x", None).await;
    let envelope = |params: Value| json!({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 11, "params": params});

    let mut params = serde_json::to_value(&request).expect("json");
    let item = params["inData"][0].clone();
    params["inData"] = Value::Array(
        (0..1025)
            .map(|i| {
                let mut item = item.clone();
                item["index"] = json!(i);
                item
            })
            .collect(),
    );
    let body = envelope(params).to_string();
    let reply = http(addr, "POST", "/", Some("application/json"), body.as_bytes()).await;
    assert_bare_error(&reply.json(), "Too many data items: 1025, the limit is 1024");

    let body = envelope(serde_json::to_value(&request).expect("json")).to_string();
    let twice = body.replacen(
        r#""params":{"#,
        &format!(r#""params":{{"workOrderId":"{}","#, "cd".repeat(32)),
        1,
    );
    assert_ne!(twice, body, "the key was added");
    let reply = http(addr, "POST", "/", Some("application/json"), twice.as_bytes()).await;
    let message = reply.json()["error"]["message"].as_str().expect("message").to_owned();
    assert!(
        message.starts_with(r#"Improper Json request: duplicate key "workOrderId""#),
        "{message}"
    );

    // Neither was stored under either id; the order itself is still new.
    for id in [request.work_order_id.clone(), "cd".repeat(32)] {
        let reply = rpc(&node, "WorkOrderGetResult", json!({"workOrderId": id})).await;
        assert_ne!(reply["error"]["code"], json!(5), "{reply}");
        assert!(reply.get("result").is_none(), "{reply}");
    }
    let reply = rpc(&node, "WorkOrderSubmit", serde_json::to_value(&request).expect("json")).await;
    assert_eq!(reply["error"]["code"], json!(5), "{reply}");
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let node = start(|_| {}).await;
    let addr = node.node.local_addr();
    assert_eq!(http(addr, "GET", "/readyz", None, b"").await.status, 200);
    let (request, _) = work_order(&node, "echo-result", "m", None).await;
    rpc(&node, "WorkOrderSubmit", serde_json::to_value(&request).expect("json")).await;
    wait_result(&node, &request.work_order_id).await;
    let metrics = http(addr, "GET", "/metrics", None, b"").await;
    assert_eq!(metrics.status, 200);
    for line in [
        "afallon_workorders_submitted_total 1",
        "afallon_workorders_completed_total{outcome=\"success\"} 1",
        "afallon_workorders{state=\"finished\"} 1",
        "afallon_tee_simulated 1",
    ] {
        assert!(metrics.body.lines().any(|l| l == line), "missing {line:?} in\n{}", metrics.body);
    }
    // POST on these paths is JSON-RPC, as on any path.
    let reply = http(
        addr,
        "POST",
        "/metrics",
        Some("application/json"),
        br#"{"jsonrpc": "2.0", "method": "WorkerLookUp", "id": 1, "params": {"workerType": 1}}"#,
    )
    .await;
    assert_eq!(reply.json()["result"]["totalCount"], json!(1));
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_create_update_retrieve_and_look_up() {
    let node = start(|_| {}).await;
    let record = worker_record(&node).await;
    let requester = EcdsaSigningKey::generate().expect("rng");
    let (request, _) = work_order(&node, "echo-result", "receipt me", Some(&requester)).await;
    rpc(&node, "WorkOrderSubmit", serde_json::to_value(&request).expect("json")).await;
    let result = wait_result(&node, &request.work_order_id).await;
    assert!(result.get("result").is_some());

    let mut create = ReceiptCreate {
        work_order_id: Some(request.work_order_id.clone()),
        worker_service_id: Some(WORKER_ID.into()),
        worker_id: Some(WORKER_ID.into()),
        requester_id: Some(request.requester_id.clone()),
        receipt_create_status: Some(0),
        work_order_request_hash: Some(protection::encode_base64(
            afallon_proto::request_hash(&request).as_bytes(),
        )),
        requester_generated_nonce: Some("1234567".into()),
        requester_signature: None,
        signature_rules: Some("SHA-256/SECP256K1".into()),
        receipt_verification_key: Some(requester.verifying_key().to_pem()),
    };
    create.requester_signature = Some(protection::sign_digest_base64(
        &requester,
        &afallon_proto::receipt_create_digest(&create),
    ));

    let mut forged = create.clone();
    forged.work_order_request_hash = Some(protection::encode_base64(sha256(b"x").as_bytes()));
    let reply =
        rpc(&node, "WorkOrderReceiptCreate", serde_json::to_value(&forged).expect("json")).await;
    assert_error(&reply, 2, "Work order request hash does not match");
    let mut unsigned = create.clone();
    unsigned.requester_signature = Some(protection::sign_digest_base64(
        &EcdsaSigningKey::generate().expect("rng"),
        &sha256(b"x"),
    ));
    let reply =
        rpc(&node, "WorkOrderReceiptCreate", serde_json::to_value(&unsigned).expect("json")).await;
    assert_error(&reply, 2, "Receipt create requester signature does not match");
    let mut missing = create.clone();
    missing.work_order_id = Some("abab".into());
    let reply =
        rpc(&node, "WorkOrderReceiptCreate", serde_json::to_value(&missing).expect("json")).await;
    assert_error(&reply, 2, "Work order id does not exist, hence invalid request");

    let reply =
        rpc(&node, "WorkOrderReceiptCreate", serde_json::to_value(&create).expect("json")).await;
    assert_error(&reply, 0, "Receipt created successfully");
    let reply =
        rpc(&node, "WorkOrderReceiptCreate", serde_json::to_value(&create).expect("json")).await;
    assert_error(&reply, 2, "Work order receipt already exists. Hence invalid parameter");

    // The worker adds its signed "processed" update, announced to it by the store once the
    // receipt exists (the listener holds no worker keys).
    let mut reply = json!(null);
    for _ in 0..200 {
        reply =
            rpc(&node, "WorkOrderReceiptRetrieve", json!({"workOrderId": request.work_order_id}))
                .await;
        if reply["result"]["receiptCurrentStatus"] == json!(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(reply["result"]["receiptCurrentStatus"], json!(2), "{reply}");
    assert_eq!(reply["result"]["requesterGeneratedNonce"], json!("1234567"));
    let reply = rpc(
        &node,
        "WorkOrderReceiptUpdateRetrieve",
        json!({"workOrderId": request.work_order_id, "updateIndex": 4294967296u64}),
    )
    .await;
    assert_eq!(reply["result"]["updateType"], json!(2));
    assert_eq!(reply["result"]["updateCount"], json!(1));
    let worker_update: ReceiptUpdate =
        serde_json::from_value(reply["result"].clone()).expect("update");
    protection::verify_digest_base64(
        "updateSignature",
        &record.details.worker_type_data.verification_key,
        &afallon_proto::receipt_update_digest(&worker_update),
        worker_update.update_signature.as_deref().expect("signed"),
    )
    .expect("signed by the worker");

    // The requester completes it, with the hash of the stored response.
    let response_json = result.to_string();
    let _ = response_json;
    let mut completed = ReceiptUpdate {
        work_order_id: Some(request.work_order_id.clone()),
        updater_id: Some(afallon_proto::updater_id(&requester.verifying_key().to_pem())),
        update_type: Some(1),
        update_data: worker_update.update_data.clone(),
        update_signature: None,
        signature_rules: Some("SHA-256/SECP256K1".into()),
        receipt_verification_key: Some(requester.verifying_key().to_pem()),
    };
    completed.update_signature = Some(protection::sign_digest_base64(
        &requester,
        &afallon_proto::receipt_update_digest(&completed),
    ));
    let mut wrong_data = completed.clone();
    wrong_data.update_data = Some("00".into());
    let reply =
        rpc(&node, "WorkOrderReceiptUpdate", serde_json::to_value(&wrong_data).expect("json"))
            .await;
    assert_error(&reply, 2, "Receipt update data does not match the work order response");
    let reply =
        rpc(&node, "WorkOrderReceiptUpdate", serde_json::to_value(&completed).expect("json")).await;
    assert_error(&reply, 0, "Receipt updated successfully");
    let reply =
        rpc(&node, "WorkOrderReceiptUpdate", serde_json::to_value(&completed).expect("json")).await;
    assert_error(&reply, 2, "Receipt update status is set to completed, No further update allowed");

    let reply = rpc(
        &node,
        "WorkOrderReceiptUpdateRetrieve",
        json!({"workOrderId": request.work_order_id, "updateIndex": 2}),
    )
    .await;
    assert_eq!(reply["result"]["updateType"], json!(1));
    assert_eq!(reply["result"]["updateCount"], json!(2));
    let reply = rpc(
        &node,
        "WorkOrderReceiptUpdateRetrieve",
        json!({"workOrderId": request.work_order_id, "updateIndex": 3}),
    )
    .await;
    assert_error(
        &reply,
        2,
        "Update index is larger than total update count. Hence invalid parameter",
    );
    let reply = rpc(
        &node,
        "WorkOrderReceiptUpdateRetrieve",
        json!({"workOrderId": request.work_order_id, "updateIndex": 0}),
    )
    .await;
    assert_error(
        &reply,
        2,
        "Update index should be positive non-zero number. Hence invalid parameter",
    );
    let reply =
        rpc(&node, "WorkOrderReceiptRetrieve", json!({"workOrderId": request.work_order_id})).await;
    assert_eq!(reply["result"]["receiptCurrentStatus"], json!(1));
    let reply = rpc(&node, "WorkOrderReceiptRetrieve", json!({"workOrderId": "abcd"})).await;
    assert_error(
        &reply,
        2,
        "Work order receipt for work order id abcd not found in the database. Hence invalid parameter",
    );

    let reply = rpc(&node, "WorkOrderReceiptLookUp", json!({"workerId": WORKER_ID})).await;
    assert_eq!(
        reply["result"],
        json!({"totalCount": 1, "lookupTag": request.work_order_id, "ids": [request.work_order_id]})
    );
    let reply = rpc(&node, "WorkOrderReceiptLookUp", json!({"requesterId": "ff"})).await;
    assert_eq!(reply["result"]["totalCount"], json!(0));
    let reply = rpc(
        &node,
        "WorkOrderReceiptLookUpNext",
        json!({"workerId": WORKER_ID, "lastLookUpTag": request.work_order_id}),
    )
    .await;
    assert_eq!(reply["result"]["totalCount"], json!(0));
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_orders_and_worker_keys_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |processors| {
        let mut config = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir.path());
        config.insecure_simulation = true;
        config.processors_per_worker = processors;
        config
    };
    let first = TestNode {
        node: Node::start(config(0)).await.expect("start"),
        _dir: tempfile::tempdir().expect("tempdir"),
    };
    let record = worker_record(&first).await;
    let (request, pending) = work_order(&first, "echo-result", "queued", None).await;
    rpc(&first, "WorkOrderSubmit", serde_json::to_value(&request).expect("json")).await;
    first.node.shutdown().await;

    let second = TestNode {
        node: Node::start(config(1)).await.expect("restart"),
        _dir: tempfile::tempdir().expect("tempdir"),
    };
    let again = worker_record(&second).await;
    let (a, b) = (&record.details.worker_type_data, &again.details.worker_type_data);
    assert_eq!((&a.verification_key, &a.encryption_key), (&b.verification_key, &b.encryption_key));
    let reply = wait_result(&second, &request.work_order_id).await;
    assert_eq!(open(&pending, &reply, &again), ["RESULT: queued"]);
    second.node.shutdown().await;
}

#[tokio::test]
async fn a_node_without_a_tee_does_not_pretend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir.path());
    assert!(!config.insecure_simulation, "simulation is never the library default");
    let error = Node::start(config).await.expect_err("refuses to run without a TEE");
    assert!(error.to_string().contains("simulated TEE"), "{error}");
}
