//! The simulated TEE under the verification policy: refused by default, verified for real when
//! allowed, bound to the keys it attests.

use afallon_attest::{
    Evidence, Measurement, Platform, Policy, ReportData, TcbStatus, UnixTime, VerifyError,
};
use afallon_crypto::EcdsaSigningKey;
use afallon_platform::SimPlatform;

fn platform() -> SimPlatform {
    SimPlatform::ephemeral(Measurement::from([0x5a; 32])).expect("platform")
}

fn worker_binding() -> (String, ReportData) {
    let pem = EcdsaSigningKey::generate().expect("rng").verifying_key().to_pem();
    let report_data = ReportData::for_verification_key(&pem);
    (pem, report_data)
}

#[test]
fn default_policy_refuses_simulated_evidence() {
    let (_, report_data) = worker_binding();
    let evidence = platform().evidence(&report_data).expect("evidence");
    assert!(!Policy::default().allows_simulation());
    assert_eq!(
        Policy::default().verify(&evidence, &report_data, UnixTime::now()),
        Err(VerifyError::SimulationRefused)
    );
}

#[test]
fn allowed_simulation_verifies_and_binds_the_verification_key() {
    let platform = platform();
    let (_, report_data) = worker_binding();
    let evidence = platform.evidence(&report_data).expect("evidence");
    let verified = Policy::new()
        .insecure_allow_simulation()
        .verify(&evidence, &report_data, UnixTime::now())
        .expect("verifies");
    assert_eq!(verified.measurement, Measurement::from([0x5a; 32]));
    assert_eq!(verified.report_data, report_data);
    assert_eq!(verified.tcb_status, TcbStatus::Simulated);

    // Evidence for one key does not vouch for another.
    let (_, other) = worker_binding();
    assert_eq!(
        Policy::new().insecure_allow_simulation().verify(&evidence, &other, UnixTime::now()),
        Err(VerifyError::ReportDataMismatch)
    );
}

#[test]
fn tampered_evidence_is_refused() {
    let (_, report_data) = worker_binding();
    let evidence = platform().evidence(&report_data).expect("evidence");
    let policy = Policy::new().insecure_allow_simulation();
    // Claim another measurement: the signature no longer matches.
    let forged = Evidence {
        kind: evidence.kind,
        bytes: String::from_utf8(evidence.bytes.clone())
            .expect("utf-8")
            .replace(&hex_of(0x5a), &hex_of(0x5b))
            .into_bytes(),
    };
    assert_ne!(forged, evidence);
    assert_eq!(
        policy.verify(&forged, &report_data, UnixTime::now()),
        Err(VerifyError::BadSignature)
    );
    let garbage = Evidence { kind: evidence.kind, bytes: b"{\"kind\": \"sim\"}".to_vec() };
    assert!(matches!(
        policy.verify(&garbage, &report_data, UnixTime::now()),
        Err(VerifyError::Malformed(_))
    ));
}

fn hex_of(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

#[test]
fn policy_restricts_keys_and_measurements() {
    let platform = platform();
    let (_, report_data) = worker_binding();
    let evidence = platform.evidence(&report_data).expect("evidence");
    let stranger = SimPlatform::ephemeral(Measurement::from([0x5a; 32])).expect("platform");
    let trusting_stranger =
        Policy::new().insecure_allow_simulation().trust_simulation_key(stranger.attestation_key());
    assert_eq!(
        trusting_stranger.verify(&evidence, &report_data, UnixTime::now()),
        Err(VerifyError::UntrustedSimulationKey)
    );
    let trusting_us =
        Policy::new().insecure_allow_simulation().trust_simulation_key(platform.attestation_key());
    assert!(trusting_us.verify(&evidence, &report_data, UnixTime::now()).is_ok());
    let other_measurement =
        Policy::new().insecure_allow_simulation().allow_measurement(Measurement::from([1; 32]));
    assert_eq!(
        other_measurement.verify(&evidence, &report_data, UnixTime::now()),
        Err(VerifyError::MeasurementNotAllowed(Measurement::from([0x5a; 32])))
    );
}
