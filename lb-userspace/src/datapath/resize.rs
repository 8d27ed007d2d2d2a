//! Adopting pinned maps whose size changed: an upgrade that raised a limit
//! (more VIPs, reals or drop reasons) finds the last agent's arrays and
//! hash maps pinned at the old size. The loader would take them as they are,
//! so the new limits would fail at the first id past the old size.
//!
//! Instead each such map gets a new map of the object's size, filled from
//! the old one, in three steps that keep every flow and every count:
//! 1. [`set_aside`], before loading: the old map's pin moves to `NAME_old`,
//!    so the loader creates and pins a new map under `NAME`.
//! 2. [`Resized::copy`], after loading and before any new program can run
//!    (before the IPv6 programs enter the adopted tail-call arrays): every
//!    entry is copied, so the new programs see the same VIPs, reals and
//!    counts. The old program keeps running on the old maps meanwhile.
//! 3. [`Resized::finish`], once the new program replaced the old one on
//!    every interface: what the old program still counted since the copy
//!    (flows made, packets) is added in, and the old pins are removed.
//!
//! Only arrays and hash maps are resized. An LRU table keeps its size (the
//! flow table's size is `bpf.flow_table_size`, applied at a clean start),
//! and a map whose key or value layout changed cannot be adopted at all.
use std::{
    fs,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use aya::maps::{MapInfo, MapType};
use aya_obj::maps::PinningType;
use log::info;

/// The suffix of an old map's pin while it is set aside.
const OLD: &str = "_old";

/// A map the loader re-created at its new size, with the old one beside it.
struct Moved {
    name: String,
    old_pin: PathBuf,
    kind: Kind,
    key_size: usize,
    /// Bytes per lookup: the value, or for a per-CPU map one 8-byte-aligned
    /// value per possible CPU.
    value_bytes: usize,
    old_entries: u32,
    new_entries: u32,
    /// Array values at the copy, to add what the old program counted after
    /// it (hash maps are written by the agent alone: nothing to add).
    copied: Vec<Vec<u8>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Array,
    Hash,
}

/// The maps set aside for one load; empty when no size changed.
#[derive(Default)]
pub struct Resized(Vec<Moved>);

/// Step 1: for each map of `object` pinned under `pin_dir` at another size
/// than the object's (or `sizes`, the loader's overrides), moves its pin
/// to `NAME_old`. Refuses a pinned map of another type or layout, naming the
/// clean start that replaces it.
pub fn set_aside(pin_dir: &Path, object: &[u8], sizes: &[(&str, u32)]) -> Result<Resized> {
    let obj = aya_obj::Object::parse(object).context("parsing the XDP object")?;
    let cpus = aya::util::nr_cpus()
        .map_err(|(_, e)| e)
        .context("counting CPUs")?;
    let mut moved = Resized::default();
    let mut names: Vec<&String> = obj.maps.keys().collect();
    names.sort();
    for name in names {
        let def = &obj.maps[name];
        if def.pinning() != PinningType::ByName {
            continue;
        }
        let pin = pin_dir.join(name);
        if !pin.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&pin).with_context(|| format!("reading {}", pin.display()))?;
        let kernel_type = info.map_type().map_or(u32::MAX, |t| t as u32);
        if kernel_type != def.map_type()
            || info.key_size() != def.key_size()
            || info.value_size() != def.value_size()
        {
            bail!(
                "the pinned map {} has another layout than this lb's (type {}, key {} bytes, value {} bytes; this lb's: type {}, {}, {}): it cannot be adopted; start clean with `lb run --reset` (existing flows are dropped)",
                pin.display(),
                kernel_type,
                info.key_size(),
                info.value_size(),
                def.map_type(),
                def.key_size(),
                def.value_size()
            );
        }
        let want = sizes
            .iter()
            .find(|(n, _)| n == name)
            .map_or(def.max_entries(), |&(_, n)| n);
        let kind = match info.map_type() {
            Ok(MapType::Array | MapType::PerCpuArray) => Kind::Array,
            Ok(MapType::Hash | MapType::PerCpuHash) => Kind::Hash,
            _ => continue,
        };
        if info.max_entries() == want {
            continue;
        }
        let per_cpu = matches!(
            info.map_type(),
            Ok(MapType::PerCpuArray | MapType::PerCpuHash)
        );
        let value_size = info.value_size() as usize;
        let old_pin = pin_dir.join(format!("{name}{OLD}"));
        move_pin(&pin, &old_pin)?;
        info!(
            "{name}: the pinned map holds {} entries, this lb {want}; it is copied into a new one",
            info.max_entries()
        );
        moved.0.push(Moved {
            name: name.clone(),
            old_pin,
            kind,
            key_size: info.key_size() as usize,
            value_bytes: if per_cpu {
                value_size.next_multiple_of(8) * cpus
            } else {
                value_size
            },
            old_entries: info.max_entries(),
            new_entries: want,
            copied: Vec::new(),
        });
    }
    Ok(moved)
}

impl Resized {
    /// Undoes step 1 after a failed load: the new pins go, the old ones come
    /// back, so the next start adopts the running datapath again.
    pub fn restore(self, pin_dir: &Path) {
        for m in self.0 {
            let pin = pin_dir.join(&m.name);
            let _ = fs::remove_file(&pin);
            if let Err(e) = move_pin(&m.old_pin, &pin) {
                log::error!("{e:#}");
            }
        }
    }

