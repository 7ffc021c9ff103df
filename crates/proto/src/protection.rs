//! Work-order protection on the wire (wire spec §3.3-§3.9): how session keys, the request hash,
//! data items and signatures are encoded in hex and base64, and the checks a worker and a
//! requester make. Both sides use these functions, so a requester and a worker cannot disagree on
//! an encoding.
//!
//! Encodings: keys, IVs and the encrypted request hash travel as upper-case hex (read in either
//! case, never with `0x`); data and signatures as padded base64; the encryption-key signature as
//! upper-case hex of DER.

use afallon_crypto::{
    AesGcmError, AesKey, EcdsaSignature, EcdsaSigningKey, EcdsaVerifyingKey, Iv, KeyError,
    OaepHash, RandomError, RsaError, RsaPrivateKey, RsaPublicKey, Sha256Digest, SignatureError,
    sha256,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::work_order::{DataItem, WorkOrderRequest};

/// Why protecting or checking a work order failed. Each variant names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtectionError {
    /// A hex field is not hex (odd length, a non-hex digit, or a `0x` prefix).
    #[error("{field} is not valid hex")]
    Hex {
        /// The field's wire name.
        field: &'static str,
    },
    /// A base64 field is not padded standard base64.
    #[error("{field} is not valid base64")]
    Base64 {
        /// The field's wire name.
        field: &'static str,
    },
    /// `sessionKeyIv` is missing or not 12 bytes.
    #[error("invalid session key IV: {0}")]
    SessionKeyIv(AesGcmError),
    /// The session key could not be unwrapped (wrong length, wrong key, altered).
    #[error("session key: {0}")]
    SessionKey(RsaError),
    /// The encrypted request hash did not decrypt: wrong session key or IV, or altered.
    #[error("decryption of the request hash failed: {0}")]
    RequestHashDecryption(AesGcmError),
    /// The request hash decrypted but differs from the one computed over the request.
    #[error("request hash mismatch: the request was tampered with")]
    RequestHashMismatch,
    /// The request hash matches, but the digest sealed with it is another request's: the request
    /// was altered where Avalon's request hash cannot see.
    #[error("the request differs from the one its requester sealed: it was tampered with")]
    RequestAltered,
    /// A verification key PEM could not be read.
    #[error("verification key: {0}")]
    VerificationKey(KeyError),
    /// A signature is malformed or does not verify.
    #[error("signature: {0}")]
    Signature(SignatureError),
    /// A data item's data or wrapped key did not decrypt.
    #[error("data item {index}: {source}")]
    DataDecryption {
        /// The item's index.
        index: i64,
        /// What AES-GCM said.
        source: AesGcmError,
    },
    /// A per-item data key could not be unwrapped.
    #[error("data item {index}: data key: {source}")]
    DataKey {
        /// The item's index.
        index: i64,
        /// What RSA said.
        source: RsaError,
    },
    /// A data item's plaintext does not hash to its `dataHash`.
    #[error("data item {index}: data hash verification failed")]
    DataHashMismatch {
        /// The item's index.
        index: i64,
    },
    /// Encryption failed.
    #[error("encryption failed: {0}")]
    Encryption(AesGcmError),
    /// Wrapping a key failed.
    #[error("key wrapping failed: {0}")]
    Wrap(RsaError),
    /// The random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Reads hex the way Avalon's enclave does: either case, even length, no `0x`.
///
/// # Errors
/// [`ProtectionError::Hex`] naming `field`.
pub fn decode_hex(field: &'static str, value: &str) -> Result<Vec<u8>, ProtectionError> {
    hex::decode(value).map_err(|_| ProtectionError::Hex { field })
}

/// Reads padded standard base64.
///
/// # Errors
/// [`ProtectionError::Base64`] naming `field`.
pub fn decode_base64(field: &'static str, value: &str) -> Result<Vec<u8>, ProtectionError> {
    BASE64.decode(value).map_err(|_| ProtectionError::Base64 { field })
}

/// Writes padded standard base64.
pub fn encode_base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// `encryptedSessionKey`: upper-case hex of the session key wrapped under the worker's key.
///
/// # Errors
/// [`ProtectionError::Wrap`] if RSA fails.
pub fn wrap_session_key(
    worker_key: &RsaPublicKey,
    hash: OaepHash,
    session_key: &AesKey,
) -> Result<String, ProtectionError> {
    worker_key.wrap_key(hash, session_key).map(hex::encode_upper).map_err(ProtectionError::Wrap)
}

/// Unwraps `encryptedSessionKey` with the worker's key.
///
/// # Errors
/// [`ProtectionError::Hex`] or [`ProtectionError::SessionKey`].
pub fn unwrap_session_key(
    worker_key: &RsaPrivateKey,
    hash: OaepHash,
    encrypted_session_key: &str,
) -> Result<AesKey, ProtectionError> {
    let wrapped = decode_hex("encryptedSessionKey", encrypted_session_key)?;
    worker_key.unwrap_key(hash, &wrapped).map_err(ProtectionError::SessionKey)
}

/// `sessionKeyIv` as upper-case hex.
pub fn encode_iv(iv: &Iv) -> String {
    hex::encode_upper(iv.as_bytes())
}

/// Reads `sessionKeyIv` (or a data item's `iv`).
///
/// # Errors
/// [`ProtectionError::Hex`] or [`ProtectionError::SessionKeyIv`].
pub fn decode_iv(field: &'static str, value: &str) -> Result<Iv, ProtectionError> {
    Iv::from_slice(&decode_hex(field, value)?).map_err(ProtectionError::SessionKeyIv)
}

/// `encryptedRequestHash`: upper-case hex of AES-GCM(session key, session IV, request hash).
///
/// # Errors
/// [`ProtectionError::Encryption`] if AES-GCM fails.
pub fn encrypt_request_hash(
    session_key: &AesKey,
    iv: &Iv,
    request_hash: &Sha256Digest,
) -> Result<String, ProtectionError> {
    session_key
        .seal(iv, request_hash.as_bytes())
        .map(hex::encode_upper)
        .map_err(ProtectionError::Encryption)
}

/// afallon's `encryptedRequestHash`: upper-case hex of AES-GCM(session key, session IV, request
/// hash || [`crate::sealed_request_digest`]). Avalon's worker compares only the first 32 bytes
/// (wire spec §3.7); afallon's also checks the digest, so a request altered where Avalon's hash
/// cannot see (an output slot with empty strings dropped or renumbered, a `dataHash` moved into
/// `data`) is refused before anything runs.
///
/// # Errors
/// [`ProtectionError::Encryption`] if AES-GCM fails.
pub fn seal_request_hash(
    session_key: &AesKey,
    iv: &Iv,
    request_hash: &Sha256Digest,
    sealed_digest: &Sha256Digest,
) -> Result<String, ProtectionError> {
    let mut plaintext = [0u8; 64];
    plaintext[..32].copy_from_slice(request_hash.as_bytes());
    plaintext[32..].copy_from_slice(sealed_digest.as_bytes());
    session_key.seal(iv, &plaintext).map(hex::encode_upper).map_err(ProtectionError::Encryption)
}

/// Checks `request.encryptedRequestHash` against `hash`, the request hash computed over it: the
/// 32-byte form of Avalon's requesters, or the 64-byte form of [`seal_request_hash`], whose
/// digest must then be the request's too.
///
/// # Errors
/// [`ProtectionError::Hex`], [`ProtectionError::RequestHashDecryption`] when it does not decrypt
/// (wrong key, altered), [`ProtectionError::RequestHashMismatch`] when it decrypts to another hash,
/// [`ProtectionError::RequestAltered`] when the sealed digest is another request's.
pub fn check_request_hash(
    session_key: &AesKey,
    iv: &Iv,
    request: &WorkOrderRequest,
    hash: &Sha256Digest,
) -> Result<(), ProtectionError> {
    let sealed = decode_hex("encryptedRequestHash", &request.encrypted_request_hash)?;
    let plaintext =
        session_key.open(iv, &sealed).map_err(ProtectionError::RequestHashDecryption)?;
    let (sent_hash, sent_digest) = match plaintext.len() {
        32 => (&plaintext[..], None),
        64 => (&plaintext[..32], Some(&plaintext[32..])),
        _ => return Err(ProtectionError::RequestHashMismatch),
    };
    if sent_hash != hash.as_bytes() {
        return Err(ProtectionError::RequestHashMismatch);
    }
    match sent_digest {
        Some(digest) if digest != crate::sealed_request_digest(request).as_bytes() => {
            Err(ProtectionError::RequestAltered)
        }
        _ => Ok(()),
    }
}

/// A base64 DER signature over `digest` (`requesterSignature`, `workerSignature`, receipts).
pub fn sign_digest_base64(key: &EcdsaSigningKey, digest: &Sha256Digest) -> String {
    encode_base64(&key.sign_digest(digest).to_der())
}

/// Verifies a base64 DER signature over `digest` with a verification key given as PEM.
///
/// # Errors
/// [`ProtectionError::VerificationKey`], [`ProtectionError::Base64`] or
/// [`ProtectionError::Signature`].
pub fn verify_digest_base64(
    field: &'static str,
    verification_key_pem: &str,
    digest: &Sha256Digest,
    signature_base64: &str,
) -> Result<(), ProtectionError> {
    let key = EcdsaVerifyingKey::from_pem(verification_key_pem)
        .map_err(ProtectionError::VerificationKey)?;
    verify_digest_base64_with(field, &key, digest, signature_base64)
}

/// As [`verify_digest_base64`], with a key parsed once beforehand.
///
/// # Errors
/// [`ProtectionError::Base64`] or [`ProtectionError::Signature`].
pub fn verify_digest_base64_with(
    field: &'static str,
    key: &EcdsaVerifyingKey,
    digest: &Sha256Digest,
    signature_base64: &str,
) -> Result<(), ProtectionError> {
    let der = decode_base64(field, signature_base64)?;
    let signature = EcdsaSignature::from_der(&der).map_err(ProtectionError::Signature)?;
    key.verify_digest(digest, &signature).map_err(ProtectionError::Signature)
}

/// `encryptionKeySignature`: upper-case hex DER signature over SHA-256 of the encryption-key PEM.
pub fn sign_encryption_key(key: &EcdsaSigningKey, encryption_key_pem: &str) -> String {
    hex::encode_upper(
        key.sign_digest(&crate::hash::encryption_key_digest(encryption_key_pem)).to_der(),
    )
}

/// Checks `encryptionKeySignature` (hex, either case) with the worker's verification key.
///
/// # Errors
/// [`ProtectionError::VerificationKey`], [`ProtectionError::Hex`] or
/// [`ProtectionError::Signature`].
pub fn verify_encryption_key_signature(
    verification_key_pem: &str,
    encryption_key_pem: &str,
    signature_hex: &str,
) -> Result<(), ProtectionError> {
    let key = EcdsaVerifyingKey::from_pem(verification_key_pem)
        .map_err(ProtectionError::VerificationKey)?;
    let der = decode_hex("encryptionKeySignature", signature_hex)?;
    let signature = EcdsaSignature::from_der(&der).map_err(ProtectionError::Signature)?;
    key.verify_digest(&crate::hash::encryption_key_digest(encryption_key_pem), &signature)
        .map_err(ProtectionError::Signature)
}

/// `workerNonce` as afallon's worker writes it: base64 of the request's digest
/// ([`crate::request_digest`]) followed by 16 random bytes. The nonce is covered by the response
/// hash, so the worker's signature binds the result to the exact request it processed; a
/// requester checks it with [`worker_nonce_binding`]. Avalon's clients accept any string here
/// (wire spec §3.8) and ignore what it holds.
pub fn bound_worker_nonce(request_digest: &Sha256Digest, random: &[u8; 16]) -> String {
    let mut bytes = [0u8; 48];
    bytes[..32].copy_from_slice(request_digest.as_bytes());
    bytes[32..].copy_from_slice(random);
    encode_base64(&bytes)
}

/// The request digest a `workerNonce` made by [`bound_worker_nonce`] carries, or `None` for any
/// other nonce (Avalon's worker writes base64 of 32 bytes, Graphene's of 16).
pub fn worker_nonce_binding(worker_nonce: &str) -> Option<[u8; 32]> {
    let bytes = BASE64.decode(worker_nonce).ok()?;
    if bytes.len() != 48 {
        return None;
    }
    bytes[..32].try_into().ok()
}

/// How a data item's `data` is protected, read from its `encryptedDataEncryptionKey` (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKeyKind<'a> {
    /// Absent, `""` or `"null"`: encrypted with the session key and session IV.
    Session,
    /// `"-"`: not encrypted; `data` is base64 of the plaintext.
    Plain,
    /// A per-item data key: `encryptedDataEncryptionKey` = hex(AES-GCM with prefixed IV under the
    /// session key of RSA-OAEP(worker key, data key)); `iv` = hex of the data IV.
    PerItem {
        /// `encryptedDataEncryptionKey`.
        wrapped_key: &'a str,
        /// `iv`.
        iv: &'a str,
    },
}

