//! afallon's crypto suite: every primitive the EEA Off-Chain Trusted Compute wire uses, behind
//! types that say what they are for.
//!
//! | Purpose | Type | Backend |
//! |---|---|---|
//! | Session-key transport (RSA-OAEP-3072, SHA-1 or SHA-256) | [`RsaPrivateKey`], [`RsaPublicKey`] | aws-lc-rs |
//! | Data encryption (AES-256-GCM, three conventions) | [`AesKey`], [`Iv`] | aws-lc-rs |
//! | Signatures (secp256k1 ECDSA on SHA-256 digests) | [`EcdsaSigningKey`], [`EcdsaVerifyingKey`], [`EcdsaSignature`] | libsecp256k1 (secp256k1) |
//! | Key agreement between enclaves (secp256k1 ECDH, then HKDF) | [`EcdhSecret`], [`EcdhPublicKey`] | libsecp256k1 (secp256k1) |
//! | Hashing | [`sha256()`], [`Sha256`], [`Sha256Digest`] | sha2 |
//! | Key derivation (HKDF-SHA256) | [`derive_aes_key`] | aws-lc-rs |
//! | Vendors' signatures on attestation evidence (RSA PKCS#1 and PSS, ECDSA P-256 and P-384), verification only | [`verify_vendor_signature`] | aws-lc-rs |
//! | Key formats (SPKI/PKCS#1 PEM and DER) | [`pem`] and `from_pem`/`to_pem` on the key types | own DER code |
//!
//! What this crate does not do: it knows nothing of JSON, hex or base64 on the wire, of work
//! orders or of files and sockets. Wire encodings live in `afallon-proto`; this crate takes and
//! gives bytes and typed keys.
//!
//! Private keys ([`RsaPrivateKey`], [`EcdsaSigningKey`], [`EcdhSecret`], [`AesKey`]) cannot be printed, are not
//! `Clone`, have no getters for their secret material and are zeroized on drop. The only way their
//! bytes leave is the explicitly named `*_for_sealing` export, and an AES key leaves only wrapped
//! under RSA ([`RsaPublicKey::wrap_key`]).
//!
//! ```
//! use afallon_crypto::{AesKey, EcdsaSigningKey, Iv, OaepHash, RsaPrivateKey, sha256};
//!
//! // A worker's keys.
//! let encryption_key = RsaPrivateKey::generate()?;
//! let signing_key = EcdsaSigningKey::generate()?;
//!
//! // A requester wraps a session key for the worker and encrypts a message.
//! let session_key = AesKey::generate()?;
//! let iv = Iv::generate()?;
//! let wrapped = encryption_key.public_key().wrap_key(OaepHash::Sha1, &session_key)?;
//! let sealed = session_key.seal(&iv, b"Hello")?;
//!
//! // The worker unwraps it, decrypts and signs a digest of the answer.
//! let unwrapped = encryption_key.unwrap_key(OaepHash::Sha1, &wrapped)?;
//! assert_eq!(unwrapped.open(&iv, &sealed)?, b"Hello");
//! let signature = signing_key.sign_digest(&sha256(b"RESULT: Hello"));
//! signing_key.verifying_key().verify_digest(&sha256(b"RESULT: Hello"), &signature)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod aes_gcm;
mod der;
mod ecdh;
mod ecdsa;
mod kdf;
pub mod pem;
mod random;
mod rsa;
mod sha256;
mod vendor;

pub use aes_gcm::{AesGcmError, AesKey, IV_LEN, Iv, KEY_LEN, TAG_LEN};
pub use ecdh::{EcdhPublicKey, EcdhSecret};
pub use ecdsa::{EcdsaSignature, EcdsaSigningKey, EcdsaVerifyingKey, SignatureError};
pub use kdf::derive_aes_key;
pub use random::{RandomError, fill_random, random_array};
pub use rsa::{OaepHash, RsaError, RsaPrivateKey, RsaPublicKey};
pub use sha256::{Sha256, Sha256Digest, sha256};
pub use vendor::{VendorAlgorithm, VendorSignatureError, verify_vendor_signature};

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No complete, well-formed PEM block was found.
    #[error("malformed PEM")]
    MalformedPem,
    /// The PEM block has a label this key type does not read.
    #[error("unexpected PEM label {0:?}")]
    UnexpectedPemLabel(String),
    /// The DER inside is not well formed.
    #[error("malformed DER")]
    MalformedDer,
    /// The key is for another algorithm (an RSA key where an EC key was expected, say).
    #[error("key is for another algorithm")]
    UnexpectedAlgorithm,
    /// An EC key on a curve other than secp256k1.
    #[error("EC key is not on secp256k1")]
    UnsupportedCurve,
    /// An RSA key of a size this suite does not use.
    #[error("RSA key of {0} bits is not supported (2048 to 4096)")]
    UnsupportedKeySize(usize),
    /// The key material itself is invalid (a point off the curve, a bad modulus).
    #[error("invalid key")]
    InvalidKey,
}
