//! The trusted core end to end, in process: requests built with the requester functions of the
//! proto crate go through the enclave's messages; results verify and decrypt; every tampering is
//! answered with the wire spec's code and message; a stateful workload's change takes effect only
//! when committed.

use std::sync::{Arc, OnceLock};

use afallon_attest::{
    Evidence, Measurement, Policy, ReportData, UnixTime, VerifyError, WorkerProof,
};
use afallon_crypto::{EcdsaSigningKey, OaepHash, RsaPublicKey, sha256};
use afallon_enclave::{
    Enclave, EnclaveClient, EnclaveConfig, Failure, PendingState, Processed, SealedState,
    sim_measurement,
};
use afallon_platform::SimPlatform;
use afallon_proto::requester::{InputProtection, PendingResult, WorkOrderBuilder};
use afallon_proto::{WorkOrderRequest, WorkOrderResult, protection};
use afallon_workloads::{NoIo, Registry};
use serde_json::{Value, json};

struct Worker {
    platform: Arc<SimPlatform>,
    enclave: EnclaveClient,
    sealed_keys: Vec<u8>,
}

/// Starts a worker called `name` in a new enclave on `platform`: signed up without sealed keys,
/// restored with them.
fn start(
    platform: &Arc<SimPlatform>,
    name: &str,
    sealed_keys: Option<&[u8]>,
    states: &[SealedState],
) -> Result<EnclaveClient, Failure> {
    let enclave = Enclave::new(Arc::clone(platform) as _, Registry::with_builtins());
    EnclaveClient::start(
        Arc::new(enclave),
        EnclaveConfig::new(name),
        sealed_keys.map(<[u8]>::to_vec),
        states.to_vec(),
    )
}

/// A new worker called `name` on `platform`, and its sealed keys.
fn sign_up(platform: &Arc<SimPlatform>, name: &str) -> (EnclaveClient, Vec<u8>) {
    let enclave = start(platform, name, None, &[]).expect("sign-up");
    let keys = enclave.sealed_keys().to_vec();
    (enclave, keys)
}

/// Processing as a host that runs each order once does it: the state change is committed at once.
trait Run {
    fn run(&self, raw: &[u8]) -> Processed;
    fn run_uncommitted(&self, raw: &[u8]) -> (Processed, Option<PendingState>);
}

impl Run for EnclaveClient {
    fn run(&self, raw: &[u8]) -> Processed {
        let (processed, pending) = self.run_uncommitted(raw);
        if let Some(pending) = pending {
            pending.commit().expect("commit");
        }
        processed
    }

    fn run_uncommitted(&self, raw: &[u8]) -> (Processed, Option<PendingState>) {
        self.process(raw, &NoIo).expect("the enclave answers")
    }
}

/// One signed-up worker shared by the tests (RSA key generation is slow).
fn worker() -> &'static Worker {
    static WORKER: OnceLock<Worker> = OnceLock::new();
    WORKER.get_or_init(|| {
        let registry = Registry::with_builtins();
        let platform =
            Arc::new(SimPlatform::ephemeral(sim_measurement(&registry)).expect("platform"));
        let (enclave, sealed_keys) = sign_up(&platform, "singleton-worker-1");
        Worker { platform, enclave, sealed_keys }
    })
}

fn worker_key() -> RsaPublicKey {
    RsaPublicKey::from_pem(
        &worker().enclave.worker_record().details.worker_type_data.encryption_key,
    )
    .expect("key")
}

fn verification_key() -> &'static str {
    &worker().enclave.worker_record().details.worker_type_data.verification_key
}

fn builder(workload: &str) -> WorkOrderBuilder {
    WorkOrderBuilder::new(worker().enclave.worker_id(), &worker_key(), OaepHash::Sha1, workload)
        .expect("builder")
}

fn body(request: &WorkOrderRequest) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 4711, "params": request})
        .to_string()
        .into_bytes()
}

