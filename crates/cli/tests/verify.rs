//! `afallon verify` and `afallon collateral import` as a requester runs them: a running node's
//! simulated worker verifies only under a policy that allows simulation; a record carrying real
//! vendor-signed evidence (an IAS report, a DCAP quote with imported collateral) is checked up to
//! the vendor's root at a pinned time and refused because its report data does not bind the
//! record's verification key; expired certificates, missing collateral and refused advisories
//! each say so.

mod common;

use std::path::Path;
use std::process::Command;

use afallon_proto::WorkerRecord;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{BIN, Service, WORKER};
use serde_json::json;

/// The MRENCLAVE of the DCAP SGX sample.
const SGX_MRENCLAVE: &str = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../attest/tests/fixtures");

/// Runs `afallon ARGS`; returns whether it succeeded, and its standard output and error.
fn afallon(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN).args(args).output().expect("afallon runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("write");
    path.to_str().expect("utf-8").to_owned()
}

/// The IAS sample as wire spec §4.2's `proofData`.
fn ias_proof() -> String {
    let phala: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/sgx-epid/phala.json")).expect("sample"),
    )
    .expect("json");
    let signer = BASE64.decode(phala["rawSigningCert"].as_str().expect("cert")).expect("base64");
    json!({
        "verification_report": phala["raReport"],
        "ias_report_signature": phala["signature"],
        "ias_report_signing_certificate": afallon_crypto::pem::encode("CERTIFICATE", &signer),
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn afallon_verify_checks_evidence_and_its_binding_under_a_policy_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let service = Service::start(&data, &[]);
    let data_dir = data.to_str().expect("utf-8");
    let sim = write(&dir.path().join("sim.toml"), "allow_simulation = true\n");

    // The node's simulated worker: verified under a policy that allows simulation (from this
    // node's key), refused under the default one.
    let (ok, out, err) = afallon(&[
        "verify",
        "--url",
        &service.url,
        "-w",
        WORKER,
        "--policy",
        &sim,
        "--data-dir",
        data_dir,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("SIMULATED TEE") && out.contains("evidence       sim"), "{out}");
    let (ok, _, err) =
        afallon(&["verify", "--url", &service.url, "-w", WORKER, "--data-dir", data_dir]);
    assert!(!ok);
    assert!(err.contains("simulated evidence is refused"), "{err}");

    // `afallon submit` refuses the worker under a policy that refuses simulation, and goes on
    // only when told to, loudly.
    let hardware = write(&dir.path().join("hardware.toml"), "minimum_tcb = \"UpToDate\"\n");
    let submit = |extra: &[&str]| {
        let mut args = vec![
            "submit",
            "--url",
            &service.url,
            "-w",
            WORKER,
            "-l",
            "echo-result",
            "-i",
            "hi",
            "--data-dir",
            data_dir,
            "--policy",
            &hardware,
        ];
        args.extend_from_slice(extra);
        afallon(&args)
    };
    let (ok, _, err) = submit(&[]);
    assert!(!ok && err.contains("simulated evidence is refused"), "{err}");
    let (ok, out, err) = submit(&["--insecure-accept-unverified-worker"]);
    assert!(ok, "{err}");
    assert!(err.contains("FAILED attestation") && err.contains("NOTHING vouches"), "{err}");
    assert!(out.contains("RESULT: hi"), "{out}");

    // The worker's record carrying a real IAS report instead: verified up to Intel's root at the
    // report's time, then refused, for it binds another key than the record's.
    let record: WorkerRecord = service
        .client()
        .worker_record(&afallon_proto::worker_id_from_name(WORKER))
        .await
        .expect("record");
    assert_eq!(record.details.worker_type_data.proof_data_type, "afallon-sim");
    let mut ias = record.clone();
    ias.details.worker_type_data.proof_data_type = "TEE-SGX-IAS".into();
    ias.details.worker_type_data.proof_data = ias_proof();
    ias.details.worker_type_data.enclave_certificate = None;
    let ias_record =
        write(&dir.path().join("ias.json"), &serde_json::to_string(&ias).expect("json"));
    let lenient = write(
        &dir.path().join("lenient.toml"),
        "minimum_tcb = \"OutOfDate\"\nmeasurements = [\"10829681801CBEFD5B75779D0820D86D0A60D81EAD14DB793595EDBE0E87B986\"]\n",
    );
    let report_time = "1697619675";
    let (ok, _, err) =
        afallon(&["verify", "--record", &ias_record, "--policy", &lenient, "--at", report_time]);
    assert!(!ok);
    assert!(err.contains("report data does not bind the expected keys"), "{err}");
    // Today Intel's signing certificate has expired; by default the TCB must be up to date.
    let (_, _, err) = afallon(&["verify", "--record", &ias_record, "--policy", &lenient]);
    assert!(err.contains("certificate 0 of the chain is not valid"), "{err}");
    let (_, _, err) = afallon(&["verify", "--record", &ias_record, "--at", report_time]);
    assert!(err.contains("names no measurement or signer"), "{err}");
    let pinned_only = write(
        &dir.path().join("pinned.toml"),
        "measurements = [\"10829681801CBEFD5B75779D0820D86D0A60D81EAD14DB793595EDBE0E87B986\"]\n",
    );
    let (_, _, err) = afallon(&[
        "verify",
        "--record",
        &ias_record,
        "--policy",
        &pinned_only,
        "--at",
        report_time,
    ]);
    assert!(err.contains("TCB status OutOfDate is below"), "{err}");

    // A DCAP quote: without collateral it cannot be checked; imported, it is, and binds no key
    // of the record's.
    let mut dcap = record;
    dcap.details.worker_type_data.proof_data_type = "afallon-sgx-dcap".into();
    let quote = std::fs::read(format!("{FIXTURES}/dcap/sgx_quote")).expect("quote");
    dcap.details.worker_type_data.proof_data =
        json!({"verification_report": BASE64.encode(quote), "report_signature": "", "report_signing_certificate": ""}).to_string();
    dcap.details.worker_type_data.enclave_certificate = None;
    let dcap_record =
        write(&dir.path().join("dcap.json"), &serde_json::to_string(&dcap).expect("json"));
    let requester_dir = dir.path().join("requester");
    let requester = requester_dir.to_str().expect("utf-8");
    let pinned = "1751328000";
    let dcap_policy = write(
        &dir.path().join("dcap.toml"),
        &format!(
            "minimum_tcb = \"ConfigurationAndSwHardeningNeeded\"\nmeasurements = [\"{SGX_MRENCLAVE}\"]\n"
        ),
    );
    let verify_dcap = |policy: &str| {
        afallon(&[
            "verify",
            "--record",
            &dcap_record,
            "--policy",
            policy,
            "--at",
            pinned,
            "--data-dir",
            requester,
        ])
    };
    let (ok, _, err) = verify_dcap(&dcap_policy);
    assert!(!ok);
    assert!(err.contains("no collateral for platform 00A067110000"), "{err}");
    let (ok, out, err) = afallon(&[
        "collateral",
        "import",
        &format!("{FIXTURES}/dcap/sgx_quote_collateral.json"),
        &format!("{FIXTURES}/dcap/tdx_quote_collateral.json"),
        "--data-dir",
        requester,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("sgx-00A067110000.json") && out.contains("tdx-B0C06F000000.json"),
        "{out}"
    );
    let (_, _, err) = verify_dcap(&dcap_policy);
    assert!(err.contains("report data does not bind the expected keys"), "{err}");
    let refusing = write(
        &dir.path().join("advisory.toml"),
        &format!(
            "minimum_tcb = \"ConfigurationAndSwHardeningNeeded\"\nmeasurements = [\"{SGX_MRENCLAVE}\"]\nrefused_advisories = [\"INTEL-SA-00615\"]\n"
        ),
    );
    let (_, _, err) = verify_dcap(&refusing);
    assert!(err.contains("advisory INTEL-SA-00615"), "{err}");
    // Older collateral for the same platform is not imported over newer.
    let real = std::fs::read_to_string(format!("{FIXTURES}/dcap/sgx_quote_collateral.json"))
        .expect("collateral");
    let older = real.replace("2025-06-19T10:56:11Z", "2025-06-01T10:56:11Z");
    assert_ne!(older, real);
    let older = write(&dir.path().join("older.json"), &older);
    let (ok, _, err) = afallon(&["collateral", "import", &older, "--data-dir", requester]);
    assert!(!ok && err.contains("was issued before the collateral held"), "{err}");
    // Garbage is not collateral.
    let (ok, _, err) = afallon(&["collateral", "import", &ias_record, "--data-dir", requester]);
    assert!(!ok && err.contains("is not DCAP collateral"), "{err}");
}

/// A fake kernel's configfs-tsm under `dir`, serving the real TDX quote, and a node config (its
/// path) that runs the workers on it.
fn configfs_tsm_node(dir: &Path) -> (afallon_platform::fake::Filler, String) {
    let reports = dir.join("tsm/report");
    let sample = std::fs::read(format!("{FIXTURES}/dcap/tdx_quote")).expect("quote");
    let kernel =
        afallon_platform::fake::fake_tsm(&reports, "tdx_guest", sample, 568, Vec::new(), "1");
    let config = write(
        &dir.join("tsm.toml"),
        &format!(
            "insecure_simulation = false\nplatform = \"configfs-tsm\"\ntsm_report_dir = {:?}\n",
            reports.to_str().expect("utf-8")
        ),
    );
    (kernel, config)
}

/// `afallon up` on configfs-tsm (`platform = "configfs-tsm"`), its report directory answered by a
/// fake kernel serving a real TDX quote: the worker's record carries TDX evidence over its own
/// key, and `afallon verify` checks it against Intel's collateral, and refuses it, for the fake's
/// quote was signed over other report data: a fake TEE cannot pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_configfs_tsm_publishes_tdx_evidence_that_a_fake_tee_cannot_make_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_kernel, config) = configfs_tsm_node(dir.path());
    let service = Service::start(&dir.path().join("data"), &["--config", &config]);
    let record = service
        .client()
        .worker_record(&afallon_proto::worker_id_from_name(WORKER))
        .await
        .expect("record");
    assert_eq!(record.details.worker_type_data.proof_data_type, "afallon-tdx");
    let record_file =
        write(&dir.path().join("record.json"), &serde_json::to_string(&record).expect("json"));
    let requester = dir.path().join("requester");
    let requester = requester.to_str().expect("utf-8");
    let (ok, _, err) = afallon(&[
        "collateral",
        "import",
        &format!("{FIXTURES}/dcap/tdx_quote_collateral.json"),
        "--data-dir",
        requester,
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = afallon(&[
        "verify",
        "--record",
        &record_file,
        "--at",
        "1751328000",
        "--data-dir",
        requester,
    ]);
    assert!(!ok);
    assert!(err.contains("evidence signature is invalid"), "{err}");
    // And a policy that allows simulation does not change that: this is no simulated evidence.
    let sim = write(&dir.path().join("sim.toml"), "allow_simulation = true\n");
    let (ok, _, err) = afallon(&[
        "verify",
        "--record",
        &record_file,
        "--policy",
        &sim,
        "--at",
        "1751328000",
        "--data-dir",
        requester,
    ]);
    assert!(!ok && err.contains("evidence signature is invalid"), "{err}");
}

/// The first `afallon up` line on standard error that contains `needle`, if one comes within
/// `wait`; the process is killed after.
fn up_says(
    args: &[&str],
    data_dir: &Path,
    needle: &str,
    wait: std::time::Duration,
) -> Option<String> {
    use std::io::BufRead as _;
    let mut child = Command::new(BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("AFALLON_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("afallon up");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_owned();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&needle) {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let found = rx.recv_timeout(wait).ok();
    let _ = child.kill();
    let _ = child.wait();
    found
}

#[test]
fn afallon_up_says_when_it_runs_simulated_and_not_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seconds = std::time::Duration::from_secs;
    let warning = up_says(&[], &dir.path().join("sim"), "SIMULATED TEE", seconds(20));
    assert!(
        warning.is_some_and(|line| line.contains("protects") || line.contains("not protected"))
    );
    // On configfs-tsm it does not.
    let (_kernel, config) = configfs_tsm_node(dir.path());
    // (It starts within a second; a warning would come before it listens.)
    let line = up_says(&["--config", &config], &dir.path().join("tsm"), "SIMULATED", seconds(3));
    assert_eq!(line, None);
}
