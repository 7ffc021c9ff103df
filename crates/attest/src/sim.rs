//! The simulated TEE: a platform for development that behaves like a real one (measurement,
//! evidence, sealing) and can never pass for one.
//!
//! Its evidence is a JSON document of kind `sim`, signed by a simulation attestation key that
//! lives in the node's data directory; its sealing key is derived from a node secret kept beside
//! it and the enclave measurement. Both secrets are plain files: a simulated TEE protects nothing,
//! and says so.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use afallon_crypto::{
    AesKey, EcdsaSignature, EcdsaSigningKey, EcdsaVerifyingKey, Sha256, derive_aes_key,
    random_array,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::evidence::{
    Evidence, EvidenceKind, Measurement, ReportData, TcbStatus, VerifiedEvidence,
};
use crate::policy::VerifyError;
use crate::{Platform, PlatformError};

const ATTESTATION_KEY_FILE: &str = "sim-attestation-key";
const NODE_SECRET_FILE: &str = "sim-node-secret";
const EVIDENCE_DOMAIN: &[u8] = b"afallon-sim-evidence-v1\0";
const SEALING_SALT: &[u8] = b"afallon-sim-sealing-v1";
const VERSION: u32 = 1;

/// The simulated TEE.
pub struct SimPlatform {
    measurement: Measurement,
    attestation_key: EcdsaSigningKey,
    node_secret: Zeroizing<[u8; 32]>,
}

impl SimPlatform {
    /// Opens the simulated platform whose secrets live in `dir` (created if missing, accessible to
    /// its owner only whatever the umask; an existing one loses group and other access),
    /// simulating an enclave with `measurement`.
    ///
    /// # Errors
    /// [`PlatformError`] if the secrets cannot be read or written, or are corrupt.
    pub fn open(dir: &Path, measurement: Measurement) -> Result<Self, PlatformError> {
        create_private_dir(dir)?;
        let key_bytes = load_or_create(&dir.join(ATTESTATION_KEY_FILE), "attestation key", || {
            Ok(EcdsaSigningKey::generate()?.to_scalar_bytes_for_sealing())
        })?;
        let attestation_key = EcdsaSigningKey::from_scalar_bytes(&key_bytes[..])
            .map_err(|_| PlatformError::CorruptSecret("attestation key"))?;
        let node_secret = load_or_create(&dir.join(NODE_SECRET_FILE), "node secret", || {
            Ok(Zeroizing::new(random_array()?))
        })?;
        Ok(Self { measurement, attestation_key, node_secret })
    }

    /// A simulated platform whose secrets live only in memory (for tests and one-off tools).
    ///
    /// # Errors
    /// [`PlatformError::Random`] if the random generator fails.
    pub fn ephemeral(measurement: Measurement) -> Result<Self, PlatformError> {
        Ok(Self {
            measurement,
            attestation_key: EcdsaSigningKey::generate()?,
            node_secret: Zeroizing::new(random_array()?),
        })
    }

    /// The public half of the simulation attestation key kept in `dir`, if there is one, without
    /// creating anything: a requester on the node's machine can trust exactly that key.
    ///
    /// # Errors
    /// [`PlatformError`] if the key file cannot be read or is corrupt.
    pub fn local_attestation_key(dir: &Path) -> Result<Option<EcdsaVerifyingKey>, PlatformError> {
        match fs::read(dir.join(ATTESTATION_KEY_FILE)) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let key = EcdsaSigningKey::from_scalar_bytes(&bytes[..])
                    .map_err(|_| PlatformError::CorruptSecret("attestation key"))?;
                Ok(Some(key.verifying_key()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The simulation attestation key's public half, for a policy that trusts only this node's
    /// simulated evidence.
    pub fn attestation_key(&self) -> EcdsaVerifyingKey {
        self.attestation_key.verifying_key()
    }
}

impl std::fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPlatform")
            .field("measurement", &self.measurement)
            .finish_non_exhaustive()
    }
}

impl Platform for SimPlatform {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::Sim
    }

    fn measurement(&self) -> Measurement {
        self.measurement
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, PlatformError> {
        let signature =
            self.attestation_key.sign_digest(&evidence_digest(&self.measurement, report_data));
        let document = SimDocument {
            kind: EvidenceKind::Sim.name().to_owned(),
            version: VERSION,
            measurement: hex::encode(self.measurement.0),
            report_data: hex::encode(report_data.0),
            attestation_key: self.attestation_key.verifying_key().to_pem(),
            signature: BASE64.encode(signature.to_der()),
        };
        let document =
            serde_json::to_string(&document).map_err(|e| PlatformError::Storage(e.into()))?;
        Ok(Evidence { kind: EvidenceKind::Sim, document })
    }

    fn sealing_key(&self) -> AesKey {
        derive_aes_key(SEALING_SALT, &self.node_secret[..], &[&self.measurement.0])
    }

    fn simulation_key(&self) -> Option<EcdsaVerifyingKey> {
        Some(self.attestation_key())
    }
}

/// The `sim` evidence document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimDocument {
    kind: String,
    version: u32,
    measurement: String,
    report_data: String,
    attestation_key: String,
    signature: String,
}