    /// Step 2: copies every entry of each old map into the new one the
    /// loader pinned under `pin_dir`.
    pub fn copy(&mut self, pin_dir: &Path) -> Result<()> {
        for m in &mut self.0 {
            let old = MapInfo::from_pin(&m.old_pin)?.fd()?;
            let new = MapInfo::from_pin(pin_dir.join(&m.name))?.fd()?;
            let (old, new) = (old.as_fd(), new.as_fd());
            let mut n = 0;
            match m.kind {
                Kind::Array => {
                    for i in 0..m.old_entries.min(m.new_entries) {
                        let v = lookup(old, &i.to_ne_bytes(), m.value_bytes)?
                            .expect("an array has every index");
                        update(new, &i.to_ne_bytes(), &v)
                            .with_context(|| format!("{}[{i}]", m.name))?;
                        m.copied.push(v);
                    }
                    n = m.copied.len();
                }
                Kind::Hash => {
                    for key in keys(old, m.key_size)? {
                        // Gone since the key was listed: nothing to copy.
                        if let Some(v) = lookup(old, &key, m.value_bytes)? {
                            update(new, &key, &v).with_context(|| {
                                format!("{}: {} entries do not fit", m.name, m.new_entries)
                            })?;
                            n += 1;
                        }
                    }
                }
            }
            info!(
                "{}: {n} entries copied into the new map of {}",
                m.name, m.new_entries
            );
        }
        Ok(())
    }

    /// Step 3, once no old program runs: adds to each new array what the
    /// old program counted there after the copy, and removes the old pins.
    pub fn finish(self, pin_dir: &Path) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        // A program replaced on an interface may still be finishing a
        // packet on another CPU; this is far longer than one takes.
        thread::sleep(Duration::from_millis(20));
        for m in self.0 {
            if m.kind == Kind::Array {
                let old = MapInfo::from_pin(&m.old_pin)?.fd()?;
                let new = MapInfo::from_pin(pin_dir.join(&m.name))?.fd()?;
                for (i, at_copy) in (0u32..).zip(&m.copied) {
                    let key = i.to_ne_bytes();
                    let now = lookup(old.as_fd(), &key, m.value_bytes)?.expect("an index");
                    if now == *at_copy {
                        continue;
                    }
                    let mut v = lookup(new.as_fd(), &key, m.value_bytes)?.expect("an index");
                    add_delta(&mut v, at_copy, &now);
                    update(new.as_fd(), &key, &v)?;
                }
            }
            fs::remove_file(&m.old_pin)
                .with_context(|| format!("removing {}", m.old_pin.display()))?;
        }
        Ok(())
    }
}

/// Moves a pin (the BPF file system allows no dot in a name, hence the
/// `_old` suffix).
fn move_pin(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .with_context(|| format!("moving the pin {} to {}", from.display(), to.display()))
}

/// `v += now - then`, word by word: the arrays' values are counters of 8
/// bytes (or cursors of 4, where a value is not a multiple of 8), and a
/// value the old program did not change adds nothing.
fn add_delta(v: &mut [u8], then: &[u8], now: &[u8]) {
    let w = if v.len().is_multiple_of(8) { 8 } else { 4 };
    for ((v, then), now) in v.chunks_mut(w).zip(then.chunks(w)).zip(now.chunks(w)) {
        let word = |b: &[u8]| {
            let mut x = [0u8; 8];
            x[..b.len()].copy_from_slice(b);
            u64::from_ne_bytes(x)
        };
        let sum = word(v).wrapping_add(word(now).wrapping_sub(word(then)));
        v.copy_from_slice(&sum.to_ne_bytes()[..w]);
    }
}

// The map element commands of bpf(2), on raw bytes: the copy works for any
// key and value type, which aya's typed maps would each need spelled out.
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// `union bpf_attr` as the element commands read it.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &ElemAttr) -> std::io::Result<()> {
    // SAFETY: attr is a valid bpf_attr prefix for the element commands and
    // its pointers point at buffers of the map's key and value sizes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const ElemAttr,
            size_of::<ElemAttr>() as u32,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn lookup(fd: BorrowedFd<'_>, key: &[u8], value_bytes: usize) -> Result<Option<Vec<u8>>> {
    let mut v = vec![0u8; value_bytes];
    let attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: v.as_mut_ptr() as u64,
        flags: 0,
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &attr) {
        Ok(()) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e).context("bpf map lookup"),
    }
}

fn update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> Result<()> {
    let attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags: 0, // BPF_ANY
    };
    bpf(BPF_MAP_UPDATE_ELEM, &attr).context("bpf map update")
}

fn keys(fd: BorrowedFd<'_>, key_size: usize) -> Result<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut next = vec![0u8; key_size];
        let attr = ElemAttr {
            map_fd: fd.as_raw_fd() as u32,
            _pad: 0,
            // NULL: the first key.
            key: out.last().map_or(0, |k| k.as_ptr() as u64),
            value: next.as_mut_ptr() as u64,
            flags: 0,
        };
        match bpf(BPF_MAP_GET_NEXT_KEY, &attr) {
            Ok(()) => out.push(next),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e).context("bpf map next key"),
        }
    }
}

/// Maps set aside under `pin_dir` by a load that did not finish (an agent
/// killed between its steps): `NAME_old` pins, for the clean-up that removes
/// the datapath.
pub fn leftover_pins(pin_dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(pin_dir) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(OLD))
        .collect()
}
