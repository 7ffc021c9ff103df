//! A full work order built with the crate functions, sent through the JSON-RPC parser and checked
//! the way a worker checks it; and every tampering refused with its own typed error.

use std::sync::OnceLock;

use afallon_crypto::{
    AesGcmError, AesKey, EcdsaSigningKey, Iv, OaepHash, RsaError, RsaPrivateKey, SignatureError,
    sha256,
};
use afallon_proto::protection::{self, ItemKey, ProtectionError};
use afallon_proto::{
    DataItem, Params, WorkOrderRequest, parse_request, request_hash, workload_id_from_name,
};
use serde_json::json;

fn worker_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::generate().expect("keygen"))
}

/// What the requester keeps to read the result.
struct Sent {
    body: String,
    session_key: AesKey,
    iv: Iv,
}

/// Builds a signed request with a session-key item, a plain item and a per-item-key item.
fn build(requester: &EcdsaSigningKey, session_key: AesKey, iv: Iv) -> Sent {
    let worker_public = worker_key().public_key();
    let mut request = WorkOrderRequest {
        response_timeout_m_secs: 6000,
        payload_format: "JSON-RPC".into(),
        result_uri: None,
        notify_uri: None,
        work_order_id: "ab".repeat(32),
        worker_id: afallon_proto::worker_id_from_name("singleton-worker-1"),
        workload_id: workload_id_from_name("echo-result"),
        requester_id: "cd".repeat(32),
        worker_encryption_key: Some(hex::encode(worker_public.to_pem())),
        data_encryption_algorithm: Some("AES-GCM-256".into()),
        encrypted_session_key: protection::wrap_session_key(
            worker_public,
            OaepHash::Sha1,
            &session_key,
        )
        .expect("wrap"),
        session_key_iv: Some(protection::encode_iv(&iv)),
        requester_nonce: "0f".repeat(16),
        encrypted_request_hash: String::new(),
        requester_signature: None,
        verifying_key: Some(requester.verifying_key().to_pem()),
        in_data: vec![],
        out_data: vec![],
    };
    let session = ItemKey::Session { key: &session_key, iv: &iv };
    let (wrapped, item_iv, data_key) =
        protection::new_data_key(&session_key, worker_public, OaepHash::Sha1).expect("data key");
    // Deliberately out of index order: hashing sorts by index.
    request.in_data = vec![
        DataItem {
            index: 2,
            data_hash: Some(sha256(b"per-item secret").to_hex()),
            data: Some(data_key.seal(b"per-item secret").expect("seal")),
            encrypted_data_encryption_key: Some(wrapped),
            iv: Some(item_iv),
        },
        DataItem {
            index: 0,
            data_hash: Some(sha256(b"Hello").to_hex_upper()),
            data: Some(session.seal(b"Hello").expect("seal")),
            encrypted_data_encryption_key: None,
            iv: None,
        },
        DataItem {
            index: 1,
            data_hash: None,
            data: Some(ItemKey::Plain.seal(b"in the clear").expect("encode")),
            encrypted_data_encryption_key: Some("-".into()),
            iv: None,
        },
    ];
    let hash = request_hash(&request);
    request.encrypted_request_hash =
        protection::encrypt_request_hash(&session_key, &iv, &hash).expect("encrypt");
    request.requester_signature = Some(protection::sign_digest_base64(requester, &hash));
    let body =
        json!({"jsonrpc": "2.0", "id": 4711, "method": "WorkOrderSubmit", "params": request})
            .to_string();
    Sent { body, session_key, iv }
}

/// The worker's side: parse, unwrap, check the hash and the signature, decrypt every item.
fn check(body: &str) -> Result<Vec<(i64, Vec<u8>)>, ProtectionError> {
    let parsed = parse_request(body.as_bytes()).expect("schema-valid");
    let Params::WorkOrderSubmit(request) = parsed.params else { panic!("not a submit") };
    let session_key = protection::unwrap_session_key(
        worker_key(),
        OaepHash::Sha1,
        &request.encrypted_session_key,
    )?;
    let iv =
        protection::decode_iv("sessionKeyIv", request.session_key_iv.as_deref().unwrap_or(""))?;
    let mut inputs = Vec::new();
    for item in &request.in_data {
        let key = protection::item_key(item, &session_key, &iv, worker_key(), OaepHash::Sha1)?;
        let plaintext = key.open(item.index, item.data.as_deref().unwrap_or(""))?;
        protection::check_data_hash(item, &plaintext)?;
        inputs.push((item.index, plaintext));
    }
    let hash = request_hash(&request);
    protection::check_request_hash(&session_key, &iv, &request, &hash)?;
    if let Some(signature) = request.requester_signature.as_deref().filter(|s| !s.is_empty()) {
        let key = request.verifying_key.as_deref().unwrap_or("");
        protection::verify_digest_base64("requesterSignature", key, &hash, signature)?;
    }
    inputs.sort_by_key(|(index, _)| *index);
    Ok(inputs)
}

