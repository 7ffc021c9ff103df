//! The requester's side of a work order (wire spec §3.14): build an encrypted, hashed and
//! optionally signed request for a worker, then verify the worker's signed result and decrypt it.
//!
//! Pure and transport-free; the client SDK sends what [`WorkOrderBuilder`] builds and hands what
//! comes back to [`PendingResult::open`].

use afallon_crypto::{
    AesKey, EcdsaSigningKey, EcdsaVerifyingKey, Iv, OaepHash, RsaPublicKey, Sha256Digest,
    random_array, sha256,
};

use crate::hash::{
    ext_verification_key_digest, request_digest, request_hash, response_hash, sealed_request_digest,
};
use crate::protection::{self, ItemKey, ProtectionError};
use crate::work_order::{DataItem, WorkOrderRequest, WorkOrderResult};

/// How an input item is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputProtection {
    /// Encrypted with the session key (the default; `encryptedDataEncryptionKey` absent).
    Session,
    /// Not encrypted (`encryptedDataEncryptionKey: "-"`).
    Plain,
    /// Encrypted with its own data key, wrapped for the worker under its RSA key (the EEA's
    /// per-item key: one more RSA decryption per item for the worker).
    DataKey,
    /// Encrypted with its own data key, sealed under the session key
    /// (`protection::new_sealed_data_key`): afallon's workers only, and the protection to use
    /// with them, since the session key and IV encrypt the request hash, whose plaintext anyone
    /// can compute (docs/security.md).
    SealedKey,
}

/// Builds a work order for one worker.
#[derive(Debug)]
pub struct WorkOrderBuilder {
    request: WorkOrderRequest,
    session_key: AesKey,
    iv: Iv,
    worker_key: RsaPublicKey,
    oaep: OaepHash,
    output_slots: Vec<OutputSlot>,
}

/// An `outData` slot this requester sent: the strings it sent, and how it will open the output.
#[derive(Debug)]
struct OutputSlot {
    index: i64,
    encrypted_data_encryption_key: String,
    iv: String,
    key: SlotKey,
}

/// The key of a plaintext output.
static PLAIN: ItemKey<'static> = ItemKey::Plain;

