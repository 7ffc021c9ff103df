//! The host's side of the boundary: an [`EnclaveLink`] carries messages to an enclave (in
//! process, or over a pipe), and an [`EnclaveClient`] speaks them: it starts the worker, does a
//! workload's file access when the enclave asks, and holds a state change as a [`PendingState`]
//! that rolls back unless committed.

use std::sync::Arc;

use afallon_proto::{ReceiptUpdate, WorkerRecord};
use afallon_workloads::{HostIo, IoError, WorkloadPath};

use crate::messages::{
    Failure, FailureKind, HostIoFailure, HostIoReply, HostIoRequest, Request, Response, Started,
    StateTicket, WorkloadInfo,
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
        match link.call(Request::Start { config, sealed_keys, states }) {
            Response::Started(started) => Ok(Self { link, started: Arc::from(started) }),
            other => Err(unexpected(other)),
        }
    }

    /// The worker's id: SHA-256 of its name, lower-case hex.
    pub fn worker_id(&self) -> &str {
        &self.started.worker_id
    }

    /// The worker record to register (wire spec §1.9).
    pub fn worker_record(&self) -> &WorkerRecord {
        &self.started.record
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
        let mut response = self.link.call(Request::ProcessWorkOrder { raw: raw.to_vec() });
        loop {
            match response {
                Response::WorkOrderProcessed { processed, change } => {
                    let pending = change.map(|change| PendingState {
                        link: Arc::clone(&self.link),
                        change: Some(change),
                    });
                    return Ok((processed, pending));
                }
                Response::HostIo { order, request } => {
                    let reply = perform(io, &request);
                    response = self.link.call(Request::ContinueWorkOrder { order, reply });
                }
                other => return Err(unexpected(other)),
            }
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
        Response::Failed(_) => "failed",
    }
}
