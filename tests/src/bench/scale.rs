//! Section 3: the flow table at scale. For each size the real datapath is
//! loaded with `FLOWS` sized for it, filled with batched updates
//! (`flowtable::insert_batch`, as the agent restores a table), then:
//! - memory per flow: the map's `memlock` (/proc/self/fdinfo) and the drop
//!   in `MemAvailable` across load and fill;
//! - new flows per second: distinct SYNs through BPF_PROG_TEST_RUN into the
//!   full table, one syscall each, kernel durations summed;
//! - the real `lb` binary against the pins: `lb flows --count` and a
//!   filtered `lb flows --real ADDR --limit 100`, wall time.
use std::{
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use aya::maps::IterableMap;
use lb_common::{DIR_FORWARD, FLOW_COUNTED, Flow, PROTO_TCP, ST_ESTABLISHED, reason, v4_mapped};
use lb_tests::{
    Netns,
    filled::{self, key4},
};
use lb_userspace::{
    config::Config,
    control::Control,
    datapath::{self, Datapath},
    flowtable,
};

use super::{
    frame::{SYN, Tcp},
    record::{Deadline, emit, progress},
    testrun::{
        Batches, CLIENT_MAC, LB_C_MAC, REALS, XDP_REDIRECT, client, mem_available, pin_to_cpu0,
        run_once, setup_netns,
    },
};

const SECTION: &str = "scale";
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// Kernel bytes per table entry assumed before loading (an LRU hash
/// element with our 40-byte key and 72-byte value, its bucket, slack): a
/// size is skipped unless this, twice over, fits in `MemAvailable`.
const EST_BYTES_PER_ENTRY: u64 = 256;

fn label(flows: u64) -> String {
    if flows.is_multiple_of(1_000_000) {
        format!("{}M flows", flows / 1_000_000)
    } else {
        format!("{}k flows", flows / 1_000)
    }
}

pub fn run(quick: bool) {
    let (sizes, syns): (&[u64], u64) = if quick {
        (&[100_000, 500_000], 10_000)
    } else {
        (&[1_000_000, 4_000_000, 8_000_000], 100_000)
    };
    let deadline = Deadline::new(
        "the scale section",
        Duration::from_secs(if quick { 180 } else { 600 }),
    );
    emit(SECTION, "setup", "syns", syns);
    for &flows in sizes {
        // Both directions of every flow, the SYNs' flows, and room so the
        // LRU evicts nothing.
        let entries = 2 * (flows + syns) + 65_536;
        let need = entries * EST_BYTES_PER_ENTRY;
        let avail = mem_available();
        let row = label(flows);
        if avail < 2 * need {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            emit(
                SECTION,
                &row,
                "skipped",
                format!(
                    "needs about {:.1} GiB of kernel memory and twice that free; {:.1} GiB available",
                    gib(need),
                    gib(avail)
                ),
            );
            progress(format!("{row}: skipped, memory is short"));
            continue;
        }
        one_size(&row, flows, syns, entries as u32, deadline);
    }
}

fn one_size(row: &str, flows: u64, syns: u64, entries: u32, deadline: Deadline) {
    let ns = Netns::new("bench-scale");
    setup_netns(&ns);
    let pin_dir = ns.bpf_pin_dir().join("lb");
    ns.run(|| {
        pin_to_cpu0();
        let cfg = Config::parse(&config(&pin_dir, entries), "bench.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        settle_memory(deadline);
        let avail_before = mem_available();
        let t = Instant::now();
        let mut dp = Datapath::load_with(&pin_dir, entries, true).expect("loading the datapath");
        let load_s = t.elapsed().as_secs_f64();
        let mut ctl = Control::new();
        ctl.apply(&cfg, &mut dp.maps).expect("programming the maps");
        let c0 = datapath::ifindex("c0").expect("c0");
        dp.allow_redirect(c0).expect("TX_PORTS");
        dp.allow_redirect(datapath::ifindex("s0").expect("s0"))
            .expect("TX_PORTS");
        let memlock = memlock(&dp);

        let t = Instant::now();
        fill(&mut dp, &ctl, flows, deadline);
        let fill_s = t.elapsed().as_secs_f64();
        let kernel_bytes = avail_before.saturating_sub(mem_available());

        // New flows into the full table: distinct clients after the filled ones.
        let count = |dp: &Datapath, why: u32| -> u64 {
            dp.maps.stats.get(&why, 0).expect("STATS").iter().sum()
        };
        let (new_before, full_before) = (count(&dp, reason::NEW_FLOW), count(&dp, reason::DROP_TABLE_FULL));
        let mut b = Batches::new(syns);
        for i in 0..syns {
            deadline.check();
            let syn = Tcp {
                src_mac: CLIENT_MAC,
                dst_mac: LB_C_MAC,
                src: client(flows + i),
                dst: (VIP, 80),
                flags: SYN,
                seq: 1,
                ack: 0,
            }
            .build();
            let (action, d, _) = run_once(dp.program(), &syn, c0);
            assert_eq!(action, XDP_REDIRECT, "SYN {i}");
            b.add(d);
        }
        assert_eq!(count(&dp, reason::NEW_FLOW) - new_before, syns, "every SYN made a flow");
        assert_eq!(count(&dp, reason::DROP_TABLE_FULL), full_before, "no SYN refused");

        let (count_s, counted) = cli(&pin_dir, &["--count"]);
        let counted: u64 = counted.trim().parse().unwrap_or_else(|_| panic!("lb flows --count said {counted:?}"));
        assert_eq!(counted, flows + syns, "lb flows --count (LRU eviction?)");
        let (filtered_s, listed) = cli(&pin_dir, &["--real", &REALS[1].to_string(), "--limit", "100"]);
        // A header line, then one line per flow.
        assert_eq!(listed.lines().count(), 101, "lb flows --real --limit 100:\n{listed}");

        let f = flows as f64;
        emit(SECTION, row, "flows", flows);
        emit(SECTION, row, "table_entries", entries);
        emit(SECTION, row, "load_s", format!("{load_s:.2}"));
        emit(SECTION, row, "memlock_bytes", memlock);
        emit(SECTION, row, "memlock_per_flow", format!("{:.0}", memlock as f64 / f));
        emit(SECTION, row, "meminfo_per_flow", format!("{:.0}", kernel_bytes as f64 / f));
        emit(SECTION, row, "fill_s", format!("{fill_s:.2}"));
        emit(SECTION, row, "syn_ns", format!("{:.1}", b.median()));
        emit(SECTION, row, "count_s", format!("{count_s:.2}"));
        emit(SECTION, row, "filtered_s", format!("{filtered_s:.2}"));
        progress(format!(
            "{row}: {:.0} B/flow (memlock), fill {fill_s:.1} s, SYN {:.0} ns, count {count_s:.2} s, filtered {filtered_s:.2} s",
            memlock as f64 / f,
            b.median()
        ));
        dp.shutdown().expect("removing the pins");
    });
}

/// Waits (at most 10 s) until `MemAvailable` stops rising: the kernel
/// frees a removed map's memory in the background, and the previous size's
/// table must not return its gigabytes while this one is measured.
fn settle_memory(deadline: Deadline) {
    let mut last = mem_available();
    for _ in 0..20 {
        deadline.check();
        std::thread::sleep(Duration::from_millis(500));
        let now = mem_available();
        if now < last + (16 << 20) {
            return;
        }
        last = now;
    }
}

fn config(pin_dir: &Path, entries: u32) -> String {
    let reals: String = REALS
        .iter()
        .map(|a| format!("      - {{ address: {a}, port: 8080 }}\n"))
        .collect();
    format!(
        "interfaces: [c0, s0]\nserverfarms:\n  web:\n    reals:\n{reals}vips:\n  www: {{ address: {VIP}, port: 80, serverfarm: web }}\nbpf: {{ pin_dir: {}, flow_table_size: {entries} }}\n",
        pin_dir.display()
    )
}

/// `memlock` of the `FLOWS` map from /proc/self/fdinfo: what the kernel
/// charges for it (for an LRU hash, all of it, preallocated at load).
fn memlock(dp: &Datapath) -> u64 {
    let fd = IterableMap::map(&dp.maps.flows).fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no memlock in the map's fdinfo:\n{info}"))
}

/// Writes `flows` established flows (both directions) spread over the
/// three reals, in batches of 64k flows so the fill itself stays small.
fn fill(dp: &mut Datapath, ctl: &Control, flows: u64, deadline: Deadline) {
    let p = ctl.programmed();
    let vip_id = p.vips["www"].id;
    let real_ids: Vec<u32> = REALS
        .iter()
        .map(|a| {
            p.reals
                .iter()
                .find(|(k, _)| k.addr == *a)
                .map(|(_, (id, _))| *id)
                .expect("a programmed real")
        })
        .collect();
    let now = datapath::now_ns();
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    const CHUNK: u64 = 65_536;
    for start in (0..flows).step_by(CHUNK as usize) {
        deadline.check();
        keys.clear();
        values.clear();
        for i in start..flows.min(start + CHUNK) {
            let (caddr, cport) = client(i);
            let r = (i % REALS.len() as u64) as usize;
            let fwd = Flow {
                nat_addr: v4_mapped(REALS[r].octets()),
                nat_port_be: 8080u16.to_be(),
                dir: DIR_FORWARD,
                state: ST_ESTABLISHED,
                real_id: real_ids[r],
                vip_id,
                flags: FLOW_COUNTED,
                created_ns: now,
                last_ns: now,
                packets: 10,
                bytes: 1500,
                seq_next: 1,
                hop: Default::default(),
                _pad: 0,
            };
            for (k, v) in filled::pair(key4((caddr, cport), (VIP, 80), PROTO_TCP), fwd) {
                keys.push(k);
                values.push(v);
            }
        }
        flowtable::insert_batch(&mut dp.maps.flows, &keys, &values)
            .expect("filling the flow table");
    }
}

/// Runs `lb flows --pin-dir DIR ARGS`: (wall seconds, stdout).
fn cli(pin_dir: &Path, args: &[&str]) -> (f64, String) {
    let t = Instant::now();
    let out = Command::new(lb_tests::lb_bin())
        .args(["flows", "--pin-dir", pin_dir.to_str().expect("utf-8")])
        .args(args)
        .output()
        .expect("running lb");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "lb flows {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (secs, String::from_utf8_lossy(&out.stdout).into_owned())
}
