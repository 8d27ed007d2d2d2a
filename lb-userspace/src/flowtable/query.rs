//! Streaming queries for `lb flows`: count, list and clear, with the filters
//! applied to raw entries while the table is walked, so memory follows the
//! matches and not the table.
//!
//! A filter on client, VIP or real is decided by either entry of a flow
//! alone: the forward entry is keyed client→VIP and names the real, the
//! reverse entry is keyed real→client and names the VIP. The state is not: a
//! TCP flow's state is the later of its two entries' states. So a query
//! walks the table once keeping
//!
//! - the forward entries that can still match, the *candidates* (a forward
//!   state past the wanted one rules a flow out, see
//!   [`Compiled::by_forward`]), ~60 bytes each plus what the query shows;
//! - the reverse entries that match the addresses and can matter (for a
//!   count, only those at or past the wanted state: an earlier one changes
//!   nothing), 88 bytes each, but only while they number at most twice the
//!   candidates (or [`KEEP_MIN`]): past that they are dropped.
//!
//! and then joins each candidate with its reverse entry: from the kept ones
//! when they were all kept (one walk), else by one lookup per candidate when
//! the candidates are few next to the table (fewer than one per
//! [`LOOKUP_RATIO`] entries walked), else by a second batched walk. The
//! join goes through a 16-byte (hash → candidate) index, not a map of keys.
//!
//! So memory is bounded by the candidates, never by the whole table, also
//! for `--state syn` over a million established flows (whose reverse halves
//! overflow the budget and are dropped, the few candidates then joined by
//! lookups).
use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap as StdMap, hash_map::Entry},
    hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState},
    net::SocketAddr,
};

use anyhow::{Result, bail};
use aya::maps::{HashMap, MapData, MapError};
use lb_common::{
    DIR_FORWARD, DIR_REVERSE, FLOW_COUNTED, Flow, FlowKey, PROTO_TCP, ST_UDP, to_map_addr,
};

use super::{Filter, batch, sock};
use crate::{
    api::{FlowRow, FlowState},
    config::Protocol,
};

/// Join by lookups while candidates × this ≤ entries walked. One lookup is a
/// syscall, 1.25 µs here; the batched walk costs 0.36 µs an entry (tests'
/// flowscale prints both), so below one candidate in 4 entries the lookups
/// are cheaper.
pub const LOOKUP_RATIO: usize = 4;

/// Reverse entries the first walk keeps whatever the candidates (×88 bytes:
/// 5.5 MiB).
pub const KEEP_MIN: usize = 65_536;

/// The thresholds above, as the queries take them (tests pick others to
/// force each way of joining).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    pub keep_min: usize,
    /// Keep reverse entries while they number at most this many per
    /// candidate.
    pub keep_per_candidate: usize,
    pub lookup_ratio: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            keep_min: KEEP_MIN,
            keep_per_candidate: 2,
            lookup_ratio: LOOKUP_RATIO,
        }
    }
}

/// The table as the queries see it: the kernel map, or a plain map in tests.
pub(crate) trait Source {
    /// Every entry once.
    fn scan(&self, f: &mut dyn FnMut(&FlowKey, &Flow)) -> Result<()>;
    fn get(&self, key: &FlowKey) -> Result<Option<Flow>>;
}

pub(crate) trait Sink: Source {
    /// Removes `keys`, reporting the index of each one that was not there.
    fn remove_keys(&mut self, keys: &[FlowKey], missing: &mut dyn FnMut(usize)) -> Result<usize>;
}

/// A table the sweep reads and writes entry by entry.
pub(crate) trait Store: Source {
    /// Removes `key`; whether it was there.
    fn remove_key(&mut self, key: &FlowKey) -> bool;
    /// Inserts `key` unless it is there (`BPF_NOEXIST`: never over an entry
    /// the datapath just made); whether it did.
    fn insert_new(&mut self, key: &FlowKey, value: &Flow) -> bool;
}

impl Store for HashMap<MapData, FlowKey, Flow> {
    fn remove_key(&mut self, key: &FlowKey) -> bool {
        HashMap::remove(self, key).is_ok()
    }

    fn insert_new(&mut self, key: &FlowKey, value: &Flow) -> bool {
        HashMap::insert(self, key, value, super::BPF_NOEXIST).is_ok()
    }
}

