//! Between the flow table and the sync stream: on the active node, flows and
//! the datapath's `SYNC` records become wire events; on the standby, events
//! become entries in its own `FLOWS`, both directions, exactly as its
//! datapath would have made them, so they forward the moment it takes over.
//! A flow the active node reports half-open (`syn`) goes to the standby's
//! `EMBRYOS`, as its own datapath would keep it: a SYN flood streamed from
//! the active node then recycles only the standby's half-open copies, never
//! its copies of established flows.
//!
//! Reals are matched by address within the VIP's serverfarm, never by id:
//! the two agents number their reals independently.
//!
//! Both families alike: a flow's addresses go into the maps in their map
//! form (`to_map_addr`: IPv4 as v4-mapped), the one the datapath keys by.
//! Only a peer still on wire version 1 cannot take IPv6 flows; the node
//! holds them back then (wire.rs, Versions).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use anyhow::{Context, Result};
use lb_common::{
    DIR_FORWARD, DIR_REVERSE, FLOW_COUNTED, Flow, FlowKey, ST_SYN, SYNC_CREATE, SYNC_REMOVE,
    SYNC_UPDATE, SyncEvent, to_map_addr,
};

use super::wire::{FlowEvent, FlowTuple, Upsert};
use crate::control::Programmed;
use crate::datapath::KernelMaps;
use crate::flowtable::{self, Joined, sock};

/// Lookups by address and by id, rebuilt when the config changes.
#[derive(Debug, Default)]
pub struct Index {
    /// (VIP address, protocol) -> (vip id, farm).
    vips: HashMap<(SocketAddr, u8), (u32, String)>,
    /// (farm, real address) -> real id.
    reals: HashMap<(String, SocketAddr), u32>,
    /// real id -> real address.
    real_addrs: HashMap<u32, SocketAddr>,
}

impl Index {
    pub fn new(p: &Programmed) -> Index {
        let mut idx = Index::default();
        for v in p.vips.values() {
            idx.vips.insert((v.addr, v.proto), (v.id, v.farm.clone()));
        }
        for (k, (id, _)) in &p.reals {
            idx.reals.insert((k.farm.clone(), k.endpoint()), *id);
            idx.real_addrs.insert(*id, k.endpoint());
        }
        idx
    }

    /// The local (vip id, real id) for a flow of `vip` served by `real`.
    fn resolve(&self, vip: SocketAddr, proto: u8, real: SocketAddr) -> Option<(u32, u32)> {
        let (vip_id, farm) = self.vips.get(&(vip, proto))?;
        let real_id = self.reals.get(&(farm.clone(), real))?;
        Some((*vip_id, *real_id))
    }
}

/// The forward key of a flow.
pub fn forward_key(t: &FlowTuple) -> FlowKey {
    FlowKey {
        src_addr: to_map_addr(t.client().ip()),
        dst_addr: to_map_addr(t.vip().ip()),
        src_port_be: t.client().port().to_be(),
        dst_port_be: t.vip().port().to_be(),
        proto: t.proto(),
        _pad: [0; 3],
    }
}

/// The flow a forward key names; `None` for a key whose two addresses are
/// of different families, which the datapath never writes.
pub fn tuple_of(k: &FlowKey) -> Option<FlowTuple> {
    FlowTuple::new(
        sock(&k.src_addr, k.src_port_be),
        sock(&k.dst_addr, k.dst_port_be),
        k.proto,
    )
}

/// A datapath record as a wire event. `None` for a real this agent does
/// not know (retired by a reload while the record was in the ring).
pub fn from_record(rec: &SyncEvent, idx: &Index) -> Option<FlowEvent> {
    let key = tuple_of(&rec.key)?;
    match rec.kind {
        SYNC_CREATE | SYNC_UPDATE => {
            let real = *idx.real_addrs.get(&rec.real_id)?;
            Upsert::new(key, real, rec.state, 0, 0).map(FlowEvent::Upsert)
        }
        SYNC_REMOVE => Some(FlowEvent::Remove { key }),
        _ => None,
    }
}

