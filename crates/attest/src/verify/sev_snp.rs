//! `sev-snp`: an AMD SEV-SNP guest's attestation report (1,184 bytes, version 2 or later) with
//! the VCEK that signed it. Checked here: the VCEK chained through the product's ASK to its ARK
//! (Milan, Genoa; built in and pinned), every certificate valid at the time of verification, the
//! VCEK made for this chip (its hwID is the report's CHIP_ID) at the report's TCB (its SPL
//! extensions are the REPORTED_TCB), and the report's ECDSA P-384 signature.
//!
//! The evidence is afallon's JSON form: `{"report": base64, "vcek": base64 DER}`.

use afallon_crypto::{VendorAlgorithm, pem, verify_vendor_signature};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use super::x509::{VendorCert, verify_chain};
use super::{UnixTime, Verifier, VerifyError};
use crate::evidence::{EvidenceKind, Measurement, ReportData, SnpTcb, TcbStatus, VerifiedEvidence};

const REPORT_LEN: usize = 1184;
/// The signed part of a report: everything before its signature.
const SIGNED_LEN: usize = 0x2a0;
/// The guest POLICY's DEBUG bit.
const POLICY_DEBUG: u64 = 1 << 19;
/// `SIGNATURE_ALGO` 1: ECDSA P-384 with SHA-384.
const ECDSA_P384_SHA384: u32 = 1;

/// AMD's roots, built in: (ARK, ASK) of each product.
const PRODUCTS: [(&str, &str, &str); 2] = [
    ("Milan", include_str!("roots/amd-milan-ark.pem"), include_str!("roots/amd-milan-ask.pem")),
    ("Genoa", include_str!("roots/amd-genoa-ark.pem"), include_str!("roots/amd-genoa-ask.pem")),
];

/// Verifies SEV-SNP reports under AMD's built-in roots.
pub struct SevSnpVerifier {
    products: Vec<(&'static str, VendorCert, VendorCert)>,
}

impl std::fmt::Debug for SevSnpVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.products.iter().map(|(name, ..)| *name).collect();
        f.debug_struct("SevSnpVerifier").field("products", &names).finish()
    }
}

impl SevSnpVerifier {
    /// The verifier that trusts AMD's ARKs of Milan and Genoa.
    ///
    /// # Panics
    /// Never: the built-in certificates are valid (a test reads them).
    pub fn amd() -> Self {
        let cert = |text: &str| {
            let block = pem::decode(text).expect("a built-in AMD certificate");
            VendorCert::from_der(&block.der, 0).expect("a built-in AMD certificate")
        };
        let products =
            PRODUCTS.iter().map(|(name, ark, ask)| (*name, cert(ark), cert(ask))).collect();
        Self { products }
    }

    /// A verifier trusting `ark_pem` and `ask_pem` as one product's roots instead (for tests).
    ///
    /// # Errors
    /// [`VerifyError::MalformedCertificate`] if either is not one PEM certificate.
    pub fn with_roots(ark_pem: &str, ask_pem: &str) -> Result<Self, VerifyError> {
        let cert = |text: &str, index| {
            let block = pem::decode(text)
                .map_err(|_| VerifyError::MalformedCertificate { index, what: "not PEM" })?;
            VendorCert::from_der(&block.der, index)
        };
        Ok(Self { products: vec![("custom", cert(ark_pem, 2)?, cert(ask_pem, 1)?)] })
    }
}

/// afallon's `sev-snp` evidence.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Snp {
    report: String,
    vcek: String,
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// A little-endian 72-byte signature component as 48 big-endian bytes, if it fits.
fn component(little_endian: &[u8]) -> Option<[u8; 48]> {
    let (low, high) = little_endian.split_at(48);
    if high.iter().any(|&b| b != 0) {
        return None;
    }
    let mut out = array::<48>(low, 0);
    out.reverse();
    Some(out)
}

/// The integer in a DER INTEGER that fits a byte.
fn small_integer(der: &[u8]) -> Option<u8> {
    match der {
        [0x02, 1, value] => Some(*value),
        [0x02, 2, 0, value] => Some(*value),
        _ => None,
    }
}

