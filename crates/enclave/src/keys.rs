//! The worker's keys: the secp256k1 signing key that signs results and the RSA-3072 encryption
//! key that requesters wrap session keys under. They are created at sign-up, sealed, and never
//! leave this crate in the clear.

use afallon_attest::{Platform, SealError};
use afallon_crypto::{EcdsaSigningKey, RsaPrivateKey};
use zeroize::Zeroizing;

use crate::EnclaveError;

const LABEL: &str = "worker-keys";

/// A worker's key pair set.
pub(crate) struct WorkerKeys {
    pub(crate) signing: EcdsaSigningKey,
    pub(crate) encryption: RsaPrivateKey,
}

impl WorkerKeys {
    pub(crate) fn generate() -> Result<Self, EnclaveError> {
        Ok(Self { signing: EcdsaSigningKey::generate()?, encryption: RsaPrivateKey::generate()? })
    }

    /// `len(rsa)(u32 BE) || rsa PKCS#8 DER || ecdsa scalar(32)`, sealed.
    pub(crate) fn seal(&self, platform: &dyn Platform) -> Result<Vec<u8>, EnclaveError> {
        let rsa = self.encryption.to_pkcs8_der_for_sealing().ok_or(SealError::Seal)?;
        let scalar = self.signing.to_scalar_bytes_for_sealing();
        let rsa_len = u32::try_from(rsa.len()).map_err(|_| SealError::Seal)?;
        let mut payload = Zeroizing::new(Vec::with_capacity(4 + rsa.len() + 32));
        payload.extend_from_slice(&rsa_len.to_be_bytes());
        payload.extend_from_slice(&rsa);
        payload.extend_from_slice(&scalar[..]);
        Ok(platform.seal(LABEL, &payload)?)
    }

    pub(crate) fn unseal(platform: &dyn Platform, blob: &[u8]) -> Result<Self, EnclaveError> {
        let payload = platform.unseal(LABEL, blob)?;
        let (len, rest) = payload.split_first_chunk::<4>().ok_or(SealError::Malformed)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| SealError::Malformed)?;
        if rest.len() != len + 32 {
            return Err(SealError::Malformed.into());
        }
        let (rsa, scalar) = rest.split_at(len);
        Ok(Self {
            encryption: RsaPrivateKey::from_pkcs8_der(rsa).map_err(|_| SealError::Malformed)?,
            signing: EcdsaSigningKey::from_scalar_bytes(scalar)
                .map_err(|_| SealError::Malformed)?,
        })
    }
}
