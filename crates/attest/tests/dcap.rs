//! The `sgx-dcap` and `tdx` verifiers on real quotes with their collateral (tests/fixtures/
//! README.md says where they come from), at a pinned time: they verify, and each way of
//! spoiling them fails with its own error.

use std::sync::Arc;

use afallon_attest::verify::sgx_dcap::{Collateral, CollateralCache, DcapVerifier};
use afallon_attest::{
    Evidence, EvidenceKind, Measurement, Policy, TcbStatus, UnixTime, Verifier, VerifyError,
};

/// 2025-07-01T00:00:00Z: inside both samples' collateral windows (2025-06-19 to 2025-07-19).
const AT: UnixTime = UnixTime(1_751_328_000);

const SGX_QUOTE: &[u8] = include_bytes!("fixtures/dcap/sgx_quote");
const TDX_QUOTE: &[u8] = include_bytes!("fixtures/dcap/tdx_quote");

fn collateral() -> Arc<CollateralCache> {
    let mut cache = CollateralCache::new();
    for json in [
        &include_bytes!("fixtures/dcap/sgx_quote_collateral.json")[..],
        include_bytes!("fixtures/dcap/tdx_quote_collateral.json"),
    ] {
        cache.insert(Collateral::from_json(json).expect("collateral"));
    }
    assert_eq!(cache.len(), 2);
    Arc::new(cache)
}

