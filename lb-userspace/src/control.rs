//! Turns a config into map contents and writes only what changed.
//!
//! Everything here is pure logic over the [`MapWriter`] trait, so reloads,
//! id allocation and schedules are unit tested without a kernel (the kernel
//! writer lives in `datapath.rs`, an in-memory one in the tests below).
//!
//! Ids are stable across reloads: a VIP keeps its id by name, a real by
//! (farm, address, port). A removed real or VIP is *retired*, not freed: its
//! flows may still be running (a reload never drops a flow of a real that was
//! only removed), and its id returns to the pool once the flow sweep sees no
//! flow using it.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use lb_common::{
    ALG_LEAST_CONN, ALG_ROUND_ROBIN, ALG_WEIGHTED_ROUND_ROBIN, FAIL_NONE, FAIL_PURGE,
    FAIL_REASSIGN, Farm, MAGLEV_SLOTS, MAX_FARMS, MAX_REALS, MAX_VIPS, PROTO_TCP, PROTO_UDP,
    REAL_DISABLED, REAL_DOWN, REAL_DRAIN, REAL_UP, Real, ReplyNat, VIP_NO_REAL_DROP, VIP_STICKY,
    VIP_STICKY_PREFIX_SHIFT, VipInfo, VipKey, from_map_addr, to_map_addr,
};

use crate::{
    config::{AdminState, Config, FailAction, InitState, NoReal, Protocol, Timeouts},
    maglev, sched,
};

/// Where the control plane writes. One method per kind of change.
pub trait MapWriter {
    fn set_real(&mut self, id: u32, real: &Real) -> Result<()>;
    fn set_farm(&mut self, id: u32, farm: &Farm) -> Result<()>;
    /// Writes the schedule's slots; the farm's `sched_len` says how many count.
    fn set_sched(&mut self, farm_id: u32, slots: &[u32]) -> Result<()>;
    /// Writes a hashing farm's lookup ring at `offset` in `MAGLEV`.
    fn set_ring(&mut self, offset: u32, slots: &[u32]) -> Result<()>;
    fn put_vip(&mut self, key: &VipKey, info: &VipInfo) -> Result<()>;
    fn del_vip(&mut self, key: &VipKey) -> Result<()>;
    fn put_vip_addr(&mut self, addr: &[u8; 16], vips: u32) -> Result<()>;
    fn del_vip_addr(&mut self, addr: &[u8; 16]) -> Result<()>;
    /// `REPLY_NAT`: a real endpoint (as a `VipKey`) and its one VIP.
    fn put_reply_nat(&mut self, real: &VipKey, nat: &ReplyNat) -> Result<()>;
    fn del_reply_nat(&mut self, real: &VipKey) -> Result<()>;
}

/// A real's identity across reloads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealKey {
    pub farm: String,
    pub addr: IpAddr,
    pub port: u16,
}

impl RealKey {
    /// `addr:port`, `[addr]:port` for IPv6: how lb names the real.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

/// A VIP as programmed.
#[derive(Clone, Debug, PartialEq)]
pub struct VipEntry {
    pub name: String,
    pub id: u32,
    pub addr: SocketAddr,
    pub proto: u8,
    pub farm: String,
    pub farm_id: u32,
    pub timeouts: Timeouts,
    /// Source-IP persistence timeout, when the VIP is sticky.
    pub sticky_secs: Option<u32>,
    /// `sticky.ipv6_prefix`: the client-address bits a sticky entry keys
    /// on (`VipInfo::flags`, `lb_common::VIP_STICKY_PREFIX_SHIFT`).
    pub sticky_prefix: Option<u8>,
    /// `no_real: drop` (`VIP_NO_REAL_DROP`).
    pub no_real_drop: bool,
}

impl VipEntry {
    pub fn key(&self) -> VipKey {
        VipKey {
            addr: to_map_addr(self.addr.ip()),
            port_be: self.addr.port().to_be(),
            proto: self.proto,
            _pad: 0,
        }
    }

