//! Fuzzes key parsing from PEM and DER: worker records and requests carry keys from outside.
#![no_main]

use afallon_crypto::{EcdsaSignature, EcdsaVerifyingKey, RsaPrivateKey, RsaPublicKey, pem};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = pem::decode(&text);
    if let Ok(key) = EcdsaVerifyingKey::from_pem(&text) {
        // Whatever parses re-encodes to a PEM that parses to the same key.
        assert_eq!(EcdsaVerifyingKey::from_pem(&key.to_pem()).ok(), Some(key));
    }
    if let Ok(key) = RsaPublicKey::from_pem(&text) {
        assert_eq!(RsaPublicKey::from_pem(&key.to_pem()).ok(), Some(key));
    }
    let _ = RsaPrivateKey::from_pem(&text);
    // The same bytes as raw DER and as a raw signature.
    let _ = EcdsaVerifyingKey::from_spki_der(data);
    let _ = RsaPublicKey::from_spki_der(data);
    let _ = EcdsaSignature::from_der(data);
});
