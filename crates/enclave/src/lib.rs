//! The trusted core: everything that would run inside a TEE, behind a message-shaped interface.
//!
//! An [`Enclave`] holds a worker's keys and its workloads. It is created by sign-up
//! ([`Enclave::create`]: fresh keys, evidence from the [`Platform`], the worker record) or
//! restored from its sealed keys ([`Enclave::restore`]). Work orders go in as the raw
//! `WorkOrderSubmit` request bytes and come out as the JSON-RPC response the worker stores
//! ([`Enclave::process`]); nothing else crosses the boundary but sealed blobs, which only the same
//! enclave on the same platform can open.
//!
//! This crate does no I/O: no files, sockets or clocks. The host stores what it is handed (the
//! worker record, sealed keys, sealed workload state) and passes file access for workloads in as a
//! [`HostIo`]. Private keys never leave it in the clear.
//!
//! Processing follows wire spec §3.13 step by step, and failures are answered with the codes and
//! messages of §2.4 ([`ProcessError`]).
//!
//! A host that may run one order twice (its lease ran out) keeps only one run's result, so a
//! stateful workload's change from [`Enclave::process_uncommitted`] is a [`PendingState`]: the
//! host commits it once that run's completion won, and it is rolled back otherwise. Each order
//! of a stateful workload runs on the state of the last committed one.

mod error;
mod keys;
mod process;
mod sealing;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use afallon_attest::{Measurement, Platform, PlatformError, ReportData};
use afallon_crypto::{AesKey, RandomError, RsaError, Sha256};
pub use afallon_proto::KeyEncryption;
use afallon_proto::{
    ReceiptStatus, ReceiptUpdate, WorkerDetails, WorkerRecord, WorkerStatus, WorkerType,
    WorkerTypeData, protection, receipt_update_digest, result_update_data, updater_id,
};
use afallon_workloads::{HostIo, Registry, Workload, WorkloadError};

pub use error::ProcessError;
pub use sealing::SealError;
pub use state::PendingState;

use keys::WorkerKeys;

/// Size limits on what a work order may carry; beyond them it fails with a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The request's size and item count, as the listener also checks them.
    pub request: afallon_proto::RequestLimits,
    /// The most output bytes a workload may produce for one order.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { request: afallon_proto::RequestLimits::default(), max_output_bytes: 8 << 20 }
    }
}

/// Who the worker is, as its record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnclaveConfig {
    /// The worker's name; its workerId is SHA-256 of it in hex.
    pub worker_name: String,
    /// `organizationId`.
    pub organization_id: String,
    /// `applicationTypeId`.
    pub application_type_id: String,
    /// `keyEncryptionAlgorithm`.
    pub key_encryption: KeyEncryption,
    /// Size limits.
    pub limits: Limits,
}

impl EnclaveConfig {
    /// A worker called `worker_name` with Avalon's default organization and application type ids.
    pub fn new(worker_name: impl Into<String>) -> Self {
        Self {
            worker_name: worker_name.into(),
            organization_id: "aabbcc1234ddeeffaabbcc1234ddeeffaabbcc1234ddeeffaabbcc1234ddeeff"
                .into(),
            application_type_id: "11aa22bb33cc44dd11aa22bb33cc44dd11aa22bb33cc44dd11aa22bb33cc44dd"
                .into(),
            key_encryption: KeyEncryption::default(),
            limits: Limits::default(),
        }
    }
}

