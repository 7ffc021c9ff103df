//! Worker pools at the enclave's boundary: a KME holding the pool's keys registers WPEs under its
//! policy and pre-processes their orders; pool results verify in two steps and not in one; the
//! pool's private keys never reach a WPE; WPEs outside the policy, replayed registrations and
//! other tenants' orders are refused.

use std::sync::{Arc, Mutex};

use afallon_attest::{Measurement, Platform, SimPlatform};
use afallon_crypto::{OaepHash, RsaPublicKey};
use afallon_enclave::{
    Enclave, EnclaveClient, EnclaveConfig, EnclaveLink, FailureKind, PreProcessed, Processed,
    Request, Response, Role, WpeClient, WpePolicy,
};
use afallon_proto::requester::{InputProtection, PendingResult, WorkOrderBuilder};
use afallon_proto::{WorkOrderResult, protection, response_hash};
use afallon_workloads::{NoIo, Registry};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

const POOL: &str = "pool-1";

fn measurement(byte: u8) -> Measurement {
    Measurement([byte; 32])
}

/// A link that keeps a copy of every message it carries, as JSON.
struct Recording {
    enclave: Enclave,
    seen: Mutex<Vec<String>>,
}

impl EnclaveLink for Recording {
    fn call(&self, request: Request) -> Response {
        let mut seen = self.seen.lock().expect("lock");
        seen.push(serde_json::to_string(&request).expect("json"));
        let response = self.enclave.call(request);
        seen.push(serde_json::to_string(&response).expect("json"));
        response
    }
}

struct Pool {
    kme_platform: Arc<SimPlatform>,
    kme: EnclaveClient,
    policy: WpePolicy,
}

impl Pool {
    /// A KME admitting WPEs measured `allowed` and attested by `wpe_platform`'s key.
    fn new(allowed: Measurement, wpe_platform: Arc<SimPlatform>) -> Self {
        let kme_platform = Arc::new(SimPlatform::ephemeral(measurement(0x4b)).expect("platform"));
        let policy = WpePolicy {
            measurements: vec![allowed.to_hex_upper()],
            allow_simulation: true,
            simulation_keys: vec![wpe_platform.attestation_key().to_pem()],
        };
        let enclave = Enclave::new(kme_platform.clone(), Registry::with_builtins());
        let kme = EnclaveClient::start_as(
            Arc::new(enclave),
            Role::Kme { policy: policy.clone(), import: None },
            EnclaveConfig::new(POOL),
            None,
            vec![],
        )
        .expect("the KME starts");
        Self { kme_platform, kme, policy }
    }

    /// A WPE on `platform`, started and registered with the KME, and the link that records what
    /// it receives.
    fn wpe(
        &self,
        platform: &Arc<SimPlatform>,
        tenant: Option<&str>,
    ) -> (WpeClient, Arc<Recording>) {
        let (wpe, link) = self.unregistered_wpe(platform, tenant);
        let nonce = self.kme.issue_nonce().expect("nonce");
        let attestation = wpe.attest(nonce.clone()).expect("attest");
        let kme_key = self.kme.register_wpe(attestation, nonce).expect("registered");
        wpe.add_kme(kme_key).expect("added");
        (wpe, link)
    }

    fn unregistered_wpe(
        &self,
        platform: &Arc<SimPlatform>,
        tenant: Option<&str>,
    ) -> (WpeClient, Arc<Recording>) {
        let enclave =
            Enclave::new(platform.clone() as Arc<dyn Platform>, Registry::with_builtins());
        let link = Arc::new(Recording { enclave, seen: Mutex::default() });
        let wpe = WpeClient::start(
            link.clone(),
            EnclaveConfig::new(POOL),
            tenant.map(str::to_owned),
            vec![],
        )
        .expect("the WPE starts");
        (wpe, link)
    }

    fn order(
        &self,
        requester: &str,
        inputs: &[(&str, InputProtection)],
    ) -> (Vec<u8>, PendingResult) {
        let record = &self.kme.worker_record().details.worker_type_data;
        let key = RsaPublicKey::from_pem(&record.encryption_key).expect("key");
        let mut builder =
            WorkOrderBuilder::new(self.kme.worker_id(), &key, OaepHash::Sha1, "echo-result")
                .expect("builder")
                .requester_id(requester);
        for (input, protection) in inputs {
            builder.input(input.as_bytes(), *protection).expect("input");
        }
        let (request, pending) = builder.build(None).expect("build");
        let body =
            json!({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 3, "params": request});
        (body.to_string().into_bytes(), pending)
    }

