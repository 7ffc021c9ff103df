//! The Gramine and configfs-tsm providers against directories laid out like `/dev/attestation`
//! and `/sys/kernel/config/tsm/report`, answered by a fake filler (a thread playing Gramine or
//! the kernel) that serves real vendor-signed samples: the evidence a provider produces over the
//! sample's own report data verifies with afallon's verifiers, a request another writer changed
//! is refused, and sealing is bound to the platform's secret and the measurement.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use afallon_attest::verify::sev_snp::SevSnpVerifier;
use afallon_attest::verify::sgx_dcap::{Collateral, CollateralCache, SgxDcapVerifier};
use afallon_attest::verify::tdx::TdxVerifier;
use afallon_attest::{EvidenceKind, Platform, PlatformError, ReportData, UnixTime, Verifier};
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

/// Writes `bytes` to `path` at once (readers never see half of it).
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("filling");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A thread answering requests until dropped.
struct Filler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Filler {
    fn start(mut answer: impl FnMut() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                answer();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Plays Gramine: a quote (the SGX sample with the written report data) for each
/// `user_report_data`.
fn fake_gramine(dir: &Path, sealing_key: [u8; 16]) -> Filler {
    std::fs::create_dir_all(dir.join("keys")).expect("mkdir");
    std::fs::write(dir.join("attestation_type"), "dcap\n").expect("write");
    std::fs::write(dir.join("keys/_sgx_mrenclave"), sealing_key).expect("write");
    let (dir, sample) = (dir.to_owned(), fixture("dcap/sgx_quote"));
    let mut served = Vec::new();
    Filler::start(move || {
        if let Ok(data) = std::fs::read(dir.join("user_report_data"))
            && data.len() == 64
            && data != served
        {
            let mut quote = sample.clone();
            quote[368..432].copy_from_slice(&data);
            put(&dir.join("quote"), &quote);
            served = data;
        }
    })
}

#[test]
fn gramine_gives_dcap_quotes_that_verify_and_seals_to_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let attestation = dir.path().join("dev-attestation");
    let _gramine = fake_gramine(&attestation, [7; 16]);
    let platform = GraminePlatform::open(&attestation).expect("opens");
    let sample = fixture("dcap/sgx_quote");
    assert_eq!(platform.kind(), EvidenceKind::SgxDcap);
    assert_eq!(platform.measurement().as_bytes(), &sample[112..144], "MRENCLAVE");

    // Over the sample's own report data, the quote is the sample: it verifies.
    let evidence = platform.evidence(&report_data(&sample, 368)).expect("evidence");
    assert_eq!(evidence.bytes, sample);
    let verified =
        SgxDcapVerifier::new(collateral()).verify(&evidence.bytes, DCAP_AT).expect("verifies");
    assert_eq!(verified.measurement, platform.measurement());
    // Over other report data, the quote carries it.
    let other = platform.evidence(&ReportData([9; 64])).expect("evidence");
    assert_eq!(&other.bytes[368..432], &[9; 64]);

    // Sealed under this enclave's key: another key does not open it.
    let blob = platform.seal("state", b"wallet").expect("seal");
    assert_eq!(&platform.unseal("state", &blob).expect("unseal")[..], b"wallet");
    let elsewhere = dir.path().join("other-cpu");
    let _other = fake_gramine(&elsewhere, [8; 16]);
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

/// Plays the kernel's configfs-tsm: answers each request directory with `sample` (its report
/// data at `at` replaced by the request's), from `provider`, at generation `generation`.
fn fake_tsm(
    reports: &Path,
    provider: &'static str,
    sample: Vec<u8>,
    at: usize,
    auxblob: Vec<u8>,
    generation: &'static str,
) -> Filler {
    std::fs::create_dir_all(reports).expect("mkdir");
    let reports: PathBuf = reports.to_owned();
    Filler::start(move || {
        let Ok(entries) = std::fs::read_dir(&reports) else { return };
        for entry in entries.flatten() {
            let request = entry.path();
            let Ok(inblob) = std::fs::read(request.join("inblob")) else { continue };
            if inblob.len() != 64 || request.join("outblob").exists() {
                continue;
            }
            std::fs::write(request.join("provider"), format!("{provider}\n")).expect("write");
            std::fs::write(request.join("generation"), format!("{generation}\n")).expect("write");
            if !auxblob.is_empty() {
                std::fs::write(request.join("auxblob"), &auxblob).expect("write");
            }
            let mut report = sample.clone();
            report[at..at + 64].copy_from_slice(&inblob);
            put(&request.join("outblob"), &report);
        }
    })
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
        TdxVerifier::new(collateral()).verify(&evidence.bytes, DCAP_AT).expect("verifies");
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
