//! Pool and singleton results checked by an independent client: `scripts/avalon-verify-result`,
//! written in Python from the wire spec (§3.8, §3.10) with the `ecdsa` package Avalon's clients
//! use, verifies a pool result in two steps and a singleton's in one; a one-step check of a pool
//! result against the pool's key fails, and so do an altered output and another requester nonce.
//!
//! Needs the venv `scripts/services` makes (`AFALLON_TOOLS`, python3 with `ecdsa`); without it
//! each test prints `SKIPPED: <test> needs <tool>` and passes, unless
//! `AFALLON_REQUIRE_SERVICES=1` (CI), which makes that a failure.

#[path = "../../tidy/tests/support/services.rs"]
mod services;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use afallon_attest::Platform;
use afallon_crypto::{OaepHash, RsaPublicKey};
use afallon_enclave::{
    Enclave, EnclaveClient, EnclaveConfig, Processed, Role, WpeClient, sim_kme_measurement,
    sim_measurement, sim_wpe_measurement,
};
use afallon_platform::SimPlatform;
use afallon_proto::WorkOrderResult;
use afallon_proto::requester::{InputProtection, PendingResult, WorkOrderBuilder};
use afallon_workloads::{NoIo, Registry};
use serde_json::{Value, json};

const POOL: &str = "pool-1";
const SCRIPT: &str = "scripts/avalon-verify-result";
/// The order's inputs, one of each protection.
const INPUTS: [(&str, InputProtection); 4] = [
    ("session", InputProtection::Session),
    ("plain", InputProtection::Plain),
    ("own key", InputProtection::DataKey),
    ("sealed key", InputProtection::SealedKey),
];
/// Its output slots, one of each protection too, so that the output items carry every field the
/// response hash covers (`encryptedDataEncryptionKey` and `iv` as well). Each has the index of the
/// input of the same protection: a `DataKey` output shares its index with the `DataKey` input
/// (their keys must not be taken for one another).
const OUTPUTS: [InputProtection; 4] = [
    InputProtection::Session,
    InputProtection::Plain,
    InputProtection::DataKey,
    InputProtection::SealedKey,
];

// ---------------------------------------------------------------------------------------------
// The Python verifier, and what a missing one means.

