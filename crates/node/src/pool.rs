//! A worker pool hosted by this node: its KMEs, which hold the pool's keys and record, and its
//! WPEs, which run the workloads and hold none of the pool's keys; each is an enclave of its own
//! (in this process, or in a process of its own). An order is pre-processed by a live KME, the
//! next one if a KME cannot be reached, and run on a WPE.

use std::sync::atomic::{AtomicUsize, Ordering};

use afallon_enclave::{
    EnclaveClient, EnclaveConfig, Failure, FailureKind, PreProcessed, Role, WpeClient, WpePolicy,
};
use afallon_proto::ReceiptUpdate;
use afallon_store::{SealedBlob, Store};

use crate::NodeError;
use crate::host::NewEnclave;

/// A pool: its name (its worker id is SHA-256 of it, as a worker's), and how many KMEs and WPEs
/// it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The pool's name.
    pub name: String,
    /// The KMEs: at least one. Each holds the pool's keys; WPEs use any live one.
    pub kmes: usize,
    /// The WPEs: at least one.
    pub wpes: usize,
}

impl PoolConfig {
    /// The pool `name` with one KME and two WPEs.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), kmes: 1, wpes: 2 }
    }
}

/// One WPE, with the transport key its KMEs know it by.
pub(crate) struct PoolWpe {
    pub(crate) client: WpeClient,
    key: Vec<u8>,
}

/// A pool's enclaves.
pub(crate) struct PoolEnclaves {
    kmes: Vec<EnclaveClient>,
    pub(crate) wpes: Vec<PoolWpe>,
    next_kme: AtomicUsize,
    next_wpe: AtomicUsize,
}

impl PoolEnclaves {
    /// Starts the pool `config` names: its first KME signs the pool up (or restores it from its
    /// sealed keys in the store), the others restore from the same keys, and each WPE registers
    /// with every KME under `policy`. Returns the enclaves and the first KME, whose record is the
    /// pool's.
    pub(crate) async fn start<S: Store>(
        store: &S,
        new_kme: &NewEnclave,
        new_wpe: &NewEnclave,
        config: &EnclaveConfig,
        pool: &PoolConfig,
        policy: &WpePolicy,
        states: Vec<afallon_enclave::SealedState>,
    ) -> Result<(Self, EnclaveClient), NodeError> {
        let name = config.worker_name.clone();
        let enclave_error = |error| NodeError::Enclave { worker: name.clone(), error };
        let keys_key = format!("worker/{name}/keys");
        let role = || Role::Kme { policy: policy.clone(), import: None };
        let stored = store.sealed(&keys_key).await?.into_iter().find(|b| b.key == keys_key);
        let first = match stored {
            Some(keys) => {
                EnclaveClient::start_as(new_kme()?, role(), config.clone(), Some(keys.blob), vec![])
                    .map_err(enclave_error)?
            }
            None => {
                let kme = EnclaveClient::start_as(new_kme()?, role(), config.clone(), None, vec![])
                    .map_err(enclave_error)?;
                let keys = kme.sealed_keys().to_vec();
                store
                    .put_sealed(SealedBlob {
                        based_on: None,
                        key: keys_key.clone(),
                        version: 0,
                        blob: keys.clone(),
                    })
                    .await?;
                let stored = store.sealed(&keys_key).await?.into_iter().find(|b| b.key == keys_key);
                match stored {
                    Some(first) if first.blob != keys => EnclaveClient::start_as(
                        new_kme()?,
                        role(),
                        config.clone(),
                        Some(first.blob),
                        vec![],
                    )
                    .map_err(enclave_error)?,
                    _ => kme,
                }
            }
        };
        // The other KMEs attest to the first, which hands them the pool's keys.
        let mut kmes = vec![first.clone()];
        for _ in 1..pool.kmes.max(1) {
            let kme = EnclaveClient::join_pool(new_kme()?, &first, policy.clone(), config.clone())
                .map_err(enclave_error)?;
            kmes.push(kme);
        }
        let mut wpes = Vec::new();
        for _ in 0..pool.wpes.max(1) {
            let client = WpeClient::start(new_wpe()?, config.clone(), None, states.clone())
                .map_err(enclave_error)?;
            let mut key = Vec::new();
            for kme in &kmes {
                let nonce = kme.issue_nonce().map_err(enclave_error)?;
                let attestation = client.attest(nonce.clone()).map_err(enclave_error)?;
                key.clone_from(&attestation.transport_key);
                let kme_key = kme.register_wpe(attestation, nonce).map_err(enclave_error)?;
                client.add_kme(kme_key).map_err(enclave_error)?;
            }
            wpes.push(PoolWpe { client, key });
        }
        tracing::info!(pool = %name, kmes = kmes.len(), wpes = wpes.len(), "pool started");
        let enclaves =
            Self { kmes, wpes, next_kme: AtomicUsize::new(0), next_wpe: AtomicUsize::new(0) };
        Ok((enclaves, first))
    }

    /// The WPE to run the next order on, in turn.
    pub(crate) fn pick_wpe(&self) -> &PoolWpe {
        let next = self.next_wpe.fetch_add(1, Ordering::Relaxed);
        &self.wpes[next % self.wpes.len()]
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
