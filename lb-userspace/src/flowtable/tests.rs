use super::*;

fn row(vip: &str, real: &str, client: &str, state: FlowState) -> FlowRow {
    FlowRow {
        client: client.into(),
        vip: vip.into(),
        real: real.into(),
        protocol: Protocol::Tcp,
        state,
        age_ms: 0,
        idle_ms: 0,
        packets_in: 0,
        bytes_in: 0,
        packets_out: 0,
        bytes_out: 0,
        half_open: false,
    }
}

#[test]
fn filters_match_address_with_or_without_port() {
    let r = row(
        "198.51.100.10:80",
        "203.0.113.11:8080",
        "192.0.2.2:40000",
        FlowState::Established,
    );
    assert!(
        Filter {
            vip: Some("198.51.100.10".into()),
            ..Default::default()
        }
        .matches(&r)
    );
    assert!(
        Filter {
            vip: Some("198.51.100.10:80".into()),
            ..Default::default()
        }
        .matches(&r)
    );
    assert!(
        !Filter {
            vip: Some("198.51.100.10:81".into()),
            ..Default::default()
        }
        .matches(&r)
    );
    assert!(
        !Filter {
            real: Some("203.0.113.1".into()),
            ..Default::default()
        }
        .matches(&r)
    );
    assert!(
        Filter {
            state: Some("established".into()),
            ..Default::default()
        }
        .matches(&r)
    );
    assert!(
        !Filter {
            state: Some("syn".into()),
            ..Default::default()
        }
        .matches(&r)
    );
}

#[test]
fn merged_state_is_the_later_one() {
    let k = FlowKey {
        proto: PROTO_TCP,
        ..Default::default()
    };
    let f = Flow {
        state: ST_ESTABLISHED,
        ..Default::default()
    };
    let r = Flow {
        state: ST_FIN,
        dir: DIR_REVERSE,
        ..Default::default()
    };
    let j = Joined {
        fwd_key: k,
        fwd: f,
        rev: Some((k, r)),
    };
    assert_eq!(j.state(), ST_FIN);
    let udp = Joined {
        fwd_key: FlowKey { proto: 17, ..k },
        fwd: f,
        rev: None,
    };
    assert_eq!(udp.state(), ST_UDP);
}

#[test]
fn human_durations() {
    assert_eq!(human_ms(12), "12ms");
    assert_eq!(human_ms(1500), "1.5s");
    assert_eq!(human_ms(61_000), "1m1s");
    assert_eq!(human_ms(3_660_000), "1h1m");
}

use lb_common::{PROTO_UDP, v4_mapped};

use super::query::{clear_in, count_in, list_in, mem::Mem};

/// Each way of joining reverse entries: kept from the first walk, by
/// lookups, by a second walk; and the thresholds as shipped.
fn tunings() -> [(&'static str, Tuning); 4] {
    let none_kept = Tuning {
        keep_min: 0,
        keep_per_candidate: 0,
        ..Tuning::default()
    };
    [
        ("default", Tuning::default()),
        (
            "kept",
            Tuning {
                keep_min: usize::MAX,
                ..Tuning::default()
            },
        ),
        (
            "lookups",
            Tuning {
                lookup_ratio: 0,
                ..none_kept
            },
        ),
        (
            "walk",
            Tuning {
                lookup_ratio: usize::MAX,
                ..none_kept
            },
        ),
    ]
}

/// One flow of a test table.
#[derive(Clone, Copy)]
struct F {
    client: ([u8; 4], u16),
    vip: ([u8; 4], u16),
    real: ([u8; 4], u16),
    proto: u8,
    fwd_state: u8,
    /// None: the reverse entry is missing (the LRU took it).
    rev_state: Option<u8>,
    counted: bool,
    real_id: u32,
    seed: u64,
}

fn fkey(a: ([u8; 4], u16), b: ([u8; 4], u16), proto: u8) -> FlowKey {
    FlowKey {
        src_addr: v4_mapped(a.0),
        dst_addr: v4_mapped(b.0),
        src_port_be: a.1.to_be(),
        dst_port_be: b.1.to_be(),
        proto,
        _pad: [0; 3],
    }
}

impl F {
    fn fwd_key(&self) -> FlowKey {
        fkey(self.client, self.vip, self.proto)
    }

    fn rev_key(&self) -> FlowKey {
        fkey(self.real, self.client, self.proto)
    }

    fn add(&self, m: &mut Mem) {
        let fwd = Flow {
            nat_addr: v4_mapped(self.real.0),
            nat_port_be: self.real.1.to_be(),
            dir: DIR_FORWARD,
            state: self.fwd_state,
            real_id: self.real_id,
            vip_id: 1,
            flags: if self.counted { FLOW_COUNTED } else { 0 },
            created_ns: 1_000_000 * (self.seed % 1000),
            last_ns: 2_000_000_000 + 1_000_000 * (self.seed % 777),
            packets: self.seed % 100,
            bytes: self.seed % 10_000,
            seq_next: 0,
            hop: Default::default(),
            _pad: 0,
        };
        m.map.insert(self.fwd_key(), fwd);
        if let Some(st) = self.rev_state {
            let rev = Flow {
                nat_addr: v4_mapped(self.vip.0),
                nat_port_be: self.vip.1.to_be(),
                dir: DIR_REVERSE,
                state: st,
                flags: 0,
                last_ns: 2_000_000_000 + 1_000_000 * (self.seed % 911),
                packets: self.seed % 50,
                bytes: self.seed % 5_000,
                ..fwd
            };
            m.map.insert(self.rev_key(), rev);
        }
    }
}

/// xorshift64*: deterministic tables without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const VIPS: [([u8; 4], u16); 3] = [
    ([198, 51, 100, 10], 80),
    ([198, 51, 100, 10], 443),
    ([198, 51, 100, 11], 53),
];

