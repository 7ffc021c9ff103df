//! AES-256-GCM in the conventions Avalon's wire uses (wire spec §3.4).
//!
//! 1. With an explicit IV: the output is `ciphertext || tag`; the IV travels separately
//!    (`sessionKeyIv`). Used for `encryptedRequestHash` and session-key data items.
//! 2. With a random IV prepended: the output is `iv || ciphertext || tag`. Used for wrapped
//!    per-item data keys and the KME's key blobs.
//! 3. Opening mirrors both: the tag is the last 16 bytes, a 12-byte IV comes first in variant 2, and
//!    anything too short to hold them is refused before any decryption is attempted.
//!
//! No additional authenticated data is used anywhere on the wire. Keys are 32 bytes and IVs 12,
//! enforced by the types.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::random::{RandomError, random_array};

/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of an AES-GCM IV (nonce).
pub const IV_LEN: usize = 12;
/// Length of an AES-256 key.
pub const KEY_LEN: usize = 32;

/// Why an AES-GCM operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AesGcmError {
    /// A key was not 32 bytes long.
    #[error("AES-256 key must be {KEY_LEN} bytes, got {0}")]
    KeyLength(usize),
    /// An IV was not 12 bytes long.
    #[error("AES-GCM IV must be {IV_LEN} bytes, got {0}")]
    IvLength(usize),
    /// The ciphertext is too short to contain the tag (and the IV, where it is prepended).
    #[error("AES-GCM ciphertext is too short ({0} bytes)")]
    CiphertextTooShort(usize),
    /// The tag did not verify: wrong key, wrong IV, or altered ciphertext.
    #[error("AES-GCM authentication failed, plaintext is not trustworthy")]
    Authentication,
    /// The plaintext is too long for one AES-GCM message.
    #[error("AES-GCM plaintext is too long")]
    PlaintextTooLong,
    /// The random generator failed while drawing an IV.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A 96-bit AES-GCM IV. IVs are not secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Iv([u8; IV_LEN]);

impl Iv {
    /// Wraps 12 bytes.
    pub const fn from_bytes(bytes: [u8; IV_LEN]) -> Self {
        Self(bytes)
    }

    /// Takes an IV from a slice.
    ///
    /// # Errors
    /// [`AesGcmError::IvLength`] unless it is exactly 12 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, AesGcmError> {
        bytes.try_into().map(Self).map_err(|_| AesGcmError::IvLength(bytes.len()))
    }

    /// A fresh random IV.
    ///
    /// # Errors
    /// [`RandomError`] if the system generator fails.
    pub fn generate() -> Result<Self, RandomError> {
        random_array().map(Self)
    }

    /// The 12 bytes.
    pub const fn as_bytes(&self) -> &[u8; IV_LEN] {
        &self.0
    }
}

/// An AES-256 key: a requester's session key or a per-item data key.
///
/// The bytes cannot be read back out of this type; other modules of this crate move them only by
/// wrapping them under another key (RSA-OAEP). They are zeroized on drop and never printed.
pub struct AesKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    aead: LessSafeKey,
}

