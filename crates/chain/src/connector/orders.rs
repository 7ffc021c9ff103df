//! An on-chain order's way through the connector: run on the service, completed on chain with
//! the service's response, settled once the completion is confirmed.

use afallon_proto::{Response, WorkOrderStatus};
use afallon_store::Store;
use alloy::primitives::{B256, TxHash, U256};
use tokio::sync::watch;

use super::{Inner, Patience, Rounds};
use crate::contracts::{
    ORDER_ACTIVE, ORDER_COMPLETED, ORDER_NULL, WorkOrderRegistry, id_to_bytes32,
};
use crate::relay::{self, Answer, ChainOrder};
use crate::{ChainError, Service};

/// What an order keeps between rounds.
#[derive(Default)]
struct Attempt {
    /// The service's final response, once it answered.
    response: Option<String>,
    /// The last completion sent.
    sent: Option<TxHash>,
}

impl<S: Service, St: Store> Inner<S, St> {
    /// Runs `order` until its completion is confirmed (`Some(false)`), or the chain keeps
    /// refusing it (`Some(false)`, said loudly), or its submission vanished from the chain
    /// (`Some(true)`), or the connector stops (`None`).
    pub(super) async fn settle_order(
        &self,
        order: ChainOrder,
        mut stop: watch::Receiver<bool>,
    ) -> Option<bool> {
        let Ok(id) = id_to_bytes32(&order.work_order_id) else {
            tracing::error!(work_order = %order.work_order_id, "an on-chain id that is not one");
            return Some(false);
        };
        let mut attempt = Attempt::default();
        let mut patience = Patience::default();
        loop {
            let outcome = self.order_round(id, &order, &mut attempt).await;
            match patience.judge(outcome, &order.work_order_id, "this order's completion") {
                Some(Rounds::Settled(vanished)) => return Some(vanished),
                Some(Rounds::GaveUp) => {
                    self.give_up(&order.work_order_id);
                    return Some(false);
                }
                None => {}
            }
            if self.pause(&mut stop).await {
                return None;
            }
        }
    }

    /// One round: `Some(vanished)` once the order is settled or gone, `None` to go on.
    async fn order_round(
        &self,
        id: B256,
        order: &ChainOrder,
        attempt: &mut Attempt,
    ) -> Result<Option<bool>, ChainError> {
        let registry =
            WorkOrderRegistry::new(self.deployment.work_order_registry, self.provider.clone());
        let latest = self.order_status(id, None).await?;
        if latest == U256::from(ORDER_NULL) {
            // Gone only if its block is: a node behind the one that answered the logs says
            // nothing yet.
            let gone = matches!(self.block_hash(order.block).await?, Some(hash) if hash != order.block_hash);
            return Ok(gone.then_some(true));
        }
        if latest == U256::from(ORDER_ACTIVE) {
            if let Some(sent) = attempt.sent
                && self.waiting(sent).await?
            {
                return Ok(None);
            }
            let response = match &attempt.response {
                Some(response) => response.clone(),
                None => {
                    let response = self.response_for(order).await;
                    attempt.response = Some(response.clone());
                    response
                }
            };
            let call = registry.workOrderComplete(id, response);
            let still_active =
                async || Ok(self.order_status(id, None).await? == U256::from(ORDER_ACTIVE));
            if let Some(sent) = self.send_if(call, still_active).await? {
                attempt.sent = Some(sent);
            }
            return Ok(None);
        }
        let Some(confirmed) = self.confirmed_height().await? else { return Ok(None) };
        let deep = self.order_status(id, Some(confirmed)).await?;
        Ok((deep == U256::from(ORDER_COMPLETED)).then_some(false))
    }

    /// The service's final response for `order`: submitted (again, after a restart: the service
    /// then answers with the first submission's result), waited for, and no larger than the
    /// chain takes. A request the service holds under the id that is not this one (someone
    /// gave the listener another request under it first) is answered with an error instead of
    /// that request's result.
    async fn response_for(&self, order: &ChainOrder) -> String {
        let rpc_id = self.rpc_id();
        let body = match relay::submit_body(order, rpc_id) {
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
                Answer::Final(answer) => return self.within_limit(order, answer),
                Answer::Pending => break,
            }
        }
        loop {
            match self.store.request(&order.work_order_id).await {
                Ok(Some(stored)) if relay::same_request(&stored, &order.request) => break,
                Ok(Some(_)) => {
                    return Response::work_order_error(
                        rpc_id.into(),
                        WorkOrderStatus::InvalidParameter.code(),
                        "the service holds another request under this work order id",
                        &order.work_order_id,
                    )
                    .to_json();
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "reading the stored request failed; trying again");
                    tokio::time::sleep(self.config.poll).await;
                }
            }
        }
        loop {
            let answer =
                self.service.call(relay::result_body(&order.work_order_id, self.rpc_id())).await;
            match relay::read_result_answer(&answer) {
                Answer::Final(answer) => return self.within_limit(order, answer),
                Answer::Pending => tokio::time::sleep(self.config.result_poll).await,
            }
        }
    }

    /// `answer`, or an error if it is larger than [`super::ConnectorConfig::max_response_bytes`].
    fn within_limit(&self, order: &ChainOrder, answer: String) -> String {
        if answer.len() <= self.config.max_response_bytes {
            return answer;
        }
        Response::work_order_error(
            self.rpc_id().into(),
            WorkOrderStatus::Failed.code(),
            format!(
                "the response is {} bytes, more than the {} this service puts on chain",
                answer.len(),
                self.config.max_response_bytes
            ),
            &order.work_order_id,
        )
        .to_json()
    }
}