fn real_of(i: u64) -> ([u8; 4], u16) {
    ([203, 0, 113, 11 + i as u8], 8080)
}

/// `n` flows: mixed states, some reverse halves missing, some orphaned
/// reverse halves, and flows sharing a reverse key (one client port to two
/// VIP ports on one real).
fn table(n: usize, seed: u64) -> (Mem, Vec<F>) {
    let mut rng = Rng(seed | 1);
    let mut m = Mem::default();
    let mut flows = Vec::new();
    for i in 0..n {
        let vip = VIPS[rng.below(3) as usize];
        let proto = if vip.1 == 53 { PROTO_UDP } else { PROTO_TCP };
        let real = rng.below(4);
        let states = [ST_SYN, ST_ESTABLISHED, ST_FIN, ST_CLOSED];
        let (fwd_state, rev_state) = if proto == PROTO_TCP {
            (states[rng.below(4) as usize], states[rng.below(4) as usize])
        } else {
            (ST_UDP, ST_UDP)
        };
        let f = F {
            client: (
                [10, rng.below(3) as u8, 0, (i % 250) as u8],
                1024 + (i / 250) as u16,
            ),
            vip,
            real: real_of(real),
            proto,
            fwd_state,
            rev_state: (rng.below(10) != 0).then_some(rev_state),
            counted: rng.below(2) == 0,
            real_id: real as u32,
            seed: rng.next(),
        };
        f.add(&mut m);
        flows.push(f);
    }
    // The same client port to www:80 and www:443 on one real: two
    // forward entries, one reverse key, whose value names www:443.
    for (vip, rev) in [(VIPS[0], None), (VIPS[1], Some(ST_ESTABLISHED))] {
        let f = F {
            client: ([10, 9, 9, 9], 5555),
            vip,
            real: real_of(0),
            proto: PROTO_TCP,
            fwd_state: ST_ESTABLISHED,
            rev_state: rev,
            counted: true,
            real_id: 0,
            seed: 7,
        };
        f.add(&mut m);
        flows.push(f);
    }
    // An orphaned reverse half.
    let orphan = F {
        client: ([10, 8, 8, 8], 4444),
        vip: VIPS[0],
        real: real_of(1),
        proto: PROTO_TCP,
        fwd_state: ST_ESTABLISHED,
        rev_state: Some(ST_ESTABLISHED),
        counted: true,
        real_id: 1,
        seed: 9,
    };
    orphan.add(&mut m);
    m.map.remove(&orphan.fwd_key());
    (m, flows)
}

/// The CLI's behaviour before streaming: join everything, build every
/// row, filter the strings, sort by parsed addresses.
fn reference(src: &Mem, filter: &Filter, limit: Option<usize>, now: u64) -> Vec<FlowRow> {
    let t = read_from(src).unwrap();
    let mut rows: Vec<_> = t
        .flows
        .iter()
        .map(|f| FlowRow::new(f, now))
        .filter(|r| filter.matches(r))
        .collect();
    let addr = |s: &str| s.parse::<SocketAddr>().ok();
    rows.sort_by_cached_key(|r| (addr(&r.vip), addr(&r.real), addr(&r.client), r.protocol));
    rows.truncate(limit.unwrap_or(usize::MAX));
    rows
}

fn filters() -> Vec<Filter> {
    let f =
        |vip: Option<&str>, real: Option<&str>, client: Option<&str>, state: Option<&str>| Filter {
            vip: vip.map(Into::into),
            real: real.map(Into::into),
            client: client.map(Into::into),
            state: state.map(Into::into),
        };
    let mut out = vec![
        f(None, None, None, None),
        f(Some("198.51.100.10"), None, None, None),
        f(Some("198.51.100.10:443"), None, None, None),
        f(Some("198.51.100.11:53"), None, None, Some("udp")),
        f(None, Some("203.0.113.12"), None, None),
        f(None, Some("203.0.113.12:8080"), None, Some("established")),
        f(None, Some("203.0.113.12:8081"), None, None),
        f(None, None, Some("10.1.0.7"), None),
        f(None, None, Some("10.9.9.9:5555"), None),
        f(None, None, Some("10.9.9.9:5555"), Some("established")),
        f(
            Some("198.51.100.10:80"),
            Some("203.0.113.11"),
            None,
            Some("fin"),
        ),
    ];
    for st in ["syn", "established", "fin", "closed", "udp"] {
        out.push(f(None, None, None, Some(st)));
        out.push(f(None, None, Some("10.2.0.3"), Some(st)));
    }
    out
}

#[test]
fn count_and_list_agree_with_joining_everything() {
    let now = 9_000_000_000;
    for seed in [1, 2, 3] {
        let (m, _) = table(3000, seed);
        for filter in filters() {
            let q = filter.compile().unwrap();
            let want = reference(&m, &filter, None, now);
            for (how, t) in tunings() {
                let ctx = format!("{how}: {filter:?}");
                assert_eq!(count_in(&m, &q, &t).unwrap(), want.len(), "count {ctx}");
                assert_eq!(list_in(&m, &q, None, now, &t).unwrap(), want, "list {ctx}");
                for limit in [0, 1, 7, 100, 5000] {
                    assert_eq!(
                        list_in(&m, &q, Some(limit), now, &t).unwrap(),
                        reference(&m, &filter, Some(limit), now),
                        "list {ctx} limit {limit}"
                    );
                }
            }
        }
    }
}

