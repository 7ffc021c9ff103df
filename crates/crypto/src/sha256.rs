//! SHA-256, the digest that every hash and signature on afallon's wire is built from.
//!
//! The backend (the `sha2` crate, which uses SHA-NI when the CPU has it) stays behind this module so
//! that callers depend on [`Sha256Digest`] and never on a backend's types.

use std::fmt;

use sha2::Digest as _;

/// A SHA-256 digest: 32 raw bytes.
///
/// Wire formats spell digests in several ways (lower-case hex, upper-case hex, base64); the
/// conversions live on this type so every caller spells them the same way.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// The length of a digest in bytes.
    pub const LEN: usize = 32;

    /// Wraps 32 raw bytes that are already a digest.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Takes a digest from a slice; `None` unless it is exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, as Python's `hexdigest()` writes it (workerId, for example).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Upper-case hex, as Avalon's C++ writes it (`dataHash` of outputs, for example).
    pub fn to_hex_upper(&self) -> String {
        hex::encode_upper(self.0)
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl AsRef<[u8]> for Sha256Digest {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// SHA-256 of `data` in one call.
pub fn sha256(data: &[u8]) -> Sha256Digest {
    let mut hasher = Sha256::new();
    hasher.update(data);
    hasher.finalize()
}

/// An incremental SHA-256: feed it pieces, then take the digest.
///
/// Hashing a concatenation piece by piece gives the digest of the whole without building the
/// concatenated buffer, which is how the request and response hashes are computed.
#[derive(Clone, Default)]
pub struct Sha256(sha2::Sha256);

impl Sha256 {
    /// A hasher with nothing fed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything fed.
    pub fn finalize(self) -> Sha256Digest {
        Sha256Digest(self.0.finalize().into())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha256").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        assert_eq!(
            sha256(b"").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // workerId of Avalon's default singleton worker (wire spec §1.11).
        assert_eq!(
            sha256(b"singleton-worker-1").to_hex(),
            "0b03616a46ea9cf574f3f8eedc93a62c691a60dbd3783427c0243bacfe5bba94"
        );
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = Sha256::new();
        h.update(b"singleton-");
        h.update(b"worker-1");
        assert_eq!(h.finalize(), sha256(b"singleton-worker-1"));
    }

    #[test]
    fn hex_cases() {
        let d = sha256(b"abc");
        assert_eq!(d.to_hex().to_uppercase(), d.to_hex_upper());
        assert_eq!(Sha256Digest::from_slice(d.as_bytes()), Some(d));
        assert_eq!(Sha256Digest::from_slice(&[0; 31]), None);
    }
}
