//! Per-operation cost of the crypto suite: `cargo bench -p afallon-crypto`.
//!
//! RSA-OAEP decryption dominates a work order's crypto cost; the other figures show how far the
//! rest is below it.

use std::hint::black_box;

use afallon_crypto::{AesKey, EcdsaSigningKey, Iv, OaepHash, RsaPrivateKey, sha256};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn rsa(c: &mut Criterion) {
    let key = RsaPrivateKey::generate().expect("keygen");
    let session = AesKey::generate().expect("rng");
    let mut group = c.benchmark_group("rsa3072_oaep_sha1");
    let wrapped = key.public_key().wrap_key(OaepHash::Sha1, &session).expect("wrap");
    group.bench_function("decrypt", |b| {
        b.iter(|| key.unwrap_key(OaepHash::Sha1, black_box(&wrapped)).expect("unwrap"))
    });
    group.bench_function("encrypt", |b| {
        b.iter(|| key.public_key().wrap_key(OaepHash::Sha1, black_box(&session)).expect("wrap"))
    });
    group.finish();
    let mut group = c.benchmark_group("rsa3072_oaep_sha256");
    let wrapped = key.public_key().wrap_key(OaepHash::Sha256, &session).expect("wrap");
    group.bench_function("decrypt", |b| {
        b.iter(|| key.unwrap_key(OaepHash::Sha256, black_box(&wrapped)).expect("unwrap"))
    });
    group.finish();
}

fn ecdsa(c: &mut Criterion) {
    let key = EcdsaSigningKey::generate().expect("rng");
    let verifying = key.verifying_key();
    let digest = sha256(b"work order response");
    let signature = key.sign_digest(&digest);
    let mut group = c.benchmark_group("ecdsa_secp256k1");
    group.bench_function("sign", |b| b.iter(|| key.sign_digest(black_box(&digest))));
    group.bench_function("verify", |b| {
        b.iter(|| verifying.verify_digest(black_box(&digest), &signature).expect("verify"))
    });
    group.finish();
}

fn aes_gcm(c: &mut Criterion) {
    let key = AesKey::generate().expect("rng");
    let iv = Iv::generate().expect("rng");
    for (name, size) in [("1KiB", 1024usize), ("1MiB", 1 << 20)] {
        let plaintext = vec![0x5au8; size];
        let sealed = key.seal(&iv, &plaintext).expect("seal");
        let mut group = c.benchmark_group(format!("aes256gcm_{name}"));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function("seal", |b| {
            b.iter(|| key.seal(&iv, black_box(&plaintext)).expect("seal"))
        });
        group.bench_function("open", |b| {
            b.iter(|| key.open(&iv, black_box(&sealed)).expect("open"))
        });
        group.finish();
    }
}

fn sha(c: &mut Criterion) {
    let data = vec![0xa5u8; 1 << 20];
    let mut group = c.benchmark_group("sha256_1MiB");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("digest", |b| b.iter(|| sha256(black_box(&data))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = rsa, ecdsa, aes_gcm, sha
}
criterion_main!(benches);
