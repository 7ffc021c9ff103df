//! The `sgx-epid` verifier on a real IAS report (tests/fixtures/README.md says where it comes
//! from), at the report's own time: it verifies, and each way of spoiling it fails with its own
//! error.

use afallon_attest::verify::sgx_epid::SgxEpidVerifier;
use afallon_attest::{
    Evidence, EvidenceKind, Measurement, Policy, ReportData, TcbStatus, UnixTime, Verifier,
    VerifyError,
};
use afallon_crypto::pem;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

/// 2023-10-18T09:01:15Z: when IAS signed the sample.
const SIGNED_AT: UnixTime = UnixTime(1_697_619_675);
const INTEL_ROOT: &str =
    include_str!("../src/verify/roots/intel-sgx-attestation-report-signing-ca.pem");

/// The sample as wire spec §4.2's `proofData`: report, signature, signing chain (signer, root).
fn sample() -> Value {
    let phala: Value =
        serde_json::from_str(include_str!("fixtures/sgx-epid/phala.json")).expect("json");
    let signer = BASE64.decode(phala["rawSigningCert"].as_str().expect("cert")).expect("base64");
    json!({
        "verification_report": phala["raReport"],
        "ias_report_signature": phala["signature"],
        "ias_report_signing_certificate": format!("{}{INTEL_ROOT}", pem::encode("CERTIFICATE", &signer)),
    })
}

fn bytes(proof: &Value) -> Vec<u8> {
    serde_json::to_vec(proof).expect("json")
}

/// "Hello World", as the sample's enclave put it in its report data.
fn hello_world() -> ReportData {
    let mut data = [0; 64];
    data[..11].copy_from_slice(b"Hello World");
    ReportData(data)
}

#[test]
fn a_real_ias_report_verifies_at_its_time() {
    let verified = SgxEpidVerifier::intel().verify(&bytes(&sample()), SIGNED_AT).expect("verifies");
    assert_eq!(verified.kind, EvidenceKind::SgxEpid);
    assert_eq!(verified.tcb_status, TcbStatus::OutOfDate);
    assert_eq!(verified.advisories.len(), 13);
    assert!(verified.advisories.contains(&"INTEL-SA-00615".to_owned()));
    assert_eq!(verified.report_data, hello_world());
    assert_eq!(
        verified.measurement.to_hex_upper(),
        "10829681801CBEFD5B75779D0820D86D0A60D81EAD14DB793595EDBE0E87B986"
    );
    let signer = verified.sgx_signer.expect("an SGX signer");
    assert_eq!(
        hex::encode_upper(signer.mr_signer),
        "83D719E77DEACA1470F6BAF62A4D774303C899DB69020F9C70EE1DFC08C7CE9E"
    );
    assert_eq!((signer.isv_prod_id, signer.isv_svn), (0, 0));
    eprintln!("{verified:#?}");
}

#[test]
fn each_way_of_spoiling_the_sample_fails_with_its_own_error() {
    let intel = SgxEpidVerifier::intel();
    let verify = |proof: &Value, at| intel.verify(&bytes(proof), at);

    // One flipped byte in the signed report.
    let mut report = sample();
    let text = report["verification_report"]
        .as_str()
        .expect("report")
        .replace("\"version\":4", "\"version\":5");
    report["verification_report"] = json!(text);
    assert_eq!(verify(&report, SIGNED_AT), Err(VerifyError::BadSignature));

    // One flipped byte in the signature.
    let mut signature = sample();
    let mut raw =
        BASE64.decode(signature["ias_report_signature"].as_str().expect("sig")).expect("b64");
    raw[100] ^= 1;
    signature["ias_report_signature"] = json!(BASE64.encode(&raw));
    assert_eq!(verify(&signature, SIGNED_AT), Err(VerifyError::BadSignature));

    // One flipped byte in the signing certificate's signed part (its serial number).
    let phala: Value =
        serde_json::from_str(include_str!("fixtures/sgx-epid/phala.json")).expect("json");
    let mut cert = BASE64.decode(phala["rawSigningCert"].as_str().expect("cert")).expect("b64");
    cert[15] ^= 1;
    let mut certificate = sample();
    certificate["ias_report_signing_certificate"] = json!(pem::encode("CERTIFICATE", &cert));
    assert_eq!(
        verify(&certificate, SIGNED_AT),
        Err(VerifyError::CertificateSignature { index: 0 })
    );

    // The signing certificate expired on 2026-11-20: verified today, the chain fails.
    let today = UnixTime(1_796_601_600); // 2026-12-07
    assert!(matches!(
        verify(&sample(), today),
        Err(VerifyError::CertificateExpired { index: 0, .. })
    ));
    // And a report is not valid before it was made.
    assert_eq!(verify(&sample(), UnixTime(SIGNED_AT.0 - 1)), Err(VerifyError::ReportFromTheFuture));

    // A chain whose issuer is no certificate authority: the signing certificate posing as the
    // root.
    let mut posing = sample();
    posing["ias_report_signing_certificate"] = json!(format!(
        "{}{}",
        pem::encode(
            "CERTIFICATE",
            &BASE64.decode(phala["rawSigningCert"].as_str().expect("c")).expect("b64")
        ),
        pem::encode(
            "CERTIFICATE",
            &BASE64.decode(phala["rawSigningCert"].as_str().expect("c")).expect("b64")
        ),
    ));
    assert!(matches!(
        verify(&posing, SIGNED_AT),
        Err(VerifyError::MalformedCertificate { index: 1, .. })
    ));
    // A chain longer than any vendor's is refused before any signature is checked (a record
    // built to be expensive).
    let signer_pem = pem::encode(
        "CERTIFICATE",
        &BASE64.decode(phala["rawSigningCert"].as_str().expect("c")).expect("b64"),
    );
    let mut long = sample();
    long["ias_report_signing_certificate"] = json!(signer_pem.repeat(5));
    assert!(matches!(
        verify(&long, SIGNED_AT),
        Err(VerifyError::MalformedCertificate { index: 4, what: "chain too long" })
    ));
    // A verifier that pins another root: the chain does not lead there.
    let phala_cert = pem::encode(
        "CERTIFICATE",
        &BASE64.decode(phala["rawSigningCert"].as_str().expect("c")).expect("b64"),
    );
    let other_root = SgxEpidVerifier::with_root_pem(&phala_cert).expect("a certificate");
    assert_eq!(other_root.verify(&bytes(&sample()), SIGNED_AT), Err(VerifyError::UntrustedRoot));

    // Garbage is malformed, never a panic.
    for garbage in [&b""[..], b"{}", b"[1]", b"{\"verification_report\":1}"] {
        assert!(
            matches!(intel.verify(garbage, SIGNED_AT), Err(VerifyError::Malformed(_))),
            "{garbage:?}"
        );
    }
}

