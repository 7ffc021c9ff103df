//! Requests built to be expensive: the worst bodies that fit within the listener's body limit,
//! sent over raw HTTP while honest requesters work, each answer timed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One kind of expensive request.
#[derive(Debug, Clone)]
pub struct HostileBody {
    /// What it is built to cost.
    pub name: &'static str,
    /// The HTTP body.
    pub body: Vec<u8>,
}

/// The envelope and fixed params of a work order, with `items` as `inData`.
fn submit_body(in_data: &str, extra: &str) -> String {
    format!(
        concat!(
            r#"{{"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 1, "params": {{"#,
            r#""responseTimeoutMSecs": 6000, "payloadFormat": "JSON-RPC", "#,
            r#""workOrderId": "{id}", "workerId": "{id}", "workloadId": "6563686f2d726573756c74", "#,
            r#""requesterId": "{id}", "workerEncryptionKey": "ab", "dataEncryptionAlgorithm": "AES-GCM-256", "#,
            r#""encryptedSessionKey": "ab", "sessionKeyIv": "ab", "requesterNonce": "ab", "#,
            r#""encryptedRequestHash": "ab", {extra}"inData": [{in_data}]}}}}"#
        ),
        id = "ab".repeat(32),
        extra = extra,
        in_data = in_data,
    )
}

/// The worst requests that fit in `max_bytes` (the listener's body limit) with at most
/// `max_items` data items, each refused by the listener only after the work it was built for.
pub fn hostile_bodies(max_bytes: usize, max_items: usize) -> Vec<HostileBody> {
    let budget = max_bytes.saturating_sub(2048);
    let mut bodies = Vec::new();

    // The most items allowed, each as large as the limit lets them be and all distinct, except
    // that the last repeats the first with its keys in another order: uniqueness is decided only
    // at the end, and only by comparing whole objects.
    let items = max_items.max(2);
    let per_item = (budget / items).saturating_sub(64).max(1);
    let mut in_data = String::with_capacity(budget);
    for i in 0..items - 1 {
        let data: String = format!("{i:08}").chars().cycle().take(per_item).collect();
        let _ = write!(in_data, r#"{{"index": {i}, "data": "{data}"}}, "#);
    }
    let first: String = format!("{:08}", 0).chars().cycle().take(per_item).collect();
    let _ = write!(in_data, r#"{{"data": "{first}", "index": 0}}"#);
    bodies.push(HostileBody {
        name: "most items, duplicate last",
        body: submit_body(&in_data, "").into_bytes(),
    });

    // As many tiny items as fit: far over the item limit.
    let tiny = r#"{"index": 0, "data": "a"}, "#;
    let count = budget / tiny.len();
    let mut in_data = tiny.repeat(count);
    in_data.truncate(in_data.len() - 2);
    bodies.push(HostileBody {
        name: "items beyond the limit",
        body: submit_body(&in_data, "").into_bytes(),
    });

    // One long escaped string, then a key given twice.
    let escaped = r"\u0041".repeat(budget / 6 - 16);
    let extra = format!(r#""padding": "{escaped}", "workOrderId": "ab", "#);
    bodies.push(HostileBody {
        name: "escaped string, duplicate key",
        body: submit_body(r#"{"index": 0, "data": "a"}"#, &extra).into_bytes(),
    });

    // Nesting as deep as the parser allows, over and over.
    let nest = format!("{}{}, ", "[".repeat(120), "]".repeat(120));
    let mut nested = nest.repeat(budget / nest.len());
    nested.truncate(nested.len() - 2);
    let body = format!(
        r#"{{"jsonrpc": "2.0", "method": "WorkerLookUp", "id": 1, "params": {{"workerType": [{nested}]}}}}"#
    );
    bodies.push(HostileBody { name: "deep nesting, repeated", body: body.into_bytes() });
    bodies
}

/// What the listener made of one kind of hostile request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostileReport {
    /// Bytes per request.
    pub bytes: usize,
    /// Requests answered.
    pub answered: u64,
    /// Requests that failed at the transport.
    pub failed: u64,
    /// The slowest answer, in milliseconds (from the first byte sent to the last received).
    pub max_ms: f64,
    /// The mean answer time, in milliseconds.
    pub mean_ms: f64,
    /// The answer's first 160 bytes, as text.
    pub answer: String,
}

/// Sends each body in a loop from `senders` connections per kind until `stop` is set; returns
/// what each kind was answered and how quickly.
pub async fn send_hostile(
    addr: SocketAddr,
    bodies: Vec<HostileBody>,
    senders: usize,
    stop: Arc<AtomicBool>,
) -> BTreeMap<&'static str, HostileReport> {
    let mut tasks = Vec::new();
    for body in bodies {
        let body = Arc::new(body);
        for _ in 0..senders.max(1) {
            let (body, stop) = (Arc::clone(&body), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut report =
                    HostileReport { bytes: body.body.len(), ..HostileReport::default() };
                let mut total = 0.0;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match raw_post(addr, &body.body, Duration::from_secs(60)).await {
                        Ok(answer) => {
                            let ms = started.elapsed().as_secs_f64() * 1e3;
                            report.answered += 1;
                            total += ms;
                            report.max_ms = report.max_ms.max(ms);
                            let text = String::from_utf8_lossy(&answer);
                            report.answer = text.chars().take(160).collect();
                        }
                        Err(_) => report.failed += 1,
                    }
                }
                report.mean_ms =
                    if report.answered > 0 { total / report.answered as f64 } else { 0.0 };
                (body.name, report)
            }));
        }
    }
    let mut reports: BTreeMap<&'static str, HostileReport> = BTreeMap::new();
    for task in tasks {
        let Ok((name, report)) = task.await else { continue };
        let entry = reports.entry(name).or_default();
        let before = entry.answered as f64 * entry.mean_ms;
        entry.bytes = report.bytes;
        entry.answered += report.answered;
        entry.failed += report.failed;
        entry.max_ms = entry.max_ms.max(report.max_ms);
        entry.mean_ms = if entry.answered > 0 {
            (before + report.answered as f64 * report.mean_ms) / entry.answered as f64
        } else {
            0.0
        };
        if !report.answer.is_empty() {
            entry.answer = report.answer;
        }
    }
    reports
}

