//! The untrusted host: the JSON-RPC listener with Avalon's method set and HTTP behaviour, the
//! worker host that feeds work orders to enclaves, health checks and metrics.
//!
//! [`Node::start`] opens the store in the data directory, signs up (or restarts) each configured
//! worker's enclave, registers the worker records, starts the worker tasks and serves HTTP:
//!
//! - `POST` on any path: JSON-RPC, exactly as wire spec §1 describes (`http.rs`, `rpc.rs`,
//!   `receipts.rs`);
//! - `GET /healthz` (the process is up), `GET /readyz` (workers registered, store open and
//!   able to write),
//!   `GET /metrics` (Prometheus text).
//!
//! Work orders flow: the listener stores a submission durably and wakes a worker task; the task
//! claims the order under a lease (renewed while it works), hands the raw request to the enclave
//! on the enclave pool, and stores the response (with the workload's sealed state) in one
//! transaction if it still holds the lease, then commits the workload's state change in the
//! enclave, or rolls it back if another run's completion won (`host.rs`).

mod body;
mod enclave_process;
mod host;
mod http;
mod local;
mod metrics;
mod pool;
mod private;
mod receipts;
mod rpc;
mod serve;
mod waiters;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use afallon_attest::PlatformError;
use afallon_enclave::pipe::PipeLink;
use afallon_enclave::{Enclave, EnclaveConfig, Failure};
use afallon_platform::{ConfigfsTsmPlatform, GraminePlatform, SimPlatform};
use afallon_proto::RequestLimits;
use afallon_store::{RedbStore, RedbStoreOptions, Store, StoreError, StoreHealth};

pub use afallon_store;
use afallon_workloads::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::enclave_process::{EnclaveRole, serve_enclave_process};
pub use crate::local::LocalListener;
pub use crate::pool::PoolConfig;
pub use crate::serve::{HttpConfig, TlsError, TlsFiles};

use crate::host::LocalWorker;
use crate::metrics::Metrics;
use crate::waiters::Waiters;

/// The TEE a node's workers run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeePlatform {
    /// The simulated TEE (development only; needs [`NodeConfig::insecure_simulation`]).
    Simulated,
    /// An SGX enclave under Gramine: its `/dev/attestation` directory.
    Gramine(PathBuf),
    /// A confidential VM (TDX or SEV-SNP) through configfs-tsm: its report directory
    /// (`/sys/kernel/config/tsm/report`).
    ConfigfsTsm(PathBuf),
}

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The listener's address (port 0 picks a free port; see [`RunningNode::local_addr`]).
    pub listen: SocketAddr,
    /// Where the store and the simulated TEE's secrets live.
    pub data_dir: PathBuf,
    /// The workers this node hosts.
    pub workers: Vec<EnclaveConfig>,
    /// Answer `WorkOrderSubmit` with the result instead of code 5 (Avalon's synchronous mode).
    pub sync_mode: bool,
    /// How long a synchronous submission waits before answering "pending" (code 5).
    pub sync_timeout: Duration,
    /// The most work orders kept (Avalon's `max_work_order_count`).
    pub max_orders: u64,
    /// What a request may carry: the listener refuses more before looking further, and the
    /// node's workers are held to the same limits.
    pub limits: RequestLimits,
    /// Connections: timeouts, the connection cap, the budget for bodies in memory, TLS, and
    /// where health and metrics are served.
    pub http: HttpConfig,
    /// How long a claim on an order lasts unless renewed. A worker renews it every third of this
    /// while it processes the order, so the order goes to another only when its worker stopped
    /// renewing (it died, or was held up for this long).
    pub lease: Duration,
    /// How many orders each worker holds at once, claimed or in the enclave (defaults to four
    /// per core; responses being stored do not count). Zero registers the workers without
    /// processing here (a listener-only node).
    pub processors_per_worker: usize,
    /// How many orders are in enclaves at once, across all workers (defaults to the number of
    /// cores: the enclave's work is CPU-bound).
    pub enclave_threads: usize,
    /// Run workers on the simulated TEE, which protects nothing. Without it, a node whose
    /// [`NodeConfig::platform`] is simulated refuses to start.
    pub insecure_simulation: bool,
    /// The TEE the workers run on.
    pub platform: TeePlatform,
    /// The most ids one look-up answer carries (`WorkerLookUp`, `WorkOrderReceiptLookUp` and
    /// their `Next`): a requester asks for the next page with the answer's `lookupTag`.
    pub look_up_page: usize,
    /// Which roles this node plays.
    pub roles: Roles,
    /// The command line of an enclave process (program first) to run each worker's enclave in,
    /// speaking the enclave's messages over its standard input and output
    /// ([`afallon_enclave::pipe`]); none: enclaves run in this process. The enclave process
    /// opens the TEE platform itself.
    pub enclave_process: Option<Vec<std::ffi::OsString>>,
    /// A worker pool to host as well: its KMEs and WPEs, each an enclave of its own.
    pub pool: Option<PoolConfig>,
}

