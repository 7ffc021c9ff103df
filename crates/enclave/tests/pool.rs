//! Worker pools at the enclave's boundary: a KME holding the pool's keys registers WPEs under its
//! policy and pre-processes their orders; pool results verify in two steps and not in one; the
//! pool's private keys never reach a WPE; WPEs outside the policy, replayed registrations and
//! other tenants' orders are refused.

use std::sync::{Arc, Mutex};

use afallon_attest::{Measurement, Platform};
use afallon_crypto::{EcdsaSigningKey, OaepHash, RsaPublicKey};
use afallon_enclave::pool::{self, Purpose};
use afallon_enclave::{
    Enclave, EnclaveClient, EnclaveConfig, EnclaveLink, FailureKind, PoolKeysExport, PreProcessed,
    Processed, Request, Response, Role, WpeClient, sim_kme_measurement, sim_wpe_measurement,
};
use afallon_platform::SimPlatform;
use afallon_proto::requester::{InputProtection, PendingResult, WorkOrderBuilder};
use afallon_proto::{
    WorkOrderRequest, WorkOrderResult, protection, request_hash, requester_id_for_key,
    response_hash,
};
use afallon_workloads::{NoIo, Registry};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

const POOL: &str = "pool-1";

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

/// A requester with a key of its own, named by it: what a tenant is.
fn keyed_requester() -> (EcdsaSigningKey, String) {
    let key = EcdsaSigningKey::generate().expect("key");
    let id = requester_id_for_key(&key.verifying_key());
    (key, id)
}

struct Pool {
    /// The node's simulated TEE: every enclave of the pool on it, each with its own
    /// measurement, all attested by its one simulation key.
    dir: tempfile::TempDir,
    kme_platform: Arc<SimPlatform>,
    kme: EnclaveClient,
}

impl Pool {
    /// A pool signed up by a KME on a simulated TEE of its own.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kme_platform =
            Arc::new(SimPlatform::open(dir.path(), sim_kme_measurement()).expect("platform"));
        let enclave = Enclave::new(kme_platform.clone(), Registry::with_builtins());
        let kme = EnclaveClient::start_as(
            Arc::new(enclave),
            Role::Kme { import: None },
            EnclaveConfig::new(POOL),
            None,
            vec![],
        )
        .expect("the KME starts");
        Self { dir, kme_platform, kme }
    }

    /// The same simulated TEE, measuring `measurement`.
    fn platform(&self, measurement: Measurement) -> Arc<SimPlatform> {
        Arc::new(SimPlatform::open(self.dir.path(), measurement).expect("platform"))
    }

    /// The TEE as it measures this build's WPEs.
    fn wpe_platform(&self) -> Arc<SimPlatform> {
        self.platform(sim_wpe_measurement(&Registry::with_builtins()))
    }

    /// A WPE on `platform`, started and registered with the KME, and the link that records what
    /// it receives.
    fn wpe(
        &self,
        platform: &Arc<SimPlatform>,
        tenant: Option<&str>,
    ) -> (WpeClient, Arc<Recording>) {
        let (wpe, link) = self.unregistered_wpe(platform, tenant);
        self.register_with(&self.kme, &wpe);
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
        self.signed_order(requester, None, inputs)
    }

    /// An order from `requester`, signed by `signer` if given.
    fn signed_order(
        &self,
        requester: &str,
        signer: Option<&EcdsaSigningKey>,
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
        let (request, pending) = builder.build(signer).expect("build");
        let body =
            json!({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 3, "params": request});
        (body.to_string().into_bytes(), pending)
    }

    /// Registers `wpe` with the KME `kme` as well.
    fn register_with(&self, kme: &EnclaveClient, wpe: &WpeClient) {
        let nonce = kme.issue_nonce().expect("nonce");
        let attestation = wpe.attest(nonce.clone()).expect("attest");
        let registered = kme.register_wpe(attestation, nonce).expect("registered");
        wpe.add_kme(registered).expect("added");
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
    let pool = Pool::new();
    let wpe_platform = pool.wpe_platform();
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
    let wpe_measurement = sim_wpe_measurement(&Registry::with_builtins());
    assert_eq!(
        measurements,
        &[sim_kme_measurement().to_hex_upper(), wpe_measurement.to_hex_upper()]
    );
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
    let pool = Pool::new();
    let wpe_platform = pool.wpe_platform();
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
    let pool = Pool::new();
    let wpe_platform = pool.wpe_platform();

    // Evidence of another build (another measurement), on the same trusted platform, is refused;
    // such an enclave does not even start as a WPE.
    let other = pool.platform(Measurement::from([0xe2; 32]));
    let nonce = pool.kme.issue_nonce().expect("nonce");
    let key = afallon_crypto::EcdhSecret::generate().expect("key").public_key().to_bytes();
    let evidence =
        pool::attestation(&*other, Purpose::Register, &key, &nonce, None).expect("attest");
    let refused = pool.kme.register_wpe(evidence, nonce.clone()).expect_err("measurement");
    assert_eq!(refused.kind, FailureKind::Registration);
    assert!(refused.message.contains("measurement"), "{}", refused.message);
    let enclave = Enclave::new(other.clone(), Registry::with_builtins());
    let wrong = WpeClient::start(Arc::new(enclave), EnclaveConfig::new(POOL), None, vec![]);
    assert_eq!(wrong.expect_err("not measured as a WPE").kind, FailureKind::WrongRole);
    // Evidence of this build's WPE from another simulated TEE (another node's key) is refused.
    let elsewhere = Arc::new(
        SimPlatform::ephemeral(sim_wpe_measurement(&Registry::with_builtins())).expect("platform"),
    );
    let evidence =
        pool::attestation(&*elsewhere, Purpose::Register, &key, &nonce, None).expect("attest");
    let refused = pool.kme.register_wpe(evidence, nonce.clone()).expect_err("untrusted key");
    assert!(refused.message.contains("simulation key"), "{}", refused.message);
    // The nonce survived those (a refused attestation spends no nonce): the right one uses it.
    let (wpe, _) = pool.unregistered_wpe(&wpe_platform, None);
    let attestation = wpe.attest(nonce.clone()).expect("attest");
    pool.kme.register_wpe(attestation.clone(), nonce.clone()).expect("first");
    // A registration replayed: the nonce served once.
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
    // And a WPE takes no KME that is not one: evidence of a WPE, offered as a KME's.
    let (wpe, _) = pool.unregistered_wpe(&wpe_platform, None);
    let posing = pool::attestation(&*wpe_platform, Purpose::Registered, &key, &[0; 33], None)
        .expect("attest");
    assert_eq!(wpe.add_kme(posing).expect_err("not a KME").kind, FailureKind::UnknownKme);
}