#[test]
fn each_way_of_joining_walks_and_looks_up_as_planned() {
    let (m, _) = table(3000, 5);
    let runs = |t: &Tuning, f: &Filter| {
        let (scans, gets) = (m.scans.get(), m.gets.get());
        count_in(&m, &f.compile().unwrap(), t).unwrap();
        (m.scans.get() - scans, m.gets.get() - gets)
    };
    let established = Filter {
        state: Some("established".into()),
        ..Default::default()
    };
    let [default, _, lookups, walk] = tunings().map(|t| t.1);
    // Kept: one walk, no lookups (the two flows sharing a reverse key
    // included).
    assert_eq!(runs(&default, &established), (1, 0));
    let (scans, gets) = runs(&lookups, &established);
    assert_eq!(scans, 1);
    assert!(gets > 100, "{gets} lookups");
    assert_eq!(runs(&walk, &established), (2, 0));
    // No state filter: counting joins nothing.
    assert_eq!(runs(&walk, &Filter::default()), (1, 0));
    // Few candidates, many reverse entries past the budget: lookups.
    let few = Tuning {
        keep_min: 10,
        ..Tuning::default()
    };
    let syn = Filter {
        state: Some("syn".into()),
        ..Default::default()
    };
    let (scans, gets) = runs(&few, &syn);
    assert_eq!(scans, 1);
    assert!(gets > 0);
}

#[test]
fn shared_reverse_key_belongs_to_the_vip_it_names() {
    let (m, _) = table(0, 1);
    let q = Filter::default().compile().unwrap();
    let rows = list_in(&m, &q, None, 0, &Tuning::default()).unwrap();
    let by_vip = |v: &str| rows.iter().find(|r| r.vip == v).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    // `F::add`: packets_out is seed % 50.
    assert_eq!(by_vip("198.51.100.10:443").packets_out, 7);
    assert_eq!(by_vip("198.51.100.10:80").packets_out, 0);
    let t = read_from(&m).unwrap();
    assert_eq!(t.flows.len(), 2);
    assert_eq!(t.flows.iter().filter(|f| f.rev.is_some()).count(), 1);
    assert_eq!(t.lone_reverse.len(), 1);
}

#[test]
fn read_pairs_each_forward_with_its_reverse() {
    let (m, flows) = table(2000, 11);
    let t = read_from(&m).unwrap();
    assert_eq!(t.flows.len(), flows.len());
    for j in &t.flows {
        let f = flows.iter().find(|f| f.fwd_key() == j.fwd_key).unwrap();
        let shared = f.client.0 == [10, 9, 9, 9];
        if !shared {
            assert_eq!(j.rev.map(|r| r.0), f.rev_state.map(|_| f.rev_key()));
        }
    }
    // The orphan only.
    assert_eq!(t.lone_reverse.len(), 1);
    assert_eq!(
        t.lone_reverse[0].0,
        fkey(real_of(1), ([10, 8, 8, 8], 4444), PROTO_TCP)
    );
}

#[test]
fn a_reverse_entry_of_another_real_is_lone() {
    let f = F {
        client: ([10, 0, 0, 1], 1000),
        vip: VIPS[0],
        real: real_of(0),
        proto: PROTO_TCP,
        fwd_state: ST_ESTABLISHED,
        rev_state: Some(ST_ESTABLISHED),
        counted: true,
        real_id: 0,
        seed: 1,
    };
    // Each `Mem` walks in its own (random) order: try many.
    for _ in 0..64 {
        let mut m = Mem::default();
        // The previous real's reverse entry, still there.
        F {
            real: real_of(1),
            ..f
        }
        .add(&mut m);
        f.add(&mut m);
        let t = read_from(&m).unwrap();
        assert_eq!(t.flows.len(), 1);
        assert_eq!(t.flows[0].rev.unwrap().0, f.rev_key());
        assert_eq!(t.lone_reverse.len(), 1);
        assert_eq!(t.lone_reverse[0].0, fkey(real_of(1), f.client, PROTO_TCP));
    }
}

fn entries_of(m: &Mem, filter: &Filter) -> (usize, Vec<FlowKey>) {
    let want = reference(m, filter, None, 0);
    let t = read_from(m).unwrap();
    let mut keys = Vec::new();
    for j in &t.flows {
        if filter.matches(&FlowRow::new(j, 0)) {
            keys.push(j.fwd_key);
            keys.extend(j.rev.map(|r| r.0));
        }
    }
    assert_eq!(
        want.len(),
        keys.len() - keys.iter().filter(|k| m.map[k].dir == DIR_REVERSE).count()
    );
    (want.len(), keys)
}

