//! secp256k1 ECDSA over SHA-256 digests: worker signatures, requester signatures, receipt
//! signatures and the encryption-key signature (wire spec §3.10).
//!
//! The 32-byte digest is signed as it is, never hashed again. Signatures are emitted with a low S
//! (as Avalon's C++ normalises them) using deterministic nonces (RFC 6979); verification accepts a
//! high S as well, because Python's `ecdsa` package does not normalise and Avalon clients send
//! such signatures about half the time. The curve arithmetic is libsecp256k1's.

use std::fmt;
use std::sync::LazyLock;

use secp256k1::ecdsa::Signature;
use secp256k1::{All, Message, PublicKey, Secp256k1, SecretKey};

use crate::der::{self, Reader, Spki};
use crate::random::{RandomError, random_array};
use crate::sha256::Sha256Digest;
use crate::{KeyError, pem};

/// libsecp256k1's context, made once: its tables are static, and it is blinded with fresh random
/// bytes when it is made (a side-channel defence for signing).
static CONTEXT: LazyLock<Secp256k1<All>> = LazyLock::new(|| {
    let mut context = Secp256k1::new();
    if let Ok(seed) = random_array::<32>() {
        context.seeded_randomize(&seed);
    }
    context
});

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The bytes are not a DER `SEQUENCE { INTEGER r, INTEGER s }` with r and s in range.
    #[error("signature is not a valid DER-encoded ECDSA signature")]
    Malformed,
    /// The signature is well formed but does not verify under the key.
    #[error("signature verification failed")]
    Invalid,
}

/// A secp256k1 signing key: a worker's, a KME's, or a requester's.
///
/// Cannot be printed, cloned or read out; the scalar is overwritten on drop.
pub struct EcdsaSigningKey(SecretKey);

impl EcdsaSigningKey {
    /// A fresh random key.
    ///
    /// # Errors
    /// [`RandomError`] if the system generator fails.
    pub fn generate() -> Result<Self, RandomError> {
        loop {
            let candidate = zeroize::Zeroizing::new(random_array::<32>()?);
            // Fails only for zero or a value at or above the group order (probability ~2^-128).
            if let Ok(key) = SecretKey::from_byte_array(*candidate) {
                return Ok(Self(key));
            }
        }
    }

    /// Reads the 32-byte secret scalar, as sealed by [`EcdsaSigningKey::to_scalar_bytes_for_sealing`].
    ///
    /// # Errors
    /// [`KeyError::InvalidKey`] for a zero scalar, one at or above the group order, or a wrong length.
    pub fn from_scalar_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes =
            zeroize::Zeroizing::new(<[u8; 32]>::try_from(bytes).map_err(|_| KeyError::InvalidKey)?);
        SecretKey::from_byte_array(*bytes).map(Self).map_err(|_| KeyError::InvalidKey)
    }

    /// The 32-byte secret scalar, zeroized on drop. Only for sealing the key under a sealing key,
    /// which is the one way a private key may leave memory.
    pub fn to_scalar_bytes_for_sealing(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.secret_bytes())
    }

    /// The public half.
    pub fn verifying_key(&self) -> EcdsaVerifyingKey {
        EcdsaVerifyingKey(PublicKey::from_secret_key(&CONTEXT, &self.0))
    }

    /// Signs a SHA-256 digest as it is (no second hash), with a low S and an RFC 6979 nonce.
    pub fn sign_digest(&self, digest: &Sha256Digest) -> EcdsaSignature {
        let message = Message::from_digest(*digest.as_bytes());
        // libsecp256k1 always emits a low S.
        EcdsaSignature(CONTEXT.sign_ecdsa(message, &self.0))
    }
}

impl Drop for EcdsaSigningKey {
    fn drop(&mut self) {
        self.0.non_secure_erase();
    }
}

impl fmt::Debug for EcdsaSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcdsaSigningKey")
            .field("verifying_key", &self.verifying_key())
            .finish_non_exhaustive()
    }
}

/// A secp256k1 verifying key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EcdsaVerifyingKey(PublicKey);