fn result_of(processed: &Processed) -> WorkOrderResult {
    assert_eq!(processed.error, None, "{}", processed.response);
    let response: Value = serde_json::from_str(&processed.response).expect("json");
    assert_eq!(response["id"], json!(4711));
    serde_json::from_value(response["result"].clone()).expect("result")
}

fn run(
    workload: &str,
    inputs: &[(&str, InputProtection)],
    signer: Option<&EcdsaSigningKey>,
) -> Vec<String> {
    let mut builder = builder(workload);
    for (text, protection) in inputs {
        builder.input(text.as_bytes(), *protection).expect("input");
    }
    let (request, pending) = builder.build(signer).expect("build");
    open(&pending, &worker().enclave.run(&body(&request)))
}

fn open(pending: &PendingResult, processed: &Processed) -> Vec<String> {
    pending
        .open(&result_of(processed), verification_key())
        .expect("signature verifies and outputs decrypt")
        .into_iter()
        .map(|(_, data)| String::from_utf8(data).expect("utf-8"))
        .collect()
}

#[test]
fn echo_with_every_kind_of_input_round_trips() {
    let requester = EcdsaSigningKey::generate().expect("rng");
    let outputs = run(
        "echo-result",
        &[
            ("Hello", InputProtection::Session),
            ("in the clear", InputProtection::Plain),
            ("per-item secret", InputProtection::DataKey),
        ],
        Some(&requester),
    );
    assert_eq!(outputs, ["RESULT: Hello", "RESULT: in the clear", "RESULT: per-item secret"]);
}

#[test]
fn unsigned_requests_work_too() {
    assert_eq!(run("echo-result", &[("x", InputProtection::Session)], None), ["RESULT: x"]);
}

#[test]
fn result_shape_matches_avalon() {
    let mut b = builder("echo-result");
    b.input(b"Hello", InputProtection::Session).expect("input");
    let (request, _) = b.build(None).expect("build");
    let processed = worker().enclave.run(&body(&request));
    let response: Value = serde_json::from_str(&processed.response).expect("json");
    let result = &response["result"];
    let keys: Vec<&str> = result.as_object().expect("object").keys().map(String::as_str).collect();
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
    let item = &result["outData"][0];
    assert_eq!(item["dataHash"], json!(sha256(b"RESULT: Hello").to_hex_upper()));
    assert_eq!(item["encryptedDataEncryptionKey"], json!(""));
    assert_eq!(item["iv"], json!(""));
    // base64 of the request's digest and 16 random bytes: the signature binds the request.
    let nonce = result["workerNonce"].as_str().expect("nonce");
    assert_eq!(nonce.len(), 64);
    assert_eq!(
        afallon_proto::protection::worker_nonce_binding(nonce),
        Some(*afallon_proto::request_digest(&request).as_bytes())
    );
}

/// Processes `request` after `edit`, expecting an error response with `code` and `message`.
fn refused(request: &WorkOrderRequest, edit: impl FnOnce(&mut Value), code: i64, message: &str) {
    let mut value =
        json!({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 9, "params": request});
    edit(&mut value["params"]);
    let processed = worker().enclave.run(value.to_string().as_bytes());
    let response: Value = serde_json::from_str(&processed.response).expect("json");
    assert_eq!(response["error"]["code"], json!(code), "{}", processed.response);
    assert_eq!(response["error"]["message"], json!(message));
    assert_eq!(response["error"]["data"]["workOrderId"], json!(request.work_order_id));
    assert_eq!(response["id"], json!(9));
    assert_eq!(processed.error.as_ref().map(|e| e.code.code()), Some(code));
}

fn signed_request() -> WorkOrderRequest {
    let requester = EcdsaSigningKey::generate().expect("rng");
    let mut b = builder("echo-result");
    b.input(b"Hello", InputProtection::Session).expect("input");
    b.input(b"plain", InputProtection::Plain).expect("input");
    b.build(Some(&requester)).expect("build").0
}

