//! Fillers that play Gramine's `/dev/attestation` and the kernel's configfs-tsm in a plain
//! directory, answering requests with a sample report (for tests of the providers and of a node
//! on them; feature `fake`). A report over other report data than the sample's no longer verifies:
//! a fake TEE is only as good as its sample.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Writes `bytes` to `path` at once (readers never see half of it).
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("filling");
    std::fs::write(&tmp, bytes).expect("the fake TEE writes");
    std::fs::rename(&tmp, path).expect("the fake TEE writes");
}

/// A thread answering requests until dropped.
pub struct Filler {
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

/// Plays Gramine in `dir`: for each `user_report_data` written, a quote (`sample`, an SGX quote,
/// with the written report data); `sealing_key` as `_sgx_mrenclave`.
pub fn fake_gramine(dir: &Path, sample: Vec<u8>, sealing_key: [u8; 16]) -> Filler {
    std::fs::create_dir_all(dir.join("keys")).expect("the fake TEE makes its directory");
    std::fs::write(dir.join("attestation_type"), "dcap\n").expect("the fake TEE writes");
    std::fs::write(dir.join("keys/_sgx_mrenclave"), sealing_key).expect("the fake TEE writes");
    let dir = dir.to_owned();
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

/// Plays the kernel's configfs-tsm in `reports`: answers each request directory with `sample`
/// (its report data at `at` replaced by the request's), from `provider` (`tdx_guest`,
/// `sev_guest`), with `auxblob` if not empty, at generation `generation`.
pub fn fake_tsm(
    reports: &Path,
    provider: &'static str,
    sample: Vec<u8>,
    at: usize,
    auxblob: Vec<u8>,
    generation: &'static str,
) -> Filler {
    std::fs::create_dir_all(reports).expect("the fake TEE makes its directory");
    let reports: PathBuf = reports.to_owned();
    Filler::start(move || {
        let Ok(entries) = std::fs::read_dir(&reports) else { return };
        for entry in entries.flatten() {
            let request = entry.path();
            let Ok(inblob) = std::fs::read(request.join("inblob")) else { continue };
            if inblob.len() != 64 || request.join("outblob").exists() {
                continue;
            }
            std::fs::write(request.join("provider"), format!("{provider}\n"))
                .expect("the fake TEE writes");
            std::fs::write(request.join("generation"), format!("{generation}\n"))
                .expect("the fake TEE writes");
            if !auxblob.is_empty() {
                std::fs::write(request.join("auxblob"), &auxblob).expect("the fake TEE writes");
            }
            let mut report = sample.clone();
            report[at..at + 64].copy_from_slice(&inblob);
            put(&request.join("outblob"), &report);
        }
    })
}
