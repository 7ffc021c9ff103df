//! Sealed blobs: data encrypted under a platform's sealing key, so that only the same enclave
//! (same measurement) on the same platform can read it back. The format every [`crate::Platform`]
//! uses unless it seals in a way of its own.
//!
//! Layout: `AFS1 || iv(12) || AES-256-GCM(sealing key, label_len(u16 BE) || label || payload)`.
//! The label says what the blob holds (`worker-keys`, `workload-state:<name>`) and is inside the
//! authenticated plaintext, so the host cannot pass one sealed blob off as another.

use afallon_crypto::AesKey;
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"AFS1";

/// Why a sealed blob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Not a sealed blob of this format.
    #[error("not an afallon sealed blob")]
    Malformed,
    /// The blob does not decrypt: sealed by another enclave or platform, or altered.
    #[error("sealed blob does not open: sealed by another enclave, or altered")]
    Authentication,
    /// The blob opens but holds something else.
    #[error("sealed blob holds {found:?}, expected {expected:?}")]
    WrongLabel {
        /// The label wanted.
        expected: String,
        /// The label found.
        found: String,
    },
    /// Sealing failed.
    #[error("sealing failed")]
    Seal,
    /// The platform could not seal or unseal (its sealing service failed, say).
    #[error("the platform could not seal: {0}")]
    Platform(String),
}

/// Seals `payload`, labelled `label`, under `key`.
///
/// # Errors
/// [`SealError::Seal`] if the label is longer than 65,535 bytes or encryption fails.
pub fn seal(key: &AesKey, label: &str, payload: &[u8]) -> Result<Vec<u8>, SealError> {
    let label_len = u16::try_from(label.len()).map_err(|_| SealError::Seal)?;
    let mut plaintext = Zeroizing::new(Vec::with_capacity(2 + label.len() + payload.len()));
    plaintext.extend_from_slice(&label_len.to_be_bytes());
    plaintext.extend_from_slice(label.as_bytes());
    plaintext.extend_from_slice(payload);
    let sealed = key.seal_with_random_iv(&plaintext).map_err(|_| SealError::Seal)?;
    let mut out = Vec::with_capacity(MAGIC.len() + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a blob sealed under `key` with the label `label`.
///
/// # Errors
/// [`SealError`] if the blob is not of this format, was sealed under another key or altered, or
/// holds another label.
pub fn unseal(key: &AesKey, label: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let sealed = blob.strip_prefix(MAGIC.as_slice()).ok_or(SealError::Malformed)?;
    let plaintext =
        Zeroizing::new(key.open_with_prefixed_iv(sealed).map_err(|_| SealError::Authentication)?);
    let (len, rest) = plaintext.split_first_chunk::<2>().ok_or(SealError::Malformed)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(SealError::Malformed);
    }
    let (found, payload) = rest.split_at(len);
    if found != label.as_bytes() {
        return Err(SealError::WrongLabel {
            expected: label.to_owned(),
            found: String::from_utf8_lossy(found).into_owned(),
        });
    }
    Ok(Zeroizing::new(payload.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let key = AesKey::from_bytes([3; 32]);
        let blob = seal(&key, "worker-keys", b"secret").expect("seal");
        assert_eq!(&unseal(&key, "worker-keys", &blob).expect("unseal")[..], b"secret");
        assert!(matches!(
            unseal(&key, "workload-state:x", &blob),
            Err(SealError::WrongLabel { .. })
        ));
        assert_eq!(
            unseal(&AesKey::from_bytes([4; 32]), "worker-keys", &blob),
            Err(SealError::Authentication)
        );
        for i in 0..blob.len() {
            let mut flipped = blob.clone();
            flipped[i] ^= 0x01;
            assert!(unseal(&key, "worker-keys", &flipped).is_err(), "flip at {i} accepted");
        }
        assert_eq!(unseal(&key, "worker-keys", b"AFS"), Err(SealError::Malformed));
    }
}
