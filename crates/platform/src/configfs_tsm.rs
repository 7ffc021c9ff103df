//! A confidential VM's TEE through the kernel's configfs-tsm report interface
//! (`/sys/kernel/config/tsm/report`): a request is a directory made under it, whose `inblob`
//! takes the 64 bytes of report data and whose `outblob` then holds the report (a TDX quote, or
//! an SEV-SNP attestation report with the VCEK in `auxblob`); `provider` names the TEE and
//! `generation` counts the writes to `inblob`, so a request another writer changed is told
//! apart (each request is a fresh directory, written once: generation 1).
//!
//! configfs-tsm seals nothing: sealing keys come from a secret kept in a directory the
//! deployment puts on the VM's encrypted storage, bound to the measurement.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use afallon_attest::{Evidence, EvidenceKind, Measurement, Platform, PlatformError, ReportData};
use afallon_crypto::{AesKey, derive_aes_key, random_array};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

use crate::pseudo_file::read_until;
use crate::secret_file::{create_private_dir, load_or_create};

const SEALING_SALT: &[u8] = b"afallon-cvm-sealing-v1";
const SECRET_FILE: &str = "cvm-sealing-secret";
/// A TDX quote: a 48-byte header, then the TD report body (MRTD at 136, REPORTDATA at 520).
const TDX_MR_TD: usize = 48 + 136;
const TDX_REPORT_DATA: usize = 48 + 520;
/// An SEV-SNP report: REPORT_DATA at 0x50, MEASUREMENT at 0x90; 1,184 bytes.
const SNP_REPORT_DATA: usize = 0x50;
const SNP_MEASUREMENT: usize = 0x90;
const SNP_REPORT_LEN: usize = 1184;
/// The VCEK's GUID in an SEV-SNP certificate table (63da758d-e664-4564-adc5-f4b93be8accd).
const VCEK_GUID: [u8; 16] = [
    0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd,
];

/// A confidential VM (TDX or SEV-SNP) through configfs-tsm (or a directory laid out like it).
pub struct ConfigfsTsmPlatform {
    report_dir: PathBuf,
    kind: EvidenceKind,
    measurement: Measurement,
    secret: Zeroizing<[u8; 32]>,
    requests: AtomicU64,
    /// One request at a time.
    reporting: Mutex<()>,
}

impl std::fmt::Debug for ConfigfsTsmPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigfsTsmPlatform")
            .field("report_dir", &self.report_dir)
            .field("kind", &self.kind)
            .field("measurement", &self.measurement)
            .finish_non_exhaustive()
    }
}

/// What one request gave.
struct Report {
    provider: String,
    outblob: Vec<u8>,
    auxblob: Vec<u8>,
}

impl ConfigfsTsmPlatform {
    /// Opens the report interface at `report_dir` (`/sys/kernel/config/tsm/report`), learns the
    /// TEE and the measurement from a first report, and the sealing secret kept in `secret_dir`
    /// (created on first use).
    ///
    /// # Errors
    /// [`PlatformError`] if the interface cannot be used or answers what no TEE would.
    pub fn open(report_dir: &Path, secret_dir: &Path) -> Result<Self, PlatformError> {
        create_private_dir(secret_dir)?;
        let secret = load_or_create(&secret_dir.join(SECRET_FILE), "CVM sealing secret", || {
            Ok(Zeroizing::new(random_array()?))
        })?;
        let mut platform = Self {
            report_dir: report_dir.to_owned(),
            kind: EvidenceKind::Tdx,
            measurement: Measurement::from([0; 48]),
            secret,
            requests: AtomicU64::new(0),
            reporting: Mutex::new(()),
        };
        let first = platform.request(&ReportData([0; 64]))?;
        let (kind, at) = match first.provider.as_str() {
            "tdx_guest" => (EvidenceKind::Tdx, TDX_MR_TD),
            "sev_guest" => (EvidenceKind::SevSnp, SNP_MEASUREMENT),
            other => {
                return Err(PlatformError::Interface(format!("unknown TSM provider {other:?}")));
            }
        };
        platform.kind = kind;
        platform.check(&first, &ReportData([0; 64]))?;
        platform.measurement = Measurement::from_slice(&first.outblob[at..at + 48])
            .ok_or_else(|| PlatformError::Interface("the report's measurement".into()))?;
        Ok(platform)
    }