impl Source for HashMap<MapData, FlowKey, Flow> {
    fn scan(&self, f: &mut dyn FnMut(&FlowKey, &Flow)) -> Result<()> {
        batch::for_each(self, f)
    }

    fn get(&self, key: &FlowKey) -> Result<Option<Flow>> {
        match HashMap::get(self, key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl Sink for HashMap<MapData, FlowKey, Flow> {
    fn remove_keys(&mut self, keys: &[FlowKey], missing: &mut dyn FnMut(usize)) -> Result<usize> {
        batch::remove_batch_with(self, keys, missing)
    }
}

/// An address filter: `ADDR` or `ADDR:PORT`, IPv6 as `2001:db8::1` or
/// `[2001:db8::1]:443` (see [`crate::endpoint::parse`]), parsed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrMatch {
    /// As the maps store it (`lb_common::to_map_addr`).
    pub addr: [u8; 16],
    pub port_be: Option<u16>,
}

impl AddrMatch {
    pub fn parse(s: &str) -> Option<Self> {
        let (ip, port) = crate::endpoint::parse(s)?;
        Some(Self {
            addr: to_map_addr(ip),
            port_be: port.map(u16::to_be),
        })
    }

    pub fn matches(&self, addr: &[u8; 16], port_be: u16) -> bool {
        self.addr == *addr && self.port_be.is_none_or(|p| p == port_be)
    }
}

/// The state names `lb flows --state` takes.
pub fn parse_state(s: &str) -> Option<u8> {
    FlowState::KNOWN
        .into_iter()
        .find(|st| st.as_str() == s)
        .map(FlowState::datapath)
}

/// A [`Filter`] parsed once, tested against raw entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    pub vip: Option<AddrMatch>,
    pub real: Option<AddrMatch>,
    pub client: Option<AddrMatch>,
    pub state: Option<u8>,
}

/// What a flow's forward entry alone says about the filter's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Yes,
    No,
    /// Depends on the reverse entry's state.
    Join,
}

impl Filter {
    /// Parses the filter; an address or state that cannot match anything is
    /// an error naming it rather than an empty answer.
    pub fn compile(&self) -> Result<Compiled> {
        let addr = |what: &str, v: &Option<String>| -> Result<Option<AddrMatch>> {
            match v.as_deref() {
                None => Ok(None),
                Some(s) => match AddrMatch::parse(s) {
                    Some(m) => Ok(Some(m)),
                    None => bail!(
                        "--{what} {s}: not an address (ADDR or ADDR:PORT, IPv6 with a port as [ADDR]:PORT)"
                    ),
                },
            }
        };
        let state = match self.state.as_deref() {
            None => None,
            Some(s) => match parse_state(s) {
                Some(st) => Some(st),
                None => bail!("--state {s}: not a state (syn, established, fin, closed or udp)"),
            },
        };
        Ok(Compiled {
            vip: addr("vip", &self.vip)?,
            real: addr("real", &self.real)?,
            client: addr("client", &self.client)?,
            state,
        })
    }
}

fn opt_match(m: &Option<AddrMatch>, addr: &[u8; 16], port_be: u16) -> bool {
    m.as_ref().is_none_or(|m| m.matches(addr, port_be))
}

impl Compiled {
    /// The address filters against a forward entry: client→VIP keyed, the
    /// real in the value.
    pub fn forward_matches(&self, k: &FlowKey, v: &Flow) -> bool {
        opt_match(&self.client, &k.src_addr, k.src_port_be)
            && opt_match(&self.vip, &k.dst_addr, k.dst_port_be)
            && opt_match(&self.real, &v.nat_addr, v.nat_port_be)
    }

    /// The address filters against a reverse entry: real→client keyed, the
    /// VIP in the value.
    pub fn reverse_matches(&self, k: &FlowKey, v: &Flow) -> bool {
        opt_match(&self.real, &k.src_addr, k.src_port_be)
            && opt_match(&self.client, &k.dst_addr, k.dst_port_be)
            && opt_match(&self.vip, &v.nat_addr, v.nat_port_be)
    }

    /// Whether a reverse entry can change the answer for its flow. `shows`:
    /// the query shows or removes the reverse entry, not just its state.
    /// Without that, a reverse state earlier than the wanted one counts as
    /// much as a missing reverse entry: the forward's state decides.
    pub(crate) fn reverse_counts(&self, k: &FlowKey, v: &Flow, shows: bool) -> bool {
        if !self.reverse_matches(k, v) {
            return false;
        }
        match self.state {
            None => shows,
            Some(want) if k.proto != PROTO_TCP => shows && want == ST_UDP,
            Some(want) => want != ST_UDP && (shows || v.state >= want),
        }
    }

