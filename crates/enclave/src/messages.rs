//! The enclave's interface as messages: every call is one [`Request`] in and one [`Response`]
//! out, both plain data (serde), so that the same enclave can sit behind an in-process call, a
//! pipe to an enclave process (`pipe.rs`) or a TEE's own boundary. The enclave never calls the
//! host: a workload's file access is a [`Response::HostIo`] that the host answers with a
//! [`Request::ContinueWorkOrder`].

use afallon_proto::{ReceiptUpdate, WorkerRecord};
use afallon_workloads::IoError;
use serde::{Deserialize, Serialize};

use crate::{EnclaveConfig, ProcessError, Processed, SealedState};

/// What the host asks of an enclave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Request {
    /// Starts the worker: signs it up (fresh keys) when `sealed_keys` is `None`, or restores it
    /// from the keys and workload states it sealed before. Answered [`Response::Started`].
    Start {
        /// Who the worker is (for a WPE: whose limits and workloads it runs).
        config: EnclaveConfig,
        /// What the enclave is: a singleton worker, a pool's KME or one of its WPEs.
        #[serde(default)]
        role: Role,
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
    /// What the started enclave is: its worker id, record and workloads (no sealed keys).
    /// Answered [`Response::Started`].
    Describe,
    /// KME: a fresh nonce for one WPE's registration. Answered [`Response::Nonce`].
    IssueNonce,
    /// WPE, or a KME about to join a pool (before it starts): evidence binding its transport
    /// key, `nonce` and its tenant. Answered [`Response::Attested`].
    Attest {
        /// The nonce of the KME it registers with.
        #[serde(with = "base64_bytes")]
        nonce: Vec<u8>,
    },
    /// KME: registers the WPE that `attestation` speaks for, if its evidence passes the KME's
    /// policy and binds the nonce this KME issued. Answered [`Response::WpeRegistered`].
    RegisterWpe {
        /// The WPE's [`Response::Attested`].
        attestation: Attestation,
        /// The nonce it was made for; taken, so it cannot serve twice.
        #[serde(with = "base64_bytes")]
        nonce: Vec<u8>,
    },
    /// KME: hands the pool's keys to the KME that `attestation` speaks for (before it starts),
    /// if its evidence passes, shows this KME's own measurement and binds a nonce this KME
    /// issued. Answered [`Response::PoolKeysExported`].
    ExportPoolKeys {
        /// The joining KME's [`Response::Attested`].
        attestation: Attestation,
        /// The nonce it was made for; taken.
        #[serde(with = "base64_bytes")]
        nonce: Vec<u8>,
    },
    /// WPE: the KME that registered it, if its evidence shows this build's KME measurement on
    /// a trusted platform and binds this WPE's transport key. Answered [`Response::KmeAdded`].
    AddKme {
        /// The KME's attestation, from [`Response::WpeRegistered`].
        kme: Attestation,
    },
    /// KME: pre-processes an order for the registered WPE `wpe_key`. Answered
    /// [`Response::PreProcessed`].
    PreProcess {
        /// The WPE's transport key.
        #[serde(with = "base64_bytes")]
        wpe_key: Vec<u8>,
        /// The raw `WorkOrderSubmit` request.
        #[serde(with = "base64_bytes")]
        raw: Vec<u8>,
    },
    /// WPE: processes an order with the keys a KME pre-processed for it. Answered as
    /// [`Request::ProcessWorkOrder`] is.
    ProcessPoolOrder {
        /// The raw `WorkOrderSubmit` request.
        #[serde(with = "base64_bytes")]
        raw: Vec<u8>,
        /// The KME's [`Response::PreProcessed`].
        keys: PreProcessed,
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
    /// Answer to [`Request::IssueNonce`].
    Nonce(#[serde(with = "base64_bytes")] Vec<u8>),
    /// Answer to [`Request::Attest`].
    Attested(Attestation),
    /// Answer to [`Request::RegisterWpe`]: the KME's evidence, binding its transport key to the
    /// WPE's, for [`Request::AddKme`].
    WpeRegistered {
        /// The KME's attestation.
        kme: Attestation,
    },
    /// Answer to [`Request::AddKme`].
    KmeAdded,
    /// Answer to [`Request::PreProcess`].
    PreProcessed(PreProcessed),
    /// Answer to [`Request::ExportPoolKeys`].
    PoolKeysExported(PoolKeysExport),
    /// The request could not be carried out; nothing changed.
    Failed(Failure),
}

/// What an enclave is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Role {
    /// A worker of its own: its keys, its workloads.
    #[default]
    Singleton,
    /// A pool's Key Management Enclave: the pool's keys (those of the worker requesters see),
    /// serving the WPEs it admits: those of this build's WPE measurement, attested by its own
    /// platform (the policy is the enclave's own, not the host's).
    Kme {
        /// The pool's keys from a running KME ([`Response::PoolKeysExported`]), for a KME that
        /// joins the pool; none: signed up, or restored from its sealed keys.
        #[serde(default)]
        import: Option<PoolKeysExport>,
    },
    /// A pool's Work-order Processing Enclave: the workloads, none of the pool's keys.
    Wpe {
        /// The requester it is dedicated to, bound into its evidence; none: any requester
        /// without WPEs of its own.
        tenant: Option<String>,
    },
}

/// A pool's keys, as a running KME hands them to a KME joining the pool: wrapped under the key
/// the two share (ECDH of their attested transport keys).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolKeysExport {
    /// The exporting KME's evidence, binding its transport key to the joining enclave's: the
    /// joiner takes the keys only from a KME of its own measurement.
    pub kme: Attestation,
    /// The pool's keys, wrapped.
    #[serde(with = "base64_bytes")]
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for PoolKeysExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolKeysExport").finish_non_exhaustive()
    }
}

