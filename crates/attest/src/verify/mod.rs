//! The verifiers: one module per evidence kind, each a pure function of the evidence bytes and
//! the time to verify at. No verifier reads a file, a clock or the network; what they trust
//! (a vendor's root certificate) is built in or given to them.

#[cfg(feature = "dcap")]
mod dcap;
pub mod sev_snp;
#[cfg(feature = "dcap")]
pub mod sgx_dcap;
pub mod sgx_epid;
pub mod sim;
#[cfg(feature = "dcap")]
pub mod tdx;
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
    /// The report is older than the policy allows.
    #[error("the report is {age} s old, more than the policy's {max} s")]
    ReportTooOld {
        /// Its age at the time of verification.
        age: u64,
        /// The policy's limit.
        max: u64,
    },
    /// The report was made after the time of verification.
    #[error("the report is dated after the time of verification")]
    ReportFromTheFuture,
    /// The enclave runs in debug mode: its memory is open to the host.
    #[error("the enclave runs in debug mode")]
    DebugEnclave,
    /// The vendor's service refused the quote (IAS: a revoked or invalid quote).
    #[error("the quote's status is {0}")]
    QuoteRefused(String),
    /// No collateral is at hand for the evidence's platform (its FMSPC).
    #[error("no collateral for platform {0}: import a collateral bundle")]
    NoCollateral(String),
    /// The collateral is not valid at the time of verification.
    #[error("the collateral is not valid at {at} (issued {issued}, next update {next_update})")]
    CollateralExpired {
        /// The time of verification.
        at: u64,
        /// When it was issued (the latest of its parts).
        issued: u64,
        /// When it must be replaced (the earliest of its parts).
        next_update: u64,
    },
    /// The quote verifier refused the evidence for a reason of its own.
    #[error("the quote was refused: {0}")]
    Refused(String),
    /// The measured enclave is not one the policy allows.
    #[error("measurement {0:?} is not allowed")]
    MeasurementNotAllowed(Measurement),
    /// Hardware evidence, and the policy names no measurement or signer: any code in a genuine
    /// TEE would pass.
    #[error("the policy names no measurement or signer to accept hardware evidence from")]
    MeasurementNotPinned,
    /// A TD's runtime measurements (RTMRs: its kernel, command line, application) are not ones
    /// the policy allows: MRTD alone measures only the TD's firmware.
    #[error("the TD's runtime measurements (RTMRs) are not allowed by the policy")]
    TdxRuntimeNotAllowed,
    /// SEV-SNP evidence, and the policy sets no lowest TCB version.
    #[error("the policy sets no lowest SEV-SNP TCB version (minimum_snp_tcb)")]
    SnpTcbFloorMissing,
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
    /// The VCEK was not made for this chip, or not at the report's TCB.
    #[error("the VCEK does not match the report's {0}")]
    VcekMismatch(&'static str),
    /// The SEV-SNP TCB version is below the policy's minimum.
    #[error("the SEV-SNP TCB version {found:?} is below the policy's minimum {minimum:?}")]
    SnpTcbRefused {
        /// What the report names.
        found: crate::evidence::SnpTcb,
        /// What the policy asks for at least.
        minimum: crate::evidence::SnpTcb,
    },
    /// The report data does not bind the keys being verified.
    #[error("report data does not bind the expected keys")]
    ReportDataMismatch,
}

/// Seconds since the epoch of a vendor's UTC timestamp, `YYYY-MM-DDTHH:MM:SS`, with optional
/// fractions (as IAS writes them) and an optional `Z` (as Intel's collateral does).
pub(crate) fn parse_utc(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let text = text.split('.').next()?;
    let number = |s: &str| -> Option<u64> {
        s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten()
    };
    let (date, time) = text.split_once('T')?;
    let mut date = date.split('-').map(number);
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let mut time = time.split(':').map(number);
    let (hour, minute, second) = (time.next()??, time.next()??, time.next()??);
    if date.next().is_some()
        || time.next().is_some()
        || !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from 1970-01-01 to the date (the civil-calendar algorithm, years from March).
    let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y / 400;
    let year_of_era = y % 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_read_as_utc() {
        assert_eq!(parse_utc("1970-01-01T00:00:00"), Some(0));
        assert_eq!(parse_utc("2023-10-18T09:01:15.022794"), Some(1_697_619_675));
        assert_eq!(parse_utc("2000-02-29T23:59:59"), Some(951_868_799));
        assert_eq!(parse_utc("2025-07-19T10:56:11Z"), Some(1_752_922_571));
        for bad in [
            "",
            "2023-10-18",
            "2023-13-01T00:00:00",
            "2023-10-18T24:00:00",
            "+023-1-1T0:0:0",
            "2023-10-18T09:01:15:00",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}
