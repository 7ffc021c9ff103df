//! Params validation exactly as Avalon's listener performs it (wire spec §1.2 and §1.5).
//!
//! Avalon validates the envelope and then the params of each method with JSON Schema files and
//! reports the *best match* among the failures: the shallowest one, and among equally shallow ones
//! the first in the schema's keyword order (`additionalProperties`, then the `properties` in the
//! order the file lists them, then `required`). `required` and `additionalProperties` failures
//! carry JSON Schema's own message (`'workOrderId' is a required property`); every other failure
//! carries the property's `error_msg`. The tables below hold those schemas as data, and
//! [`validate`] reproduces that choice, so a client sees the same message Avalon would give.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hash as _, Hasher as _};

use serde_json::{Map, Value};

use crate::id::is_schema_hex;

/// A params (or envelope) validation failure. On the wire it becomes the bare error
/// `{"error": {"code": 2, "message": <message>}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SchemaError {
    message: String,
}

impl SchemaError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    /// An error with a message of the caller's, for failures before params validation (a body
    /// over the size limit, say) that are answered in the same bare shape.
    pub fn from_message(message: impl Into<String>) -> Self {
        Self::new(message)
    }

    /// The message, as Avalon's listener words it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What a property must be.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// `"type": "string"`.
    String,
    /// `"type": "string"` with the hex pattern `^(0[x|X])?[0-9a-fA-F]+$`.
    Hex,
    /// As [`Kind::Hex`], at most [`MAX_ID_CHARS`] long: an id or a look-up filter, which the store
    /// indexes and announces.
    Id,
    /// `"type": "string"` with another pattern, given as a predicate.
    Pattern(fn(&str) -> bool),
    /// `"type": "string"` with an `enum`.
    StringEnum(&'static [&'static str]),
    /// `"type": "integer"`.
    Integer,
    /// `"type": "integer"` with an `enum`.
    IntegerEnum(&'static [i64]),
    /// `"type": "object"` with `minProperties`.
    Object { min_properties: usize },
    /// `"type": "array"`, `"uniqueItems": true`, items described by an [`Items`] schema.
    Array(&'static Items),
}

/// One entry of a schema's `properties`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Property {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// The schema's `error_msg` for this property.
    pub(crate) message: &'static str,
}

/// The `items` schema of an array: objects with some properties, extra keys tolerated.
#[derive(Debug)]
pub(crate) struct Items {
    pub(crate) properties: &'static [Property],
    pub(crate) required: &'static [&'static str],
    /// `error_msg` of the item schema (an item that is not an object).
    pub(crate) item_message: &'static str,
    /// For failures of the array itself (not an array, duplicate items). Avalon's schema has no
    /// `error_msg` there and its listener fails with an internal error; afallon answers this.
    pub(crate) array_message: &'static str,
}

/// An object schema with `additionalProperties: false`.
#[derive(Debug)]
pub(crate) struct Schema {
    pub(crate) properties: &'static [Property],
    pub(crate) required: &'static [&'static str],
}

/// Validates `object` against `schema` and returns the failure Avalon would report, if any.
pub(crate) fn validate(schema: &Schema, object: &Map<String, Value>) -> Result<(), SchemaError> {
    let mut failures = Failures::default();
    let extras: Vec<&String> = object
        .keys()
        .filter(|key| !schema.properties.iter().any(|p| p.name == key.as_str()))
        .collect();
    if !extras.is_empty() {
        failures.push(0, additional_properties_message(&extras));
    }
    check_properties(schema.properties, object, 1, &mut failures);
    check_required(schema.required, object, 0, &mut failures);
    failures.best()
}

/// Failures in the order JSON Schema yields them, each with the depth of its instance path.
#[derive(Debug, Default)]
struct Failures(Vec<(usize, String)>);

impl Failures {
    fn push(&mut self, depth: usize, message: impl Into<String>) {
        self.0.push((depth, message.into()));
    }

