//! Key derivation: HKDF-SHA256 (RFC 5869) from a secret and a context to an AES-256 key, used for
//! sealing keys that are bound to a platform secret and an enclave measurement.

use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use zeroize::Zeroizing;

use crate::aes_gcm::{AesKey, KEY_LEN};

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Derives an AES-256 key: HKDF-SHA256 with `salt`, input keying material `secret` and `info`.
/// Different salts, secrets or infos give unrelated keys.
pub fn derive_aes_key(salt: &[u8], secret: &[u8], info: &[&[u8]]) -> AesKey {
    let prk = Salt::new(HKDF_SHA256, salt).extract(secret);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    // Expanding 32 bytes from SHA-256 is always within HKDF's 255-block limit, so neither step fails.
    let filled = prk.expand(info, Len(KEY_LEN)).and_then(|okm| okm.fill(&mut out[..]));
    match filled {
        Ok(()) => AesKey::from_bytes(*out),
        Err(_) => unreachable!("HKDF-SHA256 can always expand 32 bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Iv;

    #[test]
    fn rfc5869_test_case_1() {
        // RFC 5869 A.1, truncated to our 32-byte output: OKM starts 3cb25f25...
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let key = derive_aes_key(&salt, &ikm, &[&info]);
        let expected =
            hex::decode("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
                .expect("hex");
        assert_eq!(key.secret_bytes()[..], expected[..]);
    }

    #[test]
    fn context_separates_keys() {
        let a = derive_aes_key(b"salt", b"secret", &[b"measurement-a"]);
        let b = derive_aes_key(b"salt", b"secret", &[b"measurement-b"]);
        let iv = Iv::from_bytes([0; 12]);
        let sealed = a.seal(&iv, b"x").expect("seal");
        assert!(b.open(&iv, &sealed).is_err());
        assert_eq!(
            derive_aes_key(b"salt", b"secret", &[b"measurement-a"])
                .open(&iv, &sealed)
                .expect("same key"),
            b"x"
        );
    }
}