#[test]
fn clear_removes_both_halves_of_matching_flows_only() {
    for (filter, (how, t)) in filters()
        .into_iter()
        .flat_map(|f| tunings().map(|t| (f.clone(), t)))
    {
        let (mut m, flows) = table(1500, 21);
        let before = m.map.len();
        let (n, keys) = entries_of(&m, &filter);
        let mut uncounted = std::collections::HashMap::<u32, u64>::new();
        for k in &keys {
            let v = m.map[k];
            if v.dir == DIR_FORWARD && v.flags & FLOW_COUNTED != 0 {
                *uncounted.entry(v.real_id).or_default() += 1;
            }
        }
        let orphan = fkey(real_of(1), ([10, 8, 8, 8], 4444), PROTO_TCP);
        let orphan_goes = filter.state.is_none()
            && filter
                .compile()
                .unwrap()
                .reverse_matches(&orphan, &m.map[&orphan]);
        let c = clear_in(&mut m, &filter.compile().unwrap(), &t).unwrap();
        assert_eq!(c.flows, n, "{how}: {filter:?}");
        assert_eq!(c.uncounted, uncounted, "{how}: {filter:?}");
        for k in &keys {
            assert!(!m.map.contains_key(k), "{how}: {filter:?}: {k:?} left");
        }
        assert_eq!(
            m.map.len(),
            before - keys.len() - usize::from(orphan_goes),
            "{how}: {filter:?}: removed more than the matches"
        );
        assert_eq!(count_in(&m, &filter.compile().unwrap(), &t).unwrap(), 0);
        let _ = flows;
    }
}

#[test]
fn clear_counts_only_what_it_removed() {
    let (mut m, _) = table(200, 3);
    let q = Filter::default().compile().unwrap();
    let t = Tuning::default();
    let first = clear_in(&mut m, &q, &t).unwrap();
    assert_eq!(first.flows, 202);
    assert!(m.map.is_empty());
    assert_eq!(clear_in(&mut m, &q, &t).unwrap(), Cleared::default());
}

#[test]
fn filters_compile_or_say_what_is_wrong() {
    let q = Filter {
        vip: Some("198.51.100.10:80".into()),
        real: Some("203.0.113.11".into()),
        client: Some("[2001:db8::1]:443".into()),
        state: Some("fin".into()),
    }
    .compile()
    .unwrap();
    assert_eq!(
        q.vip,
        Some(AddrMatch {
            addr: v4_mapped([198, 51, 100, 10]),
            port_be: Some(80u16.to_be())
        })
    );
    assert_eq!(q.real.unwrap().port_be, None);
    assert_eq!(
        q.client.unwrap().addr,
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
    );
    assert_eq!(q.state, Some(ST_FIN));
    for (bad, what) in [
        (
            Filter {
                vip: Some("www".into()),
                ..Default::default()
            },
            "--vip www",
        ),
        (
            Filter {
                client: Some("10.0.0.1:x".into()),
                ..Default::default()
            },
            "--client",
        ),
        (
            Filter {
                state: Some("open".into()),
                ..Default::default()
            },
            "--state open",
        ),
    ] {
        let e = bad.compile().unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
    }
    assert_eq!(parse_state("unknown"), None);
}

#[test]
fn state_by_forward_entry() {
    use super::query::Verdict::*;
    let q = |s: Option<u8>| Compiled {
        state: s,
        ..Default::default()
    };
    assert_eq!(q(None).by_forward(PROTO_TCP, ST_FIN), Yes);
    assert_eq!(q(Some(ST_UDP)).by_forward(PROTO_UDP, ST_UDP), Yes);
    assert_eq!(q(Some(ST_UDP)).by_forward(PROTO_TCP, ST_SYN), No);
    assert_eq!(q(Some(ST_SYN)).by_forward(PROTO_UDP, ST_UDP), No);
    assert_eq!(q(Some(ST_ESTABLISHED)).by_forward(PROTO_TCP, ST_FIN), No);
    assert_eq!(
        q(Some(ST_ESTABLISHED)).by_forward(PROTO_TCP, ST_ESTABLISHED),
        Join
    );
    assert_eq!(q(Some(ST_ESTABLISHED)).by_forward(PROTO_TCP, ST_SYN), Join);
}

// Both tables: the sweep and `lb flows` over `FLOWS` and `EMBRYOS`.

const SEC: u64 = 1_000_000_000;
const NOW: u64 = 1000 * SEC;

/// A flow from 10.7.0.1:`port` to www:80 (TCP) or dns:53 (UDP), both
/// entries in `state`, on real id `real`.
fn flow(port: u16, proto: u8, state: u8, real: u32) -> F {
    F {
        client: ([10, 7, 0, 1], port),
        vip: if proto == PROTO_UDP { VIPS[2] } else { VIPS[0] },
        real: real_of(u64::from(real)),
        proto,
        fwd_state: state,
        rev_state: Some(state),
        counted: false,
        real_id: real,
        seed: u64::from(port),
    }
}

/// Adds `f`'s entries to `m` as VIP id `vip`'s, created `age` ago and
/// last seen `idle` ago.
fn put(m: &mut Mem, f: &F, vip: u32, age: u64, idle: u64) {
    f.add(m);
    for k in [f.fwd_key(), f.rev_key()] {
        if let Some(v) = m.map.get_mut(&k) {
            v.vip_id = vip;
            v.created_ns = NOW - age;
            v.last_ns = NOW - idle;
        }
    }
}

fn vips(ids: &[u32]) -> VipTimeouts {
    ids.iter().map(|&id| (id, Timeouts::default())).collect()
}

/// `sweep_tables` over the two tables; the flows it reported removed.
fn sweep_both(
    flows: &mut Mem,
    embryos: &mut Mem,
    vips: &VipTimeouts,
    unknown: Unknown<'_>,
) -> (Sweep, Vec<FlowKey>) {
    let mut removed = Vec::new();
    let s = sweep_tables(flows, Some(embryos), vips, unknown, NOW, &mut |f, gone| {
        if gone {
            removed.push(f.fwd_key);
        }
    })
    .unwrap();
    (s, removed)
}

