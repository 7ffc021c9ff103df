//! `sgx-epid`: an SGX enclave's EPID quote as Intel's Attestation Service (IAS) verified it. The
//! evidence is wire spec §4.2's `proofData` object: the report IAS signed (`verification_report`,
//! verbatim), its RSA-SHA256 signature (`ias_report_signature`, base64) and the signing
//! certificate chain (`ias_report_signing_certificate`, PEM). Checked here: the chain up to
//! Intel's Attestation Report Signing CA, the signature over the exact report bytes, the report's
//! date, the quote's status, and the enclave's identity from the quote body.

use afallon_crypto::{VendorAlgorithm, pem, verify_vendor_signature};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use super::x509::{VendorCert, verify_chain};
use super::{UnixTime, Verifier, VerifyError, parse_utc};
use crate::evidence::{
    EvidenceKind, Measurement, ReportData, SgxSigner, TcbStatus, VerifiedEvidence,
};

/// Intel's "SGX Attestation Report Signing CA" (valid 2016-11-14 to 2049-12-31).
const INTEL_ROOT: &str = include_str!("roots/intel-sgx-attestation-report-signing-ca.pem");

/// An SGX quote body: a 48-byte header, then the enclave's 384-byte report body.
const QUOTE_BODY_LEN: usize = 432;
const REPORT_BODY: usize = 48;

/// Verifies IAS reports under a pinned root: Intel's, unless told otherwise.
pub struct SgxEpidVerifier {
    root: VendorCert,
}

impl SgxEpidVerifier {
    /// The verifier that trusts Intel's Attestation Report Signing CA.
    ///
    /// # Panics
    /// Never: the built-in root is a valid certificate (a test reads it).
    pub fn intel() -> Self {
        Self::with_root_pem(INTEL_ROOT).expect("the built-in Intel root parses")
    }

    /// A verifier that trusts `root_pem` instead (for tests, and for a root Intel replaces).
    ///
    /// # Errors
    /// [`VerifyError::MalformedCertificate`] if it is not one PEM certificate.
    pub fn with_root_pem(root_pem: &str) -> Result<Self, VerifyError> {
        let malformed = VerifyError::MalformedCertificate { index: 0, what: "not PEM" };
        let block = pem::decode(root_pem).map_err(|_| malformed)?;
        Ok(Self { root: VendorCert::from_der(&block.der, 0)? })
    }
}

impl std::fmt::Debug for SgxEpidVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SgxEpidVerifier").finish_non_exhaustive()
    }
}

/// Wire spec §4.2's `proofData` for IAS.
#[derive(Deserialize)]
struct Proof {
    verification_report: String,
    ias_report_signature: String,
    ias_report_signing_certificate: String,
}

/// The fields of an IAS report that matter here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    timestamp: String,
    isv_enclave_quote_status: String,
    isv_enclave_quote_body: String,
    #[serde(default, rename = "advisoryIDs")]
    advisory_ids: Vec<String>,
}