#[test]
fn the_policy_judges_what_the_report_proves() {
    let evidence = Evidence { kind: EvidenceKind::SgxEpid, bytes: bytes(&sample()) };
    let verified = SgxEpidVerifier::intel().verify(&evidence.bytes, SIGNED_AT).expect("verifies");
    let unpinned = Policy::new().minimum_tcb(TcbStatus::OutOfDate);
    let out_of_date = unpinned.clone().allow_measurement(verified.measurement);
    out_of_date.verify(&evidence, &hello_world(), SIGNED_AT).expect("accepted");

    // No measurement or signer named: any code in a genuine enclave would pass, so none does.
    assert_eq!(
        unpinned.verify(&evidence, &hello_world(), SIGNED_AT),
        Err(VerifyError::MeasurementNotPinned)
    );
    // The default asks for an up-to-date TCB.
    assert_eq!(
        Policy::new().allow_measurement(verified.measurement).verify(
            &evidence,
            &hello_world(),
            SIGNED_AT
        ),
        Err(VerifyError::TcbStatusRefused {
            found: TcbStatus::OutOfDate,
            minimum: TcbStatus::UpToDate
        })
    );
    // A refused advisory.
    assert_eq!(
        out_of_date.clone().refuse_advisory("INTEL-SA-00615").verify(
            &evidence,
            &hello_world(),
            SIGNED_AT
        ),
        Err(VerifyError::AdvisoryRefused("INTEL-SA-00615".into()))
    );
    // A measurement outside the policy.
    let other = unpinned.clone().allow_measurement(Measurement::from([7; 32]));
    assert_eq!(
        other.verify(&evidence, &hello_world(), SIGNED_AT),
        Err(VerifyError::MeasurementNotAllowed(verified.measurement))
    );
    // The signer, product and security version instead of the measurement.
    let signer = verified.sgx_signer.expect("signer");
    let by_signer = unpinned.clone().allow_sgx_signer(signer.mr_signer, 0, 0);
    by_signer.verify(&evidence, &hello_world(), SIGNED_AT).expect("signer allowed");
    let newer = unpinned.clone().allow_sgx_signer(signer.mr_signer, 0, 1);
    assert_eq!(
        newer.verify(&evidence, &hello_world(), SIGNED_AT),
        Err(VerifyError::SignerNotAllowed)
    );
    // Report data that does not bind the expected keys.
    assert_eq!(
        out_of_date.verify(&evidence, &ReportData([0; 64]), SIGNED_AT),
        Err(VerifyError::ReportDataMismatch)
    );
    // A report older than the policy allows.
    let day_later = UnixTime(SIGNED_AT.0 + 86_400);
    let fresh_only = out_of_date.clone().max_report_age(3_600);
    fresh_only.verify(&evidence, &hello_world(), SIGNED_AT).expect("fresh");
    assert_eq!(
        fresh_only.verify(&evidence, &hello_world(), day_later),
        Err(VerifyError::ReportTooOld { age: 86_400, max: 3_600 })
    );
}
