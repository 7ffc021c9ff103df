//! The verification policy: which evidence is good enough.

use std::sync::Arc;

use afallon_crypto::EcdsaVerifyingKey;

use crate::evidence::{
    Evidence, EvidenceKind, Measurement, ReportData, SnpTcb, TcbStatus, VerifiedEvidence,
};
use crate::verify::sev_snp::SevSnpVerifier;
use crate::verify::sgx_epid::SgxEpidVerifier;
use crate::verify::sim::SimVerifier;
use crate::verify::{UnixTime, Verifier, VerifyError};

/// An SGX signer identity a policy accepts: MRSIGNER, the product, and the lowest security
/// version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AllowedSigner {
    mr_signer: [u8; 32],
    isv_prod_id: u16,
    min_isv_svn: u16,
}

/// What evidence a verifier accepts.
///
/// The default refuses simulated evidence and accepts no hardware evidence until the policy
/// names a measurement or an SGX signer (and, for TDX, the RTMRs; for SEV-SNP, a lowest TCB
/// version); it asks for an up-to-date TCB and refuses no advisory by name. Accepting simulated evidence takes
/// [`Policy::insecure_allow_simulation`].
#[derive(Debug, Clone)]
pub struct Policy {
    allow_simulation: bool,
    trusted_simulation_keys: Vec<EcdsaVerifyingKey>,
    allowed_measurements: Vec<Measurement>,
    allowed_signers: Vec<AllowedSigner>,
    minimum_tcb: TcbStatus,
    refused_advisories: Vec<String>,
    minimum_snp_tcb: Option<SnpTcb>,
    allowed_tdx_rtmrs: Vec<[[u8; 48]; 4]>,
    max_report_age: Option<u64>,
    sgx_epid: Arc<SgxEpidVerifier>,
    sev_snp: Arc<SevSnpVerifier>,
    #[cfg(feature = "dcap")]
    dcap: Option<(crate::verify::sgx_dcap::DcapVerifier, crate::verify::sgx_dcap::DcapVerifier)>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allow_simulation: false,
            trusted_simulation_keys: Vec::new(),
            allowed_measurements: Vec::new(),
            allowed_signers: Vec::new(),
            minimum_tcb: TcbStatus::UpToDate,
            refused_advisories: Vec::new(),
            minimum_snp_tcb: None,
            allowed_tdx_rtmrs: Vec::new(),
            max_report_age: None,
            sgx_epid: Arc::new(SgxEpidVerifier::intel()),
            sev_snp: Arc::new(SevSnpVerifier::amd()),
            #[cfg(feature = "dcap")]
            dcap: None,
        }
    }
}

impl Policy {
    /// The default policy: no simulation, any measurement, an up-to-date TCB.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts simulated evidence, which proves nothing about hardware. For development only.
    #[must_use]
    pub fn insecure_allow_simulation(mut self) -> Self {
        self.allow_simulation = true;
        self
    }

    /// Accepts simulated evidence only from this simulation key (repeatable). Without any, every
    /// simulation key is accepted once simulation is allowed.
    #[must_use]
    pub fn trust_simulation_key(mut self, key: EcdsaVerifyingKey) -> Self {
        self.trusted_simulation_keys.push(key);
        self
    }

    /// Accepts this measurement (repeatable). Without any measurement or signer, hardware
    /// evidence is refused ([`VerifyError::MeasurementNotPinned`]).
    #[must_use]
    pub fn allow_measurement(mut self, measurement: Measurement) -> Self {
        self.allowed_measurements.push(measurement);
        self
    }

    /// Accepts SGX enclaves signed by `mr_signer` as product `isv_prod_id` at security version
    /// `min_isv_svn` or later (repeatable): an alternative to naming each MRENCLAVE.
    #[must_use]
    pub fn allow_sgx_signer(
        mut self,
        mr_signer: [u8; 32],
        isv_prod_id: u16,
        min_isv_svn: u16,
    ) -> Self {
        self.allowed_signers.push(AllowedSigner { mr_signer, isv_prod_id, min_isv_svn });
        self
    }

    /// Accepts platforms whose TCB status is `minimum` or better (the default:
    /// [`TcbStatus::UpToDate`] only).
    #[must_use]
    pub fn minimum_tcb(mut self, minimum: TcbStatus) -> Self {
        self.minimum_tcb = minimum;
        self
    }

    /// Accepts SEV-SNP reports whose TCB version is `minimum` or later in every part (without
    /// it, SEV-SNP evidence is refused).
    #[must_use]
    pub fn minimum_snp_tcb(mut self, minimum: SnpTcb) -> Self {
        self.minimum_snp_tcb = Some(minimum);
        self
    }

    /// Accepts TDs whose RTMR0 to RTMR3 are `rtmrs` (repeatable). A TD is accepted only with
    /// allowed RTMRs: its MRTD measures only its firmware.
    #[must_use]
    pub fn allow_tdx_rtmrs(mut self, rtmrs: [[u8; 48]; 4]) -> Self {
        self.allowed_tdx_rtmrs.push(rtmrs);
        self
    }

    /// Refuses evidence that says it was made more than `seconds` before the time of
    /// verification (IAS reports; quotes and SNP reports carry no date).
    #[must_use]
    pub fn max_report_age(mut self, seconds: u64) -> Self {
        self.max_report_age = Some(seconds);
        self
    }

    /// Refuses platforms to which the advisory `id` (`INTEL-SA-00615`, ...) applies
    /// (repeatable).
    #[must_use]
    pub fn refuse_advisory(mut self, id: impl Into<String>) -> Self {
        self.refused_advisories.push(id.into());
        self
    }

