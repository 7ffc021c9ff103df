//! Work-order JSON (wire spec §2): the `WorkOrderSubmit` params, data items, the worker's result
//! and its error response.
//!
//! Every string is kept exactly as it arrived: the request and response hashes are computed over
//! the literal JSON strings (no hex normalisation, `0x` kept, case kept), so nothing here decodes
//! or re-encodes a field.

use serde::{Deserialize, Serialize};

/// The params of `WorkOrderSubmit` (wire spec §2.1): a requester's encrypted, hashed and optionally
/// signed work order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkOrderRequest {
    /// Read by no one; Avalon's SDK sends 6000.
    pub response_timeout_m_secs: i64,
    /// `JSON-RPC` or `json-rpc`.
    pub payload_format: String,
    /// Optional; unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_uri: Option<String>,
    /// Optional; unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_uri: Option<String>,
    /// The requester's id for this work order (hex; opaque, case-sensitive).
    pub work_order_id: String,
    /// The worker it is addressed to.
    pub worker_id: String,
    /// Hex of the UTF-8 workload name.
    pub workload_id: String,
    /// The requester's id.
    pub requester_id: String,
    /// Hex of the worker's encryption-key PEM; optional and unused by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_encryption_key: Option<String>,
    /// `AES-GCM-256` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_encryption_algorithm: Option<String>,
    /// Upper-case hex of the RSA-OAEP-wrapped session key.
    pub encrypted_session_key: String,
    /// Upper-case hex of the 12-byte session IV; optional in the schema, required by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key_iv: Option<String>,
    /// The requester's nonce (hex).
    pub requester_nonce: String,
    /// Upper-case hex of AES-GCM(session key, IV, request hash).
    pub encrypted_request_hash: String,
    /// Base64 DER ECDSA signature over the request hash; `""` or absent when unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_signature: Option<String>,
    /// The requester's public key PEM, needed when `requesterSignature` is not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifying_key: Option<String>,
    /// The inputs; the worker refuses an empty list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_data: Vec<DataItem>,
    /// Optional output slots: an item here fixes the index, key and IV of the matching output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_data: Vec<DataItem>,
}

/// One `inData` or `outData` element (wire spec §2.2). Keys the schema does not name are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataItem {
    /// The item's position; items are processed and hashed in ascending index order.
    pub index: i64,
    /// Hex SHA-256 of the plaintext; optional on input, upper-case on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hash: Option<String>,
    /// Base64 of the (usually encrypted) data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// `""`/`"null"`/absent: session key; `"-"`: plain; else a wrapped per-item key (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_data_encryption_key: Option<String>,
    /// Hex IV of a per-item key; `""` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<String>,
}

impl DataItem {
    /// The item's contribution to a request or response hash:
    /// `dataHash + data + encryptedDataEncryptionKey + iv`, missing fields as `""`.
    pub fn hash_contribution(&self) -> [&str; 4] {
        [
            self.data_hash.as_deref().unwrap_or(""),
            self.data.as_deref().unwrap_or(""),
            self.encrypted_data_encryption_key.as_deref().unwrap_or(""),
            self.iv.as_deref().unwrap_or(""),
        ]
    }
}

/// A worker's successful result (wire spec §2.3): what `WorkOrderGetResult` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkOrderResult {
    /// As in the request.
    pub work_order_id: String,
    /// As in the request.
    pub workload_id: String,
    /// As in the request.
    pub worker_id: String,
    /// As in the request.
    pub requester_id: String,
    /// The worker's nonce, part of the response hash.
    pub worker_nonce: String,
    /// Base64 DER ECDSA signature over the response hash.
    pub worker_signature: String,
    /// The outputs, sorted by index.
    pub out_data: Vec<DataItem>,
    /// Pool model: the per-order verification key PEM that `workerSignature` is made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_verification_key: Option<String>,
    /// Pool model: base64 DER signature by the worker's key over
    /// SHA-256(`extVerificationKey` + `requesterNonce`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_verification_key_signature: Option<String>,
}

/// `data` of every work-order error: `{"workOrderId": <id>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkOrderErrorData {
    /// The work order the error is about.
    pub work_order_id: String,
}