    /// Registers `wpe` with the KME `kme` as well.
    fn register_with(&self, kme: &EnclaveClient, wpe: &WpeClient) {
        let nonce = kme.issue_nonce().expect("nonce");
        let attestation = wpe.attest(nonce.clone()).expect("attest");
        let kme_key = kme.register_wpe(attestation, nonce).expect("registered");
        wpe.add_kme(kme_key).expect("added");
    }

    /// An order through the KME's pre-processing and the WPE.
    fn run(&self, wpe: &WpeClient, wpe_key: &[u8], raw: &[u8]) -> Processed {
        let keys = self.kme.pre_process(wpe_key, raw).expect("pre-processed");
        wpe.process(raw, keys, &NoIo).expect("processed").0
    }
}

fn result_of(processed: &Processed) -> WorkOrderResult {
    assert_eq!(processed.error, None, "{}", processed.response);
    let response: Value = serde_json::from_str(&processed.response).expect("json");
    serde_json::from_value(response["result"].clone()).expect("result")
}

fn transport_key(link: &Recording) -> Vec<u8> {
    // The WPE's attestation is the first thing it answered that carries its transport key.
    let seen = link.seen.lock().expect("lock");
    let attested = seen
        .iter()
        .filter_map(|message| serde_json::from_str::<Response>(message).ok())
        .find_map(|response| match response {
            Response::Attested(attestation) => Some(attestation.transport_key),
            _ => None,
        });
    attested.expect("the WPE attested")
}

#[test]
fn pool_results_verify_in_two_steps_and_not_with_the_pool_s_key_alone() {
    let wpe_platform = Arc::new(SimPlatform::ephemeral(measurement(0xe1)).expect("platform"));
    let pool = Pool::new(measurement(0xe1), wpe_platform.clone());
    let (wpe, link) = pool.wpe(&wpe_platform, None);
    let wpe_key = transport_key(&link);
    let inputs = [
        ("session", InputProtection::Session),
        ("own key", InputProtection::DataKey),
        ("sealed key", InputProtection::SealedKey),
    ];
    let (raw, pending) = pool.order("alice", &inputs);
    let processed = pool.run(&wpe, &wpe_key, &raw);
    let result = result_of(&processed);
    let pool_key = &pool.kme.worker_record().details.worker_type_data.verification_key;
    let outputs = pending.open(&result, pool_key).expect("two steps verify");
    let texts: Vec<String> =
        outputs.into_iter().map(|(_, data)| String::from_utf8(data).expect("utf-8")).collect();
    assert_eq!(texts, ["RESULT: session", "RESULT: own key", "RESULT: sealed key"]);
    let ext_key = result.ext_verification_key.clone().expect("extVerificationKey");
    assert_ne!(&ext_key, pool_key, "a key of its own for the order");
    assert!(result.ext_verification_key_signature.is_some());
    // One step, against the pool's key alone, fails: the per-order key signed the result.
    let one_step = protection::verify_digest_base64(
        "workerSignature",
        pool_key,
        &response_hash(&result),
        &result.worker_signature,
    );
    assert!(one_step.is_err(), "the pool's key did not sign the result itself");
    // The per-order key vouched for one order only: another requester nonce does not verify.
    let (other, other_pending) = pool.order("alice", &inputs[..1]);
    let mut swapped = result_of(&pool.run(&wpe, &wpe_key, &other));
    swapped.ext_verification_key = result.ext_verification_key.clone();
    swapped.ext_verification_key_signature = result.ext_verification_key_signature.clone();
    assert!(other_pending.open(&swapped, pool_key).is_err());
    // The KME's record names the WPE measurements it admits.
    let measurements = &pool.kme.worker_record().details.worker_type_data.extended_measurements;
    assert_eq!(measurements, &[measurement(0x4b).to_hex_upper(), measurement(0xe1).to_hex_upper()]);
    assert_eq!(pool.kme.worker_id(), wpe.worker_id(), "one worker id for the pool");
}

/// Every encoding of `secret` that could carry it in a JSON message.
fn encodings(secret: &[u8]) -> Vec<String> {
    vec![hex::encode(secret), hex::encode_upper(secret), BASE64.encode(secret)]
}

/// Whether any string in `value`, as text or as the bytes its base64 holds, carries `secret`.
fn carries(value: &Value, secret: &[u8]) -> bool {
    match value {
        Value::String(text) => {
            encodings(secret).iter().any(|encoded| text.contains(encoded.as_str()))
                || BASE64
                    .decode(text)
                    .is_ok_and(|bytes| bytes.windows(secret.len()).any(|window| window == secret))
        }
        Value::Array(items) => items.iter().any(|item| carries(item, secret)),
        Value::Object(fields) => fields.values().any(|field| carries(field, secret)),
        _ => false,
    }
}

