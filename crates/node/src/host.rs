//! The worker host: signs up or restarts each worker's enclave, and runs the tasks that claim
//! work orders, run them through the enclave (a pool's through a KME and a WPE: `pool.rs`), and
//! store the responses.
//!
//! The claiming tasks run on the enclave pool, a runtime with one thread per enclave slot (one per
//! core by default), and run the enclave right there: its work is CPU-bound (RSA above all), and
//! handing each order to yet another thread and back cost more, in wake-ups on this kind of
//! machine, than it saved. The response is stored by a task on the listener's runtime, so that
//! the next order is claimed while the last one waits for its commit.
//!
//! A worker's tasks sleep until the store announces work for it (no polling on the hot path); a
//! sweeper returns orders whose lease ran out to their queues, so an order claimed by a task (or
//! a process) that died is processed by another. A receipt task signs the updates that receipts
//! of the worker's finished orders await, whichever process created the receipt. While an order is processed and its response stored, its lease is
//! renewed every third of the lease; a run that lost its lease anyway cannot complete the order,
//! and a stateful workload's change from a run whose completion did not win is rolled back
//! ([`afallon_enclave::PendingState`]).
//!
//! While the store cannot write (a commit failed: a full disk, say), no task claims an order: its
//! result could not be kept. A response whose commit failed is not stored, its workload state
//! change is rolled back, and the store queues the order again; it runs once more when the store
//! can write again.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use afallon_enclave::{
    EnclaveClient, EnclaveConfig, EnclaveLink, FailureKind, PendingState, Role, SealedState,
};
use afallon_store::{Claimed, Completion, OrderResult, SealedBlob, Store, StoreHealth};
use afallon_workloads::DirectoryIo;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::pool::{PoolConfig, PoolEnclaves};
use crate::{App, NodeError, now_ms};

/// Opens a new enclave for a worker: in this process, or in a process of its own.
pub(crate) type NewEnclave = Arc<dyn Fn() -> Result<Arc<dyn EnclaveLink>, NodeError> + Send + Sync>;

/// A worker hosted by this node.
pub(crate) struct LocalWorker {
    /// The worker's enclave, and how many times it was replaced (its process ended).
    enclave: std::sync::RwLock<(u64, EnclaveClient)>,
    /// Held while the enclave is replaced.
    replacing: tokio::sync::Mutex<()>,
    new_enclave: NewEnclave,
    config: EnclaveConfig,
    worker_id: String,
    /// For a pool: its KMEs and WPEs (`enclave` is then its first KME, whose record is the
    /// pool's).
    pool: Option<PoolEnclaves>,
    /// Wakes one of the worker's idle tasks.
    pub(crate) wake: Notify,
    /// Wakes the worker's receipt task.
    pub(crate) receipts_waiting: Notify,
    io: DirectoryIo,
    name: String,
    /// A turn per stateful workload, held from before an order of it enters the enclave until
    /// its state change is committed or rolled back: the next order of that workload waits here,
    /// in a task, rather than on an enclave thread (the enclave's own guard would hold the thread,
    /// and the enclave slot with it, until the previous order's commit).
    turns: HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>,
    /// State conflicts in a row ([`Completion::StateConflict`]), across the worker's stateful
    /// workloads: each one makes the worker's next conflicting order hold its workload's turn a
    /// little longer, so that a stored state this process cannot load (one the database forged)
    /// slows orders down instead of running them hot.
    conflicts: std::sync::atomic::AtomicU32,
}