/// Why an enclave could not be created or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnclaveError {
    /// RSA key generation failed.
    #[error("RSA: {0}")]
    Rsa(#[from] RsaError),
    /// The random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The platform failed to attest.
    #[error("platform: {0}")]
    Platform(#[from] PlatformError),
    /// A sealed blob could not be opened.
    #[error("sealed data: {0}")]
    Seal(#[from] SealError),
    /// A sealed workload state was refused by its workload.
    #[error("state of workload {workload}: {error}")]
    WorkloadState {
        /// The workload.
        workload: String,
        /// What it said.
        error: WorkloadError,
    },
    /// Sealed state for a workload this enclave does not have.
    #[error("sealed state for unknown workload {0}")]
    UnknownWorkload(String),
}

/// A workload's sealed state, for the host to keep and hand back at restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedState {
    /// The workload's name.
    pub workload: String,
    /// One more than the version it was computed from (`based_on`): each committed change of a
    /// workload's state has the next version, in whichever process serving the worker it ran.
    pub version: u64,
    /// The version of the state the order ran on (0: the workload's initial state). A host
    /// sharing the worker with other processes stores this state only if that is still the
    /// stored version; otherwise another process's change came first, and the order must run
    /// again on it ([`Enclave::load_state`]).
    pub based_on: u64,
    /// The sealed blob.
    pub blob: Vec<u8>,
}

/// What processing one work order gives the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// The JSON-RPC response to store: `{"jsonrpc": "2.0", "id": .., "result" | "error": ..}`.
    pub response: String,
    /// Why it failed, if it did (the same code and message as in `response`).
    pub error: Option<ProcessError>,
    /// The workload's new sealed state, if it has state; the host must store it with the
    /// response (and, from [`Enclave::process_uncommitted`], commit the [`PendingState`] only if
    /// that completion won).
    pub state: Option<SealedState>,
}

/// A signed-up worker's trusted core.
pub struct Enclave {
    keys: WorkerKeys,
    sealing_key: AesKey,
    registry: Registry,
    config: EnclaveConfig,
    record: WorkerRecord,
    worker_id: String,
    /// Each workload's turn, held by a stateful workload's order until its state change is
    /// committed or rolled back.
    state_slots: BTreeMap<&'static str, Arc<state::StateSlot>>,
}

impl Enclave {
    /// Signs up a new worker: fresh keys, the encryption-key signature, evidence from `platform`
    /// binding the verification key, and the worker record. Returns the enclave and its sealed
    /// keys, which the host must store to restart the same worker.
    ///
    /// # Errors
    /// [`EnclaveError`] if keys cannot be generated or the platform cannot attest.
    pub fn create(
        platform: &dyn Platform,
        registry: Registry,
        config: EnclaveConfig,
    ) -> Result<(Self, Vec<u8>), EnclaveError> {
        let keys = WorkerKeys::generate()?;
        let sealing_key = platform.sealing_key();
        let sealed_keys = keys.seal(&sealing_key)?;
        Ok((Self::assemble(platform, keys, sealing_key, registry, config)?, sealed_keys))
    }

    /// Restarts a worker from its sealed keys and its workloads' sealed states.
    ///
    /// # Errors
    /// [`EnclaveError::Seal`] if a blob was sealed by another enclave or platform or was altered;
    /// [`EnclaveError::WorkloadState`] or [`EnclaveError::UnknownWorkload`] for states the
    /// workloads refuse.
    pub fn restore(
        platform: &dyn Platform,
        registry: Registry,
        config: EnclaveConfig,
        sealed_keys: &[u8],
        states: &[SealedState],
    ) -> Result<Self, EnclaveError> {
        let sealing_key = platform.sealing_key();
        let keys = WorkerKeys::unseal(&sealing_key, sealed_keys)?;
        for state in states {
            let workload = registry
                .get(&state.workload)
                .ok_or_else(|| EnclaveError::UnknownWorkload(state.workload.clone()))?;
            let snapshot = sealing::unseal(
                &sealing_key,
                &state_label(&state.workload, state.version),
                &state.blob,
            )
            .or_else(|_| {
                // Sealed before the version was sealed with the state: accepted at a
                // restart only (docs/security.md).
                sealing::unseal(&sealing_key, &legacy_state_label(&state.workload), &state.blob)
            })?;
            workload.restore(&snapshot).map_err(|error| EnclaveError::WorkloadState {
                workload: state.workload.clone(),
                error,
            })?;
        }
        let enclave = Self::assemble(platform, keys, sealing_key, registry, config)?;
        for state in states {
            if let Some(slot) = enclave.state_slots.get(state.workload.as_str()) {
                slot.set_version(state.version);
            }
        }
        Ok(enclave)
    }

    fn assemble(
        platform: &dyn Platform,
        keys: WorkerKeys,
        sealing_key: AesKey,
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
        Ok(Self { keys, sealing_key, registry, config, record, worker_id, state_slots })
    }

    /// The worker's id: SHA-256 of its name, lower-case hex.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The worker record to register (wire spec §1.9).
    pub fn worker_record(&self) -> &WorkerRecord {
        &self.record
    }

