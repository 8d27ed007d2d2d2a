//! The flow table at scale: a million flows (two million entries) in the real
//! datapath's `FLOWS` map, then `lb flows` count, list and clear and the
//! sweep's `read()` over it, each checked against what the fill put there.
//!
//! Timings and peak memory are printed, never asserted (timing targets belong
//! in benchmarks). Run as root; `--nocapture` shows the numbers:
//! `cargo test -p lb-tests --test flowscale -- --nocapture`.
use std::{
    collections::HashMap as StdMap,
    net::{Ipv4Addr, SocketAddrV4},
    time::Instant,
};

use lb_common::{
    DIR_FORWARD, FLOW_COUNTED, Flow, FlowKey, PROTO_TCP, PROTO_UDP, ST_CLOSED, ST_ESTABLISHED,
    ST_FIN, ST_SYN, ST_UDP, v4_mapped,
};
use lb_tests::{
    Netns,
    filled::{self, key4},
};
use lb_userspace::{
    api::FlowState,
    datapath::{self, Datapath},
    flowtable::{self, Filter},
};

const FLOWS: usize = 1_000_000;
/// Room for both entries of every flow, and some: an LRU map this full evicts
/// nothing.
const TABLE: u32 = 2_200_000;
const CLIENTS: usize = 5_000;
/// Flows per client (one source port each).
const PORTS: usize = FLOWS / CLIENTS;
const REALS: usize = 8;
const VIP: [u8; 4] = [198, 51, 100, 10];
/// Two TCP services and DNS.
const VIP_PORTS: [(u16, u8); 3] = [(80, PROTO_TCP), (443, PROTO_TCP), (53, PROTO_UDP)];

/// The `i`-th flow, a pure function of `i` so expectations can be recomputed.
struct Gen {
    client: ([u8; 4], u16),
    vip: (u16, u8),
    real: usize,
    fwd_state: u8,
    rev_state: u8,
    counted: bool,
}

fn client_addr(c: usize) -> [u8; 4] {
    [
        10,
        (c % 256) as u8,
        (c / 256) as u8,
        (c * 7 % 254 + 1) as u8,
    ]
}

fn real_addr(r: usize) -> [u8; 4] {
    [203, 0, 113, 11 + r as u8]
}

fn gen_flow(i: usize) -> Gen {
    let (c, p) = (i % CLIENTS, i / CLIENTS);
    let vip = VIP_PORTS[i % 3];
    // One in ten half-open, six established, two closing (either side
    // first), one reset.
    let (fwd_state, rev_state) = if vip.1 == PROTO_UDP {
        (ST_UDP, ST_UDP)
    } else {
        match (i / 7) % 10 {
            0 => (ST_SYN, ST_SYN),
            1..=6 => (ST_ESTABLISHED, ST_ESTABLISHED),
            7 => (ST_ESTABLISHED, ST_FIN),
            8 => (ST_FIN, ST_ESTABLISHED),
            _ => (ST_CLOSED, ST_ESTABLISHED),
        }
    };
    Gen {
        client: (client_addr(c), 1024 + p as u16),
        vip,
        real: p % REALS,
        fwd_state,
        rev_state,
        // Counted until the first FIN or RST (lb-ebpf's flow::uncount).
        counted: matches!(fwd_state.max(rev_state), ST_SYN | ST_ESTABLISHED | ST_UDP),
    }
}

impl Gen {
    fn merged_state(&self) -> u8 {
        self.fwd_state.max(self.rev_state)
    }

    fn entries(&self, now: u64) -> [(FlowKey, Flow); 2] {
        let real = (real_addr(self.real), 8080u16);
        let vip = (VIP, self.vip.0);
        let fwd = Flow {
            nat_addr: v4_mapped(real.0),
            nat_port_be: real.1.to_be(),
            dir: DIR_FORWARD,
            state: self.fwd_state,
            real_id: self.real as u32,
            vip_id: u32::from(self.vip.0 != 80) + u32::from(self.vip.0 == 53),
            flags: if self.counted { FLOW_COUNTED } else { 0 },
            created_ns: now - 60_000_000_000,
            last_ns: now - 1_000_000_000,
            packets: 10,
            bytes: 1500,
            seq_next: 1,
            hop: Default::default(),
            _pad: 0,
        };
        let ip = |a: [u8; 4]| Ipv4Addr::from(a);
        let key = key4(
            (ip(self.client.0), self.client.1),
            (ip(vip.0), vip.1),
            self.vip.1,
        );
        let [f, (rkey, rev)] = filled::pair(key, fwd);
        let rev = Flow {
            state: self.rev_state,
            packets: 20,
            bytes: 30_000,
            ..rev
        };
        [f, (rkey, rev)]
    }
}

