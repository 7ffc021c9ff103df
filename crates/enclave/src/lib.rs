//! The trusted core: everything that would run inside a TEE, behind a message-shaped interface.
//!
//! An [`Enclave`] is spoken to in [`Request`]s and answers in [`Response`]s ([`Enclave::call`]),
//! plain data that can cross an in-process call, a pipe to an enclave process
//! ([`pipe`]) or a TEE's own boundary. It never calls the host: a workload's file access is a
//! [`Response::HostIo`] that the host answers with [`Request::ContinueWorkOrder`], and the
//! randomness and sealing it needs come from its [`Platform`]. Every failure is an answer.
//!
//! A worker is started by sign-up (fresh keys, evidence from the platform, the worker record) or
//! restored from its sealed keys ([`Request::Start`]). Work orders go in as the raw
//! `WorkOrderSubmit` request bytes and come out as the JSON-RPC response the worker stores
//! ([`Request::ProcessWorkOrder`]); nothing else crosses the boundary but sealed blobs, which
//! only the same enclave on the same platform can open. Private keys never leave it in the clear.
//! The host's side of all this is [`EnclaveClient`] over an [`EnclaveLink`].
//!
//! Processing follows wire spec §3.13 step by step, and failures are answered with the codes and
//! messages of §2.4 ([`ProcessError`]).
//!
//! A host that may run one order twice (its lease ran out) keeps only one run's result, so a
//! stateful workload's change is pending ([`StateTicket`], held by the host as a
//! [`PendingState`]): the host commits it once that run's completion won, and it is rolled back
//! otherwise. Each order of a stateful workload runs on the state of the last committed one. A
//! state that cannot be sealed fails the order and changes nothing.

mod error;
mod host_io;
mod keys;
mod link;
mod messages;
pub mod pipe;
pub mod pool;
mod process;
mod runtime;
mod state;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use afallon_attest::{Measurement, Platform, PlatformError, SealError};
use afallon_crypto::{EcdhSecret, RandomError, RsaError, Sha256};
pub use afallon_proto::KeyEncryption;
use afallon_workloads::{Registry, WorkloadError};
use serde::{Deserialize, Serialize};

pub use error::ProcessError;
pub use link::{EnclaveClient, EnclaveLink, PendingState, WpeClient};
pub use messages::{
    Attestation, DataKey, Failure, FailureKind, HostIoFailure, HostIoReply, HostIoRequest,
    OrderTicket, PoolKeys, PoolKeysExport, PreProcessed, Request, Response, Role, Started,
    StateTicket, WorkloadInfo,
};

use host_io::{Running, Step};
use keys::OrderKeys;
use pool::{Kme, Purpose, Wpe};
use process::Begun;
use runtime::Runtime;
use state::StateTurn;
use worker::Worker;

/// Size limits on what a work order may carry; beyond them it fails with a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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

/// Why a worker could not be started, or a state loaded (answered as a [`Failure`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum EnclaveError {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedState {
    /// The workload's name.
    pub workload: String,
    /// One more than the version it was computed from (`based_on`): each committed change of a
    /// workload's state has the next version, in whichever process serving the worker it ran.
    pub version: u64,
    /// The version of the state the order ran on (0: the workload's initial state). A host
    /// sharing the worker with other processes stores this state only if that is still the
    /// stored version; otherwise another process's change came first, and the order must run
    /// again on it ([`Request::LoadState`]).
    pub based_on: u64,
    /// The sealed blob.
    #[serde(with = "messages::base64_bytes")]
    pub blob: Vec<u8>,
}

/// What processing one work order gives the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Processed {
    /// The JSON-RPC response to store: `{"jsonrpc": "2.0", "id": .., "result" | "error": ..}`.
    pub response: String,
    /// Why it failed, if it did (the same code and message as in `response`).
    pub error: Option<ProcessError>,
    /// The workload's new sealed state, if it has state; the host must store it with the
    /// response, and commit the state change only if that completion won.
    pub state: Option<SealedState>,
}

/// An enclave: started by [`Request::Start`], then spoken to in [`Request`]s.
pub struct Enclave {
    platform: Arc<dyn Platform>,
    registry: Registry,
    core: OnceLock<Core>,
    starting: Mutex<()>,
    /// Its transport key (secp256k1 ECDH) for pools, made when first needed: what it attests to
    /// before it joins a pool as a KME, and what it registers with as a WPE.
    transport: Mutex<Option<Arc<EcdhSecret>>>,
    /// State changes waiting for the host's word.
    changes: Mutex<HashMap<u64, StateTurn>>,
    /// Orders waiting for the host's file access.
    suspended: Mutex<HashMap<u64, Running>>,
    next_ticket: AtomicU64,
}