    /// JSON Schema's `best_match`: the shallowest failure, the first among equals.
    fn best(self) -> Result<(), SchemaError> {
        let mut best: Option<(usize, String)> = None;
        for (depth, message) in self.0 {
            if best.as_ref().is_none_or(|(d, _)| depth < *d) {
                best = Some((depth, message));
            }
        }
        best.map_or(Ok(()), |(_, message)| Err(SchemaError::new(message)))
    }
}

fn check_properties(
    properties: &[Property],
    object: &Map<String, Value>,
    depth: usize,
    failures: &mut Failures,
) {
    for property in properties {
        if let Some(value) = object.get(property.name) {
            check_value(property, value, depth, failures);
        }
    }
}

fn check_required(
    required: &[&str],
    object: &Map<String, Value>,
    depth: usize,
    failures: &mut Failures,
) {
    for name in required {
        if !object.contains_key(*name) {
            failures.push(depth, format!("{} is a required property", python_repr(name)));
        }
    }
}

fn check_value(property: &Property, value: &Value, depth: usize, failures: &mut Failures) {
    let ok = match property.kind {
        Kind::String => value.is_string(),
        Kind::Hex => value.as_str().is_some_and(is_schema_hex),
        Kind::Id => value.as_str().is_some_and(|s| s.len() <= MAX_ID_CHARS && is_schema_hex(s)),
        Kind::Pattern(matches) => value.as_str().is_some_and(matches),
        Kind::StringEnum(allowed) => value.as_str().is_some_and(|s| allowed.contains(&s)),
        Kind::Integer => is_integer(value),
        Kind::IntegerEnum(allowed) => value.as_i64().is_some_and(|i| allowed.contains(&i)),
        Kind::Object { min_properties } => {
            value.as_object().is_some_and(|o| o.len() >= min_properties)
        }
        Kind::Array(items) => {
            check_array(items, value, depth, failures);
            return;
        }
    };
    if !ok {
        failures.push(depth, property.message);
    }
}

fn check_array(items: &Items, value: &Value, depth: usize, failures: &mut Failures) {
    let Some(array) = value.as_array() else {
        failures.push(depth, items.array_message);
        return;
    };
    if has_duplicates(array) {
        failures.push(depth, items.array_message);
    }
    for item in array {
        match item.as_object() {
            None => failures.push(depth + 1, items.item_message),
            Some(object) => {
                check_properties(items.properties, object, depth + 2, failures);
                check_required(items.required, object, depth + 1, failures);
            }
        }
    }
}

/// JSON Schema's `uniqueItems`: whether two items are equal (objects regardless of key order).
/// Linear in the array's size: items are bucketed by a hash that ignores key order (keyed per
/// process, so no request can be built to collide), and only items in one bucket are compared.
fn has_duplicates(array: &[Value]) -> bool {
    let state = std::hash::RandomState::new();
    let mut seen: HashMap<u64, Vec<&Value>> = HashMap::with_capacity(array.len());
    for item in array {
        let bucket = seen.entry(value_hash(item, &state)).or_default();
        if bucket.contains(&item) {
            return true;
        }
        bucket.push(item);
    }
    false
}

