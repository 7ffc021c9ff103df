//! The requester SDK: talk to an afallon (or Avalon) listener over JSON-RPC.
//!
//! 1. [`Client::verify_worker`] fetches a worker's record and checks it: active, the
//!    encryption-key signature, and its attestation under a [`Policy`] (which refuses simulated
//!    workers unless told otherwise).
//! 2. [`Worker::work_order`] starts a [`WorkOrderBuilder`]: add inputs (session-key encrypted,
//!    plain, or with their own data key), optionally sign, and build.
//! 3. [`Client::submit`] sends it; [`Client::wait_result`] polls for the result (or submit in a
//!    listener's synchronous mode returns it at once).
//! 4. [`PendingResult::open`] verifies the worker's signature and decrypts the outputs.
//!
//! Receipts: [`Client::create_receipt`], [`Client::receipt`], [`Client::receipt_update`] and
//! [`Client::receipt_update_retrieve`].

mod transport;
mod worker;

use std::time::Duration;

pub use afallon_attest::{Policy, UnixTime};
use afallon_crypto::{EcdsaSigningKey, random_array};
pub use afallon_proto::requester::{InputProtection, PendingResult, ResultError, WorkOrderBuilder};
use afallon_proto::{
    LookUpResult, ReceiptCreate, ReceiptRetrieveResult, ReceiptStatus, ReceiptUpdate,
    ReceiptUpdateRetrieveParams, ReceiptUpdateRetrieveResult, WorkOrderRequest, WorkOrderResult,
    WorkOrderStatus, WorkerRecord, protection, receipt_create_digest, request_hash,
};
use serde_json::{Value, json};
pub use transport::RpcError;
pub use worker::{
    Attestation, Worker, WorkerError, accept_worker_record_unverified, verify_worker_record,
};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not an `http://` or `https://` URL.
    #[error("invalid listener URL {0:?}")]
    Url(String),
    /// TLS could not be set up: no or a bad CA certificate for an `https://` URL.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listener could not be reached or the connection broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The listener answered with something that is not a JSON-RPC response.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// A proxy in front of the listener (or the listener) answered HTTP 502, 503 or 504 without
    /// a JSON-RPC response: no listener could take the call just now.
    #[error("unavailable: HTTP {0}")]
    Unavailable(u16),
    /// The listener answered with a JSON-RPC error.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The worker's record did not pass verification.
    #[error("worker: {0}")]
    Worker(#[from] WorkerError),
    /// The result did not verify or decrypt.
    #[error("result: {0}")]
    Result(#[from] ResultError),
    /// Building a work order or receipt failed.
    #[error("protection: {0}")]
    Protection(#[from] protection::ProtectionError),
    /// The result, or an answer to one call, did not arrive in time.
    #[error("no answer after {0:?}")]
    Timeout(Duration),
    /// The listener's answer was larger than any a listener gives (this many bytes at most).
    #[error("the answer is over {0} bytes")]
    AnswerTooLarge(usize),
}

/// Calls `ask` every `poll` until it answers something, or `timeout` passes; a call that fails
/// for a moment ([`ClientError::is_transient`]) is made again at the next interval.
async fn poll_until<T, F, Fut>(
    poll: Duration,
    timeout: Duration,
    mut ask: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, ClientError>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let answer =
            tokio::time::timeout(left, ask()).await.map_err(|_| ClientError::Timeout(timeout))?;
        match answer {
            Ok(Some(answer)) => return Ok(answer),
            Ok(None) => {}
            Err(error) if error.is_transient() => {}
            Err(error) => return Err(error),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClientError::Timeout(timeout));
        }
        tokio::time::sleep(poll).await;
    }
}

/// How many times [`Client::submit_surely`] submits an order whose submissions failed without
/// an answer.
pub const SUBMIT_ATTEMPTS: u32 = 4;

