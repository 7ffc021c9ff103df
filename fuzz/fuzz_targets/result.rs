//! Fuzzes what a requester reads from the network: a work-order result (verified and decrypted
//! against a pending request) and a worker record, from arbitrary JSON.
#![no_main]

use std::sync::OnceLock;

use afallon_crypto::{EcdsaSigningKey, OaepHash, RsaPrivateKey};
use afallon_proto::requester::{InputProtection, PendingResult, WorkOrderBuilder};
use afallon_proto::{WorkOrderResult, WorkerRecord};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    pending: PendingResult,
    worker_key: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rsa = RsaPrivateKey::generate().expect("keygen");
        let mut builder = WorkOrderBuilder::new("ab", rsa.public_key(), OaepHash::Sha1, "echo-result").expect("builder");
        builder.input(b"x", InputProtection::Session).expect("input");
        let (_, pending) = builder.build(None).expect("build");
        let worker_key = EcdsaSigningKey::generate().expect("rng").verifying_key().to_pem();
        Fixture { pending, worker_key }
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(result) = serde_json::from_slice::<WorkOrderResult>(data) {
        // Never accepted (nothing here is signed by the worker key), never a panic.
        assert!(fixture().pending.open(&result, &fixture().worker_key).is_err());
    }
    let _ = serde_json::from_slice::<WorkerRecord>(data);
});
