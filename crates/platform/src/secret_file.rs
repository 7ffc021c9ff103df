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
pub(crate) fn load_or_create(
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
