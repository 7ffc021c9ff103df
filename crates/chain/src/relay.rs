//! What the connector says to the service for an on-chain order, and how it reads the answers;
//! how an on-chain receipt becomes the store's and the worker's update goes back on chain: pure
//! functions, so that every case is tested without a chain or a listener.

use afallon_proto::protection::{self, decode_base64, encode_base64};
use afallon_proto::{
    DUPLICATE_WORK_ORDER, Params, ReceiptCreate, ReceiptUpdate, RequestLimits, Response,
    WorkOrderStatus, parse_request_within, receipt_update_digest, request_hash, updater_id,
};
use alloy::primitives::B256;
use serde_json::Value;
use serde_json::value::RawValue;

/// The JSON-RPC code of a server error (the service's store out of reach, say): try again.
const SERVER_ERROR: i64 = -32000;

/// An order as `workOrderSubmitted` announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainOrder {
    /// The on-chain work-order id (64 hex characters).
    pub work_order_id: String,
    /// The worker it is for.
    pub worker_id: String,
    /// Its requester.
    pub requester_id: String,
    /// The `WorkOrderSubmit` params JSON, as submitted on chain.
    pub request: String,
    /// The block it was submitted in.
    pub block: u64,
    /// That block's hash.
    pub block_hash: B256,
}

/// What an answer of the service means for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Not finished: ask for the result again.
    Pending,
    /// The order's final JSON-RPC response (a result or an error), to complete it with on chain.
    Final(String),
}

/// The `WorkOrderSubmit` request body for `order`, with JSON-RPC id `rpc_id`; or, if the params
/// cannot be an order of these ids, the error response to complete the order with at once.
///
/// The params go into the body as they are (their bytes carry the requester's hashes), after
/// checking that they are one JSON object whose `workOrderId`, `workerId` and `requesterId`
/// are the on-chain ones: otherwise anyone could submit, under an id of their own, an order
/// that the service would file under another's id.
pub fn submit_body(order: &ChainOrder, rpc_id: u64) -> Result<String, String> {
    let refuse = |message: &str| {
        Response::work_order_error(
            rpc_id.into(),
            WorkOrderStatus::InvalidParameter.code(),
            message,
            &order.work_order_id,
        )
        .to_json()
    };
    let Ok(raw) = serde_json::from_str::<&RawValue>(&order.request) else {
        return Err(refuse("the on-chain request is not JSON"));
    };
    let Ok(Value::Object(params)) = serde_json::from_str::<Value>(raw.get()) else {
        return Err(refuse("the on-chain request is not a JSON object"));
    };
    for (field, on_chain) in [
        ("workOrderId", &order.work_order_id),
        ("workerId", &order.worker_id),
        ("requesterId", &order.requester_id),
    ] {
        let same = params
            .get(field)
            .and_then(Value::as_str)
            .is_some_and(|value| value == on_chain.as_str());
        if !same {
            return Err(refuse(&format!("the request's {field} is not the on-chain order's")));
        }
    }
    Ok(format!(
        r#"{{"jsonrpc":"2.0","method":"WorkOrderSubmit","id":{rpc_id},"params":{}}}"#,
        raw.get()
    ))
}

/// Whether the service's stored request body (`stored`, the JSON-RPC body it accepted) carries
/// exactly the on-chain params `on_chain`, byte for byte.
pub fn same_request(stored: &[u8], on_chain: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        params: &'a RawValue,
    }
    let (Ok(body), Ok(params)) =
        (serde_json::from_slice::<Body<'_>>(stored), serde_json::from_str::<&RawValue>(on_chain))
    else {
        return false;
    };
    body.params.get() == params.get()
}

/// The `WorkOrderGetResult` request body for `work_order_id`.
pub fn result_body(work_order_id: &str, rpc_id: u64) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "method": "WorkOrderGetResult",
        "id": rpc_id,
        "params": {"workOrderId": work_order_id},
    })
    .to_string()
}

/// What the service's answer to a submission means: pending (code 5), or already there (a
/// duplicate id: submitted before a restart) means the result is to be asked for; anything else
/// (a synchronous result, a refusal) is final.
pub fn read_submit_answer(answer: &str) -> Answer {
    match error_of(answer) {
        Some((code, _)) if code == WorkOrderStatus::Pending.code() => Answer::Pending,
        Some((code, message))
            if code == WorkOrderStatus::InvalidParameter.code()
                && message == DUPLICATE_WORK_ORDER =>
        {
            Answer::Pending
        }
        _ => Answer::Final(answer.to_owned()),
    }
}

