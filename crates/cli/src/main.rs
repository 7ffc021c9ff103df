//! The `afallon` binary: thin glue over the node and client crates.
//!
//! `afallon up` runs the service in one process; `afallon listener` and `afallon worker` run its
//! two roles apart, any number of each, sharing a PostgreSQL store. `submit`, `workers`,
//! `result` and `receipt` talk to a running service as a requester would. Exit codes: 0 success,
//! 1 failure, 64 bad configuration, 75 (`up`) the store must be reopened (a commit that failed
//! was found in its file after all): a restart does it.

mod attestation;
mod bench;
mod bench_look_ups;
#[cfg(feature = "ethereum")]
mod chain;
mod config;
mod requester;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use afallon_node::Roles;
use clap::{Args, Parser, Subcommand};

/// mimalloc: the service allocates and frees many small buffers per work order on several
/// threads, which glibc's allocator handles markedly slower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A trusted compute service: the EEA Off-Chain Trusted Compute API, wire-compatible with
/// Hyperledger Avalon.
#[derive(Debug, Parser)]
#[command(name = "afallon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs listener and worker in one process, on the embedded store (or `--store`) and the
    /// simulated TEE.
    Up(UpArgs),
    /// Runs the JSON-RPC listener alone, on a shared store (`--store postgres://...`).
    Listener(UpArgs),
    /// Runs the worker host alone (the workers' enclaves), on a shared store
    /// (`--store postgres://...`); `--listen` serves only /healthz, /readyz and /metrics. With
    /// `--pool NAME --kme ADDR...` it runs the pool's WPEs, served by KMEs elsewhere.
    Worker(UpArgs),
    /// Runs a pool's KME alone (`--pool NAME --kme-listen ADDR`, on a shared store), serving
    /// WPE hosts and joining KMEs on its KME endpoint; `--join ADDR` joins a running KME.
    Kme(UpArgs),
    /// Submits a work order, waits for the result, verifies and decrypts it.
    Submit(requester::SubmitArgs),
    /// Lists the registered workers.
    Workers(requester::ConnectArgs),
    /// Checks a worker's attestation evidence and key binding under a policy file, and prints
    /// what it found.
    Verify(attestation::VerifyArgs),
    /// Manages the DCAP collateral kept for offline verification.
    Collateral(attestation::CollateralArgs),
    /// Prints the stored result of a work order (encrypted: only its requester can read it).
    Result(requester::IdArgs),
    /// Prints a work order's receipt and its updates.
    Receipt(requester::IdArgs),
    /// Measures throughput and latency of verified results, against the crypto limit.
    Bench(bench::BenchArgs),
    /// Deploys the proxy model's registries on an Ethereum (or Besu) chain and writes the
    /// deployment file.
    #[cfg(feature = "ethereum")]
    DeployContracts(chain::DeployArgs),
    /// Lets another account (a connector's) register workers in a deployment's registry, from
    /// the deploying account.
    #[cfg(feature = "ethereum")]
    Registrar(chain::RegistrarArgs),
    /// Runs a blockchain connector: on-chain work orders run on this service's workers and are
    /// completed on chain, and the on-chain worker registry follows the service's.
    #[cfg(feature = "ethereum")]
    Connector(chain::ConnectorArgs),
    /// Runs one enclave on the simulated TEE, speaking the enclave's messages on standard input
    /// and output: what `--enclave-process` starts for each worker.
    Enclave(EnclaveArgs),
}

/// Settings of `afallon enclave`.
#[derive(Debug, Args)]
struct EnclaveArgs {
    /// The node's data directory, whose `sim` directory holds the simulated TEE's secrets.
    #[arg(long)]
    data_dir: PathBuf,
    /// What the enclave is built as: `singleton`, `kme` or `wpe` (the simulated TEE measures
    /// each differently).
    #[arg(long, default_value = "singleton")]
    role: String,
}