#[test]
fn a_real_sgx_quote_verifies_with_its_collateral() {
    let verified = DcapVerifier::sgx(collateral()).verify(SGX_QUOTE, AT).expect("verifies");
    assert_eq!(verified.kind, EvidenceKind::SgxDcap);
    assert_eq!(verified.tcb_status, TcbStatus::ConfigurationAndSwHardeningNeeded);
    assert_eq!(verified.advisories, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(verified.measurement.as_bytes().len(), 32);
    assert!(verified.sgx_signer.is_some());
    eprintln!("{verified:#?}");
}

#[test]
fn a_real_tdx_quote_verifies_with_its_collateral() {
    let verified = DcapVerifier::tdx(collateral()).verify(TDX_QUOTE, AT).expect("verifies");
    assert_eq!(verified.kind, EvidenceKind::Tdx);
    assert_eq!(verified.tcb_status, TcbStatus::UpToDate);
    assert!(verified.advisories.is_empty());
    assert_eq!(verified.measurement.as_bytes().len(), 48, "MRTD");
    eprintln!("{verified:#?}");
}

#[test]
fn each_way_of_spoiling_a_quote_fails_with_its_own_error() {
    let collateral = collateral();
    let sgx = DcapVerifier::sgx(Arc::clone(&collateral));
    let tdx = DcapVerifier::tdx(Arc::clone(&collateral));
    // One flipped byte in each quote's signed report (its report data).
    for (verifier, quote, at) in
        [(&sgx as &dyn Verifier, SGX_QUOTE, 48 + 320), (&tdx, TDX_QUOTE, 48 + 520)]
    {
        let mut flipped = quote.to_vec();
        flipped[at] ^= 1;
        assert_eq!(
            verifier.verify(&flipped, AT),
            Err(VerifyError::BadSignature),
            "{:?}",
            verifier.kind()
        );
    }
    // The collateral past its next update, or before it was issued.
    for at in [UnixTime(AT.0 + 30 * 86_400), UnixTime(1_750_000_000)] {
        assert!(matches!(sgx.verify(SGX_QUOTE, at), Err(VerifyError::CollateralExpired { .. })));
        assert!(matches!(tdx.verify(TDX_QUOTE, at), Err(VerifyError::CollateralExpired { .. })));
    }
    // A verifier pinning another root (Intel's, but IAS's).
    let other_root = afallon_crypto::pem::decode(include_str!(
        "../src/verify/roots/intel-sgx-attestation-report-signing-ca.pem"
    ))
    .expect("pem")
    .der;
    let pinned = DcapVerifier::sgx(Arc::clone(&collateral)).with_root_der(other_root);
    assert_eq!(pinned.verify(SGX_QUOTE, AT), Err(VerifyError::UntrustedRoot));
    // No collateral for the platform.
    let empty = DcapVerifier::sgx(Arc::new(CollateralCache::new()));
    assert!(matches!(empty.verify(SGX_QUOTE, AT), Err(VerifyError::NoCollateral(_))));
    // An SGX quote is not a TD's, nor garbage a quote.
    assert!(tdx.verify(SGX_QUOTE, AT).is_err());
    for garbage in [&b""[..], &[0; 64], &SGX_QUOTE[..100]] {
        assert!(matches!(sgx.verify(garbage, AT), Err(VerifyError::Malformed(_))));
    }
}

#[test]
fn the_policy_judges_what_the_quotes_prove() {
    let sgx = Evidence { kind: EvidenceKind::SgxDcap, bytes: SGX_QUOTE.to_vec() };
    let tdx = Evidence { kind: EvidenceKind::Tdx, bytes: TDX_QUOTE.to_vec() };
    let sgx_verified = DcapVerifier::sgx(collateral()).verify(SGX_QUOTE, AT).expect("sgx");
    let tdx_verified = DcapVerifier::tdx(collateral()).verify(TDX_QUOTE, AT).expect("tdx");
    let rtmrs = tdx_verified.tdx.expect("TDX measurements").rtmrs;
    // Without collateral, a policy refuses quotes.
    assert_eq!(
        Policy::new().allow_measurement(sgx_verified.measurement).verify(
            &sgx,
            &sgx_verified.report_data,
            AT
        ),
        Err(VerifyError::KindRefused("sgx-dcap"))
    );
    let unpinned = Policy::new().with_dcap_collateral(collateral());
    let policy = unpinned
        .clone()
        .allow_measurement(sgx_verified.measurement)
        .allow_measurement(tdx_verified.measurement)
        .allow_tdx_rtmrs(rtmrs);
    // Nothing named: no quote passes.
    assert_eq!(
        unpinned.clone().minimum_tcb(TcbStatus::OutOfDate).verify(
            &sgx,
            &sgx_verified.report_data,
            AT
        ),
        Err(VerifyError::MeasurementNotPinned)
    );
    // The default minimum TCB refuses the SGX sample's and accepts the TDX sample's.
    assert!(matches!(
        policy.verify(&sgx, &sgx_verified.report_data, AT),
        Err(VerifyError::TcbStatusRefused { .. })
    ));
    policy.verify(&tdx, &tdx_verified.report_data, AT).expect("up to date");
    // A TD whose MRTD is allowed but whose runtime (its RTMRs) is not: MRTD measures only the
    // firmware.
    assert_eq!(
        unpinned.clone().allow_measurement(tdx_verified.measurement).verify(
            &tdx,
            &tdx_verified.report_data,
            AT
        ),
        Err(VerifyError::TdxRuntimeNotAllowed)
    );
    // A refused advisory; a measurement outside the policy.
    let lenient = policy.clone().minimum_tcb(TcbStatus::ConfigurationAndSwHardeningNeeded);
    lenient.verify(&sgx, &sgx_verified.report_data, AT).expect("accepted");
    assert_eq!(
        lenient.clone().refuse_advisory("INTEL-SA-00615").verify(
            &sgx,
            &sgx_verified.report_data,
            AT
        ),
        Err(VerifyError::AdvisoryRefused("INTEL-SA-00615".into()))
    );
    assert_eq!(
        unpinned.allow_tdx_rtmrs(rtmrs).allow_measurement(Measurement::from([1; 48])).verify(
            &tdx,
            &tdx_verified.report_data,
            AT
        ),
        Err(VerifyError::MeasurementNotAllowed(tdx_verified.measurement))
    );
    // Report data that binds other keys.
    assert_eq!(
        policy.verify(&tdx, &afallon_attest::ReportData([0; 64]), AT),
        Err(VerifyError::ReportDataMismatch)
    );
}