impl AesKey {
    /// Takes ownership of 32 key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let bytes = Zeroizing::new(bytes);
        // A 32-byte key is always accepted for AES-256-GCM.
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes[..]).ok();
        match unbound {
            Some(unbound) => Self { aead: LessSafeKey::new(unbound), bytes },
            None => unreachable!("AES-256-GCM accepts every 32-byte key"),
        }
    }

    /// Takes a key from a slice.
    ///
    /// # Errors
    /// [`AesGcmError::KeyLength`] unless it is exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, AesGcmError> {
        let array: [u8; KEY_LEN] =
            bytes.try_into().map_err(|_| AesGcmError::KeyLength(bytes.len()))?;
        Ok(Self::from_bytes(array))
    }

    /// A fresh random key.
    ///
    /// # Errors
    /// [`RandomError`] if the system generator fails.
    pub fn generate() -> Result<Self, RandomError> {
        random_array().map(Self::from_bytes)
    }

    /// The raw bytes, for wrapping under another key inside this crate.
    pub(crate) fn secret_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Wraps `key` under this key with a fresh random IV, prefixed: `iv || ciphertext || tag`
    /// (60 bytes). The key's bytes never leave this crate otherwise.
    ///
    /// # Errors
    /// [`AesGcmError::Random`] if no IV can be drawn.
    pub fn wrap_key(&self, key: &AesKey) -> Result<Vec<u8>, AesGcmError> {
        self.seal_with_random_iv(key.secret_bytes())
    }

    /// Unwraps a key wrapped by [`AesKey::wrap_key`].
    ///
    /// # Errors
    /// [`AesGcmError::Authentication`] for a wrong key or an altered wrap,
    /// [`AesGcmError::KeyLength`] when it holds something other than a key.
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<AesKey, AesGcmError> {
        let bytes = Zeroizing::new(self.open_with_prefixed_iv(wrapped)?);
        AesKey::from_slice(&bytes)
    }

    /// Variant 1: encrypts `plaintext` under `iv`; returns `ciphertext || tag`.
    ///
    /// # Errors
    /// [`AesGcmError::PlaintextTooLong`] for a message beyond AES-GCM's limit.
    pub fn seal(&self, iv: &Iv, plaintext: &[u8]) -> Result<Vec<u8>, AesGcmError> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(iv.0), Aad::empty(), &mut out)
            .map_err(|_| AesGcmError::PlaintextTooLong)?;
        Ok(out)
    }

    /// Variant 1 reversed: opens `ciphertext || tag` encrypted under `iv`.
    ///
    /// # Errors
    /// [`AesGcmError::CiphertextTooShort`] below 16 bytes, [`AesGcmError::Authentication`] when the
    /// tag does not verify.
    pub fn open(&self, iv: &Iv, sealed: &[u8]) -> Result<Vec<u8>, AesGcmError> {
        if sealed.len() < TAG_LEN {
            return Err(AesGcmError::CiphertextTooShort(sealed.len()));
        }
        let mut buf = sealed.to_vec();
        let len = self
            .aead
            .open_in_place(Nonce::assume_unique_for_key(iv.0), Aad::empty(), &mut buf)
            .map_err(|_| AesGcmError::Authentication)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Variant 2: encrypts under a fresh random IV; returns `iv || ciphertext || tag`.
    ///
    /// # Errors
    /// [`AesGcmError::Random`] if no IV could be drawn, [`AesGcmError::PlaintextTooLong`] as
    /// [`AesKey::seal`].
    pub fn seal_with_random_iv(&self, plaintext: &[u8]) -> Result<Vec<u8>, AesGcmError> {
        let iv = Iv::generate()?;
        let sealed = self.seal(&iv, plaintext)?;
        let mut out = Vec::with_capacity(IV_LEN + sealed.len());
        out.extend_from_slice(iv.as_bytes());
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Variant 2 reversed: opens `iv || ciphertext || tag`.
    ///
    /// # Errors
    /// [`AesGcmError::CiphertextTooShort`] below 28 bytes, [`AesGcmError::Authentication`] when the
    /// tag does not verify.
    pub fn open_with_prefixed_iv(&self, data: &[u8]) -> Result<Vec<u8>, AesGcmError> {
        if data.len() < IV_LEN + TAG_LEN {
            return Err(AesGcmError::CiphertextTooShort(data.len()));
        }
        let (iv, sealed) = data.split_at(IV_LEN);
        self.open(&Iv::from_slice(iv)?, sealed)
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_key() -> AesKey {
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = i as u8;
        }
        AesKey::from_bytes(key)
    }

    fn vector_iv() -> Iv {
        Iv::from_slice(&hex::decode("A0A1A2A3A4A5A6A7A8A9AAAB").expect("hex")).expect("iv")
    }

    #[test]
    fn keys_wrap_under_keys() {
        let session = AesKey::from_bytes([7; KEY_LEN]);
        let item = AesKey::from_bytes([9; KEY_LEN]);
        let wrapped = session.wrap_key(&item).expect("wrap");
        assert_eq!(wrapped.len(), IV_LEN + KEY_LEN + TAG_LEN);
        assert_ne!(session.wrap_key(&item).expect("wrap"), wrapped, "a fresh IV each time");
        let unwrapped = session.unwrap_key(&wrapped).expect("unwrap");
        let iv = Iv::from_bytes([1; IV_LEN]);
        assert_eq!(unwrapped.open(&iv, &item.seal(&iv, b"x").expect("seal")).expect("open"), b"x");
        assert_eq!(
            AesKey::from_bytes([8; KEY_LEN]).unwrap_key(&wrapped).err(),
            Some(AesGcmError::Authentication)
        );
        let not_a_key = session.seal_with_random_iv(b"short").expect("seal");
        assert_eq!(session.unwrap_key(&not_a_key).err(), Some(AesGcmError::KeyLength(5)));
    }

    #[test]
    fn wire_vector_hello() {
        // Wire spec §3.12: inData[0].data = b64(AESGCM(00..1f, A0..AB, "Hello")).
        use base64::Engine as _;
        let sealed = vector_key().seal(&vector_iv(), b"Hello").expect("seal");
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(&sealed),
            "rn0QQSqlF1ldMjKgi7eUGuzGoiCk"
        );
        assert_eq!(vector_key().open(&vector_iv(), &sealed).expect("open"), b"Hello");
    }

    #[test]
    fn open_refuses_tampering_wrong_key_and_short_input() {
        let key = vector_key();
        let mut sealed = key.seal(&vector_iv(), b"payload").expect("seal");
        let other = AesKey::from_bytes([9; 32]);
        assert_eq!(other.open(&vector_iv(), &sealed), Err(AesGcmError::Authentication));
        sealed[0] ^= 1;
        assert_eq!(key.open(&vector_iv(), &sealed), Err(AesGcmError::Authentication));
        assert_eq!(key.open(&vector_iv(), &[0; 15]), Err(AesGcmError::CiphertextTooShort(15)));
        assert_eq!(key.open_with_prefixed_iv(&[0; 27]), Err(AesGcmError::CiphertextTooShort(27)));
    }

    #[test]
    fn prefixed_iv_round_trip_uses_fresh_ivs() {
        let key = vector_key();
        let a = key.seal_with_random_iv(b"data key").expect("seal");
        let b = key.seal_with_random_iv(b"data key").expect("seal");
        assert_ne!(a[..IV_LEN], b[..IV_LEN]);
        assert_eq!(a.len(), IV_LEN + 8 + TAG_LEN);
        assert_eq!(key.open_with_prefixed_iv(&a).expect("open"), b"data key");
    }

    #[test]
    fn empty_plaintext_is_just_a_tag() {
        let key = vector_key();
        let sealed = key.seal(&vector_iv(), b"").expect("seal");
        assert_eq!(sealed.len(), TAG_LEN);
        assert_eq!(key.open(&vector_iv(), &sealed).expect("open"), b"");
    }

    #[test]
    fn lengths_are_checked() {
        assert_eq!(AesKey::from_slice(&[0; 31]).err(), Some(AesGcmError::KeyLength(31)));
        assert_eq!(Iv::from_slice(&[0; 16]), Err(AesGcmError::IvLength(16)));
        assert_eq!(format!("{:?}", vector_key()), "AesKey(..)");
    }
}
