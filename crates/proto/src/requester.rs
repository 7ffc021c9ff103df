//! The requester's side of a work order (wire spec §3.14): build an encrypted, hashed and
//! optionally signed request for a worker, then verify the worker's signed result and decrypt it.
//!
//! Pure and transport-free; the client SDK sends what [`WorkOrderBuilder`] builds and hands what
//! comes back to [`PendingResult::open`].

use afallon_crypto::{
    AesKey, EcdsaSigningKey, EcdsaVerifyingKey, Iv, OaepHash, RsaPublicKey, random_array, sha256,
};

use crate::hash::{ext_verification_key_digest, request_hash, response_hash};
use crate::protection::{self, ItemKey, ProtectionError};
use crate::work_order::{DataItem, WorkOrderRequest, WorkOrderResult};

/// How an input item is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputProtection {
    /// Encrypted with the session key (the default; `encryptedDataEncryptionKey` absent).
    Session,
    /// Not encrypted (`encryptedDataEncryptionKey: "-"`).
    Plain,
    /// Encrypted with its own data key, wrapped for the worker.
    DataKey,
}

/// Builds a work order for one worker.
#[derive(Debug)]
pub struct WorkOrderBuilder {
    request: WorkOrderRequest,
    session_key: AesKey,
    iv: Iv,
    worker_key: RsaPublicKey,
    oaep: OaepHash,
    output_keys: Vec<(i64, ItemKey<'static>)>,
}

fn random_hex<const N: usize>() -> Result<String, ProtectionError> {
    Ok(hex::encode(random_array::<N>()?))
}

impl WorkOrderBuilder {
    /// A work order for `worker_id`, whose encryption key is `worker_key` (wrapped with `oaep`),
    /// running `workload_name`. Draws a fresh session key and IV, and random work-order id,
    /// requester id (both 32 bytes) and requester nonce (16 bytes), as Avalon's SDK does.
    ///
    /// # Errors
    /// [`ProtectionError::Random`] or [`ProtectionError::Wrap`].
    pub fn new(
        worker_id: &str,
        worker_key: &RsaPublicKey,
        oaep: OaepHash,
        workload_name: &str,
    ) -> Result<Self, ProtectionError> {
        let session_key = AesKey::generate()?;
        let iv = Iv::generate()?;
        let request = WorkOrderRequest {
            response_timeout_m_secs: 6000,
            payload_format: "JSON-RPC".into(),
            result_uri: None,
            notify_uri: None,
            work_order_id: random_hex::<32>()?,
            worker_id: worker_id.to_owned(),
            workload_id: crate::workload_id_from_name(workload_name),
            requester_id: random_hex::<32>()?,
            worker_encryption_key: Some(hex::encode(worker_key.to_pem())),
            data_encryption_algorithm: Some("AES-GCM-256".into()),
            encrypted_session_key: protection::wrap_session_key(worker_key, oaep, &session_key)?,
            session_key_iv: Some(protection::encode_iv(&iv)),
            requester_nonce: random_hex::<16>()?,
            encrypted_request_hash: String::new(),
            requester_signature: None,
            verifying_key: None,
            in_data: Vec::new(),
            out_data: Vec::new(),
        };
        Ok(Self {
            request,
            session_key,
            iv,
            worker_key: worker_key.clone(),
            oaep,
            output_keys: Vec::new(),
        })
    }

    /// Uses this work-order id instead of a random one.
    #[must_use]
    pub fn work_order_id(mut self, id: impl Into<String>) -> Self {
        self.request.work_order_id = id.into();
        self
    }

    /// Uses this requester id instead of a random one.
    #[must_use]
    pub fn requester_id(mut self, id: impl Into<String>) -> Self {
        self.request.requester_id = id.into();
        self
    }

    /// Adds an input at the next index, with its `dataHash`.
    ///
    /// # Errors
    /// [`ProtectionError`] if encryption fails.
    pub fn input(
        &mut self,
        data: &[u8],
        protection: InputProtection,
    ) -> Result<&mut Self, ProtectionError> {
        let index = i64::try_from(self.request.in_data.len()).unwrap_or(i64::MAX);
        let session = ItemKey::Session { key: &self.session_key, iv: &self.iv };
        let (key_field, iv_field, sealed) = match protection {
            InputProtection::Session => (None, None, session.seal(data)?),
            InputProtection::Plain => (Some("-".to_owned()), None, ItemKey::Plain.seal(data)?),
            InputProtection::DataKey => {
                let (wrapped, iv, key) =
                    protection::new_data_key(&self.session_key, &self.worker_key, self.oaep)?;
                (Some(wrapped), Some(iv), key.seal(data)?)
            }
        };
        self.request.in_data.push(DataItem {
            index,
            data_hash: Some(sha256(data).to_hex_upper()),
            data: Some(sealed),
            encrypted_data_encryption_key: key_field,
            iv: iv_field,
        });
        Ok(self)
    }

