//! Attestation: what a TEE says about the code it runs, how that is checked, and who decides
//! whether it is good enough.
//!
//! - A [`Platform`] is where an enclave runs. It tells the enclave's [`Measurement`], produces
//!   [`Evidence`] over 64 bytes of [`ReportData`] (which bind the enclave's keys), and seals
//!   data so that only the same measurement on the same platform opens it ([`sealing`]). The
//!   providers, which do I/O (the simulated TEE, Gramine, configfs-tsm), live in the
//!   `afallon-platform` crate; this crate does none.
//! - Evidence is checked by the [`Verifier`] of its kind ([`verify`]: one module per kind, no
//!   I/O, the time to verify at given), which returns a [`VerifiedEvidence`]: the measurement,
//!   the report data, the TCB status and the advisories the evidence proves, or a
//!   [`VerifyError`] naming the check that failed.
//! - A [`Policy`] decides: which measurements (or SGX signers) are acceptable, the lowest TCB
//!   status, which advisories are refused, and whether simulation is. The default policy
//!   refuses simulated evidence; accepting it takes the explicitly named
//!   [`Policy::insecure_allow_simulation`].
//!
//! Simulation is never a bypass: simulated evidence is its own kind, signed by a local simulation
//! key and verified for real; only the policy can accept it.

mod evidence;
mod policy;
pub mod sealing;
pub mod verify;

pub use evidence::{
    Evidence, EvidenceKind, Measurement, ReportData, SgxSigner, SnpTcb, TcbStatus, TdxMeasurements,
    VerifiedEvidence, WorkerProof,
};
pub use policy::Policy;
pub use sealing::SealError;
pub use verify::{UnixTime, Verifier, VerifyError};

use afallon_crypto::AesKey;
use zeroize::Zeroizing;

/// Why a platform operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// Reading or writing the platform's files failed.
    #[error("platform storage: {0}")]
    Storage(#[from] std::io::Error),
    /// A stored platform secret is not what this platform wrote.
    #[error("platform secret {0} is corrupt")]
    CorruptSecret(&'static str),
    /// The random generator failed.
    #[error(transparent)]
    Random(#[from] afallon_crypto::RandomError),
    /// The TEE's interface answered something it should not (an empty report, a report made
    /// for another request, a provider of another kind).
    #[error("the TEE interface: {0}")]
    Interface(String),
}

/// Where an enclave runs: the TEE (or its simulation) that measures it, attests for it and seals
/// its data.
pub trait Platform: Send + Sync {
    /// The kind of evidence this platform produces.
    fn kind(&self) -> EvidenceKind;

    /// The measurement of the enclave running on it.
    fn measurement(&self) -> Measurement;

    /// Evidence that an enclave with [`Platform::measurement`] runs here and chose `report_data`.
    ///
    /// # Errors
    /// [`PlatformError`] if the platform cannot produce evidence.
    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, PlatformError>;

    /// The sealing key: only an enclave with the same measurement on the same platform gets the
    /// same key.
    fn sealing_key(&self) -> AesKey;

    /// The key that signs this platform's simulated evidence, for a simulated platform: enclaves
    /// on it trust simulated evidence from this key alone. None for real hardware.
    fn simulation_key(&self) -> Option<afallon_crypto::EcdsaVerifyingKey> {
        None
    }

    /// Seals `payload`, labelled `label` (what it holds), so that only an enclave with the same
    /// measurement on the same platform opens it ([`sealing`]'s format under
    /// [`Platform::sealing_key`] unless the platform seals in a way of its own).
    ///
    /// # Errors
    /// [`SealError`] if the platform cannot seal: the caller must then keep nothing that depends
    /// on the blob being stored.
    fn seal(&self, label: &str, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        sealing::seal(&self.sealing_key(), label, payload)
    }

    /// Opens a blob that [`Platform::seal`] made with the label `label`.
    ///
    /// # Errors
    /// [`SealError`] if the blob was sealed by another enclave or platform, altered, or holds
    /// another label.
    fn unseal(&self, label: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        sealing::unseal(&self.sealing_key(), label, blob)
    }
}
