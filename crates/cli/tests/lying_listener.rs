//! A listener that lies: a proxy between the requester and the real `afallon` node replaces
//! orders on their way or hands back the results of other orders. The requester SDK and
//! `afallon submit` must report an error every time, never a result.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afallon_client::{Client, ClientError, InputProtection, Policy, ResultError};
use afallon_crypto::EcdsaSigningKey;
use afallon_proto::{WorkOrderRequest, WorkOrderResult};
use axum::body::Bytes;
use axum::extract::State;
use common::{BIN, Service, WORKER};
use serde_json::{Value, json};

const HEART: &str = "Data: 25 10 1 67 102 125 1 95 5 10 1 11 36 1";

/// What the proxy does to the orders that pass through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lie {
    /// Nothing: it forwards every call as it is.
    None,
    /// It replaces each submitted order with its own under the same ids (workOrderId, workerId,
    /// workloadId, requesterId): its own session key, its own input, a plaintext output slot.
    Substitute,
    /// It answers every result with the result of an order of its own, as stored.
    SwapResult,
    /// As `SwapResult`, with the result's workOrderId and requesterId set to the asked order's.
    SwapRelabelled,
}

struct Proxy {
    lie: Lie,
    upstream: Client,
    /// The proxy's own finished order, whose result it hands out for others.
    decoy: WorkOrderResult,
    /// The worker as the proxy sees it (it needs only the public encryption key).
    worker: afallon_client::Worker,
    /// What the worker answered the proxy's substitutes, for the test to look at.
    substitutes: Mutex<Vec<String>>,
    /// The requesterId of each order submitted through the proxy.
    requesters: Mutex<HashMap<String, String>>,
}

impl Proxy {
    async fn start(lie: Lie, service: &Service) -> (String, Arc<Self>) {
        let upstream = service.client();
        let worker = upstream
            .verify_worker(
                &afallon_proto::worker_id_from_name(WORKER),
                &Policy::new().insecure_allow_simulation(),
            )
            .await
            .expect("the proxy reads the worker");
        let mut builder = worker.work_order("heart-disease-eval").expect("builder");
        builder.input(HEART.as_bytes(), InputProtection::Session).expect("input");
        let (decoy, _) = builder.build(None).expect("build");
        let decoy = upstream
            .submit_and_wait(&decoy, Duration::from_millis(10), Duration::from_secs(60))
            .await
            .expect("decoy result");
        let proxy = Arc::new(Self {
            lie,
            upstream,
            decoy,
            worker,
            substitutes: Mutex::new(Vec::new()),
            requesters: Mutex::new(HashMap::new()),
        });
        let router = axum::Router::new().fallback(handle).with_state(Arc::clone(&proxy));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (url, proxy)
    }

    /// The proxy's own order under the victim's ids.
    fn substitute(&self, params: &Value) -> Value {
        let victim: WorkOrderRequest =
            serde_json::from_value(params.clone()).expect("a work order");
        let mut builder = self
            .worker
            .work_order("heart-disease-eval")
            .expect("builder")
            .work_order_id(&victim.work_order_id)
            .requester_id(&victim.requester_id);
        // Someone else's data, in a slot whose output comes back in plaintext.
        builder
            .input(b"Data: 80 1 4 200 400 1 2 70 1 6 3 3 7 1", InputProtection::Session)
            .expect("input");
        builder.output(InputProtection::Plain).expect("slot");
        let (forged, _) = builder.build(None).expect("build");
        assert_eq!(forged.workload_id, victim.workload_id, "same workload id");
        assert_eq!(forged.worker_id, victim.worker_id, "same worker id");
        serde_json::to_value(forged).expect("json")
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let lie = self.lie;
        if method == "WorkOrderSubmit" {
            let id = params["workOrderId"].as_str().unwrap_or("").to_owned();
            let requester = params["requesterId"].as_str().unwrap_or("").to_owned();
            self.requesters.lock().expect("lock").insert(id, requester);
        }
        match method {
            "WorkOrderSubmit" if lie == Lie::Substitute => {
                let answer = self.upstream.call(method, self.substitute(&params)).await;
                if let Ok(result) = &answer {
                    self.substitutes.lock().expect("lock").push(result.to_string());
                }
                answer
            }
            "WorkOrderGetResult" if lie == Lie::Substitute => {
                let answer = self.upstream.call(method, params).await;
                if let Ok(result) = &answer {
                    self.substitutes.lock().expect("lock").push(result.to_string());
                }
                answer
            }
            "WorkOrderSubmit" | "WorkOrderGetResult"
                if matches!(lie, Lie::SwapResult | Lie::SwapRelabelled) =>
            {
                let asked = params["workOrderId"].as_str().unwrap_or("").to_owned();
                let _ = self.upstream.call(method, params).await;
                let mut result = self.decoy.clone();
                if lie == Lie::SwapRelabelled {
                    let requester = self.requesters.lock().expect("lock").get(&asked).cloned();
                    result.requester_id = requester.unwrap_or_default();
                    result.work_order_id = asked;
                }
                Ok(serde_json::to_value(result).expect("json"))
            }
            _ => self.upstream.call(method, params).await,
        }
    }
}