    /// Adds an output slot at the next index: the worker's output with the same position is
    /// protected as asked (by default, without slots, outputs use the session key).
    ///
    /// # Errors
    /// [`ProtectionError`] if a data key cannot be made.
    pub fn output(&mut self, protection: InputProtection) -> Result<&mut Self, ProtectionError> {
        let index = i64::try_from(self.request.out_data.len()).unwrap_or(i64::MAX);
        let (key_field, iv_field) = match protection {
            InputProtection::Session => (String::new(), String::new()),
            InputProtection::Plain => ("-".to_owned(), String::new()),
            InputProtection::DataKey => {
                let (wrapped, iv, key) =
                    protection::new_data_key(&self.session_key, &self.worker_key, self.oaep)?;
                self.output_keys.push((index, key));
                (wrapped, iv)
            }
        };
        self.request.out_data.push(DataItem {
            index,
            data_hash: None,
            data: None,
            encrypted_data_encryption_key: Some(key_field),
            iv: Some(iv_field),
        });
        Ok(self)
    }

    /// Computes the request hash, encrypts it, and signs it with `signer` if given.
    ///
    /// # Errors
    /// [`ProtectionError`] if encryption fails.
    pub fn build(
        mut self,
        signer: Option<&EcdsaSigningKey>,
    ) -> Result<(WorkOrderRequest, PendingResult), ProtectionError> {
        let hash = request_hash(&self.request);
        self.request.encrypted_request_hash =
            protection::encrypt_request_hash(&self.session_key, &self.iv, &hash)?;
        if let Some(signer) = signer {
            self.request.requester_signature = Some(protection::sign_digest_base64(signer, &hash));
            self.request.verifying_key = Some(signer.verifying_key().to_pem());
        }
        let pending = PendingResult {
            work_order_id: self.request.work_order_id.clone(),
            requester_nonce: self.request.requester_nonce.clone(),
            session_key: self.session_key,
            iv: self.iv,
            output_keys: self.output_keys,
        };
        Ok((self.request, pending))
    }
}

/// Why a result was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResultError {
    /// The result is for another work order.
    #[error("the result is for work order {0}, not this one")]
    WrongWorkOrder(String),
    /// `workerSignature` (or, in the pool model, `extVerificationKeySignature`) does not verify.
    #[error("the worker's signature does not verify: {0}")]
    Signature(ProtectionError),
    /// An output could not be decrypted.
    #[error("output could not be decrypted: {0}")]
    Decryption(ProtectionError),
    /// An output is encrypted with a data key this requester did not make.
    #[error("output {0} uses a data key this request did not set")]
    UnknownOutputKey(i64),
    /// An output's plaintext does not match its `dataHash`.
    #[error("output {0} does not match its dataHash")]
    DataHash(i64),
}

/// What a requester keeps after submitting: enough to verify and decrypt the result.
#[derive(Debug)]
pub struct PendingResult {
    work_order_id: String,
    requester_nonce: String,
    session_key: AesKey,
    iv: Iv,
    output_keys: Vec<(i64, ItemKey<'static>)>,
}

impl PendingResult {
    /// The work order's id.
    pub fn work_order_id(&self) -> &str {
        &self.work_order_id
    }

    /// Verifies the worker's signature (wire spec §3.8: one step with the worker's verification
    /// key, or two steps through `extVerificationKey` in the pool model), then decrypts every
    /// output and checks its `dataHash`. Returns `(index, plaintext)` in index order.
    ///
    /// # Errors
    /// [`ResultError`] naming the check that failed.
    pub fn open(
        &self,
        result: &WorkOrderResult,
        worker_verification_key: &str,
    ) -> Result<Vec<(i64, Vec<u8>)>, ResultError> {
        let key = EcdsaVerifyingKey::from_pem(worker_verification_key)
            .map_err(|e| ResultError::Signature(ProtectionError::VerificationKey(e)))?;
        self.open_with_key(result, &key)
    }

