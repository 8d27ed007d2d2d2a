//! Reading the flow table: joining each flow's two entries, expiring idle
//! flows by state, repairing a flow whose other half the LRU evicted, and
//! `lb flows`: counting, listing and clearing with filters (`query`), over
//! batched walks of the table (`batch`). The datapath keeps flows in two
//! tables of the same layout, `FLOWS` (assured) and `EMBRYOS` (half-open,
//! see [`Kind`]); the sweep and `lb flows` cover both ([`sweep_tables`],
//! [`Tables`]).
mod batch;
mod query;

use std::{
    collections::{HashMap as StdMap, HashSet, hash_map::Entry},
    net::SocketAddr,
    path::Path,
    time::Duration,
};

use anyhow::Result;
use aya::maps::{HashMap, IterableMap, MapData};
use lb_common::{
    DIR_FORWARD, DIR_REVERSE, FLOW_COUNTED, Flow, FlowKey, PROTO_TCP, ST_CLOSED, ST_ESTABLISHED,
    ST_FIN, ST_SYN, ST_UDP, from_map_addr,
};

use self::query::{Sink, Source, Store, Tuning};
pub use self::{
    batch::{LOOKUP_BATCH, for_each, insert_batch, remove_batch, remove_batch_with},
    query::{AddrMatch, Cleared, Compiled, KEEP_MIN, LOOKUP_RATIO, parse_state},
};
use crate::{
    api::{FlowRow, FlowState},
    config::{Protocol, Timeouts},
    control::Control,
};

/// BPF_NOEXIST: a repair never overwrites an entry the datapath just made.
const BPF_NOEXIST: u64 = 1;

/// One flow: the forward entry and, normally, its reverse.
#[derive(Clone, Debug)]
pub struct Joined {
    pub fwd_key: FlowKey,
    pub fwd: Flow,
    pub rev: Option<(FlowKey, Flow)>,
}

/// All flows, plus reverse entries whose forward half is missing.
#[derive(Debug, Default)]
pub struct Table {
    pub flows: Vec<Joined>,
    pub lone_reverse: Vec<(FlowKey, Flow)>,
}

/// Reads the whole table once (batched, see [`for_each`]) and pairs the
/// directions.
///
/// The pairing is streamed: a half waits in a map, keyed by its flow's
/// forward key, only until the walk meets the other half, so besides the
/// result it holds about a quarter of the table at its peak (two halves at
/// independent places in the walk) instead of every reverse entry.
pub fn read(map: &HashMap<MapData, FlowKey, Flow>) -> Result<Table> {
    read_from(map)
}

enum Half {
    Fwd(FlowKey, Flow),
    Rev(FlowKey, Flow),
}

