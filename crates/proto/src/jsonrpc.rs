//! The JSON-RPC envelope as Avalon's listener handles it (wire spec §1.2): parsing a request body
//! into typed params, and writing the three response shapes (result, error, bare error).
//!
//! Failures of parsing or of the schema are answered with the *bare* error
//! `{"error": {"code": 2, "message": ...}}`, which carries neither `jsonrpc` nor `id`.

use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

use crate::codes::WorkOrderStatus;
use crate::limits::RequestLimits;
use crate::methods::{Method, Params};
use crate::python_json;
use crate::schema::{self, SchemaError};
use crate::strict_json;

/// A parsed, validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The JSON-RPC id, an integer, echoed in the response.
    pub id: Number,
    /// The method and its typed params.
    pub params: Params,
}

impl Request {
    /// The method called.
    pub fn method(&self) -> Method {
        self.params.method()
    }
}

/// Parses and validates a request body: JSON, then the envelope schema, then the method's params
/// schema, then the typed params, within the default [`RequestLimits`].
///
/// # Errors
/// A [`SchemaError`] whose message is what Avalon's listener would answer; send it with
/// [`Response::bare_error`].
pub fn parse_request(body: &[u8]) -> Result<Request, SchemaError> {
    parse_request_within(body, &RequestLimits::default())
}

/// As [`parse_request`], within `limits`. Every step is linear in the body's size (uniqueness of
/// data items included); a work order with too many data items is refused before its items are
/// looked at; an object with the same key twice is refused, as the enclave's parse refuses it.
///
/// # Errors
/// As [`parse_request`].
pub fn parse_request_within(body: &[u8], limits: &RequestLimits) -> Result<Request, SchemaError> {
    if body.len() > limits.max_request_bytes {
        return Err(SchemaError::new(limits.too_large_message(body.len())));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| SchemaError::new("Improper Json request: the body is not UTF-8"))?;
    let value = strict_json::from_str(text, limits.max_json_values)
        .map_err(|e| SchemaError::new(format!("Improper Json request: {e}")))?;
    let Value::Object(mut envelope) = value else {
        return Err(SchemaError::new("Improper Json request: the body must be a JSON object"));
    };
    schema::validate(&schema::ENVELOPE, &envelope)?;
    // The envelope schema guarantees these three.
    let (Some(Value::Number(id)), Some(Value::String(method)), Some(Value::Object(params))) =
        (envelope.remove("id"), envelope.remove("method"), envelope.remove("params"))
    else {
        return Err(SchemaError::new("Improper Json request"));
    };
    let method = Method::from_name(&method).ok_or_else(|| {
        SchemaError::new("Invalid data format for method or method not supported")
    })?;
    let params = parse_params_within(method, params, limits)?;
    Ok(Request { id, params })
}

/// Validates and types the params of `method`, within the default [`RequestLimits`].
///
/// # Errors
/// As [`parse_request`].
pub fn parse_params(method: Method, params: Map<String, Value>) -> Result<Params, SchemaError> {
    parse_params_within(method, params, &RequestLimits::default())
}

/// As [`parse_params`], within `limits`.
///
/// # Errors
/// As [`parse_request`].
pub fn parse_params_within(
    method: Method,
    params: Map<String, Value>,
    limits: &RequestLimits,
) -> Result<Params, SchemaError> {
    if params.is_empty() {
        return Err(SchemaError::new("Empty params in the request"));
    }
    if method == Method::WorkOrderSubmit {
        let count = |key: &str| params.get(key).and_then(Value::as_array).map_or(0, Vec::len);
        let items = count("inData") + count("outData");
        if items > limits.max_data_items {
            return Err(SchemaError::new(limits.too_many_items_message(items)));
        }
    }
    schema::validate(method.schema(), &params)?;
    let params = Value::Object(params);
    Ok(match method {
        Method::WorkerLookUp => Params::WorkerLookUp(typed(params)?),
        Method::WorkerLookUpNext => Params::WorkerLookUpNext(typed(params)?),
        Method::WorkerRetrieve => Params::WorkerRetrieve(typed(params)?),
        Method::WorkOrderSubmit => Params::WorkOrderSubmit(Box::new(typed(params)?)),
        Method::WorkOrderGetResult => Params::WorkOrderGetResult(typed(params)?),
        Method::WorkOrderReceiptRetrieve => Params::WorkOrderReceiptRetrieve(typed(params)?),
        Method::WorkOrderReceiptUpdate => Params::WorkOrderReceiptUpdate(typed(params)?),
        Method::WorkOrderReceiptUpdateRetrieve => {
            Params::WorkOrderReceiptUpdateRetrieve(typed(params)?)
        }
        Method::WorkOrderReceiptLookUp => Params::WorkOrderReceiptLookUp(typed(params)?),
        Method::WorkOrderReceiptCreate => Params::WorkOrderReceiptCreate(typed(params)?),
        Method::WorkOrderReceiptLookUpNext => Params::WorkOrderReceiptLookUpNext(typed(params)?),
    })
}