/// A signed request as Avalon's SDK builds it: the request hash alone under the session key
/// (afallon's SDK seals a digest of the rest with it), one plaintext input.
fn avalon_signed_request() -> WorkOrderRequest {
    let requester = EcdsaSigningKey::generate().expect("rng");
    let mut b = builder("echo-result");
    b.input(b"plain", InputProtection::Plain).expect("input");
    let (mut request, _) = b.build(None).expect("build");
    let session_key = afallon_crypto::AesKey::generate().expect("rng");
    let iv = afallon_crypto::Iv::generate().expect("rng");
    request.encrypted_session_key =
        protection::wrap_session_key(&worker_key(), OaepHash::Sha1, &session_key).expect("wrap");
    request.session_key_iv = Some(protection::encode_iv(&iv));
    let hash = afallon_proto::request_hash(&request);
    request.encrypted_request_hash =
        protection::encrypt_request_hash(&session_key, &iv, &hash).expect("encrypt");
    request.requester_signature = Some(protection::sign_digest_base64(&requester, &hash));
    request.verifying_key = Some(requester.verifying_key().to_pem());
    request
}

#[test]
fn tampering_gets_the_wire_specs_codes_and_messages() {
    let request = signed_request();
    // Request hash: a hashed field changed after hashing.
    refused(
        &request,
        |p| p["requesterNonce"] = json!("ff".repeat(16)),
        -8,
        "Decryption of client request hash failed. Request is tampered.",
    );
    refused(
        &request,
        |p| p["encryptedRequestHash"] = json!("00".repeat(48)),
        -8,
        "Decryption of client request hash failed. Request is tampered.",
    );
    // inData: an encrypted item altered, or a plain one replaced.
    refused(
        &request,
        |p| {
            let data = p["inData"][0]["data"].as_str().expect("data").to_owned();
            let mut bytes = protection::decode_base64("data", &data).expect("b64");
            bytes[0] ^= 1;
            p["inData"][0]["data"] = json!(protection::encode_base64(&bytes));
        },
        -11,
        "Crypto Error (DecryptMessage): AES_GCM authentication failed, plaintext is not trustworthy",
    );
    refused(
        &request,
        |p| {
            p["inData"][1]["data"] = json!(protection::encode_base64(b"other"));
            p["inData"][1]["dataHash"] = json!(sha256(b"other").to_hex_upper());
        },
        -8,
        "Decryption of client request hash failed. Request is tampered.",
    );
    // dataHash: it no longer matches the plaintext.
    refused(
        &request,
        |p| p["inData"][1]["dataHash"] = json!(sha256(b"x").to_hex()),
        -8,
        "input data hash verification failed",
    );
    // requesterSignature: made by another key. For Avalon's requesters the signature check
    // says so; afallon's SDK seals the signature fields in its digest, so the request hash check
    // (which comes first) does.
    let impostor = EcdsaSigningKey::generate().expect("rng");
    let avalon = avalon_signed_request();
    // Unaltered, it runs (a result, no error).
    let _ = result_of(&worker().enclave.run(&body(&avalon)));
    for (request, message) in [
        (&avalon, "Signature verification of client request failed. Request is tampered."),
        (&request, "Decryption of client request hash failed. Request is tampered."),
    ] {
        refused(
            request,
            |p| p["verifyingKey"] = json!(impostor.verifying_key().to_pem()),
            -8,
            message,
        );
        refused(
            request,
            |p| p["requesterSignature"] = json!(protection::encode_base64(b"not DER")),
            -8,
            message,
        );
    }
    // Missing IV.
    refused(
        &request,
        |p| {
            p.as_object_mut().expect("object").remove("sessionKeyIv");
        },
        -8,
        "invalid request; failed to retrieve session key iv",
    );
    // No inputs; a truncated session key; unsupported formats.
    refused(&request, |p| p["inData"] = json!([]), -8, "Indata is empty");
    refused(
        &request,
        |p| {
            let key = p["encryptedSessionKey"].as_str().expect("hex").to_owned();
            p["encryptedSessionKey"] = json!(key[..key.len() - 2]);
        },
        -8,
        "Crypto Error (DecryptMessage): RSA ciphertext size is invalid",
    );
    refused(
        &request,
        |p| p["payloadFormat"] = json!("xml"),
        -8,
        "Unsupported payload format found in the input",
    );
    refused(
        &request,
        |p| p["dataEncryptionAlgorithm"] = json!("aes-gcm-256"),
        -8,
        "Unsupported dataEncryptionAlgorithm found in the request",
    );
}