/// The key an output slot asked for.
#[derive(Debug)]
enum SlotKey {
    Session,
    Plain,
    DataKey(ItemKey<'static>),
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
            output_slots: Vec::new(),
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
            InputProtection::SealedKey => {
                let (sealed, iv, key) = protection::new_sealed_data_key(&self.session_key)?;
                (Some(sealed), Some(iv), key.seal(data)?)
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
        let (key_field, iv_field, key) = match protection {
            InputProtection::Session => (String::new(), String::new(), SlotKey::Session),
            InputProtection::Plain => ("-".to_owned(), String::new(), SlotKey::Plain),
            InputProtection::DataKey => {
                let (wrapped, iv, key) =
                    protection::new_data_key(&self.session_key, &self.worker_key, self.oaep)?;
                (wrapped, iv, SlotKey::DataKey(key))
            }
            InputProtection::SealedKey => {
                let (sealed, iv, key) = protection::new_sealed_data_key(&self.session_key)?;
                (sealed, iv, SlotKey::DataKey(key))
            }
        };
        self.request.out_data.push(DataItem {
            index,
            data_hash: None,
            data: None,
            encrypted_data_encryption_key: Some(key_field.clone()),
            iv: Some(iv_field.clone()),
        });
        self.output_slots.push(OutputSlot {
            index,
            encrypted_data_encryption_key: key_field,
            iv: iv_field,
            key,
        });
        Ok(self)
    }

    /// Computes the request hash, signs it with `signer` if given, and seals it with the digest
    /// of the rest of the request (`protection::seal_request_hash`).
    ///
    /// # Errors
    /// [`ProtectionError`] if encryption fails.
    pub fn build(
        mut self,
        signer: Option<&EcdsaSigningKey>,
    ) -> Result<(WorkOrderRequest, PendingResult), ProtectionError> {
        let hash = request_hash(&self.request);
        if let Some(signer) = signer {
            self.request.requester_signature = Some(protection::sign_digest_base64(signer, &hash));
            self.request.verifying_key = Some(signer.verifying_key().to_pem());
        }
        // The hash, and the digest of everything else: afallon's worker refuses a request
        // altered where Avalon's hash cannot see; Avalon's reads the first 32 bytes only.
        self.request.encrypted_request_hash = protection::seal_request_hash(
            &self.session_key,
            &self.iv,
            &hash,
            &sealed_request_digest(&self.request),
        )?;
        let pending = PendingResult {
            work_order_id: self.request.work_order_id.clone(),
            worker_id: self.request.worker_id.clone(),
            workload_id: self.request.workload_id.clone(),
            requester_id: self.request.requester_id.clone(),
            requester_nonce: self.request.requester_nonce.clone(),
            request_digest: request_digest(&self.request),
            session_key: self.session_key,
            iv: self.iv,
            output_slots: self.output_slots,
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
    /// The result names another worker, workload or requester than the request did.
    #[error("the result's {0} is not the request's")]
    OtherIds(&'static str),
    /// The worker signed a result for another request with this order's ids: the order was
    /// replaced or altered on its way (afallon's worker binds the request's digest into
    /// `workerNonce`).
    #[error("the result answers another request than the one sent: the order was substituted")]
    OtherRequest,
    /// Two outputs at one index.
    #[error("output {0} appears twice")]
    DuplicateOutput(i64),
    /// An output is protected otherwise than the request asked (for example in plaintext where
    /// the request asked for encryption).
    #[error("output {0} is not protected as the request asked")]
    OutputProtection(i64),
    /// An output's plaintext does not match its `dataHash`.
    #[error("output {0} does not match its dataHash")]
    DataHash(i64),
}

/// What a requester keeps after submitting: enough to verify and decrypt the result.
#[derive(Debug)]
pub struct PendingResult {
    work_order_id: String,
    worker_id: String,
    workload_id: String,
    requester_id: String,
    requester_nonce: String,
    /// [`request_digest`] of the request as sent.
    request_digest: Sha256Digest,
    session_key: AesKey,
    iv: Iv,
    /// The `outData` slots sent; none means the workload decides, every output under the
    /// session key.
    output_slots: Vec<OutputSlot>,
}

impl PendingResult {
    /// The work order's id.
    pub fn work_order_id(&self) -> &str {
        &self.work_order_id
    }

    /// Verifies the worker's signature (wire spec §3.8: one step with the worker's verification
    /// key, or two steps through `extVerificationKey` in the pool model), checks that the result
    /// answers this very request, then decrypts every output and checks its `dataHash`. Returns
    /// `(index, plaintext)` in index order.
    ///
    /// Every check is decided by what was sent, never by what came back: the ids must be the
    /// request's; when the worker binds the request's digest into `workerNonce` (afallon's does)
    /// it must be this request's ([`request_digest`]: Avalon's request hash is ambiguous); and each output is opened only as the request asked, under the
    /// session key unless its slot asked for plaintext or a data key of this requester's, at an
    /// index given once. See [`PendingResult::open_with_key`].
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
        for (field, sent, got) in [
            ("workerId", &self.worker_id, &result.worker_id),
            ("workloadId", &self.workload_id, &result.workload_id),
            ("requesterId", &self.requester_id, &result.requester_id),
        ] {
            if sent != got {
                return Err(ResultError::OtherIds(field));
            }
        }
        self.verify_signature(result, worker_key)?;
        if protection::worker_nonce_binding(&result.worker_nonce)
            .is_some_and(|bound| &bound != self.request_digest.as_bytes())
        {
            return Err(ResultError::OtherRequest);
        }

        let session = ItemKey::Session { key: &self.session_key, iv: &self.iv };
        let mut outputs: Vec<(i64, Vec<u8>)> = Vec::with_capacity(result.out_data.len());
        for item in &result.out_data {
            if outputs.iter().any(|(index, _)| *index == item.index) {
                return Err(ResultError::DuplicateOutput(item.index));
            }
            let key = self.output_key(item, &session)?;
            let data = item.data.as_deref().unwrap_or("");
            let plaintext = key.open(item.index, data).map_err(ResultError::Decryption)?;
            protection::check_data_hash(item, &plaintext)
                .map_err(|_| ResultError::DataHash(item.index))?;
            outputs.push((item.index, plaintext));
        }
        outputs.sort_by_key(|(index, _)| *index);
        Ok(outputs)
    }

    /// `workerSignature` over the response hash, directly or through `extVerificationKey`.
    fn verify_signature(
        &self,
        result: &WorkOrderResult,
        worker_key: &EcdsaVerifyingKey,
    ) -> Result<(), ResultError> {
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
        .map_err(ResultError::Signature)
    }

    /// The key to open `item` with, as the request asked: an output that fills a slot the
    /// request sent must carry exactly the key and IV strings sent, and is opened as the slot
    /// asked; any other output (every output, when the request sent no slots) must be under the
    /// session key, which only the worker that unwrapped it can have used.
    fn output_key<'a>(
        &'a self,
        item: &DataItem,
        session: &'a ItemKey<'a>,
    ) -> Result<&'a ItemKey<'a>, ResultError> {
        let index = item.index;
        let Some(slot) = self.output_slots.iter().find(|slot| slot.index == index) else {
            let no_iv = item.iv.as_deref().is_none_or(str::is_empty);
            return match protection::DataKeyKind::of(item) {
                protection::DataKeyKind::Session if no_iv => Ok(session),
                _ => Err(ResultError::OutputProtection(index)),
            };
        };
        if item.encrypted_data_encryption_key.as_deref().unwrap_or("")
            != slot.encrypted_data_encryption_key
            || item.iv.as_deref().unwrap_or("") != slot.iv
        {
            return Err(ResultError::OutputProtection(index));
        }
        Ok(match &slot.key {
            SlotKey::Session => session,
            SlotKey::Plain => &PLAIN,
            SlotKey::DataKey(key) => key,
        })
    }
}

#[cfg(test)]
mod tests {
    use afallon_crypto::{EcdsaSigningKey, RsaPrivateKey};

    use super::*;
    use crate::hash::ext_verification_key_digest;

    /// How the worker under test writes its nonce.
    #[derive(Clone, Copy)]
    enum Nonce {
        /// afallon's: bound to the request hash.
        Bound,
        /// Avalon's: base64 of SHA-256 of random bytes, bound to nothing.
        Avalon,
    }

    /// A worker's keys: RSA for session keys, ECDSA for signatures, and the verification key as
    /// its record publishes it.
    fn test_worker() -> (RsaPrivateKey, EcdsaSigningKey, String) {
        let rsa = RsaPrivateKey::generate().expect("keygen");
        let signing = EcdsaSigningKey::generate().expect("rng");
        let pem = signing.verifying_key().to_pem();
        (rsa, signing, pem)
    }

    /// A worker's answer to `request` (as the enclave writes it: output i fills slot i, else a
    /// session-key output at index i), signed with `signer`.
    fn answer(
        request: &WorkOrderRequest,
        worker_rsa: &RsaPrivateKey,
        signer: &EcdsaSigningKey,
        outputs: &[&[u8]],
        nonce: Nonce,
    ) -> WorkOrderResult {
        let session = protection::unwrap_session_key(
            worker_rsa,
            OaepHash::Sha1,
            &request.encrypted_session_key,
        )
        .expect("unwrap");
        let iv = protection::decode_iv("iv", request.session_key_iv.as_deref().expect("iv"))
            .expect("iv");
        let out_data = outputs
            .iter()
            .enumerate()
            .map(|(i, plaintext)| {
                let mut item = match request.out_data.get(i) {
                    Some(slot) => DataItem { data_hash: None, data: None, ..slot.clone() },
                    None => DataItem {
                        index: i64::try_from(i).expect("index"),
                        data_hash: None,
                        data: None,
                        encrypted_data_encryption_key: Some(String::new()),
                        iv: Some(String::new()),
                    },
                };
                let key = protection::item_key(&item, &session, &iv, worker_rsa, OaepHash::Sha1)
                    .expect("item key");
                item.data_hash = Some(sha256(plaintext).to_hex_upper());
                item.data = Some(key.seal(plaintext).expect("seal"));
                item
            })
            .collect();
        let worker_nonce = match nonce {
            Nonce::Bound => protection::bound_worker_nonce(&request_digest(request), &[1; 16]),
            Nonce::Avalon => protection::encode_base64(sha256(&[1; 16]).as_bytes()),
        };
        let mut result = WorkOrderResult {
            work_order_id: request.work_order_id.clone(),
            workload_id: request.workload_id.clone(),
            worker_id: request.worker_id.clone(),
            requester_id: request.requester_id.clone(),
            worker_nonce,
            worker_signature: String::new(),
            out_data,
            ext_verification_key: None,
            ext_verification_key_signature: None,
        };
        result.worker_signature = protection::sign_digest_base64(signer, &response_hash(&result));
        result
    }

    /// A listener that replaces the order on its way: same ids, its own session key and inputs,
    /// and (to read the answer) a plaintext output slot. The worker answers it honestly; the
    /// requester must refuse the answer whatever the worker's nonce says.
    #[test]
    fn substituted_orders_are_refused() {
        let (worker_rsa, worker_key, worker_pem) = test_worker();
        let new = || {
            WorkOrderBuilder::new("ab", worker_rsa.public_key(), OaepHash::Sha1, "echo-result")
                .expect("builder")
        };
        let mut victim = new();
        victim.input(b"secret", InputProtection::Session).expect("input");
        let (sent, pending) = victim.build(None).expect("build");

        // The honest answer opens, whatever the nonce.
        for nonce in [Nonce::Bound, Nonce::Avalon] {
            let honest = answer(&sent, &worker_rsa, &worker_key, &[b"RESULT: secret"], nonce);
            assert_eq!(
                pending.open(&honest, &worker_pem).expect("opens"),
                [(0, b"RESULT: secret".to_vec())]
            );
        }

        let substitute = |plain_slot: bool| {
            let mut attacker =
                new().work_order_id(&sent.work_order_id).requester_id(&sent.requester_id);
            attacker.input(b"forged", InputProtection::Session).expect("input");
            if plain_slot {
                attacker.output(InputProtection::Plain).expect("slot");
            }
            attacker.build(None).expect("build").0
        };
        let forged = substitute(true);
        assert_eq!((&forged.worker_id, &forged.workload_id), (&sent.worker_id, &sent.workload_id));
        // afallon's worker binds the request: refused as another request.
        let bound = answer(&forged, &worker_rsa, &worker_key, &[b"RESULT: forged"], Nonce::Bound);
        assert_eq!(pending.open(&bound, &worker_pem), Err(ResultError::OtherRequest));
        // An unbound worker: refused because the request asked for no plaintext output.
        let unbound =
            answer(&forged, &worker_rsa, &worker_key, &[b"RESULT: forged"], Nonce::Avalon);
        assert_eq!(pending.open(&unbound, &worker_pem), Err(ResultError::OutputProtection(0)));
        // ... and a session-key output under the attacker's key does not decrypt.
        let forged = substitute(false);
        let unbound =
            answer(&forged, &worker_rsa, &worker_key, &[b"RESULT: forged"], Nonce::Avalon);
        assert!(matches!(pending.open(&unbound, &worker_pem), Err(ResultError::Decryption(_))));
    }

    /// Changes that keep Avalon's request hash (it concatenates strings without separators and
    /// leaves indices out) still change the request's digest, so a bound result is refused.
    #[test]
    fn alterations_under_the_same_request_hash_are_refused() {
        let (worker_rsa, worker_key, worker_pem) = test_worker();
        let mut builder =
            WorkOrderBuilder::new("ab", worker_rsa.public_key(), OaepHash::Sha1, "echo-result")
                .expect("builder");
        builder.input(b"public input", InputProtection::Plain).expect("input");
        builder.output(InputProtection::Session).expect("secret slot");
        builder.output(InputProtection::Plain).expect("public slot");
        let (sent, pending) = builder.build(None).expect("build");
        let both: [&[u8]; 2] = [b"secret", b"public"];
        let honest = answer(&sent, &worker_rsa, &worker_key, &both, Nonce::Bound);
        assert_eq!(pending.open(&honest, &worker_pem).expect("opens").len(), 2);

        // The host drops the session slot: the secret output would fill the plaintext slot.
        let mut dropped = sent.clone();
        dropped.out_data.remove(0);
        // The host moves the input's dataHash to the front of its data (valid base64 still).
        let mut moved = sent.clone();
        let item = &mut moved.in_data[0];
        let data_hash = item.data_hash.take().expect("hash");
        item.data = Some(format!("{data_hash}{}", item.data.as_deref().expect("data")));
        for altered in [dropped, moved] {
            assert_eq!(request_hash(&altered), request_hash(&sent), "Avalon's hash is blind to it");
            assert_ne!(request_digest(&altered), request_digest(&sent));
            let result = answer(&altered, &worker_rsa, &worker_key, &both, Nonce::Bound);
            assert_eq!(pending.open(&result, &worker_pem), Err(ResultError::OtherRequest));
        }
    }

    #[test]
    fn outputs_are_opened_only_as_the_slots_asked() {
        let (worker_rsa, worker_key, worker_pem) = test_worker();
        let mut builder =
            WorkOrderBuilder::new("ab", worker_rsa.public_key(), OaepHash::Sha1, "echo-result")
                .expect("builder");
        builder.input(b"x", InputProtection::Session).expect("input");
        builder.output(InputProtection::DataKey).expect("slot");
        builder.output(InputProtection::Plain).expect("slot");
        let (sent, pending) = builder.build(None).expect("build");

        let both: [&[u8]; 2] = [b"one", b"two"];
        let honest = answer(&sent, &worker_rsa, &worker_key, &both, Nonce::Avalon);
        assert_eq!(
            pending.open(&honest, &worker_pem).expect("opens"),
            [(0, b"one".to_vec()), (1, b"two".to_vec())]
        );
        // An output beyond the slots comes under the session key (wire spec §3.13), and opens.
        let three: [&[u8]; 3] = [b"one", b"two", b"three"];
        let extra = answer(&sent, &worker_rsa, &worker_key, &three, Nonce::Avalon);
        assert_eq!(pending.open(&extra, &worker_pem).expect("opens")[2], (2, b"three".to_vec()));
        // A slot the request did not send, asking for plaintext.
        let mut added = sent.clone();
        added.out_data.push(DataItem {
            index: 2,
            data_hash: None,
            data: None,
            encrypted_data_encryption_key: Some("-".into()),
            iv: Some(String::new()),
        });
        let plain = answer(&added, &worker_rsa, &worker_key, &three, Nonce::Avalon);
        assert_eq!(pending.open(&plain, &worker_pem), Err(ResultError::OutputProtection(2)));
        // A slot whose key was changed to plaintext (signed by the worker all the same).
        let mut changed = sent.clone();
        changed.out_data[0].encrypted_data_encryption_key = Some("-".into());
        changed.out_data[0].iv = Some(String::new());
        let plain = answer(&changed, &worker_rsa, &worker_key, &both, Nonce::Avalon);
        assert_eq!(pending.open(&plain, &worker_pem), Err(ResultError::OutputProtection(0)));
        // Two outputs at one index.
        let mut twice = honest.clone();
        twice.out_data[1].index = 0;
        twice.worker_signature =
            protection::sign_digest_base64(&worker_key, &response_hash(&twice));
        assert_eq!(pending.open(&twice, &worker_pem), Err(ResultError::DuplicateOutput(0)));
        // Ids the request did not send are refused before anything else.
        let mut other = honest;
        other.worker_id = "cd".into();
        assert_eq!(pending.open(&other, &worker_pem), Err(ResultError::OtherIds("workerId")));
    }

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