impl Enclave {
    /// An enclave on `platform` with `registry`'s workloads, not yet started.
    pub fn new(platform: Arc<dyn Platform>, registry: Registry) -> Self {
        Self {
            platform,
            registry,
            core: OnceLock::new(),
            starting: Mutex::new(()),
            transport: Mutex::new(None),
            changes: Mutex::default(),
            suspended: Mutex::default(),
            next_ticket: AtomicU64::new(1),
        }
    }

    /// Carries out one request. Never panics on any input; every failure is an answer.
    pub fn call(&self, request: Request) -> Response {
        if let Request::Start { config, role, sealed_keys, states } = request {
            return self.start(config, role, sealed_keys, &states);
        }
        let Some(core) = self.core.get() else {
            if let Request::Attest { nonce } = request {
                // An enclave about to join a pool as a KME attests first; only one measured as
                // a KME does.
                if self.platform.measurement() != sim_kme_measurement() {
                    return failed(FailureKind::WrongRole, "only a KME attests before it starts");
                }
                return answer(self.attest(Purpose::Join, &nonce, None).map(Response::Attested));
            }
            return failed(FailureKind::NotStarted, "the enclave has not been started");
        };
        match (request, core) {
            (Request::Start { .. }, _) => failed(FailureKind::AlreadyStarted, "started already"),
            (Request::ProcessWorkOrder { raw }, Core::Singleton(worker)) => {
                self.begin(&worker.runtime, OrderKeys::Worker(Arc::clone(&worker.keys)), &raw)
            }
            (Request::ProcessPoolOrder { raw, keys }, Core::Wpe(wpe)) => {
                let keys = match keys {
                    PreProcessed::Keys(keys) => wpe.order_keys(*keys),
                    PreProcessed::Refused(error) => Err(error),
                };
                match keys {
                    Ok(keys) => self.begin(&wpe.runtime, OrderKeys::Pooled(Arc::new(keys)), &raw),
                    Err(error) => self.processed(process::refuse(&raw, error), None),
                }
            }
            (Request::ContinueWorkOrder { order, reply }, _) => {
                let Some(running) = lock(&self.suspended).remove(&order.0) else {
                    return failed(
                        FailureKind::UnknownTicket,
                        "no order is waiting on this ticket",
                    );
                };
                running.answer(reply);
                self.step(order, running)
            }
            (Request::CommitState { change }, _) => match lock(&self.changes).remove(&change.0) {
                Some(turn) => {
                    turn.commit();
                    Response::StateCommitted
                }
                None => {
                    failed(FailureKind::UnknownTicket, "no state change is held on this ticket")
                }
            },
            (Request::RollBackState { change }, _) => match lock(&self.changes).remove(&change.0) {
                Some(turn) => {
                    drop(turn);
                    Response::StateRolledBack
                }
                None => {
                    failed(FailureKind::UnknownTicket, "no state change is held on this ticket")
                }
            },
            (Request::LoadState { state }, _) => match core.runtime() {
                Some(runtime) => match runtime.load_state(&state) {
                    Ok(loaded) => Response::StateLoaded { loaded },
                    Err(error) => failed(FailureKind::State, error.to_string()),
                },
                None => core.wrong_role(),
            },
            (Request::SignReceiptUpdate { work_order_id, response, failed }, _) => {
                match core.worker() {
                    Some(worker) => Response::ReceiptUpdate(worker.receipt_update(
                        &work_order_id,
                        &response,
                        failed,
                    )),
                    None => core.wrong_role(),
                }
            }
            (Request::Describe, _) => {
                let started = match core {
                    Core::Singleton(worker) => started(worker, vec![], worker.runtime.workloads()),
                    Core::Kme(kme) => started(&kme.worker, vec![], vec![]),
                    Core::Wpe(wpe) => Started {
                        worker_id: afallon_proto::worker_id_from_name(
                            &wpe.runtime.config.worker_name,
                        ),
                        record: None,
                        sealed_keys: vec![],
                        workloads: wpe.runtime.workloads(),
                    },
                };
                Response::Started(Box::new(started))
            }
            (Request::IssueNonce, Core::Kme(kme)) => answer(kme.issue_nonce().map(Response::Nonce)),
            (Request::RegisterWpe { attestation, nonce }, Core::Kme(kme)) => answer(
                kme.register(&attestation, &nonce, |purpose, bound| {
                    self.attest(purpose, bound, None)
                })
                .map(|kme| Response::WpeRegistered { kme }),
            ),
            (Request::PreProcess { wpe_key, raw }, Core::Kme(kme)) => {
                answer(kme.pre_process(&wpe_key, &raw).map(Response::PreProcessed))
            }
            (Request::Attest { nonce }, Core::Wpe(wpe)) => {
                let tenant = wpe.tenant.as_deref();
                answer(self.attest(Purpose::Register, &nonce, tenant).map(Response::Attested))
            }
            (Request::ExportPoolKeys { attestation, nonce }, Core::Kme(kme)) => {
                let attest = |purpose, bound: &[u8]| self.attest(purpose, bound, None);
                answer(kme.export(&attestation, &nonce, attest).map(Response::PoolKeysExported))
            }
            (Request::AddKme { kme }, Core::Wpe(wpe)) => {
                answer(wpe.add_kme(&kme).map(|()| Response::KmeAdded))
            }
            (_, core) => core.wrong_role(),
        }
    }