#[test]
fn half_open_flows_expire_by_their_vips_syn_and_udp_timeouts() {
    // Default timeouts: syn 10 s, udp 60 s.
    let (mut flows, mut embryos) = (Mem::default(), Mem::default());
    let syn_stale = flow(1001, PROTO_TCP, ST_SYN, 1);
    let syn_live = flow(1002, PROTO_TCP, ST_SYN, 2);
    let udp_stale = flow(1003, PROTO_UDP, ST_UDP, 3);
    let udp_live = flow(1004, PROTO_UDP, ST_UDP, 4);
    // Caught the instant its copy went to FLOWS (which holds the count).
    let moving = F {
        counted: true,
        ..flow(1005, PROTO_TCP, ST_SYN, 5)
    };
    put(&mut embryos, &syn_stale, 1, 20 * SEC, 11 * SEC);
    put(&mut embryos, &syn_live, 1, 20 * SEC, 9 * SEC);
    put(&mut embryos, &udp_stale, 1, 90 * SEC, 61 * SEC);
    put(&mut embryos, &udp_live, 1, 90 * SEC, 59 * SEC);
    put(&mut embryos, &moving, 1, 20 * SEC, 11 * SEC);
    // FLOWS: an established flow idle as long as the stale SYNs stays;
    // a counted one in syn (picked up, then reset to syn) expires.
    let est = F {
        counted: true,
        ..flow(2001, PROTO_TCP, ST_ESTABLISHED, 6)
    };
    let syn_assured = F {
        counted: true,
        ..flow(2002, PROTO_TCP, ST_SYN, 7)
    };
    put(&mut flows, &est, 1, 20 * SEC, 11 * SEC);
    put(&mut flows, &syn_assured, 1, 20 * SEC, 11 * SEC);

    let (s, removed) = sweep_both(&mut flows, &mut embryos, &vips(&[1]), Unknown::Remove);
    assert_eq!((s.flows, s.entries), (2, 4));
    assert_eq!((s.half_open, s.half_open_entries), (5, 10));
    assert_eq!(s.expired, 4, "{s:?}");
    assert_eq!((s.repaired, s.broken, s.removed_vip), (0, 0, 0));
    // Only the FLOWS flow leaves ACTIVE: half-open flows never counted.
    assert_eq!(s.uncounted, std::collections::HashMap::from([(7, 1)]));
    let left: HashSet<FlowKey> = embryos.map.keys().copied().collect();
    let want: HashSet<FlowKey> = [&syn_live, &udp_live]
        .iter()
        .flat_map(|f| [f.fwd_key(), f.rev_key()])
        .collect();
    assert_eq!(left, want);
    assert_eq!(flows.map.len(), 2);
    assert!(flows.map.contains_key(&est.fwd_key()));
    // The HA peer hears of every removal, half-open ones included.
    let removed: HashSet<FlowKey> = removed.into_iter().collect();
    let want: HashSet<FlowKey> = [&syn_stale, &udp_stale, &moving, &syn_assured]
        .iter()
        .map(|f| f.fwd_key())
        .collect();
    assert_eq!(removed, want);
    assert_eq!(s.reals_in_use, HashSet::from([2, 4, 6]));
}

#[test]
fn half_open_flows_keep_retired_ids_in_use() {
    let (mut flows, mut embryos) = (Mem::default(), Mem::default());
    put(
        &mut flows,
        &flow(3001, PROTO_TCP, ST_ESTABLISHED, 5),
        1,
        SEC,
        0,
    );
    // A half-open flow is all that still names real 7 (retired by a
    // reload, say): the id stays in use.
    put(&mut embryos, &flow(3002, PROTO_TCP, ST_SYN, 7), 1, SEC, 0);
    // Of a retired VIP: removed.
    put(&mut embryos, &flow(3003, PROTO_TCP, ST_SYN, 8), 2, SEC, 0);
    // Of a VIP the sweep's snapshot does not know: left for the loop.
    let newer = flow(3004, PROTO_UDP, ST_UDP, 9);
    put(&mut embryos, &newer, 3, SEC, 0);
    let retired = HashSet::from([2]);
    let (mut s, removed) = sweep_both(
        &mut flows,
        &mut embryos,
        &vips(&[1]),
        Unknown::Report { retired: &retired },
    );
    assert_eq!(s.reals_in_use, HashSet::from([5, 7]));
    assert_eq!(s.vips_in_use, HashSet::from([1]));
    assert_eq!(s.removed_vip, 1);
    assert_eq!(removed, [flow(3003, PROTO_TCP, ST_SYN, 8).fwd_key()]);
    assert!(s.unknown.is_empty());
    assert_eq!(s.unknown_half_open.len(), 1);
    assert_eq!(s.unknown_half_open[0].fwd_key, newer.fwd_key());
    assert_eq!(embryos.map.len(), 4);
    // The loop removes it from EMBRYOS when the VIP is not live.
    let f = s.unknown_half_open.pop().unwrap();
    remove_flow(&mut embryos, Kind::HalfOpen, &f, &mut s);
    assert_eq!(s.removed_vip, 2);
    assert_eq!(embryos.map.len(), 2);
    assert!(s.uncounted.is_empty());
}

