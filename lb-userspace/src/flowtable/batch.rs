//! Whole-table reads and bulk writes of `FLOWS` with the bpf(2) batch
//! commands (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_UPDATE_BATCH`,
//! `BPF_MAP_DELETE_BATCH`, kernel 5.6+, implemented for LRU hash maps too).
//!
//! aya 0.14 has no batch API, so these go through `libc::syscall` on the
//! map's fd. One lookup syscall returns thousands of entries, where aya's
//! iterator spends two (get_next_key + lookup) on each: at 2M entries that is
//! the difference between a fraction of a second and several seconds.
//!
//! Each function falls back to aya's per-entry calls when the kernel refuses
//! the batch command itself (EINVAL from a kernel older than 5.6, which does
//! not know the command; ENOTSUPP/EOPNOTSUPP from a map type without batch
//! ops), so older kernels stay supported, only slower.
use std::{
    io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd, RawFd},
};

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap, IterableMap, MapData, MapError};
use lb_common::{Flow, FlowKey};

/// Entries per lookup batch: 8192 × 112 bytes ≈ 0.9 MiB of reused buffers,
/// a few hundred syscalls for a 2M-entry table.
pub const LOOKUP_BATCH: usize = 8192;
/// Entries per update or delete batch. The kernel processes these one by one
/// (with `cond_resched` between), so the size only bounds one syscall's time.
const WRITE_BATCH: usize = 16384;
/// A hash bucket larger than this would be a broken table, not a big one.
const MAX_LOOKUP_BATCH: usize = 1 << 20;

/// `enum bpf_cmd` numbers (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_int = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_int = 26;
const BPF_MAP_DELETE_BATCH: libc::c_int = 27;
/// The kernel-internal "operation not supported" that bpf(2) returns for a
/// map type without batch ops (not in libc: it is not a userspace errno).
const ENOTSUPP: i32 = 524;

/// The `batch` member of `union bpf_attr`. The kernel accepts an attr shorter
/// than its own union and zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    /// Where to resume (an opaque token the previous call wrote to
    /// `out_batch`); 0 starts at the beginning.
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: entries the buffers hold. Out: entries processed.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}
const _: () = assert!(size_of::<BatchAttr>() == 56);

/// The batch token: the hash map writes a u32 bucket index, other map types
/// a key; a key-sized buffer (8-aligned) holds either.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Token([u8; size_of::<FlowKey>()]);

fn sys_bpf(cmd: libc::c_int, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; every
    // pointer in it addresses a live buffer sized by `count` (the callers
    // below), which the kernel reads or writes only within that count.
    unsafe { crate::bpf_sys::bpf(cmd.into(), attr) }.map(|_| ())
}

fn raw_fd(map: &HashMap<MapData, FlowKey, Flow>) -> RawFd {
    IterableMap::map(map).fd().as_fd().as_raw_fd()
}

/// The kernel does not do batches of this kind here: use the per-entry path.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

/// Calls `f` for every entry of the flow table, a batch of up to
/// [`LOOKUP_BATCH`] entries per syscall into buffers reused across batches.
///
/// Like any walk of a live hash map, entries the datapath adds or removes
/// meanwhile may or may not be seen; each entry is seen at most once.
pub fn for_each(
    map: &HashMap<MapData, FlowKey, Flow>,
    mut f: impl FnMut(&FlowKey, &Flow),
) -> Result<()> {
    let fd = raw_fd(map);
    let mut keys = vec![FlowKey::default(); LOOKUP_BATCH];
    let mut values = vec![Flow::default(); LOOKUP_BATCH];
    let mut token_in = Token([0; size_of::<FlowKey>()]);
    let mut token_out = token_in;
    let mut started = false;
    loop {
        let mut attr = BatchAttr {
            in_batch: if started {
                &raw const token_in as u64
            } else {
                0
            },
            out_batch: &raw mut token_out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: keys.len() as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        let rc = sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        // The kernel never reports more than it was given room for.
        let n = (attr.count as usize).min(keys.len());
        match rc {
            Ok(()) => {}
            // The end of the table; the last entries came with it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                keys[..n]
                    .iter()
                    .zip(&values[..n])
                    .for_each(|(k, v)| f(k, v));
                return Ok(());
            }
            // The next bucket holds more entries than the buffers do (only
            // reported when nothing else fit): grow them and ask again from
            // the same token.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                if n == 0 {
                    let len = keys.len() * 2;
                    if len > MAX_LOOKUP_BATCH {
                        bail!(
                            "flow table walk: a hash bucket holds over {MAX_LOOKUP_BATCH} entries"
                        );
                    }
                    keys.resize(len, FlowKey::default());
                    values.resize(len, Flow::default());
                    continue;
                }
            }
            // Kernels before 5.6 do not know the command (EINVAL); a map type
            // without batch ops says ENOTSUPP. Walk it key by key instead.
            Err(e) if !started && unsupported(&e) => {
                log::debug!("BPF_MAP_LOOKUP_BATCH unavailable ({e}); walking key by key");
                return for_each_by_key(map, f);
            }
            Err(e) => return Err(e).context("reading the flow table (BPF_MAP_LOOKUP_BATCH)"),
        }
        keys[..n]
            .iter()
            .zip(&values[..n])
            .for_each(|(k, v)| f(k, v));
        token_in = token_out;
        started = true;
    }
}