/// `VmHWM` (peak resident set) and `VmRSS` in MiB.
fn mem() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
            / 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets `VmHWM` to the current RSS (Linux 4.0+), so the next reading is
/// the peak of what runs in between.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM via clear_refs");
}

/// Runs `f`, printing its time and the peak RSS while it ran.
fn measure<T>(what: &str, f: impl FnOnce() -> T) -> T {
    // Hand what earlier steps freed back to the kernel, so the RSS before is
    // what is live.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    reset_peak();
    let (_, rss_before) = mem();
    let start = Instant::now();
    let out = f();
    let secs = start.elapsed().as_secs_f64();
    let (peak, _) = mem();
    println!(
        "flowscale: {what:<44} {secs:>7.3} s   peak RSS {peak:>5} MiB (+{} MiB)",
        peak.saturating_sub(rss_before)
    );
    out
}

fn filter(real: Option<usize>, client: Option<usize>, state: Option<&str>) -> Filter {
    Filter {
        vip: None,
        real: real.map(|r| Ipv4Addr::from(real_addr(r)).to_string()),
        client: client.map(|c| Ipv4Addr::from(client_addr(c)).to_string()),
        state: state.map(Into::into),
    }
}

#[test]
fn a_million_flows() {
    lb_tests::require_root();
    let ns = Netns::new("fs");
    let pin_dir = ns.bpf_pin_dir();
    let mut dp = Datapath::load(&pin_dir, TABLE).expect("loading the datapath");
    let now = datapath::now_ns();
    let (_, rss) = mem();
    println!("flowscale: RSS after load {rss} MiB");

    // Fill, in chunks so the fill itself stays small.
    let mut established = 0;
    let mut counted_of_real_5 = 0;
    measure("fill 1M flows (2M entries, UPDATE_BATCH)", || {
        const CHUNK: usize = 65_536;
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for start in (0..FLOWS).step_by(CHUNK) {
            keys.clear();
            values.clear();
            for i in start..FLOWS.min(start + CHUNK) {
                let g = gen_flow(i);
                established += usize::from(g.merged_state() == ST_ESTABLISHED);
                counted_of_real_5 += u64::from(g.real == 5 && g.counted);
                for (k, v) in g.entries(now) {
                    keys.push(k);
                    values.push(v);
                }
            }
            flowtable::insert_batch(&mut dp.maps.flows, &keys, &values)
                .expect("filling the flow table");
        }
    });
    let flows = &mut dp.maps.flows;
    let mut entries = 0;
    flowtable::for_each(flows, |_, _| entries += 1).unwrap();
    assert_eq!(entries, 2 * FLOWS, "entries after the fill (LRU eviction?)");

    // The two ways to join a reverse entry, for tuning LOOKUP_RATIO.
    let n = measure("walk 2M entries (LOOKUP_BATCH)", || {
        let mut n = 0;
        flowtable::for_each(flows, |_, _| n += 1).unwrap();
        n
    });
    let walk = {
        let start = Instant::now();
        flowtable::for_each(flows, |_, _| {}).unwrap();
        start.elapsed().as_secs_f64() / n as f64
    };
    let lookup = {
        let start = Instant::now();
        for i in 0..100_000 {
            let [(k, _), _] = gen_flow(i * 7).entries(now);
            flows.get(&k, 0).expect("a flow the fill wrote");
        }
        start.elapsed().as_secs_f64() / 100_000.0
    };
    println!(
        "flowscale: per entry: batched walk {:.3} us, lookup {:.3} us (ratio {:.1}, LOOKUP_RATIO {})",
        walk * 1e6,
        lookup * 1e6,
        lookup / walk,
        flowtable::LOOKUP_RATIO
    );

    let all = measure("count 1M flows", || {
        flowtable::count(flows, &Filter::default(), now).unwrap()
    });
    assert_eq!(all, FLOWS);
    // The CLI reads the pinned map, opened by path.
    let pinned = datapath::open_flows(&pin_dir).expect("opening the pinned FLOWS");
    let all = measure("count 1M flows (pinned map, as the CLI)", || {
        flowtable::count(&pinned, &Filter::default(), now).unwrap()
    });
    assert_eq!(all, FLOWS);
    drop(pinned);
    let of_real = measure("count --real (125k of 1M)", || {
        flowtable::count(flows, &filter(Some(2), None, None), now).unwrap()
    });
    assert_eq!(of_real, FLOWS / REALS);
    let est = measure("count --state established", || {
        flowtable::count(flows, &filter(None, None, Some("established")), now).unwrap()
    });
    assert_eq!(est, established);
    let syn_of_real = measure("count --real --state syn", || {
        flowtable::count(flows, &filter(Some(3), None, Some("syn")), now).unwrap()
    });
    let want_syn_of_real = (0..FLOWS)
        .map(gen_flow)
        .filter(|g| g.real == 3 && g.merged_state() == ST_SYN)
        .count();
    assert_eq!(syn_of_real, want_syn_of_real);

    // One client's flows, the first 100 in (vip, real, client) order.
    let client = 1234;
    let rows = measure("list --client --limit 100", || {
        flowtable::list(flows, &filter(None, Some(client), None), Some(100), now).unwrap()
    });
    let sock = |a: [u8; 4], p: u16| SocketAddrV4::new(a.into(), p);
    let mut want: Vec<_> = (0..PORTS)
        .map(|p| gen_flow(p * CLIENTS + client))
        .map(|g| {
            (
                sock(VIP, g.vip.0),
                sock(real_addr(g.real), 8080),
                sock(g.client.0, g.client.1),
                g,
            )
        })
        .collect();
    want.sort_by_key(|w| (w.0, w.1, w.2));
    assert_eq!(rows.len(), 100);
    for (row, (vip, real, client, g)) in rows.iter().zip(&want) {
        assert_eq!(row.vip, vip.to_string());
        assert_eq!(row.real, real.to_string());
        assert_eq!(row.client, client.to_string());
        assert_eq!(row.state, FlowState::from_datapath(g.merged_state()));
        assert_eq!(
            (row.packets_in, row.bytes_in, row.packets_out, row.bytes_out),
            (10, 1500, 20, 30_000)
        );
        assert_eq!(row.idle_ms, 1000);
    }
    let listed = measure("list --state established (all rows)", || {
        flowtable::list(flows, &filter(None, None, Some("established")), None, now).unwrap()
    });
    assert_eq!(listed.len(), established);
    drop(listed);
    let listed = measure("list --limit 100 (no filter)", || {
        flowtable::list(flows, &Filter::default(), Some(100), now).unwrap()
    });
    assert_eq!(listed.len(), 100);

    let table = measure("read() (the sweep's join)", || {
        flowtable::read(flows).unwrap()
    });
    assert_eq!(table.flows.len(), FLOWS);
    assert!(table.lone_reverse.is_empty());
    assert!(table.flows.iter().all(|j| j.rev.is_some()));
    drop(table);

    let cleared = measure("clear --real (125k flows)", || {
        flowtable::clear(flows, &filter(Some(5), None, None), now).unwrap()
    });
    assert_eq!(cleared.flows, FLOWS / REALS);
    assert_eq!(
        cleared.uncounted,
        StdMap::from([(5u32, counted_of_real_5)]),
        "counted flows removed"
    );
    assert_eq!(
        flowtable::count(flows, &filter(Some(5), None, None), now).unwrap(),
        0
    );
    let mut left = 0;
    flowtable::for_each(flows, |_, _| left += 1).unwrap();
    assert_eq!(left, 2 * (FLOWS - FLOWS / REALS), "entries after clear");

    let cleared = measure("clear --real --state fin", || {
        flowtable::clear(flows, &filter(Some(6), None, Some("fin")), now).unwrap()
    });
    let want_fin_6 = (0..FLOWS)
        .map(gen_flow)
        .filter(|g| g.real == 6 && g.merged_state() == ST_FIN)
        .count();
    assert_eq!(cleared.flows, want_fin_6);
    assert!(cleared.uncounted.is_empty(), "fin flows are not counted");
    assert_eq!(
        flowtable::count(flows, &filter(Some(6), None, None), now).unwrap(),
        FLOWS / REALS - want_fin_6
    );

    let (peak, rss) = mem();
    println!("flowscale: at the end RSS {rss} MiB, peak since last reset {peak} MiB");
    dp.shutdown().expect("removing the pins");
    assert!(!pin_dir.exists(), "pins left in {}", pin_dir.display());
}
