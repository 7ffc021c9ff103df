//! `sgx-dcap`: an SGX enclave's ECDSA quote (v3 or v4), its PCK certificate chained to Intel's
//! SGX Root CA, checked with dcap-qvl against the collateral for its platform
//! ([`DcapVerifier::sgx`]): measurement (MRENCLAVE), signer (MRSIGNER, ISVPRODID, ISVSVN),
//! report data, TCB status and advisories.

use dcap_qvl::verify::VerifiedReport;

use super::VerifyError;
use super::dcap::tcb_status;
pub use super::dcap::{Collateral, CollateralCache, DcapVerifier, Tee};
use crate::evidence::{EvidenceKind, Measurement, ReportData, SgxSigner, VerifiedEvidence};

/// What a verified SGX quote establishes.
pub(super) fn evidence(verified: VerifiedReport) -> Result<VerifiedEvidence, VerifyError> {
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
        issued_at: None,
    })
}