#[test]
fn a_half_open_flow_missing_a_half_is_removed_not_rebuilt() {
    let (mut flows, mut embryos) = (Mem::default(), Mem::default());
    let old = SEC + HALF_OPEN_GRACE_NS;
    let young = HALF_OPEN_GRACE_NS / 2;
    // Forward entries alone: an old one goes, a young one (its reverse
    // may be going in right now) stays.
    let fwd_old = F {
        rev_state: None,
        ..flow(4001, PROTO_TCP, ST_SYN, 1)
    };
    let fwd_young = F {
        rev_state: None,
        ..flow(4002, PROTO_TCP, ST_SYN, 2)
    };
    put(&mut embryos, &fwd_old, 1, old, 0);
    put(&mut embryos, &fwd_young, 1, young, 0);
    // Reverse entries alone: the same.
    let rev_old = flow(4003, PROTO_UDP, ST_UDP, 3);
    let rev_young = flow(4004, PROTO_UDP, ST_UDP, 4);
    put(&mut embryos, &rev_old, 1, old, 0);
    put(&mut embryos, &rev_young, 1, young, 0);
    embryos.map.remove(&rev_old.fwd_key());
    embryos.map.remove(&rev_young.fwd_key());
    // In FLOWS the missing half is rebuilt.
    let assured = F {
        rev_state: None,
        ..flow(4005, PROTO_TCP, ST_ESTABLISHED, 5)
    };
    put(&mut flows, &assured, 1, old, 0);

    let (s, removed) = sweep_both(&mut flows, &mut embryos, &vips(&[1]), Unknown::Remove);
    assert_eq!((s.broken, s.repaired, s.expired), (2, 1, 0), "{s:?}");
    let left: HashSet<FlowKey> = embryos.map.keys().copied().collect();
    assert_eq!(
        left,
        HashSet::from([fwd_young.fwd_key(), rev_young.rev_key()])
    );
    assert_eq!(removed, [fwd_old.fwd_key()]);
    assert!(flows.map.contains_key(&assured.rev_key()));
    assert_eq!(s.reals_in_use, HashSet::from([2, 4, 5]));
}

/// Both tables behind one cell, with flows the "datapath" assures (moves
/// to `FLOWS`) the moment the walk of `EMBRYOS` starts.
#[derive(Default)]
struct Both {
    flows: Mem,
    embryos: Mem,
    assure: Vec<FlowKey>,
}

struct Side<'a> {
    both: &'a std::cell::RefCell<Both>,
    embryo: bool,
}

impl Side<'_> {
    fn with<T>(&self, f: impl FnOnce(&mut Mem) -> T) -> T {
        let mut b = self.both.borrow_mut();
        f(if self.embryo {
            &mut b.embryos
        } else {
            &mut b.flows
        })
    }
}

impl Source for Side<'_> {
    fn scan(&self, f: &mut dyn FnMut(&FlowKey, &Flow)) -> Result<()> {
        if self.embryo {
            let mut b = self.both.borrow_mut();
            for k in std::mem::take(&mut b.assure) {
                if let Some(v) = b.embryos.map.remove(&k) {
                    b.flows.map.insert(k, v);
                }
            }
        }
        let entries: Vec<(FlowKey, Flow)> =
            self.with(|m| m.map.iter().map(|(k, v)| (*k, *v)).collect());
        entries.iter().for_each(|(k, v)| f(k, v));
        Ok(())
    }

    fn get(&self, key: &FlowKey) -> Result<Option<Flow>> {
        Ok(self.with(|m| m.map.get(key).copied()))
    }
}

impl Store for Side<'_> {
    fn remove_key(&mut self, key: &FlowKey) -> bool {
        self.with(|m| m.remove_key(key))
    }

    fn insert_new(&mut self, key: &FlowKey, value: &Flow) -> bool {
        self.with(|m| m.insert_new(key, value))
    }
}

#[test]
fn a_flow_assured_during_the_sweep_still_holds_its_ids() {
    let both = std::cell::RefCell::new(Both::default());
    let f = flow(5001, PROTO_TCP, ST_SYN, 7);
    {
        let mut b = both.borrow_mut();
        put(&mut b.embryos, &f, 1, SEC, 0);
        b.assure = vec![f.fwd_key(), f.rev_key()];
    }
    let mut flows = Side {
        both: &both,
        embryo: false,
    };
    let mut embryos = Side {
        both: &both,
        embryo: true,
    };
    let s = sweep_tables(
        &mut flows,
        Some(&mut embryos),
        &vips(&[1]),
        Unknown::Remove,
        NOW,
        &mut |_, _| {},
    )
    .unwrap();
    // Read FLOWS first, the flow would have been in neither walk.
    assert_eq!((s.flows, s.half_open), (1, 0));
    assert!(s.reals_in_use.contains(&7), "{s:?}");
}

/// `lb flows` over both tables as the rows of each, merged.
fn merged(flows: &Mem, embryos: &Mem, filter: &Filter, limit: Option<usize>) -> Vec<FlowRow> {
    let mut rows = reference(flows, filter, None, NOW);
    for mut r in reference(embryos, filter, None, NOW) {
        r.half_open = true;
        rows.push(r);
    }
    let addr = |s: &str| s.parse::<SocketAddr>().ok();
    rows.sort_by_cached_key(|r| (addr(&r.vip), addr(&r.real), addr(&r.client), r.protocol));
    rows.truncate(limit.unwrap_or(usize::MAX));
    rows
}

