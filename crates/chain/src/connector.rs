//! The connector: runs the orders submitted on chain for the service's workers, completes them
//! with the service's responses, and keeps the on-chain worker registry in step with the
//! service's. It remembers, in the store, the block up to which every order is settled, and
//! reads on from there after a restart: an order is neither missed nor completed twice.
//!
//! The rules that make it so:
//! - an order is read only once its block is `confirmations` deep, so an order that a
//!   reorganisation takes back is never run;
//! - it is settled only once its completion is as deep, so a completion that a reorganisation
//!   takes back is sent again;
//! - before sending a completion it asks the chain whether the order is still active, and the
//!   registry refuses a second completion;
//! - the service refuses a second submission of an id, and answers the first one's result.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afallon_store::{SealedBlob, Store};
use alloy::eips::BlockId;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::contracts::{
    Deployment, ORDER_ACTIVE, ORDER_COMPLETED, ORDER_NULL, WorkOrderRegistry, WorkerRegistry,
    bytes32_to_id, id_to_bytes32,
};
use crate::progress::{Cursor, Progress};
use crate::relay::{self, Answer, ChainOrder};
use crate::{ChainError, Service};

/// How the connector runs.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// How deep a block must be before its orders are run, and a completion before its order
    /// is settled [default: 2; public Ethereum wants more, Besu with QBFT or IBFT needs 0].
    pub confirmations: u64,
    /// How often the chain's head is read [default: 1 s].
    pub poll: Duration,
    /// How often the service is asked for an order's result [default: 100 ms].
    pub result_poll: Duration,
    /// How often the on-chain worker registry is brought in step with the service [default:
    /// 30 s, as Avalon's connector].
    pub registry_sync: Duration,
    /// The most blocks read in one `eth_getLogs` [default: 1000].
    pub span: u64,
    /// The most orders in progress at once; reading further waits [default: 256].
    pub max_open: usize,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            confirmations: 2,
            poll: Duration::from_secs(1),
            result_poll: Duration::from_millis(100),
            registry_sync: Duration::from_secs(30),
            span: 1000,
            max_open: 256,
        }
    }
}

/// How far a restart goes back when the chain changed under the stored cursor (a
/// reorganisation deeper than the confirmations): every order since is looked at again, which
/// is harmless (see the module's rules).
pub const REWIND_BLOCKS: u64 = 256;

/// Where a connector goes on from ([`Connector::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Orders are read from the block after this one.
    pub from_block: u64,
    cursor: Option<Cursor>,
    version: u64,
}

/// The connector for one deployment of the registries, speaking for one service.
pub struct Connector<S, St> {
    inner: Arc<Inner<S, St>>,
}

struct Inner<S, St> {
    provider: DynProvider,
    account: Address,
    deployment: Deployment,
    service: S,
    store: Arc<St>,
    config: ConnectorConfig,
    /// Held while a transaction is signed and sent, so that nonces follow each other.
    sending: tokio::sync::Mutex<()>,
    rpc_ids: std::sync::atomic::AtomicU64,
}

