//! Work-order processing, in the order of wire spec §3.13: parse and check the request, unwrap
//! the session key, decrypt and check every input, check the request hash and the requester's
//! signature ([`begin`]), then run the workload, and encrypt, hash and sign the outputs
//! ([`complete`]). A workload that uses the host's files runs in [`complete`] on a thread of its
//! own, suspended at each file access (`host_io.rs`); every other order runs in one go.

use std::sync::Arc;

use afallon_crypto::{AesGcmError, AesKey, Iv, RsaError, sha256};
use afallon_proto::protection::{self, ItemKey, ProtectionError};
use afallon_proto::{
    DataItem, EnclaveErrorCode, WorkOrderRequest, WorkOrderResult, request_digest, request_hash,
    workload_name_from_id,
};
use afallon_workloads::{Context, HostIo, Input, NoIo, Workload};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{self, ProcessError};
use crate::keys::OrderKeys;
use crate::runtime::Runtime;
use crate::state::StateTurn;
use crate::{Processed, SealedState};

/// An order after [`begin`].
pub(crate) enum Begun {
    /// Done: its response, and the state change pending if it has one.
    Done(Processed, Option<StateTurn>),
    /// Checked and decrypted; its workload uses the host's files, so it runs on a thread of its
    /// own ([`complete`]).
    UsesHostIo(Box<Prepared>),
}

/// An order whose request is checked and whose inputs are decrypted, ready for its workload.
pub(crate) struct Prepared {
    keys: OrderKeys,
    id: Value,
    request: WorkOrderRequest,
    session_key: AesKey,
    session_iv: Iv,
    inputs: Vec<Input>,
    workload: Arc<dyn Workload>,
}

/// Checks and decrypts one raw `WorkOrderSubmit` request body, and runs it through unless its
/// workload uses the host's files.
pub(crate) fn begin(runtime: &Runtime, keys: OrderKeys, raw: &[u8]) -> Begun {
    let request_limits = &runtime.config.limits.request;
    if raw.len() > request_limits.max_request_bytes {
        let error = ProcessError::value(request_limits.too_large_message(raw.len()));
        return Begun::Done(failed(&Value::from(0), "", error, None), None);
    }
    let envelope = match serde_json::from_slice::<Envelope>(raw) {
        Ok(envelope) => envelope,
        Err(_) => return Begun::Done(diagnose(raw), None),
    };
    let Envelope { id, params: request } = envelope;
    match check_and_decrypt(runtime, &keys, &request) {
        Ok((session_key, session_iv, inputs, workload)) => {
            let uses_host_io = workload.uses_host_io();
            let prepared =
                Prepared { keys, id, request, session_key, session_iv, inputs, workload };
            if uses_host_io {
                Begun::UsesHostIo(Box::new(prepared))
            } else {
                let (processed, turn) = complete(runtime, prepared, &NoIo);
                Begun::Done(processed, turn)
            }
        }
        Err(error) => Begun::Done(failed(&id, &request.work_order_id, error, None), None),
    }
}

/// The response to an order that cannot be processed for `error` (a KME refused its keys): what
/// is wrong with the request itself comes first, as when a singleton worker processes it.
pub(crate) fn refuse(raw: &[u8], error: ProcessError) -> Processed {
    match serde_json::from_slice::<Envelope>(raw) {
        Ok(envelope) => failed(&envelope.id, &envelope.params.work_order_id, error, None),
        Err(_) => diagnose(raw),
    }
}

/// Runs a prepared order's workload with `io` as its file access, then encrypts, hashes and
/// signs its outputs.
pub(crate) fn complete(
    runtime: &Runtime,
    prepared: Prepared,
    io: &dyn HostIo,
) -> (Processed, Option<StateTurn>) {
    let (mut state, mut turn) = (None, None);
    let outcome = run(runtime, &prepared, io, &mut state, &mut turn);
    let processed = match outcome {
        Ok(result) => {
            let response = json!({"jsonrpc": "2.0", "id": prepared.id, "result": result});
            Processed { response: response.to_string(), error: None, state }
        }
        Err(error) => failed(&prepared.id, &prepared.request.work_order_id, error, state),
    };
    (processed, turn)
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Value,
    params: WorkOrderRequest,
}

