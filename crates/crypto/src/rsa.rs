//! RSA-OAEP key transport: the worker's RSA-3072 encryption key, which wraps requesters' session
//! keys (wire spec §3.3).
//!
//! Avalon's wire suite is OAEP with SHA-1 and MGF1-SHA-1 ([`OaepHash::Sha1`], what OpenSSL and
//! PyCryptodome default to); OAEP with SHA-256 ([`OaepHash::Sha256`]) is offered too, chosen by the
//! worker's advertised `keyEncryptionAlgorithm`. aws-lc does the arithmetic in constant time.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use zeroize::Zeroizing;

use crate::aes_gcm::{AesKey, KEY_LEN};
use crate::der::{self, Reader, Spki};
use crate::{KeyError, pem};

/// The hash function inside OAEP padding (used for both the label hash and MGF1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OaepHash {
    /// SHA-1 with MGF1-SHA-1: Avalon's wire suite, `RSA-OAEP-3072` in worker records.
    Sha1,
    /// SHA-256 with MGF1-SHA-256.
    Sha256,
}

impl OaepHash {
    fn algorithm(self) -> &'static OaepAlgorithm {
        match self {
            Self::Sha1 => &OAEP_SHA1_MGF1SHA1,
            Self::Sha256 => &OAEP_SHA256_MGF1SHA256,
        }
    }
}

/// Why an RSA operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RsaError {
    /// The ciphertext is not exactly one modulus long (384 bytes for RSA-3072).
    #[error("RSA ciphertext size is invalid: expected {expected} bytes, got {actual}")]
    CiphertextLength {
        /// The modulus length in bytes.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// OAEP decoding failed: wrong key, wrong OAEP hash, or altered ciphertext.
    #[error("RSA-OAEP decryption failed")]
    Decryption,
    /// The plaintext under the OAEP padding was not a 32-byte key.
    #[error("the RSA-wrapped key is {0} bytes, expected {KEY_LEN}")]
    WrappedKeyLength(usize),
    /// Encryption failed (the plaintext does not fit the key).
    #[error("RSA-OAEP encryption failed")]
    Encryption,
    /// Key generation failed.
    #[error("RSA key generation failed")]
    KeyGeneration,
}

/// An RSA-3072 private key for OAEP decryption: a worker's (or a KME's) encryption key.
///
/// Cannot be printed, cloned or read out. The key material lives in aws-lc, which frees it with
/// `OPENSSL_cleanse` semantics when the key is dropped.
pub struct RsaPrivateKey {
    /// The same aws-lc key twice: once as OAEP decryptor, once for the sealing export.
    key: OaepPrivateDecryptingKey,
    private: PrivateDecryptingKey,
    public: RsaPublicKey,
}

impl RsaPrivateKey {
    /// The size of keys this type generates.
    pub const BITS: usize = 3072;

