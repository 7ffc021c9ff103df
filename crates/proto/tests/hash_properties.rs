//! Properties of the request and response hashes: independent of JSON key order and of the order
//! of data items in their arrays; sensitive to every hashed field.

use afallon_proto::{
    DataItem, Params, WorkOrderRequest, WorkOrderResult, parse_request, request_hash, response_hash,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn hex_string() -> impl Strategy<Value = String> {
    "[0-9a-f]{1,16}"
}

fn item(index: i64) -> impl Strategy<Value = DataItem> {
    (
        proptest::option::of(hex_string()),
        "[A-Za-z0-9][A-Za-z0-9+/]{0,23}={0,2}",
        proptest::option::of(prop_oneof![
            Just(String::new()),
            Just("-".to_owned()),
            Just("null".to_owned()),
            hex_string()
        ]),
        proptest::option::of(prop_oneof![Just(String::new()), hex_string()]),
    )
        .prop_map(move |(data_hash, data, key, iv)| DataItem {
            index,
            data_hash,
            data: Some(data),
            encrypted_data_encryption_key: key,
            iv,
        })
}

fn items(max: usize) -> impl Strategy<Value = Vec<DataItem>> {
    proptest::collection::btree_set(-5i64..50, 0..max)
        .prop_flat_map(|indices| indices.into_iter().map(item).collect::<Vec<_>>())
}

fn request() -> impl Strategy<Value = WorkOrderRequest> {
    (
        [hex_string(), hex_string(), hex_string(), hex_string(), hex_string()],
        items(5).prop_filter("inData is never empty", |v| !v.is_empty()),
        items(3),
    )
        .prop_map(|([nonce, wo, worker, workload, requester], in_data, out_data)| {
            WorkOrderRequest {
                response_timeout_m_secs: 6000,
                payload_format: "JSON-RPC".into(),
                result_uri: None,
                notify_uri: None,
                work_order_id: wo,
                worker_id: worker,
                workload_id: workload,
                requester_id: requester,
                worker_encryption_key: None,
                data_encryption_algorithm: None,
                encrypted_session_key: "AB".into(),
                session_key_iv: Some("00".into()),
                requester_nonce: nonce,
                encrypted_request_hash: "CD".into(),
                requester_signature: None,
                verifying_key: None,
                in_data,
                out_data,
            }
        })
}

/// A deterministic shuffle driven by `seed` (an LCG is plenty for reordering test input).
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        items.swap(i, (seed >> 33) as usize % (i + 1));
    }
}

/// Re-emits a JSON value with every object's keys and every array's elements reordered.
fn reorder(value: Value, seed: u64) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            shuffle(&mut entries, seed);
            Value::Object(
                entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, (k, v))| (k, reorder(v, seed ^ i as u64)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(mut items) => {
            shuffle(&mut items, seed.rotate_left(17));
            Value::Array(items.into_iter().map(|v| reorder(v, seed.rotate_left(5))).collect())
        }
        other => other,
    }
}

fn reparse(request: &WorkOrderRequest, seed: u64) -> WorkOrderRequest {
    let params = reorder(serde_json::to_value(request).expect("serialize"), seed);
    let body = serde_json::json!({"params": params, "method": "WorkOrderSubmit", "id": 1, "jsonrpc": "2.0"});
    match parse_request(body.to_string().as_bytes())
        .expect("generated requests are schema-valid")
        .params
    {
        Params::WorkOrderSubmit(request) => *request,
        other => panic!("unexpected params {other:?}"),
    }
}

/// Every hashed string field of a request, as a mutable reference.
fn hashed_fields(request: &mut WorkOrderRequest) -> Vec<&mut String> {
    let mut fields = vec![
        &mut request.requester_nonce,
        &mut request.work_order_id,
        &mut request.worker_id,
        &mut request.workload_id,
        &mut request.requester_id,
    ];
    for item in request.in_data.iter_mut().chain(request.out_data.iter_mut()) {
        fields.push(item.data.get_or_insert_with(String::new));
        fields.push(item.data_hash.get_or_insert_with(String::new));
        fields.push(item.encrypted_data_encryption_key.get_or_insert_with(String::new));
        fields.push(item.iv.get_or_insert_with(String::new));
    }
    fields
}

proptest! {
    #[test]
    fn request_hash_ignores_key_and_item_order(request in request(), seed in any::<u64>()) {
        let again = reparse(&request, seed);
        prop_assert_eq!(request_hash(&again), request_hash(&request));
    }

    #[test]
    fn request_hash_changes_with_every_hashed_field(request in request(), pick in any::<prop::sample::Index>()) {
        let original = request_hash(&request);
        let mut changed = request.clone();
        let mut fields = hashed_fields(&mut changed);
        let field = pick.get_mut(&mut fields);
        field.push('a');
        prop_assert_ne!(request_hash(&changed), original);
    }

    #[test]
    fn request_hash_sees_output_slots(request in request(), extra in item(99)) {
        let mut with_output = request.clone();
        with_output.out_data.push(extra);
        prop_assert_ne!(request_hash(&with_output), request_hash(&request));
    }

    #[test]
    fn response_hash_ignores_item_order_and_sees_every_field(
        out in items(5).prop_filter("a result has outputs", |v| !v.is_empty()),
        nonce in "[A-Za-z0-9+/]{4,44}",
        seed in any::<u64>(),
        pick in any::<prop::sample::Index>(),
    ) {
        let result = WorkOrderResult {
            work_order_id: "11".into(),
            workload_id: "22".into(),
            worker_id: "33".into(),
            requester_id: "44".into(),
            worker_nonce: nonce,
            worker_signature: String::new(),
            out_data: out,
            ext_verification_key: None,
            ext_verification_key_signature: None,
        };
        let mut shuffled = result.clone();
        shuffle(&mut shuffled.out_data, seed);
        prop_assert_eq!(response_hash(&shuffled), response_hash(&result));

        let mut changed = result.clone();
        let mut fields: Vec<&mut String> = vec![
            &mut changed.worker_nonce, &mut changed.work_order_id, &mut changed.worker_id,
            &mut changed.workload_id, &mut changed.requester_id,
        ];
        for item in &mut changed.out_data {
            fields.push(item.data.get_or_insert_with(String::new));
            fields.push(item.data_hash.get_or_insert_with(String::new));
            fields.push(item.encrypted_data_encryption_key.get_or_insert_with(String::new));
            fields.push(item.iv.get_or_insert_with(String::new));
        }
        pick.get_mut(&mut fields).push('a');
        prop_assert_ne!(response_hash(&changed), response_hash(&result));
    }
}
