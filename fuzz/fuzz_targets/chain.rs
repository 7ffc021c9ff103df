//! Fuzzes what the proxy model reads from a chain: the connector turns an on-chain request into
//! a listener's request (or a refusal) and reads the service's answers; a requester reads a
//! completion's response; and the connector and requester read the deployment file.
#![no_main]

use afallon_chain::relay::{self, ChainOrder};
use afallon_chain::{Completion, Deployment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let order = ChainOrder {
        work_order_id: "aa".repeat(32),
        worker_id: "bb".repeat(32),
        requester_id: "cc".repeat(32),
        request: text.clone(),
        block: 1,
        block_hash: Default::default(),
    };
    match relay::submit_body(&order, 7) {
        // A body the connector sends must be one JSON value carrying the on-chain ids.
        Ok(body) => {
            let value: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
            assert_eq!(value["params"]["workOrderId"].as_str(), Some("aa".repeat(32).as_str()));
            assert!(relay::same_request(body.as_bytes(), &text));
        }
        Err(refusal) => {
            serde_json::from_str::<serde_json::Value>(&refusal).expect("a JSON refusal");
        }
    }
    let _ = relay::read_submit_answer(&text);
    let _ = relay::read_result_answer(&text);
    let _ = relay::is_transient(&text);
    let _ = Completion { block: 1, response: text }.result();
    let _ = Deployment::from_json(data);
});