    /// Starts processing an order with `keys`: done at once, or on a thread of its own if its
    /// workload uses the host's files.
    fn begin(&self, runtime: &Arc<Runtime>, keys: OrderKeys, raw: &[u8]) -> Response {
        match process::begin(runtime, keys, raw) {
            Begun::Done(processed, turn) => self.processed(processed, turn),
            Begun::UsesHostIo(prepared) => match Running::start(Arc::clone(runtime), prepared) {
                Ok(running) => self.step(OrderTicket(self.ticket()), running),
                Err(message) => failed(FailureKind::Platform, message),
            },
        }
    }

    fn start(
        &self,
        config: EnclaveConfig,
        role: Role,
        sealed_keys: Option<Vec<u8>>,
        states: &[SealedState],
    ) -> Response {
        let _starting = lock(&self.starting);
        if self.core.get().is_some() {
            return failed(FailureKind::AlreadyStarted, "the enclave runs already");
        }
        // The simulated TEE measures each role differently, and an enclave serves only the role
        // it is measured as: a KME's measurement never runs as a singleton worker or a WPE.
        let expected = match &role {
            Role::Singleton => sim_measurement(&self.registry),
            Role::Kme { .. } => sim_kme_measurement(),
            Role::Wpe { .. } => sim_wpe_measurement(&self.registry),
        };
        if self.platform.simulation_key().is_some() && self.platform.measurement() != expected {
            return failed(
                FailureKind::WrongRole,
                "this enclave is not measured as the role it was asked to start as",
            );
        }
        let platform = Arc::clone(&self.platform);
        let signed_up = |registry: Registry, states: &[SealedState]| {
            match &sealed_keys {
                None => Runtime::restore(platform.clone(), registry, config.clone(), states)
                    .and_then(Worker::create),
                Some(keys) => Runtime::restore(platform.clone(), registry, config.clone(), states)
                    .and_then(|runtime| Worker::restore(runtime, keys))
                    .map(|worker| (worker, keys.clone())),
            }
            .map_err(|error| Failure::new(FailureKind::Start, error.to_string()))
        };
        let started = match role {
            Role::Singleton => signed_up(self.registry.clone(), states).map(|(worker, keys)| {
                let started = started(&worker, keys, worker.runtime.workloads());
                (Core::Singleton(Arc::new(worker)), started)
            }),
            Role::Kme { import } => {
                let worker = match import {
                    // Another KME of the pool handed its keys over: sealed here for restarts.
                    Some(export) => self.transport().and_then(|transport| {
                        let keys = pool::import(&*platform, &transport, &export)?;
                        let start =
                            |e: EnclaveError| Failure::new(FailureKind::Start, e.to_string());
                        let sealed = keys.seal(&*platform).map_err(start)?;
                        let runtime =
                            Runtime::new(platform.clone(), Registry::default(), config.clone());
                        Ok((Worker::assemble(keys, runtime).map_err(start)?, sealed))
                    }),
                    None => signed_up(Registry::default(), &[]),
                };
                worker.and_then(|(mut worker, keys)| {
                    let measurements =
                        &mut worker.record.details.worker_type_data.extended_measurements;
                    let wpe_measurement = sim_wpe_measurement(&self.registry);
                    measurements.push(wpe_measurement.to_hex_upper());
                    let started = started(&worker, keys, vec![]);
                    let kme = Kme::new(worker, wpe_measurement, self.transport()?);
                    Ok((Core::Kme(Arc::new(kme)), started))
                })
            }
            Role::Wpe { tenant } => {
                Runtime::restore(platform.clone(), self.registry.clone(), config.clone(), states)
                    .map_err(|error| Failure::new(FailureKind::Start, error.to_string()))
                    .and_then(|runtime| {
                        let wpe =
                            Wpe::new(runtime, tenant, self.transport()?, sim_kme_measurement());
                        let started = Started {
                            worker_id: afallon_proto::worker_id_from_name(&config.worker_name),
                            record: None,
                            sealed_keys: vec![],
                            workloads: wpe.runtime.workloads(),
                        };
                        Ok((Core::Wpe(Arc::new(wpe)), started))
                    })
            }
        };
        match started {
            Ok((core, started)) => {
                let _ = self.core.set(core);
                Response::Started(Box::new(started))
            }
            Err(failure) => Response::Failed(failure),
        }
    }

