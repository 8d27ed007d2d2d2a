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
        let algorithm = farm.algorithm.datapath();
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
                    port: r.port.unwrap_or(vip.port),
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
                members.push((id, real, r.backup));
                next.reals.insert(key, (id, real));
            }
            let live = |backup: bool| -> Vec<(u32, u32)> {
                members
                    .iter()
                    .filter(|(_, r, b)| *b == backup && r.state == REAL_UP && r.weight > 0)
                    .map(|(id, r, _)| (*id, r.weight))
                    .collect()
            };
            // Backups carry new flows only while no primary can.
            let mut pick_from = live(false);
            if pick_from.is_empty() {
                pick_from = live(true);
            }
            let (sched, ring) = match algorithm {
                ALG_ROUND_ROBIN => (sched::round_robin(&pick_from), Vec::new()),
                ALG_WEIGHTED_ROUND_ROBIN => (sched::weighted(&pick_from), Vec::new()),
                // Least-conn scans the live members, each once.
                ALG_LEAST_CONN => (sched::round_robin(&pick_from), Vec::new()),
                _ => {
                    // Rings are built from the members' addresses, not ids,
                    // so every node builds the same ring from the same config.
                    let keys: Vec<(u32, String, u32)> = pick_from
                        .iter()
                        .map(|&(id, w)| {
                            let k = next
                                .reals
                                .iter()
                                .find(|(_, (rid, _))| *rid == id)
                                .map(|(k, _)| k);
                            (id, k.map_or_else(String::new, ring_key), w)
                        })
                        .collect();
                    let members: Vec<maglev::Member> = keys
                        .iter()
                        .map(|(id, key, w)| maglev::Member {
                            id: *id,
                            key,
                            weight: *w,
                        })
                        .collect();
                    let ring = if members.is_empty() {
                        Vec::new()
                    } else {
                        maglev::build(&members, maglev::table_size(members.len()))
                    };
                    (Vec::new(), ring)
                }
            };
            // Reuse the ring's place when its content is unchanged.
            let ring_word = match cur.farms.get(farm_name) {
                _ if ring.is_empty() => 0,
                Some(old) if old.ring == ring => old.value.ring,
                _ => ring_word(pools.rings.alloc(ring.len() as u32)?, ring.len() as u32),
            };
            let value = Farm {
                algorithm,
                sched_len: sched.len() as u32,
                ring: ring_word,
                ..Farm::default()
            };
            next.farms.insert(
                farm_name.to_string(),
                FarmEntry {
                    id: farm_id,
                    value,
                    sched,
                    ring,
                },
            );
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
pub mod tests {
    use super::*;
    use lb_common::v4_mapped;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    /// The datapath's maps in memory, with a log of writes.
    #[derive(Default, Debug)]
    pub struct MemMaps {
        pub reals: HashMap<u32, Real>,
        pub farms: HashMap<u32, Farm>,
        pub sched: HashMap<u32, Vec<u32>>,
        pub rings: HashMap<u32, Vec<u32>>,
        pub vips: HashMap<VipKey, VipInfo>,
        pub vip_addrs: HashMap<[u8; 16], u32>,
        pub reply_nat: HashMap<VipKey, ReplyNat>,
        pub log: Vec<String>,
    }

    impl MapWriter for MemMaps {
        fn put_reply_nat(&mut self, real: &VipKey, nat: &ReplyNat) -> Result<()> {
            self.reply_nat.insert(*real, *nat);
            Ok(())
        }
        fn del_reply_nat(&mut self, real: &VipKey) -> Result<()> {
            self.reply_nat.remove(real);
            Ok(())
        }
        fn set_real(&mut self, id: u32, real: &Real) -> Result<()> {
            self.log.push(format!("real {id}"));
            self.reals.insert(id, *real);
            Ok(())
        }
        fn set_farm(&mut self, id: u32, farm: &Farm) -> Result<()> {
            self.log.push(format!("farm {id}"));
            self.farms.insert(id, *farm);
            Ok(())
        }
        fn set_sched(&mut self, farm_id: u32, slots: &[u32]) -> Result<()> {
            self.log.push(format!("sched {farm_id}"));
            self.sched.insert(farm_id, slots.to_vec());
            Ok(())
        }
        fn set_ring(&mut self, offset: u32, slots: &[u32]) -> Result<()> {
            self.log.push(format!("ring {offset}"));
            self.rings.insert(offset, slots.to_vec());
            Ok(())
        }
        fn put_vip(&mut self, key: &VipKey, info: &VipInfo) -> Result<()> {
            self.log.push(format!("vip+ {}", info.vip_id));
            self.vips.insert(*key, *info);
            Ok(())
        }
        fn del_vip(&mut self, key: &VipKey) -> Result<()> {
            self.log.push("vip-".into());
            self.vips.remove(key);
            Ok(())
        }
        fn put_vip_addr(&mut self, addr: &[u8; 16], vips: u32) -> Result<()> {
            self.vip_addrs.insert(*addr, vips);
            Ok(())
        }
        fn del_vip_addr(&mut self, addr: &[u8; 16]) -> Result<()> {
            self.vip_addrs.remove(addr);
            Ok(())
        }
    }