/// The roles a node plays. They share nothing but the store, so each may run in a process of
/// its own, any number of times, on any machine that reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serve the JSON-RPC API on [`NodeConfig::listen`]: store submissions and receipts, answer
    /// look-ups and results. Holds no worker keys.
    pub listener: bool,
    /// Host the configured workers' enclaves: claim their orders, run them, store the results,
    /// sign receipt updates. Without the listener, [`NodeConfig::listen`] serves only
    /// `/healthz`, `/readyz` and `/metrics`.
    pub worker: bool,
}

impl Roles {
    /// Both roles in one process (`afallon up`).
    pub const BOTH: Self = Self { listener: true, worker: true };
    /// The listener alone (`afallon listener`).
    pub const LISTENER: Self = Self { listener: true, worker: false };
    /// The worker host alone (`afallon worker`).
    pub const WORKER: Self = Self { listener: false, worker: true };
}

impl NodeConfig {
    /// A node on `listen` with its data in `data_dir`, hosting Avalon's default worker
    /// `singleton-worker-1`, on no TEE until one is chosen.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            listen,
            data_dir: data_dir.into(),
            workers: vec![EnclaveConfig::new("singleton-worker-1")],
            sync_mode: false,
            sync_timeout: Duration::from_secs(30),
            max_orders: 10_000,
            limits: RequestLimits::default(),
            http: HttpConfig::default(),
            lease: Duration::from_secs(30),
            processors_per_worker: 4 * cores,
            enclave_threads: cores,
            insecure_simulation: false,
            platform: TeePlatform::Simulated,
            look_up_page: 1000,
            roles: Roles::BOTH,
            enclave_process: None,
            pool: None,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// No TEE is available and simulation was not allowed.
    #[error(
        "no TEE platform is available on this machine; to run workers on the simulated TEE (which protects nothing), allow simulation explicitly"
    )]
    NoTeePlatform,
    /// What the configuration asks for is not built for this TEE platform yet.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The data directory or the listener could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The listener's certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The TEE platform failed.
    #[error("TEE platform: {0}")]
    Platform(#[from] PlatformError),
    /// The store found a commit that had failed in its file after all: what requesters were
    /// told and what is in memory may differ from the file, so the node stopped. Restarting it
    /// reopens the store, which is then the truth.
    #[error(
        "the store found a failed commit in its file after all; the node stopped, restart it to reopen the store"
    )]
    StoreLost,
    /// The enclave process could not be started.
    #[error("cannot start the enclave process: {0}")]
    EnclaveProcess(std::io::Error),
    /// The enclave process's stream with its host failed.
    #[error("the enclave's pipe: {0}")]
    EnclavePipe(#[from] afallon_enclave::pipe::PipeError),
    /// A worker's enclave could not be signed up or restored.
    #[error("worker {worker}: {error}")]
    Enclave {
        /// The worker's name.
        worker: String,
        /// What went wrong.
        error: Failure,
    },
}