/// Converts schema-valid params; only values the schema admits but the types cannot hold (an
/// integer beyond 64 bits) fail here.
fn typed<T: DeserializeOwned>(params: Value) -> Result<T, SchemaError> {
    serde_json::from_value(params).map_err(|e| SchemaError::new(format!("Invalid params: {e}")))
}

/// The `error` member of an error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorObject {
    /// The code: a [`WorkOrderStatus`], a [`crate::JrpcErrorCode`] or a JSON-RPC reserved code.
    pub code: i64,
    /// The message.
    pub message: String,
    /// Extra data; Avalon puts `{"workOrderId": ...}` here for work-order errors.
    pub data: Option<Value>,
}

/// A response, in one of the three shapes Avalon's listener sends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// `{"jsonrpc": "2.0", "id": id, "result": result}`.
    Result {
        /// The request's id.
        id: Number,
        /// The result.
        result: Value,
    },
    /// `{"jsonrpc": "2.0", "id": id, "error": {...}}`, also used for "pending" (code 5) and
    /// "receipt created" (code 0).
    Error {
        /// The request's id.
        id: Number,
        /// The error.
        error: ErrorObject,
    },
    /// `{"error": {"code": 2, "message": ...}}`: the answer to a request that failed parsing or
    /// schema validation.
    BareError(ErrorObject),
}

impl Response {
    /// The bare error for a request that failed parsing or validation.
    pub fn bare_error(error: &SchemaError) -> Self {
        Self::BareError(ErrorObject {
            code: WorkOrderStatus::InvalidParameter.code(),
            message: error.message().to_owned(),
            data: None,
        })
    }

    /// An error about a work order, with `data: {"workOrderId": ...}`.
    pub fn work_order_error(
        id: Number,
        code: i64,
        message: impl Into<String>,
        work_order_id: &str,
    ) -> Self {
        let mut data = Map::new();
        data.insert("workOrderId".into(), Value::String(work_order_id.to_owned()));
        Self::Error {
            id,
            error: ErrorObject { code, message: message.into(), data: Some(Value::Object(data)) },
        }
    }

    /// An error without data.
    pub fn error(id: Number, code: i64, message: impl Into<String>) -> Self {
        Self::Error { id, error: ErrorObject { code, message: message.into(), data: None } }
    }

    /// The response as a JSON value, members in Avalon's order.
    pub fn to_value(&self) -> Value {
        let error_value = |error: &ErrorObject| {
            let mut map = Map::new();
            map.insert("code".into(), Value::from(error.code));
            map.insert("message".into(), Value::String(error.message.clone()));
            if let Some(data) = &error.data {
                map.insert("data".into(), data.clone());
            }
            Value::Object(map)
        };
        let mut map = Map::new();
        match self {
            Self::Result { id, result } => {
                map.insert("jsonrpc".into(), Value::from("2.0"));
                map.insert("id".into(), Value::Number(id.clone()));
                map.insert("result".into(), result.clone());
            }
            Self::Error { id, error } => {
                map.insert("jsonrpc".into(), Value::from("2.0"));
                map.insert("id".into(), Value::Number(id.clone()));
                map.insert("error".into(), error_value(error));
            }
            Self::BareError(error) => {
                map.insert("error".into(), error_value(error));
            }
        }
        Value::Object(map)
    }