/// An enclave's evidence for a registration: it binds its transport key, the KME's nonce and its
/// tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attestation {
    /// The evidence's kind (`sim`, ...).
    pub evidence_kind: String,
    /// The evidence, as its kind encodes it.
    #[serde(with = "base64_bytes")]
    pub evidence: Vec<u8>,
    /// The enclave's transport key (33 bytes, a compressed secp256k1 point).
    #[serde(with = "base64_bytes")]
    pub transport_key: Vec<u8>,
    /// The requester the enclave is dedicated to.
    pub tenant: Option<String>,
}

/// A KME's pre-processing of one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PreProcessed {
    /// The order's keys, for the WPE.
    Keys(Box<PoolKeys>),
    /// The order cannot be processed (its session key does not unwrap, say): the error its
    /// response carries.
    Refused(ProcessError),
}

/// One order's keys, wrapped for one WPE under the key it shares with the KME. None of the
/// pool's private keys is among them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolKeys {
    /// The transport key of the KME that made them.
    #[serde(with = "base64_bytes")]
    pub kme_key: Vec<u8>,
    /// The session key, wrapped.
    #[serde(with = "base64_bytes")]
    pub session_key: Vec<u8>,
    /// The RSA-wrapped per-item keys, unwrapped by the KME and wrapped again.
    pub data_keys: Vec<DataKey>,
    /// The per-order signing key, sealed.
    #[serde(with = "base64_bytes")]
    pub signing_key: Vec<u8>,
    /// The digest of the request they were made for (`request_digest`), sealed: the WPE runs
    /// them for exactly that request.
    #[serde(with = "base64_bytes")]
    pub order: Vec<u8>,
    /// The per-order verification key (PEM): the result's `extVerificationKey`.
    pub ext_verification_key: String,
    /// The pool's signature over it and the requester's nonce: `extVerificationKeySignature`.
    pub ext_verification_key_signature: String,
}

/// One item's key in [`PoolKeys`]. An input and an output may share an index, so the key is
/// known by its RSA ciphertext's digest.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataKey {
    /// The item's index (inputs and outputs each have their own).
    pub index: i64,
    /// SHA-256 of the item's RSA-wrapped key, as the request carries it.
    #[serde(with = "base64_bytes")]
    pub wrapped_sha256: Vec<u8>,
    /// Its key, wrapped.
    #[serde(with = "base64_bytes")]
    pub key: Vec<u8>,
}

impl std::fmt::Debug for PoolKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolKeys")
            .field("ext_verification_key", &self.ext_verification_key)
            .finish_non_exhaustive()
    }
}

/// A started worker: what the host registers and stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// The worker's id: SHA-256 of its name, lower-case hex.
    pub worker_id: String,
    /// The worker record to register (wire spec §1.9); none for a WPE, which registers nothing.
    pub record: Option<WorkerRecord>,
    /// The worker's keys, sealed: the host stores them to restart the same worker (empty for a
    /// WPE, which has none).
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
    /// A request this kind of enclave does not serve (a KME asked to process an order, say).
    WrongRole,
    /// A WPE's registration was refused: its evidence, its measurement, or its nonce.
    Registration,
    /// Pre-processing for a WPE this KME has not registered.
    UnknownWpe,
    /// Key material from a KME this WPE has not registered with, or a KME whose evidence does
    /// not pass.
    UnknownKme,
    /// The platform failed (no randomness, say).
    Platform,
    /// The enclave's transport failed: the request may or may not have been carried out.
    Transport,
}

impl Failure {
    /// A failure of `kind`, saying `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
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
