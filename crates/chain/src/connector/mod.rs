//! The connector: runs the orders submitted on chain for the service's workers, completes them
//! with the service's responses, mirrors their receipts, and keeps the on-chain worker registry
//! in step with the service's. It remembers, in the store, the block up to which everything is
//! settled, and reads on from there after a restart: an order is neither missed nor completed
//! twice.
//!
//! The rules that make it so:
//! - an order is read only once its block is `confirmations` deep, so an order that a
//!   reorganisation takes back is never run; a reorganisation deeper than that, found while
//!   running or at a restart, makes it read again from before it;
//! - it is settled only once its completion is as deep, so a completion that a reorganisation
//!   takes back is sent again;
//! - before sending a completion it asks the chain whether the order is still active (while no
//!   other transaction of its account is being sent), and the registry refuses a second
//!   completion; a completion still waiting in the node's pool is waited for, not sent again;
//! - the service refuses a second submission of an id, and answers the first one's result,
//!   which is relayed only if the service's request under that id is the on-chain one.
//!
//! `mod.rs` has the loop and the cursor; `orders.rs` an order's way, `receipts.rs` a receipt's,
//! `registry.rs` the worker registry's.

mod orders;
mod receipts;
mod registry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use afallon_store::{SealedBlob, Store};
use alloy::contract::{CallBuilder, CallDecoder};
use alloy::primitives::{Address, B256, TxHash, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use tokio::sync::{mpsc, watch};

use crate::contracts::{
    Deployment, WorkOrderReceiptRegistry, WorkOrderRegistry, WorkerRegistry, bytes32_to_id,
};
use crate::progress::{Cursor, Progress};
use crate::relay::{ChainOrder, ChainReceipt};
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
    /// The most orders and receipts in progress at once: reading stops at a whole block once
    /// that many are open [default: 256].
    pub max_open: usize,
    /// The largest response put on chain (a block holds a limited amount of data, and the
    /// service's account pays for each byte): a larger one is replaced by an error
    /// [default: 32 KiB].
    pub max_response_bytes: usize,
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
            max_response_bytes: 32 * 1024,
        }
    }
}

/// How far the connector goes back when the chain changed under what it had read (a
/// reorganisation deeper than the confirmations): everything since is looked at again, which
/// is harmless (see the module's rules).
pub const REWIND_BLOCKS: u64 = 256;

/// How many rounds in a row the chain may refuse what the connector sends for one order or
/// receipt (or what it waits for may fail to come) before it gives up on it, loudly: so that
/// nothing holds a place among the open ones for good.
const PATIENCE: u32 = 100;

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

impl<S, St> std::fmt::Debug for Connector<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("account", &self.inner.account)
            .field("deployment", &self.inner.deployment)
            .finish_non_exhaustive()
    }
}

struct Inner<S, St> {
    provider: DynProvider,
    account: Address,
    deployment: Deployment,
    service: S,
    store: Arc<St>,
    config: ConnectorConfig,
    /// Held while a transaction is signed and sent, so that nonces follow each other and a
    /// check made under it still holds when the transaction goes out.
    sending: tokio::sync::Mutex<()>,
    rpc_ids: std::sync::atomic::AtomicU64,
    /// Orders whose completion was given up: their receipts end too.
    given_up: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// What a task reports when it ends: the key it ran under, and whether what it was about vanished
/// from the chain (a reorganisation deeper than the confirmations).
struct Ended {
    key: String,
    vanished: bool,
}

/// How a task's rounds ended.
enum Rounds {
    /// Settled; whether what it was about vanished from the chain.
    Settled(bool),
    /// The chain kept refusing it.
    GaveUp,
}

/// Counts the rounds in a row in which the chain refused what a task sent.
#[derive(Default)]
struct Patience {
    refusals: u32,
}

impl Patience {
    /// What one round's outcome means for a task about `work_order_id` doing `what`: settled,
    /// given up after [`PATIENCE`] refusals in a row (said loudly), or (`None`) go on, with a
    /// failure logged.
    fn judge(
        &mut self,
        outcome: Result<Option<bool>, ChainError>,
        work_order_id: &str,
        what: &str,
    ) -> Option<Rounds> {
        match outcome {
            Ok(Some(vanished)) => Some(Rounds::Settled(vanished)),
            Ok(None) => {
                self.refusals = 0;
                None
            }
            Err(error) if error.is_refusal() && self.refusals >= PATIENCE => {
                tracing::error!(%error, work_order = %work_order_id, "the chain keeps refusing {what}; given up");
                Some(Rounds::GaveUp)
            }
            Err(error) => {
                self.refusals += u32::from(error.is_refusal());
                tracing::warn!(%error, work_order = %work_order_id, "{what} failed; trying again");
                None
            }
        }
    }
}

/// What the loop keeps between steps.
struct Reading {
    progress: Progress,
    /// The last block read, with its hash then: a change means a reorganisation under it.
    mark: Option<(u64, B256)>,
    /// The tasks in progress, by key, with the block each is counted open at.
    in_flight: HashMap<String, u64>,
    ended: mpsc::UnboundedSender<Ended>,
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
                given_up: std::sync::Mutex::default(),
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