impl<S: Service, St: Store> Connector<S, St> {
    /// A connector that sends transactions from `provider`'s wallet account `account`, for the
    /// registries of `deployment`, and keeps its progress in `store`.
    ///
    /// # Errors
    /// [`ChainError::WrongChain`] if the node is on another chain than the deployment;
    /// [`ChainError::Rpc`] if it cannot be asked.
    pub async fn new(
        provider: DynProvider,
        account: Address,
        deployment: Deployment,
        service: S,
        store: Arc<St>,
        config: ConnectorConfig,
    ) -> Result<Self, ChainError> {
        let chain_id = provider.get_chain_id().await?;
        if chain_id != deployment.chain_id {
            return Err(ChainError::WrongChain { deployment: deployment.chain_id, node: chain_id });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                provider,
                account,
                deployment,
                service,
                store,
                config,
                sending: tokio::sync::Mutex::new(()),
                rpc_ids: std::sync::atomic::AtomicU64::new(1),
            }),
        })
    }

    /// Where the connector goes on from: the stored cursor's block if the chain still has it,
    /// an earlier one if the chain changed under it, the deployment's block the first time.
    ///
    /// # Errors
    /// [`ChainError`] if the stored cursor cannot be read.
    pub async fn resume(&self) -> Result<Resume, ChainError> {
        let (cursor, version) = self.inner.load_cursor().await?;
        let from_block = match cursor {
            Some(stored) => self.inner.start_from(stored).await,
            None => self.inner.deployment.deployed_at_block,
        };
        Ok(Resume { from_block, cursor, version })
    }

    /// Runs from `resume` until `stop` turns true: reads confirmed orders, runs and completes
    /// them, keeps the registry in step. Failures of the chain's node, the service or the store
    /// are logged and retried.
    ///
    /// # Errors
    /// None so far: the result leaves room for failures that end the connector.
    pub async fn run(
        self,
        resume: Resume,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ChainError> {
        let inner = self.inner;
        let Resume { from_block: start, mut cursor, mut version } = resume;
        tracing::info!(from_block = start, "connector reading on-chain orders");
        let mut progress = Progress::after(start);
        let (settled_tx, mut settled_rx) = mpsc::unbounded_channel::<(String, u64)>();
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut workers: HashSet<B256> = HashSet::new();
        let mut last_sync: Option<tokio::time::Instant> = None;
        loop {
            while let Ok((id, block)) = settled_rx.try_recv() {
                progress.settled(block);
                lock(&in_flight).remove(&id);
            }
            if last_sync.is_none_or(|at| at.elapsed() >= inner.config.registry_sync) {
                match inner.sync_workers().await {
                    Ok(ours) => {
                        workers = ours;
                        last_sync = Some(tokio::time::Instant::now());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot bring the worker registry in step")
                    }
                }
            }
            if let Err(error) =
                inner.step(&mut progress, &workers, &in_flight, &settled_tx, &mut stop).await
            {
                tracing::warn!(%error, "reading on-chain orders failed; trying again");
            }
            match inner.save_cursor(&progress, cursor, version).await {
                Ok(Some((saved, saved_version))) => {
                    cursor = Some(saved);
                    version = saved_version;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot store the connector's cursor"),
            }
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(inner.config.poll) => {}
            }
        }
        Ok(())
    }
}

impl<S: Service, St: Store> Inner<S, St> {
    fn cursor_key(&self) -> String {
        format!(
            "connector/ethereum/{}/{:#x}/cursor",
            self.deployment.chain_id, self.deployment.work_order_registry
        )
    }

    async fn load_cursor(&self) -> Result<(Option<Cursor>, u64), ChainError> {
        let key = self.cursor_key();
        let stored = self.store.sealed(&key).await?.into_iter().find(|blob| blob.key == key);
        match stored {
            None => Ok((None, 0)),
            Some(blob) => {
                let cursor = serde_json::from_slice(&blob.blob)
                    .map_err(|error| ChainError::Cursor(error.to_string()))?;
                Ok((Some(cursor), blob.version))
            }
        }
    }

    /// Where to read on from after a restart: the stored cursor if its block is still on the
    /// chain, else (the chain changed under it) [`REWIND_BLOCKS`] before it.
    async fn start_from(&self, stored: Cursor) -> u64 {
        let block = self.provider.get_block_by_number(stored.block.into()).await.ok().flatten();
        if block.is_some_and(|block| block.header.hash == stored.hash) {
            return stored.block;
        }
        let from =
            stored.block.saturating_sub(REWIND_BLOCKS).max(self.deployment.deployed_at_block);
        tracing::warn!(
            cursor = stored.block,
            from,
            "the chain changed under the stored cursor (a reorganisation deeper than the confirmations); reading again from an earlier block"
        );
        from
    }

