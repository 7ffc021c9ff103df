//! The on-chain worker registry kept in step with the service's: what Avalon's connector did
//! every 30 seconds.

use std::collections::{HashMap, HashSet};

use afallon_store::Store;
use alloy::primitives::{B256, U256};
use serde_json::{Value, json};

use super::Inner;
use crate::contracts::{
    WORKER_ACTIVE, WORKER_DECOMMISSIONED, WorkerRegistry, bytes32_to_id, id_to_bytes32,
};
use crate::{ChainError, Service};

impl<S: Service, St: Store> Inner<S, St> {
    /// Asks the service for its workers and brings the registry in step: registers new ones,
    /// updates changed ones, decommissions the ones this account registered that the service no
    /// longer has. A worker that another account registered is left alone, loudly.
    pub(super) async fn sync_workers(&self) -> Result<(), ChainError> {
        let records = self.service_workers().await?;
        let registry = WorkerRegistry::new(self.deployment.worker_registry, self.provider.clone());
        let mut served = HashSet::new();
        for (id, record) in &records {
            let Ok(worker_id) = id_to_bytes32(id) else { continue };
            let (Some(status), Some(worker_type), Some(details)) = (
                record.get("status").and_then(Value::as_u64),
                record.get("workerType").and_then(Value::as_u64),
                record.get("details").map(Value::to_string),
            ) else {
                tracing::warn!(worker = %id, "a worker record without status, type or details");
                continue;
            };
            served.insert(worker_id);
            let on_chain = registry.workerRetrieve(worker_id).call().await?;
            if on_chain.status == U256::ZERO {
                let app_types = match hex_field(record, "applicationTypeId") {
                    B256::ZERO => vec![],
                    app_type => vec![app_type],
                };
                let call = registry.workerRegister(
                    worker_id,
                    U256::from(worker_type),
                    hex_field(record, "organizationId"),
                    app_types,
                    details,
                );
                self.send_and_wait(call).await?;
                tracing::info!(worker = %id, "worker registered on chain");
                if status != WORKER_ACTIVE {
                    self.send_and_wait(registry.workerSetStatus(worker_id, U256::from(status)))
                        .await?;
                }
                continue;
            }
            if registry.workerOwner(worker_id).call().await? != self.account {
                tracing::error!(worker = %id, "the worker is registered on chain by another account: its orders are not run here");
                continue;
            }
            if on_chain.details != details {
                self.send_and_wait(registry.workerUpdate(worker_id, details)).await?;
            }
            if on_chain.status != U256::from(status) {
                self.send_and_wait(registry.workerSetStatus(worker_id, U256::from(status))).await?;
            }
        }
        let mut tag = U256::ZERO;
        loop {
            let page =
                registry.workerLookUpNext(U256::ZERO, B256::ZERO, B256::ZERO, tag).call().await?;
            for worker_id in page.ids_ {
                if served.contains(&worker_id)
                    || registry.workerOwner(worker_id).call().await? != self.account
                {
                    continue;
                }
                let status = registry.workerRetrieve(worker_id).call().await?.status;
                if status != U256::from(WORKER_DECOMMISSIONED) {
                    let call =
                        registry.workerSetStatus(worker_id, U256::from(WORKER_DECOMMISSIONED));
                    self.send_and_wait(call).await?;
                    tracing::info!(worker = %bytes32_to_id(&worker_id), "worker decommissioned on chain");
                }
            }
            if page.newLookupTag == U256::ZERO {
                break;
            }
            tag = page.newLookupTag;
        }
        Ok(())
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
}

/// A record's hex field as a `bytes32` (zero if it is not one).
fn hex_field(record: &Value, field: &str) -> B256 {
    record
        .get(field)
        .and_then(Value::as_str)
        .and_then(|hex| id_to_bytes32(hex).ok())
        .unwrap_or_default()
}
