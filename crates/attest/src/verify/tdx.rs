//! `tdx`: a TDX trust domain's quote (v4 or v5), checked with dcap-qvl against the collateral
//! for its platform: MRTD as the measurement, the RTMRs and launch identities
//! ([`TdxMeasurements`]), report data, TCB status and advisories.

use std::sync::Arc;

use super::dcap::{CollateralCache, Tee, intel_sgx_root, tcb_status, verify_quote};
use super::{UnixTime, Verifier, VerifyError};
use crate::evidence::{EvidenceKind, Measurement, ReportData, TdxMeasurements, VerifiedEvidence};

/// Verifies TDX quotes with the collateral it is given, under Intel's SGX Root CA unless told
/// otherwise.
#[derive(Debug, Clone)]
pub struct TdxVerifier {
    collateral: Arc<CollateralCache>,
    root: Vec<u8>,
}

impl TdxVerifier {
    /// A verifier with `collateral`, trusting Intel's SGX Root CA.
    pub fn new(collateral: Arc<CollateralCache>) -> Self {
        Self { collateral, root: intel_sgx_root() }
    }

    /// The same, trusting the root certificate `root_der` instead.
    #[must_use]
    pub fn with_root_der(mut self, root_der: Vec<u8>) -> Self {
        self.root = root_der;
        self
    }
}

impl Verifier for TdxVerifier {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::Tdx
    }

    fn verify(&self, evidence: &[u8], at: UnixTime) -> Result<VerifiedEvidence, VerifyError> {
        let verified = verify_quote(evidence, Tee::Tdx, &self.collateral, &self.root, at)?;
        let report = verified.report.as_td10().ok_or(VerifyError::Malformed("not a TDX quote"))?;
        Ok(VerifiedEvidence {
            kind: EvidenceKind::Tdx,
            measurement: Measurement::from(report.mr_td),
            report_data: ReportData(report.report_data),
            tcb_status: tcb_status(&verified.status)?,
            advisories: verified.advisory_ids,
            sgx_signer: None,
            simulation_key: None,
            snp_tcb: None,
            tdx: Some(TdxMeasurements {
                rtmrs: [report.rt_mr0, report.rt_mr1, report.rt_mr2, report.rt_mr3],
                mr_config_id: report.mr_config_id,
                mr_owner: report.mr_owner,
                mr_owner_config: report.mr_owner_config,
            }),
        })
    }
}