#[test]
fn unknown_workload_is_code_minus_12() {
    let mut b = builder("no-such-workload");
    b.input(b"x", InputProtection::Session).expect("input");
    let (request, _) = b.build(None).expect("build");
    refused(&request, |_| {}, -12, "Workload cannot be processed by this worker");
    // The workloadId is hashed: changing it afterwards is tampering, caught before the look-up.
    refused(
        &request,
        |p| p["workloadId"] = json!("6563686f2d726573756c74"),
        -8,
        "Decryption of client request hash failed. Request is tampered.",
    );
}

#[test]
fn garbage_never_panics_and_is_answered() {
    for raw in [
        &b""[..],
        b"{",
        b"[]",
        b"{\"params\": 1}",
        b"{\"id\": 3, \"params\": {\"workOrderId\": \"ab\"}}",
        &[0xff; 64],
    ] {
        let processed = worker().enclave.run(raw);
        let response: Value = serde_json::from_str(&processed.response).expect("always JSON");
        assert!(response["error"]["code"].is_i64(), "{raw:?} -> {}", processed.response);
        assert!(processed.error.is_some());
    }
    let processed = worker().enclave.run(b"{\"id\": 3, \"params\": {\"workOrderId\": \"ab\"}}");
    assert!(
        processed.response.contains("invalid request; failed to retrieve workerId"),
        "{}",
        processed.response
    );
}

#[test]
fn oversized_requests_are_refused_clearly() {
    let big = vec![b' '; 9 << 20];
    let processed = worker().enclave.run(&big);
    let message = processed.error.expect("refused").message;
    assert!(message.starts_with("Work order request is too large"), "{message}");
}

#[test]
fn restarted_worker_keeps_its_keys() {
    let w = worker();
    let restarted =
        start(&w.platform, "singleton-worker-1", Some(&w.sealed_keys), &[]).expect("restore");
    let (a, b) = (
        &w.enclave.worker_record().details.worker_type_data,
        &restarted.worker_record().details.worker_type_data,
    );
    assert_eq!(a.verification_key, b.verification_key);
    assert_eq!(a.encryption_key, b.encryption_key);
    // And it decrypts what was encrypted for the original.
    let mut b = builder("echo-result");
    b.input(b"after restart", InputProtection::Session).expect("input");
    let (request, pending) = b.build(None).expect("build");
    assert_eq!(open(&pending, &restarted.run(&body(&request))), ["RESULT: after restart"]);
}

#[test]
fn sealed_keys_from_another_measurement_or_altered_are_refused() {
    let w = worker();
    let other = Arc::new(SimPlatform::ephemeral(Measurement::from([9; 32])).expect("platform"));
    assert!(start(&other, "singleton-worker-1", Some(&w.sealed_keys), &[]).is_err());
    let mut flipped = w.sealed_keys.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    assert!(start(&w.platform, "singleton-worker-1", Some(&flipped), &[]).is_err());
}

/// A wallet order to `enclave`, built from its worker record, processed at once: its output and
/// the sealed state it hands out.
fn wallet_order(enclave: &EnclaveClient, text: &str) -> (String, Option<SealedState>) {
    let record = &enclave.worker_record().details.worker_type_data;
    let key = RsaPublicKey::from_pem(&record.encryption_key).expect("key");
    let mut b = WorkOrderBuilder::new(enclave.worker_id(), &key, OaepHash::Sha1, "simple-wallet")
        .expect("builder");
    b.input(text.as_bytes(), InputProtection::Session).expect("input");
    let (request, pending) = b.build(None).expect("build");
    let processed = enclave.run(&body(&request));
    let outputs = pending.open(&result_of(&processed), &record.verification_key).expect("open");
    (String::from_utf8(outputs[0].1.clone()).expect("utf-8"), processed.state)
}

