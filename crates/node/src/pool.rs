//! A worker pool hosted by this node: its KMEs, which hold the pool's keys and record, and its
//! WPEs, which run the workloads and hold none of the pool's keys; each is an enclave of its own
//! (in this process, or in a process of its own). An order is pre-processed by a live KME, the
//! next one if a KME cannot be reached, and run on a WPE.

use std::sync::atomic::{AtomicUsize, Ordering};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use afallon_enclave::pipe::{self, PipeLink};
use afallon_enclave::{
    EnclaveClient, EnclaveConfig, EnclaveLink, Failure, FailureKind, PreProcessed, Request,
    Response, Role, WpeClient,
};
use afallon_proto::ReceiptUpdate;
use afallon_store::Store;

use crate::NodeError;
use crate::host::{NewEnclave, open_enclave};

/// A pool: its name (its worker id is SHA-256 of it, as a worker's), and how many KMEs and WPEs
/// it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The pool's name.
    pub name: String,
    /// The KMEs: at least one. Each holds the pool's keys; WPEs use any live one.
    pub kmes: usize,
    /// The WPEs this node runs (none: a node that only serves the pool's KME to others).
    pub wpes: usize,
    /// Serve this node's first KME here, to WPE hosts and joining KMEs elsewhere.
    pub kme_listen: Option<SocketAddr>,
    /// KMEs that run elsewhere, at these endpoints: this node starts none of its own, and its WPEs
    /// register with each of these.
    pub remote_kmes: Vec<SocketAddr>,
    /// Join the pool by attesting to the KME at this endpoint, which hands over the pool's keys,
    /// instead of restoring the pool's keys from the store or signing the pool up.
    pub join: Option<SocketAddr>,
    /// The requester this node's WPEs are dedicated to: bound into their evidence, made a tenant
    /// of the pool in the store (its orders from then on are queued for these WPEs only), and
    /// running none but its orders.
    pub tenant: Option<String>,
}

impl PoolConfig {
    /// The pool `name` with one KME and two WPEs.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kmes: 1,
            wpes: 2,
            kme_listen: None,
            remote_kmes: vec![],
            join: None,
            tenant: None,
        }
    }
}

/// One WPE, with the transport key its KMEs know it by.
pub(crate) struct PoolWpe {
    pub(crate) client: WpeClient,
    key: Vec<u8>,
    /// False once it could not be reached (its process ended): no order goes to it again.
    alive: std::sync::atomic::AtomicBool,
}

impl PoolWpe {
    /// It could not be reached: no order goes to it again.
    pub(crate) fn lost(&self) {
        if self.alive.swap(false, Ordering::Relaxed) {
            tracing::error!("a WPE cannot be reached; the pool goes on with its others");
        }
    }
}

/// A pool's enclaves.
pub(crate) struct PoolEnclaves {
    kmes: Vec<EnclaveClient>,
    /// Whether the KMEs are this node's own: then it registers the pool's record and signs its
    /// receipt updates.
    pub(crate) local_kmes: bool,
    pub(crate) wpes: Vec<PoolWpe>,
    /// The requester this node's WPEs are dedicated to: they claim its orders only.
    pub(crate) tenant: Option<String>,
    next_kme: AtomicUsize,
    next_wpe: AtomicUsize,
}