/// A hash of `value` under which equal JSON values (objects in any key order) hash alike.
fn value_hash(value: &Value, state: &std::hash::RandomState) -> u64 {
    let mut hasher = state.build_hasher();
    match value {
        Value::Null => hasher.write_u8(0),
        Value::Bool(b) => (1u8, b).hash(&mut hasher),
        Value::Number(n) => {
            // As serde_json compares them: integers by value, floats by value (0.0 == -0.0).
            hasher.write_u8(2);
            match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => (0u8, i).hash(&mut hasher),
                (None, Some(u), _) => (1u8, u).hash(&mut hasher),
                (None, None, Some(f)) => (2u8, (f + 0.0).to_bits()).hash(&mut hasher),
                (None, None, None) => hasher.write_u8(3),
            }
        }
        Value::String(s) => (3u8, s).hash(&mut hasher),
        Value::Array(items) => {
            (4u8, items.len()).hash(&mut hasher);
            for item in items {
                hasher.write_u64(value_hash(item, state));
            }
        }
        Value::Object(map) => {
            // Entries combine by addition, which does not depend on their order.
            let entries = map.iter().fold(0u64, |sum, (key, item)| {
                sum.wrapping_add(state.hash_one((key, value_hash(item, state))))
            });
            (5u8, map.len(), entries).hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// JSON Schema's `integer`: a JSON number without fraction or exponent. (Draft 6 and later also
/// count `1.0`; afallon refuses it, since no client sends it and Avalon's enclave could not
/// read it.)
pub(crate) fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64()
}

fn additional_properties_message(extras: &[&String]) -> String {
    let names: Vec<String> = extras.iter().map(|e| python_repr(e)).collect();
    let verb = if extras.len() == 1 { "was" } else { "were" };
    format!("Additional properties are not allowed ({} {verb} unexpected)", names.join(", "))
}

/// Python's `repr()` of a string, which JSON Schema's messages quote names with.
pub(crate) fn python_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

// ---------------------------------------------------------------------------------------------
// The schemas, as Avalon's `common/python/schema_validation/data/*.json` define them.
// ---------------------------------------------------------------------------------------------

/// Every method the envelope schema admits, in its `enum` order.
pub(crate) const METHOD_NAMES: &[&str] = &[
    "WorkerLookUp",
    "WorkerLookUpNext",
    "WorkerRetrieve",
    "WorkOrderSubmit",
    "WorkOrderGetResult",
    "WorkOrderReceiptRetrieve",
    "WorkOrderReceiptUpdate",
    "WorkOrderReceiptUpdateRetrieve",
    "WorkOrderReceiptLookUp",
    "WorkOrderReceiptCreate",
    "WorkOrderReceiptLookUpNext",
];

/// The JSON-RPC envelope (`tc_methods.json`).
pub(crate) static ENVELOPE: Schema = Schema {
    properties: &[
        Property {
            name: "params",
            kind: Kind::Object { min_properties: 1 },
            message: "Empty params in the request",
        },
        Property {
            name: "jsonrpc",
            kind: Kind::StringEnum(&["2.0"]),
            message: "Invalid data format or value for jsonrpc",
        },
        Property { name: "id", kind: Kind::Integer, message: "Invalid data format for id" },
        Property {
            name: "method",
            kind: Kind::StringEnum(METHOD_NAMES),
            message: "Invalid data format for method or method not supported",
        },
    ],
    required: &["jsonrpc", "id", "method", "params"],
};

const fn hex(name: &'static str, message: &'static str) -> Property {
    Property { name, kind: Kind::Hex, message }
}

const fn id(name: &'static str, message: &'static str) -> Property {
    Property { name, kind: Kind::Id, message }
}

/// The longest id or look-up filter (hex) a request may carry. Avalon's ids are 64 hex
/// characters; anything far longer only costs the store (an index entry, a wake-up naming it),
/// and PostgreSQL's indexes refuse entries over about 2.7 kB. Refused with the field's own
/// "Invalid data format" message, as Avalon answers a value its pattern refuses.
pub const MAX_ID_CHARS: usize = 1024;

/// A `lookUpTag`: a string (Avalon's schema), here at most [`MAX_ID_CHARS`] long and without NUL
/// (it is compared with stored ids).
fn is_look_up_tag(tag: &str) -> bool {
    tag.len() <= MAX_ID_CHARS && !tag.contains('\0')
}

const fn string(name: &'static str, message: &'static str) -> Property {
    Property { name, kind: Kind::String, message }
}

const fn integer(name: &'static str, message: &'static str) -> Property {
    Property { name, kind: Kind::Integer, message }
}

const WORKER_TYPE: Property = Property {
    name: "workerType",
    kind: Kind::IntegerEnum(&[1, 2, 3]),
    message: "WorkType should be an Integer of range 1-3",
};
const ORGANIZATION_ID: Property = id("organizationId", "Invalid data format for organizationId");
const APPLICATION_TYPE_ID: Property =
    id("applicationTypeId", "Invalid data format for applicationTypeId");

pub(crate) static WORKER_LOOK_UP: Schema =
    Schema { properties: &[WORKER_TYPE, ORGANIZATION_ID, APPLICATION_TYPE_ID], required: &[] };

pub(crate) static WORKER_LOOK_UP_NEXT: Schema = Schema {
    properties: &[
        WORKER_TYPE,
        ORGANIZATION_ID,
        APPLICATION_TYPE_ID,
        Property {
            name: "lookUpTag",
            kind: Kind::Pattern(is_look_up_tag),
            message: "Invalid data format for lookUpTag",
        },
    ],
    required: &[],
};

pub(crate) static WORKER_RETRIEVE: Schema = Schema {
    properties: &[id("workerId", "Invalid data format for Worker id")],
    required: &["workerId"],
};

pub(crate) static WORK_ORDER_GET_RESULT: Schema = Schema {
    properties: &[id("workOrderId", "Invalid work order Id")],
    required: &["workOrderId"],
};

fn has_ascii_alphanumeric(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_alphanumeric())
}