#[test]
fn wallet_state_survives_a_restart() {
    let registry = Registry::with_builtins();
    let dir = tempfile::tempdir().expect("tempdir");
    let platform =
        Arc::new(SimPlatform::open(dir.path(), sim_measurement(&registry)).expect("platform"));
    let (enclave, sealed_keys) = sign_up(&platform, "wallet-worker");
    let order = wallet_order;
    let (text, state) = order(&enclave, "deposit alice 100");
    assert_eq!(text, "WALLET RESULT: alice::100");
    let state = state.expect("the wallet hands out its sealed ledger");
    drop(enclave);

    // A new process: platform reopened from the same directory, enclave restored.
    drop(platform);
    let registry = Registry::with_builtins();
    let platform =
        Arc::new(SimPlatform::open(dir.path(), sim_measurement(&registry)).expect("platform"));
    let restarted =
        start(&platform, "wallet-worker", Some(&sealed_keys), std::slice::from_ref(&state))
            .expect("restore");
    assert_eq!(order(&restarted, "withdraw alice 30").0, "WALLET RESULT: alice::70");

    // A ledger sealed for the wallet cannot be passed off as another workload's state.
    let mut misfiled = state;
    misfiled.workload = "heart-disease-eval".into();
    assert!(start(&platform, "wallet-worker", Some(&sealed_keys), &[misfiled]).is_err());
}

#[test]
fn two_processes_serving_one_worker_run_each_order_on_the_last_committed_state() {
    let registry = Registry::with_builtins();
    let dir = tempfile::tempdir().expect("tempdir");
    let platform =
        Arc::new(SimPlatform::open(dir.path(), sim_measurement(&registry)).expect("platform"));
    let (first, sealed_keys) = sign_up(&platform, "wallet-worker");
    let second = start(&platform, "wallet-worker", Some(&sealed_keys), &[])
        .expect("the second process unseals the same keys");
    let order = |enclave: &EnclaveClient, text: &str| {
        let (text, state) = wallet_order(enclave, text);
        (text, state.expect("the wallet hands out its state"))
    };
    let (text, v1) = order(&first, "deposit alice 100");
    assert_eq!((text.as_str(), v1.version, v1.based_on), ("WALLET RESULT: alice::100", 1, 0));
    // Run on the second process before it loads the first's change: based on version 0, which
    // a store holding version 1 refuses; the host then loads version 1 and runs the order again.
    let (text, stale) = order(&second, "deposit alice 5");
    assert_eq!((text.as_str(), stale.based_on), ("WALLET RESULT: alice::5", 0));
    let second = start(&platform, "wallet-worker", Some(&sealed_keys), &[])
        .expect("the second process, as it was before that order");
    assert!(second.load_state(v1.clone()).expect("load"));
    assert!(!second.load_state(v1.clone()).expect("load"), "not newer: nothing to load");
    let (text, v2) = order(&second, "deposit alice 5");
    assert_eq!((text.as_str(), v2.version, v2.based_on), ("WALLET RESULT: alice::105", 2, 1));
    assert!(first.load_state(v2.clone()).expect("load"));
    assert!(!first.load_state(v1.clone()).expect("load"), "an older state is never loaded");
    assert_eq!(order(&first, "withdraw alice 5").0, "WALLET RESULT: alice::100");
    // An old state passed off as a newer version does not unseal (the version is sealed with it).
    let mut relabelled = v1.clone();
    relabelled.version = 7;
    assert!(
        first.load_state(relabelled.clone()).is_err(),
        "a rolled-back state relabelled as newer"
    );
    assert_eq!(order(&first, "deposit alice 1").0, "WALLET RESULT: alice::101");
    // A blob sealed for another workload is refused, and the state stays.
    let mut misfiled = v2;
    misfiled.workload = "heart-disease-eval".into();
    misfiled.version = 9;
    assert!(first.load_state(misfiled.clone()).is_err());
    assert_eq!(order(&first, "deposit alice 1").0, "WALLET RESULT: alice::102");
}