/// A table of half-open flows beside `table(..)`'s: clients 10.2.0.x
/// (some of which `--client 10.2.0.3` filters on), ports its flows do
/// not use.
fn half_open_table(n: u16) -> Mem {
    let mut m = Mem::default();
    for i in 0..n {
        let proto = if i % 3 == 0 { PROTO_UDP } else { PROTO_TCP };
        let f = F {
            client: ([10, 2, 0, (i % 5) as u8], 60_000 + i),
            ..flow(
                0,
                proto,
                if proto == PROTO_UDP { ST_UDP } else { ST_SYN },
                u32::from(i % 4),
            )
        };
        put(&mut m, &f, 1, SEC, 0);
    }
    m
}

#[test]
fn lb_flows_lists_and_counts_both_tables() {
    let (flows, _) = table(1500, 31);
    let embryos = half_open_table(200);
    let t = Tuning::default();
    for filter in filters() {
        let q = filter.compile().unwrap();
        let want = merged(&flows, &embryos, &filter, None);
        assert_eq!(
            count_both(&flows, Some(&embryos), &q, &t).unwrap(),
            want.len(),
            "count {filter:?}"
        );
        for limit in [None, Some(0), Some(1), Some(50), Some(5000)] {
            assert_eq!(
                list_both(&flows, Some(&embryos), &q, limit, NOW, &t).unwrap(),
                merged(&flows, &embryos, &filter, limit),
                "list {filter:?} limit {limit:?}"
            );
        }
        // A datapath without EMBRYOS (pinned by an older lb).
        assert_eq!(
            list_both(&flows, None, &q, None, NOW, &t).unwrap(),
            reference(&flows, &filter, None, NOW)
        );
    }
    let half_open = list_both(&flows, Some(&embryos), &Default::default(), None, NOW, &t)
        .unwrap()
        .iter()
        .filter(|r| r.half_open)
        .count();
    assert_eq!(half_open, 200);
}

#[test]
fn a_flow_read_in_both_tables_is_listed_once_as_assured() {
    let f = flow(6001, PROTO_TCP, ST_ESTABLISHED, 1);
    let (mut flows, mut embryos) = (Mem::default(), Mem::default());
    put(&mut flows, &f, 1, SEC, 0);
    put(&mut embryos, &f, 1, SEC, 0);
    put(&mut embryos, &flow(6002, PROTO_TCP, ST_SYN, 1), 1, SEC, 0);
    let q = Filter::default().compile().unwrap();
    let rows = list_both(&flows, Some(&embryos), &q, None, NOW, &Tuning::default()).unwrap();
    let flags: Vec<(&str, bool)> = rows
        .iter()
        .map(|r| (r.client.as_str(), r.half_open))
        .collect();
    assert_eq!(flags, [("10.7.0.1:6001", false), ("10.7.0.1:6002", true)]);
}

#[test]
fn clear_removes_from_both_tables_and_counts_out_assured_flows_only() {
    let (mut flows, _) = table(400, 41);
    let mut embryos = half_open_table(60);
    // The instant of an assure: a counted forward entry in EMBRYOS too.
    put(
        &mut embryos,
        &F {
            counted: true,
            ..flow(7001, PROTO_TCP, ST_ESTABLISHED, 2)
        },
        1,
        SEC,
        0,
    );
    let t = Tuning::default();
    for filter in filters() {
        let (mut fl, mut em) = (Mem::default(), Mem::default());
        fl.map = flows.map.clone();
        em.map = embryos.map.clone();
        let q = filter.compile().unwrap();
        let want = count_both(&fl, Some(&em), &q, &t).unwrap();
        let only_flows = clear_in(&mut flows_copy(&fl), &q, &t).unwrap();
        let c = clear_both(&mut fl, Some(&mut em), &q, &t).unwrap();
        assert_eq!(c.flows, want, "{filter:?}");
        assert_eq!(c.uncounted, only_flows.uncounted, "{filter:?}");
        assert_eq!(count_both(&fl, Some(&em), &q, &t).unwrap(), 0, "{filter:?}");
    }
    let c = clear_both(
        &mut flows,
        Some(&mut embryos),
        &Filter::default().compile().unwrap(),
        &t,
    )
    .unwrap();
    assert_eq!(c.flows, 402 + 61);
    assert!(flows.map.is_empty() && embryos.map.is_empty());
}

fn flows_copy(m: &Mem) -> Mem {
    Mem {
        map: m.map.clone(),
        ..Mem::default()
    }
}

/// The map form of an endpoint written `ADDR:PORT` / `[V6]:PORT`.
fn ep(s: &str) -> ([u8; 16], u16) {
    let a: SocketAddr = s.parse().unwrap();
    (lb_common::to_map_addr(a.ip()), a.port().to_be())
}

/// Both entries of a TCP flow between endpoints of any family (`F`
/// builds IPv4 ones).
fn add_any(m: &mut Mem, client: &str, vip: &str, real: &str, state: u8, seed: u64) {
    let (c, v, r) = (ep(client), ep(vip), ep(real));
    let key = |a: ([u8; 16], u16), b: ([u8; 16], u16)| FlowKey {
        src_addr: a.0,
        dst_addr: b.0,
        src_port_be: a.1,
        dst_port_be: b.1,
        proto: PROTO_TCP,
        _pad: [0; 3],
    };
    let fwd = Flow {
        nat_addr: r.0,
        nat_port_be: r.1,
        dir: DIR_FORWARD,
        state,
        vip_id: 7,
        created_ns: 1_000_000 * seed,
        last_ns: 2_000_000_000 + seed,
        packets: seed,
        ..Flow::default()
    };
    let rev = Flow {
        nat_addr: v.0,
        nat_port_be: v.1,
        dir: DIR_REVERSE,
        packets: seed + 1,
        ..fwd
    };
    m.map.insert(key(c, v), fwd);
    m.map.insert(key(r, c), rev);
}

