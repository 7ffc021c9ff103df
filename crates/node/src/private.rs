//! The data directory is private: the directories the node creates in it are 0700 and its files
//! 0600, whatever the umask, since it holds every request, response, receipt and sealed blob and
//! the simulated TEE's secrets.
//!
//! Files are created private where they are created (the store's file in `afallon-store`, the
//! simulation secrets in `afallon-attest`, workload files in `afallon-workloads`); this module
//! creates the node's directories and, at start-up, takes group and other access away from
//! anything in the data directory that has it (a directory made by an older version, or by hand).

use std::fs;
use std::io;
use std::path::Path;

/// Creates `dir` and any missing parent with mode 0700 (on Unix), and makes an existing `dir`
/// 0700.
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| at(dir, &e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dir).map_err(|e| at(dir, &e))?.permissions().mode();
        if mode & 0o777 != 0o700 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| at(dir, &e))?;
        }
    }
    Ok(())
}

/// Takes group and other access away from everything under `root` (directories become 0700,
/// files keep their owner's bits only). Symbolic links are neither followed nor changed.
pub(crate) fn tighten(root: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mut pending = vec![root.to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).map_err(|e| at(&dir, &e))? {
                let path = entry.map_err(|e| at(&dir, &e))?.path();
                let meta = fs::symlink_metadata(&path).map_err(|e| at(&path, &e))?;
                let mode = meta.permissions().mode();
                let private = if meta.is_dir() {
                    pending.push(path.clone());
                    0o700
                } else if meta.is_file() {
                    mode & 0o700
                } else {
                    continue;
                };
                if mode & 0o777 != private {
                    fs::set_permissions(&path, fs::Permissions::from_mode(private))
                        .map_err(|e| at(&path, &e))?;
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = root;
    Ok(())
}

/// The error, saying which path it is about.
fn at(path: &Path, error: &io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn created_directories_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a/b");
        create_dir(&nested).expect("create");
        assert_eq!((mode(&dir.path().join("a")), mode(&nested)), (0o700, 0o700));
        fs::set_permissions(&nested, fs::Permissions::from_mode(0o755)).expect("chmod");
        create_dir(&nested).expect("exists");
        assert_eq!(mode(&nested), 0o700, "an existing directory is tightened");
    }

    #[test]
    fn tighten_takes_group_and_other_access_away() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).expect("mkdir");
        fs::write(sub.join("file"), b"x").expect("write");
        fs::write(dir.path().join("script"), b"x").expect("write");
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o777)).expect("chmod");
        fs::set_permissions(sub.join("file"), fs::Permissions::from_mode(0o666)).expect("chmod");
        fs::set_permissions(dir.path().join("script"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let outside = tempfile::tempdir().expect("tempdir");
        let target = outside.path().join("shared");
        fs::write(&target, b"x").expect("write");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).expect("chmod");
        std::os::unix::fs::symlink(&target, dir.path().join("link")).expect("symlink");
        tighten(dir.path()).expect("tighten");
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join("file")), 0o600);
        assert_eq!(mode(&dir.path().join("script")), 0o700);
        assert_eq!(mode(&target), 0o644, "links are not followed");
    }
}