impl LocalWorker {
    /// Waits for the turn of the stateful workload `request` names, if it names one, and returns
    /// the workload's name with it. The request is only peeked at (the enclave parses it for
    /// real): a request that cannot be read here takes no turn, and the enclave's own guard still
    /// keeps its state right.
    async fn turn(&self, request: &[u8]) -> Option<(Arc<str>, tokio::sync::OwnedMutexGuard<()>)> {
        #[derive(serde::Deserialize)]
        struct Peek<'a> {
            #[serde(borrow)]
            params: PeekParams<'a>,
        }
        #[derive(serde::Deserialize)]
        struct PeekParams<'a> {
            #[serde(rename = "workloadId", borrow)]
            workload_id: std::borrow::Cow<'a, str>,
        }
        if self.turns.is_empty() {
            return None;
        }
        let peek: Peek<'_> = serde_json::from_slice(request).ok()?;
        let name = afallon_proto::workload_name_from_id(&peek.params.workload_id)?;
        let (name, turn) = self.turns.get_key_value(name.as_str())?;
        Some((Arc::clone(name), Arc::clone(turn).lock_owned().await))
    }

    /// The store key of a workload's sealed state.
    fn state_key(&self, workload: &str) -> String {
        format!("worker/{}/state/{workload}", self.name)
    }

    /// Loads the workload's stored state into the enclave if another process serving this
    /// worker stored a newer one. Run in the workload's turn.
    async fn refresh_state<S: Store>(
        &self,
        store: &S,
        workload: &str,
        load: impl Fn(SealedState) -> Result<bool, afallon_enclave::Failure>,
    ) {
        let key = self.state_key(workload);
        let stored = match store.sealed(&key).await {
            Ok(stored) => stored.into_iter().find(|blob| blob.key == key),
            Err(error) => {
                // The order runs on the state this process has; if that is stale, the store
                // refuses its completion and the order runs again.
                tracing::warn!(%error, workload, "reading the stored workload state failed");
                return;
            }
        };
        let Some(stored) = stored else { return };
        let version = stored.version;
        let state =
            SealedState { workload: workload.to_owned(), version, based_on: 0, blob: stored.blob };
        match load(state) {
            Ok(true) => tracing::debug!(workload, version, "loaded a newer state"),
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, workload, "the stored workload state does not load")
            }
        }
    }
}

impl LocalWorker {
    /// Restores the worker from its sealed keys and states in the store, or signs it up and
    /// stores its sealed keys; then registers its record.
    pub(crate) async fn start<S: Store>(
        store: &S,
        new_enclave: NewEnclave,
        config: EnclaveConfig,
        data_dir: &Path,
    ) -> Result<Self, NodeError> {
        let enclave = open_enclave(store, &new_enclave, Role::Singleton, &config).await?;
        Self::hosting(store, enclave, None, new_enclave, config, data_dir).await
    }

    /// Starts the pool `config` names (its KMEs from the store's sealed keys, or signed up) and
    /// its WPEs, registered with every KME under `policy`; then registers the pool's record.
    pub(crate) async fn start_pool<S: Store>(
        store: &S,
        new_kme: NewEnclave,
        new_wpe: &NewEnclave,
        config: EnclaveConfig,
        pool: &PoolConfig,
        data_dir: &Path,
    ) -> Result<Self, NodeError> {
        let states = stored_states(store, &config.worker_name).await?;
        let (enclaves, first) =
            PoolEnclaves::start(store, &new_kme, new_wpe, &config, pool, states).await?;
        Self::hosting(store, first, Some(enclaves), new_kme, config, data_dir).await
    }

    async fn hosting<S: Store>(
        store: &S,
        enclave: EnclaveClient,
        pool: Option<PoolEnclaves>,
        new_enclave: NewEnclave,
        config: EnclaveConfig,
        data_dir: &Path,
    ) -> Result<Self, NodeError> {
        let name = config.worker_name.clone();
        // A pool whose KMEs run elsewhere is registered there.
        if pool.as_ref().is_none_or(|pool| pool.local_kmes) {
            store.put_worker(enclave.worker_id(), enclave.worker_record()).await?;
        }
        let files = data_dir.join("workload-files").join(&name);
        crate::private::create_dir(&files)?;
        let workloads = match pool.as_ref().map(|pool| pool.wpes.first()) {
            Some(Some(wpe)) => wpe.client.workloads(),
            // A node serving only the pool's KME runs no workload.
            Some(None) => &[],
            None => enclave.workloads(),
        };
        let turns = workloads
            .iter()
            .filter(|workload| workload.stateful)
            .map(|workload| {
                (Arc::from(workload.name.as_str()), Arc::new(tokio::sync::Mutex::new(())))
            })
            .collect();
        Ok(Self {
            worker_id: enclave.worker_id().to_owned(),
            enclave: std::sync::RwLock::new((0, enclave)),
            replacing: tokio::sync::Mutex::new(()),
            new_enclave,
            config,
            pool,
            wake: Notify::new(),
            receipts_waiting: Notify::new(),
            io: DirectoryIo::new(&files)?,
            name,
            turns,
            conflicts: std::sync::atomic::AtomicU32::new(0),
        })
    }
}

