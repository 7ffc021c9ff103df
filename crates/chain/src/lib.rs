//! The proxy model on Ethereum and Besu: requesters submit work orders to a contract, a
//! connector runs them on the service and completes them on chain.
//!
//! - [`contracts`]: bindings of the registries in `contracts/` (built from the committed
//!   artifacts) and the [`Deployment`] file; [`deploy`] puts a fresh set on a chain.
//! - [`Connector`]: the service's side. It shares only the store with the rest of the service
//!   and speaks to it as a listener's client would ([`Service`]), so a connector that lies
//!   cannot do more than a listener that lies: the requester checks every result against its
//!   own order.
//! - [`ChainRequester`]: the requester's side: read and verify a worker from the registry,
//!   submit on chain, wait for the completion event and open the result.
//! - [`relay`] and [`progress`]: the connector's decisions as pure functions.
//!
//! This crate alone compiles alloy (and the RustCrypto generation it brings), so the core, the
//! worker and the listener never do.

mod connector;
pub mod contracts;
pub mod progress;
pub mod relay;
mod requester;

use std::future::Future;

use alloy::network::EthereumWallet;
use alloy::primitives::B256;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;

pub use alloy::primitives::Address;
pub use alloy::providers::DynProvider;

pub use crate::connector::{Connector, ConnectorConfig, REWIND_BLOCKS, Resume};
pub use crate::contracts::{Deployment, bytes32_to_id, id_to_bytes32};
pub use crate::requester::{ChainRequester, Completion};

/// The service a connector speaks for: answers one JSON-RPC request body with a response body,
/// as a listener does. A failure to reach it is answered as a JSON-RPC error with code -32000,
/// which the connector retries.
pub trait Service: Send + Sync + 'static {
    /// The response body to `request`.
    fn call(&self, request: String) -> impl Future<Output = String> + Send;
}

/// Why a chain operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The node could not be reached or answered with an error.
    #[error("Ethereum node: {0}")]
    Rpc(#[from] alloy::transports::TransportError),
    /// A contract call or transaction failed (reverted, or could not be sent).
    #[error("contract: {0}")]
    Contract(#[from] alloy::contract::Error),
    /// A transaction was sent but its receipt did not come.
    #[error("transaction: {0}")]
    Pending(#[from] alloy::providers::PendingTransactionError),
    /// A transaction was mined but reverted.
    #[error("transaction {0} reverted")]
    Reverted(B256),
    /// The deployment file is not one.
    #[error("deployment file: {0}")]
    Deployment(String),
    /// The node is on another chain than the deployment.
    #[error("the deployment is for chain {deployment}, but the node is on chain {node}")]
    WrongChain {
        /// The deployment's chain id.
        deployment: u64,
        /// The node's.
        node: u64,
    },
    /// An id that is not 64 hex characters (or fewer, whole bytes).
    #[error("not an EEA id: {0:?}")]
    Id(String),
    /// The stored cursor does not parse.
    #[error("the connector's stored cursor: {0}")]
    Cursor(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] afallon_store::StoreError),
    /// The service answered an error.
    #[error("service: {0}")]
    Service(String),
    /// The Ethereum node's URL is not one.
    #[error("not an Ethereum node URL: {0}")]
    Url(String),
    /// A private key that is not 32 bytes of hex.
    #[error("not a secp256k1 private key in hex")]
    Key,
    /// The worker's record did not verify.
    #[error("worker: {0}")]
    Worker(#[from] afallon_client::WorkerError),
    /// The completion did not come in time.
    #[error("no completion of the work order within {0:?}")]
    Timeout(std::time::Duration),
    /// What the chain holds is not what a registry of ours holds.
    #[error("unexpected chain data: {0}")]
    Unexpected(String),
}

impl ChainError {
    /// Whether the chain refused the call or transaction (it reverted, or would have): asking
    /// again changes nothing until the chain's state does.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Contract(error) => error.as_revert_data().is_some(),
            Self::Reverted(_) => true,
            _ => false,
        }
    }
}

/// An account's signing key, read from hex (with or without `0x`; surrounding whitespace is
/// ignored). alloy's signer keeps it zeroized on drop and never prints it.
///
/// # Errors
/// [`ChainError::Key`].
pub fn signer_from_hex(text: &str) -> Result<PrivateKeySigner, ChainError> {
    text.trim().parse::<PrivateKeySigner>().map_err(|_| ChainError::Key)
}

/// A provider for the node at `url` that signs with `signer`: gas estimated, nonces read from
/// the node for each transaction (the connector sends one at a time), the chain id fetched.
///
/// # Errors
/// [`ChainError::Url`].
pub fn connect(url: &str, signer: PrivateKeySigner) -> Result<(DynProvider, Address), ChainError> {
    let url: alloy::transports::http::reqwest::Url =
        url.parse().map_err(|_| ChainError::Url(url.to_owned()))?;
    let account = signer.address();
    let provider = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url);
    Ok((provider.erased(), account))
}

/// Lets `registrar` register workers in the deployment's worker registry, or no longer
/// (`allowed` false), from `provider`'s account, which must be the one that deployed it.
///
/// # Errors
/// [`ChainError::WrongChain`] on another chain than the deployment's; [`ChainError`]: not the
/// deployer (the transaction reverts), or the node failed.
pub async fn set_registrar(
    provider: &DynProvider,
    deployment: &Deployment,
    registrar: Address,
    allowed: bool,
) -> Result<(), ChainError> {
    let chain_id = provider.get_chain_id().await?;
    if chain_id != deployment.chain_id {
        return Err(ChainError::WrongChain { deployment: deployment.chain_id, node: chain_id });
    }
    let registry =
        crate::contracts::WorkerRegistry::new(deployment.worker_registry, provider.clone());
    let receipt = registry
        .setRegistrar(registrar, allowed)
        .send()
        .await?
        .with_timeout(Some(std::time::Duration::from_secs(120)))
        .get_receipt()
        .await?;
    if !receipt.status() {
        return Err(ChainError::Reverted(receipt.transaction_hash));
    }
    // A transaction to an address without the registry's code succeeds and does nothing.
    if registry.registrars(registrar).call().await? != allowed {
        return Err(ChainError::Unexpected(
            "the worker registry did not take it: is the deployment file this chain's?".into(),
        ));
    }
    Ok(())
}

/// Deploys a fresh set of registries from `provider`'s account.
///
/// # Errors
/// [`ChainError`] if a deployment fails.
pub async fn deploy(provider: &DynProvider) -> Result<Deployment, ChainError> {
    use crate::contracts::{
        DirectRegistry, WorkOrderReceiptRegistry, WorkOrderRegistry, WorkerRegistry,
    };
    let chain_id = provider.get_chain_id().await?;
    let deployed_at_block = provider.get_block_number().await?;
    let workers = WorkerRegistry::deploy(provider.clone()).await?;
    let orders = WorkOrderRegistry::deploy(provider.clone(), *workers.address()).await?;
    let receipts = WorkOrderReceiptRegistry::deploy(provider.clone(), *orders.address()).await?;
    let list = DirectRegistry::deploy(provider.clone()).await?;
    Ok(Deployment {
        chain_id,
        worker_registry: *workers.address(),
        work_order_registry: *orders.address(),
        receipt_registry: *receipts.address(),
        registry_list: *list.address(),
        deployed_at_block,
    })
}