/// Settings of `afallon up`, `listener` and `worker`; each overrides the config file and the
/// `AFALLON_*` environment.
#[derive(Debug, Args)]
struct UpArgs {
    /// A TOML config file.
    #[arg(long, short = 'c', env = "AFALLON_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:1947].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./afallon-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Answer WorkOrderSubmit with the result (Avalon's synchronous mode).
    #[arg(long)]
    sync: bool,
    /// The most work orders kept [default: 10000].
    #[arg(long)]
    max_orders: Option<u64>,
    /// Serve /healthz, /readyz and /metrics here instead of on --listen (for `afallon worker`:
    /// here only, and --listen is not used).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// The store: `postgres://USER@HOST:PORT/DATABASE` to share one with other processes
    /// [default: the embedded store in the data directory].
    #[arg(long)]
    store: Option<String>,
    /// Run each worker's enclave in a process of its own (`afallon enclave`), reached over
    /// pipes, instead of in this process.
    #[arg(long)]
    enclave_process: bool,
    /// Host a worker pool of this name as well: KMEs holding its keys, WPEs running its orders.
    #[arg(long, value_name = "NAME")]
    pool: Option<String>,
    /// The pool's KMEs [default: 1].
    #[arg(long, requires = "pool")]
    kmes: Option<usize>,
    /// The pool's WPEs [default: 2].
    #[arg(long, requires = "pool")]
    wpes: Option<usize>,
    /// Serve the pool's KME endpoint here (internal: for WPE hosts and joining KMEs, not for
    /// requesters).
    #[arg(long, requires = "pool", value_name = "ADDR")]
    kme_listen: Option<SocketAddr>,
    /// A KME endpoint of the pool, elsewhere (repeat for each): this node runs the pool's WPEs
    /// only, registered with each.
    #[arg(long = "kme", requires = "pool", value_name = "ADDR")]
    kme: Vec<SocketAddr>,
    /// Join the pool by attesting to the KME at this endpoint.
    #[arg(long, requires = "pool", value_name = "ADDR")]
    join: Option<SocketAddr>,
    /// Dedicate this node's WPEs to one requester (its `requesterId`): bound into their
    /// evidence, they run its orders only, and its orders, submitted from now on, run on them only.
    #[arg(long, requires = "pool", value_name = "REQUESTER_ID")]
    tenant: Option<String>,
    /// Also run the proxy model's connector in this process, on this process's store, for the
    /// registries of this deployment file (`afallon deploy-contracts`); the account's key from
    /// `AFALLON_ETH_KEY` or `--eth-key-file`. See `afallon connector ethereum`.
    #[arg(long, value_name = "FILE")]
    contracts: Option<PathBuf>,
    /// With `--contracts`: the Ethereum node's JSON-RPC URL.
    #[arg(
        long,
        requires = "contracts",
        env = "AFALLON_ETH_RPC",
        default_value = "http://127.0.0.1:8545",
        value_name = "URL"
    )]
    ethereum_rpc: String,
    /// With `--contracts`: the file with the connector account's private key in hex.
    #[arg(long, requires = "contracts", value_name = "FILE")]
    eth_key_file: Option<PathBuf>,
    /// With `--contracts`: how deep a block must be before its orders run.
    #[arg(long, requires = "contracts", default_value_t = 2)]
    confirmations: u64,
}

/// A chain connector to run, as the command line describes it.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "ethereum"), allow(dead_code))]
pub(crate) struct ConnectorPlan {
    /// The Ethereum node's JSON-RPC URL.
    pub(crate) rpc: String,
    /// The account's key file; none: `AFALLON_ETH_KEY`.
    pub(crate) key_file: Option<PathBuf>,
    /// The deployment file.
    pub(crate) contracts: PathBuf,
    /// Blocks a block or a completion must be deep.
    pub(crate) confirmations: u64,
    /// How often the chain's head is read.
    pub(crate) poll: std::time::Duration,
    /// How often the on-chain worker registry is brought in step.
    pub(crate) registry_sync: std::time::Duration,
}