impl<'a> DataKeyKind<'a> {
    /// The kind of `item`.
    pub fn of(item: &'a DataItem) -> Self {
        match item.encrypted_data_encryption_key.as_deref() {
            None | Some("" | "null") => Self::Session,
            Some("-") => Self::Plain,
            Some(wrapped_key) => {
                Self::PerItem { wrapped_key, iv: item.iv.as_deref().unwrap_or("") }
            }
        }
    }
}

/// The key an item's data is encrypted with, resolved.
#[derive(Debug)]
pub enum ItemKey<'a> {
    /// The session key and session IV.
    Session {
        /// The session key.
        key: &'a AesKey,
        /// The session IV.
        iv: &'a Iv,
    },
    /// No encryption.
    Plain,
    /// A per-item data key and its IV.
    DataKey {
        /// The data key.
        key: AesKey,
        /// The item's IV.
        iv: Iv,
    },
}

impl ItemKey<'_> {
    /// Encrypts (or, for plain items, encodes) `plaintext` into the item's `data`. An empty
    /// plaintext gives `""`, as Avalon's worker writes it.
    ///
    /// # Errors
    /// [`ProtectionError::Encryption`].
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, ProtectionError> {
        if plaintext.is_empty() {
            return Ok(String::new());
        }
        let bytes = match self {
            Self::Session { key, iv } => {
                key.seal(iv, plaintext).map_err(ProtectionError::Encryption)?
            }
            Self::DataKey { key, iv } => {
                key.seal(iv, plaintext).map_err(ProtectionError::Encryption)?
            }
            Self::Plain => return Ok(encode_base64(plaintext)),
        };
        Ok(encode_base64(&bytes))
    }

    /// Decodes and decrypts an item's `data`; `""` gives an empty plaintext.
    ///
    /// # Errors
    /// [`ProtectionError::Base64`] or [`ProtectionError::DataDecryption`].
    pub fn open(&self, index: i64, data: &str) -> Result<Vec<u8>, ProtectionError> {
        let bytes = decode_base64("data", data)?;
        if bytes.is_empty() {
            return Ok(bytes);
        }
        let opened = match self {
            Self::Session { key, iv } => key.open(iv, &bytes),
            Self::DataKey { key, iv } => key.open(iv, &bytes),
            Self::Plain => return Ok(bytes),
        };
        opened.map_err(|source| ProtectionError::DataDecryption { index, source })
    }
}