/// `^-$|^$|^null$|^(0[x|X])?[0-9a-fA-F]+$`
pub(crate) fn is_data_key_pattern(s: &str) -> bool {
    matches!(s, "-" | "" | "null") || is_schema_hex(s)
}

/// `^$|^(0[x|X])?[0-9a-fA-F]+$`
pub(crate) fn is_iv_pattern(s: &str) -> bool {
    s.is_empty() || is_schema_hex(s)
}

static IN_DATA: Items = Items {
    properties: &[
        integer("index", "Invalid data format for inData index"),
        Property {
            name: "data",
            kind: Kind::Pattern(has_ascii_alphanumeric),
            message: "Invalid data format for in data",
        },
        hex("dataHash", "Invalid data format for data hash of in data"),
        Property {
            name: "encryptedDataEncryptionKey",
            kind: Kind::Pattern(is_data_key_pattern),
            message: "Invalid data format for Encryption key of in data",
        },
        Property {
            name: "iv",
            kind: Kind::Pattern(is_iv_pattern),
            message: "Invalid data format for initialization vector of in data",
        },
    ],
    required: &["index", "data"],
    item_message: "Invalid data format for inData",
    array_message: "Invalid data format for inData",
};

static OUT_DATA: Items = Items {
    properties: &[
        integer("index", "Invalid data format for outData index"),
        hex("dataHash", "Invalid data format for data hash of out data"),
        string("data", "Invalid data format for out data"),
        Property {
            name: "encryptedDataEncryptionKey",
            kind: Kind::Pattern(is_data_key_pattern),
            message: "Invalid data format for Encryption key of out data",
        },
        Property {
            name: "iv",
            kind: Kind::Pattern(is_iv_pattern),
            message: "Invalid data format for initialization vector of out data",
        },
    ],
    required: &[],
    item_message: "Invalid data format for outData ",
    array_message: "Invalid data format for outData",
};

