//! An enclave in a process of its own (`afallon enclave`): the node's workers reach it over
//! pipes ([`afallon_enclave::pipe`]) when [`crate::NodeConfig::enclave_process`] is set.

use std::path::Path;
use std::sync::Arc;

use afallon_attest::Measurement;
use afallon_enclave::{Enclave, sim_kme_measurement, sim_measurement, sim_wpe_measurement};
use afallon_platform::SimPlatform;
use afallon_workloads::Registry;

use crate::NodeError;

/// What an enclave is built as: the simulated TEE measures each kind differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnclaveRole {
    /// A worker of its own.
    Singleton,
    /// A pool's Key Management Enclave.
    Kme,
    /// A pool's Work-order Processing Enclave.
    Wpe,
}

impl EnclaveRole {
    /// Its name on the command line (`afallon enclave --role NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Singleton => "singleton",
            Self::Kme => "kme",
            Self::Wpe => "wpe",
        }
    }

    /// The role named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Singleton, Self::Kme, Self::Wpe].into_iter().find(|role| role.name() == name)
    }

    /// What the simulated TEE measures an enclave of this role with these workloads as.
    pub fn sim_measurement(self, registry: &Registry) -> Measurement {
        match self {
            Self::Singleton => sim_measurement(registry),
            Self::Kme => sim_kme_measurement(),
            Self::Wpe => sim_wpe_measurement(registry),
        }
    }
}

/// Serves one enclave of `role` on the simulated TEE whose secrets are in `data_dir/sim` (the
/// node's data directory), with the built-in workloads, on standard input and output until its host closes
/// them. Nothing else may write to standard output meanwhile.
///
/// # Errors
/// [`NodeError`] if the platform cannot be opened or the stream fails.
pub fn serve_enclave_process(data_dir: &Path, role: EnclaveRole) -> Result<(), NodeError> {
    let registry = Registry::with_builtins();
    let platform = SimPlatform::open(&data_dir.join("sim"), role.sim_measurement(&registry))?;
    let enclave = Arc::new(Enclave::new(Arc::new(platform), registry));
    afallon_enclave::pipe::serve(enclave, std::io::stdin().lock(), std::io::stdout())
        .map_err(NodeError::EnclavePipe)
}
