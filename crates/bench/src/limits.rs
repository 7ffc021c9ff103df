//! The ceilings: the worker-side work of an order done in-process on all cores, with nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use afallon_crypto::{EcdsaSigningKey, OaepHash, RsaPrivateKey, sha256};
use afallon_enclave::{Enclave, EnclaveClient, EnclaveConfig, sim_measurement};
use afallon_platform::SimPlatform;
use afallon_proto::protection::{self, ItemKey, ProtectionError};
use afallon_proto::requester::{InputProtection, WorkOrderBuilder};
use afallon_proto::{DataItem, WorkOrderRequest, WorkOrderResult, request_hash, response_hash};
use afallon_workloads::{NoIo, Registry};
use serde::Serialize;

/// Orders per second of some in-process work on `threads` threads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limit {
    /// Orders per second, all threads together.
    pub orders_per_second: f64,
    /// Threads used.
    pub threads: usize,
    /// Orders done while measuring.
    pub orders: u64,
}

impl Limit {
    /// The mean of two measurements of the same limit (one before a load and one after, say), so
    /// that a machine whose speed drifts during a run is compared with its average.
    pub fn mean(&self, other: &Limit) -> Limit {
        Limit {
            orders_per_second: (self.orders_per_second + other.orders_per_second) / 2.0,
            threads: self.threads,
            orders: self.orders + other.orders,
        }
    }
}

/// Runs `work` on `threads` threads for `duration`, cycling through `inputs`.
fn measure<T: Sync>(
    inputs: &[T],
    threads: usize,
    duration: Duration,
    work: impl Fn(&T) + Sync,
) -> Limit {
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (done, work) = (&done, &work);
            scope.spawn(move || {
                let mut n = thread;
                while started.elapsed() < duration {
                    work(&inputs[n % inputs.len()]);
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            });
        }
    });
    let orders = done.load(Ordering::Relaxed);
    Limit { orders_per_second: orders as f64 / started.elapsed().as_secs_f64(), threads, orders }
}

fn echo_input(input_size: usize, n: usize) -> Vec<u8> {
    let mut input = format!("order {n} ").into_bytes();
    input.resize(input_size.max(input.len()), b'x');
    input
}

/// The worker-side cryptography of one echo order: unwrap the session key (RSA-OAEP), decrypt and
/// check every input, check the request hash, encrypt and hash the output, hash and sign the
/// response. The same calls the enclave makes, without anything else.
fn worker_crypto(
    request: &WorkOrderRequest,
    rsa: &RsaPrivateKey,
    signing: &EcdsaSigningKey,
) -> Result<(), ProtectionError> {
    let session_key =
        protection::unwrap_session_key(rsa, OaepHash::Sha1, &request.encrypted_session_key)?;
    let iv =
        protection::decode_iv("sessionKeyIv", request.session_key_iv.as_deref().unwrap_or(""))?;
    let mut out_data = Vec::with_capacity(request.in_data.len());
    for item in &request.in_data {
        let key = protection::item_key(item, &session_key, &iv, rsa, OaepHash::Sha1)?;
        let mut plaintext = key.open(item.index, item.data.as_deref().unwrap_or(""))?;
        protection::check_data_hash(item, &plaintext)?;
        plaintext.splice(0..0, *b"RESULT: ");
        out_data.push(DataItem {
            index: item.index,
            data_hash: Some(sha256(&plaintext).to_hex_upper()),
            data: Some(key.seal(&plaintext)?),
            encrypted_data_encryption_key: Some(String::new()),
            iv: Some(String::new()),
        });
    }
    protection::check_request_hash(&session_key, &iv, request, &request_hash(request))?;
    let mut result = WorkOrderResult {
        work_order_id: request.work_order_id.clone(),
        workload_id: request.workload_id.clone(),
        worker_id: request.worker_id.clone(),
        requester_id: request.requester_id.clone(),
        worker_nonce: protection::encode_base64(sha256(&[0; 16]).as_bytes()),
        worker_signature: String::new(),
        out_data,
        ext_verification_key: None,
        ext_verification_key_signature: None,
    };
    result.worker_signature = protection::sign_digest_base64(signing, &response_hash(&result));
    // The output is used, so the work cannot be optimised away.
    std::hint::black_box(ItemKey::Plain.seal(result.worker_signature.as_bytes())?);
    Ok(())
}