    /// The state filter given the forward entry's protocol and state. A
    /// flow's state is the later of its entries' (see
    /// [`super::Joined::state`]), so a forward state past the wanted one
    /// rules the flow out, and an earlier or equal one needs the reverse.
    /// UDP flows are always `udp`; TCP entries only ever hold `syn` to
    /// `closed` (lb-ebpf's `next_state`), so `udp` never matches TCP.
    pub(crate) fn by_forward(&self, proto: u8, fwd_state: u8) -> Verdict {
        let Some(want) = self.state else {
            return Verdict::Yes;
        };
        if proto != PROTO_TCP {
            return if want == ST_UDP {
                Verdict::Yes
            } else {
                Verdict::No
            };
        }
        if want == ST_UDP || fwd_state > want {
            Verdict::No
        } else {
            Verdict::Join
        }
    }
}

/// What a query needs of a reverse entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rev {
    nat_addr: [u8; 16],
    nat_port_be: u16,
    dir: u8,
    state: u8,
    last_ns: u64,
    packets: u64,
    bytes: u64,
}

impl From<&Flow> for Rev {
    fn from(f: &Flow) -> Self {
        Self {
            nat_addr: f.nat_addr,
            nat_port_be: f.nat_port_be,
            dir: f.dir,
            state: f.state,
            last_ns: f.last_ns,
            packets: f.packets,
            bytes: f.bytes,
        }
    }
}

/// What a query keeps of a forward entry besides the join fields.
pub(crate) trait Extra {
    fn from_forward(f: &Flow) -> Self;
    fn join(&mut self, _rev: &Rev) {}
}

impl Extra for () {
    fn from_forward(_: &Flow) -> Self {}
}

/// `list`: what a row shows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stats {
    created_ns: u64,
    last_ns: u64,
    packets_in: u64,
    bytes_in: u64,
    packets_out: u64,
    bytes_out: u64,
}

impl Extra for Stats {
    fn from_forward(f: &Flow) -> Self {
        Self {
            created_ns: f.created_ns,
            last_ns: f.last_ns,
            packets_in: f.packets,
            bytes_in: f.bytes,
            packets_out: 0,
            bytes_out: 0,
        }
    }

    fn join(&mut self, rev: &Rev) {
        self.last_ns = self.last_ns.max(rev.last_ns);
        self.packets_out = rev.packets;
        self.bytes_out = rev.bytes;
    }
}

/// `clear`: what the least-conn bookkeeping needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    real_id: u32,
    counted: bool,
}

impl Extra for Meta {
    fn from_forward(f: &Flow) -> Self {
        Self {
            real_id: f.real_id,
            counted: f.flags & FLOW_COUNTED != 0,
        }
    }
}

/// A forward entry that may match, and what its reverse added.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cand<T> {
    fwd_key: FlowKey,
    real_addr: [u8; 16],
    real_port_be: u16,
    /// The flow's state so far: the forward's (`udp` for UDP), then the
    /// later of both.
    state: u8,
    has_rev: bool,
    extra: T,
}

impl<T: Extra> Cand<T> {
    fn new(k: &FlowKey, f: &Flow) -> Self {
        Self {
            fwd_key: *k,
            real_addr: f.nat_addr,
            real_port_be: f.nat_port_be,
            state: if k.proto == PROTO_TCP {
                f.state
            } else {
                ST_UDP
            },
            has_rev: false,
            extra: T::from_forward(f),
        }
    }

    /// Where the datapath keeps this flow's reverse entry.
    fn rev_key(&self) -> FlowKey {
        self.fwd_key.reverse(self.real_addr, self.real_port_be)
    }

    /// Joins `rev` if it is this flow's reverse entry: found at our
    /// reverse key and translating back to our VIP. (Two flows of one client
    /// port to two VIP ports on the same real share the key; the VIP tells
    /// whose it is.)
    fn join(&mut self, rev: &Rev) {
        if self.has_rev
            || rev.dir != DIR_REVERSE
            || rev.nat_addr != self.fwd_key.dst_addr
            || rev.nat_port_be != self.fwd_key.dst_port_be
        {
            return;
        }
        self.has_rev = true;
        if self.fwd_key.proto == PROTO_TCP {
            self.state = self.state.max(rev.state);
        }
        self.extra.join(rev);
    }

