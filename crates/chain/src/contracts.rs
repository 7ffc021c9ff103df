//! The registries' bindings, generated from the artifacts committed in `contracts/artifacts`, and
//! the deployment file that says where they are on a chain.

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};

use crate::ChainError;

#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod bindings {
    alloy::sol!(
        #[sol(rpc)]
        WorkerRegistry,
        "../../contracts/artifacts/WorkerRegistry.json"
    );
    alloy::sol!(
        #[sol(rpc)]
        WorkOrderRegistry,
        "../../contracts/artifacts/WorkOrderRegistry.json"
    );
    alloy::sol!(
        #[sol(rpc)]
        WorkOrderReceiptRegistry,
        "../../contracts/artifacts/WorkOrderReceiptRegistry.json"
    );
    alloy::sol!(
        #[sol(rpc)]
        DirectRegistry,
        "../../contracts/artifacts/DirectRegistry.json"
    );
}

pub use bindings::{DirectRegistry, WorkOrderReceiptRegistry, WorkOrderRegistry, WorkerRegistry};

/// `workOrderGet`'s status of an order that was never submitted.
pub const ORDER_NULL: u64 = 0;
/// `workOrderGet`'s status of a submitted order awaiting its completion.
pub const ORDER_ACTIVE: u64 = 1;
/// `workOrderGet`'s status of a completed order.
pub const ORDER_COMPLETED: u64 = 2;

/// A worker's status: active (the only one that takes orders).
pub const WORKER_ACTIVE: u64 = 1;
/// A worker's status: decommissioned.
pub const WORKER_DECOMMISSIONED: u64 = 3;

/// `workOrderReceiptUpdateRetrieve`'s index of an updater's last update.
pub const LAST_UPDATE: u64 = 0xFFFF_FFFF;

/// Where the registries are on one chain: what `afallon deploy-contracts` writes and the
/// connector and the on-chain requester read (`--contracts FILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    /// The chain's id (`eth_chainId`): a deployment is refused on any other chain.
    pub chain_id: u64,
    /// `WorkerRegistry`.
    pub worker_registry: Address,
    /// `WorkOrderRegistry`.
    pub work_order_registry: Address,
    /// `WorkOrderReceiptRegistry`.
    pub receipt_registry: Address,
    /// `DirectRegistry`, the registry list.
    pub registry_list: Address,
    /// The block before the first deployment: nothing of these registries happened before it.
    pub deployed_at_block: u64,
}

impl Deployment {
    /// Reads a deployment file's JSON.
    ///
    /// # Errors
    /// [`ChainError::Deployment`] if it is not one.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ChainError> {
        serde_json::from_slice(bytes).map_err(|error| ChainError::Deployment(error.to_string()))
    }

    /// The deployment file's JSON.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// An EEA id (64 lowercase hex characters, as the JSON-RPC API writes it) as a `bytes32`;
/// shorter hex is padded with zeros on the right, as Avalon's clients pad it.
///
/// # Errors
/// [`ChainError::Id`] for anything but at most 64 hex characters of whole bytes.
pub fn id_to_bytes32(id: &str) -> Result<B256, ChainError> {
    let bytes = hex::decode(id).map_err(|_| ChainError::Id(id.chars().take(80).collect()))?;
    if bytes.len() > 32 {
        return Err(ChainError::Id(id.chars().take(80).collect()));
    }
    let mut out = [0u8; 32];
    out[..bytes.len()].copy_from_slice(&bytes);
    Ok(B256::from(out))
}

/// An id a requester puts on chain: exactly 64 lower-case hex characters (what the connector
/// reads back from the `bytes32`, so that the request's ids are the on-chain ones).
///
/// # Errors
/// [`ChainError::Id`] for anything else.
pub fn full_id_to_bytes32(id: &str) -> Result<B256, ChainError> {
    let lower_hex = id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if id.len() != 64 || !lower_hex {
        return Err(ChainError::Id(id.chars().take(80).collect()));
    }
    id_to_bytes32(id)
}

/// A `bytes32` as an EEA id: 64 lowercase hex characters, no `0x`.
pub fn bytes32_to_id(id: &B256) -> String {
    hex::encode(id.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_bad_ones_are_refused() {
        let id = "00ff".repeat(16);
        assert_eq!(bytes32_to_id(&id_to_bytes32(&id).expect("an id")), id);
        assert_eq!(
            bytes32_to_id(&id_to_bytes32("ab").expect("short")),
            format!("ab{}", "0".repeat(62))
        );
        assert!(id_to_bytes32(&"a".repeat(66)).is_err());
        assert!(id_to_bytes32("xyz").is_err());
        assert!(id_to_bytes32("abc").is_err());
        assert!(full_id_to_bytes32(&id).is_ok());
        assert!(full_id_to_bytes32("ab").is_err());
        assert!(full_id_to_bytes32(&id.to_uppercase()).is_err());
    }

    #[test]
    fn a_deployment_file_round_trips_and_unknown_fields_are_refused() {
        let deployment = Deployment {
            chain_id: 31337,
            worker_registry: Address::repeat_byte(1),
            work_order_registry: Address::repeat_byte(2),
            receipt_registry: Address::repeat_byte(3),
            registry_list: Address::repeat_byte(4),
            deployed_at_block: 7,
        };
        assert_eq!(
            Deployment::from_json(deployment.to_json().as_bytes()).expect("parses"),
            deployment
        );
        let extra = deployment.to_json().replacen('{', "{\"x\": 1,", 1);
        assert!(Deployment::from_json(extra.as_bytes()).is_err());
    }
}