/// A flow of the table as an upsert with its exact ages (bulk copies and
/// refreshes).
pub fn upsert_of(f: &Joined, now_ns: u64) -> Option<FlowEvent> {
    Upsert::new(
        tuple_of(&f.fwd_key)?,
        sock(&f.fwd.nat_addr, f.fwd.nat_port_be),
        f.state(),
        now_ns.saturating_sub(f.fwd.created_ns) / 1_000_000,
        now_ns.saturating_sub(f.last_ns()) / 1_000_000,
    )
    .map(FlowEvent::Upsert)
}

/// Every flow of the table, as the events of a bulk copy.
pub fn snapshot(
    flows: &aya::maps::HashMap<aya::maps::MapData, FlowKey, Flow>,
    now_ns: u64,
) -> Result<Vec<FlowEvent>> {
    let table = flowtable::read(flows)?;
    Ok(table
        .flows
        .iter()
        .filter_map(|f| upsert_of(f, now_ns))
        .collect())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyCounters {
    pub upserts: u64,
    pub removes: u64,
    /// Events naming a VIP or real this node does not have (configs differ).
    pub unmatched: u64,
    /// Flows the last bulk copy did not name, removed at its end.
    pub stale_removed: u64,
    pub bulk_copies: u64,
    pub errors: u64,
}

/// What applying one event finished.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Flow,
    /// A bulk copy is now complete: `BulkEnd` applied.
    BulkComplete {
        total: u64,
        stale_removed: u64,
    },
}

/// The standby's writer into its own table. Upserts are staged and written
/// by [`Applier::flush`], two batch updates for a datagram's worth of flows
/// instead of two map writes per flow; anything else flushes first, so the
/// table sees the events in stream order.
#[derive(Debug, Default)]
pub struct Applier {
    /// The flows named since the current bulk copy started.
    bulk: Option<HashSet<FlowTuple>>,
    /// During a bulk copy: every key the table held when it started. A flow
    /// of the copy whose keys are not in it is new, and is written without
    /// looking up what it would replace (on a fresh standby, every flow: two
    /// map lookups saved per flow).
    present: Option<HashSet<FlowKey>>,
    staged: Staged,
    pub counters: ApplyCounters,
    /// A cluster node's: a peer's copy adds to a table that also holds this
    /// node's own flows and other peers', so nothing is removed at its end.
    additive: bool,
}

/// Flow entries waiting for [`Applier::flush`].
#[derive(Debug, Default)]
struct Staged {
    /// Forward keys staged, so a second event for the same flow flushes
    /// the first (its update must see the first's entry).
    fwd_keys: HashSet<FlowKey>,
    rev: (Vec<FlowKey>, Vec<Flow>),
    fwd: (Vec<FlowKey>, Vec<Flow>),
    /// Flows counted in (+) or out (−) per real id: `EXPIRED` adjustments.
    counted: HashMap<u32, i64>,
}

impl Applier {
    /// An applier for a cluster node (see `additive`).
    pub fn additive() -> Applier {
        Applier {
            additive: true,
            ..Applier::default()
        }
    }

    /// A bulk copy has started and not ended.
    pub fn in_bulk(&self) -> bool {
        self.bulk.is_some()
    }

    /// Forgets a copy in progress (the stream restarted).
    pub fn abandon_bulk(&mut self) {
        self.bulk = None;
        self.present = None;
    }

    /// Writes the staged upserts: every reverse entry, then every forward
    /// one (a forward entry without its reverse would send clients to a
    /// real whose replies are not ours), then the active counts.
    pub fn flush(&mut self, maps: &mut KernelMaps) -> Result<()> {
        let s = std::mem::take(&mut self.staged);
        if !s.fwd.0.is_empty() {
            flowtable::insert_batch(&mut maps.flows, &s.rev.0, &s.rev.1)
                .context("writing synced flows (reply side)")?;
            flowtable::insert_batch(&mut maps.flows, &s.fwd.0, &s.fwd.1)
                .context("writing synced flows")?;
        }
        for (id, n) in s.counted {
            if n > 0 {
                maps.count_in(id, n as u64)?;
            } else if n < 0 {
                maps.count_out(id, n.unsigned_abs())?;
            }
        }
        Ok(())
    }