impl UpArgs {
    /// The connector `--contracts` asks for, if any.
    fn connector(&self) -> Option<ConnectorPlan> {
        Some(ConnectorPlan {
            rpc: self.ethereum_rpc.clone(),
            key_file: self.eth_key_file.clone(),
            contracts: self.contracts.clone()?,
            confirmations: self.confirmations,
            poll: std::time::Duration::from_secs(1),
            registry_sync: std::time::Duration::from_secs(30),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Enclave(args) = &cli.command {
        // Its standard output carries frames: nothing else may be written there.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(std::io::stderr)
            .init();
        let Some(role) = afallon_node::EnclaveRole::from_name(&args.role) else {
            eprintln!("error: --role is singleton, kme or wpe, not {:?}", args.role);
            return ExitCode::from(64);
        };
        return match afallon_node::serve_enclave_process(&args.data_dir, role) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let serving = matches!(
        cli.command,
        Command::Up(_) | Command::Listener(_) | Command::Worker(_) | Command::Kme(_)
    ) || is_connector(&cli.command);
    let default_log = if serving { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AFALLON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => serve(args, Roles::BOTH).await,
            Command::Listener(args) => serve(args, Roles::LISTENER).await,
            Command::Worker(args) => serve(args, Roles::WORKER).await,
            Command::Kme(args) => serve_kme(args).await,
            Command::Submit(args) => requester::submit(args).await,
            Command::Workers(args) => requester::workers(args).await,
            Command::Verify(args) => attestation::verify(args).await,
            Command::Collateral(args) => attestation::collateral(args),
            Command::Result(args) => requester::result(args).await,
            Command::Receipt(args) => requester::receipt(args).await,
            Command::Bench(args) => bench::bench(args).await,
            #[cfg(feature = "ethereum")]
            Command::DeployContracts(args) => chain::deploy(args).await,
            #[cfg(feature = "ethereum")]
            Command::Registrar(args) => chain::registrar(args).await,
            #[cfg(feature = "ethereum")]
            Command::Connector(args) => chain::connector(args).await,
            Command::Enclave(_) => Ok(()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<config::ConfigError>().is_some() {
                ExitCode::from(64)
            } else if matches!(
                error.downcast_ref::<afallon_node::NodeError>(),
                Some(afallon_node::NodeError::StoreLost)
            ) {
                // EX_TEMPFAIL: a restart reopens the store.
                ExitCode::from(75)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs a pool's KME alone until a signal.
async fn serve_kme(args: UpArgs) -> anyhow::Result<()> {
    serve_as(args, Roles::WORKER, true).await
}

/// Runs a node with `roles` until a signal.
async fn serve(args: UpArgs, roles: Roles) -> anyhow::Result<()> {
    serve_as(args, roles, false).await
}

/// Runs a node with `roles` (a KME host alone if `kme_only`) until a signal.
async fn serve_as(args: UpArgs, roles: Roles, kme_only: bool) -> anyhow::Result<()> {
    let connector = args.connector();
    let mut config = config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if args.sync {
        config.sync_mode = true;
    }
    if let Some(max_orders) = args.max_orders {
        config.max_orders = max_orders;
    }
    if let Some(store) = args.store {
        config.store = Some(store);
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = Some(admin);
    }
    if args.enclave_process {
        config.enclave_process = true;
    }
    if let Some(pool) = args.pool {
        config.pool = Some(pool);
    }
    if let Some(kmes) = args.kmes {
        config.pool_kmes = kmes;
    }
    if let Some(wpes) = args.wpes {
        config.pool_wpes = wpes;
    }
    if let Some(address) = args.kme_listen {
        config.kme_listen = Some(address);
    }
    if !args.kme.is_empty() {
        config.kmes = args.kme;
    }
    if let Some(address) = args.join {
        config.join = Some(address);
    }
    if let Some(tenant) = args.tenant {
        config.tenant = Some(tenant);
    }
    if kme_only {
        // A KME host runs no worker of its own and no WPE.
        config.workers.clear();
        config.pool_wpes = 0;
        if config.pool.is_none() || config.kme_listen.is_none() {
            return Err(config::ConfigError::new(
                "afallon kme serves a pool's KME: give --pool NAME and --kme-listen ADDR",
            )
            .into());
        }
    }
    let store = config.store.clone();
    let mut node_config = config.into_node_config()?;
    node_config.roles = roles;
    if roles.worker && node_config.platform == afallon_node::TeePlatform::Simulated {
        eprintln!(
            "WARNING: workers run on the SIMULATED TEE (insecure_simulation = true): their keys and the data \
             they process are not protected by hardware, and their attestation proves nothing. For development only."
        );
    }
    raise_open_files_limit(node_config.http.max_connections);
    let (node, connector) = match store.as_deref() {
        None if roles != Roles::BOTH => {
            return Err(config::ConfigError::new(
                "the listener and worker roles share their store with other processes: give \
                 --store postgres://USER@HOST:PORT/DATABASE (or `store` in the config)",
            )
            .into());
        }
        None => {
            let store = afallon_node::Node::open_embedded_store(&node_config)?;
            let node =
                afallon_node::Node::start_with_store(node_config.clone(), Arc::clone(&store))
                    .await?;
            let connector = match &connector {
                Some(plan) => Some(start_connector(plan, node_config.clone(), store).await?),
                None => None,
            };
            (node, connector)
        }
        Some(url) => shared_store::start(url, node_config.clone(), connector.as_ref()).await?,
    };
    if roles.worker {
        if let Some(pool) = &node_config.pool {
            println!(
                "pool {} ({}): {} KME, {} WPE",
                pool.name,
                afallon_proto::worker_id_from_name(&pool.name),
                pool.kmes,
                pool.wpes
            );
            if let Some(tenant) = &pool.tenant {
                println!("its WPEs here are dedicated to requester {tenant}");
            }
        }
        for worker in &node_config.workers {
            println!(
                "worker {} ({})",
                worker.worker_name,
                afallon_proto::worker_id_from_name(&worker.worker_name)
            );
        }
    }
    let scheme = if node_config.http.tls.is_some() { "https" } else { "http" };
    if roles.listener {
        println!("listening on {scheme}://{}", node.local_addr());
    } else {
        println!("health and metrics on http://{}", node.local_addr());
    }
    if let Some(admin) = node.admin_addr() {
        println!("health and metrics on http://{admin}");
    }
    if let Some(kme) = node.kme_addr() {
        println!("kme endpoint on {kme}");
    }
    let outcome = node.run_until(shutdown_signal()).await;
    if let Some(connector) = connector {
        connector.stop().await?;
    }
    outcome?;
    eprintln!("stopped");
    Ok(())
}

/// A connector running in this process (`afallon up --contracts`, `afallon connector`).
#[cfg(feature = "ethereum")]
type RunningConnector = chain::RunningConnector;

/// Without the proxy model, there is never a connector to stop.
#[cfg(not(feature = "ethereum"))]
enum RunningConnector {}

#[cfg(not(feature = "ethereum"))]
impl RunningConnector {
    async fn stop(self) -> anyhow::Result<()> {
        match self {}
    }
}

/// Starts the connector `plan` describes on `store`.
#[cfg(feature = "ethereum")]
async fn start_connector<S: afallon_node::afallon_store::Store>(
    plan: &ConnectorPlan,
    node_config: afallon_node::NodeConfig,
    store: Arc<S>,
) -> anyhow::Result<RunningConnector> {
    chain::start(plan, node_config, store).await
}

#[cfg(not(feature = "ethereum"))]
async fn start_connector<S: afallon_node::afallon_store::Store>(
    _plan: &ConnectorPlan,
    _node_config: afallon_node::NodeConfig,
    _store: Arc<S>,
) -> anyhow::Result<RunningConnector> {
    Err(config::ConfigError::new(
        "this afallon was built without the proxy model (feature `ethereum`)",
    )
    .into())
}

/// Shared stores, chosen by the URL's scheme.
mod shared_store {
    use afallon_node::{NodeConfig, RunningNode};

    use crate::config::ConfigError;
    use crate::{ConnectorPlan, RunningConnector};

    /// Connects to the store at `url` and starts the node on it, and the connector `plan`
    /// describes, if any.
    pub(crate) async fn start(
        url: &str,
        config: NodeConfig,
        plan: Option<&ConnectorPlan>,
    ) -> anyhow::Result<(RunningNode, Option<RunningConnector>)> {
        check(url)?;
        let store = postgres(url, &config).await?;
        let node =
            afallon_node::Node::start_with_store(config.clone(), std::sync::Arc::clone(&store))
                .await?;
        let connector = match plan {
            Some(plan) => Some(crate::start_connector(plan, config, store).await?),
            None => None,
        };
        Ok((node, connector))
    }

    /// Connects to the store at `url` and starts the connector `plan` describes on it, alone.
    #[cfg_attr(not(feature = "ethereum"), allow(dead_code))]
    pub(crate) async fn connector(
        url: &str,
        plan: &ConnectorPlan,
        config: NodeConfig,
    ) -> anyhow::Result<RunningConnector> {
        check(url)?;
        let store = postgres(url, &config).await?;
        crate::start_connector(plan, config, store).await
    }

    fn check(url: &str) -> Result<(), ConfigError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(());
        }
        Err(ConfigError::new(format!(
            "unknown store {:?}: give a postgres:// URL, or none for the embedded store",
            url.split(':').next().unwrap_or_default()
        )))
    }

    #[cfg(feature = "postgres")]
    async fn postgres(
        url: &str,
        config: &NodeConfig,
    ) -> anyhow::Result<std::sync::Arc<afallon_store_postgres::PgStore>> {
        use afallon_store_postgres::{PgStore, PgStoreOptions};
        let options = PgStoreOptions { max_orders: config.max_orders, ..PgStoreOptions::default() };
        Ok(std::sync::Arc::new(PgStore::connect(url, options).await?))
    }

    #[cfg(not(feature = "postgres"))]
    async fn postgres(
        _url: &str,
        _config: &NodeConfig,
    ) -> anyhow::Result<std::sync::Arc<afallon_node::afallon_store::RedbStore>> {
        Err(ConfigError::new("this afallon was built without PostgreSQL (feature `postgres`)")
            .into())
    }
}

/// Raises the soft limit on open files to the hard limit: each connection takes one, and the
/// common default of 1,024 would let that many idle sockets deny service. Says so when the
/// limit stays below what the connection cap needs.
fn raise_open_files_limit(max_connections: usize) {
    // The store, the listener, logs and the enclave pool need some besides the connections.
    let wanted = max_connections as u64 + 256;
    match rlimit::increase_nofile_limit(wanted.max(65_536)) {
        Ok(limit) if limit < wanted => eprintln!(
            "WARNING: the open-files limit is {limit}, below the {wanted} that max_connections = {max_connections} needs; connections beyond it fail until others close"
        ),
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(error) => eprintln!("WARNING: cannot raise the open-files limit: {error}"),
    }
}

/// Whether the command runs a connector (which logs as a service does).
fn is_connector(command: &Command) -> bool {
    #[cfg(feature = "ethereum")]
    if matches!(command, Command::Connector(_)) {
        return true;
    }
    let _ = command;
    false
}

pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