/// Everything the listener and the worker tasks share.
pub(crate) struct App<S> {
    pub(crate) store: Arc<S>,
    pub(crate) config: NodeConfig,
    pub(crate) workers: Vec<Arc<LocalWorker>>,
    pub(crate) waiters: Waiters,
    pub(crate) metrics: Metrics,
    /// Kibibytes of large request bodies that may be in memory at once.
    pub(crate) body_budget: Arc<tokio::sync::Semaphore>,
    /// Large bodies parsed at once: half the cores, at least one.
    pub(crate) large_parses: Arc<tokio::sync::Semaphore>,
    /// Permits for enclave work: one per enclave thread.
    pub(crate) enclave_slots: tokio::sync::Semaphore,
    /// Look-ups at once: half the cores, at least one (see `rpc::paced`).
    pub(crate) look_up_slots: Arc<tokio::sync::Semaphore>,
    /// The runtime of the listener, where responses are stored and requesters answered.
    pub(crate) io: tokio::runtime::Handle,
}

impl<S> App<S> {
    /// The shared state of a node with `workers`, on the current runtime.
    fn new(config: NodeConfig, store: Arc<S>, workers: Vec<Arc<LocalWorker>>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let body_budget_kib =
            (config.http.max_buffered_body_bytes / 1024).min(tokio::sync::Semaphore::MAX_PERMITS);
        let enclave_threads = config.enclave_threads.max(1);
        Self {
            store,
            config,
            workers,
            waiters: Waiters::default(),
            metrics: Metrics::default(),
            body_budget: Arc::new(tokio::sync::Semaphore::new(body_budget_kib)),
            large_parses: Arc::new(tokio::sync::Semaphore::new((cores / 2).max(1))),
            enclave_slots: tokio::sync::Semaphore::new(enclave_threads),
            look_up_slots: Arc::new(tokio::sync::Semaphore::new((cores / 2).max(1))),
            io: tokio::runtime::Handle::current(),
        }
    }

    pub(crate) fn local_worker(&self, worker_id: &str) -> Option<&Arc<LocalWorker>> {
        self.workers.iter().find(|w| w.worker_id() == worker_id)
    }
}

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    kme_addr: Option<SocketAddr>,
    /// Stops the listeners: they accept nothing more and close each connection after its
    /// current request.
    stop_serving: watch::Sender<bool>,
    /// Stops the worker tasks, after the listeners, so that a synchronous submission in flight
    /// is answered with its result.
    stop_working: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    store_health: watch::Receiver<StoreHealth>,
    _enclave_pool: EnclavePool,
}

/// The threads that run enclaves, one per enclave slot: a runtime of their own, so that the
/// listener's threads are never held up by RSA.
#[derive(Debug)]
struct EnclavePool(Option<tokio::runtime::Runtime>);

