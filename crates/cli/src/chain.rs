//! The proxy model's commands: `afallon deploy-contracts`, `afallon connector ethereum`, and the
//! on-chain half of `afallon submit --chain-rpc`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use afallon_chain::{ChainRequester, Connector, ConnectorConfig, Deployment, Service};
use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::ConnectorPlan;
use crate::config::ConfigError;

/// The Ethereum account a command sends from.
#[derive(Debug, Args)]
pub(crate) struct AccountArgs {
    /// The Ethereum node's JSON-RPC URL (anvil, Besu, geth, ...).
    #[arg(long, env = "AFALLON_ETH_RPC", default_value = "http://127.0.0.1:8545")]
    rpc: String,
    /// A file holding the sending account's secp256k1 private key in hex [default: the
    /// `AFALLON_ETH_KEY` environment variable].
    #[arg(long)]
    key_file: Option<PathBuf>,
}

impl AccountArgs {
    fn connect(&self) -> anyhow::Result<(afallon_chain::DynProvider, afallon_chain::Address)> {
        let text = match &self.key_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the key file {}", path.display()))?,
            None => std::env::var("AFALLON_ETH_KEY").map_err(|_| {
                ConfigError::new(
                    "no Ethereum account: give --key-file FILE or set AFALLON_ETH_KEY to the private key in hex",
                )
            })?,
        };
        let signer = afallon_chain::signer_from_hex(&text)?;
        Ok(afallon_chain::connect(&self.rpc, signer)?)
    }
}

/// `afallon deploy-contracts`.
#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    account: AccountArgs,
    /// Where to write the deployment file (the contracts' addresses) [default: standard output].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Deploys the registries and writes where they are.
pub(crate) async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let (provider, account) = args.account.connect()?;
    let deployment = afallon_chain::deploy(&provider).await.context("deploying the registries")?;
    eprintln!("deployed the registries on chain {} from {account}", deployment.chain_id);
    match &args.out {
        Some(path) => {
            std::fs::write(path, deployment.to_json())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{}", deployment.to_json()),
    }
    Ok(())
}

/// `afallon registrar`.
#[derive(Debug, Args)]
pub(crate) struct RegistrarArgs {
    #[command(flatten)]
    account: AccountArgs,
    /// The deployment file `afallon deploy-contracts` wrote.
    #[arg(long)]
    contracts: PathBuf,
    /// The account (0x address) that may register workers from now on, e.g. a connector's.
    address: String,
    /// Take the right away instead.
    #[arg(long)]
    remove: bool,
}

/// Names (or un-names) a registrar, from the deployer's account.
pub(crate) async fn registrar(args: RegistrarArgs) -> anyhow::Result<()> {
    let deployment = deployment(&args.contracts)?;
    let address: afallon_chain::Address = args
        .address
        .parse()
        .map_err(|_| ConfigError::new(format!("not an Ethereum address: {:?}", args.address)))?;
    let (provider, from) = args.account.connect()?;
    afallon_chain::set_registrar(&provider, &deployment, address, !args.remove)
        .await
        .with_context(|| {
            format!(
                "only the account that deployed the registries ({from} is not it?) names registrars"
            )
        })?;
    eprintln!(
        "{address} {} register workers",
        if args.remove { "may no longer" } else { "may now" }
    );
    Ok(())
}

/// `afallon connector`.
#[derive(Debug, Args)]
pub(crate) struct ConnectorArgs {
    #[command(subcommand)]
    chain: ConnectorChain,
}

#[derive(Debug, Subcommand)]
enum ConnectorChain {
    /// Runs on-chain work orders of an Ethereum (or Besu) node's registries on this service.
    Ethereum(EthereumArgs),
}

/// `afallon connector ethereum`.
#[derive(Debug, Args)]
struct EthereumArgs {
    #[command(flatten)]
    account: AccountArgs,
    /// The deployment file `afallon deploy-contracts` wrote.
    #[arg(long)]
    contracts: PathBuf,
    /// How deep a block must be before its orders run, and a completion before it counts.
    #[arg(long, default_value_t = 2)]
    confirmations: u64,
    /// How often to read the chain's head, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// How often to bring the on-chain worker registry in step, in seconds.
    #[arg(long, default_value_t = 30)]
    registry_sync_seconds: u64,
    /// A TOML config file (for the store and the request limits).
    #[arg(long, short = 'c', env = "AFALLON_CONFIG")]
    config: Option<PathBuf>,
    /// The store shared with the service's listeners and workers (`postgres://...`).
    #[arg(long)]
    store: Option<String>,
}

/// Reads a deployment file.
fn deployment(path: &Path) -> anyhow::Result<Deployment> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the deployment {}", path.display()))?;
    Ok(Deployment::from_json(&bytes)?)
}