impl ClientError {
    /// Whether the call may work if made again in a moment: the listener could not be reached,
    /// a proxy found no listener, the call timed out, or the listener answered busy (8) or with
    /// a server error (-32000, e.g. its store could not be reached). Worth retrying for calls that
    /// change nothing (`WorkOrderGetResult`, look-ups, retrievals); a submission that failed so
    /// may or may not have been stored (resubmitting it answers "already exists" if it was).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) | Self::Unavailable(_) | Self::Timeout(_) => true,
            Self::Rpc(error) => error.code == -32000 || error.code == WorkOrderStatus::Busy.code(),
            _ => false,
        }
    }
}

/// What a submission answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// Accepted and queued (code 5): poll for the result.
    Pending,
    /// Processed already (the listener's synchronous mode).
    Done(Box<WorkOrderResult>),
}

/// A JSON-RPC client for one listener.
#[derive(Debug)]
pub struct Client {
    transport: transport::Transport,
}

impl Client {
    /// A client for the listener at `url` (`http://host:port`, any path).
    ///
    /// # Errors
    /// [`ClientError::Url`] for anything else, [`ClientError::Tls`] for an `https://` URL (see
    /// [`Client::with_ca`]).
    pub fn new(url: &str) -> Result<Self, ClientError> {
        Ok(Self { transport: transport::Transport::new(url, None)? })
    }

    /// A client for the listener at `url`, `http://` or `https://`; an HTTPS listener's
    /// certificate must chain to one of the PEM certificates in `ca_pem` (and no other root is
    /// trusted).
    ///
    /// # Errors
    /// [`ClientError::Url`] for a URL of another kind, [`ClientError::Tls`] when `ca_pem` holds
    /// no usable certificate.
    pub fn with_ca(url: &str, ca_pem: &[u8]) -> Result<Self, ClientError> {
        Ok(Self { transport: transport::Transport::new(url, Some(ca_pem))? })
    }

