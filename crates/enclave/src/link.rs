//! The host's side of the boundary: an [`EnclaveLink`] carries messages to an enclave (in
//! process, or over a pipe), and an [`EnclaveClient`] speaks them: it starts the worker, does a
//! workload's file access when the enclave asks, and holds a state change as a [`PendingState`]
//! that rolls back unless committed.

use std::sync::Arc;

use afallon_proto::{ReceiptUpdate, WorkerRecord};
use afallon_workloads::{HostIo, IoError, WorkloadPath};

use crate::messages::{
    Attestation, Failure, FailureKind, HostIoFailure, HostIoReply, HostIoRequest, PoolKeysExport,
    PreProcessed, Request, Response, Role, Started, StateTicket, WorkloadInfo,
};
use crate::{EnclaveConfig, Processed, SealedState};

/// A way to reach an enclave: one request in, one response out.
pub trait EnclaveLink: Send + Sync {
    /// Carries `request` to the enclave and returns its answer. A transport that fails answers
    /// [`Response::Failed`] with [`FailureKind::Transport`].
    fn call(&self, request: Request) -> Response;
}

impl EnclaveLink for crate::Enclave {
    fn call(&self, request: Request) -> Response {
        crate::Enclave::call(self, request)
    }
}

/// A started worker enclave, as its host sees it.
#[derive(Clone)]
pub struct EnclaveClient {
    link: Arc<dyn EnclaveLink>,
    started: Arc<Started>,
    record: Arc<WorkerRecord>,
}

impl std::fmt::Debug for EnclaveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveClient").field("worker_id", &self.started.worker_id).finish()
    }
}

impl EnclaveClient {
    /// Starts the worker behind `link`: signs it up when `sealed_keys` is `None`, or restores it
    /// from its sealed keys and its workloads' last stored states.
    ///
    /// # Errors
    /// The enclave's [`Failure`] (sealed data from another enclave or platform, a platform that
    /// cannot attest, a transport that failed).
    pub fn start(
        link: Arc<dyn EnclaveLink>,
        config: EnclaveConfig,
        sealed_keys: Option<Vec<u8>>,
        states: Vec<SealedState>,
    ) -> Result<Self, Failure> {
        Self::start_as(link, Role::Singleton, config, sealed_keys, states)
    }

    /// As [`EnclaveClient::start`], for an enclave of `role`: a singleton worker or a pool's KME
    /// (which holds the pool's keys and record). A WPE has no record of its own: see
    /// [`WpeClient`].
    ///
    /// # Errors
    /// As [`EnclaveClient::start`].
    pub fn start_as(
        link: Arc<dyn EnclaveLink>,
        role: Role,
        config: EnclaveConfig,
        sealed_keys: Option<Vec<u8>>,
        states: Vec<SealedState>,
    ) -> Result<Self, Failure> {
        let answer = link.call(Request::Start { config, role, sealed_keys, states });
        Self::from_answer(link, answer)
    }

    /// A client for the enclave behind `link`, started already (by another host: a KME that
    /// serves WPE hosts over the network, say). It knows no sealed keys.
    ///
    /// # Errors
    /// [`Failure`] if the enclave is not started, or is a WPE.
    pub fn connect(link: Arc<dyn EnclaveLink>) -> Result<Self, Failure> {
        let answer = link.call(Request::Describe);
        Self::from_answer(link, answer)
    }

    /// A client for a started worker (or KME) that answered `answer`.
    fn from_answer(link: Arc<dyn EnclaveLink>, answer: Response) -> Result<Self, Failure> {
        match answer {
            Response::Started(started) => match started.record.clone() {
                Some(record) => {
                    Ok(Self { link, started: Arc::from(started), record: Arc::new(record) })
                }
                None => {
                    Err(Failure::new(FailureKind::WrongRole, "the enclave has no worker record"))
                }
            },
            other => Err(unexpected(other)),
        }
    }

    /// The link the enclave is reached by.
    pub fn link(&self) -> &Arc<dyn EnclaveLink> {
        &self.link
    }

    /// The worker's id: SHA-256 of its name, lower-case hex.
    pub fn worker_id(&self) -> &str {
        &self.started.worker_id
    }

