//! `sgx-dcap`: an SGX enclave's ECDSA quote (v3 or v4), its PCK certificate chained to Intel's
//! SGX Root CA, checked with dcap-qvl against the collateral for its platform: measurement
//! (MRENCLAVE), signer (MRSIGNER, ISVPRODID, ISVSVN), report data, TCB status and advisories.

use std::sync::Arc;

pub use super::dcap::{Collateral, CollateralCache, Tee};
use super::dcap::{intel_sgx_root, tcb_status, verify_quote};
use super::{UnixTime, Verifier, VerifyError};
use crate::evidence::{EvidenceKind, Measurement, ReportData, SgxSigner, VerifiedEvidence};

/// Verifies SGX DCAP quotes with the collateral it is given, under Intel's SGX Root CA unless
/// told otherwise.
#[derive(Debug, Clone)]
pub struct SgxDcapVerifier {
    collateral: Arc<CollateralCache>,
    root: Vec<u8>,
}

impl SgxDcapVerifier {
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

impl Verifier for SgxDcapVerifier {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::SgxDcap
    }

    fn verify(&self, evidence: &[u8], at: UnixTime) -> Result<VerifiedEvidence, VerifyError> {
        let verified = verify_quote(evidence, Tee::Sgx, &self.collateral, &self.root, at)?;
        let report = verified.report.as_sgx().ok_or(VerifyError::Malformed("not an SGX quote"))?;
        Ok(VerifiedEvidence {
            kind: EvidenceKind::SgxDcap,
            measurement: Measurement::from(report.mr_enclave),
            report_data: ReportData(report.report_data),
            tcb_status: tcb_status(&verified.status)?,
            advisories: verified.advisory_ids,
            sgx_signer: Some(SgxSigner {
                mr_signer: report.mr_signer,
                isv_prod_id: report.isv_prod_id,
                isv_svn: report.isv_svn,
            }),
            simulation_key: None,
            snp_tcb: None,
            tdx: None,
        })
    }
}
