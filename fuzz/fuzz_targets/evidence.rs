//! Fuzzes every evidence verifier with the bytes of a worker record's or an enclave's evidence:
//! the first byte picks the verifier, the rest is the evidence, verified at a fixed time.
#![no_main]

use std::sync::{Arc, LazyLock};

use afallon_attest::verify::sev_snp::SevSnpVerifier;
use afallon_attest::verify::sgx_dcap::{CollateralCache, DcapVerifier};
use afallon_attest::verify::sgx_epid::SgxEpidVerifier;
use afallon_attest::verify::sim::SimVerifier;
use afallon_attest::{UnixTime, Verifier};
use libfuzzer_sys::fuzz_target;

static SGX_EPID: LazyLock<SgxEpidVerifier> = LazyLock::new(SgxEpidVerifier::intel);
static SEV_SNP: LazyLock<SevSnpVerifier> = LazyLock::new(SevSnpVerifier::amd);
// No collateral: the quote is parsed (for its platform) and refused before any signature.
static SGX_DCAP: LazyLock<DcapVerifier> =
    LazyLock::new(|| DcapVerifier::sgx(Arc::new(CollateralCache::new())));
static TDX: LazyLock<DcapVerifier> =
    LazyLock::new(|| DcapVerifier::tdx(Arc::new(CollateralCache::new())));

fuzz_target!(|data: &[u8]| {
    let Some((&pick, evidence)) = data.split_first() else { return };
    let verifier: &dyn Verifier = match pick % 5 {
        0 => &SimVerifier,
        1 => &*SGX_EPID,
        2 => &*SGX_DCAP,
        3 => &*TDX,
        _ => &*SEV_SNP,
    };
    let _ = verifier.verify(evidence, UnixTime(1_697_619_675));
});
