//! An enclave in a process of its own (`afallon enclave`): the node's workers reach it over
//! pipes ([`afallon_enclave::pipe`]) when [`crate::NodeConfig::enclave_process`] is set.

use std::path::Path;
use std::sync::Arc;

use afallon_attest::SimPlatform;
use afallon_enclave::{Enclave, sim_measurement};
use afallon_workloads::Registry;

use crate::NodeError;

/// Serves one enclave on the simulated TEE whose secrets are in `data_dir/sim` (the node's data
/// directory), with the built-in workloads, on standard input and output until its host closes
/// them. Nothing else may write to standard output meanwhile.
///
/// # Errors
/// [`NodeError`] if the platform cannot be opened or the stream fails.
pub fn serve_enclave_process(data_dir: &Path) -> Result<(), NodeError> {
    let registry = Registry::with_builtins();
    let platform = SimPlatform::open(&data_dir.join("sim"), sim_measurement(&registry))?;
    let enclave = Arc::new(Enclave::new(Arc::new(platform), registry));
    afallon_enclave::pipe::serve(enclave, std::io::stdin().lock(), std::io::stdout())
        .map_err(NodeError::EnclavePipe)
}
