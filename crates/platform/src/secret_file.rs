//! Secrets kept as files: a private directory, and 32-byte secrets created once (atomically,
//! readable by their owner only) and read back on every start.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use afallon_attest::PlatformError;
use zeroize::Zeroizing;

/// Creates `dir` (and any missing parent) with mode 0700, or takes group and other access away
/// from an existing one.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
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
/// Processes that create it at once all end with the one that was stored first: each writes a
/// file of its own, links it into place only if nothing is there, and otherwise reads what is.
pub(crate) fn load_or_create(
    path: &Path,
    what: &'static str,
    create: impl FnOnce() -> Result<Zeroizing<[u8; 32]>, PlatformError>,
) -> Result<Zeroizing<[u8; 32]>, PlatformError> {
    let read = |path: &Path| -> Result<Zeroizing<[u8; 32]>, PlatformError> {
        let bytes = Zeroizing::new(fs::read(path)?);
        let secret: [u8; 32] =
            bytes[..].try_into().map_err(|_| PlatformError::CorruptSecret(what))?;
        Ok(Zeroizing::new(secret))
    };
    match read(path) {
        Err(PlatformError::Storage(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        stored => return stored,
    }
    let secret = create()?;
    let unique: [u8; 8] = afallon_crypto::random_array()?;
    let tmp = path.with_extension(format!("{}.tmp", hex::encode(unique)));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    let written = file.write_all(&secret[..]).and_then(|()| file.sync_all());
    // A hard link never replaces: the first process to link wins, the others read its secret.
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_creating_a_secret_at_once_end_with_the_same_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    load_or_create(&path, "test secret", || {
                        Ok(Zeroizing::new(afallon_crypto::random_array()?))
                    })
                    .map(|secret| *secret)
                })
            })
            .collect();
        let secrets: Vec<[u8; 32]> =
            threads.into_iter().map(|t| t.join().expect("thread").expect("secret")).collect();
        assert!(secrets.windows(2).all(|pair| pair[0] == pair[1]), "one secret for all");
        assert_eq!(fs::read(&path).expect("stored"), secrets[0]);
        let leftovers = fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "no temporary files are left");
    }
}
