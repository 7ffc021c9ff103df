//! Verifying a worker before trusting it with data: status, algorithms, the encryption-key
//! signature, and the attestation binding the verification key (wire spec §3.14 steps 1-2).

use afallon_attest::{
    Evidence, Policy, ReportData, UnixTime, VerifiedEvidence, VerifyError, WorkerProof,
};
use afallon_crypto::{EcdsaVerifyingKey, KeyError, OaepHash, RsaPublicKey};
use afallon_proto::protection::{self, ProtectionError};
use afallon_proto::requester::{InputProtection, WorkOrderBuilder};
use afallon_proto::{KeyEncryption, WorkerRecord, WorkerStatus};

/// Why a worker was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The worker is not active (status 1).
    #[error("worker status is {0}, not active (1)")]
    NotActive(i64),
    /// The worker uses an algorithm this SDK does not speak.
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The encryption key cannot be read.
    #[error("encryption key: {0}")]
    EncryptionKey(KeyError),
    /// The verification key cannot be read.
    #[error("verification key: {0}")]
    VerificationKey(KeyError),
    /// `encryptionKeySignature` does not verify under the verification key.
    #[error("encryption key signature: {0}")]
    EncryptionKeySignature(ProtectionError),
    /// The attestation was refused.
    #[error("attestation: {0}")]
    Attestation(VerifyError),
    /// The record carries no attestation, and the policy does not accept unattested workers.
    #[error(
        "the worker carries no attestation (an unattested or simulated worker); refused by policy"
    )]
    Unattested,
}

/// What stands behind a worker's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attestation {
    /// Evidence verified under the policy and bound to the verification key.
    Verified(Box<VerifiedEvidence>),
    /// Nothing: an Avalon simulation-mode worker, accepted because the policy allows simulation.
    Unattested,
    /// Evidence that failed (or none), and the requester chose to go on regardless
    /// ([`accept_worker_record_unverified`]): nothing vouches for the keys.
    Ignored(String),
}

/// A verified worker: what a requester needs to send it work.
#[derive(Debug, Clone)]
pub struct Worker {
    /// Its id.
    pub worker_id: String,
    /// Its record.
    pub record: WorkerRecord,
    /// The key session keys are wrapped under.
    pub encryption_key: RsaPublicKey,
    /// How they are wrapped.
    pub oaep: OaepHash,
    /// The key results are signed with (PEM, as published).
    pub verification_key: String,
    /// The same key, parsed.
    pub verifying_key: EcdsaVerifyingKey,
    /// What vouches for it.
    pub attestation: Attestation,
}

impl Worker {
    /// Starts a work order for this worker running `workload`.
    ///
    /// # Errors
    /// [`ProtectionError`] if the session key cannot be drawn or wrapped.
    pub fn work_order(&self, workload: &str) -> Result<WorkOrderBuilder, ProtectionError> {
        WorkOrderBuilder::new(&self.worker_id, &self.encryption_key, self.oaep, workload)
    }

    /// How this worker's inputs and outputs are best protected: with keys of their own sealed
    /// under the session key ([`InputProtection::SealedKey`]) when the attestation shows
    /// afallon's enclave (its simulated TEE, the only kind verified yet, is afallon's own), which
    /// keeps the session key and IV from encrypting more than the request hash; under the session
    /// key otherwise (Avalon's workers cannot read sealed keys). A lying listener cannot move a
    /// requester from one to the other: the choice rests on the verified attestation.
    pub fn item_protection(&self) -> InputProtection {
        match &self.attestation {
            Attestation::Verified(evidence)
                if evidence.kind == afallon_attest::EvidenceKind::Sim =>
            {
                InputProtection::SealedKey
            }
            _ => InputProtection::Session,
        }
    }

    /// Whether the worker runs on a simulated (or unattested) TEE.
    pub fn is_simulated(&self) -> bool {
        !matches!(&self.attestation, Attestation::Verified(v) if v.tcb_status != afallon_attest::TcbStatus::Simulated)
    }
}

/// Verifies a worker record as of `at`: active, known algorithms, a valid encryption-key
/// signature, and an attestation the policy accepts that binds the verification key.
///
/// # Errors
/// [`WorkerError`] naming the check that failed.
pub fn verify_worker_record(
    worker_id: &str,
    record: WorkerRecord,
    policy: &Policy,
    at: UnixTime,
) -> Result<Worker, WorkerError> {
    let mut worker = worker(worker_id, record, Attestation::Unattested)?;
    let data = &worker.record.details.worker_type_data;
    let proof = WorkerProof {
        proof_data_type: data.proof_data_type.clone(),
        proof_data: data.proof_data.clone(),
        enclave_certificate: data.enclave_certificate.clone(),
    };
    worker.attestation = match Evidence::from_worker_proof(&proof) {
        Some(evidence) => Attestation::Verified(Box::new(
            policy
                .verify(&evidence, &ReportData::for_verification_key(&worker.verification_key), at)
                .map_err(WorkerError::Attestation)?,
        )),
        None if policy.allows_unattested() => Attestation::Unattested,
        None => return Err(WorkerError::Unattested),
    };
    Ok(worker)
}

/// Checks a worker record as [`verify_worker_record`] does, but for its attestation, which is
/// not looked at: for a requester that chose to trust the worker's keys without evidence (and
/// says so loudly). The worker's [`Worker::attestation`] is [`Attestation::Ignored`] with `why`.
///
/// # Errors
/// [`WorkerError`] naming the check that failed.
pub fn accept_worker_record_unverified(
    worker_id: &str,
    record: WorkerRecord,
    why: &str,
) -> Result<Worker, WorkerError> {
    worker(worker_id, record, Attestation::Ignored(why.to_owned()))
}

/// The checks of a record but its attestation, and the worker they give.
fn worker(
    worker_id: &str,
    record: WorkerRecord,
    attestation: Attestation,
) -> Result<Worker, WorkerError> {
    if record.status != WorkerStatus::Active.code() {
        return Err(WorkerError::NotActive(record.status));
    }
    let details = &record.details;
    let key_encryption =
        KeyEncryption::from_name(&details.key_encryption_algorithm).ok_or_else(|| {
            WorkerError::UnsupportedAlgorithm(details.key_encryption_algorithm.clone())
        })?;
    for (value, expected) in [
        (&details.hashing_algorithm, "SHA-256"),
        (&details.signing_algorithm, "SECP256K1"),
        (&details.data_encryption_algorithm, "AES-GCM-256"),
    ] {
        if value != expected {
            return Err(WorkerError::UnsupportedAlgorithm(value.clone()));
        }
    }
    let data = &details.worker_type_data;
    let encryption_key =
        RsaPublicKey::from_pem(&data.encryption_key).map_err(WorkerError::EncryptionKey)?;
    let verifying_key = EcdsaVerifyingKey::from_pem(&data.verification_key)
        .map_err(WorkerError::VerificationKey)?;
    protection::verify_encryption_key_signature(
        &data.verification_key,
        &data.encryption_key,
        &data.encryption_key_signature,
    )
    .map_err(WorkerError::EncryptionKeySignature)?;
    let verification_key = data.verification_key.clone();
    Ok(Worker {
        worker_id: worker_id.to_owned(),
        encryption_key,
        oaep: key_encryption.oaep_hash(),
        verification_key,
        verifying_key,
        attestation,
        record,
    })
}
