//! The bpf(2) syscall for the few commands aya does not offer lb (batch
//! lookups, updates and deletes of the flow tables; opening a pin and
//! swapping a link's program).
use std::io;

/// bpf(`cmd`, `attr`): the kernel's return value, or its error.
///
/// # Safety
/// `attr` must be a valid `union bpf_attr` prefix for `cmd`, zero where it
/// sets nothing, and every pointer in it must address a live buffer of the
/// size the attribute gives, which the kernel reads or writes within that
/// size only.
pub unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: the caller's contract above.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut A,
            size_of::<A>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
