//! Fuzzes the verifier of simulated evidence, which reads documents from worker records.
#![no_main]

use afallon_attest::verify_sim;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = verify_sim(text);
    }
});