pub(crate) fn read_from(src: &impl Source) -> Result<Table> {
    let mut t = Table::default();
    let mut pending: StdMap<FlowKey, Half> = StdMap::new();
    // Further reverse entries naming a flow whose first one is pending (a
    // previous real's, left by a reassign race): which one is the flow's is
    // known when its forward entry, naming the real, comes.
    let mut spare: StdMap<FlowKey, Vec<(FlowKey, Flow)>> = StdMap::new();
    src.scan(&mut |k, v| match v.dir {
        DIR_FORWARD => {
            let fk = FlowKey { _pad: [0; 3], ..*k };
            match pending.remove(&fk) {
                Some(Half::Rev(rk, r)) => {
                    let mut rev = None;
                    let mut offer = |rk: FlowKey, r: Flow| {
                        if rev.is_none() && from_real(&rk, v) {
                            rev = Some((rk, r));
                        } else {
                            t.lone_reverse.push((rk, r));
                        }
                    };
                    offer(rk, r);
                    if !spare.is_empty() {
                        for (rk, r) in spare.remove(&fk).unwrap_or_default() {
                            offer(rk, r);
                        }
                    }
                    match rev {
                        Some(rev) => t.flows.push(Joined {
                            fwd_key: *k,
                            fwd: *v,
                            rev: Some(rev),
                        }),
                        // Its own may still come.
                        None => {
                            pending.insert(fk, Half::Fwd(*k, *v));
                        }
                    }
                }
                // Two keys that differ only in padding: not the datapath's.
                Some(Half::Fwd(k2, v2)) => {
                    t.flows.push(Joined {
                        fwd_key: k2,
                        fwd: v2,
                        rev: None,
                    });
                    pending.insert(fk, Half::Fwd(*k, *v));
                }
                None => {
                    pending.insert(fk, Half::Fwd(*k, *v));
                }
            }
        }
        DIR_REVERSE => {
            // The forward key of its flow: client -> VIP.
            let fk = FlowKey {
                src_addr: k.dst_addr,
                dst_addr: v.nat_addr,
                src_port_be: k.dst_port_be,
                dst_port_be: v.nat_port_be,
                proto: k.proto,
                _pad: [0; 3],
            };
            match pending.entry(fk) {
                Entry::Occupied(e) => match e.get() {
                    Half::Fwd(_, f) if from_real(k, f) => {
                        let Half::Fwd(fwd_key, fwd) = e.remove() else {
                            unreachable!("matched above")
                        };
                        t.flows.push(Joined {
                            fwd_key,
                            fwd,
                            rev: Some((*k, *v)),
                        });
                    }
                    // Not from the flow's real: stale.
                    Half::Fwd(..) => t.lone_reverse.push((*k, *v)),
                    Half::Rev(..) => spare.entry(fk).or_default().push((*k, *v)),
                },
                Entry::Vacant(e) => {
                    e.insert(Half::Rev(*k, *v));
                }
            }
        }
        _ => {}
    })?;
    for half in pending.into_values() {
        match half {
            Half::Fwd(fwd_key, fwd) => t.flows.push(Joined {
                fwd_key,
                fwd,
                rev: None,
            }),
            Half::Rev(k, r) => t.lone_reverse.push((k, r)),
        }
    }
    t.lone_reverse.extend(spare.into_values().flatten());
    Ok(t)
}

/// Whether the reverse entry at `rk` comes from the real of forward `f`.
fn from_real(rk: &FlowKey, f: &Flow) -> bool {
    rk.src_addr == f.nat_addr && rk.src_port_be == f.nat_port_be
}

/// Flows matching `filter`, in one batched walk of the table, holding
/// nothing per flow unless `filter.state` is set. Client, VIP and real are
/// decided by either entry of a flow alone; a state needs the flow's merged
/// state, so the forward entries that may match (~60 bytes each; a forward
/// state past the wanted one rules a flow out) and the reverse entries that
/// can change the answer are kept, within a budget proportional to the
/// former, and joined; past the budget the join goes by lookups or a second
/// walk (see `query`'s module comment). `now` is unused (the signature
/// matches `list`).
pub fn count(map: &HashMap<MapData, FlowKey, Flow>, filter: &Filter, _now: u64) -> Result<usize> {
    query::count_in(map, &filter.compile()?, &Tuning::default())
}

/// Rows of the flows matching `filter`, sorted by (VIP, real, client) as
/// addresses, then protocol, the first `limit` of them. Rows are built for
/// those only; without a state filter a `limit` keeps just `limit` flows
/// while walking. Memory: ~112 bytes per matching flow (per kept flow under
/// such a limit) and up to twice as many 88-byte reverse entries while
/// joining, then the rows.
pub fn list(
    map: &HashMap<MapData, FlowKey, Flow>,
    filter: &Filter,
    limit: Option<usize>,
    now: u64,
) -> Result<Vec<FlowRow>> {
    query::list_in(map, &filter.compile()?, limit, now, &Tuning::default())
}

/// Removes both entries of every flow matching `filter` (`lb flows clear`),
/// in batches, and says how many flows went and which of them still counted
/// as active on their real (add `uncounted` to `EXPIRED`, as after a sweep).
/// Without a state filter, reverse entries matching the addresses are
/// removed even if their forward entry is gone; with one, only flows found
/// by their forward entry are (the sweep handles orphans). Entries already
/// gone when the removal reaches them (LRU, the datapath, a sweep) are
/// skipped and neither counted nor uncounted. `now` is unused.
pub fn clear(
    map: &mut HashMap<MapData, FlowKey, Flow>,
    filter: &Filter,
    _now: u64,
) -> Result<Cleared> {
    let q = filter.compile()?;
    query::clear_in(map, &q, &Tuning::default())
}