impl EnclavePool {
    fn new(threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("afallon-enclave")
            .enable_time()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for EnclavePool {
    /// A runtime may not be dropped where blocking is not allowed (in the listener's tasks, say):
    /// its threads are let go instead.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl RunningNode {
    /// The address the listener is bound to (for a node without the listener role: where it
    /// serves `/healthz`, `/readyz` and `/metrics`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `/healthz`, `/readyz` and `/metrics` are served on, when it is not the
    /// listener's.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The address the pool's KME endpoint is served on ([`PoolConfig::kme_listen`]).
    pub fn kme_addr(&self) -> Option<SocketAddr> {
        self.kme_addr
    }

    /// Stops accepting requests, lets the requests in flight finish (the workers go on running
    /// orders meanwhile, so a synchronous submission gets its result), then stops the workers
    /// after the orders they are processing.
    pub async fn shutdown(self) {
        let _ = self.stop_serving.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        let _ = self.stop_working.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Runs until `signal` resolves, then shuts down; or until the store is lost
    /// ([`StoreHealth::Lost`]: a failed commit was found in the file after all), then shuts down
    /// and returns [`NodeError::StoreLost`], for a supervisor to restart the node.
    ///
    /// # Errors
    /// [`NodeError::StoreLost`] as above.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        let mut health = self.store_health.clone();
        let lost = async move {
            if health.wait_for(|health| *health == StoreHealth::Lost).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let outcome = tokio::select! {
            () = signal => Ok(()),
            () = lost => {
                tracing::error!("the store found a failed commit in its file after all; stopping");
                Err(NodeError::StoreLost)
            }
        };
        self.shutdown().await;
        outcome
    }
}

/// The node.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Starts a node with the embedded store in `config.data_dir`, which is made private first:
    /// it and every directory under it 0700, and no file in it accessible to group or others.
    ///
    /// # Errors
    /// [`NodeError`] if the store, the TEE platform, an enclave or the listener cannot be set up.
    pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
        let store = Self::open_embedded_store(&config)?;
        Self::start_with_store(config, store).await
    }

    /// Opens the embedded store in `config.data_dir` (made private first, as by
    /// [`Node::start`]), for a node started with [`Node::start_with_store`] that shares it with
    /// another role in the same process (a chain connector).
    ///
    /// # Errors
    /// [`NodeError`] if the directory or the store cannot be opened.
    pub fn open_embedded_store(config: &NodeConfig) -> Result<Arc<RedbStore>, NodeError> {
        let store = RedbStore::open(
            &Self::private_data_dir(config)?.join("store.redb"),
            RedbStoreOptions { max_orders: config.max_orders, ..RedbStoreOptions::default() },
        )?;
        Ok(Arc::new(store))
    }

    /// Makes `config.data_dir` private (0700 directories, 0600 files, whatever the umask) and
    /// returns it.
    fn private_data_dir(config: &NodeConfig) -> Result<&std::path::Path, NodeError> {
        private::create_dir(&config.data_dir)?;
        private::tighten(&config.data_dir)?;
        Ok(&config.data_dir)
    }

    /// Starts a node on `store`, which other nodes may share (each in a process of its own,
    /// playing any [`Roles`]). With the worker role, `config.data_dir` holds the simulated TEE's
    /// secrets and the workloads' files, and is made private first.
    ///
    /// # Errors
    /// [`NodeError`] if the TEE platform, an enclave or the listener cannot be set up, or the
    /// store fails.
    pub async fn start_with_store<S: Store>(
        config: NodeConfig,
        store: Arc<S>,
    ) -> Result<RunningNode, NodeError> {
        // Subscribed first: nothing committed from here on is missed.
        let wakeups = store.wakeups();
        let mut workers = Vec::new();
        let mut kme_addr = None;
        if config.roles.worker {
            if config.platform == TeePlatform::Simulated && !config.insecure_simulation {
                return Err(NodeError::NoTeePlatform);
            }
            if config.platform != TeePlatform::Simulated
                && (config.pool.is_some() || config.enclave_process.is_some())
            {
                // A pool's KME and WPEs need measurements of their own, which one enclave
                // binary on a hardware TEE does not have yet.
                return Err(NodeError::Unsupported(
                    "worker pools and enclave processes run on the simulated TEE only, so far",
                ));
            }
            let data_dir = Self::private_data_dir(&config)?;
            // Leases of a process that died run out, and the sweeper queues their orders again:
            // nothing here assumes this process is the store's only user.
            let registry = Registry::with_builtins();
            // The simulated TEE's secrets exist from here on, whichever process opens it next.
            if config.platform == TeePlatform::Simulated {
                SimPlatform::open(
                    &data_dir.join("sim"),
                    afallon_enclave::sim_measurement(&registry),
                )?;
            }
            let new_enclave = |role: EnclaveRole| -> Result<host::NewEnclave, NodeError> {
                Ok(match &config.enclave_process {
                    Some(command) => {
                        let mut command = command.clone();
                        command.extend(["--role".into(), role.name().into()]);
                        Arc::new(move || {
                            let (program, args) =
                                command.split_first().ok_or(NodeError::EnclaveProcess(
                                    std::io::Error::other("an empty command line"),
                                ))?;
                            let link =
                                PipeLink::spawn(std::process::Command::new(program).args(args))
                                    .map_err(NodeError::EnclaveProcess)?;
                            Ok(Arc::new(link))
                        })
                    }
                    None => {
                        let platform: Arc<dyn afallon_attest::Platform> = match &config.platform {
                            TeePlatform::Simulated => Arc::new(SimPlatform::open(
                                &data_dir.join("sim"),
                                role.sim_measurement(&registry),
                            )?),
                            TeePlatform::Gramine(dir) => Arc::new(GraminePlatform::open(dir)?),
                            TeePlatform::ConfigfsTsm(dir) => {
                                Arc::new(ConfigfsTsmPlatform::open(dir, &data_dir.join("cvm"))?)
                            }
                        };
                        let registry = registry.clone();
                        Arc::new(move || {
                            Ok(Arc::new(Enclave::new(Arc::clone(&platform), registry.clone())))
                        })
                    }
                })
            };
            if config.platform == TeePlatform::Simulated {
                tracing::warn!(
                    "workers run on the SIMULATED TEE: their keys and data are not protected by hardware"
                );
            }
            let singleton = new_enclave(EnclaveRole::Singleton)?;
            for worker_config in &config.workers {
                let mut worker_config = worker_config.clone();
                worker_config.limits.request = config.limits;
                let name = worker_config.worker_name.clone();
                let worker =
                    LocalWorker::start(&*store, Arc::clone(&singleton), worker_config, data_dir)
                        .await?;
                tracing::info!(worker = %name, worker_id = %worker.worker_id(), "worker registered");
                workers.push(Arc::new(worker));
            }
            if let Some(pool) = &config.pool {
                let mut pool_config = EnclaveConfig::new(pool.name.clone());
                pool_config.limits.request = config.limits;
                let worker = LocalWorker::start_pool(
                    &*store,
                    new_enclave(EnclaveRole::Kme)?,
                    &new_enclave(EnclaveRole::Wpe)?,
                    pool_config,
                    pool,
                    data_dir,
                )
                .await?;
                tracing::info!(pool = %pool.name, worker_id = %worker.worker_id(), "pool registered");
                if let (Some(address), Some(enclaves)) = (pool.kme_listen, worker.pool()) {
                    let listener = std::net::TcpListener::bind(address)?;
                    kme_addr = Some(listener.local_addr()?);
                    pool::serve_kme_endpoint(listener, enclaves.first_kme());
                }
                workers.push(Arc::new(worker));
            }
        }

        let tls = match config.roles.listener {
            true => config.http.tls.as_ref().map(serve::tls_acceptor).transpose()?,
            false => None,
        };
        // A worker-only node with an admin address serves that alone.
        let listener = match (config.roles.listener, config.http.admin_listen) {
            (false, Some(admin)) => bind(admin)?,
            _ => bind(config.listen)?,
        };
        let admin_listener = match config.http.admin_listen {
            Some(addr) if config.roles.listener => Some(bind(addr)?),
            _ => None,
        };
        let config_enclave_threads = config.enclave_threads.max(1);
        let local_addr = listener.local_addr()?;
        let enclave_pool = if config.processors_per_worker == 0 || workers.is_empty() {
            // A listener-only node runs no enclave work.
            EnclavePool(None)
        } else {
            EnclavePool::new(config_enclave_threads)?
        };
        let app = Arc::new(App::new(config, store, workers));
        let (stop_serving, stopped) = watch::channel(false);
        let (stop_working, workers_stopped) = watch::channel(false);
        let store_health = app.store.health();
        let mut tasks = if app.config.roles.worker {
            host::spawn(&app, &workers_stopped, enclave_pool.handle())
        } else {
            Vec::new()
        };
        tasks.push(tokio::spawn(waiters::dispatch(Arc::clone(&app), wakeups, workers_stopped)));
        let http_config = app.config.http.clone();
        let router = if app.config.roles.listener {
            http::router(Arc::clone(&app), admin_listener.is_none())
        } else {
            http::admin_router(Arc::clone(&app))
        };
        let mut servers = vec![serve::serve(router, listener, &http_config, tls, stopped.clone())];
        let mut admin_addr = None;
        if let Some(admin_listener) = admin_listener {
            admin_addr = Some(admin_listener.local_addr()?);
            let router = http::admin_router(Arc::clone(&app));
            servers.push(serve::serve(router, admin_listener, &http_config, None, stopped));
        }
        tracing::info!(%local_addr, listener = app.config.roles.listener, worker = app.config.roles.worker, "listening");
        Ok(RunningNode {
            local_addr,
            admin_addr,
            kme_addr,
            stop_serving,
            stop_working,
            servers,
            tasks,
            store_health,
            _enclave_pool: enclave_pool,
        })
    }
}

/// A listening socket with a backlog of 4,096 (tokio's default is 1,024; the system caps it at
/// `net.core.somaxconn`), so that a burst of connections waits to be accepted rather than being
/// dropped.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Milliseconds since the Unix epoch, for leases.
pub(crate) use afallon_store::unix_millis as now_ms;
