//! `tdx`: a TDX trust domain's quote (v4 or v5), checked with dcap-qvl against the collateral
//! for its platform ([`DcapVerifier::tdx`]): MRTD as the measurement, the RTMRs and launch
//! identities ([`TdxMeasurements`]), report data, TCB status and advisories.

use dcap_qvl::verify::VerifiedReport;

use super::VerifyError;
pub use super::dcap::DcapVerifier;
use super::dcap::tcb_status;
use crate::evidence::{EvidenceKind, Measurement, ReportData, TdxMeasurements, VerifiedEvidence};

/// What a verified TDX quote establishes.
pub(super) fn evidence(verified: VerifiedReport) -> Result<VerifiedEvidence, VerifyError> {
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
        issued_at: None,
    })
}
