//! Vendors' certificate chains: each certificate signed by the next, the last by a root the
//! verifier pins, each valid at the time of verification. Only the algorithms vendors use are
//! known; signatures are checked with `afallon_crypto::verify_vendor_signature`.

use afallon_crypto::{VendorAlgorithm, verify_vendor_signature};
use x509_cert::Certificate;
use x509_cert::der::Decode as _;
use x509_cert::der::oid::ObjectIdentifier as Oid;

use super::{UnixTime, VerifyError};

const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
const RSASSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
/// SHA-384's OID as DER content bytes: a PSS certificate must name it in its parameters.
const SHA384_OID_DER: &[u8] = &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];

/// The longest chain below the root a vendor uses, and more.
const MAX_CHAIN: usize = 4;

/// A parsed certificate and the DER bytes its signature covers.
#[derive(Clone)]
pub(crate) struct VendorCert {
    der: Vec<u8>,
    cert: Certificate,
}

impl VendorCert {
    /// Parses one DER certificate, at `index` in its chain (for errors).
    pub(crate) fn from_der(der: &[u8], index: usize) -> Result<Self, VerifyError> {
        let malformed = |what| VerifyError::MalformedCertificate { index, what };
        let cert = Certificate::from_der(der).map_err(|_| malformed("not DER X.509"))?;
        tbs_bytes(der).ok_or_else(|| malformed("no tbsCertificate"))?;
        Ok(Self { der: der.to_vec(), cert })
    }

    /// The bits of its `subjectPublicKey` (PKCS#1 for RSA, the point for EC).
    pub(crate) fn public_key(&self) -> &[u8] {
        self.cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes()
    }

    /// The value (the content of `extnValue`) of its extension `oid`, if it has it.
    pub(crate) fn extension(&self, oid: &str) -> Option<&[u8]> {
        let oid = Oid::new(oid).ok()?;
        let extensions = self.cert.tbs_certificate.extensions.as_ref()?;
        extensions.iter().find(|e| e.extn_id == oid).map(|e| e.extn_value.as_bytes())
    }

    /// Whether its basic constraints make it a certificate authority (`cA` TRUE).
    fn is_ca(&self) -> bool {
        matches!(self.extension("2.5.29.19"), Some([0x30, _, 0x01, 0x01, 0xff, ..]))
    }

    /// Whether `self` names `issuer`'s subject as its issuer.
    pub(crate) fn issued_by_name(&self, issuer: &VendorCert) -> bool {
        self.cert.tbs_certificate.issuer == issuer.cert.tbs_certificate.subject
    }

    /// Whether `self` is signed by `issuer`'s key.
    fn signed_by(&self, issuer: &VendorCert, index: usize) -> Result<bool, VerifyError> {
        let malformed = |what| VerifyError::MalformedCertificate { index, what };
        let algorithm = &self.cert.signature_algorithm;
        let algorithm = match algorithm.oid {
            SHA256_WITH_RSA => VendorAlgorithm::RsaPkcs1Sha256,
            ECDSA_WITH_SHA256 => VendorAlgorithm::EcdsaP256Sha256Der,
            ECDSA_WITH_SHA384 => VendorAlgorithm::EcdsaP384Sha384Der,
            RSASSA_PSS => {
                let parameters = algorithm.parameters.as_ref().map(|p| p.value()).unwrap_or(&[]);
                if !parameters.windows(SHA384_OID_DER.len()).any(|w| w == SHA384_OID_DER) {
                    return Err(malformed("RSA-PSS without SHA-384"));
                }
                VendorAlgorithm::RsaPssSha384
            }
            _ => return Err(malformed("unknown signature algorithm")),
        };
        let signature = self.cert.signature.as_bytes().ok_or_else(|| malformed("signature"))?;
        let tbs = tbs_bytes(&self.der).ok_or_else(|| malformed("no tbsCertificate"))?;
        Ok(verify_vendor_signature(algorithm, issuer.public_key(), tbs, signature).is_ok())
    }