fn fresh() -> (EcdsaSigningKey, Sent) {
    let requester = EcdsaSigningKey::generate().expect("rng");
    let sent = build(&requester, AesKey::generate().expect("rng"), Iv::generate().expect("rng"));
    (requester, sent)
}

fn edit(body: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value: serde_json::Value = serde_json::from_str(body).expect("json");
    f(&mut value["params"]);
    value.to_string()
}

#[test]
fn full_request_round_trips() {
    let (_, sent) = fresh();
    let inputs = check(&sent.body).expect("a well-formed request passes every check");
    assert_eq!(
        inputs,
        vec![
            (0, b"Hello".to_vec()),
            (1, b"in the clear".to_vec()),
            (2, b"per-item secret".to_vec())
        ]
    );
    // The requester still holds its session key and IV to read the result with.
    let sealed = sent.session_key.seal(&sent.iv, b"x").expect("seal");
    assert_eq!(sent.session_key.open(&sent.iv, &sealed).expect("open"), b"x");
}

#[test]
fn tampered_request_hash_is_a_mismatch() {
    let (_, sent) = fresh();
    // Changing a hashed field leaves the encrypted hash valid but no longer matching.
    let body = edit(&sent.body, |p| p["requesterNonce"] = json!("1f".repeat(16)));
    assert_eq!(check(&body), Err(ProtectionError::RequestHashMismatch));
    // So does replacing the encrypted hash with a valid encryption of another hash.
    let forged =
        protection::encrypt_request_hash(&sent.session_key, &sent.iv, &sha256(b"another request"))
            .expect("encrypt");
    let body = edit(&sent.body, |p| p["encryptedRequestHash"] = json!(forged));
    assert_eq!(check(&body), Err(ProtectionError::RequestHashMismatch));
}

#[test]
fn wrong_session_key_fails_authentication() {
    let (_, sent) = fresh();
    let other = AesKey::generate().expect("rng");
    let wrapped = protection::wrap_session_key(worker_key().public_key(), OaepHash::Sha1, &other)
        .expect("wrap");
    let body = edit(&sent.body, |p| p["encryptedSessionKey"] = json!(wrapped));
    // The first thing sealed under the session key is the per-item key blob (index 2 comes first).
    assert_eq!(
        check(&body),
        Err(ProtectionError::DataDecryption { index: 2, source: AesGcmError::Authentication })
    );
    // With only session items, the request hash is where it shows.
    let body = edit(&body, |p| {
        let items = p["inData"].as_array_mut().expect("array");
        items.retain(|item| item["index"] == json!(1));
    });
    assert_eq!(
        check(&body),
        Err(ProtectionError::RequestHashDecryption(AesGcmError::Authentication))
    );
}

#[test]
fn signature_by_another_key_is_invalid() {
    let (_, sent) = fresh();
    let impostor = EcdsaSigningKey::generate().expect("rng");
    let body = edit(&sent.body, |p| p["verifyingKey"] = json!(impostor.verifying_key().to_pem()));
    assert_eq!(check(&body), Err(ProtectionError::Signature(SignatureError::Invalid)));
}

#[test]
fn truncated_rsa_ciphertext_is_a_length_error() {
    let (_, sent) = fresh();
    let body = edit(&sent.body, |p| {
        let full = p["encryptedSessionKey"].as_str().expect("hex").to_owned();
        p["encryptedSessionKey"] = json!(full[..full.len() - 2]);
    });
    assert_eq!(
        check(&body),
        Err(ProtectionError::SessionKey(RsaError::CiphertextLength { expected: 384, actual: 383 }))
    );
}

#[test]
fn altered_input_data_fails_its_own_check() {
    let (_, sent) = fresh();
    let body = edit(&sent.body, |p| {
        // The plain item (index 1) now claims the hash of other contents.
        p["inData"][2]["dataHash"] = json!(sha256(b"something else").to_hex());
    });
    assert_eq!(check(&body), Err(ProtectionError::DataHashMismatch { index: 1 }));
}
