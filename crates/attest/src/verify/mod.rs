//! The verifiers: one module per evidence kind, each a pure function of the evidence bytes and
//! the time to verify at. No verifier reads a file, a clock or the network; what they trust
//! (a vendor's root certificate) is built in or given to them.

pub mod sgx_epid;
pub mod sim;
mod x509;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::evidence::{EvidenceKind, Measurement, TcbStatus, VerifiedEvidence};

/// A moment to verify at, in seconds since the Unix epoch: certificates and reports are checked
/// against it, never against a clock the verifier reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// The system clock's time (zero before the epoch).
    pub fn now() -> Self {
        Self(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }
}

/// A verifier of one kind of evidence.
pub trait Verifier: Send + Sync {
    /// The kind it verifies.
    fn kind(&self) -> EvidenceKind;

    /// Verifies `evidence` as of `at`: its form, its signatures up to the vendor's root, and
    /// the validity of everything it relies on at that time. Returns what it proves; whether
    /// that is good enough is the [`crate::Policy`]'s decision.
    ///
    /// # Errors
    /// [`VerifyError`] naming the check that failed.
    fn verify(&self, evidence: &[u8], at: UnixTime) -> Result<VerifiedEvidence, VerifyError>;
}

/// Why evidence was refused. Each variant names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The evidence is simulated and the policy does not allow simulation.
    #[error("simulated evidence is refused (simulation is not allowed by this policy)")]
    SimulationRefused,
    /// The policy does not accept this kind of evidence.
    #[error("evidence of kind {0} is not accepted by this policy")]
    KindRefused(&'static str),
    /// The evidence could not be decoded.
    #[error("malformed evidence: {0}")]
    Malformed(&'static str),
    /// The evidence is of a version this verifier does not know.
    #[error("unsupported evidence version {0}")]
    UnsupportedVersion(u32),
    /// The evidence's own signature does not verify.
    #[error("evidence signature is invalid")]
    BadSignature,
    /// Simulated evidence signed by a simulation key the policy does not trust.
    #[error("simulated evidence is signed by an untrusted simulation key")]
    UntrustedSimulationKey,
    /// A certificate could not be read.
    #[error("certificate {index} of the chain is malformed: {what}")]
    MalformedCertificate {
        /// Its place in the chain, the signer of the evidence first.
        index: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A certificate's signature does not verify under its issuer's key.
    #[error("certificate {index} of the chain is not signed by its issuer")]
    CertificateSignature {
        /// Its place in the chain, the signer of the evidence first.
        index: usize,
    },
    /// The chain does not end at the vendor's root this verifier trusts.
    #[error("the certificate chain does not lead to the trusted root")]
    UntrustedRoot,
    /// A certificate is not valid at the time of verification.
    #[error(
        "certificate {index} of the chain is not valid at {at} (valid {not_before} to {not_after})"
    )]
    CertificateExpired {
        /// Its place in the chain, the signer of the evidence first; the root last.
        index: usize,
        /// The time of verification, in seconds since the epoch.
        at: u64,
        /// Its validity's start.
        not_before: u64,
        /// Its validity's end.
        not_after: u64,
    },
    /// The report was made after the time of verification.
    #[error("the report is dated after the time of verification")]
    ReportFromTheFuture,
    /// The vendor's service refused the quote (IAS: a revoked or invalid quote).
    #[error("the quote's status is {0}")]
    QuoteRefused(String),
    /// The measured enclave is not one the policy allows.
    #[error("measurement {0:?} is not allowed")]
    MeasurementNotAllowed(Measurement),
    /// The enclave's signer, product or security version is not one the policy allows.
    #[error("the enclave's signer, product or security version is not allowed")]
    SignerNotAllowed,
    /// The platform's TCB status is below the policy's minimum.
    #[error("TCB status {found:?} is below the policy's minimum {minimum:?}")]
    TcbStatusRefused {
        /// What the evidence proves.
        found: TcbStatus,
        /// What the policy asks for at least.
        minimum: TcbStatus,
    },
    /// An advisory the policy refuses applies to the platform.
    #[error("advisory {0} applies to the platform and is refused by this policy")]
    AdvisoryRefused(String),
    /// The report data does not bind the keys being verified.
    #[error("report data does not bind the expected keys")]
    ReportDataMismatch,
}
