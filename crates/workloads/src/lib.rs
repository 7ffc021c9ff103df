//! Workloads: the code a worker runs on a work order's decrypted inputs.
//!
//! A [`Workload`] takes the inputs of one work order and returns its outputs; the enclave does all
//! decryption, checking, encryption and signing around it. Workloads are registered by name in a
//! [`Registry`]; on the wire a workload is named by `workloadId`, the hex of its UTF-8 name.
//!
//! The built-ins reproduce Hyperledger Avalon's examples byte for byte: [`EchoResult`]
//! (`echo-result`), [`HeartDiseaseEval`] (`heart-disease-eval`), [`InsideOutEval`]
//! (`inside-out-eval`) and [`SimpleWallet`] (`simple-wallet`).
//!
//! Workloads take `&self`, so a worker can run several orders at once; those with state keep it
//! behind a lock and expose it through [`Workload::snapshot`] and [`Workload::restore`], which the
//! enclave seals so that the state survives a restart. File access goes through [`HostIo`], which
//! the host provides and which is confined to one directory.

mod echo;
mod heart_disease;
mod inside_out;
mod io;
mod simple_wallet;
mod stoi;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use echo::EchoResult;
pub use heart_disease::HeartDiseaseEval;
pub use inside_out::InsideOutEval;
pub use io::{DirectoryIo, HostIo, IoError, NoIo, WorkloadPath};
pub use simple_wallet::SimpleWallet;

/// One decrypted input item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The item's `index` in the request.
    pub index: i64,
    /// The decrypted bytes.
    pub data: Vec<u8>,
}

/// One output item, before encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The index of the output (used when the request named no output slots).
    pub index: i64,
    /// The plaintext bytes.
    pub data: Vec<u8>,
}

impl Output {
    /// An output at `index` with `data`.
    pub fn new(index: i64, data: impl Into<Vec<u8>>) -> Self {
        Self { index, data: data.into() }
    }
}

/// What a workload learns about the order besides its inputs.
pub struct Context<'a> {
    /// `requesterId`, as in the request.
    pub requester_id: &'a str,
    /// `workerId`, as in the request.
    pub worker_id: &'a str,
    /// `workOrderId`, as in the request.
    pub work_order_id: &'a str,
    /// File access, confined by the host.
    pub io: &'a dyn HostIo,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("requester_id", &self.requester_id)
            .field("worker_id", &self.worker_id)
            .field("work_order_id", &self.work_order_id)
            .finish_non_exhaustive()
    }
}

/// Why a workload could not produce outputs (as opposed to outputs that report a problem, which
/// is how Avalon's built-ins answer bad input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// The workload failed.
    #[error("workload failed: {0}")]
    Failed(String),
    /// A state snapshot could not be restored.
    #[error("workload state is invalid: {0}")]
    InvalidState(String),
}

/// A workload: a function from a work order's decrypted inputs to its outputs.
pub trait Workload: Send + Sync {
    /// The workload's name; its `workloadId` is the hex of this.
    fn name(&self) -> &'static str;

    /// Runs one work order.
    ///
    /// # Errors
    /// [`WorkloadError`] when no outputs can be produced at all.
    fn process(
        &self,
        context: &Context<'_>,
        inputs: &[Input],
    ) -> Result<Vec<Output>, WorkloadError>;

    /// Whether the workload keeps state between orders. The enclave runs the orders of a stateful
    /// workload one at a time, so that each sealed snapshot follows the one before it.
    fn stateful(&self) -> bool {
        false
    }

    /// Whether the workload reads or writes the host's files ([`Context::io`]). Only such a
    /// workload gets file access: the enclave suspends its order while the host does each access.
    /// Every other workload's [`Context::io`] refuses (`IoError::Unavailable`).
    fn uses_host_io(&self) -> bool {
        false
    }

    /// The state to keep across restarts, for workloads that have one. The enclave seals it after
    /// every order the workload ran.
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Restores state saved by [`Workload::snapshot`].
    ///
    /// # Errors
    /// [`WorkloadError::InvalidState`] when the snapshot cannot be read.
    fn restore(&self, _snapshot: &[u8]) -> Result<(), WorkloadError> {
        Ok(())
    }
}

/// Workloads by name.
#[derive(Clone, Default)]
pub struct Registry {
    workloads: BTreeMap<&'static str, Arc<dyn Workload>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with Avalon's four built-in workloads.
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        registry.register(Arc::new(EchoResult));
        registry.register(Arc::new(HeartDiseaseEval::default()));
        registry.register(Arc::new(InsideOutEval));
        registry.register(Arc::new(SimpleWallet::default()));
        registry
    }

    /// Adds (or replaces) a workload under its name.
    pub fn register(&mut self, workload: Arc<dyn Workload>) {
        self.workloads.insert(workload.name(), workload);
    }

    /// The workload called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Workload>> {
        self.workloads.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.workloads.keys().copied()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// Bytes as text the way Avalon's C++ workloads read them: up to the first NUL, invalid UTF-8
/// replaced.
pub(crate) fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_registered_by_name() {
        let registry = Registry::with_builtins();
        let names: Vec<_> = registry.names().collect();
        assert_eq!(
            names,
            ["echo-result", "heart-disease-eval", "inside-out-eval", "simple-wallet"]
        );
        assert!(registry.get("no-such-workload").is_none());
        assert!(format!("{registry:?}").contains("\"simple-wallet\""));
    }

    #[test]
    fn text_stops_at_nul() {
        assert_eq!(text(b"abc\0def"), "abc");
        assert_eq!(text(b"\xffok"), "\u{fffd}ok");
    }
}