    /// As [`PendingResult::open`], with the worker's verification key parsed once beforehand (a
    /// requester sending many orders to one worker saves parsing it for every result).
    ///
    /// # Errors
    /// [`ResultError`] naming the check that failed.
    pub fn open_with_key(
        &self,
        result: &WorkOrderResult,
        worker_key: &EcdsaVerifyingKey,
    ) -> Result<Vec<(i64, Vec<u8>)>, ResultError> {
        if result.work_order_id != self.work_order_id {
            return Err(ResultError::WrongWorkOrder(result.work_order_id.clone()));
        }
        let digest = response_hash(result);
        match (&result.ext_verification_key, &result.ext_verification_key_signature) {
            (Some(ext_key), Some(ext_signature)) => {
                let vouched = ext_verification_key_digest(ext_key, &self.requester_nonce);
                protection::verify_digest_base64_with(
                    "extVerificationKeySignature",
                    worker_key,
                    &vouched,
                    ext_signature,
                )
                .map_err(ResultError::Signature)?;
                protection::verify_digest_base64(
                    "workerSignature",
                    ext_key,
                    &digest,
                    &result.worker_signature,
                )
            }
            _ => protection::verify_digest_base64_with(
                "workerSignature",
                worker_key,
                &digest,
                &result.worker_signature,
            ),
        }
        .map_err(ResultError::Signature)?;

        let session = ItemKey::Session { key: &self.session_key, iv: &self.iv };
        let mut outputs = Vec::with_capacity(result.out_data.len());
        for item in &result.out_data {
            let data = item.data.as_deref().unwrap_or("");
            let key = match protection::DataKeyKind::of(item) {
                protection::DataKeyKind::Plain => &ItemKey::Plain,
                protection::DataKeyKind::Session => &session,
                protection::DataKeyKind::PerItem { .. } => self
                    .output_keys
                    .iter()
                    .find(|(index, _)| *index == item.index)
                    .map(|(_, key)| key)
                    .ok_or(ResultError::UnknownOutputKey(item.index))?,
            };
            let plaintext = key.open(item.index, data).map_err(ResultError::Decryption)?;
            protection::check_data_hash(item, &plaintext)
                .map_err(|_| ResultError::DataHash(item.index))?;
            outputs.push((item.index, plaintext));
        }
        outputs.sort_by_key(|(index, _)| *index);
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use afallon_crypto::{EcdsaSigningKey, RsaPrivateKey};

    use super::*;
    use crate::hash::ext_verification_key_digest;

    /// A pool-model result (wire spec §3.8): signed by a per-order key, which the worker's key
    /// vouches for together with the requester's nonce.
    #[test]
    fn two_step_verification_of_pool_results() {
        let worker_rsa = RsaPrivateKey::generate().expect("keygen");
        let worker_key = EcdsaSigningKey::generate().expect("rng");
        let order_key = EcdsaSigningKey::generate().expect("rng");
        let mut builder =
            WorkOrderBuilder::new("ab", worker_rsa.public_key(), OaepHash::Sha1, "echo-result")
                .expect("builder");
        builder.input(b"x", InputProtection::Session).expect("input");
        let (request, pending) = builder.build(None).expect("build");

        let session = protection::unwrap_session_key(
            &worker_rsa,
            OaepHash::Sha1,
            &request.encrypted_session_key,
        )
        .expect("unwrap");
        let iv = protection::decode_iv("iv", request.session_key_iv.as_deref().expect("iv"))
            .expect("iv");
        let ext_key = order_key.verifying_key().to_pem();
        let mut result = WorkOrderResult {
            work_order_id: request.work_order_id.clone(),
            workload_id: request.workload_id.clone(),
            worker_id: request.worker_id.clone(),
            requester_id: request.requester_id.clone(),
            worker_nonce: "nonce".into(),
            worker_signature: String::new(),
            out_data: vec![DataItem {
                index: 0,
                data_hash: Some(sha256(b"RESULT: x").to_hex_upper()),
                data: Some(
                    ItemKey::Session { key: &session, iv: &iv }.seal(b"RESULT: x").expect("seal"),
                ),
                encrypted_data_encryption_key: Some(String::new()),
                iv: Some(String::new()),
            }],
            ext_verification_key_signature: Some(protection::sign_digest_base64(
                &worker_key,
                &ext_verification_key_digest(&ext_key, &request.requester_nonce),
            )),
            ext_verification_key: Some(ext_key),
        };
        result.worker_signature =
            protection::sign_digest_base64(&order_key, &response_hash(&result));
        let worker_pem = worker_key.verifying_key().to_pem();
        assert_eq!(
            pending.open(&result, &worker_pem).expect("two steps verify"),
            vec![(0, b"RESULT: x".to_vec())]
        );

        // The per-order key vouched for by someone else is refused.
        let stranger = EcdsaSigningKey::generate().expect("rng").verifying_key().to_pem();
        assert!(matches!(pending.open(&result, &stranger), Err(ResultError::Signature(_))));
        // And a per-order key swapped in without the worker's vouching is refused.
        let mut swapped = result.clone();
        swapped.ext_verification_key =
            Some(EcdsaSigningKey::generate().expect("rng").verifying_key().to_pem());
        assert!(matches!(pending.open(&swapped, &worker_pem), Err(ResultError::Signature(_))));
        // A result for another order is refused before anything else.
        let mut other = result;
        other.work_order_id = "ff".into();
        assert_eq!(
            pending.open(&other, &worker_pem),
            Err(ResultError::WrongWorkOrder("ff".into()))
        );
    }
}