pub(crate) static WORK_ORDER_SUBMIT: Schema = Schema {
    properties: &[
        integer("responseTimeoutMSecs", "Invalid data format for responseTimeoutMSecs"),
        Property {
            name: "payloadFormat",
            kind: Kind::StringEnum(&["JSON-RPC", "json-rpc"]),
            message: "Invalid payload format",
        },
        string("resultUri", "Invalid data format for resultUri"),
        string("notifyUri", "Invalid data format for notifyUri"),
        id("workOrderId", "Invalid data format for work order id"),
        id("workerId", "Invalid data format for Worker id"),
        id("workloadId", "Invalid data format for work load id"),
        id("requesterId", "Invalid data format for requester id"),
        hex("workerEncryptionKey", "Empty or Invalid dataformat for workerEncryptionKey"),
        Property {
            name: "dataEncryptionAlgorithm",
            kind: Kind::StringEnum(&["AES-GCM-256", "aes-gcm-256"]),
            message: "Invalid data format for dataEncryptionAlgorithm",
        },
        hex("encryptedSessionKey", "Invalid data format for encrypted session key"),
        hex("sessionKeyIv", "Invalid data format for session key iv"),
        hex("requesterNonce", "Empty or Invalid data format for requesterNonce"),
        hex("encryptedRequestHash", "Invalid data format for encrypted request hash"),
        string("requesterSignature", "Invalid data format for requesterSignature"),
        string("verifyingKey", "Invalid data format for verifyingKey"),
        Property {
            name: "inData",
            kind: Kind::Array(&IN_DATA),
            message: "Invalid data format for inData",
        },
        Property {
            name: "outData",
            kind: Kind::Array(&OUT_DATA),
            message: "Invalid data format for outData",
        },
    ],
    required: &[
        "responseTimeoutMSecs",
        "payloadFormat",
        "workOrderId",
        "workerId",
        "workloadId",
        "requesterId",
        "encryptedSessionKey",
        "requesterNonce",
        "encryptedRequestHash",
    ],
};

pub(crate) static RECEIPT_CREATE: Schema = Schema {
    properties: &[
        id("workerId", "Invalid data format for Worker id"),
        id("workOrderId", "Invalid data format for workOrderId"),
        id("workerServiceId", "Invalid data format for workerServiceId"),
        id("requesterId", "Invalid data format for requesterId"),
        integer("receiptCreateStatus", "Invalid data format for receiptCreateStatus"),
        // Avalon's schema gives these two the messages of other fields; kept as served.
        string("workOrderRequestHash", "Invalid data format for Worker id"),
        hex("requesterGeneratedNonce", "Invalid data format for requesterGeneratedNonce"),
        string("requesterSignature", "Invalid data format for requesterSignature"),
        string("signatureRules", "Invalid data format for signatureRules"),
        string("receiptVerificationKey", "Invalid data format for signatureRules"),
    ],
    required: &[],
};

pub(crate) static RECEIPT_UPDATE: Schema = Schema {
    properties: &[
        id("workOrderId", "Invalid data format for workOrderId"),
        id("updaterId", "Invalid data format for updaterId"),
        string("updateData", "Invalid data format for updateData"),
        string("updateSignature", "Invalid data format for updateSignature"),
        string("signatureRules", "Invalid data format for signatureRules"),
        integer("updateType", "Invalid data format for updateType"),
        // Not in Avalon's schema, which made signed updates impossible; see docs/compatibility.md.
        string("receiptVerificationKey", "Invalid data format for receiptVerificationKey"),
    ],
    required: &[],
};

pub(crate) static RECEIPT_RETRIEVE: Schema = Schema {
    properties: &[id("workOrderId", "Invalid data format for workOrderId")],
    required: &["workOrderId"],
};

pub(crate) static RECEIPT_UPDATE_RETRIEVE: Schema = Schema {
    properties: &[
        id("workOrderId", "Invalid data format for workOrderId"),
        id("updaterId", "Invalid data format for updaterId"),
        integer("updateIndex", "Invalid data format for updateIndex"),
    ],
    required: &[],
};

const RECEIPT_LOOK_UP_PROPERTIES: [Property; 4] = [
    id("workerServiceId", "Invalid data format for workerServiceId"),
    id("workerId", "Invalid data format for workerId"),
    id("requesterId", "Invalid data format for requesterId"),
    hex("receiptStatus", "Invalid data format for receiptStatus"),
];

pub(crate) static RECEIPT_LOOK_UP: Schema =
    Schema { properties: &RECEIPT_LOOK_UP_PROPERTIES, required: &[] };

