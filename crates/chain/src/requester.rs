//! The requester's side of the proxy model: a worker's record from the on-chain registry, a work
//! order submitted on chain, its completion read from the `workOrderCompleted` events, and its
//! receipt.
//! Verifying and decrypting is the SDK's, exactly as in the direct model: a result is accepted
//! only if it answers the requester's own order.

use std::time::Duration;

use afallon_client::{Policy, Worker, verify_worker_record};
use afallon_proto::{ReceiptUpdate, WorkOrderRequest, WorkOrderResult, WorkerRecord};
use alloy::primitives::U256;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use serde_json::Value;

use crate::ChainError;
use crate::contracts::{
    Deployment, LAST_UPDATE, WorkOrderReceiptRegistry, WorkOrderRegistry, WorkerRegistry,
    bytes32_to_id, full_id_to_bytes32, id_to_bytes32,
};
use crate::relay::{self, ChainUpdate};

/// Sends `call` and waits until it is mined; the block it is in (a reverted one is an error).
async fn mined_in<P: Provider, C: alloy::contract::CallDecoder>(
    call: alloy::contract::CallBuilder<P, C>,
) -> Result<u64, ChainError> {
    let receipt =
        call.send().await?.with_timeout(Some(Duration::from_secs(120))).get_receipt().await?;
    if !receipt.status() {
        return Err(ChainError::Reverted(receipt.transaction_hash));
    }
    receipt.block_number.ok_or_else(|| ChainError::Unexpected("a receipt with no block".into()))
}

/// A requester on a chain where the registries of `deployment` are.
#[derive(Debug, Clone)]
pub struct ChainRequester {
    provider: DynProvider,
    deployment: Deployment,
}

/// A work order's completion, as its `workOrderCompleted` event carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The block it is in.
    pub block: u64,
    /// The connector's JSON-RPC response: a result, or the service's error.
    pub response: String,
}

impl Completion {
    /// The result in the response, to be opened (verified and decrypted) with the
    /// [`afallon_proto::requester::PendingResult`] of the order.
    ///
    /// # Errors
    /// [`ChainError::Service`] with the error the response carries, or
    /// [`ChainError::Unexpected`] for a response that is neither.
    pub fn result(&self) -> Result<WorkOrderResult, ChainError> {
        let value: Value = serde_json::from_str(&self.response)
            .map_err(|_| ChainError::Unexpected("a completion that is not JSON".into()))?;
        if let Some(error) = value.get("error") {
            return Err(ChainError::Service(error.to_string()));
        }
        let result = value
            .get("result")
            .ok_or_else(|| ChainError::Unexpected("a completion with no result".into()))?;
        serde_json::from_value(result.clone()).map_err(|error| {
            ChainError::Unexpected(format!("a result that does not parse: {error}"))
        })
    }
}

impl ChainRequester {
    /// A requester sending from `provider`'s account (see [`crate::connect`]).
    pub fn new(provider: DynProvider, deployment: Deployment) -> Self {
        Self { provider, deployment }
    }

    /// A worker's record as the registry holds it, not yet verified (see
    /// [`ChainRequester::verify_worker`]).
    ///
    /// # Errors
    /// [`ChainError::Unexpected`] for a worker the registry does not have.
    pub async fn worker_record(&self, worker_id: &str) -> Result<WorkerRecord, ChainError> {
        let registry = WorkerRegistry::new(self.deployment.worker_registry, &self.provider);
        let record = registry.workerRetrieve(id_to_bytes32(worker_id)?).call().await?;
        if record.status == U256::ZERO {
            return Err(ChainError::Unexpected(format!("no worker {worker_id} in the registry")));
        }
        let details = serde_json::from_str(&record.details)
            .map_err(|error| ChainError::Unexpected(format!("the worker's details: {error}")))?;
        Ok(WorkerRecord {
            worker_type: i64::try_from(record.workerType).unwrap_or(0),
            organization_id: bytes32_to_id(&record.organizationId),
            application_type_id: record.appTypeIds.first().map(bytes32_to_id).unwrap_or_default(),
            details,
            status: i64::try_from(record.status).unwrap_or(0),
        })
    }

    /// A worker from the registry, verified under `policy` now, exactly as one from a listener
    /// (its encryption-key signature, its attestation): build orders with [`Worker::work_order`].
    ///
    /// # Errors
    /// [`ChainError::Worker`] when the record does not verify.
    pub async fn verify_worker(
        &self,
        worker_id: &str,
        policy: &Policy,
    ) -> Result<Worker, ChainError> {
        let record = self.worker_record(worker_id).await?;
        Ok(verify_worker_record(worker_id, record, policy, afallon_client::UnixTime::now())?)
    }

    /// Submits `request` on chain and waits for the transaction; returns its block.
    ///
    /// # Errors
    /// [`ChainError`]: the id was used before, the worker is not active, the node failed.
    pub async fn submit(&self, request: &WorkOrderRequest) -> Result<u64, ChainError> {
        let params = serde_json::to_string(request)
            .map_err(|error| ChainError::Unexpected(error.to_string()))?;
        let registry = WorkOrderRegistry::new(self.deployment.work_order_registry, &self.provider);
        let call = registry.workOrderSubmit(
            full_id_to_bytes32(&request.work_order_id)?,
            full_id_to_bytes32(&request.worker_id)?,
            full_id_to_bytes32(&request.requester_id)?,
            params,
        );
        mined_in(call).await
    }