fn failed(
    id: &Value,
    work_order_id: &str,
    error: ProcessError,
    state: Option<SealedState>,
) -> Processed {
    let response = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": error.code.code(), "message": error.message, "data": {"workOrderId": work_order_id}},
    });
    Processed { response: response.to_string(), error: Some(error), state }
}

/// A request that does not deserialize: say which field is missing or of the wrong type.
fn diagnose(raw: &[u8]) -> Processed {
    let Ok(value) = serde_json::from_slice::<Value>(raw) else {
        // What Avalon's enclave manager stores for a request it cannot read.
        let response = json!({"jsonrpc": "2.0", "id": "0", "error": {"code": 1, "message": "Workorder JSON request is invalid"}});
        let error = ProcessError {
            code: EnclaveErrorCode::Unknown,
            message: "Workorder JSON request is invalid".into(),
        };
        return Processed { response: response.to_string(), error: Some(error), state: None };
    };
    let id = value.get("id").cloned().unwrap_or(Value::from(0));
    let params = value.get("params").and_then(Value::as_object);
    let work_order_id =
        params.and_then(|p| p.get("workOrderId")).and_then(Value::as_str).unwrap_or("");
    const STRINGS: [(&str, &str); 8] = [
        ("workOrderId", "workOrderId"),
        ("workerId", "workerId"),
        ("workloadId", "workloadId"),
        ("requesterId", "requesterId"),
        ("requesterNonce", "requesterNonce"),
        ("encryptedSessionKey", "encryptedSessionKey"),
        ("encryptedRequestHash", "encryptedRequestHash"),
        ("payloadFormat", "payloadFormat"),
    ];
    let error = match params {
        None => ProcessError::missing("params"),
        Some(params) => STRINGS
            .iter()
            .find(|(key, _)| !params.get(*key).is_some_and(Value::is_string))
            .map(|(_, name)| ProcessError::missing(name))
            .unwrap_or_else(|| {
                ProcessError::value("invalid request; malformed work order parameters")
            }),
    };
    failed(&id, work_order_id, error, None)
}

/// The session key and IV, the decrypted inputs, and the workload to run.
type Decrypted = (AesKey, Iv, Vec<Input>, Arc<dyn Workload>);