    /// (vip, real, client): the order `lb flows` prints, protocol last.
    fn sort_key(&self) -> (SocketAddr, SocketAddr, SocketAddr, u8) {
        (
            sock(&self.fwd_key.dst_addr, self.fwd_key.dst_port_be),
            sock(&self.real_addr, self.real_port_be),
            sock(&self.fwd_key.src_addr, self.fwd_key.src_port_be),
            self.fwd_key.proto,
        )
    }
}

impl Cand<Stats> {
    fn row(&self, now: u64) -> FlowRow {
        let s = &self.extra;
        FlowRow {
            client: sock(&self.fwd_key.src_addr, self.fwd_key.src_port_be).to_string(),
            vip: sock(&self.fwd_key.dst_addr, self.fwd_key.dst_port_be).to_string(),
            real: sock(&self.real_addr, self.real_port_be).to_string(),
            protocol: Protocol::from_datapath(self.fwd_key.proto),
            state: FlowState::from_datapath(self.state),
            age_ms: now.saturating_sub(s.created_ns) / 1_000_000,
            idle_ms: now.saturating_sub(s.last_ns) / 1_000_000,
            packets_in: s.packets_in,
            bytes_in: s.bytes_in,
            packets_out: s.packets_out,
            bytes_out: s.bytes_out,
            half_open: false,
        }
    }
}

/// A hash that is already one (the index keys are SipHash outputs).
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The reverse entries a first walk keeps, while they stay few.
pub(crate) struct Kept {
    kept: Option<Vec<(FlowKey, Rev)>>,
    t: Tuning,
}

impl Kept {
    fn new(t: &Tuning) -> Self {
        Self {
            kept: Some(Vec::new()),
            t: *t,
        }
    }

    fn offer(&mut self, k: &FlowKey, v: &Flow, candidates: usize) {
        if let Some(kept) = &mut self.kept {
            kept.push((*k, v.into()));
            let most = self
                .t
                .keep_min
                .max(self.t.keep_per_candidate.saturating_mul(candidates));
            if kept.len() > most {
                self.kept = None;
            }
        }
    }
}

/// Joins each candidate with its reverse entry (see the module comment).
/// `walked`: entries the first walk saw.
pub(crate) fn resolve<T: Extra>(
    src: &impl Source,
    cands: &mut [Cand<T>],
    walked: usize,
    kept: Kept,
) -> Result<()> {
    if cands.is_empty() {
        return Ok(());
    }
    let lookup_ratio = kept.t.lookup_ratio;
    if let Some(kept) = kept.kept {
        return join_from(cands, |f| {
            kept.iter().for_each(|(k, r)| f(k, r));
            Ok(())
        });
    }
    if cands.len().saturating_mul(lookup_ratio) <= walked {
        for c in cands.iter_mut() {
            if let Some(rev) = src.get(&c.rev_key())? {
                c.join(&Rev::from(&rev));
            }
        }
        return Ok(());
    }
    join_from(cands, |f| {
        src.scan(&mut |k, v| {
            if v.dir == DIR_REVERSE {
                f(k, &Rev::from(v));
            }
        })
    })
}

/// Offers every reverse entry `feed` yields to the candidate(s) at its key.
fn join_from<T: Extra>(
    cands: &mut [Cand<T>],
    feed: impl FnOnce(&mut dyn FnMut(&FlowKey, &Rev)) -> Result<()>,
) -> Result<()> {
    // Keyed by a 64-bit hash of the reverse key (randomly seeded, so crafted
    // client ports cannot pile up one slot); candidates whose hash is taken
    // (those sharing a reverse key, or a rare collision) go in a map by key.
    let seed = RandomState::new();
    let mut index: StdMap<u64, u32, BuildHasherDefault<Prehashed>> =
        StdMap::with_capacity_and_hasher(cands.len(), Default::default());
    let mut more: StdMap<FlowKey, Vec<u32>> = StdMap::new();
    for (i, c) in cands.iter().enumerate() {
        match index.entry(seed.hash_one(c.rev_key())) {
            Entry::Vacant(e) => {
                e.insert(i as u32);
            }
            Entry::Occupied(_) => more.entry(c.rev_key()).or_default().push(i as u32),
        }
    }
    feed(&mut |k, r| {
        if let Some(&i) = index.get(&seed.hash_one(k)) {
            let c = &mut cands[i as usize];
            if c.rev_key() == *k {
                c.join(r);
            }
        }
        if !more.is_empty()
            && let Some(is) = more.get(k)
        {
            for &i in is {
                cands[i as usize].join(r);
            }
        }
    })
}