#[test]
fn a_tenant_s_wpe_gets_keys_for_its_tenant_s_orders_only() {
    let pool = Pool::new();
    let wpe_platform = pool.wpe_platform();
    let ((key_of_a, a), (key_of_b, b)) = (keyed_requester(), keyed_requester());
    let (for_a, link_a) = pool.wpe(&wpe_platform, Some(&a));
    let (shared, link_shared) = pool.wpe(&wpe_platform, None);
    let (key_a, key_shared) = (transport_key(&link_a), transport_key(&link_shared));
    let session = [("a", InputProtection::Session)];
    let (from_a, pending_a) = pool.signed_order(&a, Some(&key_of_a), &session);
    let (from_b, pending_b) = pool.signed_order(&b, Some(&key_of_b), &session);
    // Anyone can write A's requesterId: unsigned, or signed by another key, or A's signature
    // on a request that B altered.
    let (unsigned, _) = pool.order(&a, &session);
    let (signed_by_b, _) = pool.signed_order(&a, Some(&key_of_b), &session);
    let mut altered: Value = serde_json::from_slice(&from_a).expect("json");
    altered["params"]["workloadId"] = json!(afallon_proto::workload_id_from_name("simple-wallet"));
    let altered = altered.to_string().into_bytes();

    // No key material for an order outside a WPE's tenancy: the order is refused, with an error
    // its response carries.
    for (key, order, why) in [
        (&key_a, &from_b, "B's order on A's WPE"),
        (&key_shared, &from_a, "A has WPEs of its own"),
        (&key_a, &unsigned, "A's id on an unsigned order"),
        (&key_a, &signed_by_b, "A's id on an order B signed"),
        (&key_a, &altered, "A's signature on an altered order"),
    ] {
        match pool.kme.pre_process(key, order).expect(why) {
            PreProcessed::Refused(error) => assert!(
                error.message.contains("tenant") || error.message.contains("dedicated"),
                "{why}: {error}"
            ),
            PreProcessed::Keys(_) => panic!("{why}: the KME made keys"),
        }
    }
    // A tenant WPE's evidence names a requester key's id, nothing else.
    let (not_a_key, _) = pool.unregistered_wpe(&wpe_platform, Some("tenant-a"));
    let nonce = pool.kme.issue_nonce().expect("nonce");
    let attestation = not_a_key.attest(nonce.clone()).expect("attest");
    let refused = pool.kme.register_wpe(attestation, nonce).expect_err("not a key's id");
    assert_eq!(refused.kind, FailureKind::Registration);
    let (orphan, _) = pool.order("tenant-a", &session);
    assert!(
        matches!(pool.kme.pre_process(&key_shared, &orphan), Ok(PreProcessed::Keys(_))),
        "a refused registration makes no tenant"
    );

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
    let pool = Pool::new();
    let wpe_platform = pool.wpe_platform();
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
    let pool = Pool::new();
    let wpe_platform = pool.wpe_platform();
    let config = || EnclaveConfig::new(POOL);
    let joiner = Enclave::new(pool.kme_platform.clone(), Registry::with_builtins());
    let second = EnclaveClient::join_pool(Arc::new(joiner), &pool.kme, config())
        .expect("the second KME joins");
    let (a, b) = (
        &pool.kme.worker_record().details.worker_type_data,
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

    // An enclave of another measurement does not attest as a joining KME, and its evidence,
    // made anyway, gets nothing; nor does a WPE's.
    let stranger =
        Enclave::new(pool.platform(Measurement::from([0x66; 32])), Registry::with_builtins());
    let refused = EnclaveClient::join_pool(Arc::new(stranger), &pool.kme, config())
        .expect_err("another measurement");
    assert_eq!(refused.kind, FailureKind::WrongRole);
    let key = afallon_crypto::EcdhSecret::generate().expect("key").public_key().to_bytes();
    for (platform, purpose) in [
        (pool.platform(Measurement::from([0x66; 32])), Purpose::Join),
        (wpe_platform.clone(), Purpose::Join),
        (pool.kme_platform.clone(), Purpose::Register),
    ] {
        let nonce = pool.kme.issue_nonce().expect("nonce");
        let evidence = pool::attestation(&*platform, purpose, &key, &nonce, None).expect("attest");
        let refused = pool.kme.export_pool_keys(evidence, nonce).expect_err("not a joining KME");
        assert_eq!(refused.kind, FailureKind::Registration, "{purpose:?}");
    }
    // Keys exported to one enclave do not open in another, and a joining KME takes keys only
    // from a KME of its own measurement whose evidence binds its own transport key.
    let nonce = pool.kme.issue_nonce().expect("nonce");
    let intended = Enclave::new(pool.kme_platform.clone(), Registry::with_builtins());
    let Response::Attested(attestation) = intended.call(Request::Attest { nonce: nonce.clone() })
    else {
        panic!("a KME attests before it starts");
    };
    let export = pool.kme.export_pool_keys(attestation, nonce).expect("exported");
    let start = |enclave: &Enclave, export: PoolKeysExport| {
        enclave.call(Request::Start {
            config: config(),
            role: Role::Kme { import: Some(export) },
            sealed_keys: None,
            states: vec![],
        })
    };
    let thief = Enclave::new(pool.kme_platform.clone(), Registry::with_builtins());
    let stolen = start(&thief, export.clone());
    assert!(matches!(&stolen, Response::Failed(f) if f.kind == FailureKind::Start), "{stolen:?}");
    // An exporter that is not a KME of this build (here: a WPE's evidence) is not believed.
    let mut forged = export.clone();
    let Response::Attested(joiner) = intended.call(Request::Attest { nonce: vec![1] }) else {
        panic!("attests");
    };
    forged.kme =
        pool::attestation(&*wpe_platform, Purpose::Export, &key, &joiner.transport_key, None)
            .expect("attest");
    let refused = start(&intended, forged);
    assert!(matches!(&refused, Response::Failed(f) if f.kind == FailureKind::Start), "{refused:?}");
    assert!(matches!(start(&intended, export), Response::Started(_)), "the intended one joins");
}

#[test]
fn key_material_runs_only_the_order_it_was_made_for() {
    let pool = Pool::new();
    let wpe_platform = pool.wpe_platform();
    let (key_of_u, u) = keyed_requester();
    let (for_u, link) = pool.wpe(&wpe_platform, Some(&u));
    let key_u = transport_key(&link);
    // Tenant T's order, and a copy relabelled as U's and signed by U: the KME makes keys for
    // the copy, for U's WPE; the host hands U's WPE T's original with them.
    let (original, _) = pool.order("7e", &[("t's secret", InputProtection::Session)]);
    let mut relabelled: Value = serde_json::from_slice(&original).expect("json");
    let mut request: WorkOrderRequest =
        serde_json::from_value(relabelled["params"].clone()).expect("request");
    request.requester_id.clone_from(&u);
    request.requester_signature =
        Some(protection::sign_digest_base64(&key_of_u, &request_hash(&request)));
    request.verifying_key = Some(key_of_u.verifying_key().to_pem());
    relabelled["params"] = serde_json::to_value(&request).expect("json");
    let relabelled = relabelled.to_string().into_bytes();
    let keys = pool.kme.pre_process(&key_u, &relabelled).expect("keys for the copy");
    let (processed, _) = for_u.process(&original, keys, &NoIo).expect("answered");
    let error = processed.error.expect("refused");
    eprintln!("T's order with keys made for a relabelled copy: {}", error.message);
    assert!(error.message.starts_with("Crypto Error"), "{}", error.message);
    // Keys made for one order of U's do not run another of U's.
    let (first, _) = pool.signed_order(&u, Some(&key_of_u), &[("one", InputProtection::Session)]);
    let (second, _) = pool.signed_order(&u, Some(&key_of_u), &[("two", InputProtection::Session)]);
    let keys = pool.kme.pre_process(&key_u, &first).expect("keys");
    let (processed, _) = for_u.process(&second, keys, &NoIo).expect("answered");
    assert!(processed.error.is_some(), "{}", processed.response);
}
