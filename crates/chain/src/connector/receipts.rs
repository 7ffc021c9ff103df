//! An on-chain receipt's way through the connector: mirrored into the store, where the worker
//! adds its signed update, which goes back on chain under the worker's id.

use afallon_store::Store;
use alloy::eips::BlockId;
use alloy::primitives::{B256, TxHash, U256};
use tokio::sync::watch;

use super::{Inner, PATIENCE, Patience, Rounds};
use crate::contracts::{LAST_UPDATE, ORDER_COMPLETED, WorkOrderReceiptRegistry, id_to_bytes32};
use crate::relay::{self, ChainReceipt};
use crate::{ChainError, Service};

/// What a receipt's task keeps between rounds.
#[derive(Default)]
struct Mirror {
    /// The last update sent.
    sent: Option<TxHash>,
    /// Rounds waited for the worker's update since the order was completed on chain.
    waited: u32,
}

impl<S: Service, St: Store> Inner<S, St> {
    /// Mirrors `receipt` until the worker's update is on chain and confirmed, or the receipt
    /// cannot be mirrored (`Some(false)`, said loudly), or it vanished from the chain
    /// (`Some(true)`), or the connector stops (`None`).
    pub(super) async fn settle_receipt(
        &self,
        receipt: ChainReceipt,
        mut stop: watch::Receiver<bool>,
    ) -> Option<bool> {
        let mut mirror = Mirror::default();
        let mut patience = Patience::default();
        loop {
            let outcome = self.receipt_round(&receipt, &mut mirror).await;
            match patience.judge(outcome, &receipt.work_order_id, "the worker's receipt update") {
                Some(Rounds::Settled(vanished)) => return Some(vanished),
                Some(Rounds::GaveUp) => return Some(false),
                None => {}
            }
            if self.pause(&mut stop).await {
                return None;
            }
        }
    }

    /// One round: `Some(vanished)` once the receipt is settled, given up or gone; `None` to go on.
    async fn receipt_round(
        &self,
        receipt: &ChainReceipt,
        mirror: &mut Mirror,
    ) -> Result<Option<bool>, ChainError> {
        let registry =
            WorkOrderReceiptRegistry::new(self.deployment.receipt_registry, self.provider.clone());
        let order = id_to_bytes32(&receipt.work_order_id)?;
        let worker = id_to_bytes32(&receipt.worker_id)?;
        let last = U256::from(LAST_UPDATE);
        let posted = async |at: Option<u64>| {
            let call = registry.workOrderReceiptUpdateRetrieve(order, worker, last);
            let call = match at {
                Some(block) => call.block(BlockId::number(block)),
                None => call,
            };
            match call.call().await {
                Ok(_) => Ok(true),
                Err(error) if error.as_revert_data().is_some() => Ok(false),
                Err(error) => Err(ChainError::from(error)),
            }
        };
        if posted(None).await? {
            let Some(confirmed) = self.confirmed_height().await? else { return Ok(None) };
            return Ok(posted(Some(confirmed)).await?.then_some(false));
        }
        if registry.workOrderReceiptRetrieve(order).call().await?.workerId == B256::ZERO {
            // Gone only if its block is: a node behind says nothing yet.
            let gone = matches!(self.block_hash(receipt.block).await?, Some(hash) if hash != receipt.block_hash);
            return Ok(gone.then_some(true));
        }
        if let Some(hash) = mirror.sent
            && self.waiting(hash).await?
        {
            return Ok(None);
        }
        let Some(record) = self.store.worker(&receipt.worker_id).await? else {
            tracing::error!(worker = %receipt.worker_id, work_order = %receipt.work_order_id, "a receipt for a worker the service does not have is not mirrored");
            return Ok(Some(false));
        };
        if self.gave_up(&receipt.work_order_id) {
            tracing::error!(work_order = %receipt.work_order_id, "the order's completion was given up, and so is its receipt");
            return Ok(Some(false));
        }
        let order_done = async || {
            let Some(confirmed) = self.confirmed_height().await? else { return Ok(false) };
            let status = self.order_status(order, Some(confirmed)).await?;
            Ok::<_, ChainError>(status == U256::from(ORDER_COMPLETED))
        };
        let Some(stored) = self.store.receipt(&receipt.work_order_id).await? else {
            let Some(raw) = self.store.request(&receipt.work_order_id).await? else {
                // The order reaches the store when its own task submits it, unless it was
                // refused before (its completion is then an error).
                if order_done().await? {
                    tracing::error!(work_order = %receipt.work_order_id, "a receipt whose order never reached the service is not mirrored");
                    return Ok(Some(false));
                }
                return Ok(None);
            };
            return match relay::receipt_create(receipt, &raw) {
                Ok(create) => {
                    self.store.create_receipt(&receipt.work_order_id, &create).await?;
                    Ok(None)
                }
                Err(why) => {
                    tracing::error!(work_order = %receipt.work_order_id, %why, "an on-chain receipt is not mirrored");
                    Ok(Some(false))
                }
            };
        };
        let key = record.details.worker_type_data.verification_key;
        let update = stored
            .updates
            .iter()
            .find(|update| update.receipt_verification_key.as_deref() == Some(key.as_str()))
            .and_then(relay::chain_update);
        let Some(update) = update else {
            if order_done().await? {
                mirror.waited += 1;
                if mirror.waited > PATIENCE {
                    tracing::error!(work_order = %receipt.work_order_id, "no update of the receipt by its worker (with the key it has now) came; given up");
                    return Ok(Some(false));
                }
            }
            return Ok(None);
        };
        let call = registry.workOrderReceiptUpdate(
            order,
            worker,
            U256::from(update.update_type),
            update.data.into(),
            update.signature.into(),
            update.rules,
        );
        if let Some(hash) = self.send_if(call, async || Ok(!posted(None).await?)).await? {
            mirror.sent = Some(hash);
        }
        Ok(None)
    }
}