    fn info(&self) -> VipInfo {
        VipInfo {
            vip_id: self.id,
            farm_id: self.farm_id,
            flags: match (self.sticky_secs, self.sticky_prefix) {
                // 128 is the whole address, which 0 stands for.
                (Some(_), Some(p)) if p < 128 => VIP_STICKY | (p as u32) << VIP_STICKY_PREFIX_SHIFT,
                (Some(_), _) => VIP_STICKY,
                (None, _) => 0,
            } | if self.no_real_drop {
                VIP_NO_REAL_DROP
            } else {
                0
            },
            sticky_secs: self.sticky_secs.unwrap_or(0),
        }
    }
}

/// A farm as programmed: its map value and schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct FarmEntry {
    pub id: u32,
    pub value: Farm,
    pub sched: Vec<u32>,
    /// Hashing farms: the lookup ring (real ids), written at `value.ring`.
    pub ring: Vec<u32>,
}

/// Everything the datapath holds for one config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Programmed {
    pub vips: BTreeMap<String, VipEntry>,
    pub farms: BTreeMap<String, FarmEntry>,
    pub reals: BTreeMap<RealKey, (u32, Real)>,
    /// A cluster's stateless reply translations (lb-ebpf's reply.rs);
    /// empty outside a cluster.
    pub reply_nat: HashMap<VipKey, ReplyNat>,
}

impl Programmed {
    /// The reals of `farm`: a range of `reals`, which sort by farm first, so
    /// that a view of every VIP costs their reals, not VIPs times reals.
    pub fn farm_reals<'a>(
        &'a self,
        farm: &'a str,
    ) -> impl Iterator<Item = (&'a RealKey, &'a (u32, Real))> + 'a {
        let first = RealKey {
            farm: farm.to_string(),
            addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port: 0,
        };
        self.reals
            .range(first..)
            .take_while(move |(k, _)| k.farm == farm)
    }

    /// How many reals of `farm` are up, and how many it has.
    pub fn farm_up(&self, farm: &str) -> (usize, usize) {
        self.farm_reals(farm)
            .fold((0, 0), |(up, all), (_, (_, r))| {
                (up + usize::from(r.state == REAL_UP), all + 1)
            })
    }
}

#[derive(Clone, Debug)]
struct IdPool {
    next: u32,
    max: u32,
    free: BTreeSet<u32>,
}

impl IdPool {
    fn new(max: u32) -> Self {
        Self {
            next: 0,
            max,
            free: BTreeSet::new(),
        }
    }