/// A wallet worker of its own, and a function that builds a wallet order for it.
fn wallet_worker() -> (EnclaveClient, impl Fn(&str) -> (Vec<u8>, PendingResult)) {
    let registry = Registry::with_builtins();
    let platform = Arc::new(SimPlatform::ephemeral(sim_measurement(&registry)).expect("platform"));
    let (enclave, _) = sign_up(&platform, "wallet-worker");
    let key =
        RsaPublicKey::from_pem(&enclave.worker_record().details.worker_type_data.encryption_key)
            .expect("key");
    let worker_id = enclave.worker_id().to_owned();
    let order = move |text: &str| {
        let mut b = WorkOrderBuilder::new(&worker_id, &key, OaepHash::Sha1, "simple-wallet")
            .expect("builder");
        b.input(text.as_bytes(), InputProtection::Session).expect("input");
        let (request, pending) = b.build(None).expect("build");
        (body(&request), pending)
    };
    (enclave, order)
}

fn wallet_output(
    enclave: &EnclaveClient,
    pending: &PendingResult,
    processed: &Processed,
) -> String {
    let verification = &enclave.worker_record().details.worker_type_data.verification_key;
    let outputs = pending.open(&result_of(processed), verification).expect("open");
    String::from_utf8(outputs[0].1.clone()).expect("utf-8")
}

#[test]
fn a_state_change_takes_effect_only_when_committed() {
    let (enclave, order) = wallet_worker();
    let (lost, lost_result) = order("deposit alice 100");
    let (processed, change) = enclave.run_uncommitted(&lost);
    assert_eq!(wallet_output(&enclave, &lost_result, &processed), "WALLET RESULT: alice::100");
    assert!(processed.state.is_some(), "the sealed ledger comes with the response");
    // Its completion lost: the run changes nothing.
    drop(change.expect("the wallet's change is pending"));
    let (next, next_result) = order("deposit alice 1");
    let processed = enclave.run(&next);
    assert_eq!(wallet_output(&enclave, &next_result, &processed), "WALLET RESULT: alice::1");

    let (won, won_result) = order("deposit alice 5");
    let (processed, change) = enclave.run_uncommitted(&won);
    assert_eq!(wallet_output(&enclave, &won_result, &processed), "WALLET RESULT: alice::6");
    change.expect("pending").commit().expect("commit");
    let (next, next_result) = order("deposit alice 1");
    let processed = enclave.run(&next);
    assert_eq!(wallet_output(&enclave, &next_result, &processed), "WALLET RESULT: alice::7");

    // Stateless workloads have nothing pending.
    let mut b = builder("echo-result");
    b.input(b"x", InputProtection::Session).expect("input");
    let (request, _) = b.build(None).expect("build");
    assert!(worker().enclave.run_uncommitted(&body(&request)).1.is_none());
}

#[test]
fn the_next_order_runs_on_the_state_the_pending_one_settles_to() {
    let (enclave, order) = wallet_worker();
    let (first, _) = order("deposit bob 100");
    let (second, second_result) = order("deposit bob 1");
    let (_, change) = enclave.run_uncommitted(&first);
    let change = change.expect("pending");
    std::thread::scope(|scope| {
        let (done, finished) = std::sync::mpsc::channel();
        let enclave = &enclave;
        scope.spawn(move || {
            let _ = done.send(enclave.run(&second));
        });
        // The second order waits while the first one's change is pending...
        assert!(finished.recv_timeout(std::time::Duration::from_millis(300)).is_err());
        // ...and runs on the state it settles to: rolled back here.
        drop(change);
        let processed = finished.recv().expect("the second order ran");
        assert_eq!(wallet_output(enclave, &second_result, &processed), "WALLET RESULT: bob::1");
    });
}

