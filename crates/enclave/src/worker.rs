//! A started worker inside the enclave: its keys, its workloads and their state turns, and what
//! it does with them (process an order, sign a receipt update, load a newer state).

use std::collections::BTreeMap;
use std::sync::Arc;

use afallon_attest::{Platform, ReportData};
use afallon_proto::{
    ReceiptStatus, ReceiptUpdate, WorkerDetails, WorkerRecord, WorkerStatus, WorkerType,
    WorkerTypeData, protection, receipt_update_digest, result_update_data, updater_id,
};
use afallon_workloads::{Registry, Workload};

use crate::keys::WorkerKeys;
use crate::state::{StateSlot, StateTurn};
use crate::{EnclaveConfig, EnclaveError, SealedState, WorkloadInfo};

/// A signed-up worker's trusted core.
pub(crate) struct Worker {
    pub(crate) keys: WorkerKeys,
    platform: Arc<dyn Platform>,
    pub(crate) registry: Registry,
    pub(crate) config: EnclaveConfig,
    pub(crate) record: WorkerRecord,
    pub(crate) worker_id: String,
    /// Each workload's turn, held by a stateful workload's order until its state change is
    /// committed or rolled back.
    state_slots: BTreeMap<&'static str, Arc<StateSlot>>,
}

impl Worker {
    /// Signs up a new worker: fresh keys, the encryption-key signature, evidence binding the
    /// verification key, and the worker record; with its sealed keys.
    pub(crate) fn create(
        platform: Arc<dyn Platform>,
        registry: Registry,
        config: EnclaveConfig,
    ) -> Result<(Self, Vec<u8>), EnclaveError> {
        let keys = WorkerKeys::generate()?;
        let sealed_keys = keys.seal(&*platform)?;
        Ok((Self::assemble(platform, keys, registry, config)?, sealed_keys))
    }

    /// Restarts a worker from its sealed keys and its workloads' sealed states.
    pub(crate) fn restore(
        platform: Arc<dyn Platform>,
        registry: Registry,
        config: EnclaveConfig,
        sealed_keys: &[u8],
        states: &[SealedState],
    ) -> Result<Self, EnclaveError> {
        let keys = WorkerKeys::unseal(&*platform, sealed_keys)?;
        for state in states {
            let workload = registry
                .get(&state.workload)
                .ok_or_else(|| EnclaveError::UnknownWorkload(state.workload.clone()))?;
            let snapshot = platform
                .unseal(&state_label(&state.workload, state.version), &state.blob)
                .or_else(|_| {
                    // Sealed before the version was sealed with the state: accepted at a
                    // restart only (docs/security.md).
                    platform.unseal(&legacy_state_label(&state.workload), &state.blob)
                })?;
            workload.restore(&snapshot).map_err(|error| EnclaveError::WorkloadState {
                workload: state.workload.clone(),
                error,
            })?;
        }
        let worker = Self::assemble(platform, keys, registry, config)?;
        for state in states {
            if let Some(slot) = worker.state_slots.get(state.workload.as_str()) {
                slot.set_version(state.version);
            }
        }
        Ok(worker)
    }

    fn assemble(
        platform: Arc<dyn Platform>,
        keys: WorkerKeys,
        registry: Registry,
        config: EnclaveConfig,
    ) -> Result<Self, EnclaveError> {
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
        let state_slots = registry.names().map(|name| (name, Arc::default())).collect();
        Ok(Self { keys, platform, registry, config, record, worker_id, state_slots })
    }

    /// The workloads it runs, for the host.
    pub(crate) fn workloads(&self) -> Vec<WorkloadInfo> {
        self.registry
            .names()
            .filter_map(|name| self.registry.get(name))
            .map(|workload| WorkloadInfo {
                name: workload.name().to_owned(),
                stateful: workload.stateful(),
            })
            .collect()
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

    /// Waits for `workload`'s turn (see [`StateTurn`]) and takes it.
    pub(crate) fn hold_state(&self, workload: &Arc<dyn Workload>) -> Option<StateTurn> {
        self.state_slots.get(workload.name()).map(|slot| slot.hold(workload))
    }

    /// Seals `workload`'s state after an order, as the next version of the state `turn` was
    /// taken on.
    ///
    /// # Errors
    /// The platform's [`afallon_attest::SealError`]: the order must then fail and change nothing.
    pub(crate) fn seal_workload_state(
        &self,
        workload: &str,
        snapshot: &[u8],
        turn: &mut StateTurn,
    ) -> Result<SealedState, afallon_attest::SealError> {
        let based_on = turn.based_on();
        let version = based_on + 1;
        let blob = self.platform.seal(&state_label(workload, version), snapshot)?;
        turn.will_be(version);
        Ok(SealedState { workload: workload.to_owned(), version, based_on, blob })
    }

    /// Loads a workload's sealed state if it is newer than the one this enclave runs on: the
    /// change another process serving the same worker committed. Waits for the workload's turn
    /// (no order of it runs meanwhile). Returns whether it loaded anything; on an error the state
    /// is unchanged.
    pub(crate) fn load_state(&self, state: &SealedState) -> Result<bool, EnclaveError> {
        let workload = self
            .registry
            .get(&state.workload)
            .ok_or_else(|| EnclaveError::UnknownWorkload(state.workload.clone()))?;
        let Some(mut turn) = self.hold_state(workload) else {
            return Err(EnclaveError::UnknownWorkload(state.workload.clone()));
        };
        if state.version <= turn.based_on() {
            return Ok(false);
        }
        let snapshot =
            self.platform.unseal(&state_label(&state.workload, state.version), &state.blob)?;
        workload.restore(&snapshot).map_err(|error| EnclaveError::WorkloadState {
            workload: state.workload.clone(),
            error,
        })?;
        turn.will_be(state.version);
        turn.commit();
        Ok(true)
    }
}

/// What a workload's state is sealed under: its name and its version, so that a blob cannot be
/// passed off as another workload's state, nor an old state as a newer version (a host that
/// relabels an old blob with a higher version gets a blob that does not unseal).
fn state_label(workload: &str, version: u64) -> String {
    format!("workload-state:{workload}:v{version}")
}

/// The label of states sealed before their version was.
fn legacy_state_label(workload: &str) -> String {
    format!("workload-state:{workload}")
}