/// Steps 1 to 5: formats, the session key and every input, the request hash, the requester's
/// signature, the workload.
fn check_and_decrypt(
    runtime: &Runtime,
    keys: &OrderKeys,
    request: &WorkOrderRequest,
) -> Result<Decrypted, ProcessError> {
    let limits = &runtime.config.limits;
    let oaep = runtime.config.key_encryption.oaep_hash();
    // 1. Formats and algorithms.
    if !request.payload_format.eq_ignore_ascii_case("json-rpc") {
        return Err(ProcessError::value("Unsupported payload format found in the input"));
    }
    if request
        .data_encryption_algorithm
        .as_deref()
        .is_some_and(|a| !a.is_empty() && a != "AES-GCM-256")
    {
        return Err(ProcessError::value(
            "Unsupported dataEncryptionAlgorithm found in the request",
        ));
    }
    let iv_hex = request.session_key_iv.as_deref().filter(|iv| !iv.is_empty());
    let iv_hex = iv_hex.ok_or_else(|| ProcessError::missing("session key iv"))?;
    if request.in_data.is_empty() {
        return Err(ProcessError::value(error::IN_DATA_EMPTY));
    }
    let items = request.in_data.len() + request.out_data.len();
    if items > limits.request.max_data_items {
        return Err(ProcessError::value(limits.request.too_many_items_message(items)));
    }

    // 2. The session key, then every input.
    let session_key = keys.session_key(request, oaep)?;
    let session_iv = protection::decode_iv("sessionKeyIv", iv_hex).map_err(|_| {
        ProcessError::value("invalid request; sessionKeyIv must be 12 bytes in hex")
    })?;
    let mut items: Vec<&DataItem> = request.in_data.iter().collect();
    items.sort_by_key(|item| item.index);
    let mut inputs = Vec::with_capacity(items.len());
    for item in items {
        let key = protection::item_key(item, &session_key, &session_iv, keys.data_keys(), oaep)
            .map_err(|e| protection_error(e, "encryptedDataEncryptionKey"))?;
        let data = item.data.as_deref().unwrap_or("");
        let plaintext = key.open(item.index, data).map_err(|e| protection_error(e, "data"))?;
        if data.is_empty() && item.data_hash.as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(ProcessError::value(error::DATA_EMPTY_HASH));
        }
        protection::check_data_hash(item, &plaintext)
            .map_err(|_| ProcessError::value(error::DATA_HASH))?;
        inputs.push(Input { index: item.index, data: plaintext });
    }

    // 3. The request hash.
    let hash = request_hash(request);
    protection::check_request_hash(&session_key, &session_iv, request, &hash)
        .map_err(|_| ProcessError::value(error::REQUEST_HASH))?;

    // 4. The requester's signature, if any.
    if let Some(signature) = request.requester_signature.as_deref().filter(|s| !s.is_empty()) {
        let verifying_key = request.verifying_key.as_deref().unwrap_or("");
        protection::verify_digest_base64("requesterSignature", verifying_key, &hash, signature)
            .map_err(|_| ProcessError::value(error::SIGNATURE))?;
    }

    // 5. The workload.
    let workload = workload_name_from_id(&request.workload_id)
        .and_then(|name| runtime.registry.get(&name).cloned())
        .ok_or(ProcessError {
            code: EnclaveErrorCode::InvalidWorkload,
            message: error::UNKNOWN_WORKLOAD.into(),
        })?;
    Ok((session_key, session_iv, inputs, workload))
}

