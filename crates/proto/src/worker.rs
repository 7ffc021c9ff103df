//! The worker record (wire spec §1.9): what `WorkerRetrieve` returns and what requesters check
//! before they encrypt to a worker.

use afallon_crypto::OaepHash;
use serde::{Deserialize, Serialize};

/// A worker as the registry holds it; `WorkerRetrieve`'s result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRecord {
    /// [`crate::WorkerType`] code; 1 for TEE workers.
    pub worker_type: i64,
    /// The operator's organization id (hex).
    pub organization_id: String,
    /// The application type id (hex); a single string, not a list.
    pub application_type_id: String,
    /// How to talk to the worker and the keys to use.
    pub details: WorkerDetails,
    /// [`crate::WorkerStatus`] code; requesters refuse workers that are not 1 (active).
    pub status: i64,
}

/// `details` of a worker record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerDetails {
    /// EEA URI fields; empty in Avalon's records.
    #[serde(default)]
    pub work_order_sync_uri: String,
    /// As above.
    #[serde(default)]
    pub work_order_async_uri: String,
    /// As above.
    #[serde(default)]
    pub work_order_pull_uri: String,
    /// As above.
    #[serde(default)]
    pub work_order_notify_uri: String,
    /// As above.
    #[serde(default)]
    pub receipt_invocation_uri: String,
    /// Proxy-model addresses; empty in the direct model.
    #[serde(default)]
    pub work_order_invocation_address: String,
    /// As above.
    #[serde(default)]
    pub receipt_invocation_address: String,
    /// As above.
    #[serde(default)]
    pub from_address: String,
    /// `SHA-256`.
    pub hashing_algorithm: String,
    /// `SECP256K1`.
    pub signing_algorithm: String,
    /// `RSA-OAEP-3072` (OAEP with SHA-1, Avalon's suite) or `RSA-OAEP-3072-SHA256`.
    pub key_encryption_algorithm: String,
    /// `AES-GCM-256`.
    pub data_encryption_algorithm: String,
    /// `JSON-RPC`: a string, not a list.
    pub work_order_payload_formats: String,
    /// The keys and the attestation.
    pub worker_type_data: WorkerTypeData,
}

/// `details.workerTypeData`: the worker's keys and the evidence that binds them to a TEE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTypeData {
    /// The secp256k1 verification key PEM that results are signed with.
    pub verification_key: String,
    /// Measurements (hex), e.g. the basename and MRENCLAVE.
    #[serde(default)]
    pub extended_measurements: Vec<String>,
    /// The kind of `proofData` (`TEE-SGX-IAS` in Avalon).
    pub proof_data_type: String,
    /// The evidence as a JSON-encoded string; `""` when there is none.
    pub proof_data: String,
    /// The RSA encryption key PEM that session keys are wrapped with.
    pub encryption_key: String,
    /// Upper-case hex DER signature by the verification key over SHA-256(`encryptionKey`).
    pub encryption_key_signature: String,
    /// EEA optional field, absent in Avalon's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_nonce: Option<String>,
    /// A field Avalon's SDK knows but never fills; afallon carries simulated evidence here, so
    /// that `proofData` stays empty for simulated workers as Avalon's clients expect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enclave_certificate: Option<String>,
}

/// The key-encryption algorithm a worker advertises (`keyEncryptionAlgorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyEncryption {
    /// `RSA-OAEP-3072`: OAEP with SHA-1 and MGF1-SHA-1, Avalon's wire suite.
    #[default]
    RsaOaep3072,
    /// `RSA-OAEP-3072-SHA256`: OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep3072Sha256,
}

impl KeyEncryption {
    /// The name in worker records.
    pub fn name(self) -> &'static str {
        match self {
            Self::RsaOaep3072 => "RSA-OAEP-3072",
            Self::RsaOaep3072Sha256 => "RSA-OAEP-3072-SHA256",
        }
    }

    /// The algorithm a worker record names.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::RsaOaep3072, Self::RsaOaep3072Sha256].into_iter().find(|k| k.name() == name)
    }

    /// The OAEP hash it stands for.
    pub fn oaep_hash(self) -> OaepHash {
        match self {
            Self::RsaOaep3072 => OaepHash::Sha1,
            Self::RsaOaep3072Sha256 => OaepHash::Sha256,
        }
    }
}