/// Requester side: wraps a fresh data key for an item, giving the item's
/// `(encryptedDataEncryptionKey, iv)` strings and the key to seal its data with.
///
/// # Errors
/// [`ProtectionError::Random`], [`ProtectionError::Wrap`] or [`ProtectionError::Encryption`].
pub fn new_data_key(
    session_key: &AesKey,
    worker_key: &RsaPublicKey,
    hash: OaepHash,
) -> Result<(String, String, ItemKey<'static>), ProtectionError> {
    let key = AesKey::generate()?;
    let iv = Iv::generate()?;
    let rsa_wrapped = worker_key.wrap_key(hash, &key).map_err(ProtectionError::Wrap)?;
    let wrapped =
        session_key.seal_with_random_iv(&rsa_wrapped).map_err(ProtectionError::Encryption)?;
    Ok((hex::encode_upper(wrapped), encode_iv(&iv), ItemKey::DataKey { key, iv }))
}

/// The length of a per-item key sealed under the session key ([`new_sealed_data_key`]): IV, key
/// and tag. An RSA-wrapped key (the EEA's) is 412 bytes.
const SEALED_KEY_LEN: usize = 12 + 32 + 16;

/// Requester side, afallon's workers only: a fresh data key and IV for an item, the key sealed
/// under the session key with a fresh IV of its own, giving the item's
/// `(encryptedDataEncryptionKey, iv)` strings and the key to seal its data with. Unlike the
/// session key and IV, which Avalon's format uses for the request hash and every other item
/// alike, no key and IV pair encrypts two messages; and unlike [`new_data_key`], the worker pays
/// no RSA decryption for it. Avalon's worker reads such an item as plaintext (its per-item keys do
/// not work), so it would see only ciphertext.
///
/// # Errors
/// [`ProtectionError::Random`] or [`ProtectionError::Encryption`].
pub fn new_sealed_data_key(
    session_key: &AesKey,
) -> Result<(String, String, ItemKey<'static>), ProtectionError> {
    let key = AesKey::generate()?;
    let iv = Iv::generate()?;
    let sealed = session_key.wrap_key(&key).map_err(ProtectionError::Encryption)?;
    Ok((hex::encode_upper(sealed), encode_iv(&iv), ItemKey::DataKey { key, iv }))
}

