//! Reading a TEE's pseudo-files (`/dev/attestation`, configfs-tsm), which answer a request
//! written to another file: the kernel or Gramine answers at once; an interface that answers
//! later (a test's filler) is waited for, a bounded time.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use afallon_attest::PlatformError;

/// How long an answer may take.
const WAIT: Duration = Duration::from_secs(10);

/// The contents of `path` once `accept` takes them (a missing file is not yet an answer).
pub(crate) fn read_until(
    path: &Path,
    accept: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, PlatformError> {
    let deadline = Instant::now() + WAIT;
    loop {
        match fs::read(path) {
            Ok(bytes) if accept(&bytes) => return Ok(bytes),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            return Err(PlatformError::Interface(format!(
                "{} gave no answer",
                path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
