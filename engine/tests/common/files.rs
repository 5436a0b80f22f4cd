//! Files and directories of the tests' own under the system's temporary directory, gone
//! when the test is done with them.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Tells apart the names one process makes, also across threads.
static SEQUENCE: AtomicUsize = AtomicUsize::new(0);

/// A name under the temporary directory that no other test, thread or process uses:
/// `iocp-<label>-<pid>-<sequence>`.
fn unique_path(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "iocp-{label}-{}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A directory of the test's own under the temporary directory, removed on drop.
pub struct TempDir {
    dir: PathBuf,
}

impl TempDir {
    /// A fresh, empty directory whose name carries `label` (the test's name, say).
    pub fn new(label: &str) -> TempDir {
        let dir = unique_path(label);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir { dir }
    }

    /// The path of `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates `name` holding `contents`, open for reading and writing.
    pub fn file(&self, name: &str, contents: &[u8]) -> File {
        std::fs::write(self.path(name), contents).unwrap();
        self.open(name)
    }

    /// Opens the existing `name` for reading and writing.
    pub fn open(&self, name: &str) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(name))
            .unwrap()
    }

    /// Opens the existing `name` for reading with `O_DIRECT`; `None`, with a note on
    /// stderr, where the file system takes no direct I/O (a test then skips).
    pub fn open_direct(&self, name: &str) -> Option<File> {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(self.path(name))
            .map_err(|err| eprintln!("skipped: the test directory takes no O_DIRECT ({err})"))
            .ok()
    }

    /// Creates `name` holding `contents`, open for reading only.
    pub fn read_only(&self, name: &str, contents: &[u8]) -> File {
        std::fs::write(self.path(name), contents).unwrap();
        File::open(self.path(name)).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new, empty file open for reading and writing whose name is already removed: it goes
/// away with its last descriptor, whatever way the test ends.
pub fn unlinked_file(label: &str) -> File {
    let path = unique_path(label);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    std::fs::remove_file(&path).unwrap();
    file
}