    pub fn apply(
        &mut self,
        maps: &mut KernelMaps,
        idx: &Index,
        ev: &FlowEvent,
        now_ns: u64,
    ) -> Result<Applied> {
        // In stream order: anything but an upsert of a flow not yet staged
        // sees the staged writes first.
        let flush_first = match ev {
            FlowEvent::Upsert(u) => self.staged.fwd_keys.contains(&forward_key(u.key())),
            _ => true,
        };
        if flush_first {
            self.flush(maps)?;
        }
        match ev {
            FlowEvent::BulkStart if self.additive => {
                self.bulk = Some(HashSet::new());
                Ok(Applied::Flow)
            }
            FlowEvent::BulkEnd { total } if self.additive => {
                self.bulk = None;
                self.counters.bulk_copies += 1;
                Ok(Applied::BulkComplete {
                    total: *total,
                    stale_removed: 0,
                })
            }
            FlowEvent::BulkStart => {
                self.bulk = Some(HashSet::new());
                // Nothing else writes this table meanwhile (a standby's
                // datapath passes every packet), so the walk sees it whole.
                let mut present = HashSet::new();
                flowtable::for_each(&maps.flows, |k, _| {
                    present.insert(*k);
                })?;
                self.present = Some(present);
                Ok(Applied::Flow)
            }
            FlowEvent::BulkEnd { total } => {
                self.present = None;
                let named = self.bulk.take().unwrap_or_default();
                let stale = remove_unnamed(maps, &named)?;
                self.counters.stale_removed += stale;
                self.counters.bulk_copies += 1;
                Ok(Applied::BulkComplete {
                    total: *total,
                    stale_removed: stale,
                })
            }
            FlowEvent::Upsert(u) => {
                let (key, real, state) = (u.key(), u.real(), &u.state);
                if let Some(named) = self.bulk.as_mut() {
                    named.insert(*key);
                }
                let Some((vip_id, real_id)) = idx.resolve(key.vip(), key.proto(), real) else {
                    self.counters.unmatched += 1;
                    return Ok(Applied::Flow);
                };
                let created = now_ns.saturating_sub(u.created_age_ms.saturating_mul(1_000_000));
                let last = now_ns.saturating_sub(u.idle_ms.saturating_mul(1_000_000));
                let fk = forward_key(key);
                if *state == ST_SYN {
                    half_open(maps, &fk, real, vip_id, real_id, created, last)?;
                    self.counters.upserts += 1;
                    return Ok(Applied::Flow);
                }
                // Assured on the active node: its half-open copy goes.
                remove_half_open(maps, &fk);
                self.staged.upsert(
                    maps,
                    self.present.as_ref(),
                    key,
                    real,
                    vip_id,
                    real_id,
                    *state,
                    created,
                    last,
                )?;
                self.counters.upserts += 1;
                Ok(Applied::Flow)
            }
            FlowEvent::Remove { key } => {
                if let Some(named) = self.bulk.as_mut() {
                    named.remove(key);
                }
                remove(maps, &forward_key(key))?;
                self.counters.removes += 1;
                Ok(Applied::Flow)
            }
        }
    }
}