/// What the service's answer to `WorkOrderGetResult` means: pending (code 5), a moment's
/// trouble of the service's (a server error, busy) to ask again about, or final.
pub fn read_result_answer(answer: &str) -> Answer {
    match error_of(answer) {
        Some((code, _))
            if code == WorkOrderStatus::Pending.code()
                || code == WorkOrderStatus::Busy.code()
                || code == SERVER_ERROR =>
        {
            Answer::Pending
        }
        _ => Answer::Final(answer.to_owned()),
    }
}

/// Whether an answer to a submission is a moment's trouble of the service's (its store out of
/// reach, busy): submit again later rather than complete the order with it.
pub fn is_transient(answer: &str) -> bool {
    matches!(error_of(answer), Some((code, _)) if code == SERVER_ERROR || code == WorkOrderStatus::Busy.code())
}

/// A receipt as `workOrderReceiptCreated` announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReceipt {
    /// The work order (64 hex characters).
    pub work_order_id: String,
    /// The worker service.
    pub worker_service_id: String,
    /// The worker.
    pub worker_id: String,
    /// The requester.
    pub requester_id: String,
    /// The status it was created with.
    pub status: u64,
    /// The order's request hash (wire spec §3.7), its 32 bytes.
    pub request_hash: Vec<u8>,
    /// The block it was created in.
    pub block: u64,
    /// That block's hash.
    pub block_hash: B256,
}

/// The store's receipt for a receipt created on chain, whose authority is the chain's (only the
/// order's submitter can create it there), so it carries no requester signature. Refused unless
/// its request hash is that of `raw_request`, the order's request as the service stored it.
pub fn receipt_create(receipt: &ChainReceipt, raw_request: &[u8]) -> Result<ReceiptCreate, String> {
    // The service accepted this request within its own limits, which may be above the defaults.
    let limits = RequestLimits {
        max_request_bytes: usize::MAX,
        max_data_items: usize::MAX,
        max_json_values: usize::MAX,
    };
    let request = parse_request_within(raw_request, &limits)
        .map_err(|error| format!("the stored request does not parse: {error}"))?;
    let Params::WorkOrderSubmit(params) = request.params else {
        return Err("the stored request is not a work order".into());
    };
    if request_hash(&params).as_bytes()[..] != receipt.request_hash[..] {
        return Err("the receipt's request hash is not the order's".into());
    }
    let status = i64::try_from(receipt.status).map_err(|_| "a status out of range".to_owned())?;
    Ok(ReceiptCreate {
        work_order_id: Some(receipt.work_order_id.clone()),
        worker_service_id: Some(receipt.worker_service_id.clone()),
        worker_id: Some(receipt.worker_id.clone()),
        requester_id: Some(receipt.requester_id.clone()),
        receipt_create_status: Some(status),
        work_order_request_hash: Some(encode_base64(&receipt.request_hash)),
        ..ReceiptCreate::default()
    })
}

/// A receipt update as `workOrderReceiptUpdate` takes it on chain: the update data as its UTF-8
/// bytes and the signature as DER bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainUpdate {
    /// Its type (a receipt status code, or an application's).
    pub update_type: u64,
    /// The update data.
    pub data: Vec<u8>,
    /// The DER signature over [`receipt_update_digest`].
    pub signature: Vec<u8>,
    /// `SHA-256/SECP256K1`.
    pub rules: String,
}

/// A stored update as the chain takes it, if it is complete and well formed.
pub fn chain_update(update: &ReceiptUpdate) -> Option<ChainUpdate> {
    Some(ChainUpdate {
        update_type: u64::try_from(update.update_type?).ok()?,
        data: update.update_data.clone().unwrap_or_default().into_bytes(),
        signature: decode_base64("updateSignature", update.update_signature.as_deref()?).ok()?,
        rules: update.signature_rules.clone().unwrap_or_else(|| "SHA-256/SECP256K1".into()),
    })
}