impl EcdsaVerifyingKey {
    /// Reads a `PUBLIC KEY` PEM: SubjectPublicKeyInfo with id-ecPublicKey, the curve named
    /// (secp256k1) or given explicitly, the point compressed or not.
    ///
    /// # Errors
    /// [`KeyError`] for malformed PEM or DER, another algorithm or curve, or a point not on the curve.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::decode(text)?;
        if block.label != "PUBLIC KEY" {
            return Err(KeyError::UnexpectedPemLabel(block.label));
        }
        Self::from_spki_der(&block.der)
    }

    /// Reads a DER SubjectPublicKeyInfo; see [`EcdsaVerifyingKey::from_pem`].
    ///
    /// # Errors
    /// As [`EcdsaVerifyingKey::from_pem`].
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = Spki::parse(der)?;
        if spki.algorithm != der::OID_EC_PUBLIC_KEY {
            return Err(KeyError::UnexpectedAlgorithm);
        }
        match spki.parameters {
            Some((der::TAG_OID, der::OID_SECP256K1)) => {}
            Some((der::TAG_SEQUENCE, explicit)) => check_explicit_secp256k1(explicit)?,
            _ => return Err(KeyError::UnsupportedCurve),
        }
        Self::from_sec1_bytes(spki.key)
    }

    /// Reads a SEC1 point: `04 || x || y`, or `02`/`03 || x`.
    ///
    /// # Errors
    /// [`KeyError::InvalidKey`] for anything that is not a point on secp256k1.
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        // libsecp256k1 also reads the "hybrid" 06/07 form, which SEC1 keys never use.
        if !matches!(bytes.first(), Some(2..=4)) {
            return Err(KeyError::InvalidKey);
        }
        PublicKey::from_slice(bytes).map(Self).map_err(|_| KeyError::InvalidKey)
    }

    /// The uncompressed SEC1 point, `04 || x || y`.
    pub fn to_sec1_uncompressed(&self) -> [u8; 65] {
        self.0.serialize_uncompressed()
    }

    /// The SubjectPublicKeyInfo DER with the named curve and an uncompressed point.
    pub fn to_spki_der(&self) -> Vec<u8> {
        der::write_spki(
            der::OID_EC_PUBLIC_KEY,
            (der::TAG_OID, der::OID_SECP256K1),
            &self.to_sec1_uncompressed(),
        )
    }

    /// The `PUBLIC KEY` PEM, byte-exact with OpenSSL's `PEM_write_bio_EC_PUBKEY` and Python
    /// `ecdsa`'s `to_pem()`: named curve, uncompressed point, 64-character lines, final newline.
    pub fn to_pem(&self) -> String {
        pem::encode("PUBLIC KEY", &self.to_spki_der())
    }

    /// Verifies a signature over a SHA-256 digest (taken as it is), accepting a high S.
    ///
    /// # Errors
    /// [`SignatureError::Invalid`] when it does not verify.
    pub fn verify_digest(
        &self,
        digest: &Sha256Digest,
        signature: &EcdsaSignature,
    ) -> Result<(), SignatureError> {
        let message = Message::from_digest(*digest.as_bytes());
        // libsecp256k1 verifies low-S signatures only; (r, n - s) is the same signature.
        let mut low = signature.0;
        low.normalize_s();
        CONTEXT.verify_ecdsa(message, &low, &self.0).map_err(|_| SignatureError::Invalid)
    }
}

impl fmt::Debug for EcdsaVerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EcdsaVerifyingKey({})", hex::encode(self.to_sec1_uncompressed()))
    }
}

/// A secp256k1 ECDSA signature (r, s), possibly with a high S.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EcdsaSignature(Signature);

impl EcdsaSignature {
    /// Reads a DER `SEQUENCE { INTEGER r, INTEGER s }`.
    ///
    /// # Errors
    /// [`SignatureError::Malformed`] for anything else, or r or s out of range.
    pub fn from_der(bytes: &[u8]) -> Result<Self, SignatureError> {
        let signature = Signature::from_der(bytes).map_err(|_| SignatureError::Malformed)?;
        // libsecp256k1 reads an out-of-range r or s as zero (a signature that never verifies);
        // it is refused here as malformed, as is a zero r or s.
        let (r, s) = Self(signature).to_scalars();
        if r == [0; 32] || s == [0; 32] {
            return Err(SignatureError::Malformed);
        }
        Ok(Self(signature))
    }

