//! The simulated TEE: a platform for development that behaves like a real one (measurement,
//! evidence, sealing) and can never pass for one.
//!
//! Its evidence is a JSON document of kind `sim` (`afallon_attest::verify::sim`), signed by a simulation
//! attestation key that lives in the node's data directory; its sealing key is derived from a node secret kept beside
//! it and the enclave measurement. Both secrets are plain files: a simulated TEE protects nothing,
//! and says so.

use std::fs;
use std::path::Path;

use afallon_attest::{Evidence, EvidenceKind, Measurement, Platform, PlatformError, ReportData};
use afallon_crypto::{AesKey, EcdsaSigningKey, EcdsaVerifyingKey, derive_aes_key, random_array};
use zeroize::Zeroizing;

use crate::secret_file::{create_private_dir, load_or_create};

const ATTESTATION_KEY_FILE: &str = "sim-attestation-key";
const NODE_SECRET_FILE: &str = "sim-node-secret";
const SEALING_SALT: &[u8] = b"afallon-sim-sealing-v1";

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
    /// creating anything: a requester on the node's machine can trust exactly that key, and only
    /// if the file is its own and private (a key someone else put there would make their
    /// simulated workers pass).
    ///
    /// # Errors
    /// [`PlatformError`] if the key file cannot be read, is corrupt, or is not the requester's
    /// own private file.
    pub fn local_attestation_key(dir: &Path) -> Result<Option<EcdsaVerifyingKey>, PlatformError> {
        let path = dir.join(ATTESTATION_KEY_FILE);
        match fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
            #[cfg(unix)]
            Ok(meta) => {
                use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
                // /proc/self belongs to this process's effective user.
                let me = fs::metadata("/proc/self").map(|m| m.uid()).ok();
                if meta.permissions().mode() & 0o077 != 0 || me.is_some_and(|me| me != meta.uid()) {
                    return Err(PlatformError::Interface(format!(
                        "{} is not a private file of this user: its simulated TEE is not trusted",
                        path.display()
                    )));
                }
            }
            #[cfg(not(unix))]
            Ok(_) => {}
        }
        match fs::read(&path) {
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
        let bytes = afallon_attest::verify::sim::sign(
            &self.attestation_key,
            &self.measurement,
            report_data,
        );
        Ok(Evidence { kind: EvidenceKind::Sim, bytes })
    }

    fn sealing_key(&self) -> AesKey {
        derive_aes_key(SEALING_SALT, &self.node_secret[..], &[self.measurement.as_bytes()])
    }

    fn simulation_key(&self) -> Option<EcdsaVerifyingKey> {
        Some(self.attestation_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_persist_in_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Measurement::from([7; 32]);
        let first = SimPlatform::open(dir.path(), m).expect("open");
        let second = SimPlatform::open(dir.path(), m).expect("reopen");
        assert_eq!(first.attestation_key(), second.attestation_key());
        let iv = afallon_crypto::Iv::from_bytes([0; 12]);
        let sealed = first.sealing_key().seal(&iv, b"x").expect("seal");
        assert_eq!(second.sealing_key().open(&iv, &sealed).expect("same sealing key"), b"x");
        let other_measurement =
            SimPlatform::open(dir.path(), Measurement::from([8; 32])).expect("open");
        assert!(other_measurement.sealing_key().open(&iv, &sealed).is_err());
    }

    #[test]
    fn corrupt_secrets_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(NODE_SECRET_FILE), b"short").expect("write");
        assert!(matches!(
            SimPlatform::open(dir.path(), Measurement::from([0; 32])),
            Err(PlatformError::CorruptSecret("node secret"))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_simulation_key_others_can_read_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let platform = SimPlatform::open(dir.path(), Measurement::from([0; 32])).expect("open");
        let key = SimPlatform::local_attestation_key(dir.path()).expect("private");
        assert_eq!(key, Some(platform.attestation_key()));
        let file = dir.path().join(ATTESTATION_KEY_FILE);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = SimPlatform::local_attestation_key(dir.path()).expect_err("readable by others");
        assert!(matches!(error, PlatformError::Interface(_)), "{error}");
        assert_eq!(SimPlatform::local_attestation_key(&dir.path().join("none")).ok(), Some(None));
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_private_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        SimPlatform::open(dir.path(), Measurement::from([0; 32])).expect("open");
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
        SimPlatform::open(&created, Measurement::from([0; 32])).expect("open");
        let mode = fs::metadata(&created).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // An existing directory that is too open is tightened.
        let open = dir.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        SimPlatform::open(&open, Measurement::from([0; 32])).expect("open");
        let mode = fs::metadata(&open).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