/// The update a worker (with `verification_key`, a PEM) posted on chain for `work_order_id`,
/// if its signature verifies with that key; a requester reads the worker's updates so.
///
/// # Errors
/// Why it is not the worker's: data that is not text, or a signature that does not verify.
pub fn verified_update(
    work_order_id: &str,
    update: &ChainUpdate,
    verification_key: &str,
) -> Result<ReceiptUpdate, String> {
    let data = String::from_utf8(update.data.clone())
        .map_err(|_| "the update data is not text".to_owned())?;
    let update = ReceiptUpdate {
        work_order_id: Some(work_order_id.to_owned()),
        updater_id: Some(updater_id(verification_key)),
        update_type: Some(i64::try_from(update.update_type).map_err(|_| "a type out of range")?),
        update_data: Some(data),
        update_signature: Some(encode_base64(&update.signature)),
        signature_rules: Some(update.rules.clone()),
        receipt_verification_key: Some(verification_key.to_owned()),
    };
    let signature = update.update_signature.as_deref().unwrap_or_default();
    protection::verify_digest_base64(
        "updateSignature",
        verification_key,
        &receipt_update_digest(&update),
        signature,
    )
    .map_err(|error| format!("the update's signature: {error}"))?;
    Ok(update)
}

fn error_of(answer: &str) -> Option<(i64, String)> {
    let value: Value = serde_json::from_str(answer).ok()?;
    let error = value.get("error")?;
    let code = error.get("code")?.as_i64()?;
    let message = error.get("message").and_then(Value::as_str).unwrap_or_default();
    Some((code, message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(request: &str) -> ChainOrder {
        ChainOrder {
            work_order_id: "aa".repeat(32),
            worker_id: "bb".repeat(32),
            requester_id: "cc".repeat(32),
            request: request.to_owned(),
            block: 1,
            block_hash: B256::ZERO,
        }
    }

    fn params(extra: &str) -> String {
        format!(
            r#"{{"workOrderId":"{}","workerId":"{}","requesterId":"{}"{extra}}}"#,
            "aa".repeat(32),
            "bb".repeat(32),
            "cc".repeat(32)
        )
    }

    #[test]
    fn the_params_go_into_the_body_byte_for_byte() {
        let request = params(r#", "x" :  [1,2]"#);
        let body = submit_body(&order(&request), 7).expect("a body");
        assert!(body.contains(&request));
        let value: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(value["method"], "WorkOrderSubmit");
        assert_eq!(value["id"], 7);
    }

    #[test]
    fn requests_that_are_not_the_on_chain_order_are_answered_with_an_error() {
        let other = params("").replace(&"bb".repeat(32), &"dd".repeat(32));
        for request in [
            "not json".to_owned(),
            "[1]".to_owned(),
            // Trailing bytes that would splice another member into the envelope.
            format!("{}, \"id\": 9", params("")),
            other,
            params("").replace("requesterId", "requester"),
        ] {
            let error = submit_body(&order(&request), 3).expect_err(&request);
            let value: Value = serde_json::from_str(&error).expect("JSON");
            assert_eq!(value["error"]["code"], 2, "{request}");
            assert_eq!(value["error"]["data"]["workOrderId"], "aa".repeat(32));
        }
    }

    const STORED: &str = r#"{"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 3, "params": {
        "responseTimeoutMSecs": 6000, "payloadFormat": "JSON-RPC", "workOrderId": "11",
        "workerId": "22", "workloadId": "6563686f", "requesterId": "33",
        "encryptedSessionKey": "AB", "requesterNonce": "01", "encryptedRequestHash": "CD",
        "inData": [{"index": 0, "data": "aGVsbG8="}]}}"#;

    fn chain_receipt(request_hash: Vec<u8>) -> ChainReceipt {
        ChainReceipt {
            work_order_id: "11".into(),
            worker_service_id: "22".into(),
            worker_id: "22".into(),
            requester_id: "33".into(),
            status: 0,
            request_hash,
            block: 4,
            block_hash: B256::ZERO,
        }
    }

    #[test]
    fn an_on_chain_receipt_is_mirrored_only_with_its_order_s_request_hash() {
        let Ok(request) = afallon_proto::parse_request(STORED.as_bytes()) else { panic!("parses") };
        let Params::WorkOrderSubmit(params) = request.params else { panic!("a work order") };
        let hash = request_hash(&params).as_bytes().to_vec();
        let create =
            receipt_create(&chain_receipt(hash.clone()), STORED.as_bytes()).expect("mirrored");
        assert_eq!(create.work_order_request_hash, Some(encode_base64(&hash)));
        assert_eq!(create.receipt_create_status, Some(0));
        assert_eq!(create.requester_signature, None);
        let mut other = hash.clone();
        other[0] ^= 1;
        assert!(receipt_create(&chain_receipt(other), STORED.as_bytes()).is_err());
        assert!(receipt_create(&chain_receipt(hash.clone()), b"{}").is_err());
        let look_up =
            r#"{"jsonrpc": "2.0", "method": "WorkerLookUp", "id": 1, "params": {"workerType": 1}}"#;
        assert!(receipt_create(&chain_receipt(hash), look_up.as_bytes()).is_err());
    }

    #[test]
    fn a_worker_s_update_goes_on_chain_and_back_only_with_its_signature() {
        let key = afallon_crypto::EcdsaSigningKey::generate().expect("a key");
        let pem = key.verifying_key().to_pem();
        let mut update = ReceiptUpdate {
            work_order_id: Some("11".into()),
            updater_id: Some(updater_id(&pem)),
            update_type: Some(3),
            update_data: Some("FEED".into()),
            signature_rules: Some("SHA-256/SECP256K1".into()),
            receipt_verification_key: Some(pem.clone()),
            ..ReceiptUpdate::default()
        };
        update.update_signature =
            Some(protection::sign_digest_base64(&key, &receipt_update_digest(&update)));
        let on_chain = chain_update(&update).expect("complete");
        assert_eq!(verified_update("11", &on_chain, &pem).expect("verifies"), update);
        // Another order's, other data, another key: refused.
        assert!(verified_update("12", &on_chain, &pem).is_err());
        let changed = ChainUpdate { data: b"FEEE".to_vec(), ..on_chain.clone() };
        assert!(verified_update("11", &changed, &pem).is_err());
        let other = afallon_crypto::EcdsaSigningKey::generate().expect("a key");
        assert!(verified_update("11", &on_chain, &other.verifying_key().to_pem()).is_err());
        // An update without a signature does not go on chain.
        assert_eq!(chain_update(&ReceiptUpdate { update_signature: None, ..update }), None);
    }

    #[test]
    fn the_stored_request_must_be_the_on_chain_one_byte_for_byte() {
        let on_chain = params(r#", "x": 1"#);
        let body = submit_body(&order(&on_chain), 4).expect("a body");
        assert!(same_request(body.as_bytes(), &on_chain));
        assert!(same_request(body.as_bytes(), &format!("  {on_chain}\n")));
        assert!(!same_request(body.as_bytes(), &params(r#", "x": 2"#)));
        assert!(!same_request(body.as_bytes(), &params(r#","x": 1"#)));
        assert!(!same_request(b"not json", &on_chain));
        // Ids differing only in case are another order's.
        let upper = on_chain.replace(&"aa".repeat(32), &"AA".repeat(32));
        assert!(submit_body(&order(&upper), 4).is_err());
    }

    #[test]
    fn answers_are_read_as_pending_or_final() {
        let pending = r#"{"jsonrpc":"2.0","id":1,"error":{"code":5,"message":"pending"}}"#;
        let duplicate = format!(
            r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":2,"message":"{DUPLICATE_WORK_ORDER}"}}}}"#
        );
        let refused =
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":2,"message":"Worker Id not found"}}"#;
        let store_down =
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Server error"}}"#;
        let result = r#"{"jsonrpc":"2.0","id":1,"result":{"workOrderId":"x"}}"#;
        assert_eq!(read_submit_answer(pending), Answer::Pending);
        assert_eq!(read_submit_answer(&duplicate), Answer::Pending);
        assert_eq!(read_submit_answer(refused), Answer::Final(refused.into()));
        assert_eq!(read_submit_answer(result), Answer::Final(result.into()));
        assert!(is_transient(store_down));
        assert!(!is_transient(refused));
        assert_eq!(read_result_answer(pending), Answer::Pending);
        assert_eq!(read_result_answer(store_down), Answer::Pending);
        assert_eq!(read_result_answer(refused), Answer::Final(refused.into()));
        assert_eq!(read_result_answer(result), Answer::Final(result.into()));
    }
}