pub(crate) static RECEIPT_LOOK_UP_NEXT: Schema = Schema {
    properties: &[
        RECEIPT_LOOK_UP_PROPERTIES[0],
        RECEIPT_LOOK_UP_PROPERTIES[1],
        RECEIPT_LOOK_UP_PROPERTIES[2],
        RECEIPT_LOOK_UP_PROPERTIES[3],
        id("lastLookUpTag", "Invalid data format for lastLookUpTag"),
    ],
    required: &[],
};

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    fn check(schema: &Schema, value: Value) -> Result<(), String> {
        let object = value.as_object().expect("test input is an object").clone();
        validate(schema, &object).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn additional_properties_come_first_and_list_every_extra_in_order() {
        assert_eq!(
            check(&WORKER_RETRIEVE, json!({"foo": 1})),
            Err("Additional properties are not allowed ('foo' was unexpected)".into())
        );
        assert_eq!(
            check(&WORKER_RETRIEVE, json!({"workerId": "zz", "b": 1, "a": 2})),
            Err("Additional properties are not allowed ('b', 'a' were unexpected)".into())
        );
    }

    #[test]
    fn ids_longer_than_the_cap_and_tags_with_nul_are_invalid_data() {
        let long = "a".repeat(MAX_ID_CHARS);
        assert_eq!(check(&WORK_ORDER_GET_RESULT, json!({"workOrderId": long})), Ok(()));
        let longer = "a".repeat(MAX_ID_CHARS + 1);
        assert_eq!(
            check(&WORK_ORDER_GET_RESULT, json!({"workOrderId": longer})),
            Err("Invalid work order Id".into())
        );
        assert_eq!(
            check(&WORKER_LOOK_UP_NEXT, json!({"workerType": 1, "lookUpTag": "ab\u{0}cd"})),
            Err("Invalid data format for lookUpTag".into())
        );
        assert_eq!(
            check(&WORKER_LOOK_UP_NEXT, json!({"workerType": 1, "lookUpTag": "ab"})),
            Ok(())
        );
    }

    #[test]
    fn required_beats_property_failures() {
        assert_eq!(
            check(&WORK_ORDER_GET_RESULT, json!({})),
            Err("'workOrderId' is a required property".into())
        );
        // A bad payloadFormat (depth 1) loses against a missing field (depth 0).
        let params = json!({"payloadFormat": "xml"});
        assert_eq!(
            check(&WORK_ORDER_SUBMIT, params),
            Err("'responseTimeoutMSecs' is a required property".into())
        );
    }

    #[test]
    fn first_failing_property_in_schema_order() {
        assert_eq!(
            check(&WORKER_LOOK_UP, json!({"applicationTypeId": "g", "workerType": 4})),
            Err("WorkType should be an Integer of range 1-3".into())
        );
        assert_eq!(
            check(&WORKER_LOOK_UP, json!({"workerType": "1"})),
            Err("WorkType should be an Integer of range 1-3".into())
        );
        assert_eq!(
            check(&WORKER_LOOK_UP, json!({"workerType": true})),
            Err("WorkType should be an Integer of range 1-3".into())
        );
        assert_eq!(check(&WORKER_LOOK_UP, json!({"workerType": 1})), Ok(()));
    }

    #[test]
    fn nested_item_failures_lose_to_shallower_ones() {
        let mut params = submit_params();
        params["inData"] = json!([{"index": 0, "data": "!!"}]);
        assert_eq!(
            check(&WORK_ORDER_SUBMIT, params.clone()),
            Err("Invalid data format for in data".into())
        );
        params["workerId"] = json!("not hex");
        assert_eq!(
            check(&WORK_ORDER_SUBMIT, params.clone()),
            Err("Invalid data format for Worker id".into())
        );
        params["workerId"] = json!("ab");
        params["inData"] = json!([{"index": 0}]);
        assert_eq!(
            check(&WORK_ORDER_SUBMIT, params.clone()),
            Err("'data' is a required property".into())
        );
        params["inData"] = json!(["x"]);
        assert_eq!(
            check(&WORK_ORDER_SUBMIT, params.clone()),
            Err("Invalid data format for inData".into())
        );
        params["inData"] = json!([{"index": 0, "data": "a"}, {"index": 0, "data": "a"}]);
        assert_eq!(check(&WORK_ORDER_SUBMIT, params), Err("Invalid data format for inData".into()));
    }

    #[test]
    fn item_patterns() {
        let mut params = submit_params();
        for (key, bad, message) in [
            (
                "encryptedDataEncryptionKey",
                "--",
                "Invalid data format for Encryption key of in data",
            ),
            ("iv", "nothex", "Invalid data format for initialization vector of in data"),
            ("dataHash", "", "Invalid data format for data hash of in data"),
        ] {
            params["inData"] = json!([{"index": 0, "data": "a", key: bad}]);
            assert_eq!(check(&WORK_ORDER_SUBMIT, params.clone()), Err(message.into()));
        }
        for good in ["-", "", "null", "0xAB"] {
            params["inData"] = json!([{"index": 0, "data": "a", "encryptedDataEncryptionKey": good, "iv": "", "extra": 1}]);
            assert_eq!(check(&WORK_ORDER_SUBMIT, params.clone()), Ok(()));
        }
    }

    #[test]
    fn unique_items_compare_objects_regardless_of_key_order() {
        let a = serde_json::json!({"index": 0, "data": "x", "iv": ""});
        let reordered = serde_json::json!({"iv": "", "data": "x", "index": 0});
        let other = serde_json::json!({"index": 1, "data": "x", "iv": ""});
        assert!(has_duplicates(&[a.clone(), other.clone(), reordered]));
        assert!(!has_duplicates(&[a.clone(), other.clone()]));
        // Values of one key swapped between two keys are not equal.
        let swapped = serde_json::json!({"index": 0, "data": "", "iv": "x"});
        assert!(!has_duplicates(&[a.clone(), swapped]));
        // Nested arrays count their order; 1 and 1.0 differ, as serde_json's equality says.
        assert!(!has_duplicates(&[serde_json::json!([1, 2]), serde_json::json!([2, 1])]));
        assert!(!has_duplicates(&[serde_json::json!(1), serde_json::json!(1.0)]));
        assert!(has_duplicates(&[serde_json::json!(0.0), serde_json::json!(-0.0)]));
        assert!(has_duplicates(&[serde_json::json!({"a": -0.0}), serde_json::json!({"a": 0.0})]));
        assert!(has_duplicates(&[serde_json::json!(null), other, serde_json::json!(null)]));
    }

    /// The check agrees with the quadratic definition on arrays with many near-duplicates.
    #[test]
    fn unique_items_agree_with_pairwise_comparison() {
        let items: Vec<Value> = (0..200)
            .map(|i| serde_json::json!({"index": i % 7, "data": format!("{}", i % 11)}))
            .collect();
        for n in 0..items.len() {
            let slice = &items[..n];
            let pairwise = slice.iter().enumerate().any(|(i, a)| slice[..i].contains(a));
            assert_eq!(has_duplicates(slice), pairwise, "first {n} items");
        }
    }

    #[test]
    fn python_repr_quotes_like_python() {
        assert_eq!(python_repr("foo"), "'foo'");
        assert_eq!(python_repr("it's"), "\"it's\"");
        assert_eq!(python_repr("a'\"b"), "'a\\'\"b'");
        assert_eq!(python_repr("a\nb\\"), "'a\\nb\\\\'");
        assert_eq!(python_repr("\u{1}"), "'\\x01'");
    }

    pub(crate) fn submit_params() -> Value {
        json!({
            "responseTimeoutMSecs": 6000, "payloadFormat": "JSON-RPC", "workOrderId": "11",
            "workerId": "22", "workloadId": "6563686f", "requesterId": "33",
            "encryptedSessionKey": "AB", "requesterNonce": "01", "encryptedRequestHash": "CD",
            "inData": [{"index": 0, "data": "aGVsbG8="}]
        })
    }
}
