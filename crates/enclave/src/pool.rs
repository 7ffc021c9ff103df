//! Worker pools: a Key Management Enclave ([`Kme`]) holds the pool's keys (the worker that
//! requesters see) and pre-processes work orders for the Work-order Processing Enclaves
//! ([`Wpe`]) it registered; a WPE runs the orders and never holds the pool's private keys.
//!
//! Registration: the KME issues a fresh nonce; the WPE attests to its transport key (secp256k1
//! ECDH), the nonce and its tenant; the KME checks the evidence against its policy (allowed WPE
//! measurements), takes the nonce (once), and keeps the AES key it now shares with the WPE.
//! Pre-processing: the KME unwraps the session key and the RSA-wrapped per-item keys (its one RSA
//! operation per order, plus one per such item), makes a per-order signing key, signs
//! SHA-256(per-order verification key ‖ requesterNonce) with the pool's key, and hands all of it
//! to the WPE wrapped under their shared key: no second RSA operation. The WPE processes the order
//! as a singleton worker would, signs it with the per-order key, and adds `extVerificationKey`
//! and `extVerificationKeySignature` (wire spec §3.8).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use afallon_attest::{Evidence, EvidenceKind, Measurement, Platform, Policy, ReportData, UnixTime};
use afallon_crypto::{
    AesKey, EcdhPublicKey, EcdhSecret, EcdsaSigningKey, EcdsaVerifyingKey, OaepHash, RsaError,
    Sha256, random_array, sha256,
};
use afallon_proto::protection::{self, DataKeyUnwrap, ProtectionError};
use afallon_proto::{
    WorkOrderRequest, WorkOrderResult, ext_verification_key_digest, is_requester_key_id,
    request_digest, request_hash, requester_id_for_key, response_hash,
};
use serde::Deserialize;

use crate::error::ProcessError;
use crate::lock;
use crate::messages::{
    Attestation, DataKey, Failure, FailureKind, PoolKeys, PoolKeysExport, PreProcessed,
};
use crate::runtime::Runtime;
use crate::worker::Worker;

/// What a KME and a WPE derive their shared key for.
const TRANSPORT_CONTEXT: &[u8] = b"afallon-pool-transport/v1";

/// What two KMEs derive their shared key for: the pool's keys, once.
const REPLICATION_CONTEXT: &[u8] = b"afallon-pool-replication/v1";

/// Nonces a KME keeps outstanding; beyond this the oldest are forgotten (their registrations
/// are refused, and their WPEs ask again).
const MAX_NONCES: usize = 1024;

/// WPEs a KME serves at once: registrations beyond it are refused.
const MAX_WPES: usize = 4096;

/// What an attestation between pool enclaves is for: part of what its evidence binds, so that
/// one made for a purpose cannot serve another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A WPE registering with a KME (bound to the KME's nonce).
    Register,
    /// A KME answering a WPE's registration (bound to the WPE's transport key).
    Registered,
    /// An enclave joining the pool as a KME (bound to the running KME's nonce).
    Join,
    /// A KME handing the pool's keys to a joining one (bound to the joiner's transport key).
    Export,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Register => b"register",
            Self::Registered => b"registered",
            Self::Join => b"join",
            Self::Export => b"export",
        }
    }
}

