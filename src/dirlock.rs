//! An exclusive lock on a directory one process must own alone (the audit
//! log directory, `[lists] state_dir`): two instances writing one audit
//! chain would interleave two chains into a log that no longer verifies.
//!
//! The lock is `flock(LOCK_EX | LOCK_NB)` on `DIR/.lock`, held for the
//! life of the [`DirLock`]; the kernel releases it when the process dies,
//! however it dies, so a stale lock file never blocks a restart. The
//! holder's pid is written into the file for the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the locked directory.
pub(crate) const LOCK_FILE: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    #[error(
        "{} is in use by another sinkhole process{}: two instances must not share one {what}",
        dir.display(),
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held {
        dir: PathBuf,
        what: &'static str,
        holder: Option<u32>,
    },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held while the directory is in use; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Takes the exclusive lock on `dir` (created if missing). `what` names
/// the directory's role in the error ("audit log directory").
pub(crate) fn lock_dir(dir: &Path, what: &'static str) -> Result<DirLock, DirLockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| DirLockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    // flock(2) directly: `File::try_lock` is newer than the crate's MSRV.
    // SAFETY: flock on a descriptor this function owns; no memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(DirLockError::Held {
                dir: dir.to_path_buf(),
                what,
                holder: text.trim().parse().ok(),
            });
        }
        return Err(io(e));
    }
    // Only the holder writes: the pid of the process that owns it now.
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(pid.as_bytes()))
        .map_err(io)?;
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("audit");
        let first = lock_dir(&sub, "audit log directory").unwrap();
        let err = lock_dir(&sub, "audit log directory").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, DirLockError::Held { holder: Some(p), .. } if p == std::process::id())
        );
        assert!(msg.contains("in use by another sinkhole process"), "{msg}");
        assert!(msg.contains("audit log directory"), "{msg}");
        drop(first);
        lock_dir(&sub, "audit log directory").unwrap();
    }
}
