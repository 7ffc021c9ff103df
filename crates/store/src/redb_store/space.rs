//! The embedded store's file grows by allocating its space on disk (`fallocate`), so that a full
//! disk fails the write that grows the file, before a commit begins to reach it.
//!
//! redb grows its file with `set_len`, which leaves a hole on most filesystems: the space is
//! taken only when a page is first written, and that can be while a commit is being flushed,
//! after its header already reached the file. Such a commit reports a failure and yet is in the
//! file. With its space allocated when it grows, every page redb writes is already on disk, and
//! a commit fails for want of space only while its transaction is filled, before its header.

use std::fs::File;
use std::ops::Bound;

use redb::backends::FileBackend;
use redb::{BackendError, DatabaseError, StorageBackend};

/// redb's file backend, growing its file by allocating the space.
#[derive(Debug)]
pub(super) struct Allocated {
    file: FileBackend,
    /// The same open file, for `fallocate`.
    raw: File,
}

impl Allocated {
    /// Wraps `file` (locking it, as redb's own backend does), and allocates whatever holes it
    /// has: a file from before this backend, or one grown on a filesystem without `fallocate`.
    pub(super) fn new(file: File) -> Result<Self, DatabaseError> {
        let raw = file.try_clone()?;
        let file = FileBackend::new(file)?;
        let len = raw.metadata()?.len();
        allocate(&raw, 0, len)?;
        Ok(Self { file, raw })
    }
}

/// Allocates the bytes `offset..offset + len` of `file`, extending it if they lie past its end.
/// A filesystem that cannot allocate ahead (no `fallocate`) is left to grow as it writes.
#[cfg(target_os = "linux")]
fn allocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    if len == 0 {
        return Ok(());
    }
    match fallocate(file, FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => {
            file.set_len(file.metadata()?.len().max(offset + len))
        }
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    file.set_len(file.metadata()?.len().max(offset + len))
}

impl StorageBackend for Allocated {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let old = self.file.len()?;
        if len > old
            && let Err(error) = allocate(&self.raw, old, len - old)
        {
            // Whatever part was allocated is given back: the file keeps its length.
            let _ = self.raw.set_len(old);
            return Err(error);
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    /// Bytes of `file` that have space on disk.
    fn allocated(file: &File) -> u64 {
        file.metadata().expect("metadata").blocks() * 512
    }

    #[test]
    fn the_file_takes_its_space_as_it_grows_and_holes_from_before_are_filled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let file = File::create(&path).expect("file");
        // A file grown the way redb grows it: a hole.
        file.set_len(1 << 20).expect("grow");
        let holes = allocated(&file) < 1 << 20;
        let backend = Allocated::new(file.try_clone().expect("clone")).expect("backend");
        assert!(allocated(&file) >= 1 << 20, "a hole from before is filled (it was: {holes})");
        backend.set_len(4 << 20).expect("grow");
        assert_eq!(backend.len().expect("len"), 4 << 20);
        assert!(allocated(&file) >= 4 << 20, "{} bytes allocated", allocated(&file));
        backend.set_len(2 << 20).expect("shrink");
        assert_eq!(backend.len().expect("len"), 2 << 20);
    }
}