    /// The worker record to register (wire spec §1.9).
    pub fn worker_record(&self) -> &WorkerRecord {
        &self.record
    }

    /// The worker's sealed keys, to store.
    pub fn sealed_keys(&self) -> &[u8] {
        &self.started.sealed_keys
    }

    /// The workloads the enclave runs.
    pub fn workloads(&self) -> &[WorkloadInfo] {
        &self.started.workloads
    }

    /// Processes one work order (the raw `WorkOrderSubmit` request), doing its workload's file
    /// access with `io` as the enclave asks. The response is to be stored with
    /// [`Processed::state`]; the [`PendingState`] is then committed if that completion won, and
    /// dropped (rolled back) otherwise. Until then the workload runs no other order.
    ///
    /// # Errors
    /// [`Failure`] if the enclave could not be reached or answered out of turn: nothing was
    /// processed that the host knows of, and the order may run again.
    pub fn process(
        &self,
        raw: &[u8],
        io: &dyn HostIo,
    ) -> Result<(Processed, Option<PendingState>), Failure> {
        drive(&self.link, Request::ProcessWorkOrder { raw: raw.to_vec() }, io)
    }

    /// KME: a fresh nonce for one WPE's registration.
    ///
    /// # Errors
    /// [`Failure`] if the enclave is not a KME or cannot be reached.
    pub fn issue_nonce(&self) -> Result<Vec<u8>, Failure> {
        match self.link.call(Request::IssueNonce) {
            Response::Nonce(nonce) => Ok(nonce),
            other => Err(unexpected(other)),
        }
    }

    /// KME: registers the WPE that `attestation` speaks for; returns the KME's attestation, for
    /// the WPE ([`WpeClient::add_kme`]).
    ///
    /// # Errors
    /// [`FailureKind::Registration`] if the KME's policy refuses the WPE, or the nonce is not
    /// one it issued and has not used.
    pub fn register_wpe(
        &self,
        attestation: Attestation,
        nonce: Vec<u8>,
    ) -> Result<Attestation, Failure> {
        match self.link.call(Request::RegisterWpe { attestation, nonce }) {
            Response::WpeRegistered { kme } => Ok(kme),
            other => Err(unexpected(other)),
        }
    }

    /// KME: hands the pool's keys to the KME joining the pool that `attestation` speaks for
    /// (see [`EnclaveClient::join_pool`]).
    ///
    /// # Errors
    /// [`FailureKind::Registration`] if its evidence does not show this KME's measurement or
    /// does not bind a nonce this KME issued.
    pub fn export_pool_keys(
        &self,
        attestation: Attestation,
        nonce: Vec<u8>,
    ) -> Result<PoolKeysExport, Failure> {
        match self.link.call(Request::ExportPoolKeys { attestation, nonce }) {
            Response::PoolKeysExported(export) => Ok(export),
            other => Err(unexpected(other)),
        }
    }

    /// Starts the enclave behind `link` as another KME of the pool `running` serves: it attests
    /// to `running`, which hands it the pool's keys only if it shows the same measurement (and
    /// which it takes only from a KME of its own measurement).
    ///
    /// # Errors
    /// The enclaves' [`Failure`].
    pub fn join_pool(
        link: Arc<dyn EnclaveLink>,
        running: &EnclaveClient,
        config: EnclaveConfig,
    ) -> Result<Self, Failure> {
        let nonce = running.issue_nonce()?;
        let attestation = match link.call(Request::Attest { nonce: nonce.clone() }) {
            Response::Attested(attestation) => attestation,
            other => return Err(unexpected(other)),
        };
        let export = running.export_pool_keys(attestation, nonce)?;
        Self::start_as(link, Role::Kme { import: Some(export) }, config, None, vec![])
    }

    /// KME: pre-processes the order `raw` for the registered WPE whose transport key is
    /// `wpe_key`.
    ///
    /// # Errors
    /// [`FailureKind::UnknownWpe`] or a transport failure. An order outside the WPE's
    /// tenancy gets no keys: it is [`PreProcessed::Refused`].
    pub fn pre_process(&self, wpe_key: &[u8], raw: &[u8]) -> Result<PreProcessed, Failure> {
        let request = Request::PreProcess { wpe_key: wpe_key.to_vec(), raw: raw.to_vec() };
        match self.link.call(request) {
            Response::PreProcessed(keys) => Ok(keys),
            other => Err(unexpected(other)),
        }
    }

