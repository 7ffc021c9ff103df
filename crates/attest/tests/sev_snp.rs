//! The `sev-snp` verifier on a real Milan report and its VCEK (tests/fixtures/README.md says where
//! they come from), at a pinned time: it verifies, and each way of spoiling it fails with its own
//! error.

use afallon_attest::verify::sev_snp::SevSnpVerifier;
use afallon_attest::{
    Evidence, EvidenceKind, Measurement, Policy, ReportData, SnpTcb, TcbStatus, UnixTime, Verifier,
    VerifyError,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;

/// 2026-01-01: inside the VCEK's validity (2023-04-03 to 2030-04-03).
const AT: UnixTime = UnixTime(1_767_225_600);

fn report() -> Vec<u8> {
    hex::decode(include_str!("fixtures/sev-snp/report_milan.hex").trim()).expect("hex")
}

fn vcek() -> Vec<u8> {
    include_bytes!("fixtures/sev-snp/vcek_milan.der").to_vec()
}

fn evidence(report: &[u8], vcek: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({"report": BASE64.encode(report), "vcek": BASE64.encode(vcek)}))
        .expect("json")
}

#[test]
fn a_real_milan_report_verifies_with_its_vcek() {
    let verified =
        SevSnpVerifier::amd().verify(&evidence(&report(), &vcek()), AT).expect("verifies");
    assert_eq!(verified.kind, EvidenceKind::SevSnp);
    assert_eq!(verified.tcb_status, TcbStatus::Unrated);
    assert_eq!(verified.snp_tcb, Some(SnpTcb { bootloader: 3, tee: 0, snp: 8, microcode: 0x73 }));
    assert_eq!(verified.measurement.as_bytes().len(), 48);
    assert!(verified.measurement.to_hex_upper().starts_with("7A1E5C26"));
    eprintln!("{verified:#?}");
}

#[test]
fn each_way_of_spoiling_the_report_fails_with_its_own_error() {
    let amd = SevSnpVerifier::amd();
    // One flipped byte in the signed report (its report data).
    let mut flipped = report();
    flipped[0x50] ^= 1;
    assert_eq!(amd.verify(&evidence(&flipped, &vcek()), AT), Err(VerifyError::BadSignature));
    // A debug guest (POLICY bit 19), whose memory the host can read.
    let mut debug = report();
    debug[0x08 + 2] |= 0x08;
    assert_eq!(amd.verify(&evidence(&debug, &vcek()), AT), Err(VerifyError::DebugEnclave));
    // A report of another chip (its CHIP_ID), or another TCB, than the VCEK's.
    let mut other_chip = report();
    other_chip[0x1a0] ^= 1;
    assert_eq!(
        amd.verify(&evidence(&other_chip, &vcek()), AT),
        Err(VerifyError::VcekMismatch("chip"))
    );
    let mut other_tcb = report();
    other_tcb[0x180 + 6] += 1;
    assert_eq!(
        amd.verify(&evidence(&other_tcb, &vcek()), AT),
        Err(VerifyError::VcekMismatch("TCB"))
    );
    // One flipped byte in the VCEK's signed part.
    let mut vcek_flipped = vcek();
    vcek_flipped[20] ^= 1;
    assert!(matches!(
        amd.verify(&evidence(&report(), &vcek_flipped), AT),
        Err(VerifyError::CertificateSignature { index: 0 }
            | VerifyError::MalformedCertificate { .. })
    ));
    // After the VCEK expires.
    assert!(matches!(
        amd.verify(&evidence(&report(), &vcek()), UnixTime(1_920_000_000)),
        Err(VerifyError::CertificateExpired { index: 0, .. })
    ));
    // A verifier pinning another product's roots (Genoa's).
    let genoa = SevSnpVerifier::with_roots(
        include_str!("../src/verify/roots/amd-genoa-ark.pem"),
        include_str!("../src/verify/roots/amd-genoa-ask.pem"),
    )
    .expect("roots");
    assert_eq!(genoa.verify(&evidence(&report(), &vcek()), AT), Err(VerifyError::UntrustedRoot));
    // Garbage is malformed, never a panic.
    for garbage in [&b""[..], b"{}", &evidence(&report()[..100], &vcek())] {
        assert!(matches!(amd.verify(garbage, AT), Err(VerifyError::Malformed(_))));
    }
}

#[test]
fn the_policy_judges_what_the_report_proves() {
    let verified =
        SevSnpVerifier::amd().verify(&evidence(&report(), &vcek()), AT).expect("verifies");
    let snp = Evidence { kind: EvidenceKind::SevSnp, bytes: evidence(&report(), &vcek()) };
    let binds = verified.report_data;
    let its_tcb = SnpTcb { bootloader: 3, tee: 0, snp: 8, microcode: 0x73 };
    let pinned = Policy::new().allow_measurement(verified.measurement).minimum_snp_tcb(its_tcb);
    pinned.verify(&snp, &binds, AT).expect("its measurement at its TCB");
    // SEV-SNP has no vendor status: without a lowest TCB version, no report passes; nor without
    // a measurement.
    assert_eq!(
        Policy::new().allow_measurement(verified.measurement).verify(&snp, &binds, AT),
        Err(VerifyError::SnpTcbFloorMissing)
    );
    assert_eq!(
        Policy::new().minimum_snp_tcb(its_tcb).verify(&snp, &binds, AT),
        Err(VerifyError::MeasurementNotPinned)
    );
    let newer = SnpTcb { bootloader: 3, tee: 0, snp: 9, microcode: 0 };
    assert!(matches!(
        pinned.clone().minimum_snp_tcb(newer).verify(&snp, &binds, AT),
        Err(VerifyError::SnpTcbRefused { .. })
    ));
    assert_eq!(
        Policy::new()
            .minimum_snp_tcb(its_tcb)
            .allow_measurement(Measurement::from([0; 48]))
            .verify(&snp, &binds, AT),
        Err(VerifyError::MeasurementNotAllowed(verified.measurement))
    );
    assert_eq!(pinned.verify(&snp, &ReportData([1; 64]), AT), Err(VerifyError::ReportDataMismatch));
}