/// The datapath's two flow tables, opened by their pins: what `lb flows`,
/// `lb flows clear` and the agent's work off its loop read.
pub struct Tables {
    /// `FLOWS`: assured flows.
    pub flows: HashMap<MapData, FlowKey, Flow>,
    /// `EMBRYOS`: half-open flows. `None` for a datapath pinned by an lb
    /// from before the half-open table, which has none.
    pub embryos: Option<HashMap<MapData, FlowKey, Flow>>,
}

impl Tables {
    /// Opens the pinned tables under `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Tables> {
        Ok(Tables {
            flows: crate::datapath::open_flows(pin_dir)?,
            embryos: crate::datapath::open_embryos(pin_dir)?,
        })
    }

    /// [`count`] over both tables: flows matching `filter`, assured or
    /// half-open. A flow that moves from `EMBRYOS` to `FLOWS` while the
    /// tables are read (`EMBRYOS` first) may be counted in both.
    pub fn count(&self, filter: &Filter, _now: u64) -> Result<usize> {
        count_both(
            &self.flows,
            self.embryos.as_ref(),
            &filter.compile()?,
            &Tuning::default(),
        )
    }

    /// [`list`] over both tables, merged in the same order, half-open flows
    /// marked as such; a flow read in both (it moved meanwhile) is listed
    /// once, as assured.
    pub fn list(&self, filter: &Filter, limit: Option<usize>, now: u64) -> Result<Vec<FlowRow>> {
        list_both(
            &self.flows,
            self.embryos.as_ref(),
            &filter.compile()?,
            limit,
            now,
            &Tuning::default(),
        )
    }

    /// [`clear`] over both tables, `EMBRYOS` first, so that a flow moving
    /// to `FLOWS` meanwhile is found there. Only `FLOWS` flows are counted
    /// out of `ACTIVE` (`uncounted`): half-open flows never counted.
    pub fn clear(&mut self, filter: &Filter, _now: u64) -> Result<Cleared> {
        clear_both(
            &mut self.flows,
            self.embryos.as_mut(),
            &filter.compile()?,
            &Tuning::default(),
        )
    }
}

/// The number of entries `map` was made with (an adopted table keeps the
/// size it was made with, whatever the config says now).
pub fn max_entries(map: &HashMap<MapData, FlowKey, Flow>) -> Option<u32> {
    IterableMap::map(map).info().ok().map(|i| i.max_entries())
}

pub(crate) fn count_both<S: Source>(
    flows: &S,
    embryos: Option<&S>,
    q: &Compiled,
    t: &Tuning,
) -> Result<usize> {
    let half_open = match embryos {
        Some(e) => query::count_in(e, q, t)?,
        None => 0,
    };
    Ok(half_open + query::count_in(flows, q, t)?)
}

pub(crate) fn list_both<S: Source>(
    flows: &S,
    embryos: Option<&S>,
    q: &Compiled,
    limit: Option<usize>,
    now: u64,
    t: &Tuning,
) -> Result<Vec<FlowRow>> {
    let mut half_open = match embryos {
        Some(e) => query::list_in(e, q, limit, now, t)?,
        None => Vec::new(),
    };
    let mut rows = query::list_in(flows, q, limit, now, t)?;
    if half_open.is_empty() {
        return Ok(rows);
    }
    for r in &mut half_open {
        r.half_open = true;
    }
    // Assured rows first: the stable sort keeps them ahead of a half-open
    // row of the same flow, and `dedup_by` keeps the first.
    rows.append(&mut half_open);
    rows.sort_by_cached_key(FlowRow::sort_key);
    rows.dedup_by(|b, a| {
        a.client == b.client && a.vip == b.vip && a.real == b.real && a.protocol == b.protocol
    });
    rows.truncate(limit.unwrap_or(usize::MAX));
    Ok(rows)
}

