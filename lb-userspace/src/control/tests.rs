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