    /// Calls `method` with `params` and returns the `result`; a JSON-RPC error (any code) is
    /// [`ClientError::Rpc`].
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.transport.call(method, params).await
    }

    /// Gives each call at most `timeout`, answer included (by default 60 s, longer than a
    /// listener in synchronous mode waits before it answers "pending").
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.transport.timeout = timeout;
        self
    }

    /// The listener's Prometheus metrics (`GET /metrics`), as text.
    ///
    /// # Errors
    /// [`ClientError::Transport`].
    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.transport.get("/metrics").await
    }

    /// `WorkerLookUp` for workers of `worker_type` (1 for TEE workers).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn worker_lookup(&self, worker_type: i64) -> Result<LookUpResult, ClientError> {
        let result = self.call("WorkerLookUp", json!({"workerType": worker_type})).await?;
        serde_json::from_value(result).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `WorkerRetrieve`: a worker's record, unverified.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn worker_record(&self, worker_id: &str) -> Result<WorkerRecord, ClientError> {
        let result = self.call("WorkerRetrieve", json!({"workerId": worker_id})).await?;
        serde_json::from_value(result).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Fetches a worker's record and verifies it under `policy` now (see [`verify_worker_record`]).
    ///
    /// # Errors
    /// [`ClientError::Worker`] when the record does not verify.
    pub async fn verify_worker(
        &self,
        worker_id: &str,
        policy: &Policy,
    ) -> Result<Worker, ClientError> {
        let record = self.worker_record(worker_id).await?;
        Ok(verify_worker_record(worker_id, record, policy, afallon_attest::UnixTime::now())?)
    }

    /// `WorkOrderSubmit`.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] for a refusal (duplicate id, unknown worker, busy, ...).
    pub async fn submit(&self, request: &WorkOrderRequest) -> Result<Submission, ClientError> {
        let params =
            serde_json::to_value(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        match self.call("WorkOrderSubmit", params).await {
            Ok(result) => Ok(Submission::Done(Box::new(
                serde_json::from_value(result).map_err(|e| ClientError::Protocol(e.to_string()))?,
            ))),
            Err(ClientError::Rpc(error)) if error.code == WorkOrderStatus::Pending.code() => {
                Ok(Submission::Pending)
            }
            Err(error) => Err(error),
        }
    }

    /// Submits `request` so that a call which fails without telling whether the listener stored
    /// the order ([`ClientError::is_transient`]: the listener died with the request in it, a
    /// proxy found none, its store was out of reach) neither loses nor doubles it: the order's
    /// result is asked for, and the order submitted again only if no listener has it. A
    /// submission refused as a duplicate after such a failure is the first one, stored: pending.
    /// Tries [`SUBMIT_ATTEMPTS`] times, a little longer apart each time.
    ///
    /// # Errors
    /// As [`Client::submit`]; the last transient error once the attempts are used up.
    pub async fn submit_surely(
        &self,
        request: &WorkOrderRequest,
    ) -> Result<Submission, ClientError> {
        let id = &request.work_order_id;
        let mut failed_before = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.submit(request).await {
                Err(ClientError::Rpc(error)) if failed_before && error.is_duplicate_id() => {
                    return Ok(Submission::Pending);
                }
                // Stored or not: found out below.
                Err(error) if error.is_transient() && attempt < SUBMIT_ATTEMPTS => {}
                outcome => return outcome,
            }
            failed_before = true;
            tokio::time::sleep(Duration::from_millis(100) * attempt).await;
            match self.result(id).await {
                Ok(Some(result)) => return Ok(Submission::Done(Box::new(result))),
                Ok(None) => return Ok(Submission::Pending),
                // Not stored (or the answer is not there yet): submitted again.
                Err(ClientError::Rpc(error)) if error.is_unknown_order() => {}
                Err(error) if error.is_transient() => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// `WorkOrderGetResult`: the result, or `None` while pending (code 5).
    ///
    /// # Errors
    /// [`ClientError::Rpc`] for an unknown order or a failed one (the worker's error, mapped).
    pub async fn result(
        &self,
        work_order_id: &str,
    ) -> Result<Option<WorkOrderResult>, ClientError> {
        match self.call("WorkOrderGetResult", json!({"workOrderId": work_order_id})).await {
            Ok(result) => Ok(Some(
                serde_json::from_value(result).map_err(|e| ClientError::Protocol(e.to_string()))?,
            )),
            Err(ClientError::Rpc(error)) if error.code == WorkOrderStatus::Pending.code() => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Polls `WorkOrderGetResult` every `poll` until the result is there or `timeout` passes.
    /// A poll that fails for a moment ([`ClientError::is_transient`]: a listener behind a proxy
    /// died, the listener's store is briefly out of reach) is made again at the next interval.
    ///
    /// # Errors
    /// As [`Client::result`] for the errors that are not transient, and
    /// [`ClientError::Timeout`].
    pub async fn wait_result(
        &self,
        work_order_id: &str,
        poll: Duration,
        timeout: Duration,
    ) -> Result<WorkOrderResult, ClientError> {
        poll_until(poll, timeout, || self.result(work_order_id)).await
    }

    /// Submits `request` and returns its result: from the answer in a listener's synchronous
    /// mode, or by polling every `poll` for at most `timeout` otherwise. The result is not yet
    /// verified: open it with the [`PendingResult`] the builder gave.
    ///
    /// # Errors
    /// As [`Client::submit_surely`] and [`Client::wait_result`].
    pub async fn submit_and_wait(
        &self,
        request: &WorkOrderRequest,
        poll: Duration,
        timeout: Duration,
    ) -> Result<WorkOrderResult, ClientError> {
        match self.submit_surely(request).await? {
            Submission::Done(result) => Ok(*result),
            Submission::Pending => self.wait_result(&request.work_order_id, poll, timeout).await,
        }
    }

    /// `WorkOrderReceiptCreate` for a submitted request, signed by `signer` (status pending).
    ///
    /// # Errors
    /// [`ClientError::Rpc`] when the listener refuses it.
    pub async fn create_receipt(
        &self,
        request: &WorkOrderRequest,
        signer: &EcdsaSigningKey,
    ) -> Result<(), ClientError> {
        let nonce = u64::from_be_bytes(random_array()?) % 10_000_000_000 + 1;
        let mut receipt = ReceiptCreate {
            work_order_id: Some(request.work_order_id.clone()),
            worker_service_id: Some(request.worker_id.clone()),
            worker_id: Some(request.worker_id.clone()),
            requester_id: Some(request.requester_id.clone()),
            receipt_create_status: Some(ReceiptStatus::Pending.code()),
            work_order_request_hash: Some(protection::encode_base64(
                request_hash(request).as_bytes(),
            )),
            requester_generated_nonce: Some(nonce.to_string()),
            requester_signature: None,
            signature_rules: Some("SHA-256/SECP256K1".into()),
            receipt_verification_key: Some(signer.verifying_key().to_pem()),
        };
        receipt.requester_signature =
            Some(protection::sign_digest_base64(signer, &receipt_create_digest(&receipt)));
        self.expect_code_zero("WorkOrderReceiptCreate", serde_json::to_value(&receipt)).await
    }

    /// `WorkOrderReceiptUpdate` with a signed update (see `afallon_proto::receipt_update_digest`).
    ///
    /// # Errors
    /// [`ClientError::Rpc`] when the listener refuses it.
    pub async fn receipt_update(&self, update: &ReceiptUpdate) -> Result<(), ClientError> {
        self.expect_code_zero("WorkOrderReceiptUpdate", serde_json::to_value(update)).await
    }

    async fn expect_code_zero(
        &self,
        method: &str,
        params: serde_json::Result<Value>,
    ) -> Result<(), ClientError> {
        let params = params.map_err(|e| ClientError::Protocol(e.to_string()))?;
        match self.call(method, params).await {
            Err(ClientError::Rpc(error)) if error.code == WorkOrderStatus::Success.code() => Ok(()),
            Err(error) => Err(error),
            Ok(other) => Err(ClientError::Protocol(format!("{method} answered a result: {other}"))),
        }
    }

    /// `WorkOrderReceiptRetrieve`.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] for an unknown receipt.
    pub async fn receipt(&self, work_order_id: &str) -> Result<ReceiptRetrieveResult, ClientError> {
        let result =
            self.call("WorkOrderReceiptRetrieve", json!({"workOrderId": work_order_id})).await?;
        serde_json::from_value(result).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Polls `WorkOrderReceiptRetrieve` every `poll` until the receipt has left its create
    /// status (for a finished order: the worker's signed update is in, which it adds shortly
    /// after the order finishes or the receipt is created), or `timeout` passes; returns the
    /// receipt as last read.
    ///
    /// # Errors
    /// As [`Client::receipt`], and [`ClientError::Timeout`].
    pub async fn wait_receipt_update(
        &self,
        work_order_id: &str,
        poll: Duration,
        timeout: Duration,
    ) -> Result<ReceiptRetrieveResult, ClientError> {
        poll_until(poll, timeout, || async {
            let receipt = self.receipt(work_order_id).await?;
            let created = receipt.receipt.receipt_create_status.unwrap_or(0);
            Ok((receipt.receipt_current_status != created).then_some(receipt))
        })
        .await
    }

    /// `WorkOrderReceiptUpdateRetrieve`; `None` for the last update.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] for an unknown receipt or index.
    pub async fn receipt_update_retrieve(
        &self,
        work_order_id: &str,
        update_index: Option<i64>,
    ) -> Result<ReceiptUpdateRetrieveResult, ClientError> {
        let index = update_index.unwrap_or(ReceiptUpdateRetrieveParams::LAST_UPDATE);
        let result = self
            .call(
                "WorkOrderReceiptUpdateRetrieve",
                json!({"workOrderId": work_order_id, "updateIndex": index}),
            )
            .await?;
        serde_json::from_value(result).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

impl From<afallon_crypto::RandomError> for ClientError {
    fn from(error: afallon_crypto::RandomError) -> Self {
        Self::Protection(error.into())
    }
}