impl Staged {
    /// Stages both directions of a flow. An existing flow keeps its counters
    /// and creation time; one that moved to another real loses its old reply
    /// entry at once, like a `reassign` in the datapath. `present`: the keys
    /// that may exist (none else is looked up); `None`: any may.
    #[allow(clippy::too_many_arguments)]
    fn upsert(
        &mut self,
        maps: &mut KernelMaps,
        present: Option<&HashSet<FlowKey>>,
        t: &FlowTuple,
        real: SocketAddr,
        vip_id: u32,
        real_id: u32,
        state: u8,
        created: u64,
        last: u64,
    ) -> Result<()> {
        let fk = forward_key(t);
        let real_addr = to_map_addr(real.ip());
        let may_exist = |k: &FlowKey| present.is_none_or(|p| p.contains(k));
        let old = may_exist(&fk)
            .then(|| maps.flows.get(&fk, 0).ok())
            .flatten()
            .filter(|f| f.dir == DIR_FORWARD);
        let mut fwd = match old {
            Some(o) if o.real_id == real_id && o.nat_addr == real_addr => Flow {
                state,
                last_ns: o.last_ns.max(last),
                ..o
            },
            _ => {
                if let Some(o) = old {
                    let _ = maps.flows.remove(&fk.reverse(o.nat_addr, o.nat_port_be));
                    if o.flags & FLOW_COUNTED != 0 {
                        *self.counted.entry(o.real_id).or_default() -= 1;
                    }
                }
                new_forward(real, vip_id, real_id, state, created, last)
            }
        };
        if fwd.flags & FLOW_COUNTED == 0 {
            fwd.flags |= FLOW_COUNTED;
            *self.counted.entry(real_id).or_default() += 1;
        }
        let rk = fk.reverse(fwd.nat_addr, fwd.nat_port_be);
        let old_rev = may_exist(&rk)
            .then(|| maps.flows.get(&rk, 0).ok())
            .flatten()
            .filter(|r| r.dir == DIR_REVERSE);
        let rev = match old_rev {
            Some(r) => Flow {
                state,
                last_ns: r.last_ns.max(last),
                ..r
            },
            None => new_reverse(&fk, &fwd),
        };
        self.rev.0.push(rk);
        self.rev.1.push(rev);
        self.fwd.0.push(fk);
        self.fwd.1.push(fwd);
        self.fwd_keys.insert(fk);
        Ok(())
    }
}

/// A new flow's forward entry, as the datapath's `flow::create` makes it
/// (not counted active).
fn new_forward(
    real: SocketAddr,
    vip_id: u32,
    real_id: u32,
    state: u8,
    created: u64,
    last: u64,
) -> Flow {
    Flow {
        nat_addr: to_map_addr(real.ip()),
        nat_port_be: real.port().to_be(),
        dir: DIR_FORWARD,
        state,
        real_id,
        vip_id,
        flags: 0,
        created_ns: created,
        last_ns: last,
        ..Flow::default()
    }
}

/// The reply entry of the forward entry `fwd` keyed `fk`: back to the VIP,
/// counters fresh.
fn new_reverse(fk: &FlowKey, fwd: &Flow) -> Flow {
    Flow {
        nat_addr: fk.dst_addr,
        nat_port_be: fk.dst_port_be,
        dir: DIR_REVERSE,
        flags: 0,
        packets: 0,
        bytes: 0,
        seq_next: 0,
        ..*fwd
    }
}

/// Writes a half-open flow's two entries into `EMBRYOS`, uncounted, as
/// the datapath's `flow::create` does.
fn half_open(
    maps: &mut KernelMaps,
    fk: &FlowKey,
    real: SocketAddr,
    vip_id: u32,
    real_id: u32,
    created: u64,
    last: u64,
) -> Result<()> {
    let fwd = new_forward(real, vip_id, real_id, ST_SYN, created, last);
    maps.embryos
        .insert(
            fk.reverse(fwd.nat_addr, fwd.nat_port_be),
            new_reverse(fk, &fwd),
            0,
        )
        .context("writing a synced half-open flow (reply side)")?;
    maps.embryos
        .insert(fk, fwd, 0)
        .context("writing a synced half-open flow")?;
    Ok(())
}

/// Removes both entries of the flow whose forward key is `fk` from `table`;
/// its forward entry, if it was there.
fn remove_pair(
    table: &mut aya::maps::HashMap<aya::maps::MapData, FlowKey, Flow>,
    fk: &FlowKey,
) -> Option<Flow> {
    let f = table.get(fk, 0).ok().filter(|f| f.dir == DIR_FORWARD)?;
    let _ = table.remove(&fk.reverse(f.nat_addr, f.nat_port_be));
    let _ = table.remove(fk);
    Some(f)
}

/// Removes a flow's half-open copy, if any.
fn remove_half_open(maps: &mut KernelMaps, fk: &FlowKey) {
    remove_pair(&mut maps.embryos, fk);
}