/// Matching flows: see [`super::count`].
pub(crate) fn count_in(src: &impl Source, q: &Compiled, t: &Tuning) -> Result<usize> {
    let mut n = 0;
    let mut walked = 0;
    let mut cands: Vec<Cand<()>> = Vec::new();
    let mut kept = Kept::new(t);
    src.scan(&mut |k, v| {
        walked += 1;
        match v.dir {
            DIR_FORWARD if q.forward_matches(k, v) => match q.by_forward(k.proto, v.state) {
                Verdict::Yes => n += 1,
                Verdict::No => {}
                Verdict::Join => cands.push(Cand::new(k, v)),
            },
            DIR_REVERSE if q.state.is_some() && q.reverse_counts(k, v, false) => {
                kept.offer(k, v, cands.len())
            }
            _ => {}
        }
    })?;
    resolve(src, &mut cands, walked, kept)?;
    Ok(n + cands.iter().filter(|c| Some(c.state) == q.state).count())
}

/// Max-heap order by row order, for keeping the first `limit` rows.
struct ByRow(Cand<Stats>);

impl PartialEq for ByRow {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ByRow {}

impl PartialOrd for ByRow {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByRow {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.sort_key().cmp(&other.0.sort_key())
    }
}

/// Matching flows as rows: see [`super::list`].
pub(crate) fn list_in(
    src: &impl Source,
    q: &Compiled,
    limit: Option<usize>,
    now: u64,
    t: &Tuning,
) -> Result<Vec<FlowRow>> {
    let limit = limit.unwrap_or(usize::MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut walked = 0;
    let mut cands: Vec<Cand<Stats>> = Vec::new();
    // Without a state filter every candidate is a match, so only the first
    // `limit` in row order need keeping (and joining).
    let mut first: Option<BinaryHeap<ByRow>> =
        (q.state.is_none() && limit != usize::MAX).then(BinaryHeap::new);
    let mut kept = Kept::new(t);
    src.scan(&mut |k, v| {
        walked += 1;
        if v.dir == DIR_REVERSE && q.reverse_counts(k, v, true) {
            let candidates = first.as_ref().map_or(cands.len(), |h| h.len());
            kept.offer(k, v, candidates);
        }
        if v.dir != DIR_FORWARD
            || !q.forward_matches(k, v)
            || q.by_forward(k.proto, v.state) == Verdict::No
        {
            return;
        }
        let c = Cand::new(k, v);
        match first.as_mut() {
            Some(heap) => {
                if heap.len() < limit {
                    heap.push(ByRow(c));
                } else if heap
                    .peek()
                    .is_some_and(|top| c.sort_key() < top.0.sort_key())
                {
                    heap.pop();
                    heap.push(ByRow(c));
                }
            }
            None => cands.push(c),
        }
    })?;
    if let Some(heap) = first {
        cands = heap.into_iter().map(|c| c.0).collect();
    }
    resolve(src, &mut cands, walked, kept)?;
    if let Some(want) = q.state {
        cands.retain(|c| c.state == want);
    }
    if cands.len() > limit {
        cands.select_nth_unstable_by_key(limit, |c| c.sort_key());
        cands.truncate(limit);
    }
    cands.sort_unstable_by_key(|c| c.sort_key());
    Ok(cands.iter().map(|c| c.row(now)).collect())
}

/// What `clear` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Flows removed (forward entries; their reverse entries went too).
    pub flows: usize,
    /// Removed flows still counted active (see `FLOW_COUNTED`), per real id:
    /// the agent adds them to `EXPIRED`.
    pub uncounted: std::collections::HashMap<u32, u64>,
}

/// Removes matching flows: see [`super::clear`].
pub(crate) fn clear_in(src: &mut impl Sink, q: &Compiled, t: &Tuning) -> Result<Cleared> {
    let mut fwd_keys: Vec<FlowKey> = Vec::new();
    let mut metas: Vec<Meta> = Vec::new();
    let mut rev_keys: Vec<FlowKey> = Vec::new();
    match q.state {
        // Addresses alone: each entry says by itself whether it belongs to a
        // matching flow (a reverse entry names real, client and VIP too), so
        // one walk finds both halves, orphaned reverse halves included.
        None => src.scan(&mut |k, v| match v.dir {
            DIR_FORWARD if q.forward_matches(k, v) => {
                fwd_keys.push(*k);
                metas.push(Meta::from_forward(v));
            }
            DIR_REVERSE if q.reverse_matches(k, v) => rev_keys.push(*k),
            _ => {}
        })?,
        Some(want) => {
            let mut walked = 0;
            let mut cands: Vec<Cand<Meta>> = Vec::new();
            let mut kept = Kept::new(t);
            src.scan(&mut |k, v| {
                walked += 1;
                if v.dir == DIR_REVERSE && q.reverse_counts(k, v, true) {
                    kept.offer(k, v, cands.len());
                }
                if v.dir != DIR_FORWARD || !q.forward_matches(k, v) {
                    return;
                }
                match q.by_forward(k.proto, v.state) {
                    Verdict::No => {}
                    // UDP: no join needed; its reverse goes by key (it may
                    // be gone already, which is fine).
                    Verdict::Yes => {
                        let c = Cand::<Meta>::new(k, v);
                        rev_keys.push(c.rev_key());
                        fwd_keys.push(*k);
                        metas.push(c.extra);
                    }
                    Verdict::Join => cands.push(Cand::new(k, v)),
                }
            })?;
            resolve(src, &mut cands, walked, kept)?;
            for c in cands.iter().filter(|c| c.state == want) {
                if c.has_rev {
                    rev_keys.push(c.rev_key());
                }
                fwd_keys.push(c.fwd_key);
                metas.push(c.extra);
            }
        }
    }
    // Reverse entries first: a flow's client packet arriving in between still
    // finds its forward entry and creates nothing, so no new flow's reverse
    // entry can be created and then removed here.
    src.remove_keys(&rev_keys, &mut |_| {})?;
    drop(rev_keys);
    let mut gone = Vec::new();
    let flows = src.remove_keys(&fwd_keys, &mut |i| gone.push(i))?;
    // Removed meanwhile by someone else, who did the bookkeeping.
    for i in gone {
        metas[i].counted = false;
    }
    let mut uncounted = std::collections::HashMap::new();
    for m in metas.iter().filter(|m| m.counted) {
        *uncounted.entry(m.real_id).or_default() += 1;
    }
    Ok(Cleared { flows, uncounted })
}

#[cfg(test)]
pub(crate) mod mem {
    //! An in-memory table for the queries' unit tests.
    use std::{cell::Cell, collections::HashMap as StdMap};