    /// Creates the order's receipt on chain (status pending), with the order's request hash: the
    /// connector mirrors it into the service, whose worker then signs its update, which the
    /// connector posts back ([`ChainRequester::worker_receipt_update`]). Returns the block.
    ///
    /// # Errors
    /// [`ChainError`]: not the order's submitter, a receipt exists, the node failed.
    pub async fn create_receipt(&self, request: &WorkOrderRequest) -> Result<u64, ChainError> {
        let registry =
            WorkOrderReceiptRegistry::new(self.deployment.receipt_registry, &self.provider);
        let worker = full_id_to_bytes32(&request.worker_id)?;
        let hash = afallon_proto::request_hash(request).as_bytes().to_vec();
        let call = registry.workOrderReceiptCreate(
            full_id_to_bytes32(&request.work_order_id)?,
            worker,
            worker,
            full_id_to_bytes32(&request.requester_id)?,
            U256::ZERO,
            hash.into(),
        );
        mined_in(call).await
    }

    /// The worker's last update of the order's receipt on chain, verified with the worker's
    /// key; `None` while there is none.
    ///
    /// # Errors
    /// [`ChainError::Unexpected`] for an update whose signature is not the worker's, or the
    /// node's failure.
    pub async fn worker_receipt_update(
        &self,
        work_order_id: &str,
        worker: &Worker,
    ) -> Result<Option<ReceiptUpdate>, ChainError> {
        let registry =
            WorkOrderReceiptRegistry::new(self.deployment.receipt_registry, &self.provider);
        let call = registry.workOrderReceiptUpdateRetrieve(
            full_id_to_bytes32(work_order_id)?,
            full_id_to_bytes32(&worker.worker_id)?,
            U256::from(LAST_UPDATE),
        );
        let update = match call.call().await {
            Ok(update) => update,
            Err(error) if error.as_revert_data().is_some() => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let update = ChainUpdate {
            update_type: u64::try_from(update.updateType)
                .map_err(|_| ChainError::Unexpected("an update type out of range".into()))?,
            data: update.updateData.to_vec(),
            signature: update.updateSignature.to_vec(),
            rules: update.signatureRules,
        };
        relay::verified_update(work_order_id, &update, &worker.verification_key)
            .map(Some)
            .map_err(ChainError::Unexpected)
    }

    /// Waits for `work_order_id`'s completion event, from block `from` on, asking every `poll`,
    /// for at most `timeout`; with `confirmations`, only a completion that deep counts.
    ///
    /// # Errors
    /// [`ChainError::Timeout`], or the node's failure.
    pub async fn wait_completion(
        &self,
        work_order_id: &str,
        from: u64,
        confirmations: u64,
        poll: Duration,
        timeout: Duration,
    ) -> Result<Completion, ChainError> {
        let id = id_to_bytes32(work_order_id)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let head = self.provider.get_block_number().await?;
            if let Some(to) = head.checked_sub(confirmations).filter(|to| *to >= from) {
                let filter = Filter::new()
                    .address(self.deployment.work_order_registry)
                    .event_signature(WorkOrderRegistry::workOrderCompleted::SIGNATURE_HASH)
                    .from_block(from)
                    .to_block(to);
                for log in self.provider.get_logs(&filter).await? {
                    let Ok(event) = WorkOrderRegistry::workOrderCompleted::decode_log(&log.inner)
                    else {
                        continue;
                    };
                    if event.workOrderId == id && event.errorCode == U256::ZERO {
                        return Ok(Completion {
                            block: log.block_number.unwrap_or(to),
                            response: event.workOrderResponse.clone(),
                        });
                    }
                }
            }
            if tokio::time::Instant::now() + poll > deadline {
                return Err(ChainError::Timeout(timeout));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Every completion event of `work_order_id` on the chain now (a registry of ours emits at
    /// most one).
    ///
    /// # Errors
    /// The node's failure.
    pub async fn completions(
        &self,
        work_order_id: &str,
        from: u64,
    ) -> Result<Vec<Completion>, ChainError> {
        let id = id_to_bytes32(work_order_id)?;
        let filter = Filter::new()
            .address(self.deployment.work_order_registry)
            .event_signature(WorkOrderRegistry::workOrderCompleted::SIGNATURE_HASH)
            .from_block(from);
        let mut out = Vec::new();
        for log in self.provider.get_logs(&filter).await? {
            if let Ok(event) = WorkOrderRegistry::workOrderCompleted::decode_log(&log.inner)
                && event.workOrderId == id
            {
                out.push(Completion {
                    block: log.block_number.unwrap_or_default(),
                    response: event.workOrderResponse.clone(),
                });
            }
        }
        Ok(out)
    }

    /// The provider, for calls of the caller's own.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }
}