    /// One report request: a directory of its own, `inblob` written, `outblob` read, and the
    /// generation unchanged in between.
    fn request(&self, report_data: &ReportData) -> Result<Report, PlatformError> {
        let _one = self.reporting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A name no other request has (another process, or one that died, may have left its).
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let unique = hex::encode(random_array::<8>()?);
        let entry = self.report_dir.join(format!("afallon-{}-{n}-{unique}", std::process::id()));
        fs::create_dir(&entry)?;
        let result = (|| {
            fs::write(entry.join("inblob"), report_data.0)?;
            let outblob = read_until(&entry.join("outblob"), |blob| !blob.is_empty())?;
            // A fresh request written once is at generation 1: anything else means another
            // writer changed it before it was answered.
            let generation = read_until(&entry.join("generation"), |g| !g.is_empty())?;
            if String::from_utf8_lossy(&generation).trim() != "1" {
                return Err(PlatformError::Interface(
                    "another writer changed the request while it was answered".into(),
                ));
            }
            let provider = read_until(&entry.join("provider"), |p| !p.is_empty())?;
            let provider = String::from_utf8_lossy(&provider).trim().to_owned();
            let auxblob = match fs::read(entry.join("auxblob")) {
                Ok(blob) => blob,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            Ok(Report { provider, outblob, auxblob })
        })();
        // configfs removes a request with rmdir; nothing is lost if that fails.
        let _ = fs::remove_dir(&entry);
        result
    }

    /// Checks that `report` is of this platform's kind and over `report_data`.
    fn check(&self, report: &Report, report_data: &ReportData) -> Result<(), PlatformError> {
        let at = match self.kind {
            EvidenceKind::Tdx if report.provider == "tdx_guest" => TDX_REPORT_DATA,
            EvidenceKind::SevSnp if report.provider == "sev_guest" => {
                if report.outblob.len() != SNP_REPORT_LEN {
                    return Err(PlatformError::Interface(
                        "the SNP report is not 1184 bytes".into(),
                    ));
                }
                SNP_REPORT_DATA
            }
            _ => return Err(PlatformError::Interface("the TSM provider changed".into())),
        };
        if report.outblob.get(at..at + 64) != Some(&report_data.0[..]) {
            return Err(PlatformError::Interface("the report is over other report data".into()));
        }
        Ok(())
    }
}

/// The VCEK in an SEV-SNP certificate table: entries of a 16-byte GUID, a 4-byte offset and a
/// 4-byte length (little-endian, from the table's start), ended by an all-zero entry.
fn vcek_from_table(table: &[u8]) -> Option<&[u8]> {
    for entry in table.chunks_exact(24) {
        let (guid, rest) = entry.split_at(16);
        if guid.iter().all(|&b| b == 0) {
            return None;
        }
        if guid == VCEK_GUID {
            let offset = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
            let len = u32::from_le_bytes(rest[4..].try_into().ok()?) as usize;
            return table.get(offset..offset.checked_add(len)?);
        }
    }
    None
}

impl Platform for ConfigfsTsmPlatform {
    fn kind(&self) -> EvidenceKind {
        self.kind
    }

    fn measurement(&self) -> Measurement {
        self.measurement
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, PlatformError> {
        let report = self.request(report_data)?;
        self.check(&report, report_data)?;
        let bytes = match self.kind {
            EvidenceKind::SevSnp => {
                let vcek = vcek_from_table(&report.auxblob).ok_or_else(|| {
                    PlatformError::Interface("no VCEK in the report's certificate table".into())
                })?;
                serde_json::to_vec(&serde_json::json!({
                    "report": BASE64.encode(&report.outblob),
                    "vcek": BASE64.encode(vcek),
                }))
                .map_err(|e| PlatformError::Interface(e.to_string()))?
            }
            _ => report.outblob,
        };
        Ok(Evidence { kind: self.kind, bytes })
    }

    fn sealing_key(&self) -> AesKey {
        derive_aes_key(SEALING_SALT, &self.secret[..], &[self.measurement.as_bytes()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vcek_is_found_in_a_certificate_table() {
        let mut table = Vec::new();
        table.extend_from_slice(&[7; 16]);
        table.extend_from_slice(&72_u32.to_le_bytes());
        table.extend_from_slice(&2_u32.to_le_bytes());
        table.extend_from_slice(&VCEK_GUID);
        table.extend_from_slice(&74_u32.to_le_bytes());
        table.extend_from_slice(&3_u32.to_le_bytes());
        table.extend_from_slice(&[0; 24]);
        table.extend_from_slice(&[1, 1, 9, 9, 9]);
        assert_eq!(vcek_from_table(&table), Some(&[9, 9, 9][..]));
        assert_eq!(vcek_from_table(&table[24..48]), None, "beyond the table");
        assert_eq!(vcek_from_table(&[0; 24]), None);
        assert_eq!(vcek_from_table(&[]), None);
    }
}
