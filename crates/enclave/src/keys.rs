//! The worker's keys: the secp256k1 signing key that signs results and the RSA-3072 encryption
//! key that requesters wrap session keys under. They are created at sign-up, sealed, and never
//! leave this crate in the clear. And the keys an order is processed with ([`OrderKeys`]).

use std::sync::Arc;

use afallon_attest::{Platform, SealError};
use afallon_crypto::{AesKey, EcdsaSigningKey, OaepHash, RsaPrivateKey};
use afallon_proto::protection::{self, DataKeyUnwrap, ProtectionError};
use afallon_proto::{WorkOrderRequest, WorkOrderResult, response_hash};
use zeroize::Zeroizing;

use crate::EnclaveError;
use crate::error::ProcessError;
use crate::pool::PooledKeys;

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

    /// `len(rsa)(u32 BE) || rsa PKCS#8 DER || ecdsa scalar(32)`: what is sealed, or handed to
    /// another attested KME of the same pool.
    pub(crate) fn payload(&self) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let rsa = self.encryption.to_pkcs8_der_for_sealing().ok_or(SealError::Seal)?;
        let scalar = self.signing.to_scalar_bytes_for_sealing();
        let rsa_len = u32::try_from(rsa.len()).map_err(|_| SealError::Seal)?;
        let mut payload = Zeroizing::new(Vec::with_capacity(4 + rsa.len() + 32));
        payload.extend_from_slice(&rsa_len.to_be_bytes());
        payload.extend_from_slice(&rsa);
        payload.extend_from_slice(&scalar[..]);
        Ok(payload)
    }

    /// The keys in a [`WorkerKeys::payload`].
    pub(crate) fn from_payload(payload: &[u8]) -> Result<Self, SealError> {
        let (len, rest) = payload.split_first_chunk::<4>().ok_or(SealError::Malformed)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| SealError::Malformed)?;
        if rest.len() != len + 32 {
            return Err(SealError::Malformed);
        }
        let (rsa, scalar) = rest.split_at(len);
        Ok(Self {
            encryption: RsaPrivateKey::from_pkcs8_der(rsa).map_err(|_| SealError::Malformed)?,
            signing: EcdsaSigningKey::from_scalar_bytes(scalar)
                .map_err(|_| SealError::Malformed)?,
        })
    }

    /// The keys, sealed by `platform`.
    pub(crate) fn seal(&self, platform: &dyn Platform) -> Result<Vec<u8>, EnclaveError> {
        Ok(platform.seal(LABEL, &self.payload()?)?)
    }

    pub(crate) fn unseal(platform: &dyn Platform, blob: &[u8]) -> Result<Self, EnclaveError> {
        Ok(Self::from_payload(&platform.unseal(LABEL, blob)?)?)
    }
}

/// The keys an order is processed with: a worker's own (a singleton worker), or those a KME
/// unwrapped and made for it (a WPE in a pool).
#[derive(Clone)]
pub(crate) enum OrderKeys {
    /// The worker's: its RSA key unwraps the session key and the per-item keys, its signing key
    /// signs the result.
    Worker(Arc<WorkerKeys>),
    /// A KME's pre-processing: the unwrapped keys, and a per-order signing key the pool's key
    /// vouches for.
    Pooled(Arc<PooledKeys>),
}

impl OrderKeys {
    /// The order's session key.
    pub(crate) fn session_key(
        &self,
        request: &WorkOrderRequest,
        oaep: OaepHash,
    ) -> Result<AesKey, ProcessError> {
        match self {
            Self::Worker(keys) => protection::unwrap_session_key(
                &keys.encryption,
                oaep,
                &request.encrypted_session_key,
            )
            .map_err(|e| crate::process::protection_error(e, "encryptedSessionKey")),
            Self::Pooled(keys) => keys.session_key(request),
        }
    }

    /// What unwraps the order's RSA-wrapped per-item keys.
    pub(crate) fn data_keys(&self) -> &dyn DataKeyUnwrap {
        match self {
            Self::Worker(keys) => &keys.encryption,
            Self::Pooled(keys) => &**keys,
        }
    }

    /// Signs `result` (its `workerSignature`, and in a pool its `extVerificationKey` and the
    /// pool's signature over it).
    pub(crate) fn sign(&self, result: &mut WorkOrderResult) -> Result<(), ProtectionError> {
        match self {
            Self::Worker(keys) => {
                result.worker_signature =
                    protection::sign_digest_base64(&keys.signing, &response_hash(result));
                Ok(())
            }
            Self::Pooled(keys) => keys.sign(result),
        }
    }
}