    /// Builds a signature from the big-endian r and s (32 bytes each).
    ///
    /// # Errors
    /// [`SignatureError::Malformed`] when r or s is zero or not below the group order.
    pub fn from_scalars(r: [u8; 32], s: [u8; 32]) -> Result<Self, SignatureError> {
        if r == [0; 32] || s == [0; 32] {
            return Err(SignatureError::Malformed);
        }
        let mut compact = [0u8; 64];
        compact[..32].copy_from_slice(&r);
        compact[32..].copy_from_slice(&s);
        Signature::from_compact(&compact).map(Self).map_err(|_| SignatureError::Malformed)
    }

    /// The big-endian r and s, 32 bytes each.
    pub fn to_scalars(&self) -> ([u8; 32], [u8; 32]) {
        let compact = self.0.serialize_compact();
        let (mut r, mut s) = ([0u8; 32], [0u8; 32]);
        r.copy_from_slice(&compact[..32]);
        s.copy_from_slice(&compact[32..]);
        (r, s)
    }

    /// The DER encoding with minimal INTEGERs, as OpenSSL's `i2d_ECDSA_SIG` writes it.
    pub fn to_der(&self) -> Vec<u8> {
        self.0.serialize_der().to_vec()
    }

    /// Whether S is in the lower half of the group order.
    pub fn is_low_s(&self) -> bool {
        let mut low = self.0;
        low.normalize_s();
        low == self.0
    }
}

/// secp256k1's domain parameters, big-endian, for checking explicitly encoded curves.
mod curve {
    pub(super) const P: [u8; 32] =
        hex_literal(b"fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f");
    pub(super) const N: [u8; 32] =
        hex_literal(b"fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
    pub(super) const GX: [u8; 32] =
        hex_literal(b"79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798");
    pub(super) const GY: [u8; 32] =
        hex_literal(b"483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8");

    const fn hex_literal(text: &[u8; 64]) -> [u8; 32] {
        const fn nibble(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => panic!("not a lower-case hex digit"),
            }
        }
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            out[i] = (nibble(text[2 * i]) << 4) | nibble(text[2 * i + 1]);
            i += 1;
        }
        out
    }
}