pub(crate) fn clear_both<S: Sink>(
    flows: &mut S,
    embryos: Option<&mut S>,
    q: &Compiled,
    t: &Tuning,
) -> Result<Cleared> {
    let half_open = match embryos {
        Some(e) => query::clear_in(e, q, t)?.flows,
        None => 0,
    };
    let mut c = query::clear_in(flows, q, t)?;
    c.flows += half_open;
    Ok(c)
}

impl Joined {
    /// The later of the two directions' states (they only move forward).
    pub fn state(&self) -> u8 {
        if self.fwd_key.proto != PROTO_TCP {
            return ST_UDP;
        }
        self.rev
            .as_ref()
            .map_or(self.fwd.state, |(_, r)| r.state.max(self.fwd.state))
    }

    pub fn last_ns(&self) -> u64 {
        self.rev
            .as_ref()
            .map_or(self.fwd.last_ns, |(_, r)| r.last_ns.max(self.fwd.last_ns))
    }

    fn rev_key(&self) -> FlowKey {
        self.fwd_key
            .reverse(self.fwd.nat_addr, self.fwd.nat_port_be)
    }
}

pub fn timeout_for(t: &Timeouts, state: u8) -> Duration {
    match state {
        ST_SYN => t.syn,
        ST_ESTABLISHED => t.established,
        ST_FIN => t.fin,
        ST_CLOSED => t.closed,
        _ => t.udp,
    }
}

/// Which of the datapath's two flow tables a flow lives in (lb-ebpf's
/// flow.rs): a new flow starts half-open in `EMBRYOS` and moves to `FLOWS`
/// once assured (TCP: the client's handshake ACK; UDP: the real's first
/// answer), so that a flood of new flows recycles only `EMBRYOS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `FLOWS`: assured flows, and flows picked up mid-stream. Counted in
    /// `ACTIVE` (`FLOW_COUNTED`).
    Assured,
    /// `EMBRYOS`: half-open flows. Never counted in `ACTIVE`: a forward
    /// entry there carries `FLOW_COUNTED` only for the instant the datapath
    /// copies it into `FLOWS`, and that copy holds the count.
    HalfOpen,
}

/// A half-open flow missing one of its entries is removed only once it is
/// this old (by its creation time, which both entries carry). A younger one
/// may be a flow the datapath was creating while the sweep walked the table
/// (its reverse entry goes in first, its forward one just after), and the
/// datapath's clock may lag the agent's by a few ticks.
pub const HALF_OPEN_GRACE_NS: u64 = 1_000_000_000;

/// What one sweep did.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Flows in `FLOWS` (both directions joined).
    pub flows: usize,
    /// Entries read in `FLOWS`: two per whole flow, one per lone half.
    pub entries: usize,
    /// Half-open flows in `EMBRYOS`.
    pub half_open: usize,
    /// Entries read in `EMBRYOS`.
    pub half_open_entries: usize,
    /// Flows expired, from both tables.
    pub expired: usize,
    /// Flows of removed VIPs removed, from both tables.
    pub removed_vip: usize,
    /// Missing halves of flows in `FLOWS` rebuilt.
    pub repaired: usize,
    /// Half-open flows missing a half, removed rather than rebuilt (see
    /// [`sweep_observed`]).
    pub broken: usize,
    /// The VIP and real ids the flows of both tables name.
    pub vips_in_use: HashSet<u32>,
    pub reals_in_use: HashSet<u32>,
    /// Counted flows (see `FLOW_COUNTED`) this sweep removed, per real id:
    /// the agent adds them to `EXPIRED`. Only ever flows of `FLOWS`.
    pub uncounted: std::collections::HashMap<u32, u64>,
    /// `Unknown::Report`: flows of `FLOWS` of VIP ids the sweep had no
    /// timeouts for and did not know as retired, left in place for the
    /// caller to judge.
    pub unknown: Vec<Joined>,
    /// The same for `EMBRYOS`.
    pub unknown_half_open: Vec<Joined>,
}