    use anyhow::Result;
    use lb_common::{Flow, FlowKey};

    use super::{Sink, Source, Store};

    #[derive(Default)]
    pub struct Mem {
        pub map: StdMap<FlowKey, Flow>,
        pub scans: Cell<usize>,
        pub gets: Cell<usize>,
    }

    impl Source for Mem {
        fn scan(&self, f: &mut dyn FnMut(&FlowKey, &Flow)) -> Result<()> {
            self.scans.set(self.scans.get() + 1);
            self.map.iter().for_each(|(k, v)| f(k, v));
            Ok(())
        }

        fn get(&self, key: &FlowKey) -> Result<Option<Flow>> {
            self.gets.set(self.gets.get() + 1);
            Ok(self.map.get(key).copied())
        }
    }

    impl Store for Mem {
        fn remove_key(&mut self, key: &FlowKey) -> bool {
            self.map.remove(key).is_some()
        }

        fn insert_new(&mut self, key: &FlowKey, value: &Flow) -> bool {
            if self.map.contains_key(key) {
                return false;
            }
            self.map.insert(*key, *value);
            true
        }
    }

    impl Sink for Mem {
        fn remove_keys(
            &mut self,
            keys: &[FlowKey],
            missing: &mut dyn FnMut(usize),
        ) -> Result<usize> {
            let mut n = 0;
            for (i, k) in keys.iter().enumerate() {
                if self.map.remove(k).is_some() {
                    n += 1;
                } else {
                    missing(i);
                }
            }
            Ok(n)
        }
    }
}