    /// Generates a fresh RSA-3072 key (e = 65537). Takes a few hundred milliseconds.
    ///
    /// # Errors
    /// [`RsaError::KeyGeneration`] if aws-lc fails.
    pub fn generate() -> Result<Self, RsaError> {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa3072)
            .map_err(|_| RsaError::KeyGeneration)?;
        Self::from_aws(key).ok_or(RsaError::KeyGeneration)
    }

    /// Reads an unencrypted PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY` PEM, as OpenSSL and
    /// PyCryptodome write them.
    ///
    /// # Errors
    /// [`KeyError`] for anything that is not an RSA private key of 2048 to 4096 bits.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::decode(text)?;
        let pkcs8 = match block.label.as_str() {
            "PRIVATE KEY" => Zeroizing::new(block.der),
            "RSA PRIVATE KEY" => Zeroizing::new(pkcs1_private_to_pkcs8(&block.der)),
            _ => return Err(KeyError::UnexpectedPemLabel(block.label)),
        };
        Self::from_pkcs8_der(&pkcs8)
    }

    /// Reads an unencrypted PKCS#8 DER private key.
    ///
    /// # Errors
    /// [`KeyError`] for anything that is not an RSA private key of 2048 to 4096 bits.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = PrivateDecryptingKey::from_pkcs8(der).map_err(|_| KeyError::InvalidKey)?;
        if !(2048..=4096).contains(&key.key_size_bits()) {
            return Err(KeyError::UnsupportedKeySize(key.key_size_bits()));
        }
        Self::from_aws(key).ok_or(KeyError::InvalidKey)
    }

    /// The PKCS#8 DER encoding, zeroized on drop. Only for sealing the key under a sealing key,
    /// which is the one way a private key may leave memory.
    pub fn to_pkcs8_der_for_sealing(&self) -> Option<Zeroizing<Vec<u8>>> {
        let der: Pkcs8V1Der<'static> = self.private.as_der().ok()?;
        Some(Zeroizing::new(der.as_ref().to_vec()))
    }

    fn from_aws(key: PrivateDecryptingKey) -> Option<Self> {
        let public = RsaPublicKey::from_aws(key.public_key()).ok()?;
        let oaep = OaepPrivateDecryptingKey::new(key.clone()).ok()?;
        Some(Self { key: oaep, private: key, public })
    }

    /// The public half.
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }

    /// The modulus length in bytes: the only valid ciphertext length.
    pub fn ciphertext_len(&self) -> usize {
        self.key.key_size_bytes()
    }

    /// Unwraps an AES-256 key that a requester wrapped with [`RsaPublicKey::wrap_key`].
    ///
    /// # Errors
    /// [`RsaError::CiphertextLength`] unless the ciphertext is exactly one modulus long,
    /// [`RsaError::Decryption`] when OAEP decoding fails, [`RsaError::WrappedKeyLength`] when the
    /// plaintext is not 32 bytes.
    pub fn unwrap_key(&self, hash: OaepHash, ciphertext: &[u8]) -> Result<AesKey, RsaError> {
        let expected = self.ciphertext_len();
        if ciphertext.len() != expected {
            return Err(RsaError::CiphertextLength { expected, actual: ciphertext.len() });
        }
        let mut out = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let plaintext = self
            .key
            .decrypt(hash.algorithm(), ciphertext, &mut out, None)
            .map_err(|_| RsaError::Decryption)?;
        AesKey::from_slice(plaintext).map_err(|_| RsaError::WrappedKeyLength(plaintext.len()))
    }
}

impl fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaPrivateKey").field("public", &self.public).finish_non_exhaustive()
    }
}

/// An RSA public key for OAEP encryption: a worker's advertised `encryptionKey`.
#[derive(Clone)]
pub struct RsaPublicKey {
    key: PublicEncryptingKey,
    spki_der: Vec<u8>,
}

impl RsaPublicKey {
    /// Reads a `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY` (PKCS#1) PEM.
    ///
    /// # Errors
    /// [`KeyError`] for malformed PEM or DER, another algorithm, or a size outside 2048 to 4096 bits.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::decode(text)?;
        match block.label.as_str() {
            "PUBLIC KEY" => Self::from_spki_der(&block.der),
            "RSA PUBLIC KEY" => {
                // Check that it is a well-formed RSAPublicKey before wrapping it.
                let mut fields = Reader::new(Reader::new(&block.der).read_last(der::TAG_SEQUENCE)?);
                fields.read(der::TAG_INTEGER)?;
                fields.read_last(der::TAG_INTEGER)?;
                Self::from_spki_der(&der::write_spki(
                    der::OID_RSA_ENCRYPTION,
                    (der::TAG_NULL, &[]),
                    &block.der,
                ))
            }
            _ => Err(KeyError::UnexpectedPemLabel(block.label)),
        }
    }

    /// Reads a DER SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// As [`RsaPublicKey::from_pem`].
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = Spki::parse(der)?;
        if spki.algorithm != der::OID_RSA_ENCRYPTION {
            return Err(KeyError::UnexpectedAlgorithm);
        }
        let key = PublicEncryptingKey::from_der(der).map_err(|_| KeyError::InvalidKey)?;
        Self::from_aws(key)
    }

    fn from_aws(key: PublicEncryptingKey) -> Result<Self, KeyError> {
        if !(2048..=4096).contains(&key.key_size_bits()) {
            return Err(KeyError::UnsupportedKeySize(key.key_size_bits()));
        }
        let spki: PublicKeyX509Der<'static> = key.as_der().map_err(|_| KeyError::InvalidKey)?;
        Ok(Self { spki_der: spki.as_ref().to_vec(), key })
    }

    /// The SubjectPublicKeyInfo PEM, byte-exact with OpenSSL's `PEM_write_bio_RSA_PUBKEY`.
    pub fn to_pem(&self) -> String {
        pem::encode("PUBLIC KEY", &self.spki_der)
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    /// Wraps an AES-256 key (a session key or a data key) under this public key.
    ///
    /// # Errors
    /// [`RsaError::Encryption`] if aws-lc fails.
    pub fn wrap_key(&self, hash: OaepHash, key: &AesKey) -> Result<Vec<u8>, RsaError> {
        let oaep =
            OaepPublicEncryptingKey::new(self.key.clone()).map_err(|_| RsaError::Encryption)?;
        let mut out = vec![0u8; oaep.ciphertext_size()];
        let len = oaep
            .encrypt(hash.algorithm(), key.secret_bytes(), &mut out, None)
            .map_err(|_| RsaError::Encryption)?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

impl PartialEq for RsaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}

impl Eq for RsaPublicKey {}

impl fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaPublicKey").field("bits", &self.bits()).finish_non_exhaustive()
    }
}