/// `table(..)`'s IPv4 flows and IPv6 ones of two VIP ports, clients
/// in two /64s.
fn dual_stack_table() -> Mem {
    let (mut m, _) = table(300, 17);
    for i in 0..40u16 {
        let client = format!("[2001:db8:c:{}::{:x}]:{}", i % 2, 1 + i, 40_000 + i);
        let (vip, state) = if i % 3 == 0 {
            ("[2001:db8::10]:443", ST_FIN)
        } else {
            ("[2001:db8::10]:80", ST_ESTABLISHED)
        };
        let real = format!("[2001:db8:2::{}]:8080", 11 + i % 3);
        add_any(&mut m, &client, vip, &real, state, u64::from(i));
    }
    m
}

#[test]
fn ipv6_flows_list_as_bracketed_endpoints_after_ipv4_ones() {
    let m = dual_stack_table();
    let q = Filter::default().compile().unwrap();
    let rows = list_in(&m, &q, None, 9_000_000_000, &Tuning::default()).unwrap();
    let first_v6 = rows.iter().position(|r| r.vip.starts_with('[')).unwrap();
    assert!(rows[..first_v6].iter().all(|r| !r.client.starts_with('[')));
    assert_eq!(
        rows.len() - first_v6,
        40,
        "every IPv6 flow, after the IPv4 ones"
    );
    let r = &rows[first_v6];
    assert_eq!(
        (r.vip.as_str(), r.real.as_str()),
        ("[2001:db8::10]:80", "[2001:db8:2::12]:8080")
    );
    assert!(r.client.starts_with("[2001:db8:c:"), "{}", r.client);
    let json = serde_json::to_value(r).unwrap();
    assert_eq!(json["vip"], "[2001:db8::10]:80");
    assert_eq!(json["real"], "[2001:db8:2::12]:8080");
    // The endpoint columns widen to the longest; the rows stay aligned.
    let table = render(&rows);
    let lines: Vec<&str> = table.lines().collect();
    let state_at = lines[0].find("STATE").unwrap();
    let v6_line = lines[1 + first_v6];
    assert_eq!(&v6_line[state_at..state_at + 11], "established", "{table}");
    assert!(lines[1].starts_with("10."), "IPv4 rows as before: {table}");
    // An IPv4-only table keeps its 21-character columns.
    let v4_rows = &rows[..first_v6];
    assert_eq!(
        render(v4_rows).lines().next().unwrap().find("VIP"),
        Some(22)
    );
}

#[test]
fn ipv6_filters_match_with_or_without_port() {
    let m = dual_stack_table();
    let f =
        |vip: Option<&str>, real: Option<&str>, client: Option<&str>, state: Option<&str>| Filter {
            vip: vip.map(Into::into),
            real: real.map(Into::into),
            client: client.map(Into::into),
            state: state.map(Into::into),
        };
    let now = 9_000_000_000;
    for (filter, want) in [
        (f(Some("2001:db8::10"), None, None, None), 40),
        (f(Some("[2001:db8::10]"), None, None, None), 40),
        (f(Some("[2001:db8::10]:443"), None, None, None), 14),
        (
            f(Some("[2001:db8::10]:80"), None, None, Some("established")),
            26,
        ),
        (f(Some("[2001:db8::10]:80"), None, None, Some("fin")), 0),
        (f(None, Some("2001:db8:2::12"), None, None), 13),
        (f(None, Some("[2001:db8:2::12]:8081"), None, None), 0),
        (f(None, None, Some("2001:db8:c:1::2"), None), 1),
        (f(None, None, Some("[2001:db8:c:1::2]:40001"), None), 1),
        (f(None, None, Some("[2001:db8:c:1::2]:40002"), None), 0),
        // The IPv4-mapped spelling of an IPv4 client is that client.
        (f(None, None, Some("::ffff:10.9.9.9"), None), 2),
    ] {
        let q = filter.compile().unwrap();
        let rows = reference(&m, &filter, None, now);
        assert_eq!(rows.len(), want, "{filter:?}");
        for (how, t) in tunings() {
            assert_eq!(count_in(&m, &q, &t).unwrap(), want, "{how}: {filter:?}");
            assert_eq!(
                list_in(&m, &q, None, now, &t).unwrap(),
                rows,
                "{how}: {filter:?}"
            );
        }
    }
    // An unbracketed address with a port reads as a longer address.
    let e = f(Some("2001:db8::10:80x"), None, None, None)
        .compile()
        .unwrap_err();
    assert!(e.to_string().contains("[ADDR]:PORT"), "{e}");
    let mut m = m;
    let c = clear_in(
        &mut m,
        &f(Some("[2001:db8::10]:443"), None, None, None)
            .compile()
            .unwrap(),
        &Tuning::default(),
    )
    .unwrap();
    assert_eq!(c.flows, 14);
    assert_eq!(
        count_in(
            &m,
            &f(Some("2001:db8::10"), None, None, None).compile().unwrap(),
            &Tuning::default()
        )
        .unwrap(),
        26
    );
}

#[test]
fn sock_reads_either_family_from_the_map_form() {
    assert_eq!(
        sock(&lb_common::v4_mapped([198, 51, 100, 10]), 80u16.to_be()).to_string(),
        "198.51.100.10:80"
    );
    let (a, p) = ep("[2001:db8::10]:443");
    assert_eq!(sock(&a, p).to_string(), "[2001:db8::10]:443");
}
