//! Key agreement on secp256k1 (ECDH), for the key material one enclave sends another: each side
//! holds an [`EcdhSecret`], publishes its [`EcdhPublicKey`] (bound into its attestation), and both
//! derive the same AES-256 key from their own secret and the other's public key.

use std::fmt;

use secp256k1::ecdh::SharedSecret;
use secp256k1::{PublicKey, Secp256k1, SecretKey};

use crate::KeyError;
use crate::aes_gcm::AesKey;
use crate::kdf::derive_aes_key;
use crate::random::{RandomError, random_array};

/// The salt of the key derivation: a key agreed here is good for nothing else.
const SALT: &[u8] = b"afallon-ecdh-v1";

/// One side's secret. Cannot be printed, cloned or read out; overwritten on drop.
pub struct EcdhSecret(SecretKey);

impl EcdhSecret {
    /// A fresh random secret.
    ///
    /// # Errors
    /// [`RandomError`] if the system generator fails.
    pub fn generate() -> Result<Self, RandomError> {
        loop {
            let candidate = zeroize::Zeroizing::new(random_array::<32>()?);
            if let Ok(key) = SecretKey::from_byte_array(*candidate) {
                return Ok(Self(key));
            }
        }
    }

    /// The public half, to publish.
    pub fn public_key(&self) -> EcdhPublicKey {
        EcdhPublicKey(PublicKey::from_secret_key(&Secp256k1::signing_only(), &self.0))
    }

    /// The AES-256 key shared with the holder of `peer`'s secret, for the purpose named by
    /// `context` (both sides must name the same). The two public keys go into the derivation in
    /// a fixed order, so both sides derive the same key.
    pub fn agree(&self, peer: &EcdhPublicKey, context: &[u8]) -> AesKey {
        let shared = SharedSecret::new(&peer.0, &self.0);
        let (mine, theirs) = (self.public_key().to_bytes(), peer.to_bytes());
        let (low, high) = if mine <= theirs { (mine, theirs) } else { (theirs, mine) };
        let secret = zeroize::Zeroizing::new(shared.secret_bytes());
        derive_aes_key(SALT, &secret[..], &[context, &low, &high])
    }
}

impl Drop for EcdhSecret {
    fn drop(&mut self) {
        self.0.non_secure_erase();
    }
}

impl fmt::Debug for EcdhSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcdhSecret").field("public_key", &self.public_key()).finish_non_exhaustive()
    }
}

/// One side's public key: 33 bytes, a compressed secp256k1 point.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EcdhPublicKey(PublicKey);

impl EcdhPublicKey {
    /// The 33-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; 33] {
        self.0.serialize()
    }

    /// Reads the 33-byte compressed (or 65-byte uncompressed) encoding.
    ///
    /// # Errors
    /// [`KeyError::InvalidKey`] for anything that is not a point on the curve.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        PublicKey::from_slice(bytes).map(Self).map_err(|_| KeyError::InvalidKey)
    }
}

impl fmt::Debug for EcdhPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EcdhPublicKey({})", hex::encode(self.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Iv;

    #[test]
    fn both_sides_agree_and_nobody_else_does() {
        let (a, b, c) = (
            EcdhSecret::generate().expect("a"),
            EcdhSecret::generate().expect("b"),
            EcdhSecret::generate().expect("c"),
        );
        let iv = Iv::from_slice(&[7; 12]).expect("iv");
        let sealed = a.agree(&b.public_key(), b"test").seal(&iv, b"secret").expect("seal");
        assert_eq!(b.agree(&a.public_key(), b"test").open(&iv, &sealed).expect("open"), b"secret");
        assert!(c.agree(&a.public_key(), b"test").open(&iv, &sealed).is_err(), "a third party");
        assert!(b.agree(&a.public_key(), b"other").open(&iv, &sealed).is_err(), "another purpose");
        let key = a.public_key();
        assert_eq!(EcdhPublicKey::from_bytes(&key.to_bytes()).expect("read"), key);
        assert!(
            EcdhPublicKey::from_bytes(&[2; 33]).is_err()
                || EcdhPublicKey::from_bytes(&[9; 33]).is_err()
        );
        assert!(!format!("{a:?}").contains(&hex::encode(a.0.secret_bytes())));
    }
}
