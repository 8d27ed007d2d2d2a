//! One agent per pin directory. Two agents on one datapath undo each other:
//! the second swaps its program in, and when it stops it may take the
//! pins the first still sweeps. The API socket cannot tell (each may have
//! its own), so the agent holds an exclusive `flock` on the pin directory
//! itself for as long as it runs; the kernel drops it when the process
//! ends, however it ends, so a killed agent never leaves it behind.
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::Path,
};

use anyhow::{Context, Result, bail};

/// The lock, held until dropped.
pub struct PinOwner {
    _dir: File,
}

/// Takes the pin directory `pin_dir` (made if missing) for this process,
/// or says which process holds it.
pub fn own(pin_dir: &Path) -> Result<PinOwner> {
    std::fs::create_dir_all(pin_dir).with_context(|| format!("creating {}", pin_dir.display()))?;
    let dir = File::open(pin_dir).with_context(|| format!("opening {}", pin_dir.display()))?;
    // SAFETY: flock on an fd this function owns.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e).with_context(|| format!("locking {}", pin_dir.display()));
        }
        let who = holder(pin_dir).map_or("another process".to_string(), |pid| {
            format!("another lb agent (pid {pid})")
        });
        bail!(
            "{who} owns the datapath pinned in {}; stop it, or give this one another bpf.pin_dir",
            pin_dir.display()
        );
    }
    Ok(PinOwner { _dir: dir })
}

/// True when a live process holds `pin_dir` (for `lb teardown`, which must
/// not pull the pins from under an agent it cannot reach).
pub fn held(pin_dir: &Path) -> Option<u32> {
    if !pin_dir.exists() {
        return None;
    }
    let dir = File::open(pin_dir).ok()?;
    // SAFETY: as above; a shared try-lock only tests for an exclusive one.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        return None;
    }
    Some(holder(pin_dir).unwrap_or(0))
}

/// The pid that holds a flock on `pin_dir`, from /proc/locks (`N: FLOCK
/// ADVISORY WRITE PID MAJ:MIN:INODE START END`).
fn holder(pin_dir: &Path) -> Option<u32> {
    let meta = std::fs::metadata(pin_dir).ok()?;
    let inode = meta.ino().to_string();
    std::fs::read_to_string("/proc/locks")
        .ok()?
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| {
            f.get(1) == Some(&"FLOCK")
                && f.get(5).and_then(|id| id.rsplit(':').next()) == Some(inode.as_str())
        })
        .and_then(|f| f.get(4)?.parse().ok())
}