#[test]
fn worker_record_is_avalon_shaped_and_signed() {
    let record = worker().enclave.worker_record();
    let value = serde_json::to_value(record).expect("json");
    assert_eq!(value["workerType"], json!(1));
    assert_eq!(value["status"], json!(1));
    assert_eq!(value["details"]["workOrderPayloadFormats"], json!("JSON-RPC"));
    assert_eq!(value["details"]["keyEncryptionAlgorithm"], json!("RSA-OAEP-3072"));
    let data = &record.details.worker_type_data;
    assert!(
        data.encryption_key_signature
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
    );
    protection::verify_encryption_key_signature(
        &data.verification_key,
        &data.encryption_key,
        &data.encryption_key_signature,
    )
    .expect("encryptionKeySignature verifies");
    // Simulated: proofData stays empty for Avalon's clients, and the record says it is simulated.
    assert_eq!(data.proof_data, "");
    assert_eq!(data.proof_data_type, "afallon-sim");
    assert_eq!(
        worker().enclave.worker_id(),
        "0b03616a46ea9cf574f3f8eedc93a62c691a60dbd3783427c0243bacfe5bba94"
    );
}

#[test]
fn evidence_in_the_record_is_refused_by_default_and_binds_the_key_when_allowed() {
    let data = &worker().enclave.worker_record().details.worker_type_data;
    let proof = WorkerProof {
        proof_data_type: data.proof_data_type.clone(),
        proof_data: data.proof_data.clone(),
        enclave_certificate: data.enclave_certificate.clone(),
    };
    let evidence = Evidence::from_worker_proof(&proof).expect("the record carries evidence");
    let expected = ReportData::for_verification_key(&data.verification_key);
    assert_eq!(
        Policy::default().verify(&evidence, &expected, UnixTime::now()),
        Err(VerifyError::SimulationRefused)
    );
    let verified = Policy::new()
        .insecure_allow_simulation()
        .trust_simulation_key(worker().platform.attestation_key())
        .verify(&evidence, &expected, UnixTime::now())
        .expect("verifies when simulation is allowed");
    assert_eq!(verified.measurement, sim_measurement(&Registry::with_builtins()));
    let other_key = EcdsaSigningKey::generate().expect("rng").verifying_key().to_pem();
    assert_eq!(
        Policy::new().insecure_allow_simulation().verify(
            &evidence,
            &ReportData::for_verification_key(&other_key),
            UnixTime::now()
        ),
        Err(VerifyError::ReportDataMismatch)
    );
}

#[test]
fn heart_disease_through_the_enclave() {
    let outputs = run(
        "heart-disease-eval",
        &[("Data: 25 10 1 67 102 125 1 95 5 10 1 11 36 1", InputProtection::Session)],
        None,
    );
    assert_eq!(outputs, ["You have a 47% risk of heart disease"]);
}

#[test]
fn output_slots_choose_how_outputs_are_protected() {
    let mut b = builder("echo-result");
    b.input(b"first", InputProtection::Session).expect("input");
    b.input(b"second", InputProtection::Session).expect("input");
    b.input(b"third", InputProtection::Session).expect("input");
    b.output(InputProtection::DataKey).expect("slot");
    b.output(InputProtection::Plain).expect("slot");
    let (request, pending) = b.build(None).expect("build");
    let processed = worker().enclave.run(&body(&request));
    let result = result_of(&processed);
    // Slot 0: per-item key (hex key and IV copied); slot 1: plain ("-", data is base64 of the
    // plaintext); the third output has no slot and uses the session key.
    assert_eq!(
        result.out_data[0].encrypted_data_encryption_key,
        request.out_data[0].encrypted_data_encryption_key
    );
    assert_eq!(result.out_data[0].iv, request.out_data[0].iv);
    assert_eq!(result.out_data[1].encrypted_data_encryption_key.as_deref(), Some("-"));
    assert_eq!(
        result.out_data[1].data.as_deref(),
        Some(protection::encode_base64(b"RESULT: second").as_str())
    );
    assert_eq!(result.out_data[2].encrypted_data_encryption_key.as_deref(), Some(""));
    assert_eq!(open(&pending, &processed), ["RESULT: first", "RESULT: second", "RESULT: third"]);
}