    /// Loads a workload's stored state if it is newer than the one the enclave runs on.
    /// Returns whether it did.
    ///
    /// # Errors
    /// [`Failure`] for a state the enclave refuses (the state in effect is unchanged).
    pub fn load_state(&self, state: SealedState) -> Result<bool, Failure> {
        match self.link.call(Request::LoadState { state }) {
            Response::StateLoaded { loaded } => Ok(loaded),
            other => Err(unexpected(other)),
        }
    }

    /// The worker's signed receipt update for a processed order (wire spec §3.11).
    ///
    /// # Errors
    /// [`Failure`] if the enclave could not be reached.
    pub fn receipt_update(
        &self,
        work_order_id: &str,
        response: &str,
        failed: bool,
    ) -> Result<ReceiptUpdate, Failure> {
        let request = Request::SignReceiptUpdate {
            work_order_id: work_order_id.to_owned(),
            response: response.to_owned(),
            failed,
        };
        match self.link.call(request) {
            Response::ReceiptUpdate(update) => Ok(update),
            other => Err(unexpected(other)),
        }
    }
}

/// A pool's WPE, as its host sees it: it runs the pool's orders with the keys a KME
/// pre-processed for it, and holds none of the pool's keys.
#[derive(Clone)]
pub struct WpeClient {
    link: Arc<dyn EnclaveLink>,
    started: Arc<Started>,
}

impl std::fmt::Debug for WpeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WpeClient").field("worker_id", &self.started.worker_id).finish()
    }
}

impl WpeClient {
    /// Starts the WPE behind `link` for the pool `config` names, dedicated to `tenant` if given,
    /// with the pool's workloads in their last stored states.
    ///
    /// # Errors
    /// The enclave's [`Failure`].
    pub fn start(
        link: Arc<dyn EnclaveLink>,
        config: EnclaveConfig,
        tenant: Option<String>,
        states: Vec<SealedState>,
    ) -> Result<Self, Failure> {
        let role = Role::Wpe { tenant };
        match link.call(Request::Start { config, role, sealed_keys: None, states }) {
            Response::Started(started) => Ok(Self { link, started: Arc::from(started) }),
            other => Err(unexpected(other)),
        }
    }

    /// The pool's worker id.
    pub fn worker_id(&self) -> &str {
        &self.started.worker_id
    }

    /// The workloads it runs.
    pub fn workloads(&self) -> &[WorkloadInfo] {
        &self.started.workloads
    }

    /// Evidence for a registration with the KME that issued `nonce`.
    ///
    /// # Errors
    /// [`Failure`] if the platform cannot attest.
    pub fn attest(&self, nonce: Vec<u8>) -> Result<Attestation, Failure> {
        match self.link.call(Request::Attest { nonce }) {
            Response::Attested(attestation) => Ok(attestation),
            other => Err(unexpected(other)),
        }
    }