/// Requests for a fresh worker key, built once (the requester's work is not measured).
fn requests(
    rsa: &RsaPrivateKey,
    input_size: usize,
    count: usize,
) -> Result<Vec<WorkOrderRequest>, ProtectionError> {
    (0..count)
        .map(|n| {
            let mut builder =
                WorkOrderBuilder::new("00", rsa.public_key(), OaepHash::Sha1, "echo-result")?;
            builder.input(&echo_input(input_size, n), InputProtection::Session)?;
            Ok(builder.build(None)?.0)
        })
        .collect()
}

/// The crypto limit: [`worker_crypto`] for echo orders with one `input_size`-byte input, on
/// `threads` threads for `duration`.
///
/// # Errors
/// [`ProtectionError`] if keys or requests cannot be made.
pub fn crypto_limit(
    input_size: usize,
    threads: usize,
    duration: Duration,
) -> Result<Limit, ProtectionError> {
    let rsa = RsaPrivateKey::generate().map_err(ProtectionError::Wrap)?;
    let signing = EcdsaSigningKey::generate()?;
    let requests = requests(&rsa, input_size, 64)?;
    // Check once that the work succeeds, so the limit measures real work.
    worker_crypto(&requests[0], &rsa, &signing)?;
    Ok(measure(&requests, threads, duration, |request| {
        let _ = worker_crypto(request, &rsa, &signing);
    }))
}

/// The enclave limit: a work order through the enclave's messages in process (JSON parsing and
/// writing included) on raw echo requests,
/// on `threads` threads for `duration`, with no network and no store.
///
/// # Errors
/// [`ProtectionError`] if the enclave or requests cannot be made.
pub fn enclave_limit(
    input_size: usize,
    threads: usize,
    duration: Duration,
) -> Result<Limit, ProtectionError> {
    let registry = Registry::with_builtins();
    let platform = SimPlatform::ephemeral(sim_measurement(&registry))
        .map_err(|_| ProtectionError::Random(afallon_crypto::RandomError))?;
    let link = Arc::new(Enclave::new(Arc::new(platform), registry));
    let enclave = EnclaveClient::start(link, EnclaveConfig::new("bench-worker"), None, vec![])
        .map_err(|_| ProtectionError::Random(afallon_crypto::RandomError))?;
    let key = afallon_crypto::RsaPublicKey::from_pem(
        &enclave.worker_record().details.worker_type_data.encryption_key,
    )
    .map_err(ProtectionError::VerificationKey)?;
    let bodies: Vec<Vec<u8>> = (0..64)
        .map(|n| {
            let mut builder = WorkOrderBuilder::new(enclave.worker_id(), &key, OaepHash::Sha1, "echo-result")?;
            builder.input(&echo_input(input_size, n), InputProtection::Session)?;
            let request = builder.build(None)?.0;
            Ok(serde_json::json!({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 1, "params": request})
                .to_string()
                .into_bytes())
        })
        .collect::<Result<_, ProtectionError>>()?;
    Ok(measure(&bodies, threads, duration, |body| {
        let _ = std::hint::black_box(enclave.process(body, &NoIo));
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_work_is_the_real_work() {
        let rsa = RsaPrivateKey::generate().expect("keygen");
        let signing = EcdsaSigningKey::generate().expect("rng");
        let mut request = requests(&rsa, 1024, 1).expect("requests").remove(0);
        worker_crypto(&request, &rsa, &signing).expect("a valid order passes");
        request.requester_nonce.push('0');
        assert_eq!(
            worker_crypto(&request, &rsa, &signing),
            Err(ProtectionError::RequestHashMismatch)
        );
    }

    #[test]
    fn limits_count_orders() {
        let limit = crypto_limit(64, 1, Duration::from_millis(200)).expect("limit");
        assert!(limit.orders > 0 && limit.orders_per_second > 0.0);
        let limit = enclave_limit(64, 1, Duration::from_millis(200)).expect("limit");
        assert!(limit.orders > 0);
    }
}