impl Sweep {
    /// Adds what a sweep of `EMBRYOS` alone found (its `flows`, `entries`
    /// and `unknown` are the half-open table's).
    fn add_half_open(&mut self, h: Sweep) {
        self.half_open += h.flows;
        self.half_open_entries += h.entries;
        self.expired += h.expired;
        self.removed_vip += h.removed_vip;
        self.broken += h.broken;
        self.vips_in_use.extend(h.vips_in_use);
        self.reals_in_use.extend(h.reals_in_use);
        self.unknown_half_open.extend(h.unknown);
        debug_assert!(h.uncounted.is_empty() && h.repaired == 0);
    }
}

/// Each programmed VIP id's flow timeouts: what a sweep judges flows by.
pub type VipTimeouts = StdMap<u32, Timeouts>;

/// The timeouts of every VIP `ctl` has programmed now.
pub fn vip_timeouts(ctl: &Control) -> VipTimeouts {
    ctl.programmed()
        .vips
        .values()
        .map(|v| (v.id, v.timeouts.clone()))
        .collect()
}

/// What a sweep does with a flow whose VIP id has no timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown<'a> {
    /// The VIP was removed: the flow goes (a sweep on the agent's loop,
    /// where the timeouts are the programmed ones).
    Remove,
    /// A sweep off the loop works from a snapshot, and a reload may have
    /// added the VIP since: only flows of the `retired` ids (VIPs removed
    /// before the snapshot, whose ids are not reused while flows name them)
    /// go; the others are left and reported in `Sweep::unknown`.
    Report { retired: &'a HashSet<u32> },
}

/// Expires idle flows of `FLOWS` by their VIP's per-state timeouts, removes
/// the flows of removed VIPs, and rebuilds a missing half of a live flow.
/// (`FLOWS` alone; the agent sweeps both tables with [`sweep_tables`].)
pub fn sweep(map: &mut HashMap<MapData, FlowKey, Flow>, ctl: &Control, now: u64) -> Result<Sweep> {
    sweep_observed(
        map,
        Kind::Assured,
        &vip_timeouts(ctl),
        Unknown::Remove,
        now,
        &mut |_, _| {},
    )
}

/// [`sweep_observed`] over both tables, `EMBRYOS` (when there is one) first,
/// into one tally. That order matters for the ids in use: a flow only ever
/// moves from `EMBRYOS` to `FLOWS`, so one that moves while the sweep reads
/// is still in `EMBRYOS` when that walk reaches it, or already in `FLOWS`
/// when that walk starts. Either way the sweep sees it, and no retired id a
/// live flow names is released.
pub(crate) fn sweep_tables<S: Store>(
    flows: &mut S,
    embryos: Option<&mut S>,
    vips: &VipTimeouts,
    unknown: Unknown<'_>,
    now: u64,
    seen: &mut dyn FnMut(&Joined, bool),
) -> Result<Sweep> {
    let half_open = match embryos {
        Some(e) => Some(sweep_observed(e, Kind::HalfOpen, vips, unknown, now, seen)?),
        None => None,
    };
    let mut s = sweep_observed(flows, Kind::Assured, vips, unknown, now, seen)?;
    if let Some(h) = half_open {
        s.add_half_open(h);
    }
    Ok(s)
}