    /// Verifies IAS evidence under `verifier` (another root) instead of Intel's.
    #[must_use]
    pub fn with_sgx_epid_verifier(mut self, verifier: SgxEpidVerifier) -> Self {
        self.sgx_epid = Arc::new(verifier);
        self
    }

    /// Verifies SGX DCAP and TDX quotes with `collateral` (without it, they are refused).
    #[cfg(feature = "dcap")]
    #[must_use]
    pub fn with_dcap_collateral(
        mut self,
        collateral: Arc<crate::verify::sgx_dcap::CollateralCache>,
    ) -> Self {
        self.dcap = Some((
            crate::verify::sgx_dcap::DcapVerifier::sgx(Arc::clone(&collateral)),
            crate::verify::tdx::DcapVerifier::tdx(collateral),
        ));
        self
    }

    /// Whether this policy accepts simulated evidence.
    pub fn allows_simulation(&self) -> bool {
        self.allow_simulation
    }

    /// Whether this policy accepts a worker with no evidence at all (as Avalon's simulation mode
    /// publishes): only when it accepts simulation from any key.
    pub fn allows_unattested(&self) -> bool {
        self.allow_simulation && self.trusted_simulation_keys.is_empty()
    }

    /// Verifies `evidence` as of `at` with the verifier of its kind, then checks what it proves
    /// against the policy and the report data the verified keys call for.
    ///
    /// # Errors
    /// [`VerifyError`] naming the first check that failed.
    pub fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &ReportData,
        at: UnixTime,
    ) -> Result<VerifiedEvidence, VerifyError> {
        let verified = match evidence.kind {
            EvidenceKind::Sim => {
                if !self.allow_simulation {
                    return Err(VerifyError::SimulationRefused);
                }
                let verified = SimVerifier.verify(&evidence.bytes, at)?;
                if !self.trusted_simulation_keys.is_empty()
                    && !verified
                        .simulation_key
                        .as_ref()
                        .is_some_and(|key| self.trusted_simulation_keys.contains(key))
                {
                    return Err(VerifyError::UntrustedSimulationKey);
                }
                verified
            }
            EvidenceKind::SgxEpid => self.sgx_epid.verify(&evidence.bytes, at)?,
            EvidenceKind::SgxDcap | EvidenceKind::Tdx => self.verify_dcap(evidence, at)?,
            EvidenceKind::SevSnp => self.sev_snp.verify(&evidence.bytes, at)?,
        };
        self.judge(&verified)?;
        if let (Some(max), Some(issued)) = (self.max_report_age, verified.issued_at) {
            let age = at.0.saturating_sub(issued);
            if age > max {
                return Err(VerifyError::ReportTooOld { age, max });
            }
        }
        if verified.report_data != *expected_report_data {
            return Err(VerifyError::ReportDataMismatch);
        }
        Ok(verified)
    }

    /// A DCAP quote (SGX or TDX), with the policy's collateral.
    fn verify_dcap(
        &self,
        evidence: &Evidence,
        at: UnixTime,
    ) -> Result<VerifiedEvidence, VerifyError> {
        #[cfg(feature = "dcap")]
        if let Some((sgx, tdx)) = &self.dcap {
            return match evidence.kind {
                EvidenceKind::Tdx => tdx.verify(&evidence.bytes, at),
                _ => sgx.verify(&evidence.bytes, at),
            };
        }
        let _ = at;
        Err(VerifyError::KindRefused(evidence.kind.name()))
    }

    /// Whether what verified evidence proves is good enough: TCB, advisories, identity.
    fn judge(&self, verified: &VerifiedEvidence) -> Result<(), VerifyError> {
        if verified.kind != EvidenceKind::Sim
            && self.allowed_measurements.is_empty()
            && self.allowed_signers.is_empty()
        {
            // Any code in a genuine TEE would pass: hardware evidence is trusted by what it
            // measures, which the policy must name.
            return Err(VerifyError::MeasurementNotPinned);
        }
        if let (Some(found), Some(minimum)) = (verified.tcb_status.rank(), self.minimum_tcb.rank())
            && found > minimum
        {
            return Err(VerifyError::TcbStatusRefused {
                found: verified.tcb_status,
                minimum: self.minimum_tcb,
            });
        }
        if let Some(found) = verified.snp_tcb {
            let minimum = self.minimum_snp_tcb.ok_or(VerifyError::SnpTcbFloorMissing)?;
            if !found.at_least(&minimum) {
                return Err(VerifyError::SnpTcbRefused { found, minimum });
            }
        }
        if let Some(tdx) = &verified.tdx
            && !self.allowed_tdx_rtmrs.contains(&tdx.rtmrs)
        {
            return Err(VerifyError::TdxRuntimeNotAllowed);
        }
        if let Some(refused) =
            verified.advisories.iter().find(|id| self.refused_advisories.contains(id))
        {
            return Err(VerifyError::AdvisoryRefused(refused.clone()));
        }
        if self.allowed_measurements.is_empty() && self.allowed_signers.is_empty() {
            // Simulation is trusted by its key.
            return Ok(());
        }
        if self.allowed_measurements.contains(&verified.measurement) {
            return Ok(());
        }
        let signer_allowed = verified.sgx_signer.is_some_and(|signer| {
            self.allowed_signers.iter().any(|allowed| {
                allowed.mr_signer == signer.mr_signer
                    && allowed.isv_prod_id == signer.isv_prod_id
                    && signer.isv_svn >= allowed.min_isv_svn
            })
        });
        match (signer_allowed, self.allowed_signers.is_empty()) {
            (true, _) => Ok(()),
            (false, true) => Err(VerifyError::MeasurementNotAllowed(verified.measurement)),
            (false, false) => Err(VerifyError::SignerNotAllowed),
        }
    }
}