/// What unwraps a work order's RSA-wrapped per-item keys: the worker's RSA key, or, in a pool,
/// the keys its KME unwrapped for the WPE ([`item_key`]).
pub trait DataKeyUnwrap {
    /// The key of item `index`, whose RSA-OAEP ciphertext (under `hash`) is `wrapped`.
    ///
    /// # Errors
    /// [`RsaError`] if it does not unwrap.
    fn unwrap_data_key(
        &self,
        index: i64,
        hash: OaepHash,
        wrapped: &[u8],
    ) -> Result<AesKey, RsaError>;
}

impl DataKeyUnwrap for RsaPrivateKey {
    fn unwrap_data_key(&self, _: i64, hash: OaepHash, wrapped: &[u8]) -> Result<AesKey, RsaError> {
        self.unwrap_key(hash, wrapped)
    }
}

/// Worker side: resolves the key of `item`, unwrapping a per-item key with the session key (a
/// sealed key, [`new_sealed_data_key`]) or the worker's key (an RSA-wrapped one).
///
/// # Errors
/// [`ProtectionError::Hex`], [`ProtectionError::SessionKeyIv`],
/// [`ProtectionError::DataDecryption`] or [`ProtectionError::DataKey`].
pub fn item_key<'k>(
    item: &DataItem,
    session_key: &'k AesKey,
    session_iv: &'k Iv,
    worker_key: &dyn DataKeyUnwrap,
    hash: OaepHash,
) -> Result<ItemKey<'k>, ProtectionError> {
    Ok(match DataKeyKind::of(item) {
        DataKeyKind::Session => ItemKey::Session { key: session_key, iv: session_iv },
        DataKeyKind::Plain => ItemKey::Plain,
        DataKeyKind::PerItem { wrapped_key, iv } => {
            let index = item.index;
            let wrapped = decode_hex("encryptedDataEncryptionKey", wrapped_key)?;
            let decryption = |source| ProtectionError::DataDecryption { index, source };
            let key = if wrapped.len() == SEALED_KEY_LEN {
                session_key.unwrap_key(&wrapped).map_err(decryption)?
            } else {
                let rsa_wrapped =
                    session_key.open_with_prefixed_iv(&wrapped).map_err(decryption)?;
                worker_key
                    .unwrap_data_key(index, hash, &rsa_wrapped)
                    .map_err(|source| ProtectionError::DataKey { index, source })?
            };
            ItemKey::DataKey { key, iv: decode_iv("iv", iv)? }
        }
    })
}

