//! Swapping the program a pinned bpf_link runs (`Datapath::take_over`):
//! BPF_OBJ_GET on the pin and BPF_LINK_UPDATE, which aya does not offer for
//! a link another program object owns.
use std::{
    ffi::CString,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::Path,
};

use anyhow::{Context, Result};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `union bpf_attr`, large enough for both commands (the kernel checks
/// that what it does not know is zero).
#[repr(C, align(8))]
#[derive(Default)]
struct Attr([u32; 16]);

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-padded bpf_attr whose one pointer (a path)
    // is live for the call.
    unsafe { crate::bpf_sys::bpf(cmd, attr) }
}

/// Opens the bpf object pinned at `pin`.
fn obj_get(pin: &Path) -> Result<OwnedFd> {
    let path = CString::new(pin.as_os_str().as_bytes())?;
    let mut attr = Attr::default();
    // pathname (u64), bpf_fd, file_flags.
    let ptr = path.as_ptr() as u64;
    attr.0[0] = ptr as u32;
    attr.0[1] = (ptr >> 32) as u32;
    let fd = bpf(BPF_OBJ_GET, &mut attr).with_context(|| format!("opening {}", pin.display()))?;
    // SAFETY: BPF_OBJ_GET returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Makes the link pinned at `pin` run `prog`, atomically.
pub fn link_update(pin: &Path, prog: BorrowedFd<'_>) -> Result<()> {
    let link = obj_get(pin)?;
    let mut attr = Attr::default();
    // link_fd, new_prog_fd, flags, old_prog_fd.
    attr.0[0] = link.as_raw_fd() as u32;
    attr.0[1] = prog.as_raw_fd() as u32;
    bpf(BPF_LINK_UPDATE, &mut attr).context("BPF_LINK_UPDATE")?;
    Ok(())
}