/// Sweeps one table (its flows and entries counted in `flows`, `entries`,
/// its unknown flows in `unknown`) by `vips`, telling `seen` about every
/// flow: `(flow, true)` for one it removed, `(flow, false)` for one that
/// stays (HA sync streams both). A flow reported under `Unknown::Report` is
/// not seen.
///
/// Idle flows of both tables expire by their merged state's timeout: a
/// half-open TCP flow is in `syn` (or `closed`, if reset), a half-open UDP
/// flow in `udp`. A flow missing a half is where the tables differ:
/// - `FLOWS`: the half is rebuilt, if the flow is live.
/// - `EMBRYOS`: the flow is removed once it is [`HALF_OPEN_GRACE_NS`] old,
///   and the client's next SYN (or datagram) starts it over. The table only
///   loses halves when it is full, that is under a flood, where rebuilding
///   one would evict another half-open flow's entry and keep a dead flood
///   flow alive at the expense of a live one.
///
/// Only `FLOWS` entries are counted out of `ACTIVE` (see [`Kind::HalfOpen`]).
pub(crate) fn sweep_observed(
    map: &mut impl Store,
    kind: Kind,
    vips: &VipTimeouts,
    unknown: Unknown<'_>,
    now: u64,
    seen: &mut dyn FnMut(&Joined, bool),
) -> Result<Sweep> {
    let table = read_from(map)?;
    let mut s = Sweep {
        flows: table.flows.len(),
        entries: table
            .flows
            .iter()
            .map(|f| 1 + usize::from(f.rev.is_some()))
            .sum::<usize>()
            + table.lone_reverse.len(),
        ..Sweep::default()
    };
    let old = |created_ns: u64| now.saturating_sub(created_ns) > HALF_OPEN_GRACE_NS;
    for f in &table.flows {
        let Some(timeouts) = vips.get(&f.fwd.vip_id) else {
            match unknown {
                Unknown::Report { retired } if !retired.contains(&f.fwd.vip_id) => {
                    s.unknown.push(f.clone());
                }
                _ => {
                    remove_flow(map, kind, f, &mut s);
                    seen(f, true);
                }
            }
            continue;
        };
        let idle = now.saturating_sub(f.last_ns());
        if idle > timeout_for(timeouts, f.state()).as_nanos() as u64 {
            if delete(map, &f.fwd_key, f.rev.as_ref().map(|r| &r.0)) {
                s.expired += 1;
                if kind == Kind::Assured {
                    uncount(&mut s.uncounted, &f.fwd);
                }
            }
            seen(f, true);
            continue;
        }
        if f.rev.is_none() {
            if kind == Kind::HalfOpen {
                if old(f.fwd.created_ns) {
                    if map.remove_key(&f.fwd_key) {
                        s.broken += 1;
                    }
                    seen(f, true);
                    continue;
                }
            } else {
                let rev = Flow {
                    nat_addr: f.fwd_key.dst_addr,
                    nat_port_be: f.fwd_key.dst_port_be,
                    dir: DIR_REVERSE,
                    packets: 0,
                    bytes: 0,
                    seq_next: 0,
                    ..f.fwd
                };
                if map.insert_new(&f.rev_key(), &rev) {
                    s.repaired += 1;
                }
            }
        }
        seen(f, false);
        s.vips_in_use.insert(f.fwd.vip_id);
        s.reals_in_use.insert(f.fwd.real_id);
    }
    for (k, r) in &table.lone_reverse {
        if let Unknown::Report { retired } = unknown
            && !vips.contains_key(&r.vip_id)
            && !retired.contains(&r.vip_id)
        {
            // Judged by the next sweep, which knows whether the VIP is new.
            continue;
        }
        let live = vips.get(&r.vip_id).is_some_and(|t| {
            now.saturating_sub(r.last_ns) <= timeout_for(t, r.state).as_nanos() as u64
        });
        if !live {
            let _ = map.remove_key(k);
            s.expired += 1;
            continue;
        }
        if kind == Kind::HalfOpen {
            if old(r.created_ns) {
                if map.remove_key(k) {
                    s.broken += 1;
                }
                continue;
            }
        } else {
            let fwd_key = FlowKey {
                src_addr: k.dst_addr,
                dst_addr: r.nat_addr,
                src_port_be: k.dst_port_be,
                dst_port_be: r.nat_port_be,
                proto: k.proto,
                _pad: [0; 3],
            };
            let fwd = Flow {
                nat_addr: k.src_addr,
                nat_port_be: k.src_port_be,
                dir: DIR_FORWARD,
                packets: 0,
                bytes: 0,
                seq_next: 0,
                ..*r
            };
            if map.insert_new(&fwd_key, &fwd) {
                s.repaired += 1;
            }
        }
        s.vips_in_use.insert(r.vip_id);
        s.reals_in_use.insert(r.real_id);
    }
    Ok(s)
}