#[test]
fn the_pool_s_private_keys_never_reach_a_wpe() {
    let wpe_platform = Arc::new(SimPlatform::ephemeral(measurement(0xe1)).expect("platform"));
    let pool = Pool::new(measurement(0xe1), wpe_platform.clone());
    // The pool's private keys, as the KME sealed them: RSA PKCS#8 DER and the ECDSA scalar.
    let sealed = pool.kme_platform.unseal("worker-keys", pool.kme.sealed_keys()).expect("unseal");
    let (len, rest) = sealed.split_at(4);
    let rsa_len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    let (rsa_der, scalar) = rest.split_at(rsa_len);
    assert_eq!(scalar.len(), 32);
    // A slice from the middle of the RSA key's DER: its private part.
    let rsa_private = &rsa_der[rsa_der.len() / 2..rsa_der.len() / 2 + 64];

    let (wpe, link) = pool.wpe(&wpe_platform, None);
    let wpe_key = transport_key(&link);
    for protection in [InputProtection::Session, InputProtection::DataKey] {
        let (raw, pending) = pool.order("alice", &[("x", protection)]);
        let processed = pool.run(&wpe, &wpe_key, &raw);
        let pool_key = &pool.kme.worker_record().details.worker_type_data.verification_key;
        pending.open(&result_of(&processed), pool_key).expect("verifies");
    }
    // A stateful order too, for a sealed state to scan.
    let record = &pool.kme.worker_record().details.worker_type_data;
    let key = RsaPublicKey::from_pem(&record.encryption_key).expect("key");
    let mut builder =
        WorkOrderBuilder::new(pool.kme.worker_id(), &key, OaepHash::Sha1, "simple-wallet")
            .expect("builder");
    builder.input(b"deposit alice 10", InputProtection::Session).expect("input");
    let (request, _) = builder.build(None).expect("build");
    let raw = json!({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 3, "params": request})
        .to_string()
        .into_bytes();
    let processed = pool.run(&wpe, &wpe_key, &raw);
    let state = processed.state.clone().expect("the wallet's sealed state");
    let held = wpe_platform
        .unseal(&format!("workload-state:simple-wallet:v{}", state.version), &state.blob)
        .expect("the WPE's own sealed state");

    let seen = link.seen.lock().expect("lock");
    assert!(seen.len() >= 10, "the WPE was sent its messages: {}", seen.len());
    for message in seen.iter() {
        let value: Value = serde_json::from_str(message).expect("json");
        assert!(!carries(&value, scalar), "the pool's signing key reached the WPE: {message}");
        assert!(!carries(&value, rsa_private), "the pool's RSA key reached the WPE: {message}");
    }
    for secret in [scalar, rsa_private] {
        assert!(!held.windows(secret.len()).any(|window| window == secret));
    }
    // The scan finds a key where there is one: the KME's own sealed keys hold both.
    assert!(carries(&Value::String(BASE64.encode(&sealed[..])), scalar));
    assert!(carries(&Value::String(BASE64.encode(&sealed[..])), rsa_private));
    eprintln!("{} messages to and from the WPE scanned, and its sealed state", seen.len());
}

#[test]
fn registrations_outside_the_policy_or_replayed_are_refused() {
    let wpe_platform = Arc::new(SimPlatform::ephemeral(measurement(0xe1)).expect("platform"));
    let pool = Pool::new(measurement(0xe1), wpe_platform.clone());

    // A WPE of another measurement (attested by a trusted key) is refused.
    let other = Arc::new(SimPlatform::ephemeral(measurement(0xe2)).expect("platform"));
    let pool_trusting_other = Pool::new(measurement(0xe1), other.clone());
    let (wpe, _) = pool_trusting_other.unregistered_wpe(&other, None);
    let nonce = pool_trusting_other.kme.issue_nonce().expect("nonce");
    let refused = pool_trusting_other
        .kme
        .register_wpe(wpe.attest(nonce.clone()).expect("attest"), nonce)
        .expect_err("measurement not allowed");
    assert_eq!(refused.kind, FailureKind::Registration);
    assert!(refused.message.contains("measurement"), "{}", refused.message);

    // A registration replayed: the nonce served once.
    let (wpe, _) = pool.unregistered_wpe(&wpe_platform, None);
    let nonce = pool.kme.issue_nonce().expect("nonce");
    let attestation = wpe.attest(nonce.clone()).expect("attest");
    pool.kme.register_wpe(attestation.clone(), nonce.clone()).expect("first");
    let replayed = pool.kme.register_wpe(attestation.clone(), nonce).expect_err("replayed");
    assert_eq!(replayed.kind, FailureKind::Registration);
    // Evidence made for one nonce, offered with another.
    let fresh = pool.kme.issue_nonce().expect("nonce");
    let stale = pool.kme.register_wpe(attestation, fresh).expect_err("another nonce");
    assert_eq!(stale.kind, FailureKind::Registration);
    assert!(stale.message.contains("report data"), "{}", stale.message);
    // A nonce the KME never issued.
    let (wpe, _) = pool.unregistered_wpe(&wpe_platform, None);
    let made_up = vec![7; 32];
    let refused = pool
        .kme
        .register_wpe(wpe.attest(made_up.clone()).expect("attest"), made_up)
        .expect_err("not issued");
    assert_eq!(refused.kind, FailureKind::Registration);
    // An unregistered WPE gets nothing.
    let (raw, _) = pool.order("alice", &[("x", InputProtection::Session)]);
    let unknown = pool.kme.pre_process(&[2; 33], &raw).expect_err("unknown WPE");
    assert_eq!(unknown.kind, FailureKind::UnknownWpe);
}

