//! Where the index lives: a directory of its own under the system's temp dir, removed when the
//! index is dropped. A process that is killed (or exits without dropping it) leaves its
//! directory behind, a few MB each; so each directory holds a lock file, locked for as long as
//! its process lives, and opening an index removes the directories whose lock can be taken:
//! their process is gone (the kernel releases a dead process's locks).

use std::fs::File;
use std::path::Path;

/// The directories' name prefix, under the system's temp dir.
pub const PREFIX: &str = "jetask-index-";
/// The lock file in each directory; it is only given this name once locked.
const LOCK: &str = "owner.lock";

/// A directory owned by this process while this lives.
pub struct Scratch {
    dir: tempfile::TempDir,
    /// Locked: held, not read.
    _lock: File,
}

impl Scratch {
    /// A new directory under the system's temp dir, after removing those of dead processes.
    pub fn create() -> std::io::Result<Scratch> {
        Self::create_in(&std::env::temp_dir())
    }

    pub fn create_in(parent: &Path) -> std::io::Result<Scratch> {
        sweep(parent);
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(parent)?;
        // Locked under another name, then renamed: a sweep never sees it unlocked.
        let pending = dir.path().join(format!("{LOCK}.pending"));
        let lock = File::create(&pending)?;
        lock.try_lock().map_err(std::io::Error::other)?;
        std::fs::rename(&pending, dir.path().join(LOCK))?;
        Ok(Scratch { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the index directories under `parent` whose owner is gone. Best effort: a directory
/// that cannot be read or removed is left as it is.
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry.file_name().to_str().is_some_and(|n| n.starts_with(PREFIX));
        if ours && entry.file_type().is_ok_and(|t| t.is_dir()) && abandoned(&path) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Whether the directory's lock file can be locked: no live process holds it. A directory
/// without one (being created, or left by a version without locks) is not taken for abandoned.
fn abandoned(dir: &Path) -> bool {
    match File::open(dir.join(LOCK)) {
        Ok(f) => f.try_lock().is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_owners_directory_goes_and_a_live_ones_stays() {
        let parent = tempfile::tempdir().unwrap();
        let live = Scratch::create_in(parent.path()).unwrap();
        // A directory whose owner died: its lock file is there, and no one holds it.
        let dead = parent.path().join(format!("{PREFIX}dead"));
        std::fs::create_dir(&dead).unwrap();
        File::create(dead.join(LOCK)).unwrap();
        // One without a lock file (an older version's, or one being created) is left alone.
        let unknown = parent.path().join(format!("{PREFIX}unknown"));
        std::fs::create_dir(&unknown).unwrap();
        let other = parent.path().join("something-else");
        std::fs::create_dir(&other).unwrap();
        File::create(other.join(LOCK)).unwrap();

        let second = Scratch::create_in(parent.path()).unwrap();
        assert!(!dead.exists(), "a dead owner's directory is removed");
        assert!(live.path().exists(), "a live owner's directory stays");
        assert!(unknown.exists() && other.exists());
        let first = live.path().to_path_buf();
        drop(live);
        assert!(!first.exists(), "dropped with its index");
        assert!(second.path().exists());
    }
}