    /// Runs from `resume` until `stop` turns true: reads confirmed orders and receipts, runs
    /// and completes them, keeps the registry in step. Failures of the chain's node, the
    /// service or the store are logged and retried.
    ///
    /// # Errors
    /// None so far: the result leaves room for failures that end the connector.
    pub async fn run(
        self,
        resume: Resume,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ChainError> {
        let inner = self.inner;
        let Resume { from_block, mut cursor, mut version } = resume;
        tracing::info!(from_block, "connector reading on-chain orders");
        let (ended, mut ends) = mpsc::unbounded_channel::<Ended>();
        let mut reading = Reading {
            progress: Progress::after(from_block),
            mark: None,
            in_flight: HashMap::new(),
            ended,
        };
        let mut last_sync: Option<tokio::time::Instant> = None;
        loop {
            while let Ok(end) = ends.try_recv() {
                let Some(block) = reading.in_flight.remove(&end.key) else { continue };
                reading.progress.settled(block);
                if end.vanished {
                    let to =
                        block.saturating_sub(REWIND_BLOCKS).max(inner.deployment.deployed_at_block);
                    tracing::warn!(
                        block,
                        from = to,
                        "what was read there vanished from the chain; reading again"
                    );
                    reading.progress.rewind_to(to);
                }
            }
            if last_sync.is_none_or(|at| at.elapsed() >= inner.config.registry_sync) {
                match inner.sync_workers().await {
                    Ok(()) => last_sync = Some(tokio::time::Instant::now()),
                    Err(error) => {
                        tracing::warn!(%error, "cannot bring the worker registry in step")
                    }
                }
            }
            let verified = match inner.step(&mut reading, &stop).await {
                Ok(verified) => verified,
                Err(error) => {
                    tracing::warn!(%error, "reading on-chain orders failed; trying again");
                    false
                }
            };
            // Only over blocks the chain was just seen to still have: a cursor must never carry
            // the hash of a chain that replaced what was read.
            let saved = match reading.mark {
                Some(mark) if verified && reading.progress.done_to() <= mark.0 => {
                    inner.save_cursor(&reading.progress, mark, cursor, version).await
                }
                _ => Ok(None),
            };
            match saved {
                Ok(Some((saved, saved_version))) => {
                    cursor = Some(saved);
                    version = saved_version;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot store the connector's cursor"),
            }
            if inner.pause(&mut stop).await {
                break;
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
        if self.block_hash(stored.block).await.ok().flatten() == Some(stored.hash) {
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

    /// The hash of the chain's block `number` now, if it has one.
    async fn block_hash(&self, number: u64) -> Result<Option<B256>, ChainError> {
        let block = self.provider.get_block_by_number(number.into()).await?;
        Ok(block.map(|block| block.header.hash))
    }

    /// Stores the cursor if it moved (either way), with its block's hash as the chain has it,
    /// if the chain still has `mark` (the last block read) once that hash is read: the hash is
    /// then of the chain that was read.
    async fn save_cursor(
        &self,
        progress: &Progress,
        mark: (u64, B256),
        cursor: Option<Cursor>,
        version: u64,
    ) -> Result<Option<(Cursor, u64)>, ChainError> {
        let block = progress.done_to();
        if cursor.is_some_and(|cursor| cursor.block == block)
            || (cursor.is_none() && block == self.deployment.deployed_at_block)
        {
            return Ok(None);
        }
        let Some(hash) = self.block_hash(block).await? else { return Ok(None) };
        if self.block_hash(mark.0).await? != Some(mark.1) {
            return Ok(None);
        }
        let next = Cursor { block, hash };
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

    /// Checks that the chain still has the last block read (else reads again from well before
    /// it), then reads the next confirmed blocks, up to whole blocks within
    /// [`ConnectorConfig::max_open`], and starts a task for each order and receipt of the
    /// service's workers in them. Whether the chain was seen to still have what was read.
    async fn step(
        self: &Arc<Self>,
        reading: &mut Reading,
        stop: &watch::Receiver<bool>,
    ) -> Result<bool, ChainError> {
        let mut verified = false;
        if let Some((number, hash)) = reading.mark {
            verified = self.block_hash(number).await? == Some(hash);
            if !verified {
                let to =
                    number.saturating_sub(REWIND_BLOCKS).max(self.deployment.deployed_at_block);
                tracing::warn!(
                    block = number,
                    from = to,
                    "the chain changed under what was read (a reorganisation deeper than the confirmations); reading again"
                );
                reading.progress.rewind_to(to);
                reading.mark = None;
                return Ok(false);
            }
        }
        if reading.progress.open() >= self.config.max_open {
            return Ok(verified);
        }
        let head = self.provider.get_block_number().await?;
        let Some(range) =
            reading.progress.next_range(head, self.config.confirmations, self.config.span)
        else {
            return Ok(verified);
        };
        let mut owners = HashMap::new();
        let mut orders = Vec::new();
        let submitted = self
            .events::<WorkOrderRegistry::workOrderSubmitted>(
                self.deployment.work_order_registry,
                &range,
            )
            .await?;
        for (event, block, block_hash) in submitted {
            if event.errorCode != U256::ZERO || !self.ours(event.workerId, &mut owners).await? {
                continue;
            }
            orders.push(ChainOrder {
                work_order_id: bytes32_to_id(&event.workOrderId),
                worker_id: bytes32_to_id(&event.workerId),
                requester_id: bytes32_to_id(&event.requesterId),
                request: event.workOrderRequest,
                block,
                block_hash,
            });
        }
        let mut receipts = Vec::new();
        let created = self
            .events::<WorkOrderReceiptRegistry::workOrderReceiptCreated>(
                self.deployment.receipt_registry,
                &range,
            )
            .await?;
        for (event, block, block_hash) in created {
            if event.errorCode != U256::ZERO || !self.ours(event.workerId, &mut owners).await? {
                continue;
            }
            receipts.push(ChainReceipt {
                work_order_id: bytes32_to_id(&event.workOrderId),
                worker_service_id: bytes32_to_id(&event.workerServiceId),
                worker_id: bytes32_to_id(&event.workerId),
                requester_id: bytes32_to_id(&event.requesterId),
                status: u64::try_from(event.receiptStatus).unwrap_or(u64::MAX),
                request_hash: event.workOrderRequestHash.to_vec(),
                block,
                block_hash,
            });
        }
        let mut found: Vec<u64> =
            orders.iter().map(|o| o.block).chain(receipts.iter().map(|r| r.block)).collect();
        found.sort_unstable();
        let Some(end) = reading.progress.read_end(&range, &found, self.config.max_open) else {
            return Ok(verified);
        };
        orders.retain(|order| order.block <= end);
        receipts.retain(|receipt| receipt.block <= end);
        let Some(end_hash) = self.block_hash(end).await? else { return Ok(verified) };
        reading.progress.read(
            &(*range.start()..=end),
            orders.iter().map(|o| o.block).chain(receipts.iter().map(|r| r.block)),
        );
        reading.mark = Some((end, end_hash));
        verified = true;
        for order in orders {
            let (key, block) = (format!("order/{}", order.work_order_id), order.block);
            let (inner, stop) = (Arc::clone(self), stop.clone());
            Self::start_task(
                reading,
                key,
                block,
                async move { inner.settle_order(order, stop).await },
            );
        }
        for receipt in receipts {
            let (key, block) = (format!("receipt/{}", receipt.work_order_id), receipt.block);
            let (inner, stop) = (Arc::clone(self), stop.clone());
            Self::start_task(reading, key, block, async move {
                inner.settle_receipt(receipt, stop).await
            });
        }
        Ok(verified)
    }

    /// Starts `task` for what was read from `block` under `key`. If a task for it is still in
    /// progress (it was read again after a rewind, maybe at another block), none is started, and
    /// of the two blocks the lower stays counted open. The task answers whether what it was
    /// about vanished, or nothing if the connector stopped first.
    fn start_task(
        reading: &mut Reading,
        key: String,
        block: u64,
        task: impl Future<Output = Option<bool>> + Send + 'static,
    ) {
        if let Some(counted) = reading.in_flight.get_mut(&key) {
            *counted = reading.progress.read_again(*counted, block);
            return;
        }
        reading.in_flight.insert(key.clone(), block);
        let ended = reading.ended.clone();
        tokio::spawn(async move {
            if let Some(vanished) = task.await {
                let _ = ended.send(Ended { key, vanished });
            }
        });
    }

    /// The events `E` that `address` emitted in `range`, each with its block and the block's
    /// hash; a log that does not decode is logged and skipped.
    async fn events<E: SolEvent>(
        &self,
        address: Address,
        range: &std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<(E, u64, B256)>, ChainError> {
        let filter = Filter::new()
            .address(address)
            .event_signature(E::SIGNATURE_HASH)
            .from_block(*range.start())
            .to_block(*range.end());
        let mut events = Vec::new();
        for log in self.provider.get_logs(&filter).await? {
            let (Some(block), Some(hash)) = (log.block_number, log.block_hash) else { continue };
            match E::decode_log(&log.inner) {
                Ok(event) => events.push((event.data, block, hash)),
                Err(error) => {
                    tracing::warn!(%error, event = E::SIGNATURE, "a log that does not decode")
                }
            }
        }
        Ok(events)
    }

    /// Whether this account registered `worker` on chain, so that its orders are the service's
    /// (asked once per step for each worker).
    async fn ours(
        &self,
        worker: B256,
        owners: &mut HashMap<B256, bool>,
    ) -> Result<bool, ChainError> {
        if let Some(ours) = owners.get(&worker) {
            return Ok(*ours);
        }
        let registry = WorkerRegistry::new(self.deployment.worker_registry, self.provider.clone());
        let ours = registry.workerOwner(worker).call().await? == self.account;
        owners.insert(worker, ours);
        Ok(ours)
    }

    fn rpc_id(&self) -> u64 {
        self.rpc_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends `call` if `still_wanted` says so when asked while no other transaction of this
    /// account is being sent (so that its answer still holds when the transaction goes out, and
    /// nonces follow each other); returns the transaction's hash.
    async fn send_if<C: CallDecoder>(
        &self,
        call: CallBuilder<&DynProvider, C>,
        still_wanted: impl AsyncFnOnce() -> Result<bool, ChainError>,
    ) -> Result<Option<TxHash>, ChainError> {
        let _sending = self.sending.lock().await;
        if !still_wanted().await? {
            return Ok(None);
        }
        let pending = call.send().await?;
        Ok(Some(*pending.tx_hash()))
    }

    /// Sends `call` and waits until it is mined; a reverted one is an error.
    async fn send_and_wait<C: CallDecoder>(
        &self,
        call: CallBuilder<&DynProvider, C>,
    ) -> Result<(), ChainError> {
        let Some(hash) = self.send_if(call, async || Ok(true)).await? else { return Ok(()) };
        let receipt =
            alloy::providers::PendingTransactionBuilder::new(self.provider.root().clone(), hash)
                .with_timeout(Some(Duration::from_secs(120)))
                .get_receipt()
                .await?;
        if !receipt.status() {
            return Err(ChainError::Reverted(receipt.transaction_hash));
        }
        Ok(())
    }

    /// Whether the transaction `hash` is still waiting in the node's pool (neither mined nor
    /// dropped).
    async fn waiting(&self, hash: TxHash) -> Result<bool, ChainError> {
        let transaction = self.provider.get_transaction_by_hash(hash).await?;
        Ok(transaction.is_some_and(|transaction| transaction.block_number.is_none()))
    }

    /// Waits one poll interval; whether the connector stopped meanwhile.
    async fn pause(&self, stop: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => true,
            () = tokio::time::sleep(self.config.poll) => false,
        }
    }

    /// Records that the completion of `work_order_id` was given up.
    fn give_up(&self, work_order_id: &str) {
        self.given_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(work_order_id.to_owned());
    }

    /// Whether the completion of `work_order_id` was given up.
    fn gave_up(&self, work_order_id: &str) -> bool {
        self.given_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(work_order_id)
    }

    /// An order's status on chain, at `block` (none: the latest).
    async fn order_status(&self, order: B256, block: Option<u64>) -> Result<U256, ChainError> {
        let registry =
            WorkOrderRegistry::new(self.deployment.work_order_registry, self.provider.clone());
        let call = registry.workOrderGet(order);
        let call = match block {
            Some(block) => call.block(alloy::eips::BlockId::number(block)),
            None => call,
        };
        Ok(call.call().await?.status)
    }

    /// The block `confirmations` below the head, if there is one.
    async fn confirmed_height(&self) -> Result<Option<u64>, ChainError> {
        let head = self.provider.get_block_number().await?;
        Ok(head.checked_sub(self.config.confirmations))
    }
}
