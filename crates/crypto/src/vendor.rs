//! Signatures made by hardware vendors (Intel, AMD) over attestation evidence, collateral and
//! their certificates: verification only, with the algorithms those documents use.
//!
//! Keys come as the bits of a certificate's `subjectPublicKey`: an RSA key as PKCS#1
//! `RSAPublicKey` DER, an EC key as its uncompressed point.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

/// A signature algorithm of vendor documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VendorAlgorithm {
    /// RSA PKCS#1 v1.5 with SHA-256 (Intel's IAS reports and their certificates).
    RsaPkcs1Sha256,
    /// RSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt (AMD's ARK and ASK certificates).
    RsaPssSha384,
    /// ECDSA on P-256 with SHA-256, the signature DER-encoded (Intel's PCK certificates).
    EcdsaP256Sha256Der,
    /// ECDSA on P-384 with SHA-384, the signature DER-encoded.
    EcdsaP384Sha384Der,
    /// ECDSA on P-384 with SHA-384, the signature as r ‖ s, 48 big-endian bytes each (SEV-SNP
    /// reports, once their little-endian fields are turned around).
    EcdsaP384Sha384Fixed,
}

impl VendorAlgorithm {
    fn backend(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::RsaPkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::RsaPssSha384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::EcdsaP256Sha256Der => &signature::ECDSA_P256_SHA256_ASN1,
            Self::EcdsaP384Sha384Der => &signature::ECDSA_P384_SHA384_ASN1,
            Self::EcdsaP384Sha384Fixed => &signature::ECDSA_P384_SHA384_FIXED,
        }
    }
}

/// A vendor signature that does not verify (or a key that is not one of the algorithm's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the vendor signature does not verify")]
pub struct VendorSignatureError;

/// Verifies `signature` over `message` (hashed by the algorithm) under `public_key`.
///
/// # Errors
/// [`VendorSignatureError`] if it does not verify, or the key or signature is malformed.
pub fn verify_vendor_signature(
    algorithm: VendorAlgorithm,
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), VendorSignatureError> {
    UnparsedPublicKey::new(algorithm.backend(), public_key)
        .verify(message, signature)
        .map_err(|_| VendorSignatureError)
}
