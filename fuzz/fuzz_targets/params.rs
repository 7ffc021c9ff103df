//! Fuzzes the listener's request parsing: any bytes must give a typed request or a schema error
//! (never a panic), and every error must render as a bare error.
#![no_main]

use afallon_proto::{Response, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(request) => {
            let _ = request.method().name();
            if let afallon_proto::Params::WorkOrderSubmit(submit) = &request.params {
                let _ = afallon_proto::request_hash(submit);
            }
        }
        Err(error) => {
            let body = Response::bare_error(&error).to_json();
            assert!(body.starts_with("{\"error\": {\"code\": 2"));
        }
    }
});