async fn handle(State(proxy): State<Arc<Proxy>>, body: Bytes) -> String {
    let request: Value = serde_json::from_slice(&body).expect("JSON-RPC from the requester");
    let id = request["id"].clone();
    let method = request["method"].as_str().unwrap_or("").to_owned();
    let answer = proxy.call(&method, request["params"].clone()).await;
    match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(ClientError::Rpc(error)) => json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": error.code, "message": error.message, "data": error.data}}),
        Err(other) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": 1, "message": other.to_string()}})
        }
    }
    .to_string()
}

/// One heart-disease order through `url`, opened by the SDK.
async fn order_through(
    url: &str,
    service: &Service,
    signer: Option<&EcdsaSigningKey>,
) -> Result<Vec<(i64, Vec<u8>)>, ClientError> {
    let client = Client::new(url).expect("client");
    let worker = client
        .verify_worker(&afallon_proto::worker_id_from_name(WORKER), &service.policy())
        .await?;
    let mut builder = worker.work_order("heart-disease-eval")?;
    builder.input(HEART.as_bytes(), InputProtection::Session)?;
    let (request, pending) = builder.build(signer)?;
    let result = client
        .submit_and_wait(&request, Duration::from_millis(10), Duration::from_secs(60))
        .await?;
    Ok(pending.open_with_key(&result, &worker.verifying_key)?)
}

/// `afallon submit` through `url`: (exit success, stdout, stderr).
fn submit_through(url: &str, service: &Service, extra: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(BIN)
        .args(["submit", "-w", WORKER, "-l", "heart-disease-eval", "-i", HEART, "--url", url])
        .args(extra)
        .current_dir(service.data_dir.parent().expect("parent"))
        .output()
        .expect("the afallon binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn every_lie_is_caught(sync: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let args: &[&str] = if sync { &["--sync"] } else { &[] };
    let service = Service::start(&dir.path().join("afallon-data"), args);
    let signer = EcdsaSigningKey::generate().expect("rng");

    // Through an honest proxy everything works: the failures below are the lies' doing.
    let (url, _) = Proxy::start(Lie::None, &service).await;
    let outputs = order_through(&url, &service, Some(&signer)).await.expect("honest proxy");
    assert_eq!(outputs.len(), 1);
    let (ok, stdout, stderr) = submit_through(&url, &service, &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("risk of heart disease"), "{stdout}");

    for lie in [Lie::Substitute, Lie::SwapResult, Lie::SwapRelabelled] {
        let (url, proxy) = Proxy::start(lie, &service).await;
        for signed in [None, Some(&signer)] {
            for _ in 0..3 {
                let error = order_through(&url, &service, signed)
                    .await
                    .expect_err("a lying listener's answer is refused");
                let expected = match lie {
                    Lie::Substitute => {
                        matches!(error, ClientError::Result(ResultError::OtherRequest))
                    }
                    Lie::SwapResult => {
                        matches!(error, ClientError::Result(ResultError::WrongWorkOrder(_)))
                    }
                    _ => matches!(error, ClientError::Result(ResultError::Signature(_))),
                };
                assert!(expected, "{lie:?}: {error}");
            }
        }
        for extra in [&[][..], &["--sign"][..]] {
            let (ok, stdout, stderr) = submit_through(&url, &service, extra);
            assert!(!ok, "{lie:?} {extra:?}: afallon submit accepted a lie: {stdout}");
            assert_eq!(stdout, "", "{lie:?}: nothing is printed as a result");
            assert!(stderr.contains("verifying the result"), "{lie:?}: {stderr}");
        }
        if lie == Lie::Substitute {
            // The worker did run the substitutes, and their output was readable by the proxy:
            // the requester's check is what stopped them.
            let seen = proxy.substitutes.lock().expect("lock").clone();
            assert!(
                seen.iter().any(|r| r.contains(r#""encryptedDataEncryptionKey":"-""#)),
                "the worker answered the substitutes in plaintext: {seen:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lies_are_refused_in_async_mode() {
    every_lie_is_caught(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lies_are_refused_in_sync_mode() {
    every_lie_is_caught(true).await;
}