#[test]
fn receipt_updates_are_signed_by_the_worker() {
    let enclave = &worker().enclave;
    let update = enclave.receipt_update("ab12", "{\"result\": 1}", false).expect("signed");
    assert_eq!(update.update_type, Some(2));
    assert_eq!(
        update.update_data.as_deref(),
        Some(sha256(b"{\"result\": 1}").to_hex_upper().as_str())
    );
    let digest = afallon_proto::receipt_update_digest(&update);
    protection::verify_digest_base64(
        "updateSignature",
        verification_key(),
        &digest,
        update.update_signature.as_deref().expect("signed"),
    )
    .expect("the worker's key signs its receipt updates");
    assert_eq!(enclave.receipt_update("ab12", "x", true).expect("signed").update_type, Some(3));
}

/// Avalon's format encrypts the request hash, whose plaintext anyone can compute, under the same
/// key and IV as every session-key item: its ciphertext gives away the keystream, and with it the
/// first 32 bytes of every such input and output. Items with sealed keys of their own give
/// nothing away, and the worker reads them as it reads any other.
#[test]
fn the_session_keystream_leaks_and_sealed_keys_do_not() {
    let secret = b"Data: 25 10 1 67 102 125 1 95 5 10 1 11 36 1";
    let xor = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| x ^ y).collect::<Vec<u8>>();
    for (protection, leaks) in
        [(InputProtection::Session, true), (InputProtection::SealedKey, false)]
    {
        let mut b = builder("heart-disease-eval");
        b.input(secret, protection).expect("input");
        if protection == InputProtection::SealedKey {
            b.output(InputProtection::SealedKey).expect("slot");
        }
        let (request, pending) = b.build(None).expect("build");
        // What anyone who sees the request can compute.
        let hash = afallon_proto::request_hash(&request);
        let sealed_hash =
            protection::decode_hex("h", &request.encrypted_request_hash).expect("hex");
        let keystream = xor(&sealed_hash[..32], hash.as_bytes());
        let input =
            protection::decode_base64("d", request.in_data[0].data.as_deref().expect("data"))
                .expect("base64");
        assert_eq!(xor(&input, &keystream) == secret[..32], leaks, "{protection:?} input");

        let processed = worker().enclave.run(&body(&request));
        let result = result_of(&processed);
        let output =
            protection::decode_base64("d", result.out_data[0].data.as_deref().expect("data"))
                .expect("base64");
        let opened = pending.open(&result, verification_key()).expect("opens");
        assert_eq!(opened[0].1, b"You have a 47% risk of heart disease");
        let known = opened[0].1.len().min(32);
        assert_eq!(
            xor(&output[..known], &keystream) == opened[0].1[..known],
            leaks,
            "{protection:?} output"
        );
    }
}

/// The host drops an output slot whose strings are empty: Avalon's request hash does not change,
/// and the secret output would fill the plaintext slot. The digest the requester sealed with the
/// hash does change, so the worker refuses the request before it runs anything.
#[test]
fn requests_altered_under_the_same_hash_are_refused_before_they_run() {
    let mut b = builder("echo-result");
    b.input(b"secret", InputProtection::Session).expect("input");
    b.input(b"public", InputProtection::Session).expect("input");
    b.output(InputProtection::Session).expect("secret slot");
    b.output(InputProtection::Plain).expect("public slot");
    let (request, pending) = b.build(None).expect("build");
    let mut dropped = request.clone();
    dropped.out_data.remove(0);
    assert_eq!(afallon_proto::request_hash(&dropped), afallon_proto::request_hash(&request));

    let processed = worker().enclave.run(&body(&dropped));
    let response: Value = serde_json::from_str(&processed.response).expect("json");
    assert_eq!(response["error"]["code"], json!(-8), "{response}");
    assert!(response.get("result").is_none(), "nothing ran, nothing leaked: {response}");

    // Unaltered, it runs, and a requester of Avalon's (32-byte hash) is still served.
    assert_eq!(open(&pending, &worker().enclave.run(&body(&request))).len(), 2);
}