/// Checks that explicit ECParameters (RFC 3279 §2.3.5) describe secp256k1.
fn check_explicit_secp256k1(parameters: &[u8]) -> Result<(), KeyError> {
    let same_integer =
        |a: &[u8], b: &[u8]| der::trim_leading_zeros(a) == der::trim_leading_zeros(b);
    let mut fields = Reader::new(parameters);
    let version = fields.read(der::TAG_INTEGER)?;
    let mut field_id = Reader::new(fields.read(der::TAG_SEQUENCE)?);
    let mut curve = Reader::new(fields.read(der::TAG_SEQUENCE)?);
    let base = fields.read(der::TAG_OCTET_STRING)?;
    let order = fields.read(der::TAG_INTEGER)?;
    let cofactor = if fields.is_empty() { None } else { Some(fields.read_last(der::TAG_INTEGER)?) };

    let field_type = field_id.read(der::TAG_OID)?;
    let prime = field_id.read_last(der::TAG_INTEGER)?;
    let a = curve.read(der::TAG_OCTET_STRING)?;
    let b = curve.read(der::TAG_OCTET_STRING)?;
    if curve.peek_tag().is_some() {
        curve.read_last(der::TAG_BIT_STRING)?; // the optional seed
    }

    let generator = EcdsaVerifyingKey::from_sec1_bytes(base)
        .map_err(|_| KeyError::UnsupportedCurve)?
        .to_sec1_uncompressed();
    let is_secp256k1 = version == [1]
        && field_type == der::OID_PRIME_FIELD
        && same_integer(prime, &curve::P)
        && same_integer(a, &[])
        && same_integer(b, &[7])
        && generator[1..33] == curve::GX
        && generator[33..] == curve::GY
        && same_integer(order, &curve::N)
        && cofactor.is_none_or(|h| same_integer(h, &[1]));
    if is_secp256k1 { Ok(()) } else { Err(KeyError::UnsupportedCurve) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sha256::sha256;

    #[test]
    fn sign_verify_and_low_s() {
        let key = EcdsaSigningKey::generate().expect("rng");
        for i in 0..32u8 {
            let digest = sha256(&[i]);
            let signature = key.sign_digest(&digest);
            assert!(signature.is_low_s());
            key.verifying_key().verify_digest(&digest, &signature).expect("verifies");
            let reparsed = EcdsaSignature::from_der(&signature.to_der()).expect("der");
            assert_eq!(reparsed, signature);
        }
    }

    #[test]
    fn wrong_key_and_wrong_digest_are_invalid() {
        let key = EcdsaSigningKey::generate().expect("rng");
        let other = EcdsaSigningKey::generate().expect("rng");
        let signature = key.sign_digest(&sha256(b"a"));
        assert_eq!(
            other.verifying_key().verify_digest(&sha256(b"a"), &signature),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            key.verifying_key().verify_digest(&sha256(b"b"), &signature),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn high_s_verifies() {
        let key = EcdsaSigningKey::generate().expect("rng");
        let digest = sha256(b"python signs without normalising");
        let (r, s) = key.sign_digest(&digest).to_scalars();
        // s' = n - s, the other valid S for the same signature.
        let mut high = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let v = i16::from(curve::N[i]) - i16::from(s[i]) - borrow;
            borrow = i16::from(v < 0);
            high[i] = (v + 256 * borrow) as u8;
        }
        let high = EcdsaSignature::from_scalars(r, high).expect("in range");
        assert!(!high.is_low_s());
        key.verifying_key().verify_digest(&digest, &high).expect("high S accepted");
    }

    #[test]
    fn out_of_range_and_zero_scalars_are_malformed() {
        let der_of = |r: &[u8], s: &[u8]| {
            let mut body = Vec::new();
            der::write_element(der::TAG_INTEGER, r, &mut body);
            der::write_element(der::TAG_INTEGER, s, &mut body);
            let mut out = Vec::new();
            der::write_element(der::TAG_SEQUENCE, &body, &mut out);
            out
        };
        let mut n = vec![0];
        n.extend_from_slice(&curve::N);
        assert_eq!(EcdsaSignature::from_der(&der_of(&n, &[1])), Err(SignatureError::Malformed));
        assert_eq!(EcdsaSignature::from_der(&der_of(&[1], &n)), Err(SignatureError::Malformed));
        assert_eq!(EcdsaSignature::from_der(&der_of(&[0], &[1])), Err(SignatureError::Malformed));
        assert!(EcdsaSignature::from_der(&der_of(&[1], &[1])).is_ok());
        assert_eq!(EcdsaSignature::from_scalars(curve::N, [1; 32]), Err(SignatureError::Malformed));
        assert_eq!(EcdsaSignature::from_scalars([0; 32], [1; 32]), Err(SignatureError::Malformed));
    }

    #[test]
    fn hybrid_points_are_refused() {
        let mut point =
            EcdsaSigningKey::generate().expect("rng").verifying_key().to_sec1_uncompressed();
        point[0] = 6 + (point[64] & 1);
        assert_eq!(EcdsaVerifyingKey::from_sec1_bytes(&point), Err(KeyError::InvalidKey));
    }

    #[test]
    fn pem_round_trip_and_layout() {
        let key = EcdsaSigningKey::generate().expect("rng").verifying_key();
        let pem = key.to_pem();
        // 23 bytes of header plus a 65-byte point: 88 bytes, 120 base64 characters.
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!((lines[1].len(), lines[2].len()), (64, 56));
        assert!(lines[1].starts_with("MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAE"));
        assert_eq!(EcdsaVerifyingKey::from_pem(&pem).expect("parse"), key);
    }

    #[test]
    fn compressed_point_is_accepted() {
        let key = EcdsaSigningKey::generate().expect("rng").verifying_key();
        let point = key.to_sec1_uncompressed();
        let mut compressed = vec![2 + (point[64] & 1)];
        compressed.extend_from_slice(&point[1..33]);
        let der = der::write_spki(
            der::OID_EC_PUBLIC_KEY,
            (der::TAG_OID, der::OID_SECP256K1),
            &compressed,
        );
        assert_eq!(EcdsaVerifyingKey::from_spki_der(&der).expect("compressed"), key);
    }

    fn explicit_parameters(b: u8) -> Vec<u8> {
        let mut field_id = Vec::new();
        der::write_element(der::TAG_OID, der::OID_PRIME_FIELD, &mut field_id);
        let mut p = vec![0];
        p.extend_from_slice(&curve::P);
        der::write_element(der::TAG_INTEGER, &p, &mut field_id);
        let mut curve = Vec::new();
        der::write_element(der::TAG_OCTET_STRING, &[0; 32], &mut curve);
        let mut b_bytes = [0; 32];
        b_bytes[31] = b;
        der::write_element(der::TAG_OCTET_STRING, &b_bytes, &mut curve);
        let mut base = vec![4];
        base.extend_from_slice(&curve::GX);
        base.extend_from_slice(&curve::GY);
        let mut n = vec![0];
        n.extend_from_slice(&curve::N);
        let mut body = Vec::new();
        der::write_element(der::TAG_INTEGER, &[1], &mut body);
        der::write_element(der::TAG_SEQUENCE, &field_id, &mut body);
        der::write_element(der::TAG_SEQUENCE, &curve, &mut body);
        der::write_element(der::TAG_OCTET_STRING, &base, &mut body);
        der::write_element(der::TAG_INTEGER, &n, &mut body);
        der::write_element(der::TAG_INTEGER, &[1], &mut body);
        body
    }

    #[test]
    fn explicit_curve_parameters_are_accepted_only_for_secp256k1() {
        let key = EcdsaSigningKey::generate().expect("rng").verifying_key();
        let point = key.to_sec1_uncompressed();
        let good = der::write_spki(
            der::OID_EC_PUBLIC_KEY,
            (der::TAG_SEQUENCE, &explicit_parameters(7)),
            &point,
        );
        assert_eq!(EcdsaVerifyingKey::from_spki_der(&good).expect("explicit"), key);
        let bad = der::write_spki(
            der::OID_EC_PUBLIC_KEY,
            (der::TAG_SEQUENCE, &explicit_parameters(5)),
            &point,
        );
        assert_eq!(EcdsaVerifyingKey::from_spki_der(&bad), Err(KeyError::UnsupportedCurve));
    }

    #[test]
    fn other_curves_and_algorithms_are_refused() {
        let point =
            EcdsaSigningKey::generate().expect("rng").verifying_key().to_sec1_uncompressed();
        // prime256v1, 1.2.840.10045.3.1.7
        let p256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let der = der::write_spki(der::OID_EC_PUBLIC_KEY, (der::TAG_OID, &p256), &point);
        assert_eq!(EcdsaVerifyingKey::from_spki_der(&der), Err(KeyError::UnsupportedCurve));
        let rsa = der::write_spki(der::OID_RSA_ENCRYPTION, (der::TAG_NULL, &[]), &point);
        assert_eq!(EcdsaVerifyingKey::from_spki_der(&rsa), Err(KeyError::UnexpectedAlgorithm));
    }

    #[test]
    fn signing_key_survives_sealing_export() {
        let key = EcdsaSigningKey::generate().expect("rng");
        let again = EcdsaSigningKey::from_scalar_bytes(&key.to_scalar_bytes_for_sealing()[..])
            .expect("import");
        assert_eq!(again.verifying_key(), key.verifying_key());
        assert!(EcdsaSigningKey::from_scalar_bytes(&[0; 32]).is_err());
        assert!(!format!("{key:?}").contains(&hex::encode(&key.to_scalar_bytes_for_sealing()[..])));
    }
}