/// Wraps a PKCS#1 RSAPrivateKey into a PKCS#8 PrivateKeyInfo.
fn pkcs1_private_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    let mut algorithm_identifier = Vec::new();
    der::write_element(der::TAG_OID, der::OID_RSA_ENCRYPTION, &mut algorithm_identifier);
    der::write_element(der::TAG_NULL, &[], &mut algorithm_identifier);
    let mut body = Vec::with_capacity(pkcs1.len() + 32);
    der::write_element(der::TAG_INTEGER, &[0], &mut body);
    der::write_element(der::TAG_SEQUENCE, &algorithm_identifier, &mut body);
    der::write_element(der::TAG_OCTET_STRING, pkcs1, &mut body);
    let mut out = Vec::with_capacity(body.len() + 4);
    der::write_element(der::TAG_SEQUENCE, &body, &mut out);
    body.iter_mut().for_each(|b| *b = 0);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;

    /// One generated key shared by the tests: generation takes a few hundred milliseconds.
    fn key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::generate().expect("keygen"))
    }

    #[test]
    fn wrap_unwrap_both_hashes() {
        for hash in [OaepHash::Sha1, OaepHash::Sha256] {
            let session = AesKey::from_bytes([7; 32]);
            let wrapped = key().public_key().wrap_key(hash, &session).expect("wrap");
            assert_eq!(wrapped.len(), 384);
            let unwrapped = key().unwrap_key(hash, &wrapped).expect("unwrap");
            assert_eq!(unwrapped.secret_bytes(), session.secret_bytes());
        }
    }

    #[test]
    fn hash_mismatch_fails_to_decode() {
        let wrapped = key()
            .public_key()
            .wrap_key(OaepHash::Sha256, &AesKey::from_bytes([1; 32]))
            .expect("wrap");
        assert_eq!(key().unwrap_key(OaepHash::Sha1, &wrapped).err(), Some(RsaError::Decryption));
    }

    #[test]
    fn truncated_ciphertext_is_a_length_error() {
        let wrapped = key()
            .public_key()
            .wrap_key(OaepHash::Sha1, &AesKey::from_bytes([1; 32]))
            .expect("wrap");
        assert_eq!(
            key().unwrap_key(OaepHash::Sha1, &wrapped[..383]).err(),
            Some(RsaError::CiphertextLength { expected: 384, actual: 383 })
        );
    }

    #[test]
    fn public_pem_round_trips_byte_exact() {
        let pem = key().public_key().to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let parsed = RsaPublicKey::from_pem(&pem).expect("parse");
        assert_eq!(parsed.to_pem(), pem);
        assert_eq!(parsed.bits(), 3072);
    }

    #[test]
    fn pkcs1_public_key_is_accepted() {
        // The BIT STRING of an RSA SPKI holds the PKCS#1 RSAPublicKey.
        let spki = Spki::parse(key().public_key().spki_der()).expect("spki");
        let pkcs1 = pem::encode("RSA PUBLIC KEY", spki.key);
        assert_eq!(RsaPublicKey::from_pem(&pkcs1).expect("pkcs1"), *key().public_key());
    }

    #[test]
    fn private_key_round_trips_through_pkcs8() {
        let der = key().to_pkcs8_der_for_sealing().expect("export");
        let again = RsaPrivateKey::from_pkcs8_der(&der).expect("import");
        assert_eq!(again.public_key(), key().public_key());
        assert!(!format!("{:?}", key()).contains(&hex::encode(&der[..])));
    }
}