    /// The enclave's transport key, made the first time.
    fn transport(&self) -> Result<Arc<EcdhSecret>, Failure> {
        let mut transport = lock(&self.transport);
        if let Some(key) = &*transport {
            return Ok(Arc::clone(key));
        }
        let key = Arc::new(
            EcdhSecret::generate()
                .map_err(|e| Failure::new(FailureKind::Platform, e.to_string()))?,
        );
        *transport = Some(Arc::clone(&key));
        Ok(key)
    }

    /// Evidence binding the enclave's transport key, for `purpose`, to `bound` (the other side's
    /// nonce or transport key) and `tenant`.
    fn attest(
        &self,
        purpose: Purpose,
        bound: &[u8],
        tenant: Option<&str>,
    ) -> Result<Attestation, Failure> {
        let transport = self.transport()?;
        pool::attest(&*self.platform, &transport, purpose, bound, tenant)
    }

    /// Waits for a running order's next step: a file access to ask the host for, or its end.
    fn step(&self, order: OrderTicket, running: Running) -> Response {
        match running.next() {
            Step::Io(request) => {
                lock(&self.suspended).insert(order.0, running);
                Response::HostIo { order, request }
            }
            Step::Done(processed, turn) => self.processed(processed, turn),
        }
    }

    fn processed(&self, processed: Processed, turn: Option<StateTurn>) -> Response {
        let change = turn.map(|turn| {
            let ticket = self.ticket();
            lock(&self.changes).insert(ticket, turn);
            StateTicket(ticket)
        });
        Response::WorkOrderProcessed { processed, change }
    }

    fn ticket(&self) -> u64 {
        self.next_ticket.fetch_add(1, Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Enclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enclave")
            .field("role", &self.core.get().map(Core::name))
            .field("workloads", &self.registry)
            .finish_non_exhaustive()
    }
}

/// A started enclave: what it is, with what it holds.
enum Core {
    Singleton(Arc<Worker>),
    Kme(Arc<Kme>),
    Wpe(Arc<Wpe>),
}

impl Core {
    fn name(&self) -> &'static str {
        match self {
            Self::Singleton(_) => "singleton worker",
            Self::Kme(_) => "KME",
            Self::Wpe(_) => "WPE",
        }
    }

    /// The worker whose keys sign: a singleton worker's, or the pool's in its KME.
    fn worker(&self) -> Option<&Worker> {
        match self {
            Self::Singleton(worker) => Some(worker),
            Self::Kme(kme) => Some(&kme.worker),
            Self::Wpe(_) => None,
        }
    }

    /// The workloads: a singleton worker's, or a WPE's.
    fn runtime(&self) -> Option<&Arc<Runtime>> {
        match self {
            Self::Singleton(worker) => Some(&worker.runtime),
            Self::Wpe(wpe) => Some(&wpe.runtime),
            Self::Kme(_) => None,
        }
    }

    fn wrong_role(&self) -> Response {
        failed(FailureKind::WrongRole, format!("a {} does not serve this request", self.name()))
    }
}

/// What the host is told of a started worker (or KME).
fn started(worker: &Worker, sealed_keys: Vec<u8>, workloads: Vec<WorkloadInfo>) -> Started {
    Started {
        worker_id: worker.worker_id.clone(),
        record: Some(worker.record.clone()),
        sealed_keys,
        workloads,
    }
}

fn answer(outcome: Result<Response, Failure>) -> Response {
    outcome.unwrap_or_else(Response::Failed)
}

fn failed(kind: FailureKind, message: impl Into<String>) -> Response {
    Response::Failed(Failure::new(kind, message))
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The measurement a simulated TEE reports for this enclave build with these workloads: SHA-256
/// of the crate version and the workload names. On real hardware the TEE measures the code itself.
pub fn sim_measurement(registry: &Registry) -> Measurement {
    sim_measurement_of("", registry)
}

/// The measurement a simulated TEE reports for a pool's KME of this build (no workloads).
pub fn sim_kme_measurement() -> Measurement {
    sim_measurement_of("kme", &Registry::default())
}

/// The measurement a simulated TEE reports for a pool's WPE of this build with these workloads.
pub fn sim_wpe_measurement(registry: &Registry) -> Measurement {
    sim_measurement_of("wpe", registry)
}

fn sim_measurement_of(role: &str, registry: &Registry) -> Measurement {
    let mut h = Sha256::new();
    h.update(b"afallon-enclave/");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    if !role.is_empty() {
        h.update(b"/");
        h.update(role.as_bytes());
    }
    for name in registry.names() {
        h.update(b"\n");
        h.update(name.as_bytes());
    }
    Measurement::from(*h.finalize().as_bytes())
}
