//! Orders whose workload uses the host's files. Each runs on a thread of its own inside the
//! enclave and stops at every file access, which leaves the enclave as a
//! [`Response::HostIo`](crate::Response::HostIo) and comes back as the host's
//! [`HostIoReply`]: the enclave never calls into the host.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use afallon_workloads::{HostIo, IoError, WorkloadPath};

use crate::messages::{HostIoFailure, HostIoReply, HostIoRequest};
use crate::process::{self, Prepared};
use crate::runtime::Runtime;
use crate::state::StateTurn;
use crate::{ProcessError, Processed};

/// Where a running order stands.
pub(crate) enum Step {
    /// It asks the host for a file access.
    Io(HostIoRequest),
    /// It is done.
    Done(Processed, Option<StateTurn>),
}

/// An order running on its own thread: what it asks, and where the host's answers go. Dropped
/// (the host never answers), every further access of the order fails and it runs to its end,
/// its state change rolled back.
pub(crate) struct Running {
    replies: mpsc::Sender<HostIoReply>,
    steps: mpsc::Receiver<Step>,
}

impl Running {
    /// Starts `prepared` on a thread of its own.
    pub(crate) fn start(runtime: Arc<Runtime>, prepared: Box<Prepared>) -> Result<Self, String> {
        let (replies, replies_in) = mpsc::channel();
        let (steps_out, steps) = mpsc::channel();
        let bridge = Bridge { steps: steps_out.clone(), replies: Mutex::new(replies_in) };
        std::thread::Builder::new()
            .name("enclave-host-io".into())
            .spawn(move || {
                let (processed, turn) = process::complete(&runtime, *prepared, &bridge);
                let _ = steps_out.send(Step::Done(processed, turn));
            })
            .map_err(|error| format!("cannot start the order's thread: {error}"))?;
        Ok(Self { replies, steps })
    }

    /// Waits for the order's next step.
    pub(crate) fn next(&self) -> Step {
        self.steps.recv().unwrap_or_else(|_| {
            // The thread ended without an answer: the workload panicked.
            let error = ProcessError {
                code: afallon_proto::EnclaveErrorCode::Runtime,
                message: "Workload error: the workload stopped".into(),
            };
            let response = serde_json::json!({
                "jsonrpc": "2.0", "id": 0,
                "error": {"code": error.code.code(), "message": error.message},
            });
            Step::Done(
                Processed { response: response.to_string(), error: Some(error), state: None },
                None,
            )
        })
    }

    /// Hands the host's answer to the order.
    pub(crate) fn answer(&self, reply: HostIoReply) {
        let _ = self.replies.send(reply);
    }
}

/// The file access a workload on its own thread gets: each access is a step out to the host.
struct Bridge {
    steps: mpsc::Sender<Step>,
    replies: Mutex<mpsc::Receiver<HostIoReply>>,
}

impl Bridge {
    fn ask(&self, request: HostIoRequest) -> HostIoReply {
        if self.steps.send(Step::Io(request)).is_err() {
            return HostIoReply::Failed(HostIoFailure::Unavailable);
        }
        let replies = self.replies.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        replies.recv().unwrap_or(HostIoReply::Failed(HostIoFailure::Unavailable))
    }
}

impl HostIo for Bridge {
    fn read(&self, path: &WorkloadPath, max_len: usize) -> Result<Vec<u8>, IoError> {
        match self.ask(HostIoRequest::Read { path: path.as_str().to_owned(), max_len }) {
            HostIoReply::Read(mut data) => {
                // The host is not trusted to keep to the length.
                data.truncate(max_len);
                Ok(data)
            }
            HostIoReply::Failed(failure) => Err(failure.into()),
            HostIoReply::Written => Err(IoError::Open),
        }
    }

    fn write(&self, path: &WorkloadPath, data: &[u8]) -> Result<(), IoError> {
        match self.ask(HostIoRequest::Write { path: path.as_str().to_owned(), data: data.to_vec() })
        {
            HostIoReply::Written => Ok(()),
            HostIoReply::Failed(failure) => Err(failure.into()),
            HostIoReply::Read(_) => Err(IoError::Open),
        }
    }
}