    /// The workloads this enclave runs.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Processes one work order: the raw `WorkOrderSubmit` JSON-RPC request in, the JSON-RPC
    /// response to store out. Never panics on any input; every failure is an error response.
    ///
    /// A stateful workload's state change takes effect at once: for a host that runs each order
    /// once. A host that may run an order twice (leases) uses [`Enclave::process_uncommitted`].
    pub fn process(&self, raw_request: &[u8], io: &dyn HostIo) -> Processed {
        let (processed, pending) = self.process_uncommitted(raw_request, io);
        if let Some(pending) = pending {
            pending.commit();
        }
        processed
    }

    /// As [`Enclave::process`], but a stateful workload's state change is pending: the host
    /// stores the response with [`Processed::state`], then commits the [`PendingState`] if its
    /// completion won, or drops it (rolling the workload back) if it did not. Until then the
    /// workload runs no other order (another call for it waits), so each order runs on the state
    /// of the last committed one and a run whose result is not kept changes nothing.
    pub fn process_uncommitted(
        &self,
        raw_request: &[u8],
        io: &dyn HostIo,
    ) -> (Processed, Option<PendingState>) {
        process::process(self, raw_request, io)
    }

    /// The receipt update a worker appends after processing an order (wire spec §3.11):
    /// `updateType` 2 (processed) or 3 (failed, when the response is an error), `updateData` the
    /// upper-case hex SHA-256 of the stored response, signed with the worker's key.
    pub fn receipt_update(
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

    /// Waits for `workload`'s turn (see [`PendingState`]) and takes it.
    fn hold_state(&self, workload: &Arc<dyn Workload>) -> Option<PendingState> {
        self.state_slots.get(workload.name()).map(|slot| slot.hold(workload))
    }

    /// Seals `workload`'s state after an order, as the next version of the state `pending` was
    /// taken on.
    fn seal_workload_state(
        &self,
        workload: &str,
        snapshot: &[u8],
        pending: &mut PendingState,
    ) -> Option<SealedState> {
        let based_on = pending.based_on();
        let version = based_on + 1;
        let blob =
            sealing::seal(&self.sealing_key, &state_label(workload, version), snapshot).ok()?;
        pending.will_be(version);
        Some(SealedState { workload: workload.to_owned(), version, based_on, blob })
    }

    /// Loads a workload's sealed state if it is newer than the one this enclave runs on: the
    /// change another process serving the same worker committed. Waits for the workload's turn
    /// (no order of it runs meanwhile). Returns whether it loaded anything.
    ///
    /// # Errors
    /// [`EnclaveError::UnknownWorkload`], [`EnclaveError::Seal`] for a blob not sealed by this
    /// worker's platform, or [`EnclaveError::WorkloadState`]; the state is then unchanged.
    pub fn load_state(&self, state: &SealedState) -> Result<bool, EnclaveError> {
        let workload = self
            .registry
            .get(&state.workload)
            .ok_or_else(|| EnclaveError::UnknownWorkload(state.workload.clone()))?;
        let Some(mut pending) = self.hold_state(workload) else {
            return Err(EnclaveError::UnknownWorkload(state.workload.clone()));
        };
        if state.version <= pending.based_on() {
            return Ok(false);
        }
        let snapshot = sealing::unseal(
            &self.sealing_key,
            &state_label(&state.workload, state.version),
            &state.blob,
        )?;
        workload.restore(&snapshot).map_err(|error| EnclaveError::WorkloadState {
            workload: state.workload.clone(),
            error,
        })?;
        pending.will_be(state.version);
        pending.commit();
        Ok(true)
    }
}

impl std::fmt::Debug for Enclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enclave")
            .field("worker_id", &self.worker_id)
            .field("workloads", &self.registry)
            .finish_non_exhaustive()
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

/// The measurement a simulated TEE reports for this enclave build with these workloads: SHA-256
/// of the crate version and the workload names. On real hardware the TEE measures the code itself.
pub fn sim_measurement(registry: &Registry) -> Measurement {
    let mut h = Sha256::new();
    h.update(b"afallon-enclave/");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    for name in registry.names() {
        h.update(b"\n");
        h.update(name.as_bytes());
    }
    Measurement(*h.finalize().as_bytes())
}
