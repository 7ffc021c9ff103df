//! A listener that fails a call without saying whether it stored the order (as nginx answers 502
//! when the listener it chose dies with the request): `Client::submit_surely` asks for the order
//! before it submits again, so that an order is neither lost nor submitted twice.

use std::sync::{Arc, Mutex};

use afallon_client::{Client, ClientError, Submission};
use afallon_proto::{DUPLICATE_WORK_ORDER, UNKNOWN_WORK_ORDER, WorkOrderRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the fake listener answers: an HTTP status and a body.
type Answer = (u16, String);

fn rpc_error(code: i64, message: &str) -> Answer {
    let body = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": message}});
    (200, body.to_string())
}

fn bad_gateway() -> Answer {
    (502, "<html><body>502 Bad Gateway</body></html>".into())
}

/// A listener answering the calls it gets with `answers`, in order; returns its URL and the
/// methods it was called with.
async fn listener(answers: Vec<Answer>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut answers = answers.into_iter();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 1 << 16];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let body = request.split("\r\n\r\n").nth(1).unwrap_or("");
            let method = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v["method"].as_str().map(str::to_owned))
                .unwrap_or_default();
            log.lock().expect("log").push(method);
            let (status, body) = answers.next().unwrap_or_else(|| rpc_error(-32000, "no more"));
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        }
    });
    (url, seen)
}

fn request() -> WorkOrderRequest {
    serde_json::from_value(json!({
        "responseTimeoutMSecs": 6000, "payloadFormat": "JSON-RPC", "resultUri": "", "notifyUri": "",
        "workOrderId": "0a", "workerId": "0b", "workloadId": "0c", "requesterId": "0d",
        "workerEncryptionKey": "", "dataEncryptionAlgorithm": "AES-GCM-256",
        "encryptedSessionKey": "00", "sessionKeyIv": "00", "requesterNonce": "00",
        "encryptedRequestHash": "00", "inData": [{"index": 0, "data": "AA=="}]
    }))
    .expect("a request")
}

fn seen(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    log.lock().expect("log").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_lost_with_its_listener_is_submitted_again() {
    let pending = rpc_error(5, "Work order is computing");
    let (url, log) = listener(vec![bad_gateway(), rpc_error(2, UNKNOWN_WORK_ORDER), pending]).await;
    let client = Client::new(&url).expect("client");
    assert_eq!(client.submit_surely(&request()).await.expect("pending"), Submission::Pending);
    assert_eq!(seen(&log), ["WorkOrderSubmit", "WorkOrderGetResult", "WorkOrderSubmit"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_stored_before_its_listener_died_is_not_submitted_again() {
    let (url, log) = listener(vec![bad_gateway(), rpc_error(5, "pending")]).await;
    let client = Client::new(&url).expect("client");
    assert_eq!(client.submit_surely(&request()).await.expect("pending"), Submission::Pending);
    assert_eq!(seen(&log), ["WorkOrderSubmit", "WorkOrderGetResult"]);
    // Stored between the look and the second submission: its duplicate is the first, pending.
    let (url, log) = listener(vec![
        bad_gateway(),
        rpc_error(2, UNKNOWN_WORK_ORDER),
        rpc_error(2, DUPLICATE_WORK_ORDER),
    ])
    .await;
    let client = Client::new(&url).expect("client");
    assert_eq!(client.submit_surely(&request()).await.expect("pending"), Submission::Pending);
    assert_eq!(seen(&log).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_not_retried() {
    let (url, log) = listener(vec![rpc_error(2, DUPLICATE_WORK_ORDER)]).await;
    let client = Client::new(&url).expect("client");
    let error = client.submit_surely(&request()).await.expect_err("a duplicate id");
    assert!(matches!(&error, ClientError::Rpc(e) if e.is_duplicate_id()), "{error}");
    assert_eq!(seen(&log), ["WorkOrderSubmit"], "a first-time duplicate is another's order");
}
