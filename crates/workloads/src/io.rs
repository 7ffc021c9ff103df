//! File access for workloads, confined to one directory that the host chooses.
//!
//! A workload names files with a [`WorkloadPath`]: relative, with no `.` or `..` components, no
//! empty components, no backslashes and no NUL bytes, so it cannot name anything outside the
//! directory. [`DirectoryIo`] also refuses to follow symbolic links, so a link planted inside the
//! directory cannot lead out of it either.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

/// Why a file operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// The path is absolute, climbs out with `..`, or is otherwise not a confined relative path.
    #[error("path is outside the data directory")]
    OutsideDataDirectory,
    /// The host gives this workload no file access.
    #[error("file access is not available")]
    Unavailable,
    /// The file could not be opened, read or written.
    #[error("unable to open file")]
    Open,
}

/// A relative path inside the workload data directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadPath(String);

impl WorkloadPath {
    /// Checks that `path` stays inside the directory.
    ///
    /// # Errors
    /// [`IoError::OutsideDataDirectory`] for absolute paths, `.`/`..`/empty components,
    /// backslashes and NUL bytes.
    pub fn parse(path: &str) -> Result<Self, IoError> {
        let confined = !path.is_empty()
            && !path.contains(['\\', '\0'])
            && path.split('/').all(|component| !matches!(component, "" | "." | ".."));
        if confined { Ok(Self(path.to_owned())) } else { Err(IoError::OutsideDataDirectory) }
    }

    /// The path as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The file access a host gives to workloads.
pub trait HostIo: Send + Sync {
    /// Reads at most `max_len` bytes from the start of a file.
    ///
    /// # Errors
    /// [`IoError`] when the file cannot be read.
    fn read(&self, path: &WorkloadPath, max_len: usize) -> Result<Vec<u8>, IoError>;

    /// Creates or replaces a file. Its directory must exist.
    ///
    /// # Errors
    /// [`IoError`] when the file cannot be written.
    fn write(&self, path: &WorkloadPath, data: &[u8]) -> Result<(), IoError>;
}

/// No file access at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIo;

impl HostIo for NoIo {
    fn read(&self, _: &WorkloadPath, _: usize) -> Result<Vec<u8>, IoError> {
        Err(IoError::Unavailable)
    }

    fn write(&self, _: &WorkloadPath, _: &[u8]) -> Result<(), IoError> {
        Err(IoError::Unavailable)
    }
}

/// File access confined to one directory on the host.
#[derive(Debug, Clone)]
pub struct DirectoryIo {
    root: PathBuf,
}

impl DirectoryIo {
    /// Confines workloads to `root`, which must exist.
    ///
    /// # Errors
    /// The I/O error if `root` cannot be resolved.
    pub fn new(root: impl AsRef<Path>) -> std::io::Result<Self> {
        Ok(Self { root: root.as_ref().canonicalize()? })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host path of `path`, refusing any symbolic link on the way (the last component may
    /// not exist yet).
    fn resolve(&self, path: &WorkloadPath) -> Result<PathBuf, IoError> {
        let mut resolved = self.root.clone();
        let mut exists = true;
        for component in path.as_str().split('/') {
            resolved.push(component);
            // Below a component that does not exist, nothing exists to be a link.
            if exists {
                match fs::symlink_metadata(&resolved) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        return Err(IoError::OutsideDataDirectory);
                    }
                    Ok(_) => {}
                    Err(_) => exists = false,
                }
            }
        }
        Ok(resolved)
    }
}

impl HostIo for DirectoryIo {
    fn read(&self, path: &WorkloadPath, max_len: usize) -> Result<Vec<u8>, IoError> {
        let file = fs::File::open(self.resolve(path)?).map_err(|_| IoError::Open)?;
        let mut data = Vec::new();
        file.take(max_len as u64).read_to_end(&mut data).map_err(|_| IoError::Open)?;
        Ok(data)
    }

    /// A new file is readable and writable by its owner only (0600), whatever the umask.
    fn write(&self, path: &WorkloadPath, data: &[u8]) -> Result<(), IoError> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(self.resolve(path)?).map_err(|_| IoError::Open)?;
        file.write_all(data).map_err(|_| IoError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confined_relative_paths_parse() {
        for ok in ["a", "a/b.txt", "dir/sub/file", "..a", "a..", ".hidden"] {
            assert!(WorkloadPath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "..",
            ".",
            "a\\..\\b",
            "a\0b",
        ] {
            assert_eq!(WorkloadPath::parse(bad), Err(IoError::OutsideDataDirectory), "{bad:?}");
        }
    }

    #[test]
    fn directory_io_reads_and_writes_inside_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let io = DirectoryIo::new(dir.path()).expect("root");
        let path = WorkloadPath::parse("note.txt").expect("path");
        io.write(&path, b"hello").expect("write");
        assert_eq!(io.read(&path, 1024).expect("read"), b"hello");
        assert_eq!(io.read(&path, 3).expect("read"), b"hel");
        let missing = WorkloadPath::parse("nope/x").expect("path");
        assert_eq!(io.write(&missing, b"x"), Err(IoError::Open));
        assert_eq!(io.read(&missing, 10), Err(IoError::Open));
    }

    #[cfg(unix)]
    #[test]
    fn written_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let io = DirectoryIo::new(dir.path()).expect("root");
        io.write(&WorkloadPath::parse("f").expect("path"), b"x").expect("write");
        let mode = std::fs::metadata(dir.path().join("f")).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_are_not_followed() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"s3cret").expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).expect("symlink");
        let io = DirectoryIo::new(dir.path()).expect("root");
        let path = WorkloadPath::parse("escape/secret").expect("path");
        assert_eq!(io.read(&path, 100), Err(IoError::OutsideDataDirectory));
        assert_eq!(io.write(&path, b"x"), Err(IoError::OutsideDataDirectory));
        assert_eq!(std::fs::read(outside.path().join("secret")).expect("read"), b"s3cret");
    }
}
