//! One server per data dir.
//!
//! The promise: while a `bouncewatch serve` runs, no second one starts on the same data dir. Two
//! of them would share the journal's files but not what each keeps in memory: a retry received
//! by one would not find the key of the original, still held in the other's memory
//! (`dedup.rs`), and would be stored twice; and both pipelines would count every event, so the
//! metrics store would see it twice. SQLite's own locks keep the files consistent, not these.
//!
//! The lock is an advisory `flock` on `data_dir/lock`, held through an open file for the life
//! of the process. The kernel drops it when the process ends in any way, `kill -9` included, so
//! a crash never leaves a stale lock for the next start to trip on. The file holds the pid of the
//! server that has it, for the message. Tools that only read (a `sqlite3` shell on the journal,
//! `bouncewatch backtest`) do not take it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data dir.
const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "server.data_dir {dir} is in use by another bouncewatch{}: two servers on one journal \
         would store retried events twice and count every event twice. Stop the other one, or \
         give this one its own --data-dir",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock server.data_dir through {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held for as long as the server runs; dropping it (or the process ending) releases the dir.
#[derive(Debug)]
pub struct DirLock {
    /// `None` on a read-only file system that has no lock file yet: nothing can be written
    /// there, so there is nothing to protect.
    _file: Option<File>,
}

impl DirLock {
    /// Takes the lock on `dir`, or says who holds it. Never waits.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(file) => file,
            // A lock can be taken through a file opened for reading, so a data dir on a
            // read-only file system is still locked if an earlier start left the file there.
            Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), "read-only file system and no lock file: the data dir is not locked against a second server");
                    return Ok(DirLock { _file: None });
                }
                Err(e) => return Err(io(e)),
            },
            Err(e) => return Err(io(e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // The pid is only for the message above: a full disk that cannot take it still locks.
        let pid = std::process::id().to_string();
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()));
        if let Err(e) = written {
            tracing::debug!(error = %e, path = %path.display(), "could not write the pid into the lock file");
        }
        Ok(DirLock { _file: Some(file) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(LockError::InUse { dir: d, pid }) => {
                assert_eq!(d, dir.path());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("a second lock was not refused: {other:?}"),
        }
        let other = tempfile::tempdir().unwrap();
        DirLock::acquire(other.path()).expect("another dir is free");
        drop(first);
        DirLock::acquire(dir.path()).expect("free again once the first is dropped");
    }

    /// A tmpfs mounted on a fresh directory for as long as it lives (needs root).
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount() -> Result<Tmpfs, String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            run(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"], dir.path())?;
            Ok(Tmpfs(dir))
        }

        fn read_only(&self) -> Result<(), String> {
            run(&["-o", "remount,ro"], self.0.path())
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }

    fn run(args: &[&str], path: &Path) -> Result<(), String> {
        let out = std::process::Command::new("mount")
            .args(args)
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// On a read-only file system the lock is taken through a file opened for reading, when an
    /// earlier start left one; without one there is nothing to lock, and nothing to protect.
    #[test]
    fn a_read_only_data_dir_is_locked_through_an_existing_lock_file_and_starts_without_one() {
        let fs = match Tmpfs::mount() {
            Ok(fs) => fs,
            Err(why) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: cannot mount a tmpfs ({why}); run as root");
                return;
            }
            Err(why) => panic!("cannot mount a tmpfs ({why}); CI runs as root"),
        };
        let used = fs.0.path().join("used");
        let new = fs.0.path().join("new");
        std::fs::create_dir(&used).unwrap();
        std::fs::create_dir(&new).unwrap();
        drop(DirLock::acquire(&used).unwrap());
        fs.read_only().unwrap();

        let held = DirLock::acquire(&used).expect("a read-only dir with a lock file");
        assert!(held._file.is_some());
        assert!(
            matches!(DirLock::acquire(&used), Err(LockError::InUse { .. })),
            "a lock taken through a read-only file did not hold"
        );
        let unlocked = DirLock::acquire(&new).expect("a read-only dir without a lock file");
        assert!(unlocked._file.is_none());
    }

    #[test]
    fn the_refusal_names_the_dir_the_pid_and_what_to_do() {
        let message = LockError::InUse {
            dir: PathBuf::from("/var/lib/bouncewatch"),
            pid: Some(4242),
        }
        .to_string();
        assert!(message.contains("/var/lib/bouncewatch"), "{message}");
        assert!(message.contains("pid 4242"), "{message}");
        assert!(message.contains("--data-dir"), "{message}");
    }
}
