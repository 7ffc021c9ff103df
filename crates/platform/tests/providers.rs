//! The Gramine and configfs-tsm providers against directories laid out like `/dev/attestation`
//! and `/sys/kernel/config/tsm/report`, answered by a fake filler (a thread playing Gramine or
//! the kernel) that serves real vendor-signed samples: the evidence a provider produces over the
//! sample's own report data verifies with afallon's verifiers, a request another writer changed
//! is refused, and sealing is bound to the platform's secret and the measurement.

use std::sync::Arc;

use afallon_attest::verify::sev_snp::SevSnpVerifier;
use afallon_attest::verify::sgx_dcap::{Collateral, CollateralCache, DcapVerifier};
use afallon_attest::{EvidenceKind, Platform, PlatformError, ReportData, UnixTime, Verifier};
use afallon_platform::fake::{fake_gramine, fake_tsm};
use afallon_platform::{ConfigfsTsmPlatform, GraminePlatform};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../attest/tests/fixtures");
/// Inside the DCAP samples' collateral windows.
const DCAP_AT: UnixTime = UnixTime(1_751_328_000);
/// Inside the SNP sample's VCEK validity.
const SNP_AT: UnixTime = UnixTime(1_767_225_600);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

fn collateral() -> Arc<CollateralCache> {
    let mut cache = CollateralCache::new();
    for name in ["dcap/sgx_quote_collateral.json", "dcap/tdx_quote_collateral.json"] {
        cache.insert(Collateral::from_json(&fixture(name)).expect("collateral"));
    }
    Arc::new(cache)
}

fn report_data(sample: &[u8], at: usize) -> ReportData {
    ReportData(sample[at..at + 64].try_into().expect("64 bytes"))
}

#[test]
fn gramine_gives_dcap_quotes_that_verify_and_seals_to_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let attestation = dir.path().join("dev-attestation");
    let _gramine = fake_gramine(&attestation, fixture("dcap/sgx_quote"), [7; 16]);
    let platform = GraminePlatform::open(&attestation).expect("opens");
    let sample = fixture("dcap/sgx_quote");
    assert_eq!(platform.kind(), EvidenceKind::SgxDcap);
    assert_eq!(platform.measurement().as_bytes(), &sample[112..144], "MRENCLAVE");

    // Over the sample's own report data, the quote is the sample: it verifies.
    let evidence = platform.evidence(&report_data(&sample, 368)).expect("evidence");
    assert_eq!(evidence.bytes, sample);
    let verified =
        DcapVerifier::sgx(collateral()).verify(&evidence.bytes, DCAP_AT).expect("verifies");
    assert_eq!(verified.measurement, platform.measurement());
    // Over other report data, the quote carries it.
    let other = platform.evidence(&ReportData([9; 64])).expect("evidence");
    assert_eq!(&other.bytes[368..432], &[9; 64]);

    // Sealed under this enclave's key: another key does not open it.
    let blob = platform.seal("state", b"wallet").expect("seal");
    assert_eq!(&platform.unseal("state", &blob).expect("unseal")[..], b"wallet");
    let elsewhere = dir.path().join("other-cpu");
    let _other = fake_gramine(&elsewhere, fixture("dcap/sgx_quote"), [8; 16]);
    let other_cpu = GraminePlatform::open(&elsewhere).expect("opens");
    assert!(other_cpu.unseal("state", &blob).is_err());
}

#[test]
fn gramine_without_dcap_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("keys")).expect("mkdir");
    std::fs::write(dir.path().join("attestation_type"), "epid\n").expect("write");
    let error = GraminePlatform::open(dir.path()).expect_err("epid");
    assert!(matches!(&error, PlatformError::Interface(m) if m.contains("EPID")), "{error}");
}

#[test]
fn configfs_tsm_on_tdx_gives_quotes_that_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reports = dir.path().join("tsm/report");
    let sample = fixture("dcap/tdx_quote");
    let _kernel = fake_tsm(&reports, "tdx_guest", sample.clone(), 568, Vec::new(), "1");
    let platform = ConfigfsTsmPlatform::open(&reports, &dir.path().join("secrets")).expect("opens");
    assert_eq!(platform.kind(), EvidenceKind::Tdx);
    assert_eq!(platform.measurement().as_bytes(), &sample[184..232], "MRTD");
    let evidence = platform.evidence(&report_data(&sample, 568)).expect("evidence");
    assert_eq!(evidence.bytes, sample);
    let verified =
        DcapVerifier::tdx(collateral()).verify(&evidence.bytes, DCAP_AT).expect("verifies");
    assert_eq!(verified.measurement, platform.measurement());

    // Sealing keys persist with the secret directory and follow the measurement.
    let blob = platform.seal("state", b"ledger").expect("seal");
    let again = ConfigfsTsmPlatform::open(&reports, &dir.path().join("secrets")).expect("reopens");
    assert_eq!(&again.unseal("state", &blob).expect("unseal")[..], b"ledger");
    let fresh =
        ConfigfsTsmPlatform::open(&reports, &dir.path().join("other-secrets")).expect("opens");
    assert!(fresh.unseal("state", &blob).is_err());
}

#[test]
fn configfs_tsm_on_sev_snp_gives_reports_with_their_vcek_that_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reports = dir.path().join("tsm/report");
    let sample = hex::decode(
        std::fs::read_to_string(format!("{FIXTURES}/sev-snp/report_milan.hex"))
            .expect("report")
            .trim(),
    )
    .expect("hex");
    let vcek = fixture("sev-snp/vcek_milan.der");
    // The certificate table: the VCEK's entry, the terminating entry, then the VCEK.
    let mut table = vec![
        0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac,
        0xcd,
    ];
    table.extend_from_slice(&48_u32.to_le_bytes());
    table.extend_from_slice(&u32::try_from(vcek.len()).expect("len").to_le_bytes());
    table.extend_from_slice(&[0; 24]);
    table.extend_from_slice(&vcek);
    let _kernel = fake_tsm(&reports, "sev_guest", sample.clone(), 0x50, table, "1");
    let platform = ConfigfsTsmPlatform::open(&reports, &dir.path().join("secrets")).expect("opens");
    assert_eq!(platform.kind(), EvidenceKind::SevSnp);
    assert_eq!(platform.measurement().as_bytes(), &sample[0x90..0xc0]);
    let evidence = platform.evidence(&report_data(&sample, 0x50)).expect("evidence");
    let verified = SevSnpVerifier::amd().verify(&evidence.bytes, SNP_AT).expect("verifies");
    assert_eq!(verified.measurement, platform.measurement());
}

#[test]
fn a_tsm_request_another_writer_changed_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reports = dir.path().join("tsm/report");
    let _kernel = fake_tsm(&reports, "tdx_guest", fixture("dcap/tdx_quote"), 568, Vec::new(), "2");
    let error =
        ConfigfsTsmPlatform::open(&reports, &dir.path().join("secrets")).expect_err("raced");
    assert!(
        matches!(&error, PlatformError::Interface(m) if m.contains("another writer")),
        "{error}"
    );
}
