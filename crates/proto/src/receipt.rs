//! Work-order receipts (EEA §7; wire spec §1.8 and §3.11): the create request, update objects, and
//! the digests their signatures cover.

use afallon_crypto::{Sha256, Sha256Digest};
use serde::{Deserialize, Serialize};

/// The params of `WorkOrderReceiptCreate`, also what `WorkOrderReceiptRetrieve` returns (plus the
/// current status). Every field is optional in the schema; the listener checks the rest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptCreate {
    /// The work order the receipt is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order_id: Option<String>,
    /// The worker service (the workerId in the direct model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_service_id: Option<String>,
    /// The worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// The requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_id: Option<String>,
    /// [`crate::ReceiptStatus`] code at creation (0, pending, from Avalon's client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_create_status: Option<i64>,
    /// Base64 of the work order's request hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order_request_hash: Option<String>,
    /// A requester nonce (Avalon sends a decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_generated_nonce: Option<String>,
    /// Base64 DER signature over [`receipt_create_digest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_signature: Option<String>,
    /// `SHA-256/SECP256K1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_rules: Option<String>,
    /// The requester's public key PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_verification_key: Option<String>,
}

/// The params of `WorkOrderReceiptUpdate`, and the stored update object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptUpdate {
    /// The work order the receipt is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order_id: Option<String>,
    /// The updater: hex of its public key PEM without armour lines or newlines ([`updater_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updater_id: Option<String>,
    /// [`crate::ReceiptStatus`] code (or an application-specific one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_type: Option<i64>,
    /// For processed/completed: upper-case hex SHA-256 of the result JSON; else free data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_data: Option<String>,
    /// Base64 DER signature over [`receipt_update_digest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_signature: Option<String>,
    /// `SHA-256/SECP256K1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_rules: Option<String>,
    /// The updater's public key PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_verification_key: Option<String>,
}

/// The digest a receipt-create signature covers: SHA-256 of `workOrderId + workerServiceId +
/// workerId + requesterId + str(receiptCreateStatus) + workOrderRequestHash +
/// requesterGeneratedNonce` (missing strings as `""`; a missing status as `0`).
pub fn receipt_create_digest(receipt: &ReceiptCreate) -> Sha256Digest {
    let mut h = Sha256::new();
    let s = |field: &Option<String>| field.as_deref().unwrap_or("").to_owned();
    h.update(s(&receipt.work_order_id).as_bytes());
    h.update(s(&receipt.worker_service_id).as_bytes());
    h.update(s(&receipt.worker_id).as_bytes());
    h.update(s(&receipt.requester_id).as_bytes());
    h.update(receipt.receipt_create_status.unwrap_or(0).to_string().as_bytes());
    h.update(s(&receipt.work_order_request_hash).as_bytes());
    h.update(s(&receipt.requester_generated_nonce).as_bytes());
    h.finalize()
}

/// The digest a receipt-update signature covers: SHA-256 of
/// `workOrderId + str(updateType) + updateData`.
pub fn receipt_update_digest(update: &ReceiptUpdate) -> Sha256Digest {
    let mut h = Sha256::new();
    h.update(update.work_order_id.as_deref().unwrap_or("").as_bytes());
    h.update(update.update_type.unwrap_or(0).to_string().as_bytes());
    h.update(update.update_data.as_deref().unwrap_or("").as_bytes());
    h.finalize()
}

/// An updater's id: hex of its public key PEM with the armour lines and every newline removed
/// (the form Avalon's SDK gives a worker id from its key; the schema demands hex).
pub fn updater_id(verification_key_pem: &str) -> String {
    let stripped = verification_key_pem
        .replace("-----BEGIN PUBLIC KEY-----", "")
        .replace("-----END PUBLIC KEY-----", "")
        .replace('\n', "");
    hex::encode(stripped)
}

/// `updateData` of a processed or completed update: upper-case hex SHA-256 of the UTF-8 of the
/// work-order response JSON exactly as stored.
pub fn result_update_data(response_json: &str) -> String {
    afallon_crypto::sha256(response_json.as_bytes()).to_hex_upper()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_digest_concatenates_in_order() {
        let receipt = ReceiptCreate {
            work_order_id: Some("aa".into()),
            worker_service_id: Some("bb".into()),
            worker_id: Some("cc".into()),
            requester_id: Some("dd".into()),
            receipt_create_status: Some(0),
            work_order_request_hash: Some("HASH=".into()),
            requester_generated_nonce: Some("12345".into()),
            ..Default::default()
        };
        assert_eq!(receipt_create_digest(&receipt), afallon_crypto::sha256(b"aabbccdd0HASH=12345"));
    }

    #[test]
    fn update_digest_and_updater_id() {
        let update = ReceiptUpdate {
            work_order_id: Some("aa".into()),
            update_type: Some(2),
            update_data: Some("FEED".into()),
            ..Default::default()
        };
        assert_eq!(receipt_update_digest(&update), afallon_crypto::sha256(b"aa2FEED"));
        assert_eq!(
            updater_id("-----BEGIN PUBLIC KEY-----\nAAAA\nBBBB\n-----END PUBLIC KEY-----\n"),
            hex::encode("AAAABBBB")
        );
    }
}