impl LocalWorker {
    /// The worker's id.
    pub(crate) fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Whether this node runs the worker's orders: a pool's only if it has WPEs here.
    fn runs_orders(&self) -> bool {
        self.pool.as_ref().is_none_or(|pool| !pool.wpes.is_empty())
    }

    /// Whether this node signs the worker's receipt updates: a pool's only if its KMEs are here.
    fn signs_receipts(&self) -> bool {
        self.pool.as_ref().is_none_or(|pool| pool.local_kmes)
    }

    /// The pool's enclaves, for a pool.
    pub(crate) fn pool(&self) -> Option<&PoolEnclaves> {
        self.pool.as_ref()
    }

    /// The worker's enclave as it is now, with its generation.
    fn enclave_now(&self) -> (u64, EnclaveClient) {
        self.enclave.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The worker's enclave as it is now.
    fn enclave(&self) -> EnclaveClient {
        self.enclave_now().1
    }

    /// Replaces the enclave of generation `ended`, which could not be reached (its process
    /// ended), with a new one restored from the store: its sealed keys and its workloads' last
    /// stored states. A later generation means another task replaced it already.
    async fn replace_enclave<S: Store>(&self, store: &S, ended: u64) {
        let _replacing = self.replacing.lock().await;
        if self.enclave_now().0 != ended {
            return;
        }
        match open_enclave(store, &self.new_enclave, Role::Singleton, &self.config).await {
            Ok(enclave) => {
                *self.enclave.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    (ended + 1, enclave);
                tracing::warn!(worker = %self.name, "the worker's enclave could not be reached; a new one runs");
            }
            Err(error) => {
                tracing::error!(worker = %self.name, %error, "the worker's enclave could not be reached, and a new one cannot be started");
                // Tried again by the next order, a moment later.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The workloads' states among `sealed` (the blobs under `state_prefix`).
fn states_among(sealed: &[SealedBlob], state_prefix: &str) -> Vec<SealedState> {
    sealed
        .iter()
        .filter_map(|blob| {
            blob.key.strip_prefix(state_prefix).map(|workload| SealedState {
                workload: workload.to_owned(),
                version: blob.version,
                based_on: 0,
                blob: blob.blob.clone(),
            })
        })
        .collect()
}

/// The last stored states of the workloads of the worker (or pool) `name`.
async fn stored_states<S: Store>(store: &S, name: &str) -> Result<Vec<SealedState>, NodeError> {
    let state_prefix = format!("worker/{name}/state/");
    Ok(states_among(&store.sealed(&state_prefix).await?, &state_prefix))
}

/// Restores a worker's enclave (or a pool's KME, as `role` says) from its sealed keys and states
/// in the store, or signs the worker up and stores its sealed keys. The first process to store a
/// worker's keys is the one all use.
pub(crate) async fn open_enclave<S: Store>(
    store: &S,
    new_enclave: &NewEnclave,
    role: Role,
    config: &EnclaveConfig,
) -> Result<EnclaveClient, NodeError> {
    let name = config.worker_name.clone();
    let enclave_error = |error| NodeError::Enclave { worker: name.clone(), error };
    let start = |sealed_keys, states| {
        EnclaveClient::start_as(new_enclave()?, role.clone(), config.clone(), sealed_keys, states)
            .map_err(enclave_error)
    };
    let prefix = format!("worker/{name}/");
    let keys_key = format!("{prefix}keys");
    let sealed = store.sealed(&prefix).await?;
    if let Some(keys) = sealed.iter().find(|blob| blob.key == keys_key) {
        return start(Some(keys.blob.clone()), states_among(&sealed, &format!("{prefix}state/")));
    }
    let enclave = start(None, vec![])?;
    let keys = enclave.sealed_keys().to_vec();
    store
        .put_sealed(SealedBlob {
            based_on: None,
            key: keys_key.clone(),
            version: 0,
            blob: keys.clone(),
        })
        .await?;
    // Another process serving this worker may have stored its keys first: the store kept those,
    // and this process uses them too (in an enclave of its own).
    let stored = store.sealed(&keys_key).await?;
    match stored.into_iter().find(|blob| blob.key == keys_key) {
        Some(first) if first.blob != keys => {
            tracing::info!(worker = %name, "another process created this worker's keys first; using them");
            start(Some(first.blob), vec![])
        }
        _ => Ok(enclave),
    }
}

/// Starts every worker's processing tasks on the enclave pool (none without one: a listener-only
/// node), its receipt task, and the lease sweeper.
pub(crate) fn spawn<S: Store>(
    app: &Arc<App<S>>,
    stopped: &watch::Receiver<bool>,
    enclaves: Option<&tokio::runtime::Handle>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    // Holders must differ across every process on the store: process ids repeat across
    // containers (each worker pod's process is often 1), so a random tag names this process.
    let process = afallon_crypto::random_array::<8>()
        .map_or_else(|_| format!("{:x}", crate::now_ms()), hex::encode);
    let processing = enclaves.map(|pool| {
        app.workers.iter().filter(|worker| worker.runs_orders()).map(move |worker| (pool, worker))
    });
    for (enclaves, worker) in processing.into_iter().flatten() {
        for task in 0..app.config.processors_per_worker {
            let holder = format!("{process}/{}/{}/{task}", std::process::id(), worker.name);
            tasks.push(enclaves.spawn(process_loop(
                Arc::clone(app),
                Arc::clone(worker),
                holder,
                stopped.clone(),
            )));
        }
    }
    for worker in app.workers.iter().filter(|worker| worker.signs_receipts()) {
        tasks.push(tokio::spawn(receipt_loop(
            Arc::clone(app),
            Arc::clone(worker),
            stopped.clone(),
        )));
    }
    tasks.push(tokio::spawn(sweep_loop(Arc::clone(app), stopped.clone())));
    tasks
}

async fn process_loop<S: Store>(
    app: Arc<App<S>>,
    worker: Arc<LocalWorker>,
    holder: String,
    mut stopped: watch::Receiver<bool>,
) {
    let lease_ms = lease_ms(&app);
    let mut claims = 0_u64;
    let mut health = app.store.health();
    while !*stopped.borrow() {
        // No order runs while the store cannot write: its result could not be kept, and the
        // order would only run again and again. The store says when it can write again.
        if *health.borrow_and_update() != StoreHealth::Writable {
            tokio::select! {
                changed = health.changed() => if changed.is_err() { return },
                _ = stopped.changed() => {}
            }
            continue;
        }
        // Each claim has a holder of its own, so that a stale run of an order this task claimed
        // before can never pass for the current one.
        claims += 1;
        let holder = format!("{holder}#{claims}");
        let tenant = worker.pool.as_ref().and_then(|pool| pool.tenant.as_deref());
        match app.store.claim(&worker.worker_id, tenant, &holder, now_ms(), lease_ms).await {
            Ok(Some(claimed)) => process(&app, &worker, claimed, holder).await,
            Ok(None) => {
                tokio::select! {
                    () = worker.wake.notified() => {}
                    _ = stopped.changed() => {}
                    // A safety net only: the store announces submissions and requeues.
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
            Err(error) => {
                tracing::error!(%error, worker = %worker.name, "claiming a work order failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn lease_ms<S>(app: &App<S>) -> u64 {
    u64::try_from(app.config.lease.as_millis()).unwrap_or(u64::MAX)
}

/// An order being worked on: its id, the holder of its lease, and the task renewing the lease
/// (stopped when this is dropped).
struct Held {
    work_order_id: String,
    holder: String,
    renewal: JoinHandle<()>,
}

impl Held {
    /// Starts renewing `holder`'s lease on the order, on the listener's runtime (the enclave
    /// pool's threads are busy running enclaves).
    fn start<S: Store>(app: &Arc<App<S>>, work_order_id: String, holder: String) -> Self {
        let renewal =
            app.io.spawn(renew_lease(Arc::clone(app), work_order_id.clone(), holder.clone()));
        Self { work_order_id, holder, renewal }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Renews a lease every third of the lease time until stopped, or until the lease is lost.
async fn renew_lease<S: Store>(app: Arc<App<S>>, work_order_id: String, holder: String) {
    let period = app.config.lease / 3;
    loop {
        tokio::time::sleep(period).await;
        match app.store.renew(&work_order_id, &holder, now_ms(), lease_ms(&app)).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%work_order_id, "the lease ran out while the order was processed; another run will complete it");
                return;
            }
            Err(error) => tracing::error!(%error, %work_order_id, "renewing a lease failed"),
        }
    }
}

/// Runs a claimed order through the enclave and hands the response to a task that stores it.
async fn process<S: Store>(
    app: &Arc<App<S>>,
    worker: &Arc<LocalWorker>,
    claimed: Claimed,
    holder: String,
) {
    let started = Instant::now();
    let held = Held::start(app, claimed.work_order_id, holder);
    let turn = worker.turn(&claimed.request).await;
    let wpe = worker.pool.as_ref().and_then(PoolEnclaves::pick_wpe);
    if let Some((workload, _)) = &turn {
        // Another process serving this worker (or another WPE of the pool) may have changed the
        // state since this enclave last ran an order of the workload.
        match wpe {
            Some(wpe) => {
                worker
                    .refresh_state(&*app.store, workload, |state| wpe.client.load_state(state))
                    .await
            }
            None => {
                let enclave = worker.enclave();
                worker.refresh_state(&*app.store, workload, |state| enclave.load_state(state)).await
            }
        }
    }
    // An enclave that cannot be reached (its process ended) is replaced, and the order runs
    // once more on the new one; if that fails too, the lease returns the order once it runs out.
    let mut replaced = false;
    let (processed, pending) = loop {
        let Ok(slot) = app.enclave_slots.acquire().await else { return };
        let (generation, enclave) = worker.enclave_now();
        let processed = std::panic::catch_unwind(AssertUnwindSafe(|| match (&worker.pool, wpe) {
            (Some(pool), Some(wpe)) => {
                let processed = pool
                    .pre_process(wpe, &claimed.request)
                    .and_then(|keys| wpe.client.process(&claimed.request, keys, &worker.io));
                if processed.as_ref().is_err_and(|f| f.kind == FailureKind::Transport) {
                    wpe.lost();
                }
                processed
            }
            _ => enclave.process(&claimed.request, &worker.io),
        }));
        drop(slot);
        match processed {
            Ok(Ok(processed)) => break processed,
            Ok(Err(failure)) => {
                tracing::error!(work_order_id = %held.work_order_id, %failure, "the enclave did not process the order");
                if failure.kind != FailureKind::Transport || replaced || worker.pool.is_some() {
                    return;
                }
                worker.replace_enclave(&*app.store, generation).await;
                replaced = true;
            }
            Err(_) => {
                // The enclave answers every input; this is a bug. The lease returns the order.
                tracing::error!(work_order_id = %held.work_order_id, "the enclave panicked");
                return;
            }
        }
    };
    app.metrics.observe_processing(started.elapsed().as_secs_f64());
    let response = store_response(Arc::clone(app), Arc::clone(worker), held, processed, pending);
    app.io.spawn(async move {
        response.await;
        // The state change is committed or rolled back: the workload's next order may run.
        drop(turn);
    });
    // The enclave held this thread for a while: let the requests and responses queued behind
    // it run before the next order.
    tokio::task::yield_now().await;
}

/// Stores a response with the workload state it brings, then commits the workload's state
/// change if the completion won (and rolls it back otherwise). The store announces the order's
/// end to whoever waits for it, and a receipt that now awaits the worker's update to the
/// worker's receipt task.
async fn store_response<S: Store>(
    app: Arc<App<S>>,
    worker: Arc<LocalWorker>,
    held: Held,
    processed: afallon_enclave::Processed,
    pending: Option<PendingState>,
) {
    let app = &*app;
    let work_order_id = held.work_order_id.as_str();
    let failed = processed.error.is_some();
    if let Some(error) = &processed.error {
        tracing::info!(%work_order_id, code = error.code.code(), message = %error.message, "work order failed");
    }
    let sealed = processed.state.map(|state| SealedBlob {
        key: worker.state_key(&state.workload),
        version: state.version,
        based_on: Some(state.based_on),
        blob: state.blob,
    });
    let result = OrderResult { response: processed.response, failed };
    let completion = app.store.complete(work_order_id, &held.holder, result, sealed);
    // This task is cancelled only when the runtime shuts down, and the in-memory state with it:
    // between a completion that won and the commit below there is no await.
    let completion = completion.await;
    // The lease has ended, one way or another.
    held.renewal.abort();
    match completion {
        Ok(Completion::Stored) => {
            // This run's result is the order's: so is its state change, in memory too.
            if let Some(pending) = pending {
                if let Err(failure) = pending.commit() {
                    // The stored state is the truth: the enclave loads it before the
                    // workload's next order.
                    tracing::error!(%work_order_id, %failure, "the enclave did not take the committed state");
                }
                worker.conflicts.store(0, Ordering::Relaxed);
            }
            let counter =
                if failed { &app.metrics.completed_error } else { &app.metrics.completed_ok };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        // Not this run's result: its state change is rolled back. After a state conflict, the
        // store has queued the order again, to run on the newer state; the workload's turn is
        // held a while first, longer with each conflict in a row (50 ms doubling, at most 5 s).
        Ok(Completion::StateConflict) => {
            drop(pending);
            let conflicts = worker.conflicts.fetch_add(1, Ordering::Relaxed).min(7);
            let pause = Duration::from_millis(50 << conflicts).min(Duration::from_secs(5));
            tracing::debug!(%work_order_id, ?pause, "another process changed the state first; the order runs again");
            if conflicts > 0 {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(outcome) => tracing::debug!(%work_order_id, ?outcome, "response not stored"),
        Err(error) => {
            // Nothing was stored. The embedded store has queued the order again (and woken a
            // synchronous requester waiting for it); on PostgreSQL it is queued again when its
            // lease runs out. It runs once the store can write.
            tracing::warn!(%error, %work_order_id, "the response was not stored; the order runs again once the store can write");
        }
    }
}

/// How many awaiting receipts the receipt task takes from the store at once.
const RECEIPT_BATCH: usize = 64;

/// Signs the worker's update for every receipt that awaits one (its order finished), whenever
/// the store announces one, and once at start for those left by a process that died.
async fn receipt_loop<S: Store>(
    app: Arc<App<S>>,
    worker: Arc<LocalWorker>,
    mut stopped: watch::Receiver<bool>,
) {
    let worker_id = worker.worker_id.clone();
    while !*stopped.borrow() {
        let notified = worker.receipts_waiting.notified();
        match app.store.receipts_awaiting_update(&worker_id, RECEIPT_BATCH).await {
            Ok(awaiting) if !awaiting.is_empty() => {
                for (work_order_id, result) in awaiting {
                    let update = match &worker.pool {
                        Some(pool) => {
                            pool.receipt_update(&work_order_id, &result.response, result.failed)
                        }
                        None => worker.enclave().receipt_update(
                            &work_order_id,
                            &result.response,
                            result.failed,
                        ),
                    };
                    let update = match update {
                        Ok(update) => update,
                        Err(failure) => {
                            tracing::error!(%failure, %work_order_id, "the enclave did not sign the receipt update");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            break;
                        }
                    };
                    if let Err(error) =
                        app.store.add_worker_receipt_update(&work_order_id, &update).await
                    {
                        tracing::error!(%error, %work_order_id, "adding the worker's receipt update failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "reading the receipts awaiting an update failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        tokio::select! {
            () = notified => {}
            _ = stopped.changed() => {}
            // A safety net only: the store announces receipts that await an update.
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

async fn sweep_loop<S: Store>(app: Arc<App<S>>, mut stopped: watch::Receiver<bool>) {
    let period = (app.config.lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    while !*stopped.borrow() {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            _ = stopped.changed() => break,
        }
        match app.store.requeue_expired(now_ms()).await {
            Ok(0) => {}
            Ok(requeued) => {
                // The store announces them to every worker process.
                tracing::warn!(requeued, "work orders whose lease ran out were queued again");
                app.metrics.requeued.fetch_add(requeued, Ordering::Relaxed);
            }
            Err(error) => tracing::error!(%error, "requeueing expired leases failed"),
        }
    }
}
