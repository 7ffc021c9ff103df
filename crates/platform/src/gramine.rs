//! Gramine SGX: the enclave's `/dev/attestation` pseudo-files. Writing 64 bytes to
//! `user_report_data` and reading `quote` gives a DCAP quote over them; `keys/_sgx_mrenclave`
//! is the sealing key SGX derives for this MRENCLAVE on this CPU. Only DCAP is taken: EPID
//! quotes need Intel's retired attestation service.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use afallon_attest::{Evidence, EvidenceKind, Measurement, Platform, PlatformError, ReportData};
use afallon_crypto::{AesKey, derive_aes_key};
use zeroize::Zeroizing;

use crate::pseudo_file::read_until;

const SEALING_SALT: &[u8] = b"afallon-gramine-sealing-v1";
/// An SGX quote: a 48-byte header, then the 384-byte report body (MRENCLAVE at 64, REPORTDATA
/// at 320 in it), then the signature data.
const HEADER: usize = 48;
const MR_ENCLAVE: usize = HEADER + 64;
const REPORT_DATA: usize = HEADER + 320;
const BODY_END: usize = HEADER + 384;

/// An SGX enclave under Gramine, through `/dev/attestation` (or a directory laid out like it).
pub struct GraminePlatform {
    dir: PathBuf,
    measurement: Measurement,
    sealing_secret: Zeroizing<[u8; 16]>,
    /// One quote at a time: `user_report_data` and `quote` are one request.
    quoting: Mutex<()>,
}

impl std::fmt::Debug for GraminePlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraminePlatform")
            .field("dir", &self.dir)
            .field("measurement", &self.measurement)
            .finish_non_exhaustive()
    }
}

impl GraminePlatform {
    /// Opens `/dev/attestation` at `dir`: checks that it gives DCAP quotes, reads the enclave's
    /// MRENCLAVE from a first quote and its sealing key.
    ///
    /// # Errors
    /// [`PlatformError`] if a file cannot be read or holds what Gramine would not write.
    pub fn open(dir: &Path) -> Result<Self, PlatformError> {
        let kind = fs::read_to_string(dir.join("attestation_type"))?;
        if kind.trim() != "dcap" {
            return Err(PlatformError::Interface(format!(
                "attestation type {:?}: afallon takes DCAP quotes from Gramine (EPID needs IAS)",
                kind.trim()
            )));
        }
        let key = Zeroizing::new(fs::read(dir.join("keys/_sgx_mrenclave"))?);
        let sealing_secret: [u8; 16] = key[..]
            .try_into()
            .map_err(|_| PlatformError::Interface("the sealing key is not 16 bytes".into()))?;
        let mut platform = Self {
            dir: dir.to_owned(),
            measurement: Measurement::from([0; 32]),
            sealing_secret: Zeroizing::new(sealing_secret),
            quoting: Mutex::new(()),
        };
        let quote = platform.quote(&ReportData([0; 64]))?;
        platform.measurement = Measurement::from_slice(&quote[MR_ENCLAVE..MR_ENCLAVE + 32])
            .ok_or_else(|| PlatformError::Interface("the quote's MRENCLAVE".into()))?;
        Ok(platform)
    }

    /// A quote over `report_data`, checked to be one.
    fn quote(&self, report_data: &ReportData) -> Result<Vec<u8>, PlatformError> {
        let _one = self.quoting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fs::write(self.dir.join("user_report_data"), report_data.0)?;
        // A quote over other report data is a stale one: the answer is the next.
        let quote = read_until(&self.dir.join("quote"), |quote| {
            quote.len() < BODY_END || quote[REPORT_DATA..BODY_END] == report_data.0
        })?;
        if quote.len() < BODY_END || quote[..2] != [3, 0] {
            return Err(PlatformError::Interface("not an SGX DCAP quote (version 3)".into()));
        }
        Ok(quote)
    }
}

impl Platform for GraminePlatform {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::SgxDcap
    }

    fn measurement(&self) -> Measurement {
        self.measurement
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, PlatformError> {
        Ok(Evidence { kind: EvidenceKind::SgxDcap, bytes: self.quote(report_data)? })
    }

    fn sealing_key(&self) -> AesKey {
        derive_aes_key(SEALING_SALT, &self.sealing_secret[..], &[self.measurement.as_bytes()])
    }
}