impl Verifier for SevSnpVerifier {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::SevSnp
    }

    fn verify(&self, evidence: &[u8], at: UnixTime) -> Result<VerifiedEvidence, VerifyError> {
        let snp: Snp = serde_json::from_slice(evidence)
            .map_err(|_| VerifyError::Malformed("not sev-snp evidence JSON"))?;
        let report = BASE64
            .decode(&snp.report)
            .map_err(|_| VerifyError::Malformed("the report is not base64"))?;
        if report.len() != REPORT_LEN {
            return Err(VerifyError::Malformed("the report is not 1184 bytes"));
        }
        let version = u32::from_le_bytes(array(&report, 0));
        if version < 2 {
            return Err(VerifyError::UnsupportedVersion(version));
        }
        // A debug guest's memory is open to the host (SNP's debug commands).
        if u64::from_le_bytes(array(&report, 0x08)) & POLICY_DEBUG != 0 {
            return Err(VerifyError::DebugEnclave);
        }
        if u32::from_le_bytes(array(&report, 0x34)) != ECDSA_P384_SHA384 {
            return Err(VerifyError::Malformed("the report's signature algorithm"));
        }
        let vcek = BASE64
            .decode(&snp.vcek)
            .map_err(|_| VerifyError::Malformed("the VCEK is not base64"))?;
        let vcek = VendorCert::from_der(&vcek, 0)?;

        // The VCEK up to its product's ARK.
        let (ark, ask) = self
            .products
            .iter()
            .find(|(_, _, ask)| vcek.issued_by_name(ask))
            .map(|(_, ark, ask)| (ark, ask))
            .ok_or(VerifyError::UntrustedRoot)?;
        let chain = [vcek, ask.clone()];
        let vcek = verify_chain(&chain, ark, at)?;

        // The VCEK is this chip's, at this TCB.
        let chip_id: [u8; 64] = array(&report, 0x1a0);
        let hw_id = vcek.extension("1.3.6.1.4.1.3704.1.4");
        let hw_id = match hw_id {
            Some([0x04, 0x40, id @ ..]) | Some(id) if id.len() == 64 => id,
            _ => return Err(VerifyError::Malformed("the VCEK has no hwID")),
        };
        if hw_id != chip_id {
            return Err(VerifyError::VcekMismatch("chip"));
        }
        let tcb = SnpTcb::from_bytes(array(&report, 0x180));
        for (oid, expected) in [
            ("1.3.6.1.4.1.3704.1.3.1", tcb.bootloader),
            ("1.3.6.1.4.1.3704.1.3.2", tcb.tee),
            ("1.3.6.1.4.1.3704.1.3.3", tcb.snp),
            ("1.3.6.1.4.1.3704.1.3.8", tcb.microcode),
        ] {
            if vcek.extension(oid).and_then(small_integer) != Some(expected) {
                return Err(VerifyError::VcekMismatch("TCB"));
            }
        }

        // The report's signature.
        let (r, s) = (component(&report[0x2a0..0x2e8]), component(&report[0x2e8..0x330]));
        let (Some(r), Some(s)) = (r, s) else { return Err(VerifyError::BadSignature) };
        let signature = [r, s].concat();
        verify_vendor_signature(
            VendorAlgorithm::EcdsaP384Sha384Fixed,
            vcek.public_key(),
            &report[..SIGNED_LEN],
            &signature,
        )
        .map_err(|_| VerifyError::BadSignature)?;

        let measurement: [u8; 48] = array(&report, 0x90);
        Ok(VerifiedEvidence {
            kind: EvidenceKind::SevSnp,
            measurement: Measurement::from(measurement),
            report_data: ReportData(array(&report, 0x50)),
            tcb_status: TcbStatus::Unrated,
            advisories: Vec::new(),
            sgx_signer: None,
            simulation_key: None,
            snp_tcb: Some(tcb),
            tdx: None,
            issued_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_roots_are_amd_s() {
        let verifier = SevSnpVerifier::amd();
        assert_eq!(verifier.products.len(), 2);
        for (_, ark, ask) in &verifier.products {
            assert!(ask.issued_by_name(ark));
        }
    }

    #[test]
    fn signature_components_turn_around() {
        let mut le = [0; 72];
        le[0] = 1;
        le[47] = 2;
        let be = component(&le).expect("fits");
        assert_eq!((be[0], be[47]), (2, 1));
        le[48] = 1;
        assert_eq!(component(&le), None);
    }
}