impl PoolEnclaves {
    /// Starts the pool `config` names: its first KME restores the pool from its sealed keys in
    /// the store (or signs it up), or joins a KME running elsewhere; the others attest to the
    /// first, which hands them the pool's keys; or, with remote KMEs, none of its own. Each WPE
    /// registers with every KME under `policy`. Returns the enclaves and the first KME, whose
    /// record is the pool's.
    pub(crate) async fn start<S: Store>(
        store: &S,
        new_kme: &NewEnclave,
        new_wpe: &NewEnclave,
        config: &EnclaveConfig,
        pool: &PoolConfig,
        states: Vec<afallon_enclave::SealedState>,
    ) -> Result<(Self, EnclaveClient), NodeError> {
        let name = config.worker_name.clone();
        let enclave_error = |error| NodeError::Enclave { worker: name.clone(), error };
        let kmes = if pool.remote_kmes.is_empty() {
            let first = match pool.join {
                Some(running) => {
                    let running =
                        EnclaveClient::connect(connect(running)?).map_err(enclave_error)?;
                    EnclaveClient::join_pool(new_kme()?, &running, config.clone())
                        .map_err(enclave_error)?
                }
                None => open_enclave(store, new_kme, Role::Kme { import: None }, config).await?,
            };
            // The other KMEs attest to the first, which hands them the pool's keys.
            let mut kmes = vec![first.clone()];
            for _ in 1..pool.kmes.max(1) {
                let kme = EnclaveClient::join_pool(new_kme()?, &first, config.clone())
                    .map_err(enclave_error)?;
                kmes.push(kme);
            }
            kmes
        } else {
            let mut kmes = Vec::new();
            for address in &pool.remote_kmes {
                let kme = EnclaveClient::connect(connect(*address)?).map_err(enclave_error)?;
                if kme.worker_id() != afallon_proto::worker_id_from_name(&name) {
                    return Err(enclave_error(Failure::new(
                        FailureKind::UnknownKme,
                        format!("the KME at {address} serves another worker than pool {name}"),
                    )));
                }
                kmes.push(kme);
            }
            kmes
        };
        let first = kmes[0].clone();
        if let Some(tenant) = &pool.tenant
            && pool.wpes > 0
        {
            // Before the WPEs register: the tenant's orders submitted from now on wait for them,
            // and none reaches a shared WPE, which the KMEs would refuse once they register.
            store.put_tenant(first.worker_id(), tenant).await?;
        }
        let mut wpes = Vec::new();
        for _ in 0..pool.wpes {
            let client =
                WpeClient::start(new_wpe()?, config.clone(), pool.tenant.clone(), states.clone())
                    .map_err(enclave_error)?;
            let mut key = Vec::new();
            for kme in &kmes {
                let nonce = kme.issue_nonce().map_err(enclave_error)?;
                let attestation = client.attest(nonce.clone()).map_err(enclave_error)?;
                key.clone_from(&attestation.transport_key);
                let kme = kme.register_wpe(attestation, nonce).map_err(enclave_error)?;
                client.add_kme(kme).map_err(enclave_error)?;
            }
            wpes.push(PoolWpe { client, key, alive: std::sync::atomic::AtomicBool::new(true) });
        }
        tracing::info!(pool = %name, kmes = kmes.len(), wpes = wpes.len(), tenant = ?pool.tenant, "pool started");
        let enclaves = Self {
            kmes,
            local_kmes: pool.remote_kmes.is_empty(),
            wpes,
            tenant: pool.tenant.clone(),
            next_kme: AtomicUsize::new(0),
            next_wpe: AtomicUsize::new(0),
        };
        Ok((enclaves, first))
    }

    /// The first KME: the one this node serves on its KME endpoint.
    pub(crate) fn first_kme(&self) -> &EnclaveClient {
        &self.kmes[0]
    }

    /// The WPE to run the next order on, in turn; none on a node that only serves KMEs.
    pub(crate) fn pick_wpe(&self) -> Option<&PoolWpe> {
        let next = self.next_wpe.fetch_add(1, Ordering::Relaxed);
        (0..self.wpes.len())
            .map(|n| &self.wpes[(next + n) % self.wpes.len()])
            .find(|wpe| wpe.alive.load(Ordering::Relaxed))
    }

    /// Pre-processes `raw` for `wpe` at a live KME, in turn; a KME that cannot be reached is
    /// passed over for the next.
    pub(crate) fn pre_process(&self, wpe: &PoolWpe, raw: &[u8]) -> Result<PreProcessed, Failure> {
        self.at_a_live_kme(|kme| kme.pre_process(&wpe.key, raw))
    }