/// The report data an attestation between pool enclaves carries: SHA-256 of its purpose and what
/// it binds (the enclave's transport key, the other side's nonce or key, and the tenant, if any),
/// each length-prefixed, in its first 32 bytes.
pub(crate) fn registration_report_data(
    purpose: Purpose,
    transport_key: &[u8],
    nonce: &[u8],
    tenant: Option<&str>,
) -> ReportData {
    let mut h = Sha256::new();
    h.update(b"afallon-pool-attestation/v2\n");
    for part in [purpose.label(), transport_key, nonce, tenant.unwrap_or("").as_bytes()] {
        h.update(&(part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(&[u8::from(tenant.is_some())]);
    let mut data = [0_u8; 64];
    data[..32].copy_from_slice(h.finalize().as_bytes());
    ReportData(data)
}

/// A policy admitting `measurement` as attested on `platform`'s kind of TEE: on the simulated
/// TEE, simulated evidence signed by this platform's own simulation key and no other. The policy
/// is the enclave's own: nothing the host says widens it.
pub(crate) fn trusting(platform: &dyn Platform, measurement: Measurement) -> Policy {
    let mut policy = Policy::new().allow_measurement(measurement);
    if let Some(key) = platform.simulation_key() {
        policy = policy.insecure_allow_simulation().trust_simulation_key(key);
    }
    policy
}

/// Checks `attestation` under `policy` for `purpose`, bound to `nonce`; returns the attested
/// transport key.
pub(crate) fn verify(
    policy: &Policy,
    attestation: &Attestation,
    purpose: Purpose,
    nonce: &[u8],
    failure: FailureKind,
) -> Result<EcdhPublicKey, Failure> {
    let refused = |message: String| Failure::new(failure, message);
    let key = EcdhPublicKey::from_bytes(&attestation.transport_key)
        .map_err(|_| refused("the transport key is not a secp256k1 point".into()))?;
    let kind = EvidenceKind::from_name(&attestation.evidence_kind).ok_or_else(|| {
        refused(format!("evidence of unknown kind {:?}", attestation.evidence_kind))
    })?;
    let evidence = Evidence { kind, bytes: attestation.evidence.clone() };
    let expected = registration_report_data(
        purpose,
        &attestation.transport_key,
        nonce,
        attestation.tenant.as_deref(),
    );
    policy
        // An enclave's clock is its host's, on real TEEs as here.
        .verify(&evidence, &expected, UnixTime::now())
        .map_err(|error| refused(format!("the evidence: {error}")))?;
    Ok(key)
}

/// A registered WPE, as its KME knows it.
struct RegisteredWpe {
    shared: Arc<AesKey>,
    tenant: Option<String>,
}

/// A Key Management Enclave: the pool's keys, the WPEs it registered, the nonces it issued.
pub(crate) struct Kme {
    pub(crate) worker: Worker,
    transport: Arc<EcdhSecret>,
    /// The WPEs it admits: this build's WPE measurement, on its own platform.
    policy: Policy,
    /// Who may join the pool as another KME: its own measurement, on its own platform.
    peers: Policy,
    nonces: Mutex<VecDeque<[u8; 32]>>,
    wpes: Mutex<HashMap<[u8; 33], RegisteredWpe>>,
    /// Requesters some registered WPE is dedicated to: only their WPEs get their orders.
    tenants: Mutex<HashSet<String>>,
}

#[derive(Deserialize)]
struct Envelope {
    params: WorkOrderRequest,
}

impl Kme {
    /// A KME holding `worker`'s keys (the pool's), admitting the WPEs of `wpe_measurement` on its
    /// own platform, with the enclave's transport key.
    pub(crate) fn new(
        worker: Worker,
        wpe_measurement: Measurement,
        transport: Arc<EcdhSecret>,
    ) -> Self {
        let platform = &*worker.runtime.platform;
        let (policy, peers) =
            (trusting(platform, wpe_measurement), trusting(platform, platform.measurement()));
        Self {
            worker,
            transport,
            policy,
            peers,
            nonces: Mutex::default(),
            wpes: Mutex::default(),
            tenants: Mutex::default(),
        }
    }

    /// A fresh nonce for one registration.
    pub(crate) fn issue_nonce(&self) -> Result<Vec<u8>, Failure> {
        let nonce: [u8; 32] =
            random_array().map_err(|e| Failure::new(FailureKind::Platform, e.to_string()))?;
        let mut nonces = lock(&self.nonces);
        if nonces.len() >= MAX_NONCES {
            nonces.pop_front();
        }
        nonces.push_back(nonce);
        Ok(nonce.to_vec())
    }

    /// Registers the WPE that `attestation` speaks for, if its evidence passes the policy and
    /// binds its transport key, this KME's `nonce` (outstanding, and taken now) and its tenant.
    /// Returns this KME's attestation, binding its transport key to the WPE's.
    pub(crate) fn register(
        &self,
        attestation: &Attestation,
        nonce: &[u8],
        attest: impl Fn(Purpose, &[u8]) -> Result<Attestation, Failure>,
    ) -> Result<Attestation, Failure> {
        if attestation.tenant.as_deref().is_some_and(|t| !is_requester_key_id(t)) {
            return Err(Failure::new(
                FailureKind::Registration,
                "a tenant is the requesterId of a requester key (64 lower-case hex digits)",
            ));
        }
        let wpe_key = self.admit(attestation, Purpose::Register, nonce, &self.policy)?;
        let shared = Arc::new(self.transport.agree(&wpe_key, TRANSPORT_CONTEXT));
        let mut wpes = lock(&self.wpes);
        if wpes.len() >= MAX_WPES && !wpes.contains_key(&wpe_key.to_bytes()) {
            return Err(Failure::new(
                FailureKind::Registration,
                "this KME serves as many WPEs as it can",
            ));
        }
        if let Some(tenant) = &attestation.tenant {
            // Bounded by the WPEs: a tenant is added with a WPE admitted here.
            lock(&self.tenants).insert(tenant.clone());
        }
        wpes.insert(
            wpe_key.to_bytes(),
            RegisteredWpe { shared, tenant: attestation.tenant.clone() },
        );
        drop(wpes);
        attest(Purpose::Registered, &attestation.transport_key)
    }

    /// Hands the pool's keys to the KME joining the pool that `attestation` speaks for, if its
    /// evidence shows this KME's own measurement on its platform and binds a nonce this KME
    /// issued; wrapped under the key the two share, with this KME's attestation binding its
    /// transport key to the joiner's.
    pub(crate) fn export(
        &self,
        attestation: &Attestation,
        nonce: &[u8],
        attest: impl Fn(Purpose, &[u8]) -> Result<Attestation, Failure>,
    ) -> Result<PoolKeysExport, Failure> {
        if attestation.tenant.is_some() {
            return Err(Failure::new(FailureKind::Registration, "a KME has no tenant"));
        }
        let peer = self.admit(attestation, Purpose::Join, nonce, &self.peers)?;
        let shared = self.transport.agree(&peer, REPLICATION_CONTEXT);
        let failed = |e: &dyn std::fmt::Display| Failure::new(FailureKind::Platform, e.to_string());
        let payload = self.worker.keys.payload().map_err(|e| failed(&e))?;
        let wrapped = shared.seal_with_random_iv(&payload).map_err(|e| failed(&e))?;
        Ok(PoolKeysExport { kme: attest(Purpose::Export, &attestation.transport_key)?, wrapped })
    }

    /// Checks an attestation for this KME: its evidence under `policy` for `purpose`, bound to
    /// `nonce`, which must be outstanding (taken once the evidence passed, so that nobody can
    /// spend another's nonce with junk). Returns the attested transport key.
    fn admit(
        &self,
        attestation: &Attestation,
        purpose: Purpose,
        nonce: &[u8],
        policy: &Policy,
    ) -> Result<EcdhPublicKey, Failure> {
        let issued = lock(&self.nonces).iter().any(|issued| issued.as_slice() == nonce);
        if !issued {
            return Err(Failure::new(
                FailureKind::Registration,
                "the nonce was not issued by this KME, or was used already",
            ));
        }
        let key = verify(policy, attestation, purpose, nonce, FailureKind::Registration)?;
        let mut nonces = lock(&self.nonces);
        let Some(position) = nonces.iter().position(|issued| issued.as_slice() == nonce) else {
            return Err(Failure::new(FailureKind::Registration, "the nonce was used meanwhile"));
        };
        nonces.remove(position);
        Ok(key)
    }

    /// Pre-processes the order `raw` for the registered WPE `wpe_key`: its keys, wrapped for it.
    /// An order that cannot be unwrapped is refused with the error its response must carry.
    pub(crate) fn pre_process(&self, wpe_key: &[u8], raw: &[u8]) -> Result<PreProcessed, Failure> {
        let key = <[u8; 33]>::try_from(wpe_key)
            .map_err(|_| Failure::new(FailureKind::UnknownWpe, "not a WPE's transport key"))?;
        let (shared, tenant) = match lock(&self.wpes).get(&key) {
            Some(wpe) => (Arc::clone(&wpe.shared), wpe.tenant.clone()),
            None => {
                return Err(Failure::new(
                    FailureKind::UnknownWpe,
                    "no WPE with this key is registered with this KME",
                ));
            }
        };
        let limits = &self.worker.runtime.config.limits.request;
        if raw.len() > limits.max_request_bytes {
            let error = ProcessError::value(limits.too_large_message(raw.len()));
            return Ok(PreProcessed::Refused(error));
        }
        let Ok(Envelope { params: request }) = serde_json::from_slice::<Envelope>(raw) else {
            // The WPE finds out what is wrong with it, as a singleton worker would.
            return Ok(PreProcessed::Refused(ProcessError::value(
                "invalid request; malformed work order parameters",
            )));
        };
        // One RSA decryption per item: no more items than an order may carry.
        let items = request.in_data.len() + request.out_data.len();
        if items > limits.max_data_items {
            return Ok(PreProcessed::Refused(ProcessError::value(
                limits.too_many_items_message(items),
            )));
        }
        // No key material for an order outside the WPE's tenancy: the order is answered with
        // an error. A tenant's WPE runs only orders its tenant signed: the requesterId names the
        // requester's key, and anyone can write an id.
        let refusal = match &tenant {
            Some(tenant) if *tenant != request.requester_id => {
                Some("this work order's requester is not the tenant of the WPE it reached")
            }
            Some(_) if !signed_by_requester_key(&request) => Some(
                "a WPE dedicated to a tenant runs only orders signed by the tenant's key (a \
                 requesterSignature by the verifyingKey whose SHA-256 is the requesterId)",
            ),
            Some(_) => None,
            // A shared WPE may have claimed it before its requester's WPEs registered.
            None if lock(&self.tenants).contains(&request.requester_id) => Some(
                "this work order's requester has WPEs dedicated to it, and the order reached a \
                 shared WPE (it was queued before they registered); submit it again",
            ),
            None => None,
        };
        if let Some(refusal) = refusal {
            return Ok(PreProcessed::Refused(ProcessError::value(refusal)));
        }
        Ok(match self.keys_for(&request, &shared) {
            Ok(keys) => PreProcessed::Keys(Box::new(keys)),
            Err(error) => PreProcessed::Refused(error),
        })
    }

    fn keys_for(
        &self,
        request: &WorkOrderRequest,
        shared: &AesKey,
    ) -> Result<PoolKeys, ProcessError> {
        let keys = &self.worker.keys;
        let oaep = self.worker.runtime.config.key_encryption.oaep_hash();
        let session_key =
            protection::unwrap_session_key(&keys.encryption, oaep, &request.encrypted_session_key)
                .map_err(|e| crate::process::protection_error(e, "encryptedSessionKey"))?;
        let wrap = |key: &AesKey| {
            shared
                .wrap_key(key)
                .map_err(|e| ProcessError::crypto(format!("Crypto Error (wrap): {e}")))
        };
        let mut data_keys = Vec::new();
        for item in request.in_data.iter().chain(&request.out_data) {
            let wrapped = protection::rsa_wrapped_data_key(item, &session_key)
                .map_err(|e| crate::process::protection_error(e, "encryptedDataEncryptionKey"))?;
            if let Some(wrapped) = wrapped {
                let key = keys.encryption.unwrap_key(oaep, &wrapped).map_err(|source| {
                    crate::process::protection_error(
                        ProtectionError::DataKey { index: item.index, source },
                        "encryptedDataEncryptionKey",
                    )
                })?;
                data_keys.push(DataKey {
                    index: item.index,
                    wrapped_sha256: sha256(&wrapped).as_bytes().to_vec(),
                    key: wrap(&key)?,
                });
            }
        }
        let order_key = EcdsaSigningKey::generate()
            .map_err(|e| ProcessError::crypto(format!("Crypto Error (keygen): {e}")))?;
        let ext_verification_key = order_key.verifying_key().to_pem();
        let vouched = ext_verification_key_digest(&ext_verification_key, &request.requester_nonce);
        let ext_verification_key_signature =
            protection::sign_digest_base64(&keys.signing, &vouched);
        let sealed = |bytes: &[u8]| {
            shared
                .seal_with_random_iv(bytes)
                .map_err(|e| ProcessError::crypto(format!("Crypto Error (wrap): {e}")))
        };
        let signing_key = sealed(&order_key.to_scalar_bytes_for_sealing()[..])?;
        let order = sealed(request_digest(request).as_bytes())?;
        Ok(PoolKeys {
            kme_key: self.transport.public_key().to_bytes().to_vec(),
            session_key: wrap(&session_key)?,
            data_keys,
            signing_key,
            order,
            ext_verification_key,
            ext_verification_key_signature,
        })
    }
}

/// Whether `request` carries a requester signature over its request hash, by the verifying key
/// its requesterId names ([`requester_id_for_key`]).
fn signed_by_requester_key(request: &WorkOrderRequest) -> bool {
    let (Some(signature), Some(pem)) =
        (request.requester_signature.as_deref(), request.verifying_key.as_deref())
    else {
        return false;
    };
    let Ok(key) = EcdsaVerifyingKey::from_pem(pem) else { return false };
    requester_id_for_key(&key) == request.requester_id
        && protection::verify_digest_base64_with(
            "requesterSignature",
            &key,
            &request_hash(request),
            signature,
        )
        .is_ok()
}

/// Evidence from `platform` that the enclave holding `transport` runs there, for `purpose`, bound
/// to `nonce` (the other side's nonce or transport key), dedicated to `tenant`.
pub(crate) fn attest(
    platform: &dyn Platform,
    transport: &EcdhSecret,
    purpose: Purpose,
    nonce: &[u8],
    tenant: Option<&str>,
) -> Result<Attestation, Failure> {
    attestation(platform, purpose, &transport.public_key().to_bytes(), nonce, tenant)
}

/// Evidence from `platform` for `purpose` binding the transport key `transport_key` to `bound`
/// (the other side's nonce or transport key) and `tenant`: what a pool enclave on `platform`
/// attests. Public so that tests can make the evidence an enclave of another build would.
///
/// # Errors
/// [`FailureKind::Platform`] if the platform cannot attest.
pub fn attestation(
    platform: &dyn Platform,
    purpose: Purpose,
    transport_key: &[u8],
    bound: &[u8],
    tenant: Option<&str>,
) -> Result<Attestation, Failure> {
    let report_data = registration_report_data(purpose, transport_key, bound, tenant);
    let evidence = platform
        .evidence(&report_data)
        .map_err(|e| Failure::new(FailureKind::Platform, e.to_string()))?;
    Ok(Attestation {
        evidence_kind: evidence.kind.name().to_owned(),
        evidence: evidence.bytes,
        transport_key: transport_key.to_vec(),
        tenant: tenant.map(str::to_owned),
    })
}

/// The pool's keys a running KME exported to this enclave, if the exporter's evidence shows this
/// enclave's own measurement (a KME of the same build) on a platform it trusts, and binds this
/// enclave's transport key.
pub(crate) fn import(
    platform: &dyn Platform,
    transport: &EcdhSecret,
    export: &PoolKeysExport,
) -> Result<crate::keys::WorkerKeys, Failure> {
    let refused = |message: &str| Failure::new(FailureKind::Start, message.to_owned());
    let own_key = transport.public_key().to_bytes();
    let policy = trusting(platform, platform.measurement());
    let kme = verify(&policy, &export.kme, Purpose::Export, &own_key, FailureKind::Start)?;
    let shared = transport.agree(&kme, REPLICATION_CONTEXT);
    let payload = zeroize::Zeroizing::new(
        shared
            .open_with_prefixed_iv(&export.wrapped)
            .map_err(|_| refused("the pool's keys do not unwrap: not exported to this enclave"))?,
    );
    crate::keys::WorkerKeys::from_payload(&payload)
        .map_err(|_| refused("the pool's keys are malformed"))
}

/// A Work-order Processing Enclave: the workloads, its transport key, the KMEs it registered
/// with. It holds none of the pool's private keys.
pub(crate) struct Wpe {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) transport: Arc<EcdhSecret>,
    pub(crate) tenant: Option<String>,
    /// The KMEs it accepts: this build's KME measurement, on its own platform.
    kme_policy: Policy,
    kmes: Mutex<HashMap<[u8; 33], Arc<AesKey>>>,
}

impl Wpe {
    pub(crate) fn new(
        runtime: Runtime,
        tenant: Option<String>,
        transport: Arc<EcdhSecret>,
        kme_measurement: Measurement,
    ) -> Self {
        let kme_policy = trusting(&*runtime.platform, kme_measurement);
        Self { runtime: Arc::new(runtime), transport, tenant, kme_policy, kmes: Mutex::default() }
    }

    /// The KME that `kme` speaks for registered this WPE: its evidence must show this build's
    /// KME measurement and bind this WPE's transport key.
    pub(crate) fn add_kme(&self, kme: &Attestation) -> Result<(), Failure> {
        let own_key = self.transport.public_key().to_bytes();
        let key =
            verify(&self.kme_policy, kme, Purpose::Registered, &own_key, FailureKind::UnknownKme)?;
        let shared = Arc::new(self.transport.agree(&key, TRANSPORT_CONTEXT));
        lock(&self.kmes).insert(key.to_bytes(), shared);
        Ok(())
    }

    /// The keys of one order from a KME's pre-processing.
    pub(crate) fn order_keys(&self, keys: PoolKeys) -> Result<PooledKeys, ProcessError> {
        let unknown = || ProcessError::crypto("Crypto Error: key material from an unknown KME");
        let kme = <[u8; 33]>::try_from(keys.kme_key.as_slice()).map_err(|_| unknown())?;
        let shared = lock(&self.kmes).get(&kme).cloned().ok_or_else(unknown)?;
        Ok(PooledKeys {
            tenant: self.tenant.clone(),
            order: keys.order,
            shared,
            session_key: keys.session_key,
            data_keys: keys
                .data_keys
                .into_iter()
                .map(|DataKey { wrapped_sha256, key, .. }| (wrapped_sha256, key))
                .collect(),
            signing_key: keys.signing_key,
            ext_verification_key: keys.ext_verification_key,
            ext_verification_key_signature: keys.ext_verification_key_signature,
        })
    }
}

/// One order's keys in a WPE, still wrapped under the key it shares with the KME; each is
/// unwrapped when it is used.
pub(crate) struct PooledKeys {
    /// The WPE's tenant: it runs that requester's orders only.
    tenant: Option<String>,
    /// The digest of the request the keys were made for, sealed.
    order: Vec<u8>,
    shared: Arc<AesKey>,
    session_key: Vec<u8>,
    /// By the digest of the RSA-wrapped key they stand for.
    data_keys: BTreeMap<Vec<u8>, Vec<u8>>,
    signing_key: Vec<u8>,
    ext_verification_key: String,
    ext_verification_key_signature: String,
}

impl PooledKeys {
    /// The session key, if the keys were made for `request` and its requester is this WPE's
    /// tenant (when it has one).
    pub(crate) fn session_key(&self, request: &WorkOrderRequest) -> Result<AesKey, ProcessError> {
        let foreign = || {
            ProcessError::crypto(
                "Crypto Error: the KME's key material was made for another work order, or the \
                 requester is not this WPE's tenant",
            )
        };
        let order = self.shared.open_with_prefixed_iv(&self.order).map_err(|_| foreign())?;
        if order != request_digest(request).as_bytes() {
            return Err(foreign());
        }
        if self.tenant.as_deref().is_some_and(|tenant| tenant != request.requester_id) {
            return Err(foreign());
        }
        self.shared.unwrap_key(&self.session_key).map_err(|_| foreign())
    }

    /// Signs `result` with the per-order key, and adds that key and the pool's signature over it.
    pub(crate) fn sign(&self, result: &mut WorkOrderResult) -> Result<(), ProtectionError> {
        let scalar = zeroize::Zeroizing::new(
            self.shared
                .open_with_prefixed_iv(&self.signing_key)
                .map_err(ProtectionError::Encryption)?,
        );
        let order_key = EcdsaSigningKey::from_scalar_bytes(&scalar).map_err(|_| {
            ProtectionError::Encryption(afallon_crypto::AesGcmError::Authentication)
        })?;
        result.ext_verification_key = Some(self.ext_verification_key.clone());
        result.ext_verification_key_signature = Some(self.ext_verification_key_signature.clone());
        result.worker_signature =
            protection::sign_digest_base64(&order_key, &response_hash(result));
        Ok(())
    }
}

impl DataKeyUnwrap for PooledKeys {
    fn unwrap_data_key(&self, _: i64, _: OaepHash, rsa: &[u8]) -> Result<AesKey, RsaError> {
        let digest = sha256(rsa);
        let wrapped =
            self.data_keys.get(digest.as_bytes().as_slice()).ok_or(RsaError::Decryption)?;
        self.shared.unwrap_key(wrapped).map_err(|_| RsaError::Decryption)
    }
}