    pub const BASE: &str = r#"
interfaces: [eth0, eth1]
serverfarms:
  web:
    algorithm: weighted-round-robin
    reals:
      - { address: 203.0.113.11, port: 8080, weight: 1 }
      - { address: 203.0.113.12, port: 8080, weight: 2 }
      - { address: 203.0.113.13, port: 8080, weight: 3 }
      - { address: 203.0.113.20, port: 8080, backup: true }
  dns:
    reals:
      - { address: 203.0.113.11 }
      - { address: 203.0.113.12 }
vips:
  www: { address: 198.51.100.10, port: 80, serverfarm: web }
  dns: { address: 198.51.100.10, port: 53, protocol: udp, serverfarm: dns }
"#;

    fn cfg(src: &str) -> Config {
        Config::parse(src, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn programs_vips_farms_and_weighted_schedule() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        let ch = c.apply(&cfg(BASE), &mut m).unwrap();
        assert_eq!(ch.vips_added, vec!["dns".to_string(), "www".to_string()]);
        assert_eq!(m.vips.len(), 2);
        assert_eq!(m.vip_addrs.get(&v4_mapped([198, 51, 100, 10])), Some(&2));
        let www = &c.programmed().vips["www"];
        let info = m.vips[&www.key()];
        let farm = m.farms[&info.farm_id];
        assert_eq!(farm.algorithm, ALG_WEIGHTED_ROUND_ROBIN);
        let sched = &m.sched[&info.farm_id];
        assert_eq!(farm.sched_len as usize, sched.len());
        // Weights 1:2:3 over the primaries; the backup is not scheduled.
        let by_port = |ip: [u8; 4]| {
            let key = RealKey {
                farm: "web".into(),
                addr: ip.into(),
                port: 8080,
            };
            let id = c.programmed().reals.get(&key).map(|(id, _)| *id);
            sched.iter().filter(|&&s| Some(s) == id).count()
        };
        assert_eq!(
            (
                by_port([203, 0, 113, 11]),
                by_port([203, 0, 113, 12]),
                by_port([203, 0, 113, 13])
            ),
            (1, 2, 3)
        );
        // Port-less reals inherit the VIP's port.
        let dns = &c.programmed().vips["dns"];
        let dns_real = m.reals.values().find(|r| r.farm_id == dns.farm_id).unwrap();
        assert_eq!(u16::from_be(dns_real.port_be), 53);
    }

    #[test]
    fn map_keys_and_values_have_the_datapath_byte_layout() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(BASE), &mut m).unwrap();
        let www = &c.programmed().vips["www"];
        let key = www.key();
        // SAFETY: VipKey is repr(C) plain bytes (see lb-common).
        let bytes: [u8; 20] = unsafe { std::mem::transmute(key) };
        let mut want = [0u8; 20];
        want[10..16].copy_from_slice(&[0xff, 0xff, 198, 51, 100, 10]); // ::ffff:198.51.100.10
        want[16..18].copy_from_slice(&[0, 80]); // port, network order
        want[18] = 6; // TCP
        assert_eq!(bytes, want);
        let real = m
            .reals
            .values()
            .find(|r| u16::from_be(r.port_be) == 8080 && r.weight == 3)
            .unwrap();
        assert_eq!(real.addr[10..], [0xff, 0xff, 203, 0, 113, 13]);
        assert_eq!(real.port_be.to_ne_bytes(), [0x1f, 0x90]);
        assert_eq!(real.state, REAL_UP);
        assert_eq!(real.farm_id, www.farm_id);
    }

    #[test]
    fn slow_start_ramps_weight_linearly_from_one() {
        let ramp = Duration::from_secs(30);
        assert_eq!(slow_start_weight(10, Duration::ZERO, ramp), 1);
        assert_eq!(slow_start_weight(10, Duration::from_secs(15), ramp), 5);
        assert_eq!(slow_start_weight(10, Duration::from_secs(30), ramp), 10);
        assert_eq!(slow_start_weight(10, Duration::from_secs(99), ramp), 10);
        assert_eq!(
            slow_start_weight(0, Duration::ZERO, ramp),
            0,
            "weight 0 stays out"
        );
    }

    #[test]
    fn a_recovered_real_ramps_and_health_survives_reload() {
        let src = BASE.replace(
            "    algorithm: weighted-round-robin\n",
            "    algorithm: weighted-round-robin\n    slow_start: 1h\n",
        );
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(&src), &mut m).unwrap();
        let key = RealKey {
            farm: "web".into(),
            addr: Ipv4Addr::new(203, 0, 113, 13).into(),
            port: 8080,
        };
        let id = c.set_health(&key, false, &mut m).unwrap();
        assert_eq!(m.reals[&id].state, REAL_DOWN);
        assert!(
            !m.sched[&c.programmed().farms["web"].id].contains(&id),
            "down: out of the schedule"
        );
        c.set_health(&key, true, &mut m).unwrap();
        assert_eq!(m.reals[&id].state, REAL_UP);
        assert_eq!(m.reals[&id].weight, 1, "just recovered: weight 1 of 3");
        assert!(c.ramping());
        // A reload keeps run-time state: still ramping, still up.
        c.apply(&cfg(&src), &mut m).unwrap();
        assert_eq!((m.reals[&id].state, m.reals[&id].weight), (REAL_UP, 1));
        // Admin overrides win over health, and survive a reload too.
        c.set_admin("web", key.addr, None, AdminState::Disabled, &mut m)
            .unwrap();
        c.apply(&cfg(&src), &mut m).unwrap();
        assert_eq!(m.reals[&id].state, REAL_DISABLED);
        let err = c
            .set_admin(
                "web",
                Ipv4Addr::new(1, 2, 3, 4),
                None,
                AdminState::Drain,
                &mut m,
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("no real 1.2.3.4 in serverfarm web"),
            "{err}"
        );
    }

    #[test]
    fn probed_reals_start_down_unless_init_state_up() {
        let probed = BASE.replace(
            "    algorithm: weighted-round-robin\n",
            "    algorithm: weighted-round-robin\n    probes: [hc]\n",
        ) + "probes:\n  hc: { type: tcp }\n";
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(&probed), &mut m).unwrap();
        let web = &c.programmed().farms["web"];
        assert!(
            web.sched.is_empty(),
            "no new flows before the first successful probe"
        );
        let up = probed.replace(
            "    probes: [hc]\n",
            "    probes: [hc]\n    init_state: up\n",
        );
        let mut c = Control::new();
        c.apply(&cfg(&up), &mut m).unwrap();
        assert_eq!(c.programmed().farms["web"].sched.len(), 6);
    }

    #[test]
    fn order_puts_reals_and_farms_before_vips() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(BASE), &mut m).unwrap();
        let first_vip = m.log.iter().position(|l| l.starts_with("vip+")).unwrap();
        let last_real = m.log.iter().rposition(|l| l.starts_with("real")).unwrap();
        let last_farm = m.log.iter().rposition(|l| l.starts_with("farm")).unwrap();
        assert!(
            last_real < first_vip && last_farm < first_vip,
            "{:?}",
            m.log
        );
    }

    #[test]
    fn reapplying_the_same_config_writes_nothing() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(BASE), &mut m).unwrap();
        let ch = c.apply(&cfg(BASE), &mut m).unwrap();
        assert_eq!(ch, Changes::default());
    }

    #[test]
    fn adding_a_real_keeps_ids_and_touches_only_its_farm() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(BASE), &mut m).unwrap();
        let before = c.programmed().clone();
        let added = BASE.replace(
            "      - { address: 203.0.113.20, port: 8080, backup: true }",
            "      - { address: 203.0.113.14, port: 8080, weight: 1 }\n      - { address: 203.0.113.20, port: 8080, backup: true }",
        );
        m.log.clear();
        let ch = c.apply(&cfg(&added), &mut m).unwrap();
        assert_eq!(ch.reals_added, 1);
        for (k, v) in &before.reals {
            assert_eq!(c.programmed().reals[k].0, v.0, "real ids are stable");
        }
        assert_eq!(c.programmed().vips["www"].id, before.vips["www"].id);
        let web = c.programmed().farms["web"].id;
        assert!(
            m.log
                .iter()
                .all(|l| !l.starts_with("farm") || *l == format!("farm {web}")),
            "{:?}",
            m.log
        );
        assert!(
            !m.log.iter().any(|l| l.starts_with("vip")),
            "VIPs untouched: {:?}",
            m.log
        );
    }

    /// `MAX_VIPS` VIPs, each on a farm of its own with an equal share of
    /// `MAX_REALS` reals; the last VIP on `last_port`.
    fn at_the_limits(last_port: u16) -> String {
        let per_farm = MAX_REALS / MAX_VIPS;
        let mut farms = String::from("interfaces: [eth0]\nserverfarms:\n");
        let mut vips = String::from("vips:\n");
        for v in 0..MAX_VIPS {
            farms += &format!("  f{v}:\n    reals:\n");
            for r in 0..per_farm {
                let addr = Ipv4Addr::from(0x0a00_0000 + v * per_farm + r);
                farms += &format!("      - {{ address: {addr}, port: 8080 }}\n");
            }
            let addr = Ipv4Addr::from(0xc612_0000 + v);
            let port = if v == MAX_VIPS - 1 { last_port } else { 80 };
            vips += &format!("  v{v}: {{ address: {addr}, port: {port}, serverfarm: f{v} }}\n");
        }
        farms + &vips
    }

    #[test]
    fn at_the_limits_changing_one_vip_writes_only_that_vip() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(&at_the_limits(80)), &mut m).unwrap();
        assert_eq!(m.vips.len(), MAX_VIPS as usize);
        assert_eq!(m.reals.len(), MAX_REALS as usize);
        assert_eq!(m.farms.len(), MAX_FARMS as usize);
        let id = c.programmed().vips["v4095"].id;
        m.log.clear();
        let ch = c.apply(&cfg(&at_the_limits(81)), &mut m).unwrap();
        assert_eq!(m.log, ["vip-", &format!("vip+ {id}")], "{ch:?}");
        assert_eq!(c.programmed().vips["v4095"].id, id, "the VIP keeps its id");
        assert_eq!(m.vips.len(), MAX_VIPS as usize);
    }

    #[test]
    fn removed_real_is_retired_until_its_flows_end() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(BASE), &mut m).unwrap();
        let key = RealKey {
            farm: "web".into(),
            addr: Ipv4Addr::new(203, 0, 113, 13).into(),
            port: 8080,
        };
        let id = c.programmed().reals[&key].0;
        let removed = BASE.replace(
            "      - { address: 203.0.113.13, port: 8080, weight: 3 }\n",
            "",
        );
        let ch = c.apply(&cfg(&removed), &mut m).unwrap();
        assert_eq!(ch.reals_removed, 1);
        assert!(!m.sched[&c.programmed().farms["web"].id].contains(&id));
        assert_eq!(m.reals[&id].state, REAL_UP, "its flows still translate");
        // A flow still uses it: stays.
        c.release_unused(&HashSet::new(), &HashSet::from([id]), &mut m)
            .unwrap();
        assert_eq!(m.reals[&id].state, REAL_UP);
        // No flow: freed, and the id is reused by the next new real.
        c.release_unused(&HashSet::new(), &HashSet::new(), &mut m)
            .unwrap();
        assert_eq!(m.reals[&id], Real::default());
        let c2 = removed.replace(
            "203.0.113.12, port: 8080, weight: 2 }",
            "203.0.113.12, port: 8080, weight: 2 }\n      - { address: 203.0.113.99, port: 8080 }",
        );
        c.apply(&cfg(&c2), &mut m).unwrap();
        let new_key = RealKey {
            farm: "web".into(),
            addr: Ipv4Addr::new(203, 0, 113, 99).into(),
            port: 8080,
        };
        assert_eq!(c.programmed().reals[&new_key].0, id);
    }

    #[test]
    fn removing_a_vip_deletes_it_and_its_address_when_last() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(BASE), &mut m).unwrap();
        let www_id = c.programmed().vips["www"].id;
        let no_www = BASE.replace(
            "  www: { address: 198.51.100.10, port: 80, serverfarm: web }\n",
            "",
        );
        let ch = c.apply(&cfg(&no_www), &mut m).unwrap();
        assert_eq!(ch.vips_removed, vec!["www".to_string()]);
        assert_eq!(m.vips.len(), 1);
        assert!(c.vip_retired(www_id));
        assert_eq!(m.vip_addrs.get(&v4_mapped([198, 51, 100, 10])), Some(&1));
        let none = no_www.replace(
            "  dns: { address: 198.51.100.10, port: 53, protocol: udp, serverfarm: dns }\n",
            "",
        );
        c.apply(&cfg(&none), &mut m).unwrap();
        assert!(m.vips.is_empty() && m.vip_addrs.is_empty());
    }

    #[test]
    fn all_primaries_unavailable_schedules_the_backup() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        let drained = BASE
            .replace("weight: 1 }", "weight: 1, state: drain }")
            .replace("weight: 2 }", "weight: 2, state: disabled }")
            .replace("weight: 3 }", "weight: 0 }");
        c.apply(&cfg(&drained), &mut m).unwrap();
        let web = &c.programmed().farms["web"];
        let backup = c.programmed().reals[&RealKey {
            farm: "web".into(),
            addr: Ipv4Addr::new(203, 0, 113, 20).into(),
            port: 8080,
        }]
            .0;
        assert_eq!(web.sched, vec![backup]);
    }

    /// What `KernelMaps::programmed` would read back from these maps.
    fn read_back(m: &MemMaps) -> Adopted {
        let mut farms: Vec<(u32, Farm, Vec<u32>)> = m
            .farms
            .iter()
            .filter(|(_, f)| **f != Farm::default())
            .map(|(id, f)| {
                (
                    *id,
                    *f,
                    m.rings.get(&ring_at(f.ring).0).cloned().unwrap_or_default(),
                )
            })
            .collect();
        farms.sort_by_key(|f| f.0);
        Adopted {
            vips: m.vips.iter().map(|(k, v)| (*k, *v)).collect(),
            reply_nat: m.reply_nat.iter().map(|(k, v)| (*k, *v)).collect(),
            reals: m
                .reals
                .iter()
                .filter(|(_, r)| r.state != 0)
                .map(|(id, r)| (*id, *r))
                .collect(),
            farms,
        }
    }

    #[test]
    fn an_adopting_agent_keeps_ids_health_and_admin_state() {
        let src = BASE.replace("algorithm: weighted-round-robin", "algorithm: maglev");
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(&src), &mut m).unwrap();
        let down = RealKey {
            farm: "web".into(),
            addr: Ipv4Addr::new(203, 0, 113, 12).into(),
            port: 8080,
        };
        c.set_health(&down, false, &mut m).unwrap();
        c.set_admin(
            "web",
            Ipv4Addr::new(203, 0, 113, 11),
            None,
            AdminState::Drain,
            &mut m,
        )
        .unwrap();
        let before = c.programmed().clone();
        // The agent dies; a new one adopts the maps.
        let mut n = Control::adopt(&cfg(&src), &read_back(&m));
        m.log.clear();
        n.apply(&cfg(&src), &mut m).unwrap();
        assert!(
            m.log
                .iter()
                .all(|l| l.starts_with("sched") || l.starts_with("farm")),
            "no VIP, real or ring is rewritten: {:?}",
            m.log
        );
        assert_eq!(n.programmed().vips, before.vips);
        assert_eq!(n.programmed().reals, before.reals, "same ids, same states");
        assert_eq!(n.programmed().farms["web"].ring, before.farms["web"].ring);
        assert_eq!(
            n.real_state(&down),
            Some(REAL_DOWN),
            "still down until a probe says up"
        );
        // New reals get ids nobody uses.
        let more = src.replace(
            "      - { address: 203.0.113.20, port: 8080, backup: true }",
            "      - { address: 203.0.113.21, port: 8080 }\n      - { address: 203.0.113.20, port: 8080, backup: true }",
        );
        n.apply(&cfg(&more), &mut m).unwrap();
        let ids: HashSet<u32> = n.programmed().reals.values().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), n.programmed().reals.len(), "ids unique");
    }

    #[test]
    fn hashing_farms_get_rings_swapped_in_fresh_space() {
        let maglev = BASE.replace("algorithm: weighted-round-robin", "algorithm: maglev");
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(&maglev), &mut m).unwrap();
        let web = c.programmed().farms["web"].clone();
        let (off, len) = ring_at(web.value.ring);
        assert_eq!(len, 65_537, "a prime of at least 100 x members");
        assert_eq!(m.rings[&off], web.ring);
        assert_eq!(m.farms[&web.id].ring, web.value.ring);
        // Weighted 1:2:3 over the primaries.
        let share = |id: u32| web.ring.iter().filter(|&&r| r == id).count() as f64 / len as f64;
        let ids: HashMap<u8, u32> = c
            .programmed()
            .reals
            .iter()
            .filter(|(k, _)| k.farm == "web")
            .map(|(k, (id, _))| (to_map_addr(k.addr)[15], *id))
            .collect();
        let id_of = |last: u8| ids[&last];
        assert!(
            (share(id_of(13)) - 0.5).abs() < 0.01,
            "{}",
            share(id_of(13))
        );
        // A real goes down: a new ring in other space, the old space freed.
        let key = RealKey {
            farm: "web".into(),
            addr: Ipv4Addr::new(203, 0, 113, 12).into(),
            port: 8080,
        };
        m.log.clear();
        c.set_health(&key, false, &mut m).unwrap();
        let web2 = c.programmed().farms["web"].clone();
        let (off2, _) = ring_at(web2.value.ring);
        assert_ne!(off2, off, "rebuilt into fresh space");
        let ring_pos = m.log.iter().position(|l| l.starts_with("ring")).unwrap();
        let farm_pos = m.log.iter().position(|l| l.starts_with("farm")).unwrap();
        assert!(
            ring_pos < farm_pos,
            "ring written before the farm points at it: {:?}",
            m.log
        );
        assert!(!web2.ring.contains(&id_of(12)));
        // Only the down real's slots moved (Maglev's minimal disruption).
        let moved = web
            .ring
            .iter()
            .zip(&web2.ring)
            .filter(|(a, b)| a != b && **a != id_of(12))
            .count();
        assert!(
            (moved as f64) < 0.01 * len as f64,
            "{moved} other slots moved"
        );
        // Up again: the same ring as before, in the space freed first.
        c.set_health(&key, true, &mut m).unwrap();
        assert_eq!(c.programmed().farms["web"].ring, web.ring);
    }

    #[test]
    fn two_agents_build_identical_rings_whatever_their_ids() {
        let maglev = BASE.replace("algorithm: weighted-round-robin", "algorithm: maglev");
        // Agent B saw another config first, so its real ids differ.
        let mut a = Control::new();
        let mut b = Control::new();
        let (mut ma, mut mb) = (MemMaps::default(), MemMaps::default());
        let other = BASE.replace("203.0.113.11, port: 8080", "203.0.113.99, port: 8080");
        b.apply(&cfg(&other), &mut mb).unwrap();
        a.apply(&cfg(&maglev), &mut ma).unwrap();
        b.apply(&cfg(&maglev), &mut mb).unwrap();
        let owners = |c: &Control| -> Vec<IpAddr> {
            let by_id: HashMap<u32, IpAddr> = c
                .programmed()
                .reals
                .iter()
                .map(|(k, (id, _))| (*id, k.addr))
                .collect();
            c.programmed().farms["web"]
                .ring
                .iter()
                .map(|id| by_id[id])
                .collect()
        };
        assert_ne!(a.programmed().reals, b.programmed().reals, "different ids");
        assert_eq!(owners(&a), owners(&b), "same real owns every slot");
    }

    #[test]
    fn least_conn_lists_live_members_and_sticky_sets_the_vip_flag() {
        let lc = BASE.replace("algorithm: weighted-round-robin", "algorithm: least-conn").replace(
            "  www: { address: 198.51.100.10, port: 80, serverfarm: web }",
            "  www: { address: 198.51.100.10, port: 80, serverfarm: web, sticky: { mode: source-ip, timeout: 10m } }",
        );
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg(&lc), &mut m).unwrap();
        let web = &c.programmed().farms["web"];
        assert_eq!(web.value.algorithm, ALG_LEAST_CONN);
        assert_eq!(web.sched.len(), 3, "each live primary once");
        let www = &c.programmed().vips["www"];
        let info = m.vips[&www.key()];
        assert_eq!((info.flags, info.sticky_secs), (VIP_STICKY, 600));
    }

    #[test]
    fn portless_reals_shared_by_vips_on_different_ports_are_refused() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        let shared = BASE.replace("serverfarm: web }", "serverfarm: dns }");
        let err = c.apply(&cfg(&shared), &mut m).unwrap_err().to_string();
        assert!(
            err.contains("serverfarms.dns") && err.contains("give those reals a port"),
            "{err}"
        );
    }

    /// BASE beside a dual-stack twin: an IPv6 VIP on a farm of IPv6 reals.
    fn dual(algorithm: &str) -> Config {
        let farm = format!(
            "serverfarms:
  web6:
    algorithm: {algorithm}
    reals:
      - {{ address: 2001:db8:2::11, port: 8080 }}
      - {{ address: 2001:db8:2::12, port: 8080, weight: 2 }}
      - {{ address: 2001:db8:2::13, port: 8080 }}
"
        );
        let vip = "vips:
  www6: { address: 2001:db8::10, port: 80, serverfarm: web6, sticky: { mode: source-ip, timeout: 10m, ipv6_prefix: 64 } }
";
        let src = BASE
            .replacen("serverfarms:\n", &farm, 1)
            .replacen("vips:\n", vip, 1);
        Config::parse(&src, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{src}"))
    }

    fn v6(s: &str) -> std::net::Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_vips_and_reals_are_programmed_in_network_order_beside_ipv4() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&dual("round-robin"), &mut m).unwrap();
        assert_eq!(m.vips.len(), 3, "two IPv4 VIPs and one IPv6 VIP");
        let www6 = &c.programmed().vips["www6"];
        assert_eq!(www6.addr, "[2001:db8::10]:80".parse().unwrap());
        let key = www6.key();
        // The bytes of the IPv6 header's destination, as the datapath reads them.
        assert_eq!(key.addr, v6("2001:db8::10").octets());
        assert_eq!((key.port_be, key.proto), (80u16.to_be(), PROTO_TCP));
        assert!(m.vips.contains_key(&key));
        assert_eq!(m.vip_addrs.get(&v6("2001:db8::10").octets()), Some(&1));
        assert_eq!(m.vip_addrs.get(&v4_mapped([198, 51, 100, 10])), Some(&2));
        let real_key = RealKey {
            farm: "web6".into(),
            addr: v6("2001:db8:2::12").into(),
            port: 8080,
        };
        assert_eq!(real_key.endpoint().to_string(), "[2001:db8:2::12]:8080");
        let (id, real) = c.programmed().reals[&real_key];
        assert_eq!(m.reals[&id], real);
        assert_eq!(real.addr, v6("2001:db8:2::12").octets());
        assert_eq!((u16::from_be(real.port_be), real.weight), (8080, 2));
        // Health and admin state by IPv6 address, with or without the port.
        c.set_health(&real_key, false, &mut m).unwrap();
        assert_eq!(m.reals[&id].state, REAL_DOWN);
        let drained = c
            .set_admin(
                "web6",
                v6("2001:db8:2::11"),
                Some(8080),
                AdminState::Drain,
                &mut m,
            )
            .unwrap();
        assert_eq!(drained[0].endpoint().to_string(), "[2001:db8:2::11]:8080");
        let err = c
            .set_admin(
                "web6",
                v6("2001:db8:2::99"),
                Some(8080),
                AdminState::Drain,
                &mut m,
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no real [2001:db8:2::99]:8080 in serverfarm web6"
        );
    }

    #[test]
    fn sticky_ipv6_prefix_goes_to_the_datapath_in_the_vip_flags() {
        let mut c = Control::new();
        let mut m = MemMaps::default();
        let cfg = dual("round-robin");
        c.apply(&cfg, &mut m).unwrap();
        let www6 = &c.programmed().vips["www6"];
        assert_eq!(
            (www6.sticky_secs, www6.sticky_prefix),
            (Some(600), Some(64))
        );
        let info = m.vips[&www6.key()];
        assert_eq!(
            (info.flags, info.sticky_secs),
            (VIP_STICKY | 64 << VIP_STICKY_PREFIX_SHIFT, 600)
        );
        assert_eq!(lb_common::sticky_prefix(info.flags), 64);
        assert_eq!(c.programmed().vips["www"].sticky_prefix, None);
        let v4 = m.vips[&c.programmed().vips["www"].key()];
        assert_eq!(lb_common::sticky_prefix(v4.flags), 0, "the whole address");
    }

    /// Which real owns each slot of `farm`'s ring, by address.
    fn ring_owners(c: &Control, farm: &str) -> Vec<SocketAddr> {
        let by_id: HashMap<u32, SocketAddr> = c
            .programmed()
            .reals
            .iter()
            .map(|(k, (id, _))| (*id, k.endpoint()))
            .collect();
        c.programmed().farms[farm]
            .ring
            .iter()
            .map(|id| by_id[id])
            .collect()
    }

    #[test]
    fn ipv6_rings_are_the_same_on_every_node() {
        for algorithm in ["maglev", "source-hash"] {
            let mut a = Control::new();
            let mut b = Control::new();
            let (mut ma, mut mb) = (MemMaps::default(), MemMaps::default());
            // Node B numbers its reals otherwise, lists them in another
            // order and spells one address another way.
            b.apply(&cfg(BASE), &mut mb).unwrap();
            a.apply(&dual(algorithm), &mut ma).unwrap();
            let reordered = dual(algorithm);
            let mut src = serde_yaml::to_string(&reordered).unwrap();
            src = src.replace("2001:db8:2::13", "2001:0db8:0002:0000:0000:0000:0000:0013");
            assert!(src.contains(":0013"), "{src}");
            let mut other = Config::parse(&src, "b.yaml").unwrap();
            other.serverfarms.get_mut("web6").unwrap().reals.reverse();
            b.apply(&other, &mut mb).unwrap();
            let ids = |c: &Control| -> Vec<u32> {
                c.programmed()
                    .reals
                    .iter()
                    .filter(|(k, _)| k.farm == "web6")
                    .map(|(_, (id, _))| *id)
                    .collect()
            };
            assert_ne!(ids(&a), ids(&b), "{algorithm}: different ids");
            let owners = ring_owners(&a, "web6");
            assert_eq!(owners.len(), 65_537);
            assert_eq!(
                owners,
                ring_owners(&b, "web6"),
                "{algorithm}: same real owns every slot"
            );
            // Weighted 1:2:1 over IPv6 members, by their `[addr]:port` identity.
            let share = |r: &str| {
                let r: SocketAddr = r.parse().unwrap();
                owners.iter().filter(|&&o| o == r).count() as f64 / owners.len() as f64
            };
            assert!(
                (share("[2001:db8:2::12]:8080") - 0.5).abs() < 0.01,
                "{algorithm}"
            );
            assert!(
                (share("[2001:db8:2::11]:8080") - 0.25).abs() < 0.01,
                "{algorithm}"
            );
        }
    }

    #[test]
    fn ring_keys_are_endpoints_ipv4_as_before() {
        let key = |addr: IpAddr| RealKey {
            farm: "web".into(),
            addr,
            port: 8080,
        };
        // IPv4 unchanged (running clusters keep their rings), IPv6 bracketed
        // and canonical whatever the config's spelling.
        assert_eq!(
            ring_key(&key(Ipv4Addr::new(203, 0, 113, 11).into())),
            "203.0.113.11:8080"
        );
        assert_eq!(
            ring_key(&key("2001:0db8:0:0::11".parse().unwrap())),
            "[2001:db8::11]:8080"
        );
    }

    #[test]
    fn an_adopting_agent_reads_ipv6_entries_back() {
        let cfg = dual("maglev");
        let mut c = Control::new();
        let mut m = MemMaps::default();
        c.apply(&cfg, &mut m).unwrap();
        let before = c.programmed().clone();
        let mut n = Control::adopt(&cfg, &read_back(&m));
        m.log.clear();
        n.apply(&cfg, &mut m).unwrap();
        assert!(
            m.log
                .iter()
                .all(|l| l.starts_with("sched") || l.starts_with("farm")),
            "no VIP, real or ring is rewritten: {:?}",
            m.log
        );
        assert_eq!(n.programmed().vips, before.vips);
        assert_eq!(n.programmed().reals, before.reals);
    }
}