/// Removes both directions of a flow, if present, from either table.
fn remove(maps: &mut KernelMaps, fk: &FlowKey) -> Result<()> {
    remove_half_open(maps, fk);
    if let Some(f) = remove_pair(&mut maps.flows, fk)
        && f.flags & FLOW_COUNTED != 0
    {
        maps.count_out(f.real_id, 1)?;
    }
    Ok(())
}

/// Removes every flow not in `named`: what the peer no longer has (an
/// IPv6 flow a version 1 peer could not name included).
fn remove_unnamed(maps: &mut KernelMaps, named: &HashSet<FlowTuple>) -> Result<u64> {
    let table = flowtable::read(&maps.flows)?;
    let mut n = 0;
    for f in &table.flows {
        if tuple_of(&f.fwd_key).is_none_or(|t| !named.contains(&t)) {
            remove(maps, &f.fwd_key)?;
            n += 1;
        }
    }
    for (k, _) in &table.lone_reverse {
        let _ = maps.flows.remove(k);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use lb_common::{PROTO_TCP, ST_ESTABLISHED};

    use super::*;
    use crate::ha::wire::{Key, Message, Receiver, Sender};

    fn key(client: IpAddr, vip: IpAddr) -> FlowKey {
        FlowKey {
            src_addr: to_map_addr(client),
            dst_addr: to_map_addr(vip),
            src_port_be: 40_000u16.to_be(),
            dst_port_be: 80u16.to_be(),
            proto: PROTO_TCP,
            _pad: [0; 3],
        }
    }

    /// A record of the datapath for a flow of `client` to `vip` served by
    /// `real`, through the wire and back: the peer's forward key and real.
    fn over_the_wire(client: IpAddr, vip: IpAddr, real: SocketAddr) -> (FlowKey, SocketAddr) {
        let mut idx = Index::default();
        idx.real_addrs.insert(7, real);
        let rec = SyncEvent {
            key: key(client, vip),
            real_id: 7,
            kind: SYNC_CREATE,
            state: ST_ESTABLISHED,
            ..SyncEvent::default()
        };
        let ev = from_record(&rec, &idx).expect("a flow of one family is streamed");
        let k = Key::from_bytes(b"0123456789abcdef0123456789abcdef").expect("key");
        let (dgram, n) = Sender::new(k.clone(), 1, 1).seal_events(1, &[ev]);
        assert_eq!(n, 1);
        let Message::FlowBatch(batch) = Receiver::new(k, 2).open(&dgram).expect("opens").message
        else {
            panic!("not a batch");
        };
        let [FlowEvent::Upsert(u)] = batch.events[..] else {
            panic!("not one upsert: {:?}", batch.events);
        };
        assert_eq!(u.state, ST_ESTABLISHED);
        (forward_key(u.key()), u.real())
    }

    #[test]
    fn flows_of_both_families_round_trip_through_the_wire() {
        let c4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10));
        let r4: SocketAddr = "10.0.2.11:8080".parse().unwrap();
        assert_eq!(over_the_wire(c4, v4, r4), (key(c4, v4), r4));

        let c6: IpAddr = "2001:db8:c::2".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let r6: SocketAddr = "[2001:db8:2::11]:8080".parse().unwrap();
        let (fk, real) = over_the_wire(c6, v6, r6);
        assert_eq!(fk, key(c6, v6), "the peer writes the same IPv6 entry");
        assert_eq!(
            fk.src_addr,
            "2001:db8:c::2".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(real, r6);
    }

    #[test]
    fn a_key_or_real_of_mixed_families_is_not_streamed() {
        let c4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        assert_eq!(tuple_of(&key(c4, v6)), None);
        // A flow of IPv4 addresses naming an IPv6 real (a reload changed the
        // id's meaning): no upsert the peer could not place.
        let mut idx = Index::default();
        idx.real_addrs
            .insert(7, "[2001:db8:2::11]:80".parse().unwrap());
        let rec = SyncEvent {
            key: key(c4, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10))),
            real_id: 7,
            kind: SYNC_CREATE,
            ..SyncEvent::default()
        };
        assert_eq!(from_record(&rec, &idx), None);
    }
}