    fn alloc(&mut self, what: &str) -> Result<u32> {
        if let Some(id) = self.free.pop_first() {
            return Ok(id);
        }
        if self.next >= self.max {
            bail!("too many {what}: the datapath holds {}", self.max);
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    fn release(&mut self, id: u32) {
        self.free.insert(id);
    }
}

#[derive(Clone, Debug)]
struct Pools {
    vips: IdPool,
    farms: IdPool,
    reals: IdPool,
    rings: Rings,
}

/// Free space of the `MAGLEV` array, first fit. A rebuilt ring goes to fresh
/// space and the farm is switched to it in one write; the old space is freed
/// after the switch, so no packet ever reads a half-written ring.
#[derive(Clone, Debug)]
struct Rings {
    /// (offset, length), sorted by offset, coalesced.
    free: Vec<(u32, u32)>,
}

impl Rings {
    fn new() -> Self {
        Self {
            free: vec![(0, MAGLEV_SLOTS)],
        }
    }

    fn alloc(&mut self, len: u32) -> Result<u32> {
        let Some(i) = self.free.iter().position(|&(_, l)| l >= len) else {
            bail!("no room for a ring of {len} slots: hashing farms share {MAGLEV_SLOTS} slots");
        };
        let (off, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (off + len, l - len);
        }
        Ok(off)
    }

    fn release(&mut self, off: u32, len: u32) {
        if len == 0 {
            return;
        }
        let i = self.free.partition_point(|&(o, _)| o < off);
        self.free.insert(i, (off, len));
        // Merge with the neighbours.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

/// A ring's place: `offset << 32 | length`.
pub fn ring_word(offset: u32, len: u32) -> u64 {
    (offset as u64) << 32 | len as u64
}

fn ring_at(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// What the agent knows at run time beyond the config: health verdicts,
/// operators' `lb real` commands, and when reals came up (slow start).
#[derive(Debug, Default, Clone)]
pub struct Overlay {
    /// Probe and passive-health verdicts; a real not in here has its farm's
    /// `init_state` (down when the farm has probes) or is up.
    pub health: HashMap<RealKey, bool>,
    /// `lb real enable|disable|drain`, over the config's `state:`; kept
    /// across reloads while the real exists.
    pub admin: HashMap<RealKey, AdminState>,
    /// When a real last came up, for `slow_start`.
    pub up_since: HashMap<RealKey, Instant>,
}

impl Overlay {
    /// A real's health: its last verdict, else where its farm starts it
    /// (down until its first verdict when the farm has probes, unless
    /// `init_state: up`).
    pub fn healthy(&self, key: &RealKey, farm: &crate::config::Farm) -> bool {
        self.health
            .get(key)
            .copied()
            .unwrap_or(farm.probes.is_empty() || farm.init_state == InitState::Up)
    }
}

/// What the kernel maps hold, read back by an agent that adopts a previous
/// agent's pinned maps (see `Control::adopt`).
#[derive(Debug, Default, Clone)]
pub struct Adopted {
    pub vips: Vec<(VipKey, VipInfo)>,
    pub reply_nat: Vec<(VipKey, ReplyNat)>,
    pub reals: Vec<(u32, Real)>,
    /// Farm id, value, and its ring's content (empty for non-hashing farms).
    pub farms: Vec<(u32, Farm, Vec<u32>)>,
}

/// The control plane's memory of what it programmed.
#[derive(Debug)]
pub struct Control {
    pools: Pools,
    current: Programmed,
    retired_reals: BTreeMap<u32, RealKey>,
    retired_vips: BTreeSet<u32>,
    cfg: Option<Config>,
    overlay: Overlay,
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

/// What a reload changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub vips_added: Vec<String>,
    pub vips_removed: Vec<String>,
    pub reals_added: usize,
    pub reals_removed: usize,
    pub writes: usize,
}

impl Control {
    pub fn new() -> Self {
        Self {
            pools: Pools {
                vips: IdPool::new(MAX_VIPS),
                farms: IdPool::new(MAX_FARMS),
                reals: IdPool::new(MAX_REALS),
                rings: Rings::new(),
            },
            current: Programmed::default(),
            retired_reals: BTreeMap::new(),
            retired_vips: BTreeSet::new(),
            cfg: None,
            overlay: Overlay::default(),
        }
    }

    /// A control plane that takes over what a previous agent programmed (the
    /// maps were adopted from their pins): the ids, health and admin states
    /// are read back from the maps, so flows keep pointing at the right reals
    /// and nothing that was up goes down. Entries the config no longer names
    /// are kept under placeholder names; the next `apply` removes or retires
    /// them as for any reload.
    pub fn adopt(cfg: &Config, a: &Adopted) -> Control {
        let mut c = Control::new();
        c.current.reply_nat = a.reply_nat.iter().copied().collect();
        // Farm id -> name, through the VIPs that use them.
        let mut farm_names: HashMap<u32, String> = HashMap::new();
        for (key, info) in &a.vips {
            let found = cfg.vips.iter().find(|(_, v)| {
                let proto = if v.protocol == Protocol::Udp {
                    PROTO_UDP
                } else {
                    PROTO_TCP
                };
                to_map_addr(v.address) == key.addr
                    && v.port.to_be() == key.port_be
                    && proto == key.proto
            });
            let (name, farm) = match found {
                Some((name, v)) => (name.clone(), v.serverfarm.clone()),
                None => (
                    format!("adopted-vip-{}", info.vip_id),
                    format!("adopted-farm-{}", info.farm_id),
                ),
            };
            farm_names.entry(info.farm_id).or_insert(farm.clone());
            let addr = SocketAddr::new(from_map_addr(&key.addr), u16::from_be(key.port_be));
            let configured = cfg.vips.get(&name);
            let timeouts = configured.map(|v| v.timeouts.clone()).unwrap_or_default();
            let sticky_secs = (info.flags & VIP_STICKY != 0).then_some(info.sticky_secs);
            let sticky_prefix = configured
                .and_then(|v| v.sticky.as_ref())
                .and_then(|s| s.ipv6_prefix)
                .or(Some(lb_common::sticky_prefix(info.flags)).filter(|&p| p != 0));
            c.current.vips.insert(
                name.clone(),
                VipEntry {
                    name,
                    id: info.vip_id,
                    addr,
                    proto: key.proto,
                    farm,
                    farm_id: info.farm_id,
                    timeouts,
                    sticky_secs,
                    sticky_prefix,
                    no_real_drop: info.flags & VIP_NO_REAL_DROP != 0,
                },
            );
        }
        for (id, farm, ring) in &a.farms {
            let name = farm_names
                .get(id)
                .cloned()
                .unwrap_or_else(|| format!("adopted-farm-{id}"));
            c.current.farms.insert(
                name,
                FarmEntry {
                    id: *id,
                    value: *farm,
                    sched: Vec::new(),
                    ring: ring.clone(),
                },
            );
        }
        for (id, real) in &a.reals {
            let farm = farm_names
                .get(&real.farm_id)
                .cloned()
                .unwrap_or_else(|| format!("adopted-farm-{}", real.farm_id));
            let addr = from_map_addr(&real.addr);
            let key = RealKey {
                farm: farm.clone(),
                addr,
                port: u16::from_be(real.port_be),
            };
            // Health and admin state as they were: a real that was serving
            // keeps serving until a probe says otherwise.
            c.overlay
                .health
                .insert(key.clone(), real.state != REAL_DOWN);
            let configured = cfg.serverfarms.get(&farm).and_then(|f| {
                f.reals
                    .iter()
                    .find(|r| r.address == addr && r.port.is_none_or(|p| p == key.port))
            });
            let running = match real.state {
                REAL_DRAIN => Some(AdminState::Drain),
                REAL_DISABLED => Some(AdminState::Disabled),
                _ => None,
            };
            if let Some(state) = running
                && configured.is_none_or(|r| r.state != state)
            {
                c.overlay.admin.insert(key.clone(), state);
            }
            c.current.reals.insert(key, (*id, *real));
        }
        // The id pools and ring space: whatever is in use is taken.
        let take = |pool: &mut IdPool, used: &mut dyn Iterator<Item = u32>| {
            let used: BTreeSet<u32> = used.collect();
            pool.next = used.last().map_or(0, |m| m + 1);
            pool.free = (0..pool.next).filter(|i| !used.contains(i)).collect();
        };
        take(&mut c.pools.vips, &mut a.vips.iter().map(|(_, v)| v.vip_id));
        take(
            &mut c.pools.farms,
            &mut a.farms.iter().map(|(id, _, _)| *id),
        );
        take(&mut c.pools.reals, &mut a.reals.iter().map(|(id, _)| *id));
        let mut used: Vec<(u32, u32)> = a
            .farms
            .iter()
            .map(|(_, f, _)| ring_at(f.ring))
            .filter(|&(_, l)| l > 0)
            .collect();
        used.sort();
        let mut free = Vec::new();
        let mut at = 0;
        for (off, len) in used {
            if off > at {
                free.push((at, off - at));
            }
            at = at.max(off + len);
        }
        if at < MAGLEV_SLOTS {
            free.push((at, MAGLEV_SLOTS - at));
        }
        c.pools.rings.free = free;
        c
    }

    pub fn config(&self) -> Option<&Config> {
        self.cfg.as_ref()
    }

    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Records a health verdict and reprograms what it changes (the real's
    /// state word, its farm's schedule). Returns the real's id.
    pub fn set_health(&mut self, key: &RealKey, up: bool, w: &mut dyn MapWriter) -> Result<u32> {
        let Some(&(id, _)) = self.current.reals.get(key) else {
            bail!("no real {} in farm {}", key.endpoint(), key.farm);
        };
        let was = self.overlay.health.insert(key.clone(), up);
        if up && was != Some(true) {
            self.overlay.up_since.insert(key.clone(), Instant::now());
        }
        self.reapply(w)?;
        Ok(id)
    }

    /// `lb real enable|disable|drain FARM ADDR[:PORT]`: the reals it matched.
    pub fn set_admin(
        &mut self,
        farm: &str,
        addr: impl Into<IpAddr>,
        port: Option<u16>,
        state: AdminState,
        w: &mut dyn MapWriter,
    ) -> Result<Vec<RealKey>> {
        let addr = addr.into();
        let keys: Vec<RealKey> = self
            .current
            .reals
            .keys()
            .filter(|k| k.farm == farm && k.addr == addr && port.is_none_or(|p| p == k.port))
            .cloned()
            .collect();
        if keys.is_empty() {
            let real = port.map_or(addr.to_string(), |p| SocketAddr::new(addr, p).to_string());
            bail!("no real {real} in serverfarm {farm}");
        }
        for k in &keys {
            self.overlay.admin.insert(k.clone(), state);
        }
        self.reapply(w)?;
        Ok(keys)
    }

    /// Re-plans the running config with the current overlay (health changes,
    /// slow-start ramps).
    pub fn reapply(&mut self, w: &mut dyn MapWriter) -> Result<Changes> {
        match self.cfg.clone() {
            Some(cfg) => self.apply(&cfg, w),
            None => Ok(Changes::default()),
        }
    }

    /// True while some real's weight is still ramping up (`slow_start`).
    pub fn ramping(&self) -> bool {
        let Some(cfg) = &self.cfg else { return false };
        self.overlay.up_since.iter().any(|(k, since)| {
            cfg.serverfarms
                .get(&k.farm)
                .and_then(|f| f.slow_start)
                .is_some_and(|t| since.elapsed() < t)
        })
    }

    /// The real's state word as programmed.
    pub fn real_state(&self, key: &RealKey) -> Option<u32> {
        self.current.reals.get(key).map(|(_, r)| r.state)
    }

    pub fn programmed(&self) -> &Programmed {
        &self.current
    }

    pub fn vip_by_id(&self, id: u32) -> Option<&VipEntry> {
        self.current.vips.values().find(|v| v.id == id)
    }

    /// Computes the new contents and writes the difference, in an order that
    /// never lets a packet see a VIP whose farm or reals are not there yet.
    /// On a planning error nothing is written and nothing changes.
    pub fn apply(&mut self, cfg: &Config, w: &mut dyn MapWriter) -> Result<Changes> {
        let mut pools = self.pools.clone();
        let mut retired_reals = self.retired_reals.clone();
        let next = plan(
            cfg,
            &self.current,
            &self.overlay,
            &mut pools,
            &mut retired_reals,
        )?;
        let mut ch = Changes::default();
        let cur = &self.current;

        // 1. Reals and farms first: nothing points at new ones yet.
        for (key, (id, real)) in &next.reals {
            if cur.reals.get(key) != Some(&(*id, *real)) {
                w.set_real(*id, real)?;
                ch.writes += 1;
                if !cur.reals.contains_key(key) {
                    ch.reals_added += 1;
                }
            }
        }
        for (name, farm) in &next.farms {
            let old = cur.farms.get(name);
            if old != Some(farm) {
                // A new ring is written to fresh space before the farm
                // points at it (see Rings).
                if !farm.ring.is_empty() && old.is_none_or(|o| o.value.ring != farm.value.ring) {
                    w.set_ring(ring_at(farm.value.ring).0, &farm.ring)?;
                    ch.writes += 1;
                }
                w.set_sched(farm.id, &farm.sched)?;
                w.set_farm(farm.id, &farm.value)?;
                ch.writes += 2;
                if let Some(o) = old
                    && o.value.ring != farm.value.ring
                {
                    let (off, len) = ring_at(o.value.ring);
                    pools.rings.release(off, len);
                }
            }
        }
        // 2. VIPs and their addresses.
        let next_addrs = vip_addr_counts(&next);
        let cur_addrs = vip_addr_counts(cur);
        for (addr, n) in &next_addrs {
            if cur_addrs.get(addr) != Some(n) {
                w.put_vip_addr(addr, *n)?;
                ch.writes += 1;
            }
        }
        for (name, vip) in &next.vips {
            match cur.vips.get(name) {
                Some(old) if old == vip => continue,
                Some(old) if old.key() != vip.key() => {
                    w.del_vip(&old.key())?;
                    ch.writes += 1;
                }
                Some(_) => {}
                None => ch.vips_added.push(name.clone()),
            }
            w.put_vip(&vip.key(), &vip.info())?;
            ch.writes += 1;
        }
        for (real, nat) in &next.reply_nat {
            if cur.reply_nat.get(real) != Some(nat) {
                w.put_reply_nat(real, nat)?;
                ch.writes += 1;
            }
        }
        // 3. Removals, last.
        for real in cur.reply_nat.keys() {
            if !next.reply_nat.contains_key(real) {
                w.del_reply_nat(real)?;
                ch.writes += 1;
            }
        }
        for (name, old) in &cur.vips {
            if !next.vips.contains_key(name) {
                w.del_vip(&old.key())?;
                ch.writes += 1;
                ch.vips_removed.push(name.clone());
                self.retired_vips.insert(old.id);
            }
        }
        for addr in cur_addrs.keys() {
            if !next_addrs.contains_key(addr) {
                w.del_vip_addr(addr)?;
                ch.writes += 1;
            }
        }
        for (name, old) in &cur.farms {
            if !next.farms.contains_key(name) {
                w.set_farm(old.id, &Farm::default())?;
                ch.writes += 1;
                pools.farms.release(old.id);
                let (off, len) = ring_at(old.value.ring);
                pools.rings.release(off, len);
            }
        }
        for (key, (id, _)) in &cur.reals {
            if !next.reals.contains_key(key) {
                // Out of every schedule already; its flows run on until they end.
                retired_reals.insert(*id, key.clone());
                ch.reals_removed += 1;
            }
        }
        self.pools = pools;
        self.retired_reals = retired_reals;
        self.current = next;
        // Run-time state of reals that left the config goes with them.
        let live = &self.current.reals;
        self.overlay.health.retain(|k, _| live.contains_key(k));
        self.overlay.admin.retain(|k, _| live.contains_key(k));
        self.overlay.up_since.retain(|k, _| live.contains_key(k));
        self.cfg = Some(cfg.clone());
        Ok(ch)
    }

    /// True if flows of this VIP id should be removed: the VIP is gone.
    pub fn vip_retired(&self, id: u32) -> bool {
        self.retired_vips.contains(&id)
    }

    /// Returns retired ids no flow uses any more to the pools (called by the
    /// flow sweep with the ids it saw).
    /// The VIP and real ids retired by reloads and not yet released: kept
    /// from reuse while flows may still name them.
    pub fn retired_ids(&self) -> (HashSet<u32>, HashSet<u32>) {
        (
            self.retired_vips.iter().copied().collect(),
            self.retired_reals.keys().copied().collect(),
        )
    }

    pub fn release_unused(
        &mut self,
        vips_in_use: &HashSet<u32>,
        reals_in_use: &HashSet<u32>,
        w: &mut dyn MapWriter,
    ) -> Result<()> {
        let gone: Vec<u32> = self
            .retired_vips
            .iter()
            .copied()
            .filter(|id| !vips_in_use.contains(id))
            .collect();
        for id in gone {
            self.retired_vips.remove(&id);
            self.pools.vips.release(id);
        }
        let gone: Vec<u32> = self
            .retired_reals
            .keys()
            .copied()
            .filter(|id| !reals_in_use.contains(id))
            .collect();
        for id in gone {
            w.set_real(id, &Real::default())?;
            self.retired_reals.remove(&id);
            self.pools.reals.release(id);
        }
        Ok(())
    }
}

/// A recovered real's weight during `slow_start`: from 1 up to its full
/// weight, linearly (HAProxy's `slowstart`).
pub fn slow_start_weight(weight: u32, elapsed: Duration, ramp: Duration) -> u32 {
    if elapsed >= ramp || weight == 0 {
        return weight;
    }
    ((weight as u128 * elapsed.as_millis() / ramp.as_millis().max(1)) as u32).max(1)
}

fn vip_addr_counts(p: &Programmed) -> BTreeMap<[u8; 16], u32> {
    let mut m = BTreeMap::new();
    for v in p.vips.values() {
        *m.entry(v.key().addr).or_insert(0) += 1;
    }
    m
}

/// A real's identity on the hashing ring: `203.0.113.11:8080`,
/// `[2001:db8::11]:8080`. Every node must build the same ring from the same
/// config, so this is the address's canonical text (RFC 5952 for IPv6,
/// whatever spelling the file used), never an id; IPv4 keys are what they
/// were before IPv6, and changing this moves most flows of every hashing
/// farm (see `maglev`).
fn ring_key(k: &RealKey) -> String {
    k.endpoint().to_string()
}

/// The datapath contents for `cfg`, reusing the ids of `cur`.
fn plan(
    cfg: &Config,
    cur: &Programmed,
    overlay: &Overlay,
    pools: &mut Pools,
    retired_reals: &mut BTreeMap<u32, RealKey>,
) -> Result<Programmed> {
    let mut next = Programmed::default();
    // The port a port-less real inherits, per farm (from the first VIP using it).
    let mut inherited: BTreeMap<&str, (u16, &str)> = BTreeMap::new();
    for (name, vip) in &cfg.vips {
        let farm_name = vip.serverfarm.as_str();
        let Some(farm) = cfg.serverfarms.get(farm_name) else {
            bail!("vips.{name}.serverfarm: serverfarm `{farm_name}` is not defined");
        };
        if let Some(&(port, first)) = inherited.get(farm_name) {
            if port != vip.port && farm.reals.iter().any(|r| r.port.is_none()) {
                bail!(
                    "serverfarms.{farm_name}: reals without a port serve VIPs on different ports ({first}: {port}, {name}: {}); give those reals a port",
                    vip.port
                );
            }
        } else {
            inherited.insert(farm_name, (vip.port, name));
        }
        let farm_id = match (next.farms.get(farm_name), cur.farms.get(farm_name)) {
            (Some(f), _) | (None, Some(f)) => f.id,
            (None, None) => pools.farms.alloc("serverfarms")?,
        };
        if !next.farms.contains_key(farm_name) {
            let entry = plan_farm(
                (farm_name, farm),
                vip.port,
                farm_id,
                (cur, overlay),
                (pools, retired_reals),
                &mut next.reals,
            )?;
            next.farms.insert(farm_name.to_string(), entry);
        }
        let id = match cur.vips.get(name) {
            Some(v) => v.id,
            None => pools.vips.alloc("vips")?,
        };
        let proto = match vip.protocol {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        };
        let addr = SocketAddr::new(vip.address, vip.port);
        let sticky = vip.sticky.as_ref();
        next.vips.insert(
            name.clone(),
            VipEntry {
                name: name.clone(),
                id,
                addr,
                proto,
                farm: farm_name.to_string(),
                farm_id,
                timeouts: vip.timeouts.clone(),
                sticky_secs: sticky.map(|s| s.timeout.as_secs().clamp(1, u32::MAX as u64) as u32),
                sticky_prefix: sticky.and_then(|s| s.ipv6_prefix),
                no_real_drop: vip.no_real == NoReal::Drop,
            },
        );
    }
    if cfg.cluster.is_some() {
        next.reply_nat = reply_nat(&next);
    }
    Ok(next)
}

/// A farm's entry: its reals (ids kept from `cur` or a retired real of
/// the same key, else new), each with its state and weight from the config
/// and the overlay, added to `reals`; and its schedule or ring over the
/// live ones. `vip_port`: what a port-less real serves on.
fn plan_farm(
    (farm_name, farm): (&str, &crate::config::Farm),
    vip_port: u16,
    farm_id: u32,
    (cur, overlay): (&Programmed, &Overlay),
    (pools, retired_reals): (&mut Pools, &mut BTreeMap<u32, RealKey>),
    reals: &mut BTreeMap<RealKey, (u32, Real)>,
) -> Result<FarmEntry> {
    let failaction = match farm.failaction {
        FailAction::None => FAIL_NONE,
        FailAction::Purge => FAIL_PURGE,
        FailAction::Reassign => FAIL_REASSIGN,
    };
    let mut members = Vec::new();
    for r in &farm.reals {
        let key = RealKey {
            farm: farm_name.to_string(),
            addr: r.address,
            port: r.port.unwrap_or(vip_port),
        };
        let id = match cur.reals.get(&key) {
            Some(&(id, _)) => id,
            None => match retired_reals
                .iter()
                .find(|(_, k)| **k == key)
                .map(|(id, _)| *id)
            {
                Some(id) => {
                    retired_reals.remove(&id);
                    id
                }
                None => pools.reals.alloc("reals")?,
            },
        };
        let healthy = overlay.healthy(&key, farm);
        let state = match overlay.admin.get(&key).copied().unwrap_or(r.state) {
            AdminState::Disabled => REAL_DISABLED,
            _ if !healthy => REAL_DOWN,
            AdminState::Drain => REAL_DRAIN,
            AdminState::Up => REAL_UP,
        };
        let weight = match (farm.slow_start, overlay.up_since.get(&key)) {
            (Some(ramp), Some(since)) => slow_start_weight(r.weight, since.elapsed(), ramp),
            _ => r.weight,
        };
        let real = Real {
            addr: to_map_addr(key.addr),
            port_be: key.port.to_be(),
            weight,
            state,
            farm_id,
            failaction,
            max_conns: r.max_conns.unwrap_or(0),
            ..Real::default()
        };
        members.push((id, key.clone(), real, r.backup));
        reals.insert(key, (id, real));
    }
    let live = |backup: bool| -> Vec<(u32, &RealKey, u32)> {
        members
            .iter()
            .filter(|(_, _, r, b)| *b == backup && r.state == REAL_UP && r.weight > 0)
            .map(|(id, k, r, _)| (*id, k, r.weight))
            .collect()
    };
    // Backups carry new flows only while no primary can.
    let mut pick_from = live(false);
    if pick_from.is_empty() {
        pick_from = live(true);
    }
    let algorithm = farm.algorithm.datapath();
    let (sched, ring) = schedule(algorithm, &pick_from);
    // Reuse the ring's place when its content is unchanged.
    let ring_word = match cur.farms.get(farm_name) {
        _ if ring.is_empty() => 0,
        Some(old) if old.ring == ring => old.value.ring,
        _ => ring_word(pools.rings.alloc(ring.len() as u32)?, ring.len() as u32),
    };
    Ok(FarmEntry {
        id: farm_id,
        value: Farm {
            algorithm,
            sched_len: sched.len() as u32,
            ring: ring_word,
            ..Farm::default()
        },
        sched,
        ring,
    })
}

/// The schedule (round-robin, weighted, least-conn) or the ring (maglev,
/// source-hash) of a farm's live reals: (id, key, weight).
fn schedule(algorithm: u32, live: &[(u32, &RealKey, u32)]) -> (Vec<u32>, Vec<u32>) {
    let by_weight: Vec<(u32, u32)> = live.iter().map(|&(id, _, w)| (id, w)).collect();
    match algorithm {
        ALG_ROUND_ROBIN => (sched::round_robin(&by_weight), Vec::new()),
        ALG_WEIGHTED_ROUND_ROBIN => (sched::weighted(&by_weight), Vec::new()),
        // Least-conn scans the live members, each once.
        ALG_LEAST_CONN => (sched::round_robin(&by_weight), Vec::new()),
        _ => {
            // Rings are built from the members' addresses, not ids, so
            // every node builds the same ring from the same config.
            let keys: Vec<String> = live.iter().map(|(_, k, _)| ring_key(k)).collect();
            let members: Vec<maglev::Member> = live
                .iter()
                .zip(&keys)
                .map(|(&(id, _, weight), key)| maglev::Member { id, key, weight })
                .collect();
            let ring = if members.is_empty() {
                Vec::new()
            } else {
                maglev::build(&members, maglev::table_size(members.len()))
            };
            (Vec::new(), ring)
        }
    }
}

/// Each real endpoint of every VIP and that VIP, for a cluster. A real
/// endpoint serving two VIPs (refused by `lb check` in a cluster) keeps
/// the first.
fn reply_nat(p: &Programmed) -> HashMap<VipKey, ReplyNat> {
    let mut m = HashMap::new();
    for v in p.vips.values() {
        for (k, _) in p.farm_reals(&v.farm) {
            let real = VipKey {
                addr: to_map_addr(k.addr),
                port_be: k.port.to_be(),
                proto: v.proto,
                _pad: 0,
            };
            m.entry(real).or_insert(ReplyNat {
                vip_addr: to_map_addr(v.addr.ip()),
                vip_port_be: v.addr.port().to_be(),
                _pad: 0,
                vip_id: v.id,
            });
        }
    }
    m
}

/// A writer that writes nowhere: `lb check` plans a config without a kernel.
pub struct NullWriter;

impl MapWriter for NullWriter {
    fn put_reply_nat(&mut self, _: &VipKey, _: &ReplyNat) -> Result<()> {
        Ok(())
    }
    fn del_reply_nat(&mut self, _: &VipKey) -> Result<()> {
        Ok(())
    }
    fn set_real(&mut self, _: u32, _: &Real) -> Result<()> {
        Ok(())
    }
    fn set_farm(&mut self, _: u32, _: &Farm) -> Result<()> {
        Ok(())
    }
    fn set_sched(&mut self, _: u32, _: &[u32]) -> Result<()> {
        Ok(())
    }
    fn set_ring(&mut self, _: u32, _: &[u32]) -> Result<()> {
        Ok(())
    }
    fn put_vip(&mut self, _: &VipKey, _: &VipInfo) -> Result<()> {
        Ok(())
    }
    fn del_vip(&mut self, _: &VipKey) -> Result<()> {
        Ok(())
    }
    fn put_vip_addr(&mut self, _: &[u8; 16], _: u32) -> Result<()> {
        Ok(())
    }
    fn del_vip_addr(&mut self, _: &[u8; 16]) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub mod tests;