impl Verifier for SgxEpidVerifier {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::SgxEpid
    }

    fn verify(&self, evidence: &[u8], at: UnixTime) -> Result<VerifiedEvidence, VerifyError> {
        let proof: Proof = serde_json::from_slice(evidence)
            .map_err(|_| VerifyError::Malformed("not an IAS proofData object"))?;
        let blocks = pem::decode_all(&proof.ias_report_signing_certificate).map_err(|_| {
            VerifyError::MalformedCertificate { index: 0, what: "the signing chain is not PEM" }
        })?;
        let chain = blocks
            .iter()
            .enumerate()
            .map(|(index, block)| VendorCert::from_der(&block.der, index))
            .collect::<Result<Vec<_>, _>>()?;
        let signer = verify_chain(&chain, &self.root, at)?;
        let signature = BASE64
            .decode(proof.ias_report_signature.trim())
            .map_err(|_| VerifyError::Malformed("ias_report_signature is not base64"))?;
        verify_vendor_signature(
            VendorAlgorithm::RsaPkcs1Sha256,
            signer.public_key(),
            proof.verification_report.as_bytes(),
            &signature,
        )
        .map_err(|_| VerifyError::BadSignature)?;

        let report: Report = serde_json::from_str(&proof.verification_report)
            .map_err(|_| VerifyError::Malformed("the IAS report is not its JSON"))?;
        let issued = parse_utc(&report.timestamp)
            .ok_or(VerifyError::Malformed("the IAS report's timestamp"))?;
        if issued > at.0 {
            return Err(VerifyError::ReportFromTheFuture);
        }
        let tcb_status = quote_status(&report.isv_enclave_quote_status)?;
        let body = BASE64
            .decode(&report.isv_enclave_quote_body)
            .map_err(|_| VerifyError::Malformed("isvEnclaveQuoteBody is not base64"))?;
        let body: &[u8; QUOTE_BODY_LEN] = body
            .get(..QUOTE_BODY_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(VerifyError::Malformed("isvEnclaveQuoteBody is short"))?;
        if is_debug(body) {
            return Err(VerifyError::DebugEnclave);
        }
        let (measurement, report_data, signer) = enclave_identity(body);
        Ok(VerifiedEvidence {
            kind: EvidenceKind::SgxEpid,
            measurement,
            report_data,
            tcb_status,
            advisories: report.advisory_ids,
            sgx_signer: Some(signer),
            simulation_key: None,
            snp_tcb: None,
            tdx: None,
            issued_at: Some(issued),
        })
    }
}

/// The TCB status an IAS quote status stands for, or the refusal of a quote IAS did not accept.
fn quote_status(status: &str) -> Result<TcbStatus, VerifyError> {
    Ok(match status {
        "OK" => TcbStatus::UpToDate,
        "SW_HARDENING_NEEDED" => TcbStatus::SwHardeningNeeded,
        "CONFIGURATION_NEEDED" => TcbStatus::ConfigurationNeeded,
        "CONFIGURATION_AND_SW_HARDENING_NEEDED" => TcbStatus::ConfigurationAndSwHardeningNeeded,
        "GROUP_OUT_OF_DATE" => TcbStatus::OutOfDate,
        // GROUP_REVOKED, SIGNATURE_INVALID, SIGNATURE_REVOKED, KEY_REVOKED, SIGRL_VERSION_MISMATCH
        // and anything IAS may add: IAS did not vouch for the quote.
        other => return Err(VerifyError::QuoteRefused(other.chars().take(64).collect())),
    })
}

/// Whether the quoted enclave runs in debug mode (ATTRIBUTES.FLAGS bit 1, at 48 in the report
/// body): its memory is open to the host.
fn is_debug(body: &[u8; QUOTE_BODY_LEN]) -> bool {
    body[REPORT_BODY + 48] & 0x02 != 0
}

/// MRENCLAVE, REPORTDATA and the signer identity of an SGX quote body (the report body's
/// layout: MRENCLAVE at 64, MRSIGNER at 128, ISVPRODID at 256, ISVSVN at 258, REPORTDATA at
/// 320).
fn enclave_identity(body: &[u8; QUOTE_BODY_LEN]) -> (Measurement, ReportData, SgxSigner) {
    let report = &body[REPORT_BODY..];
    let array = |at: usize| -> [u8; 32] {
        let mut out = [0; 32];
        out.copy_from_slice(&report[at..at + 32]);
        out
    };
    let u16_at = |at: usize| u16::from_le_bytes([report[at], report[at + 1]]);
    let mut report_data = [0; 64];
    report_data.copy_from_slice(&report[320..384]);
    let signer =
        SgxSigner { mr_signer: array(128), isv_prod_id: u16_at(256), isv_svn: u16_at(258) };
    (Measurement::from(array(64)), ReportData(report_data), signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_enclaves_are_told_apart() {
        let mut body = [0; QUOTE_BODY_LEN];
        body[REPORT_BODY + 48] = 0x05;
        assert!(!is_debug(&body));
        body[REPORT_BODY + 48] = 0x07;
        assert!(is_debug(&body));
    }

    #[test]
    fn the_built_in_root_is_intel_s() {
        let verifier = SgxEpidVerifier::intel();
        assert_eq!(verifier.root.validity(), (1_479_137_851, 2_524_607_999));
    }
}