    /// The KME that `kme` (its answer to the registration) speaks for registered this WPE.
    ///
    /// # Errors
    /// [`FailureKind::UnknownKme`] if its evidence does not show this build's KME measurement on
    /// a trusted platform, or does not bind this WPE's transport key.
    pub fn add_kme(&self, kme: Attestation) -> Result<(), Failure> {
        match self.link.call(Request::AddKme { kme }) {
            Response::KmeAdded => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Processes the order `raw` with the keys a KME pre-processed for it, as
    /// [`EnclaveClient::process`] does.
    ///
    /// # Errors
    /// As [`EnclaveClient::process`].
    pub fn process(
        &self,
        raw: &[u8],
        keys: PreProcessed,
        io: &dyn HostIo,
    ) -> Result<(Processed, Option<PendingState>), Failure> {
        drive(&self.link, Request::ProcessPoolOrder { raw: raw.to_vec(), keys }, io)
    }

    /// As [`EnclaveClient::load_state`].
    ///
    /// # Errors
    /// As [`EnclaveClient::load_state`].
    pub fn load_state(&self, state: SealedState) -> Result<bool, Failure> {
        match self.link.call(Request::LoadState { state }) {
            Response::StateLoaded { loaded } => Ok(loaded),
            other => Err(unexpected(other)),
        }
    }
}

/// Sends `first` (an order to process) and answers the enclave's file accesses with `io` until
/// the order is done.
fn drive(
    link: &Arc<dyn EnclaveLink>,
    first: Request,
    io: &dyn HostIo,
) -> Result<(Processed, Option<PendingState>), Failure> {
    let mut response = link.call(first);
    loop {
        match response {
            Response::WorkOrderProcessed { processed, change } => {
                let pending = change
                    .map(|change| PendingState { link: Arc::clone(link), change: Some(change) });
                return Ok((processed, pending));
            }
            Response::HostIo { order, request } => {
                let reply = perform(io, &request);
                response = link.call(Request::ContinueWorkOrder { order, reply });
            }
            other => return Err(unexpected(other)),
        }
    }
}

/// A workload's state change from one order, in effect for no other order until committed
/// ([`PendingState::commit`]); dropped uncommitted, the enclave rolls it back. Until either, the
/// workload runs no other order: commit or drop it promptly.
#[must_use = "a pending state is rolled back when dropped"]
pub struct PendingState {
    link: Arc<dyn EnclaveLink>,
    change: Option<StateTicket>,
}

impl PendingState {
    /// Keeps the change (the host stored the order's result and the sealed state with it), and
    /// lets the workload's next order run.
    ///
    /// # Errors
    /// [`Failure`] if the enclave did not take it (a transport that failed).
    pub fn commit(mut self) -> Result<(), Failure> {
        let Some(change) = self.change.take() else { return Ok(()) };
        match self.link.call(Request::CommitState { change }) {
            Response::StateCommitted => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

impl Drop for PendingState {
    fn drop(&mut self) {
        if let Some(change) = self.change.take() {
            // An enclave that cannot be reached has no turn to give back either.
            let _ = self.link.call(Request::RollBackState { change });
        }
    }
}

impl std::fmt::Debug for PendingState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingState").field("change", &self.change).finish_non_exhaustive()
    }
}

/// What the host does for a [`HostIoRequest`] with its file access `io`. The path is parsed
/// again here: the host confines it whatever the enclave says.
fn perform(io: &dyn HostIo, request: &HostIoRequest) -> HostIoReply {
    let failed = |error: &IoError| HostIoReply::Failed(HostIoFailure::from(error));
    match request {
        HostIoRequest::Read { path, max_len } => {
            match WorkloadPath::parse(path).and_then(|path| io.read(&path, *max_len)) {
                Ok(data) => HostIoReply::Read(data),
                Err(error) => failed(&error),
            }
        }
        HostIoRequest::Write { path, data } => {
            match WorkloadPath::parse(path).and_then(|path| io.write(&path, data)) {
                Ok(()) => HostIoReply::Written,
                Err(error) => failed(&error),
            }
        }
    }
}

/// An answer that is not the one asked for: the enclave's own failure, or a mix-up.
fn unexpected(response: Response) -> Failure {
    match response {
        Response::Failed(failure) => failure,
        other => Failure::new(
            FailureKind::Transport,
            format!("the enclave answered out of turn: {}", response_name(&other)),
        ),
    }
}

fn response_name(response: &Response) -> &'static str {
    match response {
        Response::Started(_) => "started",
        Response::WorkOrderProcessed { .. } => "work order processed",
        Response::HostIo { .. } => "host I/O",
        Response::StateCommitted => "state committed",
        Response::StateRolledBack => "state rolled back",
        Response::StateLoaded { .. } => "state loaded",
        Response::ReceiptUpdate(_) => "receipt update",
        Response::Nonce(_) => "nonce",
        Response::Attested(_) => "attested",
        Response::WpeRegistered { .. } => "WPE registered",
        Response::KmeAdded => "KME added",
        Response::PreProcessed(_) => "pre-processed",
        Response::PoolKeysExported(_) => "pool keys exported",
        Response::Failed(_) => "failed",
    }
}