    /// Its validity period, in seconds since the epoch.
    pub(crate) fn validity(&self) -> (u64, u64) {
        let validity = &self.cert.tbs_certificate.validity;
        (
            validity.not_before.to_unix_duration().as_secs(),
            validity.not_after.to_unix_duration().as_secs(),
        )
    }

    fn check_time(&self, index: usize, at: UnixTime) -> Result<(), VerifyError> {
        let (not_before, not_after) = self.validity();
        if at.0 < not_before || at.0 > not_after {
            return Err(VerifyError::CertificateExpired { index, at: at.0, not_before, not_after });
        }
        Ok(())
    }
}

/// Checks `chain` (the evidence's signer first; the root may end it or not) up to `root`, all at
/// `at`; returns the signer's certificate.
pub(crate) fn verify_chain<'c>(
    chain: &'c [VendorCert],
    root: &VendorCert,
    at: UnixTime,
) -> Result<&'c VendorCert, VerifyError> {
    let chain = match chain.split_last() {
        // A chain that ends with the root: the root is the pinned one or nothing.
        Some((last, rest)) if last.der == root.der && !rest.is_empty() => rest,
        _ => chain,
    };
    let leaf = chain.first().ok_or(VerifyError::MalformedCertificate { index: 0, what: "none" })?;
    // Vendors' chains are short (IAS: one certificate; AMD: two): a long one is only work.
    if chain.len() > MAX_CHAIN {
        return Err(VerifyError::MalformedCertificate { index: MAX_CHAIN, what: "chain too long" });
    }
    let not_a_ca = |index| VerifyError::MalformedCertificate {
        index,
        what: "it issues certificates and is no certificate authority",
    };
    for (index, cert) in chain.iter().enumerate() {
        cert.check_time(index, at)?;
        let issuer = match chain.get(index + 1) {
            Some(issuer) => issuer,
            None if !cert.issued_by_name(root) => return Err(VerifyError::UntrustedRoot),
            None => root,
        };
        if !issuer.is_ca() {
            return Err(not_a_ca(index + 1));
        }
        if !cert.signed_by(issuer, index)? {
            return Err(VerifyError::CertificateSignature { index });
        }
    }
    root.check_time(chain.len(), at)?;
    Ok(leaf)
}

/// The whole `tbsCertificate` element (tag, length and content) inside a DER certificate.
fn tbs_bytes(der: &[u8]) -> Option<&[u8]> {
    let (_, outer) = element(der)?;
    let (tbs, _) = element(outer)?;
    Some(tbs)
}

/// Splits one DER SEQUENCE off `bytes`: returns (the whole element, its content).
fn element(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        len @ 0..=0x7f => (usize::from(len), rest),
        0x81..=0x84 => {
            let (len_bytes, rest) = rest.split_at_checked(usize::from(first & 0x7f))?;
            let len = len_bytes.iter().fold(0_usize, |len, &b| (len << 8) | usize::from(b));
            (len, rest)
        }
        _ => return None,
    };
    let content = rest.get(..len)?;
    let header = bytes.len() - rest.len();
    Some((&bytes[..header + len], content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_elements_are_split_exactly() {
        assert_eq!(element(&[0x30, 2, 1, 2, 9]), Some((&[0x30, 2, 1, 2][..], &[1, 2][..])));
        let long = [&[0x30, 0x81, 3][..], &[7, 8, 9]].concat();
        assert_eq!(
            element(&long).map(|(all, content)| (all.len(), content)),
            Some((6, &[7, 8, 9][..]))
        );
        for bad in [&[][..], &[0x31, 0], &[0x30, 5, 1], &[0x30, 0x85, 0, 0, 0, 0, 1], &[0x30, 0x81]]
        {
            assert_eq!(element(bad), None, "{bad:?}");
        }
    }
}