    /// Stores the cursor if it moved.
    async fn save_cursor(
        &self,
        progress: &Progress,
        cursor: Option<Cursor>,
        version: u64,
    ) -> Result<Option<(Cursor, u64)>, ChainError> {
        let block = progress.done_to();
        if cursor.is_some_and(|cursor| cursor.block == block) || block == 0 {
            return Ok(None);
        }
        let Some(header) = self.provider.get_block_by_number(block.into()).await? else {
            return Ok(None);
        };
        let next = Cursor { block, hash: header.header.hash };
        let version = version + 1;
        self.store
            .put_sealed(SealedBlob {
                key: self.cursor_key(),
                version,
                based_on: None,
                blob: serde_json::to_vec(&next).map_err(|e| ChainError::Cursor(e.to_string()))?,
            })
            .await?;
        Ok(Some((next, version)))
    }

    /// Reads the next confirmed blocks' orders and starts each one of the service's workers.
    async fn step(
        self: &Arc<Self>,
        progress: &mut Progress,
        workers: &HashSet<B256>,
        in_flight: &Arc<Mutex<HashSet<String>>>,
        settled: &mpsc::UnboundedSender<(String, u64)>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ChainError> {
        if progress.open() >= self.config.max_open {
            return Ok(());
        }
        let head = self.provider.get_block_number().await?;
        let Some(range) = progress.next_range(head, self.config.confirmations, self.config.span)
        else {
            return Ok(());
        };
        let filter = Filter::new()
            .address(self.deployment.work_order_registry)
            .event_signature(WorkOrderRegistry::workOrderSubmitted::SIGNATURE_HASH)
            .from_block(*range.start())
            .to_block(*range.end());
        let logs = self.provider.get_logs(&filter).await?;
        let mut orders = Vec::new();
        for log in logs {
            let Some(block) = log.block_number else { continue };
            let Ok(event) = WorkOrderRegistry::workOrderSubmitted::decode_log(&log.inner) else {
                tracing::warn!(?log, "a workOrderSubmitted log that does not decode");
                continue;
            };
            if event.errorCode != U256::ZERO || !workers.contains(&event.workerId) {
                continue;
            }
            orders.push(ChainOrder {
                work_order_id: bytes32_to_id(&event.workOrderId),
                worker_id: bytes32_to_id(&event.workerId),
                requester_id: bytes32_to_id(&event.requesterId),
                request: event.workOrderRequest.clone(),
                block,
            });
        }
        progress.read(&range, orders.iter().map(|order| order.block));
        for order in orders {
            if !lock(in_flight).insert(order.work_order_id.clone()) {
                // Read again after a rewind while it is still in progress.
                progress.settled(order.block);
                continue;
            }
            let inner = Arc::clone(self);
            let settled = settled.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let id = order.work_order_id.clone();
                let block = order.block;
                if inner.settle(order, stop).await {
                    let _ = settled.send((id, block));
                }
            });
        }
        Ok(())
    }

    /// Runs `order` through the service and completes it on chain, until its completion is
    /// confirmed (true) or the connector stops (false).
    async fn settle(&self, order: ChainOrder, mut stop: watch::Receiver<bool>) -> bool {
        let id = match id_to_bytes32(&order.work_order_id) {
            Ok(id) => id,
            Err(_) => return true,
        };
        let registry =
            WorkOrderRegistry::new(self.deployment.work_order_registry, self.provider.clone());
        let mut response: Option<String> = None;
        loop {
            match self.settle_once(&registry, id, &order, &mut response).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, work_order = %order.work_order_id, "completing an on-chain order failed; trying again");
                }
            }
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return false,
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// One round of [`Inner::settle`]: whether the order is settled now.
    async fn settle_once(
        &self,
        registry: &WorkOrderRegistry::WorkOrderRegistryInstance<DynProvider>,
        id: B256,
        order: &ChainOrder,
        response: &mut Option<String>,
    ) -> Result<bool, ChainError> {
        let latest = registry.workOrderGet(id).call().await?.status;
        if latest == U256::from(ORDER_NULL) {
            // Its submission is no longer on the chain: nothing to complete.
            tracing::warn!(work_order = %order.work_order_id, "an on-chain order vanished after its confirmations");
            return Ok(true);
        }
        if latest == U256::from(ORDER_ACTIVE) {
            let answer = match response {
                Some(answer) => answer.clone(),
                None => {
                    let answer = self.response_for(order).await;
                    *response = Some(answer.clone());
                    answer
                }
            };
            let _sending = self.sending.lock().await;
            // Asked again under the lock: another round of this order may have completed it.
            if registry.workOrderGet(id).call().await?.status != U256::from(ORDER_ACTIVE) {
                return Ok(false);
            }
            let pending = registry.workOrderComplete(id, answer).send().await?;
            drop(_sending);
            let receipt =
                pending.with_timeout(Some(Duration::from_secs(120))).get_receipt().await?;
            tracing::debug!(work_order = %order.work_order_id, tx = %receipt.transaction_hash, "completed on chain");
            return Ok(false);
        }
        let head = self.provider.get_block_number().await?;
        let Some(confirmed) = head.checked_sub(self.config.confirmations) else {
            return Ok(false);
        };
        let status =
            registry.workOrderGet(id).call().block(BlockId::number(confirmed)).await?.status;
        Ok(status == U256::from(ORDER_COMPLETED))
    }

    /// The service's final response for `order`: submitted (again, after a restart: the service
    /// then answers with the first submission's result), waited for.
    async fn response_for(&self, order: &ChainOrder) -> String {
        let body = match relay::submit_body(order, self.rpc_id()) {
            Ok(body) => body,
            Err(refusal) => return refusal,
        };
        loop {
            let answer = self.service.call(body.clone()).await;
            if relay::is_transient(&answer) {
                tokio::time::sleep(self.config.poll).await;
                continue;
            }
            match relay::read_submit_answer(&answer) {
                Answer::Final(answer) => return answer,
                Answer::Pending => break,
            }
        }
        loop {
            let answer =
                self.service.call(relay::result_body(&order.work_order_id, self.rpc_id())).await;
            match relay::read_result_answer(&answer) {
                Answer::Final(answer) => return answer,
                Answer::Pending => tokio::time::sleep(self.config.result_poll).await,
            }
        }
    }

    fn rpc_id(&self) -> u64 {
        self.rpc_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks the service for its workers and brings the registry in step: registers new ones,
    /// updates changed ones, decommissions the ones this account registered that the service no
    /// longer has. Returns the service's workers.
    async fn sync_workers(&self) -> Result<HashSet<B256>, ChainError> {
        let records = self.service_workers().await?;
        let registry = WorkerRegistry::new(self.deployment.worker_registry, self.provider.clone());
        let mut ours = HashSet::new();
        for (id, record) in &records {
            let Ok(worker_id) = id_to_bytes32(id) else { continue };
            let on_chain = registry.workerRetrieve(worker_id).call().await?;
            let details = record.get("details").map(Value::to_string).unwrap_or_default();
            let status = record.get("status").and_then(Value::as_u64).unwrap_or(1);
            if on_chain.status == U256::ZERO {
                let worker_type = record.get("workerType").and_then(Value::as_u64).unwrap_or(1);
                let organization = hex_field(record, "organizationId");
                let app_types = match hex_field(record, "applicationTypeId") {
                    B256::ZERO => vec![],
                    app_type => vec![app_type],
                };
                let call = registry.workerRegister(
                    worker_id,
                    U256::from(worker_type),
                    organization,
                    app_types,
                    details.clone(),
                );
                self.send(call).await?;
                tracing::info!(worker = %id, "worker registered on chain");
                if status != 1 {
                    self.send(registry.workerSetStatus(worker_id, U256::from(status))).await?;
                }
                ours.insert(worker_id);
                continue;
            }
            if registry.workerOwner(worker_id).call().await? != self.account {
                tracing::error!(worker = %id, "the worker is registered on chain by another account: its orders are not run here");
                continue;
            }
            if on_chain.details != details {
                self.send(registry.workerUpdate(worker_id, details.clone())).await?;
            }
            if on_chain.status != U256::from(status) {
                self.send(registry.workerSetStatus(worker_id, U256::from(status))).await?;
            }
            ours.insert(worker_id);
        }
        // Decommission what this account registered and the service no longer has.
        let mut tag = U256::ZERO;
        loop {
            let page =
                registry.workerLookUpNext(U256::ZERO, B256::ZERO, B256::ZERO, tag).call().await?;
            for worker_id in page.ids_ {
                if ours.contains(&worker_id)
                    || registry.workerOwner(worker_id).call().await? != self.account
                {
                    continue;
                }
                let status = registry.workerRetrieve(worker_id).call().await?.status;
                if status != U256::from(3) {
                    self.send(registry.workerSetStatus(worker_id, U256::from(3))).await?;
                    tracing::info!(worker = %bytes32_to_id(&worker_id), "worker decommissioned on chain");
                }
            }
            if page.newLookupTag == U256::ZERO {
                break;
            }
            tag = page.newLookupTag;
        }
        Ok(ours)
    }

    /// Every worker of the service, with its record: `WorkerLookUp`, its next pages, and
    /// `WorkerRetrieve` for each.
    async fn service_workers(&self) -> Result<HashMap<String, Value>, ChainError> {
        let mut ids: Vec<String> = Vec::new();
        let mut request = json!({"jsonrpc": "2.0", "method": "WorkerLookUp", "id": self.rpc_id(), "params": {"workerType": 1}});
        loop {
            let answer = self.call_service(&request).await?;
            let result = answer.get("result").cloned().unwrap_or(Value::Null);
            let page: Vec<String> = result
                .get("ids")
                .and_then(Value::as_array)
                .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            let more = !page.is_empty();
            ids.extend(page);
            match result.get("lookupTag").and_then(Value::as_str) {
                Some(tag) if more && !tag.is_empty() => {
                    request = json!({"jsonrpc": "2.0", "method": "WorkerLookUpNext", "id": self.rpc_id(), "params": {"workerType": 1, "lookUpTag": tag}});
                }
                _ => break,
            }
        }
        let mut records = HashMap::new();
        for id in ids {
            let answer = self
                .call_service(&json!({"jsonrpc": "2.0", "method": "WorkerRetrieve", "id": self.rpc_id(), "params": {"workerId": id}}))
                .await?;
            if let Some(record) = answer.get("result") {
                records.insert(id, record.clone());
            }
        }
        Ok(records)
    }

    async fn call_service(&self, request: &Value) -> Result<Value, ChainError> {
        let answer = self.service.call(request.to_string()).await;
        let value: Value = serde_json::from_str(&answer)
            .map_err(|_| ChainError::Service("an answer that is not JSON".into()))?;
        if let Some(error) = value.get("error") {
            return Err(ChainError::Service(error.to_string()));
        }
        Ok(value)
    }

    /// Sends a transaction (one at a time, so that nonces follow each other) and waits for it
    /// to be mined; a reverted one is an error.
    async fn send<C>(
        &self,
        call: alloy::contract::CallBuilder<&DynProvider, C>,
    ) -> Result<(), ChainError>
    where
        C: alloy::contract::CallDecoder,
    {
        let sending = self.sending.lock().await;
        let pending = call.send().await?;
        drop(sending);
        let receipt = pending.with_timeout(Some(Duration::from_secs(120))).get_receipt().await?;
        if !receipt.status() {
            return Err(ChainError::Reverted(receipt.transaction_hash));
        }
        Ok(())
    }
}

/// A record's hex field as a `bytes32` (zero if it is not one).
fn hex_field(record: &Value, field: &str) -> B256 {
    record
        .get(field)
        .and_then(Value::as_str)
        .and_then(|hex| id_to_bytes32(hex).ok())
        .unwrap_or_default()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