/// Removes both halves of a flow of `kind`'s table whose VIP is gone, as
/// `s` counts it.
pub(crate) fn remove_flow(map: &mut impl Store, kind: Kind, f: &Joined, s: &mut Sweep) {
    if delete(map, &f.fwd_key, f.rev.as_ref().map(|r| &r.0)) {
        s.removed_vip += 1;
        if kind == Kind::Assured {
            uncount(&mut s.uncounted, &f.fwd);
        }
    }
}

/// A removed forward entry that still counted as active on its real.
fn uncount(removed: &mut std::collections::HashMap<u32, u64>, fwd: &Flow) {
    if fwd.flags & FLOW_COUNTED != 0 {
        *removed.entry(fwd.real_id).or_default() += 1;
    }
}

/// What `purge_reals` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purge {
    pub flows: usize,
    pub resets: usize,
    /// Counted flows removed, per real id (for `EXPIRED`).
    pub uncounted: std::collections::HashMap<u32, u64>,
}

/// `purge` for reals that went down: removes their flows and resets their
/// TCP clients now, so an idle client learns within the second instead of at
/// its next packet. The RST carries the server's next sequence number as the
/// reverse entry saw it, which the client accepts.
pub fn purge_reals(
    map: &mut HashMap<MapData, FlowKey, Flow>,
    reals: &HashSet<u32>,
    resets: Option<&crate::reset::ResetSender>,
) -> Result<Purge> {
    let table = read(map)?;
    let mut p = Purge::default();
    for f in table
        .flows
        .iter()
        .filter(|f| reals.contains(&f.fwd.real_id))
    {
        // `reset` builds IPv4 segments only: an IPv6 client learns of the
        // purge at its next packet, from the datapath.
        if f.fwd_key.proto == PROTO_TCP
            && !matches!(f.state(), ST_CLOSED)
            && let (Some(tx), Some((_, rev))) = (resets, f.rev.as_ref())
            && let (SocketAddr::V4(vip), SocketAddr::V4(client)) = (
                sock(&f.fwd_key.dst_addr, f.fwd_key.dst_port_be),
                sock(&f.fwd_key.src_addr, f.fwd_key.src_port_be),
            )
        {
            match tx.send(vip, client, rev.seq_next, f.fwd.seq_next) {
                Ok(()) => p.resets += 1,
                Err(e) => log::warn!("reset to {client}: {e}"),
            }
        }
        if delete(map, &f.fwd_key, f.rev.as_ref().map(|r| &r.0)) {
            uncount(&mut p.uncounted, &f.fwd);
            p.flows += 1;
        }
    }
    for (k, _) in table
        .lone_reverse
        .iter()
        .filter(|(_, r)| reals.contains(&r.real_id))
    {
        let _ = map.remove(k);
    }
    Ok(p)
}

/// Removes a flow's entries, reverse first (as `clear` does: a client
/// packet in between still finds its forward entry and creates nothing).
/// True if this call removed the forward entry: whoever did counts the
/// flow out, once, when a sweep off the agent's loop, a purge or a clear on
/// it, the LRU or the datapath race for the same flow.
fn delete(map: &mut impl Store, fwd: &FlowKey, rev: Option<&FlowKey>) -> bool {
    if let Some(rev) = rev {
        let _ = map.remove_key(rev);
    }
    map.remove_key(fwd)
}

/// The endpoint a map's (address, port) pair names.
pub fn sock(addr: &[u8; 16], port_be: u16) -> SocketAddr {
    SocketAddr::new(from_map_addr(addr), u16::from_be(port_be))
}

impl FlowRow {
    /// `lb flows`' order: VIP, real, client as addresses (IPv4 before
    /// IPv6), then protocol.
    fn sort_key(
        &self,
    ) -> (
        Option<SocketAddr>,
        Option<SocketAddr>,
        Option<SocketAddr>,
        Protocol,
    ) {
        let addr = |s: &str| s.parse::<SocketAddr>().ok();
        (
            addr(&self.vip),
            addr(&self.real),
            addr(&self.client),
            self.protocol,
        )
    }