/// Why a raw request failed.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("no answer in time")]
    Timeout,
    /// The answer is not HTTP/1.1 with a Content-Length.
    #[error("malformed HTTP answer")]
    Malformed,
}

/// One `POST /` with `body` on a fresh connection; the answer's body.
///
/// # Errors
/// [`RawError`].
pub async fn raw_post(
    addr: SocketAddr,
    body: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, RawError> {
    tokio::time::timeout(timeout, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        // A server may answer and close before the body is all sent (a refusal): what it
        // answered still counts.
        let sent = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body).await
        };
        let write_error = sent.await.err();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer).await;
        if answer.is_empty() {
            read?;
            if let Some(error) = write_error {
                return Err(error.into());
            }
        }
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or(RawError::Malformed)?;
        Ok(answer.split_off(split + 4))
    })
    .await
    .map_err(|_| RawError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_bodies_fit_the_limit_and_are_json_where_meant() {
        let bodies = hostile_bodies(8 << 20, 1024);
        assert_eq!(bodies.len(), 4);
        for body in &bodies {
            assert!(body.body.len() <= 8 << 20, "{}: {} bytes", body.name, body.body.len());
            assert!(
                body.body.len() > 7 << 20,
                "{}: {} bytes: too small to be the worst",
                body.name,
                body.body.len()
            );
        }
        // The duplicate-item body is valid JSON with exactly the item limit.
        let value: serde_json::Value = serde_json::from_slice(&bodies[0].body).expect("json");
        assert_eq!(value["params"]["inData"].as_array().expect("array").len(), 1024);
        let tiny: serde_json::Value = serde_json::from_slice(&bodies[1].body).expect("json");
        assert!(tiny["params"]["inData"].as_array().expect("array").len() > 100_000);
    }
}