/// Steps 5 and 6: the workload, with its state sealed after it, then the outputs.
fn run(
    runtime: &Runtime,
    prepared: &Prepared,
    io: &dyn HostIo,
    state: &mut Option<SealedState>,
    turn: &mut Option<StateTurn>,
) -> Result<WorkOrderResult, ProcessError> {
    let Prepared { keys, request, session_key, session_iv, inputs, workload, .. } = prepared;
    let limits = &runtime.config.limits;
    let oaep = runtime.config.key_encryption.oaep_hash();
    let context = Context {
        requester_id: &request.requester_id,
        worker_id: &request.worker_id,
        work_order_id: &request.work_order_id,
        io,
    };
    let outputs = {
        // A stateful workload runs one order at a time, on the state of the last committed one;
        // its change is pending until the host commits it.
        *turn = workload.stateful().then(|| runtime.hold_state(workload)).flatten();
        let outputs = workload.process(&context, inputs);
        if let (Some(snapshot), Some(held)) = (workload.snapshot(), turn.as_mut()) {
            match runtime.seal_workload_state(workload.name(), &snapshot, held) {
                Ok(sealed) => *state = Some(sealed),
                Err(error) => {
                    // Not kept, so not changed: the turn is dropped, which restores the state
                    // the order ran on, and the order fails.
                    *turn = None;
                    return Err(ProcessError {
                        code: EnclaveErrorCode::System,
                        message: format!(
                            "The workload's state could not be sealed ({error}); the work order changed nothing"
                        ),
                    });
                }
            }
        }
        outputs
    };
    let outputs = outputs.map_err(|e| ProcessError {
        code: EnclaveErrorCode::Runtime,
        message: format!("Workload error: {e}"),
    })?;
    let output_bytes: usize = outputs.iter().map(|o| o.data.len()).sum();
    if output_bytes > limits.max_output_bytes {
        return Err(ProcessError {
            code: EnclaveErrorCode::Runtime,
            message: format!(
                "Workload output is too large: {output_bytes} bytes, the limit is {}",
                limits.max_output_bytes
            ),
        });
    }

    // 6. Outputs: output i fills the request's outData slot i (keeping its index, key and IV).
    let mut slots: Vec<&DataItem> = request.out_data.iter().collect();
    slots.sort_by_key(|slot| slot.index);
    let mut out_data = Vec::with_capacity(outputs.len());
    for (i, output) in outputs.into_iter().enumerate() {
        let mut item = match slots.get(i) {
            Some(slot) => DataItem {
                index: slot.index,
                data_hash: None,
                data: None,
                encrypted_data_encryption_key: Some(
                    slot.encrypted_data_encryption_key.clone().unwrap_or_default(),
                ),
                iv: Some(slot.iv.clone().unwrap_or_default()),
            },
            None => DataItem {
                index: output.index,
                data_hash: None,
                data: None,
                encrypted_data_encryption_key: Some(String::new()),
                iv: Some(String::new()),
            },
        };
        let key = protection::item_key(&item, session_key, session_iv, keys.data_keys(), oaep)
            .map_err(|e| protection_error(e, "outData encryptedDataEncryptionKey"))?;
        item.data_hash = Some(sha256(&output.data).to_hex_upper());
        item.data = Some(seal_output(&key, &output.data)?);
        out_data.push(item);
    }
    out_data.sort_by_key(|item| item.index);

    let nonce: [u8; 16] = afallon_crypto::random_array()
        .map_err(|e| ProcessError { code: EnclaveErrorCode::System, message: e.to_string() })?;
    let mut result = WorkOrderResult {
        work_order_id: request.work_order_id.clone(),
        workload_id: request.workload_id.clone(),
        worker_id: request.worker_id.clone(),
        requester_id: request.requester_id.clone(),
        // The nonce carries the request's digest, so the signature binds the result to exactly
        // this request.
        worker_nonce: protection::bound_worker_nonce(&request_digest(request), &nonce),
        worker_signature: String::new(),
        out_data,
        ext_verification_key: None,
        ext_verification_key_signature: None,
    };
    keys.sign(&mut result)
        .map_err(|e| ProcessError::crypto(format!("Crypto Error (Sign): {e}")))?;
    Ok(result)
}

fn seal_output(key: &ItemKey<'_>, plaintext: &[u8]) -> Result<String, ProcessError> {
    key.seal(plaintext)
        .map_err(|e| ProcessError::crypto(format!("Crypto Error (EncryptMessage): {e}")))
}

/// Maps a protection failure to the enclave's code and message.
pub(crate) fn protection_error(error: ProtectionError, field: &str) -> ProcessError {
    match error {
        ProtectionError::SessionKey(RsaError::CiphertextLength { .. })
        | ProtectionError::DataKey { source: RsaError::CiphertextLength { .. }, .. } => {
            ProcessError::value(error::RSA_SIZE)
        }
        ProtectionError::SessionKey(_) | ProtectionError::DataKey { .. } => {
            ProcessError::crypto(error::RSA_DECRYPT)
        }
        ProtectionError::DataDecryption {
            source: AesGcmError::Authentication | AesGcmError::CiphertextTooShort(_),
            ..
        } => ProcessError::crypto(error::AES_AUTHENTICATION),
        ProtectionError::Hex { field } => {
            ProcessError::value(format!("invalid request; {field} is not valid hex"))
        }
        ProtectionError::Base64 { .. } => {
            ProcessError::value(format!("invalid request; {field} is not valid base64"))
        }
        ProtectionError::SessionKeyIv(_) => {
            ProcessError::value("invalid request; iv must be 12 bytes in hex")
        }
        other => ProcessError::crypto(format!("Crypto Error: {other}")),
    }
}
