//! A started singleton worker (or a pool's KME) inside the enclave: its keys, its record, and
//! what it signs.

use std::sync::Arc;

use afallon_attest::{Platform, ReportData};
use afallon_proto::{
    ReceiptStatus, ReceiptUpdate, WorkerDetails, WorkerRecord, WorkerStatus, WorkerType,
    WorkerTypeData, protection, receipt_update_digest, result_update_data, updater_id,
};

use crate::keys::WorkerKeys;
use crate::runtime::Runtime;
use crate::{EnclaveConfig, EnclaveError};

/// A signed-up worker's keys and record, and the workloads it runs.
pub(crate) struct Worker {
    pub(crate) keys: Arc<WorkerKeys>,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) record: WorkerRecord,
    pub(crate) worker_id: String,
}

impl Worker {
    /// Signs up a new worker: fresh keys, the encryption-key signature, evidence binding the
    /// verification key, and the worker record; with its sealed keys.
    pub(crate) fn create(runtime: Runtime) -> Result<(Self, Vec<u8>), EnclaveError> {
        let keys = WorkerKeys::generate()?;
        let sealed_keys = keys.seal(&*runtime.platform)?;
        Ok((Self::assemble(keys, runtime)?, sealed_keys))
    }

    /// Restarts a worker from its sealed keys.
    pub(crate) fn restore(runtime: Runtime, sealed_keys: &[u8]) -> Result<Self, EnclaveError> {
        let keys = WorkerKeys::unseal(&*runtime.platform, sealed_keys)?;
        Self::assemble(keys, runtime)
    }

    /// The worker with `keys`, as it was sealed or created.
    pub(crate) fn assemble(keys: WorkerKeys, runtime: Runtime) -> Result<Self, EnclaveError> {
        let platform: &dyn Platform = &*runtime.platform;
        let config: &EnclaveConfig = &runtime.config;
        let verification_key = keys.signing.verifying_key().to_pem();
        let encryption_key = keys.encryption.public_key().to_pem();
        let encryption_key_signature =
            protection::sign_encryption_key(&keys.signing, &encryption_key);
        let evidence = platform.evidence(&ReportData::for_verification_key(&verification_key))?;
        let proof = evidence.to_worker_proof();
        let record = WorkerRecord {
            worker_type: WorkerType::TeeSgx.code(),
            organization_id: config.organization_id.clone(),
            application_type_id: config.application_type_id.clone(),
            details: WorkerDetails {
                work_order_sync_uri: String::new(),
                work_order_async_uri: String::new(),
                work_order_pull_uri: String::new(),
                work_order_notify_uri: String::new(),
                receipt_invocation_uri: String::new(),
                work_order_invocation_address: String::new(),
                receipt_invocation_address: String::new(),
                from_address: String::new(),
                hashing_algorithm: "SHA-256".into(),
                signing_algorithm: "SECP256K1".into(),
                key_encryption_algorithm: config.key_encryption.name().into(),
                data_encryption_algorithm: "AES-GCM-256".into(),
                work_order_payload_formats: "JSON-RPC".into(),
                worker_type_data: WorkerTypeData {
                    verification_key,
                    extended_measurements: vec![platform.measurement().to_hex_upper()],
                    proof_data_type: proof.proof_data_type,
                    proof_data: proof.proof_data,
                    encryption_key,
                    encryption_key_signature,
                    encryption_key_nonce: None,
                    enclave_certificate: proof.enclave_certificate,
                },
            },
            status: WorkerStatus::Active.code(),
        };
        let worker_id = afallon_proto::worker_id_from_name(&config.worker_name);
        Ok(Self { keys: Arc::new(keys), runtime: Arc::new(runtime), record, worker_id })
    }

    /// The receipt update a worker appends after processing an order (wire spec §3.11):
    /// `updateType` 2 (processed) or 3 (failed, when the response is an error), `updateData` the
    /// upper-case hex SHA-256 of the stored response, signed with the worker's key.
    pub(crate) fn receipt_update(
        &self,
        work_order_id: &str,
        response: &str,
        failed: bool,
    ) -> ReceiptUpdate {
        let verification_key = &self.record.details.worker_type_data.verification_key;
        let update_type = if failed { ReceiptStatus::Failed } else { ReceiptStatus::Processed };
        let mut update = ReceiptUpdate {
            work_order_id: Some(work_order_id.to_owned()),
            updater_id: Some(updater_id(verification_key)),
            update_type: Some(update_type.code()),
            update_data: Some(result_update_data(response)),
            update_signature: None,
            signature_rules: Some("SHA-256/SECP256K1".into()),
            receipt_verification_key: Some(verification_key.clone()),
        };
        update.update_signature = Some(protection::sign_digest_base64(
            &self.keys.signing,
            &receipt_update_digest(&update),
        ));
        update
    }
}