    /// The pool's signed receipt update, from a live KME.
    pub(crate) fn receipt_update(
        &self,
        work_order_id: &str,
        response: &str,
        failed: bool,
    ) -> Result<ReceiptUpdate, Failure> {
        self.at_a_live_kme(|kme| kme.receipt_update(work_order_id, response, failed))
    }

    fn at_a_live_kme<T>(
        &self,
        call: impl Fn(&EnclaveClient) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let first = self.next_kme.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for n in 0..self.kmes.len() {
            let kme = &self.kmes[(first + n) % self.kmes.len()];
            match call(kme) {
                Err(failure) if failure.kind == FailureKind::Transport => {
                    tracing::warn!(%failure, "a KME cannot be reached; trying the next");
                    last = Some(failure);
                }
                outcome => return outcome,
            }
        }
        Err(last.unwrap_or_else(|| Failure::new(FailureKind::Transport, "the pool has no KME")))
    }
}

/// Connections a KME endpoint serves at once.
const MAX_KME_CONNECTIONS: usize = 64;

/// How long a call to a KME elsewhere may wait for its answer.
const KME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A link to the KME endpoint at `address` (frames over TCP).
fn connect(address: SocketAddr) -> Result<Arc<dyn EnclaveLink>, NodeError> {
    let stream = TcpStream::connect(address).map_err(NodeError::EnclaveProcess)?;
    stream.set_nodelay(true).map_err(NodeError::EnclaveProcess)?;
    let reader = stream.try_clone().map_err(NodeError::EnclaveProcess)?;
    // A KME answers in milliseconds; one that does not answer for this long is given up.
    Ok(Arc::new(PipeLink::over(reader, stream).with_timeout(KME_TIMEOUT)))
}

/// What the KME endpoint passes on to its KME: what WPE hosts and joining KMEs need, and nothing
/// else (no receipt signing, no start, no state).
struct KmeEndpoint(Arc<dyn EnclaveLink>);

impl EnclaveLink for KmeEndpoint {
    fn call(&self, request: Request) -> Response {
        match request {
            Request::Describe
            | Request::IssueNonce
            | Request::RegisterWpe { .. }
            | Request::PreProcess { .. }
            | Request::ExportPoolKeys { .. } => self.0.call(request),
            _ => Response::Failed(Failure::new(
                FailureKind::WrongRole,
                "the KME endpoint serves registrations and pre-processing only",
            )),
        }
    }
}

/// Serves `kme` on `listener`: each connection a stream of the enclave's frames
/// ([`afallon_enclave::pipe`]), restricted to [`KmeEndpoint`]'s requests, on threads of its own.
/// Nothing it hands out is readable off the network: key material is wrapped for an attested
/// enclave.
pub(crate) fn serve_kme_endpoint(listener: TcpListener, kme: &EnclaveClient) {
    let endpoint: Arc<dyn EnclaveLink> = Arc::new(KmeEndpoint(Arc::clone(kme.link())));
    let open = Arc::new(AtomicUsize::new(0));
    let accepting = std::thread::Builder::new().name("kme-endpoint".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            // Each WPE host and joining KME holds one connection: beyond the cap, new ones are
            // closed at once.
            if open.fetch_add(1, Ordering::SeqCst) >= MAX_KME_CONNECTIONS {
                open.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(
                    "the KME endpoint is at its connection cap; a connection is refused"
                );
                continue;
            }
            let (endpoint, open_now) = (Arc::clone(&endpoint), Arc::clone(&open));
            let served =
                std::thread::Builder::new().name("kme-connection".into()).spawn(move || {
                    let _ = stream.set_nodelay(true);
                    if let Ok(reader) = stream.try_clone()
                        && let Err(error) = pipe::serve(endpoint, reader, stream)
                    {
                        tracing::warn!(%error, "a KME endpoint connection ended");
                    }
                    open_now.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(error) = served {
                open.fetch_sub(1, Ordering::SeqCst);
                tracing::error!(%error, "cannot serve a KME endpoint connection");
            }
        }
    });
    if let Err(error) = accepting {
        tracing::error!(%error, "cannot serve the KME endpoint");
    }
}
