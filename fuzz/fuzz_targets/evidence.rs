//! Fuzzes every evidence verifier with the bytes of a worker record's or an enclave's evidence:
//! the first byte picks the verifier, the rest is the evidence, verified at a fixed time.
#![no_main]

use std::sync::LazyLock;

use afallon_attest::verify::sgx_epid::SgxEpidVerifier;
use afallon_attest::verify::sim::SimVerifier;
use afallon_attest::{UnixTime, Verifier};
use libfuzzer_sys::fuzz_target;

static SGX_EPID: LazyLock<SgxEpidVerifier> = LazyLock::new(SgxEpidVerifier::intel);

fuzz_target!(|data: &[u8]| {
    let Some((&pick, evidence)) = data.split_first() else { return };
    let verifier: &dyn Verifier = match pick % 2 {
        0 => &SimVerifier,
        _ => &*SGX_EPID,
    };
    let _ = verifier.verify(evidence, UnixTime(1_697_619_675));
});