#[test]
fn a_tenant_s_wpe_gets_keys_for_its_tenant_s_orders_only() {
    let wpe_platform = Arc::new(SimPlatform::ephemeral(measurement(0xe1)).expect("platform"));
    let pool = Pool::new(measurement(0xe1), wpe_platform.clone());
    let (for_a, link_a) = pool.wpe(&wpe_platform, Some("tenant-a"));
    let (shared, link_shared) = pool.wpe(&wpe_platform, None);
    let (key_a, key_shared) = (transport_key(&link_a), transport_key(&link_shared));
    let (from_a, pending_a) = pool.order("tenant-a", &[("a", InputProtection::Session)]);
    let (from_b, pending_b) = pool.order("tenant-b", &[("b", InputProtection::Session)]);

    let refused = pool.kme.pre_process(&key_a, &from_b).expect_err("B's order on A's WPE");
    assert_eq!(refused.kind, FailureKind::Tenant);
    let refused = pool.kme.pre_process(&key_shared, &from_a).expect_err("A has WPEs of its own");
    assert_eq!(refused.kind, FailureKind::Tenant);

    let pool_key = &pool.kme.worker_record().details.worker_type_data.verification_key;
    let processed = pool.run(&for_a, &key_a, &from_a);
    pending_a.open(&result_of(&processed), pool_key).expect("A's order on A's WPE");
    let processed = pool.run(&shared, &key_shared, &from_b);
    pending_b.open(&result_of(&processed), pool_key).expect("B's order on a shared WPE");
    // The tenant is bound into the evidence: a tenant WPE's attestation relabelled as
    // untenanted does not register.
    let nonce = pool.kme.issue_nonce().expect("nonce");
    let mut relabelled = for_a.attest(nonce.clone()).expect("attest");
    relabelled.tenant = None;
    let refused = pool.kme.register_wpe(relabelled, nonce).expect_err("relabelled");
    assert_eq!(refused.kind, FailureKind::Registration);
}

#[test]
fn a_refused_order_is_answered_by_the_wpe_and_roles_keep_to_their_requests() {
    let wpe_platform = Arc::new(SimPlatform::ephemeral(measurement(0xe1)).expect("platform"));
    let pool = Pool::new(measurement(0xe1), wpe_platform.clone());
    let (wpe, link) = pool.wpe(&wpe_platform, None);
    let wpe_key = transport_key(&link);
    // A session key for another worker: the KME refuses it, and the WPE answers with the error.
    let (mut raw, _) = pool.order("alice", &[("x", InputProtection::Session)]);
    let mut value: Value = serde_json::from_slice(&raw).expect("json");
    value["params"]["encryptedSessionKey"] = json!("00".repeat(384));
    raw = value.to_string().into_bytes();
    let keys = pool.kme.pre_process(&wpe_key, &raw).expect("answered");
    assert!(matches!(keys, PreProcessed::Refused(_)), "{keys:?}");
    let (processed, _) = wpe.process(&raw, keys, &NoIo).expect("processed");
    let error = processed.error.expect("an error response");
    assert_eq!(error.message, "Crypto Error (DecryptMessage): RSA decryption failed");
    // A KME does not process orders, and a WPE does not pre-process them.
    let (raw, _) = pool.order("alice", &[("x", InputProtection::Session)]);
    assert!(matches!(
        pool.kme.process(&raw, &NoIo),
        Err(failure) if failure.kind == FailureKind::WrongRole
    ));
    let wrong = link.call(Request::PreProcess { wpe_key: wpe_key.clone(), raw });
    assert!(matches!(wrong, Response::Failed(f) if f.kind == FailureKind::WrongRole));
}

