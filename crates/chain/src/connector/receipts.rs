//! An on-chain receipt's way through the connector: mirrored into the store, where the worker
//! adds its signed update, which goes back on chain under the worker's id.

use afallon_store::Store;
use alloy::eips::BlockId;
use alloy::primitives::{TxHash, U256};
use tokio::sync::watch;

use super::Inner;
use crate::contracts::{LAST_UPDATE, WorkOrderReceiptRegistry, id_to_bytes32};
use crate::relay::{self, ChainReceipt};
use crate::{ChainError, Service};

impl<S: Service, St: Store> Inner<S, St> {
    /// Mirrors `receipt` until the worker's update is on chain and confirmed, or the receipt is
    /// refused (true), or the connector stops (false).
    pub(super) async fn settle_receipt(
        &self,
        receipt: ChainReceipt,
        mut stop: watch::Receiver<bool>,
    ) -> bool {
        let mut sent = None;
        loop {
            match self.receipt_round(&receipt, &mut sent).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, work_order = %receipt.work_order_id, "mirroring a receipt failed; trying again")
                }
            }
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return false,
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// One round: whether the receipt is settled.
    async fn receipt_round(
        &self,
        receipt: &ChainReceipt,
        sent: &mut Option<TxHash>,
    ) -> Result<bool, ChainError> {
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
            let Some(confirmed) = self.confirmed_height().await? else { return Ok(false) };
            return posted(Some(confirmed)).await;
        }
        if let Some(hash) = *sent
            && self.waiting(hash).await?
        {
            return Ok(false);
        }
        let Some(record) = self.store.worker(&receipt.worker_id).await? else {
            tracing::warn!(worker = %receipt.worker_id, "a receipt for a worker the service does not have is not mirrored");
            return Ok(true);
        };
        let key = record.details.worker_type_data.verification_key;
        let Some(stored) = self.store.receipt(&receipt.work_order_id).await? else {
            // The order reaches the store when its own task submits it.
            let Some(raw) = self.store.request(&receipt.work_order_id).await? else {
                return Ok(false);
            };
            return match relay::receipt_create(receipt, &raw) {
                Ok(create) => {
                    self.store.create_receipt(&receipt.work_order_id, &create).await?;
                    Ok(false)
                }
                Err(why) => {
                    tracing::warn!(work_order = %receipt.work_order_id, %why, "an on-chain receipt is not mirrored");
                    Ok(true)
                }
            };
        };
        let update = stored
            .updates
            .iter()
            .find(|update| update.receipt_verification_key.as_deref() == Some(key.as_str()))
            .and_then(relay::chain_update);
        let Some(update) = update else { return Ok(false) };
        let call = registry.workOrderReceiptUpdate(
            order,
            worker,
            U256::from(update.update_type),
            update.data.into(),
            update.signature.into(),
            update.rules,
        );
        if let Some(hash) = self.send_if(call, async || Ok(!posted(None).await?)).await? {
            *sent = Some(hash);
        }
        Ok(false)
    }
}
