//! The enclave's interface as messages: every call is one [`Request`] in and one [`Response`]
//! out, both plain data (serde), so that the same enclave can sit behind an in-process call, a
//! pipe to an enclave process (`pipe.rs`) or a TEE's own boundary. The enclave never calls the
//! host: a workload's file access is a [`Response::HostIo`] that the host answers with a
//! [`Request::ContinueWorkOrder`].

use afallon_proto::{ReceiptUpdate, WorkerRecord};
use afallon_workloads::IoError;
use serde::{Deserialize, Serialize};

use crate::{EnclaveConfig, Processed, SealedState};

/// What the host asks of an enclave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Request {
    /// Starts the worker: signs it up (fresh keys) when `sealed_keys` is `None`, or restores it
    /// from the keys and workload states it sealed before. Answered [`Response::Started`].
    Start {
        /// Who the worker is.
        config: EnclaveConfig,
        /// The worker's sealed keys, from an earlier [`Response::Started`].
        #[serde(with = "base64_bytes::option")]
        sealed_keys: Option<Vec<u8>>,
        /// The workloads' last stored states.
        states: Vec<SealedState>,
    },
    /// Processes one work order: the raw `WorkOrderSubmit` JSON-RPC request. Answered
    /// [`Response::WorkOrderProcessed`], or [`Response::HostIo`] when its workload asks for a
    /// file first.
    ProcessWorkOrder {
        /// The request body, as the requester sent it.
        #[serde(with = "base64_bytes")]
        raw: Vec<u8>,
    },
    /// The host's answer to [`Response::HostIo`]; the order goes on.
    ContinueWorkOrder {
        /// The order, as [`Response::HostIo`] named it.
        order: OrderTicket,
        /// What the file access gave.
        reply: HostIoReply,
    },
    /// The order's result was stored with the state it brought: the workload's state change
    /// takes effect, and its next order may run. Answered [`Response::StateCommitted`].
    CommitState {
        /// The change, as [`Response::WorkOrderProcessed`] named it.
        change: StateTicket,
    },
    /// The order's result was not stored (another run's was, or the store failed): the state
    /// change is undone. Answered [`Response::StateRolledBack`].
    RollBackState {
        /// The change, as [`Response::WorkOrderProcessed`] named it.
        change: StateTicket,
    },
    /// Loads a workload's stored state if it is newer than the one the enclave runs on (another
    /// process serving the same worker changed it). Answered [`Response::StateLoaded`].
    LoadState {
        /// The stored state.
        state: SealedState,
    },
    /// Signs the receipt update for a processed order (wire spec §3.11). Answered
    /// [`Response::ReceiptUpdate`].
    SignReceiptUpdate {
        /// The order.
        work_order_id: String,
        /// Its stored JSON-RPC response.
        response: String,
        /// Whether the response is an error.
        failed: bool,
    },
}

/// What an enclave answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Response {
    /// The worker runs.
    Started(Box<Started>),
    /// An order is done (well or with an error response).
    WorkOrderProcessed {
        /// The response to store, and the sealed state to store with it.
        processed: Processed,
        /// The workload's state change, pending until [`Request::CommitState`] or
        /// [`Request::RollBackState`]; none for a stateless workload or an order that changed
        /// nothing. Until then the workload runs no other order.
        change: Option<StateTicket>,
    },
    /// The order's workload asks for file access; answer with [`Request::ContinueWorkOrder`].
    HostIo {
        /// The order, suspended until the answer.
        order: OrderTicket,
        /// What it asks.
        request: HostIoRequest,
    },
    /// Answer to [`Request::CommitState`].
    StateCommitted,
    /// Answer to [`Request::RollBackState`].
    StateRolledBack,
    /// Answer to [`Request::LoadState`]: whether the state was newer and is now in effect.
    StateLoaded {
        /// Whether it loaded anything.
        loaded: bool,
    },
    /// Answer to [`Request::SignReceiptUpdate`].
    ReceiptUpdate(ReceiptUpdate),
    /// The request could not be carried out; nothing changed.
    Failed(Failure),
}

/// A started worker: what the host registers and stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// The worker's id: SHA-256 of its name, lower-case hex.
    pub worker_id: String,
    /// The worker record to register (wire spec §1.9).
    pub record: WorkerRecord,
    /// The worker's keys, sealed: the host stores them to restart the same worker.
    #[serde(with = "base64_bytes")]
    pub sealed_keys: Vec<u8>,
    /// The workloads it runs.
    pub workloads: Vec<WorkloadInfo>,
}

/// One workload an enclave runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadInfo {
    /// Its name; its `workloadId` is the hex of it.
    pub name: String,
    /// Whether it keeps state across orders (one order at a time, state sealed with results).
    pub stateful: bool,
}

/// An order suspended while the host does its file access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderTicket(pub u64);

/// A workload's state change waiting for the host's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateTicket(pub u64);

/// File access a workload asks of the host, confined to its data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HostIoRequest {
    /// Read at most `max_len` bytes from the start of the file.
    Read {
        /// The relative path.
        path: String,
        /// The most bytes wanted; more are cut off.
        max_len: usize,
    },
    /// Create or replace the file.
    Write {
        /// The relative path.
        path: String,
        /// The new contents.
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
}

/// The host's answer to a [`HostIoRequest`]. The host is not trusted: a read longer than asked
/// is cut, and an answer of the wrong kind is a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HostIoReply {
    /// The bytes read.
    Read(#[serde(with = "base64_bytes")] Vec<u8>),
    /// The file was written.
    Written,
    /// The access failed.
    Failed(HostIoFailure),
}

/// Why the host's file access failed, as a workload sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HostIoFailure {
    /// The path is not inside the data directory.
    OutsideDataDirectory,
    /// This host gives no file access.
    Unavailable,
    /// The file could not be opened, read or written.
    Open,
}

impl From<&IoError> for HostIoFailure {
    fn from(error: &IoError) -> Self {
        match error {
            IoError::OutsideDataDirectory => Self::OutsideDataDirectory,
            IoError::Unavailable => Self::Unavailable,
            _ => Self::Open,
        }
    }
}

impl From<HostIoFailure> for IoError {
    fn from(failure: HostIoFailure) -> Self {
        match failure {
            HostIoFailure::OutsideDataDirectory => Self::OutsideDataDirectory,
            HostIoFailure::Unavailable => Self::Unavailable,
            HostIoFailure::Open => Self::Open,
        }
    }
}

/// Why a request was not carried out; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{kind:?}: {message}")]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened, for people.
    pub message: String,
}

/// The kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum FailureKind {
    /// A request other than [`Request::Start`] before the worker started, or a second start.
    NotStarted,
    /// [`Request::Start`] when the worker already runs.
    AlreadyStarted,
    /// Signing up or restoring failed (keys, platform, sealed data); see the message.
    Start,
    /// A ticket the enclave does not hold (already answered, or never issued).
    UnknownTicket,
    /// A stored state that does not load; the state in effect is unchanged.
    State,
    /// The platform failed (no randomness, say).
    Platform,
    /// The enclave's transport failed: the request may or may not have been carried out.
    Transport,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

/// Bytes as standard base64 in the messages' JSON form.
pub(crate) mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }

    pub(crate) mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            bytes: &Option<Vec<u8>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match bytes {
                Some(bytes) => super::serialize(bytes, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Vec<u8>>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] Vec<u8>);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(bytes)| bytes))
        }
    }
}