/// The pre-5.6 walk: get_next_key + lookup per entry.
fn for_each_by_key(
    map: &HashMap<MapData, FlowKey, Flow>,
    mut f: impl FnMut(&FlowKey, &Flow),
) -> Result<()> {
    for entry in map.iter() {
        match entry {
            Ok((k, v)) => f(&k, &v),
            // Deleted between get_next_key and lookup: skip it.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes `entries` (create or replace, like `insert(.., 0)`), batches of
/// up to 16384 per syscall. Used to fill or restore a table in bulk.
pub fn insert_batch(
    map: &mut HashMap<MapData, FlowKey, Flow>,
    keys: &[FlowKey],
    values: &[Flow],
) -> Result<()> {
    if keys.len() != values.len() {
        bail!(
            "insert_batch: {} keys for {} values",
            keys.len(),
            values.len()
        );
    }
    let fd = raw_fd(map);
    let mut done = 0;
    while done < keys.len() {
        let end = keys.len().min(done + WRITE_BATCH);
        let mut attr = BatchAttr {
            keys: keys[done..end].as_ptr() as u64,
            values: values[done..end].as_ptr() as u64,
            count: (end - done) as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        match sys_bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
            Ok(()) => done = end,
            Err(e) if done == 0 && attr.count == 0 && unsupported(&e) => {
                log::debug!("BPF_MAP_UPDATE_BATCH unavailable ({e}); writing key by key");
                for (k, v) in keys.iter().zip(values) {
                    map.insert(k, v, 0).context("writing the flow table")?;
                }
                return Ok(());
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "writing the flow table (BPF_MAP_UPDATE_BATCH): {} of {} entries written",
                        done + attr.count as usize,
                        keys.len()
                    )
                });
            }
        }
    }
    Ok(())
}

/// Removes `keys`, batches of up to 16384 per syscall. A key that is not
/// there (LRU eviction, a concurrent sweep, the datapath) is skipped and
/// reported to `missing` by its index. Returns how many were removed.
pub fn remove_batch_with(
    map: &mut HashMap<MapData, FlowKey, Flow>,
    keys: &[FlowKey],
    mut missing: impl FnMut(usize),
) -> Result<usize> {
    let fd = raw_fd(map);
    let mut done = 0;
    let mut removed = 0;
    while done < keys.len() {
        let end = keys.len().min(done + WRITE_BATCH);
        let mut attr = BatchAttr {
            keys: keys[done..end].as_ptr() as u64,
            count: (end - done) as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        let rc = sys_bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        let n = (attr.count as usize).min(end - done);
        match rc {
            Ok(()) => {
                removed += n;
                done = end;
            }
            // The kernel stops at the first key it cannot delete and says
            // how many it did before it: skip that one and go on.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                removed += n;
                missing(done + n);
                done += n + 1;
            }
            Err(e) if done == 0 && n == 0 && unsupported(&e) => {
                log::debug!("BPF_MAP_DELETE_BATCH unavailable ({e}); removing key by key");
                for (i, k) in keys.iter().enumerate() {
                    match map.remove(k) {
                        Ok(()) => removed += 1,
                        Err(e) if is_enoent(&e) => missing(i),
                        Err(e) => return Err(e).context("removing flows"),
                    }
                }
                return Ok(removed);
            }
            Err(e) => return Err(e).context("removing flows (BPF_MAP_DELETE_BATCH)"),
        }
    }
    Ok(removed)
}

fn is_enoent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// [`remove_batch_with`], counting only.
pub fn remove_batch(map: &mut HashMap<MapData, FlowKey, Flow>, keys: &[FlowKey]) -> Result<usize> {
    remove_batch_with(map, keys, |_| {})
}
