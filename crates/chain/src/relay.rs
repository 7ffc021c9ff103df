//! What the connector says to the service for an on-chain order, and how it reads the answers:
//! pure functions over JSON text, so that every case is tested without a chain or a listener.

use afallon_proto::{DUPLICATE_WORK_ORDER, Response, WorkOrderStatus};
use serde_json::Value;
use serde_json::value::RawValue;

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
            .is_some_and(|value| value.eq_ignore_ascii_case(on_chain));
        if !same {
            return Err(refuse(&format!("the request's {field} is not the on-chain order's")));
        }
    }
    Ok(format!(
        r#"{{"jsonrpc":"2.0","method":"WorkOrderSubmit","id":{rpc_id},"params":{}}}"#,
        raw.get()
    ))
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
                || code == -32000 =>
        {
            Answer::Pending
        }
        _ => Answer::Final(answer.to_owned()),
    }
}

/// Whether an answer to a submission is a moment's trouble of the service's (its store out of
/// reach, busy): submit again later rather than complete the order with it.
pub fn is_transient(answer: &str) -> bool {
    matches!(error_of(answer), Some((code, _)) if code == -32000 || code == WorkOrderStatus::Busy.code())
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