fn evidence_digest(
    measurement: &Measurement,
    report_data: &ReportData,
) -> afallon_crypto::Sha256Digest {
    let mut h = Sha256::new();
    h.update(EVIDENCE_DOMAIN);
    h.update(&measurement.0);
    h.update(&report_data.0);
    h.finalize()
}

/// Verifies `sim` evidence: its form and its signature by the simulation key it names. Returns
/// what it proves and the key that signed it; whether simulation is acceptable at all, and from
/// which keys, is the [`crate::Policy`]'s decision.
///
/// # Errors
/// [`VerifyError::Malformed`], [`VerifyError::UnsupportedVersion`] or
/// [`VerifyError::BadSignature`].
pub fn verify_sim(document: &str) -> Result<(VerifiedEvidence, EcdsaVerifyingKey), VerifyError> {
    let document: SimDocument = serde_json::from_str(document)
        .map_err(|_| VerifyError::Malformed("not a sim evidence document"))?;
    if document.kind != EvidenceKind::Sim.name() {
        return Err(VerifyError::Malformed("kind is not sim"));
    }
    if document.version != VERSION {
        return Err(VerifyError::UnsupportedVersion(document.version));
    }
    let measurement: [u8; 32] = hex::decode(&document.measurement)
        .ok()
        .and_then(|m| m.try_into().ok())
        .ok_or(VerifyError::Malformed("measurement is not 32 hex bytes"))?;
    let report_data: [u8; 64] = hex::decode(&document.report_data)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or(VerifyError::Malformed("reportData is not 64 hex bytes"))?;
    let key = EcdsaVerifyingKey::from_pem(&document.attestation_key)
        .map_err(|_| VerifyError::Malformed("attestationKey is not a secp256k1 public key"))?;
    let signature = BASE64
        .decode(&document.signature)
        .ok()
        .and_then(|der| EcdsaSignature::from_der(&der).ok())
        .ok_or(VerifyError::Malformed("signature is not base64 DER"))?;
    let (measurement, report_data) = (Measurement(measurement), ReportData(report_data));
    key.verify_digest(&evidence_digest(&measurement, &report_data), &signature)
        .map_err(|_| VerifyError::BadSignature)?;
    let verified = VerifiedEvidence {
        kind: EvidenceKind::Sim,
        measurement,
        report_data,
        tcb_status: TcbStatus::Simulated,
        advisories: Vec::new(),
    };
    Ok((verified, key))
}

/// Creates `dir` (and any missing parent) with mode 0700, or takes group and other access away
/// from an existing one.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        builder.mode(0o700);
        builder.create(dir)?;
        let mode = fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// Reads a 32-byte secret, or creates it (atomically, readable by the owner only) if missing.
fn load_or_create(
    path: &Path,
    what: &'static str,
    create: impl FnOnce() -> Result<Zeroizing<[u8; 32]>, PlatformError>,
) -> Result<Zeroizing<[u8; 32]>, PlatformError> {
    match fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let secret: [u8; 32] =
                bytes[..].try_into().map_err(|_| PlatformError::CorruptSecret(what))?;
            Ok(Zeroizing::new(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = create()?;
            let tmp = path.with_extension("tmp");
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            file.write_all(&secret[..])?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent() {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(secret)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_persist_in_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Measurement([7; 32]);
        let first = SimPlatform::open(dir.path(), m).expect("open");
        let second = SimPlatform::open(dir.path(), m).expect("reopen");
        assert_eq!(first.attestation_key(), second.attestation_key());
        let iv = afallon_crypto::Iv::from_bytes([0; 12]);
        let sealed = first.sealing_key().seal(&iv, b"x").expect("seal");
        assert_eq!(second.sealing_key().open(&iv, &sealed).expect("same sealing key"), b"x");
        let other_measurement = SimPlatform::open(dir.path(), Measurement([8; 32])).expect("open");
        assert!(other_measurement.sealing_key().open(&iv, &sealed).is_err());
    }

    #[test]
    fn corrupt_secrets_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(NODE_SECRET_FILE), b"short").expect("write");
        assert!(matches!(
            SimPlatform::open(dir.path(), Measurement([0; 32])),
            Err(PlatformError::CorruptSecret("node secret"))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_private_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        SimPlatform::open(dir.path(), Measurement([0; 32])).expect("open");
        let mode =
            fs::metadata(dir.path().join(ATTESTATION_KEY_FILE)).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0);
    }

    #[cfg(unix)]
    #[test]
    fn the_secrets_directory_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let created = dir.path().join("new/sim");
        SimPlatform::open(&created, Measurement([0; 32])).expect("open");
        let mode = fs::metadata(&created).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // An existing directory that is too open is tightened.
        let open = dir.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        SimPlatform::open(&open, Measurement([0; 32])).expect("open");
        let mode = fs::metadata(&open).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
