//! Interoperability with the Python libraries Avalon's clients use (`ecdsa`, PyCryptodome): keys,
//! signatures and ciphertexts they produced, read and checked by this crate.

use afallon_crypto::{
    EcdsaSignature, EcdsaVerifyingKey, OaepHash, RsaPrivateKey, RsaPublicKey, Sha256Digest,
};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/python-interop.json")).expect("fixture is JSON")
}

fn field<'a>(fixture: &'a Value, name: &str) -> &'a str {
    fixture[name].as_str().expect(name)
}

#[test]
fn python_ecdsa_pem_forms_all_read_as_the_same_key() {
    let f = fixture();
    let named = EcdsaVerifyingKey::from_pem(field(&f, "ecdsa_pem_named")).expect("named curve");
    let explicit =
        EcdsaVerifyingKey::from_pem(field(&f, "ecdsa_pem_explicit")).expect("explicit curve");
    let compressed =
        EcdsaVerifyingKey::from_pem(field(&f, "ecdsa_pem_compressed")).expect("compressed point");
    assert_eq!(named, explicit);
    assert_eq!(named, compressed);
    // Same SPKI as Python ecdsa's default `to_pem()`; Python wraps base64 at 76 columns where
    // OpenSSL (and afallon) wrap at 64, which is why PEMs are hashed as received, never re-encoded.
    let compact = |pem: &str| pem.split_whitespace().collect::<String>();
    assert_eq!(compact(&named.to_pem()), compact(field(&f, "ecdsa_pem_named")));
    assert!(named.to_pem().lines().all(|line| line.len() <= 64));
}

#[test]
fn python_high_s_signature_verifies() {
    let f = fixture();
    let key = EcdsaVerifyingKey::from_pem(field(&f, "ecdsa_pem_named")).expect("key");
    let digest =
        Sha256Digest::from_slice(&hex::decode(field(&f, "ecdsa_digest_hex")).expect("hex"))
            .expect("32 bytes");
    let der = hex::decode(field(&f, "ecdsa_high_s_signature_der_hex")).expect("hex");
    let signature = EcdsaSignature::from_der(&der).expect("DER");
    assert!(!signature.is_low_s(), "the fixture was chosen to have a high S");
    key.verify_digest(&digest, &signature).expect("high-S signature from python-ecdsa verifies");
    // The same signature over another digest does not.
    let other = afallon_crypto::sha256(b"another message");
    assert!(key.verify_digest(&other, &signature).is_err());
}

#[test]
fn pycryptodome_rsa_key_and_oaep_ciphertexts() {
    let f = fixture();
    let private = RsaPrivateKey::from_pem(field(&f, "rsa_private_pem_pkcs1")).expect("PKCS#1 key");
    let public = RsaPublicKey::from_pem(field(&f, "rsa_public_pem")).expect("SPKI key");
    assert_eq!(private.public_key(), &public);
    // Our SPKI PEM equals PyCryptodome's (plus the trailing newline OpenSSL writes).
    assert_eq!(public.to_pem(), field(&f, "rsa_public_pem"));

    let expected = afallon_crypto::AesKey::from_slice(
        &hex::decode(field(&f, "rsa_wrapped_key_hex")).expect("hex"),
    )
    .expect("32 bytes");
    let iv = afallon_crypto::Iv::from_bytes([0; 12]);
    let probe = expected.seal(&iv, b"probe").expect("seal");
    for (hash, name) in [
        (OaepHash::Sha1, "rsa_oaep_sha1_ciphertext_hex"),
        (OaepHash::Sha256, "rsa_oaep_sha256_ciphertext_hex"),
    ] {
        let ciphertext = hex::decode(field(&f, name)).expect("hex");
        let unwrapped = private.unwrap_key(hash, &ciphertext).expect("unwrap");
        // Same key bytes: the probe sealed under the expected key opens under the unwrapped one.
        assert_eq!(unwrapped.open(&iv, &probe).expect("same key"), b"probe");
    }
}