/// Runs a connector alone until a signal, on the store it shares with the service.
pub(crate) async fn connector(args: ConnectorArgs) -> anyhow::Result<()> {
    let ConnectorChain::Ethereum(args) = args.chain;
    let mut config = crate::config::load(args.config.as_deref())?;
    if let Some(store) = args.store {
        config.store = Some(store);
    }
    let Some(url) = config.store.clone() else {
        return Err(ConfigError::new(
            "the connector shares its store with the service's listeners and workers: give \
             --store postgres://USER@HOST:PORT/DATABASE (or `store` in the config), or run it \
             inside `afallon up --contracts FILE` on the embedded store",
        )
        .into());
    };
    let plan = ConnectorPlan {
        rpc: args.account.rpc,
        key_file: args.account.key_file,
        contracts: args.contracts,
        confirmations: args.confirmations,
        poll: Duration::from_millis(args.poll_ms.max(10)),
        registry_sync: Duration::from_secs(args.registry_sync_seconds.max(1)),
    };
    let node_config = config.into_node_config()?;
    let running = crate::shared_store::connector(&url, &plan, node_config).await?;
    crate::shutdown_signal().await;
    running.stop().await?;
    eprintln!("stopped");
    Ok(())
}

/// A connector running in this process.
pub(crate) struct RunningConnector {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), afallon_chain::ChainError>>,
}

impl RunningConnector {
    /// Stops it after the chain calls in flight.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await??;
        Ok(())
    }
}

/// Starts the connector `plan` describes, speaking for the service on `store` through a
/// listener in this process with `node_config`'s limits; says where it reads from.
pub(crate) async fn start<S: afallon_node::afallon_store::Store>(
    plan: &ConnectorPlan,
    node_config: afallon_node::NodeConfig,
    store: Arc<S>,
) -> anyhow::Result<RunningConnector> {
    let deployment = deployment(&plan.contracts)?;
    let account = AccountArgs { rpc: plan.rpc.clone(), key_file: plan.key_file.clone() };
    let (provider, address) = account.connect()?;
    let config = ConnectorConfig {
        confirmations: plan.confirmations,
        poll: plan.poll,
        registry_sync: plan.registry_sync,
        ..ConnectorConfig::default()
    };
    let listener = Listener(afallon_node::LocalListener::new(node_config, Arc::clone(&store)));
    let connector = Connector::new(provider, address, deployment, listener, store, config)
        .await
        .with_context(|| format!("connecting to the Ethereum node at {}", plan.rpc))?;
    let resume = connector.resume().await?;
    println!(
        "connector on chain {} from {address}, work orders at {}, reading after block {}",
        deployment.chain_id, deployment.work_order_registry, resume.from_block
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(connector.run(resume, stopped));
    Ok(RunningConnector { stop, task })
}

/// The service's listener, in this process, as the connector's service.
struct Listener<S>(afallon_node::LocalListener<S>);

impl<S: afallon_node::afallon_store::Store> Service for Listener<S> {
    async fn call(&self, request: String) -> String {
        self.0.call(request).await
    }
}

/// Where `afallon submit` sends an order in the proxy model.
pub(crate) struct OnChain {
    requester: ChainRequester,
    confirmations: u64,
}

impl OnChain {
    /// The chain of `rpc`, sending from the account of `AFALLON_ETH_KEY` or `key_file`, with
    /// the registries of the deployment file `contracts`.
    pub(crate) fn new(
        rpc: &str,
        key_file: Option<PathBuf>,
        contracts: &Path,
        confirmations: u64,
    ) -> anyhow::Result<Self> {
        let account = AccountArgs { rpc: rpc.to_owned(), key_file };
        let (provider, _) = account.connect()?;
        Ok(Self { requester: ChainRequester::new(provider, deployment(contracts)?), confirmations })
    }

    /// A worker's record from the on-chain registry.
    pub(crate) async fn worker_record(
        &self,
        worker_id: &str,
    ) -> anyhow::Result<afallon_proto::WorkerRecord> {
        Ok(self.requester.worker_record(worker_id).await?)
    }

    /// Submits on chain (and creates its receipt, with `receipt`) and waits for the completion
    /// event; the result, not yet verified.
    pub(crate) async fn submit_and_wait(
        &self,
        request: &afallon_proto::WorkOrderRequest,
        receipt: bool,
        timeout: Duration,
    ) -> anyhow::Result<afallon_proto::WorkOrderResult> {
        let block = self.requester.submit(request).await.context("submitting on chain")?;
        eprintln!("work order {} submitted on chain in block {block}", request.work_order_id);
        if receipt {
            let block = self
                .requester
                .create_receipt(request)
                .await
                .context("creating the receipt on chain")?;
            eprintln!("its receipt created on chain in block {block}");
        }
        let completion = self
            .requester
            .wait_completion(
                &request.work_order_id,
                block,
                self.confirmations,
                Duration::from_millis(250),
                timeout,
            )
            .await?;
        Ok(completion.result()?)
    }

    /// Waits for the worker's update of the order's receipt on chain, verified with its key.
    pub(crate) async fn wait_worker_update(
        &self,
        request: &afallon_proto::WorkOrderRequest,
        worker: &afallon_client::Worker,
        timeout: Duration,
    ) -> anyhow::Result<afallon_proto::ReceiptUpdate> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let update = self
                .requester
                .worker_receipt_update(&request.work_order_id, worker)
                .await
                .context("reading the receipt on chain")?;
            if let Some(update) = update {
                return Ok(update);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("no update of the receipt by its worker on chain after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
