//! Platform providers: where enclaves run, each behind `afallon_attest::Platform` (the enclave's
//! measurement, evidence over 64 bytes of report data, sealing bound to the measurement). They
//! do the I/O of attestation, the verifiers in `afallon_attest::verify` none.
//!
//! - [`SimPlatform`]: the simulated TEE for development; its secrets are files, and its evidence
//!   is `sim`, which no policy accepts unless it allows simulation.
//! - [`GraminePlatform`]: an SGX enclave under Gramine, through `/dev/attestation` (DCAP quotes,
//!   the MRENCLAVE-bound sealing key).
//! - [`ConfigfsTsmPlatform`]: a confidential VM (TDX or SEV-SNP) through the kernel's
//!   configfs-tsm report interface (`/sys/kernel/config/tsm/report`).

mod configfs_tsm;
#[cfg(feature = "fake")]
pub mod fake;
mod gramine;
mod pseudo_file;
mod secret_file;
mod sim;

pub use configfs_tsm::ConfigfsTsmPlatform;
pub use gramine::GraminePlatform;
pub use sim::SimPlatform;