/// A python3 that imports `ecdsa`: the venv's, else the one on PATH (as `deploy.rs` finds its
/// validators).
fn python_with_ecdsa() -> Option<PathBuf> {
    [Some(services::tools_dir().join("venv/bin/python3")), services::on_path("python3")]
        .into_iter()
        .flatten()
        .find(|python| {
            Command::new(python)
                .args(["-c", "import ecdsa"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
}

fn verifier(test: &str) -> Option<PathBuf> {
    services::tool(test, "python3 with ecdsa (the venv of scripts/services)", python_with_ecdsa())
}

/// What the script said: whether it exited 0, and its one line of output.
#[derive(Debug)]
struct Verdict {
    success: bool,
    line: String,
}

/// Runs the script on `{result, verificationKey, requesterNonce}` with `args`.
fn verify(python: &Path, result: &Value, key: &str, nonce: &str, args: &[&str]) -> Verdict {
    let input = json!({"result": result, "verificationKey": key, "requesterNonce": nonce});
    let mut child = Command::new(python)
        .arg(services::root().join(SCRIPT))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} {SCRIPT}: {e}", python.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write the input");
    let output = child.wait_with_output().expect("the script ends");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line of output, got {stdout:?} (stderr: {stderr})");
    let verdict = Verdict { success: output.status.success(), line: lines[0].to_owned() };
    let failed = verdict.line.starts_with("FAILED: ");
    assert_eq!(verdict.success, !failed, "exit status and line disagree: {verdict:?} {stderr}");
    verdict
}

// ---------------------------------------------------------------------------------------------
// A pool and a singleton, in process (as `tests/pool.rs` and `tests/work_orders.rs` set them up).

/// A KME and one WPE registered with it, on one simulated TEE (in `dir`); the WPE's transport
/// key.
fn pool(dir: &std::path::Path) -> (EnclaveClient, WpeClient, Vec<u8>) {
    let registry = Registry::with_builtins();
    let kme_platform = Arc::new(SimPlatform::open(dir, sim_kme_measurement()).expect("platform"));
    let wpe_platform =
        Arc::new(SimPlatform::open(dir, sim_wpe_measurement(&registry)).expect("platform"));
    let kme = EnclaveClient::start_as(
        Arc::new(Enclave::new(kme_platform, Registry::with_builtins())),
        Role::Kme { import: None },
        EnclaveConfig::new(POOL),
        None,
        vec![],
    )
    .expect("the KME starts");
    let wpe = WpeClient::start(
        Arc::new(Enclave::new(wpe_platform as Arc<dyn Platform>, Registry::with_builtins())),
        EnclaveConfig::new(POOL),
        None,
        vec![],
    )
    .expect("the WPE starts");
    let nonce = kme.issue_nonce().expect("nonce");
    let attestation = wpe.attest(nonce.clone()).expect("attest");
    let wpe_key = attestation.transport_key.clone();
    let registered = kme.register_wpe(attestation, nonce).expect("registered");
    wpe.add_kme(registered).expect("added");
    (kme, wpe, wpe_key)
}

/// A singleton worker, signed up.
fn singleton() -> EnclaveClient {
    let registry = Registry::with_builtins();
    let platform = Arc::new(SimPlatform::ephemeral(sim_measurement(&registry)).expect("platform"));
    EnclaveClient::start(
        Arc::new(Enclave::new(platform as Arc<dyn Platform>, registry)),
        EnclaveConfig::new("singleton-worker-1"),
        None,
        vec![],
    )
    .expect("sign-up")
}

/// An echo order to `worker` (the KME for a pool): the request body, its requester nonce, and
/// what the requester keeps to open the result.
fn order(worker: &EnclaveClient) -> (Vec<u8>, String, PendingResult) {
    let record = &worker.worker_record().details.worker_type_data;
    let key = RsaPublicKey::from_pem(&record.encryption_key).expect("key");
    let mut builder =
        WorkOrderBuilder::new(worker.worker_id(), &key, OaepHash::Sha1, "echo-result")
            .expect("builder")
            .requester_id("alice");
    for (input, protection) in INPUTS {
        builder.input(input.as_bytes(), protection).expect("input");
    }
    for protection in OUTPUTS {
        builder.output(protection).expect("output slot");
    }
    let (request, pending) = builder.build(None).expect("build");
    let body = json!({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 3, "params": request});
    let nonce = body["params"]["requesterNonce"].as_str().expect("requesterNonce").to_owned();
    (body.to_string().into_bytes(), nonce, pending)
}

/// The JSON-RPC `result` object exactly as the worker answered it; checked to open with the
/// Rust requester code too, so that both clients are judging a good result.
fn result_of(processed: &Processed, pending: &PendingResult, key: &str) -> Value {
    assert_eq!(processed.error, None, "{}", processed.response);
    let response: Value = serde_json::from_str(&processed.response).expect("json");
    let result = response["result"].clone();
    let typed: WorkOrderResult = serde_json::from_value(result.clone()).expect("a result");
    let outputs = pending.open(&typed, key).expect("the Rust client verifies it");
    let texts: Vec<String> =
        outputs.into_iter().map(|(_, data)| String::from_utf8(data).expect("utf-8")).collect();
    let expected: Vec<String> =
        INPUTS.iter().map(|(input, _)| format!("RESULT: {input}")).collect();
    assert_eq!(texts, expected);
    result
}

fn verification_key(worker: &EnclaveClient) -> String {
    worker.worker_record().details.worker_type_data.verification_key.clone()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn pool_results_verify_in_two_steps_in_python_and_not_in_one() {
    let test = "pool_results_verify_in_two_steps_in_python_and_not_in_one";
    let Some(python) = verifier(test) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (kme, wpe, wpe_key) = pool(dir.path());
    let (raw, nonce, pending) = order(&kme);
    let keys = kme.pre_process(&wpe_key, &raw).expect("pre-processed");
    let (processed, _) = wpe.process(&raw, keys, &NoIo).expect("processed");
    let pool_key = verification_key(&kme);
    let result = result_of(&processed, &pending, &pool_key);
    assert!(result["extVerificationKey"].is_string(), "a pool result: {result}");
    // Output items with all four fields of the hash filled in, not only dataHash and data.
    assert!(
        result["outData"].as_array().expect("outData").iter().any(|item| {
            item["encryptedDataEncryptionKey"].as_str().is_some_and(|k| !k.is_empty())
                && item["iv"].as_str().is_some_and(|iv| !iv.is_empty())
        }),
        "an output under a data key of its own: {result}"
    );

    let verdict = verify(&python, &result, &pool_key, &nonce, &[]);
    assert_eq!(verdict.line, "two-step verified", "{verdict:?}");
    assert!(verdict.success);

    // The pool's key did not sign the result: one step against it fails.
    let one_step = verify(&python, &result, &pool_key, &nonce, &["--one-step-only"]);
    assert!(!one_step.success, "{one_step:?}");
    assert!(one_step.line.starts_with("FAILED: workerSignature"), "{one_step:?}");

    // An output altered: the per-order key's signature no longer covers it.
    let mut altered = result.clone();
    let data = altered["outData"][0]["data"].as_str().expect("data").to_owned();
    let flipped = if data.starts_with('A') { "B" } else { "A" };
    altered["outData"][0]["data"] = json!(format!("{flipped}{}", &data[1..]));
    let verdict = verify(&python, &altered, &pool_key, &nonce, &[]);
    assert!(!verdict.success, "{verdict:?}");
    assert!(verdict.line.starts_with("FAILED: workerSignature"), "{verdict:?}");

    // The per-order key is vouched for this request's nonce only.
    let other_nonce = format!("{nonce}00");
    let verdict = verify(&python, &result, &pool_key, &other_nonce, &[]);
    assert!(!verdict.success, "{verdict:?}");
    assert!(verdict.line.starts_with("FAILED: extVerificationKeySignature"), "{verdict:?}");

    // Another worker's key does not vouch for the per-order key.
    let stranger = verification_key(&singleton());
    let verdict = verify(&python, &result, &stranger, &nonce, &[]);
    assert!(!verdict.success, "{verdict:?}");
    assert!(verdict.line.starts_with("FAILED: extVerificationKeySignature"), "{verdict:?}");
}

#[test]
fn singleton_results_verify_in_one_step_in_python() {
    let test = "singleton_results_verify_in_one_step_in_python";
    let Some(python) = verifier(test) else { return };
    let worker = singleton();
    let (raw, nonce, pending) = order(&worker);
    let (processed, _) = worker.process(&raw, &NoIo).expect("processed");
    let key = verification_key(&worker);
    let result = result_of(&processed, &pending, &key);
    assert!(result.get("extVerificationKey").is_none(), "a singleton's result: {result}");

    let verdict = verify(&python, &result, &key, &nonce, &[]);
    assert_eq!(verdict.line, "one-step verified", "{verdict:?}");
    assert!(verdict.success);

    let mut altered = result.clone();
    altered["workerNonce"] = json!(format!("{}x", result["workerNonce"].as_str().expect("nonce")));
    let verdict = verify(&python, &altered, &key, &nonce, &[]);
    assert!(!verdict.success, "{verdict:?}");
    assert!(verdict.line.starts_with("FAILED: workerSignature"), "{verdict:?}");
}