    pub fn new(f: &Joined, now: u64) -> Self {
        let (packets_out, bytes_out) = f.rev.as_ref().map_or((0, 0), |(_, r)| (r.packets, r.bytes));
        Self {
            client: sock(&f.fwd_key.src_addr, f.fwd_key.src_port_be).to_string(),
            vip: sock(&f.fwd_key.dst_addr, f.fwd_key.dst_port_be).to_string(),
            real: sock(&f.fwd.nat_addr, f.fwd.nat_port_be).to_string(),
            protocol: Protocol::from_datapath(f.fwd_key.proto),
            state: FlowState::from_datapath(f.state()),
            age_ms: now.saturating_sub(f.fwd.created_ns) / 1_000_000,
            idle_ms: now.saturating_sub(f.last_ns()) / 1_000_000,
            packets_in: f.fwd.packets,
            bytes_in: f.fwd.bytes,
            packets_out,
            bytes_out,
            half_open: false,
        }
    }
}

/// `lb flows` filters. Addresses match with or without a port. `count`,
/// `list` and `clear` parse them once ([`Filter::compile`], which refuses
/// what is not an address or a state name) and test raw entries.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub vip: Option<String>,
    pub real: Option<String>,
    pub client: Option<String>,
    pub state: Option<String>,
}

/// `want` (a filter: `ADDR[:PORT]`, `[V6]:PORT`) against `have` (a row's
/// endpoint), both parsed: `2001:db8::1` matches `[2001:db8::1]:443`.
fn addr_matches(want: &str, have: &str) -> bool {
    let have = have.parse::<SocketAddr>().ok();
    match (AddrMatch::parse(want), have) {
        (Some(m), Some(h)) => m.matches(&lb_common::to_map_addr(h.ip()), h.port().to_be()),
        _ => false,
    }
}

impl Filter {
    /// The filter against a finished row (by its strings). Agrees with the
    /// compiled form on every filter that compiles.
    pub fn matches(&self, r: &FlowRow) -> bool {
        self.vip.as_deref().is_none_or(|v| addr_matches(v, &r.vip))
            && self
                .real
                .as_deref()
                .is_none_or(|v| addr_matches(v, &r.real))
            && self
                .client
                .as_deref()
                .is_none_or(|v| addr_matches(v, &r.client))
            && self.state.as_deref().is_none_or(|s| s == r.state.as_str())
    }
}

/// Aligned human table.
pub fn render(rows: &[FlowRow]) -> String {
    let (wc, wv, wr) = (
        endpoint_width(rows.iter().map(|r| r.client.as_str())),
        endpoint_width(rows.iter().map(|r| r.vip.as_str())),
        endpoint_width(rows.iter().map(|r| r.real.as_str())),
    );
    let mut out = format!(
        "{:<wc$} {:<wv$} {:<wr$} {:<5} {:<11} {:>9} {:>9} {:>8} {:>10} {:>8} {:>10}\n",
        "CLIENT",
        "VIP",
        "REAL",
        "PROTO",
        "STATE",
        "AGE",
        "IDLE",
        "PKTS_IN",
        "BYTES_IN",
        "PKTS_OUT",
        "BYTES_OUT"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<wc$} {:<wv$} {:<wr$} {:<5} {:<11} {:>9} {:>9} {:>8} {:>10} {:>8} {:>10}\n",
            r.client,
            r.vip,
            r.real,
            r.protocol.as_str(),
            r.state.as_str(),
            human_ms(r.age_ms),
            human_ms(r.idle_ms),
            r.packets_in,
            r.bytes_in,
            r.packets_out,
            r.bytes_out
        ));
    }
    out
}

/// The width of a table's endpoint column: an IPv4 endpoint's
/// (`255.255.255.255:65535`), or the longest cell's (IPv6 endpoints run to
/// 47), so columns stay aligned and IPv4-only tables look as they did.
pub fn endpoint_width<'a>(cells: impl IntoIterator<Item = &'a str>) -> usize {
    cells.into_iter().map(str::len).fold(21, usize::max)
}

fn human_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

#[cfg(test)]
mod tests;