/// KME side: the RSA-OAEP ciphertext of `item`'s per-item key, opened from under the session
/// key; none for an item without a key of its own or with a key sealed under the session key
/// (which whoever holds the session key opens).
///
/// # Errors
/// [`ProtectionError::Hex`] or [`ProtectionError::DataDecryption`].
pub fn rsa_wrapped_data_key(
    item: &DataItem,
    session_key: &AesKey,
) -> Result<Option<Vec<u8>>, ProtectionError> {
    let DataKeyKind::PerItem { wrapped_key, .. } = DataKeyKind::of(item) else { return Ok(None) };
    let wrapped = decode_hex("encryptedDataEncryptionKey", wrapped_key)?;
    if wrapped.len() == SEALED_KEY_LEN {
        return Ok(None);
    }
    let index = item.index;
    session_key
        .open_with_prefixed_iv(&wrapped)
        .map(Some)
        .map_err(|source| ProtectionError::DataDecryption { index, source })
}

/// Checks an item's plaintext against its `dataHash`, when it has one (hex, either case).
///
/// # Errors
/// [`ProtectionError::Hex`] or [`ProtectionError::DataHashMismatch`].
pub fn check_data_hash(item: &DataItem, plaintext: &[u8]) -> Result<(), ProtectionError> {
    match item.data_hash.as_deref() {
        None | Some("") => Ok(()),
        Some(expected) => {
            let expected = decode_hex("dataHash", expected)?;
            if expected == sha256(plaintext).as_bytes() {
                Ok(())
            } else {
                Err(ProtectionError::DataHashMismatch { index: item.index })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_read_like_the_enclave() {
        assert_eq!(decode_hex("f", "aBcD").expect("hex"), vec![0xab, 0xcd]);
        assert_eq!(decode_hex("f", "0xab"), Err(ProtectionError::Hex { field: "f" }));
        assert_eq!(decode_hex("f", "abc"), Err(ProtectionError::Hex { field: "f" }));
    }

    #[test]
    fn bound_nonces_carry_the_request_digest_and_others_none() {
        let hash = sha256(b"request");
        let nonce = bound_worker_nonce(&hash, &[7; 16]);
        assert_eq!(worker_nonce_binding(&nonce), Some(*hash.as_bytes()));
        assert_ne!(bound_worker_nonce(&hash, &[8; 16]), nonce);
        // Avalon's worker: base64 of SHA-256 of 16 random bytes; Graphene's: 16 characters.
        let avalon = encode_base64(sha256(&[0; 16]).as_bytes());
        assert_eq!(worker_nonce_binding(&avalon), None);
        assert_eq!(worker_nonce_binding(&encode_base64(b"ABCDEFGHIJKLMNOP")), None);
        assert_eq!(worker_nonce_binding("not base64!"), None);
    }

    #[test]
    fn data_key_kinds() {
        let item = |key: Option<&str>| DataItem {
            index: 0,
            data_hash: None,
            data: Some("x".into()),
            encrypted_data_encryption_key: key.map(str::to_owned),
            iv: Some("AB".into()),
        };
        assert_eq!(DataKeyKind::of(&item(None)), DataKeyKind::Session);
        assert_eq!(DataKeyKind::of(&item(Some(""))), DataKeyKind::Session);
        assert_eq!(DataKeyKind::of(&item(Some("null"))), DataKeyKind::Session);
        assert_eq!(DataKeyKind::of(&item(Some("-"))), DataKeyKind::Plain);
        assert_eq!(
            DataKeyKind::of(&item(Some("FF"))),
            DataKeyKind::PerItem { wrapped_key: "FF", iv: "AB" }
        );
    }
}
