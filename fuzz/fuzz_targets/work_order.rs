//! Fuzzes the enclave with raw work-order requests, through its messages as the host sends them:
//! whatever the bytes, the answer is a JSON-RPC error or result, never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use afallon_platform::SimPlatform;
use afallon_enclave::{Enclave, EnclaveClient, EnclaveConfig, sim_measurement};
use afallon_workloads::{NoIo, Registry};
use libfuzzer_sys::fuzz_target;

fn enclave() -> &'static EnclaveClient {
    static ENCLAVE: OnceLock<EnclaveClient> = OnceLock::new();
    ENCLAVE.get_or_init(|| {
        let registry = Registry::with_builtins();
        let platform = SimPlatform::ephemeral(sim_measurement(&registry)).expect("platform");
        let enclave = Arc::new(Enclave::new(Arc::new(platform), registry));
        EnclaveClient::start(enclave, EnclaveConfig::new("fuzz-worker"), None, vec![])
            .expect("sign-up")
    })
}

fuzz_target!(|data: &[u8]| {
    let (processed, _) = enclave().process(data, &NoIo).expect("the enclave answers every request");
    let response: serde_json::Value =
        serde_json::from_str(&processed.response).expect("responses are JSON");
    assert!(response.get("error").is_some() || response.get("result").is_some());
});