    /// The response body, written as Python's `json.dumps` writes it.
    pub fn to_json(&self) -> String {
        python_json::to_string(&self.to_value())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(body: &str) -> String {
        parse_request(body.as_bytes()).expect_err("must be refused").message().to_owned()
    }

    fn body(method: &str, params: Value) -> String {
        json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string()
    }

    #[test]
    fn spec_examples_give_spec_messages() {
        // Unknown method.
        assert_eq!(
            message(&body("EncryptionKeyGet", json!({"workerId": "ab"}))),
            "Invalid data format for method or method not supported"
        );
        // Empty params.
        assert_eq!(message(&body("WorkerLookUp", json!({}))), "Empty params in the request");
        // Non-integer id.
        assert_eq!(
            message(
                r#"{"jsonrpc": "2.0", "id": "7", "method": "WorkerLookUp", "params": {"workerType": 1}}"#
            ),
            "Invalid data format for id"
        );
        assert_eq!(
            message(
                r#"{"jsonrpc": "2.0", "id": 7.5, "method": "WorkerLookUp", "params": {"workerType": 1}}"#
            ),
            "Invalid data format for id"
        );
        // Bad hex.
        assert_eq!(
            message(&body("WorkOrderGetResult", json!({"workOrderId": "xyz"}))),
            "Invalid work order Id"
        );
        assert_eq!(
            message(&body("WorkerRetrieve", json!({"workerId": "0x"}))),
            "Invalid data format for Worker id"
        );
        // Additional property (WorkerRetrieve names only workerId).
        assert_eq!(
            message(&body("WorkerRetrieve", json!({"workerType": 1}))),
            "Additional properties are not allowed ('workerType' was unexpected)"
        );
        assert_eq!(
            message(&body("WorkOrderReceiptRetrieve", json!({"updateIndex": 1}))),
            "Additional properties are not allowed ('updateIndex' was unexpected)"
        );
        // Missing required field.
        let mut submit = crate::schema::tests::submit_params();
        submit.as_object_mut().expect("object").remove("requesterNonce");
        assert_eq!(
            message(&body("WorkOrderSubmit", submit)),
            "'requesterNonce' is a required property"
        );
        // Additional property.
        let mut submit = crate::schema::tests::submit_params();
        submit["resultType"] = json!("x");
        assert_eq!(
            message(&body("WorkOrderSubmit", submit)),
            "Additional properties are not allowed ('resultType' was unexpected)"
        );
        // workerType out of range.
        assert_eq!(
            message(&body("WorkerLookUp", json!({"workerType": 4}))),
            "WorkType should be an Integer of range 1-3"
        );
    }

    #[test]
    fn envelope_failures() {
        assert_eq!(
            message(r#"{"id": 1, "method": "WorkerLookUp", "params": {"workerType": 1}}"#),
            "'jsonrpc' is a required property"
        );
        assert_eq!(
            message(
                r#"{"jsonrpc": "1.0", "id": 1, "method": "WorkerLookUp", "params": {"workerType": 1}}"#
            ),
            "Invalid data format or value for jsonrpc"
        );
        assert_eq!(
            message(
                r#"{"jsonrpc": "2.0", "id": 1, "method": "WorkerLookUp", "params": {"workerType": 1}, "x": 1}"#
            ),
            "Additional properties are not allowed ('x' was unexpected)"
        );
        assert_eq!(
            message(r#"{"jsonrpc": "2.0", "id": 1, "method": "WorkerLookUp", "params": []}"#),
            "Empty params in the request"
        );
        assert!(message("{not json").starts_with("Improper Json request: "));
        assert!(message("[1, 2]").starts_with("Improper Json request"));
        assert!(parse_request(&[0xff, 0xfe, 0x00]).is_err());
    }

    #[test]
    fn valid_requests_are_typed() {
        let request = parse_request(body("WorkerLookUp", json!({"workerType": 1})).as_bytes())
            .expect("valid");
        assert_eq!(request.id, Number::from(7));
        assert_eq!(request.method(), Method::WorkerLookUp);
        let Params::WorkerLookUp(params) = request.params else { panic!("wrong variant") };
        assert_eq!(params.worker_type, Some(1));

        let submit = parse_request(
            body("WorkOrderSubmit", crate::schema::tests::submit_params()).as_bytes(),
        )
        .expect("valid");
        let Params::WorkOrderSubmit(request) = submit.params else { panic!("wrong variant") };
        assert_eq!(request.in_data.len(), 1);
        assert_eq!(request.in_data[0].data.as_deref(), Some("aGVsbG8="));
    }

    #[test]
    fn response_shapes() {
        assert_eq!(
            Response::bare_error(&SchemaError::new("Empty params in the request")).to_json(),
            r#"{"error": {"code": 2, "message": "Empty params in the request"}}"#
        );
        assert_eq!(
            Response::work_order_error(
                Number::from(4711),
                5,
                "Work order is computing. Please query for WorkOrderGetResult to view the result",
                "ab"
            )
            .to_json(),
            r#"{"jsonrpc": "2.0", "id": 4711, "error": {"code": 5, "message": "Work order is computing. Please query for WorkOrderGetResult to view the result", "data": {"workOrderId": "ab"}}}"#
        );
        assert_eq!(
            Response::Result { id: Number::from(1), result: json!({"totalCount": 0}) }.to_json(),
            r#"{"jsonrpc": "2.0", "id": 1, "result": {"totalCount": 0}}"#
        );
        assert_eq!(
            Response::error(Number::from(3), 0, "Receipt created successfully").to_json(),
            r#"{"jsonrpc": "2.0", "id": 3, "error": {"code": 0, "message": "Receipt created successfully"}}"#
        );
    }
}
