//! Fuzzes the enclave with raw work-order requests: whatever the bytes, the answer is a JSON-RPC
//! error or result, never a panic.
#![no_main]

use std::sync::OnceLock;

use afallon_attest::SimPlatform;
use afallon_enclave::{Enclave, EnclaveConfig, sim_measurement};
use afallon_workloads::{NoIo, Registry};
use libfuzzer_sys::fuzz_target;

fn enclave() -> &'static Enclave {
    static ENCLAVE: OnceLock<Enclave> = OnceLock::new();
    ENCLAVE.get_or_init(|| {
        let registry = Registry::with_builtins();
        let platform = SimPlatform::ephemeral(sim_measurement(&registry)).expect("platform");
        Enclave::create(&platform, registry, EnclaveConfig::new("fuzz-worker")).expect("sign-up").0
    })
}

fuzz_target!(|data: &[u8]| {
    let processed = enclave().process(data, &NoIo);
    let response: serde_json::Value = serde_json::from_str(&processed.response).expect("responses are JSON");
    assert!(response.get("error").is_some() || response.get("result").is_some());
});
