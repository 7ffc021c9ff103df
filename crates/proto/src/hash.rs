//! The digests the wire's signatures and checks are made over (wire spec §3.7, §3.8, §3.9), each
//! computed over the literal JSON strings of the fields.

use afallon_crypto::{Sha256, Sha256Digest, sha256};

use crate::work_order::{DataItem, WorkOrderRequest, WorkOrderResult};

/// The request hash (EEA 6.6.1):
/// `SHA256(h1 || h2 || h3)` with `h1 = SHA256(requesterNonce + workOrderId + workerId + workloadId +
/// requesterId)`, `h2` the SHA-256 of the `inData` items' contributions in index order, and `h3`
/// the same over `outData`, present only when `outData` is not empty.
///
/// Like Avalon's Python SDK (which is what requesters run), `h2` is always present, even for an
/// empty concatenation.
pub fn request_hash(request: &WorkOrderRequest) -> Sha256Digest {
    RequestHashParts::of(request).request_hash()
}

/// The three intermediate digests of [`request_hash`], for finding where two implementations
/// disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHashParts {
    /// SHA-256 of `requesterNonce + workOrderId + workerId + workloadId + requesterId`.
    pub h1: Sha256Digest,
    /// SHA-256 of the `inData` contributions in index order.
    pub h2: Sha256Digest,
    /// SHA-256 of the `outData` contributions, when `outData` is not empty.
    pub h3: Option<Sha256Digest>,
}

impl RequestHashParts {
    /// The parts of `request`'s hash.
    pub fn of(request: &WorkOrderRequest) -> Self {
        Self {
            h1: ids_digest(
                &request.requester_nonce,
                &request.work_order_id,
                &request.worker_id,
                &request.workload_id,
                &request.requester_id,
            ),
            h2: items_digest(&request.in_data),
            h3: (!request.out_data.is_empty()).then(|| items_digest(&request.out_data)),
        }
    }

    /// `SHA256(h1 || h2 || h3)`.
    pub fn request_hash(&self) -> Sha256Digest {
        let mut h = Sha256::new();
        h.update(self.h1.as_bytes());
        h.update(self.h2.as_bytes());
        if let Some(h3) = &self.h3 {
            h.update(h3.as_bytes());
        }
        h.finalize()
    }
}

/// afallon's digest of a request as a whole: SHA-256 over every field the worker reads, each
/// length-prefixed, with every data item's index, in the order the items were sent. Unlike
/// [`request_hash`] (Avalon's, which concatenates strings without separators and leaves indices
/// out), no two different requests share it: moving a `dataHash` into `data`, or adding, dropping
/// or renumbering an output slot whose strings are empty, changes it. afallon's worker binds it
/// into `workerNonce` (`protection::bound_worker_nonce`), so a requester can tell that a result
/// answers exactly what it sent.
pub fn request_digest(request: &WorkOrderRequest) -> Sha256Digest {
    digest(request, Some(&request.encrypted_request_hash))
}

/// [`request_digest`] without `encryptedRequestHash`: what afallon's SDK seals together with the
/// request hash (`protection::seal_request_hash`), so that afallon's worker refuses a request
/// altered in a way Avalon's request hash cannot see, before it runs anything.
pub fn sealed_request_digest(request: &WorkOrderRequest) -> Sha256Digest {
    digest(request, None)
}

fn digest(request: &WorkOrderRequest, encrypted_request_hash: Option<&str>) -> Sha256Digest {
    let mut h = Sha256::new();
    let mut field = |value: Option<&str>| match value {
        None => h.update(&[0]),
        Some(value) => {
            h.update(&[1]);
            h.update(&(value.len() as u64).to_be_bytes());
            h.update(value.as_bytes());
        }
    };
    field(Some("afallon request digest v1"));
    field(Some(&request.response_timeout_m_secs.to_string()));
    for value in [
        Some(request.payload_format.as_str()),
        request.result_uri.as_deref(),
        request.notify_uri.as_deref(),
        Some(&request.work_order_id),
        Some(&request.worker_id),
        Some(&request.workload_id),
        Some(&request.requester_id),
        request.worker_encryption_key.as_deref(),
        request.data_encryption_algorithm.as_deref(),
        Some(&request.encrypted_session_key),
        request.session_key_iv.as_deref(),
        Some(&request.requester_nonce),
        encrypted_request_hash,
        request.requester_signature.as_deref(),
        request.verifying_key.as_deref(),
    ] {
        field(value);
    }
    for items in [&request.in_data, &request.out_data] {
        field(Some(&items.len().to_string()));
        for item in items {
            field(Some(&item.index.to_string()));
            for value in [
                item.data_hash.as_deref(),
                item.data.as_deref(),
                item.encrypted_data_encryption_key.as_deref(),
                item.iv.as_deref(),
            ] {
                field(value);
            }
        }
    }
    h.finalize()
}

/// The response hash (EEA 6.6.2): `SHA256(r1 || r2)` with `r1 = SHA256(workerNonce + workOrderId +
/// workerId + workloadId + requesterId)` and `r2` the SHA-256 of the `outData` contributions in
/// index order, left out when that concatenation is empty (as Avalon's worker does).
pub fn response_hash(result: &WorkOrderResult) -> Sha256Digest {
    let r1 = ids_digest(
        &result.worker_nonce,
        &result.work_order_id,
        &result.worker_id,
        &result.workload_id,
        &result.requester_id,
    );
    let mut h = Sha256::new();
    h.update(r1.as_bytes());
    if result.out_data.iter().any(|item| item.hash_contribution().iter().any(|s| !s.is_empty())) {
        h.update(items_digest(&result.out_data).as_bytes());
    }
    h.finalize()
}

/// What `encryptionKeySignature` signs: SHA-256 of the encryption-key PEM string as published.
pub fn encryption_key_digest(encryption_key_pem: &str) -> Sha256Digest {
    sha256(encryption_key_pem.as_bytes())
}

/// What `extVerificationKeySignature` signs in the pool model: SHA-256 of
/// `extVerificationKey + requesterNonce`.
pub fn ext_verification_key_digest(
    ext_verification_key: &str,
    requester_nonce: &str,
) -> Sha256Digest {
    let mut h = Sha256::new();
    h.update(ext_verification_key.as_bytes());
    h.update(requester_nonce.as_bytes());
    h.finalize()
}

fn ids_digest(
    nonce: &str,
    work_order_id: &str,
    worker_id: &str,
    workload_id: &str,
    requester_id: &str,
) -> Sha256Digest {
    let mut h = Sha256::new();
    for part in [nonce, work_order_id, worker_id, workload_id, requester_id] {
        h.update(part.as_bytes());
    }
    h.finalize()
}

/// SHA-256 over the items' contributions, in ascending index order (stable for equal indices).
fn items_digest(items: &[DataItem]) -> Sha256Digest {
    let mut sorted: Vec<&DataItem> = items.iter().collect();
    sorted.sort_by_key(|item| item.index);
    let mut h = Sha256::new();
    for item in sorted {
        for part in item.hash_contribution() {
            h.update(part.as_bytes());
        }
    }
    h.finalize()
}