#[test]
fn a_second_kme_gets_the_pool_s_keys_only_by_attesting_to_the_first() {
    let wpe_platform = Arc::new(SimPlatform::ephemeral(measurement(0xe1)).expect("platform"));
    let pool = Pool::new(measurement(0xe1), wpe_platform.clone());
    let config = || EnclaveConfig::new(POOL);
    // A KME of the same measurement, on a platform whose attestation the policy trusts: here the
    // same simulated TEE as the first (its sealing key is another's on real hardware too: the
    // keys come over attested, not sealed).
    let joiner = Enclave::new(pool.kme_platform.clone(), Registry::with_builtins());
    let mut policy = pool.policy.clone();
    policy.simulation_keys.push(pool.kme_platform.attestation_key().to_pem());
    let first = EnclaveClient::start_as(
        Arc::new(Enclave::new(pool.kme_platform.clone(), Registry::with_builtins())),
        Role::Kme { policy: policy.clone(), import: None },
        config(),
        Some(pool.kme.sealed_keys().to_vec()),
        vec![],
    )
    .expect("the first KME, restarted with the peers' key trusted");
    let second = EnclaveClient::join_pool(Arc::new(joiner), &first, policy.clone(), config())
        .expect("the second KME joins");
    let (a, b) = (
        &first.worker_record().details.worker_type_data,
        &second.worker_record().details.worker_type_data,
    );
    assert_eq!((&a.verification_key, &a.encryption_key), (&b.verification_key, &b.encryption_key));
    // A WPE served by the second KME alone: its results verify with the pool's key.
    let (wpe, link) = pool.unregistered_wpe(&wpe_platform, None);
    pool.register_with(&second, &wpe);
    let wpe_key = transport_key(&link);
    let (raw, pending) = pool.order("alice", &[("via the second", InputProtection::DataKey)]);
    let keys = second.pre_process(&wpe_key, &raw).expect("pre-processed");
    let (processed, _) = wpe.process(&raw, keys, &NoIo).expect("processed");
    pending.open(&result_of(&processed), &a.verification_key).expect("two steps verify");

    // An enclave of another measurement gets nothing, nor does a WPE.
    let stranger_platform = Arc::new(SimPlatform::ephemeral(measurement(0x66)).expect("platform"));
    let mut trusting = policy.clone();
    trusting.simulation_keys.push(stranger_platform.attestation_key().to_pem());
    let first = EnclaveClient::start_as(
        Arc::new(Enclave::new(pool.kme_platform.clone(), Registry::with_builtins())),
        Role::Kme { policy: trusting.clone(), import: None },
        config(),
        Some(pool.kme.sealed_keys().to_vec()),
        vec![],
    )
    .expect("the first KME, trusting the stranger's attestation key");
    let stranger = Enclave::new(stranger_platform, Registry::with_builtins());
    let refused = EnclaveClient::join_pool(Arc::new(stranger), &first, trusting.clone(), config())
        .expect_err("another measurement");
    assert_eq!(refused.kind, FailureKind::Registration);
    assert!(refused.message.contains("measurement"), "{}", refused.message);
    let nonce = first.issue_nonce().expect("nonce");
    let (wpe, _) = pool.unregistered_wpe(&wpe_platform, None);
    let as_wpe = first.export_pool_keys(wpe.attest(nonce.clone()).expect("attest"), nonce);
    assert_eq!(as_wpe.expect_err("a WPE's attestation").kind, FailureKind::Registration);
    // Keys exported to one enclave do not open in another.
    let nonce = first.issue_nonce().expect("nonce");
    let intended = Enclave::new(pool.kme_platform.clone(), Registry::with_builtins());
    let Response::Attested(attestation) = intended.call(Request::Attest { nonce: nonce.clone() })
    else {
        panic!("attests before it starts");
    };
    let export = first.export_pool_keys(attestation, nonce).expect("exported");
    let thief = Enclave::new(pool.kme_platform.clone(), Registry::with_builtins());
    let stolen = thief.call(Request::Start {
        config: config(),
        role: Role::Kme { policy: trusting, import: Some(export) },
        sealed_keys: None,
        states: vec![],
    });
    assert!(matches!(&stolen, Response::Failed(f) if f.kind == FailureKind::Start), "{stolen:?}");
}
