//! The deterministic test vectors of wire spec §3.12, checked against Avalon's own Python crypto
//! library, reproduced with this crate's functions.

use afallon_crypto::{AesKey, Iv, sha256};
use afallon_proto::protection::{self, ItemKey};
use afallon_proto::{
    DataItem, RequestHashParts, WorkOrderRequest, WorkOrderResult, request_hash, response_hash,
    worker_id_from_name,
};

fn session_key() -> AesKey {
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = i as u8;
    }
    AesKey::from_bytes(key)
}

fn session_iv() -> Iv {
    protection::decode_iv("sessionKeyIv", "A0A1A2A3A4A5A6A7A8A9AAAB").expect("iv")
}

fn vector_request(in_data: &str) -> WorkOrderRequest {
    WorkOrderRequest {
        response_timeout_m_secs: 6000,
        payload_format: "JSON-RPC".into(),
        result_uri: None,
        notify_uri: None,
        work_order_id: "11".repeat(32),
        worker_id: worker_id_from_name("singleton-worker-1"),
        workload_id: "6563686f2d726573756c74".into(),
        requester_id: "22".repeat(32),
        worker_encryption_key: None,
        data_encryption_algorithm: Some("AES-GCM-256".into()),
        encrypted_session_key: String::new(),
        session_key_iv: Some("A0A1A2A3A4A5A6A7A8A9AAAB".into()),
        requester_nonce: "000102030405060708090a0b0c0d0e0f".into(),
        encrypted_request_hash: String::new(),
        requester_signature: None,
        verifying_key: None,
        in_data: vec![DataItem {
            index: 0,
            data_hash: None,
            data: Some(in_data.into()),
            encrypted_data_encryption_key: None,
            iv: None,
        }],
        out_data: vec![],
    }
}

#[test]
fn request_side_vectors() {
    let key = session_key();
    let iv = session_iv();
    let data = ItemKey::Session { key: &key, iv: &iv }.seal(b"Hello").expect("seal");
    assert_eq!(data, "rn0QQSqlF1ldMjKgi7eUGuzGoiCk");

    let request = vector_request(&data);
    let parts = RequestHashParts::of(&request);
    assert_eq!(
        parts.h1.to_hex(),
        "c2cc6df825419868f65cf88e21a3e07c5cbf29e5a0b8cd6ae339c2d4345a6c42"
    );
    assert_eq!(
        parts.h2.to_hex(),
        "76b4fcfcbe680972b9fe0706eb54607bac8005e9c600f5198d437ee11dcafc4a"
    );
    assert_eq!(parts.h3, None);
    let hash = request_hash(&request);
    assert_eq!(hash.to_hex(), "95e11a24aa82bef13b534f8918d534cd57ca321e1e9e348f0bb11ddeba66d1d2");
    assert_eq!(
        protection::encrypt_request_hash(&key, &iv, &hash).expect("encrypt"),
        "73F96609EF49BC4E5936C85A1FAFF41327666B0E8C2976E397BF3B58C5CDA4D3C7B314DFC14E3AFC4C6C7DD92529F681"
    );
}

#[test]
fn response_side_vectors() {
    let key = session_key();
    let iv = session_iv();
    let output = b"RESULT: Hello";
    let data_hash = sha256(output).to_hex_upper();
    assert_eq!(data_hash, "84EA068A1326A99D02AF62D878FD15A5F2AFA8CF7BAAFADD95DA31165E3B45F1");
    let data = ItemKey::Session { key: &key, iv: &iv }.seal(output).expect("seal");
    assert_eq!(data, "tF0veAmfOJ8qAOu/aB4LMunHi7QjO88mQacQgtA=");
    let worker_nonce = protection::encode_base64(sha256(&[0u8; 16]).as_bytes());
    assert_eq!(worker_nonce, "N0cI//dxndWXnsh11WzSKG9tPPfsMXo7JWMqqyjsN7s=");

    let request = vector_request("rn0QQSqlF1ldMjKgi7eUGuzGoiCk");
    let result = WorkOrderResult {
        work_order_id: request.work_order_id,
        workload_id: request.workload_id,
        worker_id: request.worker_id,
        requester_id: request.requester_id,
        worker_nonce,
        worker_signature: String::new(),
        out_data: vec![DataItem {
            index: 0,
            data_hash: Some(data_hash),
            data: Some(data.clone()),
            encrypted_data_encryption_key: Some(String::new()),
            iv: Some(String::new()),
        }],
        ext_verification_key: None,
        ext_verification_key_signature: None,
    };
    assert_eq!(
        response_hash(&result).to_hex(),
        "04c46cc368550c956990e498c9ad896564d3da2ab14260cdc0f2427e68a935a0"
    );
    // The requester decrypts the output with the session key and IV.
    assert_eq!(ItemKey::Session { key: &key, iv: &iv }.open(0, &data).expect("open"), output);
}
