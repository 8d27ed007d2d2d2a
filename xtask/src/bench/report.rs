//! BENCHMARKS.md from the measurements: a table per section, the ratios and
//! targets computed here (never asserted anywhere), the machine,
//! the date and the exact command.
use std::fmt::Write as _;

use super::{Results, machine::Machine};

/// Katran's BPF-only figure (anchors.md §2: `katran_tester -perf_testing`,
/// katran issue #235): 101–119 ns per packet.
const KATRAN_NS: f64 = 101.0;

/// The Katran commit vendored in third_party/katran (its README.md).
const KATRAN_COMMIT: &str = "19f08fe";

/// The e2e systems compared, in table order: (key in the results, label).
pub const SYSTEMS: [(&str, &str); 5] = [
    ("plain", "plain routing (no balancer)"),
    ("nftables", "nftables DNAT (numgen)"),
    ("haproxy", "HAProxy 2.6, TCP mode"),
    ("lb", "lb, XDP"),
    ("lb-tc", "lb, tc hook"),
];

/// Plain routing with lb's XDP attached and no VIP: not a competitor, it
/// tells XDP-on-veth's own cost from lb's.
const DIAGNOSTIC: (&str, &str) = ("plain-under-xdp", "plain routing, lb attached with no VIP");

/// The systems section 2 also runs over IPv6: (row key, label).
const SYSTEMS6: [(&str, &str); 4] = [
    ("plain-ipv6", "plain IPv6 routing"),
    ("nftables-ipv6", "nftables `ip6` DNAT (numgen)"),
    ("lb-ipv6", "lb, XDP, NAT66"),
    ("lb-tc-ipv6", "lb, tc hook, NAT66"),
];

/// The three e2e loads: (column key, label, unit).
pub const LOADS: [(&str, &str, &str); 3] = [
    ("cps", "new connections", "conn/s"),
    ("rps", "keep-alive requests", "req/s"),
    ("mbit", "single-stream throughput", "Mbit/s"),
];

pub fn render(r: &Results, m: &Machine, command: &str, chart: &str) -> String {
    let mut s = String::new();
    let w = &mut s;
    wl(w, "# Benchmarks");
    wl(w, "");
    wl(
        w,
        &format!(
            "Written by `{command}` on {} at commit {}; {}. \
             Do not edit by hand: rerun the command (as root). \
             `cargo xtask bench --quick` is a smoke run that writes under target/bench/ instead.",
            m.date,
            m.commit,
            match m.minutes {
                Some(m) => format!("the run took {m:.1} minutes"),
                None => "the run's duration was not recorded".to_string(),
            }
        ),
    );
    wl(w, "");
    wl(w, "| machine | |");
    wl(w, "|---|---|");
    wl(w, &format!("| CPU | {} ({} cores) |", m.cpu, m.cores));
    wl(w, &format!("| kernel | {} |", m.kernel));
    wl(w, &format!("| memory | {:.1} GiB |", m.memory_gib));
    wl(w, &format!("| tools | {} |", m.tools.join("; ")));
    wl(w, "");
    wl(
        w,
        "Everything below ran in one invocation on this machine, side by side; compare the \
         ratios, not the absolute numbers with other hardware. The machine is a 2-core VM that \
         other work may share, so each number is a median (of batches or of rounds).",
    );
    wl(w, "");
    packet(w, r);
    e2e(w, r, chart);
    scale(w, r);
    failover(w, r);
    edges(w, r);
    super::report_cluster::cluster(w, r);
    s
}

pub(super) fn wl(w: &mut String, line: &str) {
    w.push_str(line);
    w.push('\n');
}

/// 12345.6 -> "12,346".
pub(super) fn int(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

/// What one single-call BPF_PROG_TEST_RUN adds to any program (reading the
/// clock, toggling bottom halves): the floor timed singly minus repeated.
fn fixed_cost(r: &Results) -> f64 {
    let single = r.num("packet", "floor", "ns_single").unwrap_or(f64::NAN);
    single - r.num("packet", "floor", "ns_repeat").unwrap_or(f64::NAN)
}

fn packet(w: &mut String, r: &Results) {
    const S: &str = "packet";
    let setup = |c| r.get(S, "setup", c).unwrap_or("?");
    let floor_rep = r.num(S, "floor", "ns_repeat").unwrap_or(f64::NAN);
    let floor_single = r.num(S, "floor", "ns_single").unwrap_or(f64::NAN);
    let fixed = fixed_cost(r);
    let net = |row: &str| {
        r.num(S, row, "ns_repeat")
            .or_else(|| r.num(S, row, "ns_single").map(|v| v - fixed))
            .unwrap_or(f64::NAN)
    };
    wl(w, "## 1. Per-packet cost (BPF_PROG_TEST_RUN)");
    wl(w, "");
    wl(
        w,
        "The real XDP object (`lb_xdp`), its maps programmed by the agent's own code \
         (`Control::apply`, `Control::set_health`), in a namespace with veth pairs and static \
         neighbours so `bpf_fib_lookup` resolves next hops, pinned to one CPU. Beside it, in \
         the same run, from the bench's object (the same datapath built with lb-ebpf's `bench` \
         feature, which adds them), the floor `lb_floor` (lb-ebpf/src/floor.rs): \
         parse Ethernet, IPv4 and TCP with bounds checks, return XDP_TX; and `lb_floor_fib`, \
         the same plus the `bpf_fib_lookup` a routed design pays for every forwarded packet \
         unless it caches the answer, run on a packet to a real's address; and the building \
         blocks `lb_floor_flow`, `lb_floor_clock`, `lb_floor_redirect` and `lb_floor_call`, \
         each the floor plus one thing an established packet needs (their maps primed by the \
         bench, so the lookup hits and the redirect finds its port), and `lb_floor_ktime`, the \
         floor plus the clock helper the datapath's clock replaces. The packets are 54-byte \
         TCP segments. Every case checks that each packet took the path it names: the \
         verdict of every run, and the datapath's reason counter moved by exactly the number \
         of packets.",
    );
    wl(w, "");
    wl(
        w,
        &format!(
            "Beside them, in the same run: **Katran's own program** (`balancer_ingress`), built \
             from its unmodified sources (third_party/katran, commit {KATRAN_COMMIT}) with the \
             flags of its Makefile-bpf and inline IPIP decapsulation, as its maintainer built it \
             for the published figure (`{}`), loaded with aya, and given one TCP VIP with one \
             IPv4 real the way its control plane does (`vip_map`, the VIP's ring in `ch_rings`, \
             `reals`, the router's MAC in `ctl_array`, a per-CPU LRU in `lru_mapping` as large \
             as lb's flow table). Katran sends every packet of a VIP to its real encapsulated \
             in IPv4-in-IPv4 with XDP_TX (direct server return: the replies bypass it). Its rows \
             check every verdict, one output frame's encapsulation, Katran's own counters (no \
             timed established packet missed its LRU; every SYN counted as a new flow) and that \
             every SYN inserted its flow. The flood guard `MAX_CONN_RATE` is raised at build \
             time: the bench's calls create flows faster than its default 125,000 per second, \
             above which Katran skips the LRU insert of a new flow.",
            setup("katran_build")
        ),
    );
    wl(w, "");
    wl(w, "How it is timed, always by the kernel's clock:");
    wl(
        w,
        &format!(
            "- **repeat**: one syscall runs the program {} times on the same buffer and reports \
             the mean; the median of {} such calls. Valid only for a packet the program does \
             not rewrite, because the kernel does not restore the buffer between repeats: an \
             established flow's packet run with repeat = 1000 counts 1 `forward` and 999 \
             `pass_not_ours` (run 2 sees the rewritten packet, and TTL − 1 would end any \
             forwarding path after 63 runs).",
            int(setup("repeat").parse().unwrap_or(0.0)),
            setup("repeat_calls")
        ),
    );
    wl(
        w,
        "- **single**: one syscall per packet (repeat = 1, a fresh copy each time), the \
         kernel-reported durations in 15 batches, the median batch mean. Used for every path \
         that rewrites or keeps state. First SYN: each packet from a distinct client \
         address and port, so each one creates a flow. Purged flow: N flows established \
         (SYN, SYN-ACK, ACK, untimed) on a `failaction: purge` farm, their real set down \
         through `Control::set_health`, then each flow's next client packet is timed; it is \
         answered with a RST and the flow is removed.",
    );
    wl(
        w,
        &format!(
            "- A single call also times the test timer itself (reading the clock, toggling \
             bottom halves). The floor timed both ways gives that fixed cost: {fixed:.1} ns \
             here. **net** is single minus that cost for the single-only paths, and the \
             repeat figure where repeat is valid. The net figures are the program's own cost, \
             as Katran's perf tester reports it.",
        ),
    );
    wl(w, "");
    let ipv6 = |row: &&str| row.contains("IPv6");
    let limits = |row: &&str| row.starts_with("at the limits, ");
    let traced = |row: &&str| row.starts_with("trace build, ");
    // "limits" holds the timings of programming the maps, no packet row.
    let rows: Vec<&str> = r
        .rows(S)
        .into_iter()
        .filter(|row| *row != "limits")
        .collect();
    let table = |w: &mut String, rows: Vec<&str>| {
        wl(
            w,
            "| path | verdict | ns/packet, single | ns/packet, net | × floor (net) | Mpps per core (net) | packets timed |",
        );
        wl(w, "|---|---|---:|---:|---:|---:|---:|");
        for row in rows {
            // A row timed only by repeat has no single figure.
            let single = r
                .num(S, row, "ns_single")
                .map_or("—".to_string(), |v| format!("{v:.1}"));
            let n = net(row);
            wl(
                w,
                &format!(
                    "| {row} | {} | {single} | {n:.1} | {:.1}× | {:.2} | {} |",
                    r.get(S, row, "verdict").unwrap_or(""),
                    n / floor_rep,
                    1000.0 / n,
                    int(r.num(S, row, "packets").unwrap_or(0.0)),
                ),
            );
        }
    };
    table(
        w,
        rows.iter()
            .copied()
            .filter(|r| !ipv6(r) && !limits(r) && !traced(r))
            .collect(),
    );
    wl(w, "");
    let fwd = net("established, forward");
    let fwd_single = r
        .num(S, "established, forward", "ns_single")
        .unwrap_or(f64::NAN);
    wl(w, "Targets:");
    wl(
        w,
        &format!(
            "- Established fast path within 3× the floor: forward {fwd:.0} ns net = {:.1}× the \
             floor's {floor_rep:.0} ns ({:.1}× with both timed as single calls): {}.",
            fwd / floor_rep,
            fwd_single / floor_single,
            met(fwd <= 3.0 * floor_rep)
        ),
    );
    let katran = net("Katran, established (LRU hit, IPIP encap)");
    let katran_old = net("Katran, established, timed as its old perf tester did");
    wl(
        w,
        &format!(
            "- Under Katran's published {KATRAN_NS:.0} ns/packet (anchors §2: \
             `katran_tester -perf_testing`, program only, the maintainer's hardware): forward \
             {fwd:.0} ns net, {:.1}× Katran's figure: {}. Different machines: this VM needs \
             {floor_rep:.0} ns for the floor alone. And a different measurement: that figure \
             came from Katran's perf tester as it was before commit a25f55df (2025-09-22), \
             run on a build with inline decapsulation (the maintainer's instructions in katran \
             issue #235). It called BPF_PROG_TEST_RUN with `repeat` on one buffer, which the \
             kernel never restores, so the runs alternate between forwarding the packet \
             (encapsulated) and decapsulating Katran's own output, which restores it; the \
             commit says the repeated runs saw the modified packet. Timed that way on this \
             VM, the same build gives {katran_old:.0} ns, {:.2}× the published figure: that \
             figure is the mean of a forward and a decapsulation, not Katran's forward path, \
             which alone costs {katran:.0} ns here.",
            fwd / KATRAN_NS,
            met(fwd < KATRAN_NS),
            katran_old / KATRAN_NS,
        ),
    );
    wl(
        w,
        &format!(
            "- The same comparison on one machine: Katran's program on its established path \
             costs {katran:.0} ns net here, so lb's forward is {:.2}× Katran's ({}) and its \
             reverse {:.2}× (Katran has no reverse path: with direct server return the replies \
             never reach it).",
            fwd / katran,
            if fwd <= katran {
                "at or below Katran's"
            } else {
                "above Katran's"
            },
            net("established, reverse") / katran,
        ),
    );
    let fib = net("floor + FIB lookup") - floor_rep;
    let block = |row: &str| net(row) - floor_rep;
    let (lookup, clock, ktime, redirect, call) = (
        block("floor + FLOWS lookup (hit)"),
        block("floor + clock"),
        block("floor + bpf_ktime_get_coarse_ns"),
        block("floor + devmap redirect"),
        block("floor + BPF-to-BPF call"),
    );
    let least = floor_rep + lookup + clock + redirect;
    let tick = r.num(S, "setup", "clock_tick_ns").unwrap_or(0.0);
    let clock_how = if tick > 0.0 {
        format!(
            "jiffies times the {} ns tick, HZ {:.0}, that the agent measured at load: one \
             inlined load",
            int(tick),
            1e9 / tick
        )
    } else {
        "the measurement failed on this kernel, so it called the helper".to_string()
    };
    let reach = if least > 3.0 * floor_rep {
        "So on this machine 3× the floor is out of reach for any design that keeps a \
         timestamped per-flow table."
            .to_string()
    } else {
        format!(
            "That leaves {:.0} ns of 3× the floor for everything else.",
            3.0 * floor_rep - least
        )
    };
    wl(
        w,
        &format!(
            "- Where the time goes. The `floor + …` rows each add one building block to the \
             floor, on the established flow's packet: a `FLOWS` hit costs {lookup:.0} ns here \
             (a 40-byte key: addresses are kept IPv6-sized), the datapath's clock {clock:.0} ns \
             ({clock_how}; the `bpf_ktime_get_coarse_ns` helper, the same time at the same \
             resolution, costs {ktime:.0} ns), the devmap redirect {redirect:.0} ns, one \
             BPF-to-BPF call {call:.0} ns, and `bpf_fib_lookup` {fib:.0} ns. An established \
             packet cannot do without the lookup, the clock (idle timeouts) and the redirect: \
             {least:.0} ns, {:.1}× the floor, before it reads a port, rewrites or counts \
             anything. {reach} Katran's program also pays a VIP lookup and an LRU lookup per \
             packet. lb's established packet pays those three, one call (fast.rs: the entry \
             function forwards it, with the flow's cached next hop), and {:.0} ns for the rest: \
             parsing, the NAT rewrite and its checksums, per-VIP, per-real and per-reason \
             counters. The FIB is not asked per packet: each flow direction caches its answer \
             (`lb_common::Hop`, refreshed when the agent sees a route, neighbour, address or \
             link change, after a second, or for a packet above the route's MTU). A first SYN \
             pays the FIB, the VIP lookup, the real's pick and two LRU inserts (the flow and its \
             reverse, for the replies); Katran's first SYN, {:.0} ns net here, pays the VIP \
             lookup, the ring's pick and one LRU insert, and sends to the one router MAC it is \
             configured with, asking no FIB.",
            least / floor_rep,
            fwd - least - call,
            net("Katran, first SYN (ring pick, LRU insert)"),
        ),
    );
    wl(w, "");
    wl(w, "### IPv6 (NAT66), same run");
    wl(w, "");
    wl(
        w,
        "The same paths with IPv6: each algorithm's farm has an IPv6 VIP of its own with the \
         three reals' IPv6 addresses, in the same namespace and object (IPv6 runs in `lb_xdp6`, \
         which `lb_xdp` hands the packet to by tail call). The frames are 74-byte TCP segments \
         (a 40-byte IPv6 header, no extension header). Katran's program has an IPv6 VIP with an \
         IPv6 real beside its IPv4 one, and sends the packets to it in IPv6-in-IPv6.",
    );
    wl(w, "");
    table(w, rows.iter().copied().filter(ipv6).collect());
    wl(w, "");
    let fwd6 = net("IPv6, established, forward");
    let rev6 = net("IPv6, established, reverse");
    let katran6 = net("Katran, IPv6, established (LRU hit, IP6IP6 encap)");
    let syn = |prefix: &str| {
        let v: Vec<f64> = r
            .rows(S)
            .into_iter()
            .filter(|row| row.starts_with(&format!("{prefix}first SYN, ")))
            .map(net)
            .collect();
        v
    };
    let (syn4, syn6) = (syn(""), syn("IPv6, "));
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.0} to {hi:.0} ns")
    };
    wl(w, "Targets:");
    wl(
        w,
        &format!(
            "- An IPv6 established packet within 1.15× of the IPv4 one: forward {fwd6:.0} ns \
             net, {:.2}× IPv4's {fwd:.0} ns ({}); reverse {rev6:.0} ns, {:.2}× ({}).",
            fwd6 / fwd,
            met(fwd6 <= 1.15 * fwd),
            rev6 / net("established, reverse"),
            met(rev6 <= 1.15 * net("established, reverse")),
        ),
    );
    wl(
        w,
        &format!(
            "- Beside Katran's IPv6 path on the same run: its established packet costs \
             {katran6:.0} ns net, lb's IPv6 forward is {:.2}× that. A first SYN over IPv6 costs \
             lb {} net across the five algorithms (IPv4: {}), Katran {:.0} ns (IPv4: {:.0} ns).",
            fwd6 / katran6,
            range(&syn6),
            range(&syn4),
            net("Katran, IPv6, first SYN (ring pick, LRU insert)"),
            net("Katran, first SYN (ring pick, LRU insert)"),
        ),
    );
    wl(w, "");
    if rows.iter().any(traced) {
        trace_build(w, &rows, &net);
    }
    at_the_limits(w, r, &rows, &table, &net);
}

/// Section 1's rows again with the maps at lb's limits, beside the same
/// rows at the bench's own 11 VIPs, and how long programming them takes.
fn at_the_limits(
    w: &mut String,
    r: &Results,
    rows: &[&str],
    table: &dyn Fn(&mut String, Vec<&str>),
    net: &dyn Fn(&str) -> f64,
) {
    const S: &str = "packet";
    let limit = |c| r.num(S, "limits", c).unwrap_or(f64::NAN);
    wl(w, "### At the limits, same run");
    wl(w, "");
    wl(
        w,
        &format!(
            "The bench's config grown with filler VIPs, farms and reals (tests/src/limits.rs) to \
             {} VIPs and {} reals, a {:.1} MB file, programmed by the same control code; then \
             a new established flow and each algorithm's first SYNs again. The rows above ran \
             with the bench's own 11 VIPs and 31 reals. Programming the whole config from its \
             text (parse, check, {} map writes) took {:.2} s; a reload that moves one VIP to \
             another port {:.2} s for {} map writes; a reload that changes nothing {:.2} s. \
             That is what `lb reload` does apart from answering (the end-to-end test \
             tests/tests/limits.rs prints the time of the real command).",
            int(limit("vips")),
            int(limit("reals")),
            limit("bytes") / 1e6,
            int(limit("program_writes")),
            limit("program_s"),
            limit("reload_one_vip_s"),
            int(limit("reload_one_vip_writes")),
            limit("reload_unchanged_s"),
        ),
    );
    wl(w, "");
    let at: Vec<&str> = rows
        .iter()
        .copied()
        .filter(|row| row.starts_with("at the limits, "))
        .collect();
    table(w, at.clone());
    wl(w, "");
    // Single-call figures of one run move by several percent from row to
    // row: the first SYNs are compared by their mean over the algorithms,
    // and 10% is the bound within which a figure counts as not grown.
    let mean = |prefix: &str| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|row| {
                row.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with("first SYN, "))
            })
            .map(|row| net(row))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let ratio = |row: &str| net(&format!("at the limits, {row}")) / net(row);
    let (fwd, rev) = (ratio("established, forward"), ratio("established, reverse"));
    let syn = mean("at the limits, ") / mean("");
    wl(w, "Targets:");
    wl(
        w,
        &format!(
            "- A reload at the limits under 2 s: one VIP moved {:.2} s ({}).",
            limit("reload_one_vip_s"),
            met(limit("reload_one_vip_s") < 2.0)
        ),
    );
    wl(
        w,
        &format!(
            "- No per-packet cost grows at the limits (within 10%, the noise of one run): \
             established forward {:.0} ns net against {:.0} at 11 VIPs ({fwd:.2}×), reverse \
             {:.0} against {:.0} ({rev:.2}×); a first SYN {:.0} ns against {:.0} on average \
             over the five algorithms ({syn:.2}×): {}.",
            net("at the limits, established, forward"),
            net("established, forward"),
            net("at the limits, established, reverse"),
            net("established, reverse"),
            mean("at the limits, "),
            mean(""),
            met(fwd.max(rev).max(syn) <= 1.10)
        ),
    );
    wl(w, "");
}

/// Section 1's rows for the trace build (`lb trace`) with a filter that
/// matches nothing: what a trace costs the packets it does not show.
fn trace_build(w: &mut String, rows: &[&str], net: &dyn Fn(&str) -> f64) {
    wl(w, "### The trace build, same run");
    wl(w, "");
    wl(
        w,
        "`lb trace` swaps a build of the same datapath with its records compiled in (lb-ebpf \
         --features trace) into the links while a trace runs. Here it runs with a filter that \
         matches no packet, as on a busy box where one client is traced: each packet still \
         builds its record and tests the filter.",
    );
    wl(w, "");
    wl(
        w,
        "| path | production, ns net | trace build, ns net | ratio |",
    );
    wl(w, "|---|---:|---:|---:|");
    for row in rows.iter().filter_map(|r| r.strip_prefix("trace build, ")) {
        let (p, t) = (net(row), net(&format!("trace build, {row}")));
        wl(w, &format!("| {row} | {p:.1} | {t:.1} | {:.2}× |", t / p));
    }
    wl(w, "");
}

fn e2e(w: &mut String, r: &Results, chart: &str) {
    const S: &str = "e2e";
    let setup = |c| r.get(S, "setup", c).unwrap_or("?");
    let val = |sys: &str, load: &str| r.num(S, sys, load).unwrap_or(f64::NAN);
    wl(
        w,
        "## 2. End to end: lb against routing, nftables and HAProxy",
    );
    wl(w, "");
    wl(
        w,
        &format!(
            "The standard test topology (tests/src/topology.rs): client, lb and three reals in \
             network namespaces joined by veth pairs and a bridge, every packet crossing the lb \
             namespace. Each system gets a fresh topology, in turn, {} rounds; the table gives \
             the median round. Loads, the same for every system: `wrk -t {} -c {} -d {}s` with \
             `Connection: close` (one TCP connection per request), the same keep-alive, and one \
             `iperf3` stream for {} s. Each wrk thread targets one real for plain routing and \
             the VIP otherwise. The reals answer HTTP with HAProxy's `http-request return` \
             (event-driven, one thread each) and run `iperf3 -s` on the first. Client, \
             balancer and servers share the machine's two cores, so each number is what the \
             whole path costs in CPU, not the balancer alone.",
            setup("rounds"),
            setup("threads"),
            setup("conns"),
            setup("secs"),
            setup("secs")
        ),
    );
    wl(w, "");
    wl(
        w,
        "- plain routing: the client addresses the reals directly, forwarded by the lb \
         namespace's kernel; the limit of this topology.",
    );
    wl(
        w,
        "- nftables: `dnat to numgen inc mod 3 map { … }` in a prerouting chain of the lb \
         namespace, as kube-proxy's nftables mode does; conntrack reverses it.",
    );
    wl(
        w,
        "- HAProxy: `mode tcp`, `balance roundrobin`, bound to the VIP (an address on the lb \
         namespace's lo). It terminates the client's TCP and opens its own to the real, so \
         the reals see the lb's address (SNAT), unlike the other three.",
    );
    wl(
        w,
        &format!(
            "- lb, XDP: `lb run` with `xdp_mode: native` on both veths, round-robin, 1M-entry \
             flow table. {}.",
            r.get(S, "lb", "note").unwrap_or("")
        ),
    );
    wl(
        w,
        &format!(
            "- lb, tc hook: the same config with `hook: tc` on both veths. {}.",
            r.get(S, "lb-tc", "note").unwrap_or("")
        ),
    );
    wl(w, "");
    wl(
        w,
        "Offloads: every system runs on the kernel's default veth offloads (tx checksum \
         offload and with it TSO on, so routed TCP leaves in 64 KB GSO segments), except the \
         two XDP rows: XDP on veth cannot take partial checksums, so their topology turns tx \
         checksum offload off on the client and the reals, and GRO on at the peers for NAPI \
         (tests/src/topology.rs). That is the price of XDP on a veth host, and it is in \
         their numbers.",
    );
    wl(w, "");
    let mut head = String::from("| system |");
    let mut rule = String::from("|---|");
    for (_, label, unit) in LOADS {
        write!(head, " {label} ({unit}) | × plain |").unwrap();
        rule.push_str("---:|---:|");
    }
    head.push_str(" errors |");
    rule.push_str("---:|");
    wl(w, &head);
    wl(w, &rule);
    for (key, label) in SYSTEMS.iter().copied().chain([DIAGNOSTIC]) {
        let mut line = format!("| {label} |");
        for (load, ..) in LOADS {
            let v = val(key, load);
            write!(line, " {} | {:.2}× |", int(v), v / val("plain", load)).unwrap();
        }
        write!(line, " {} |", r.get(S, key, "errors").unwrap_or("?")).unwrap();
        wl(w, &line);
    }
    wl(w, "");
    wl(
        w,
        "The last row is a diagnostic, not a competitor: plain routing again, with lb's XDP \
         program attached to the lb namespace's veths and no VIP configured, so it passes \
         every packet to the kernel. It shows what XDP on veth costs before lb does any work \
         of its own: veth runs an attached program in its own NAPI poll, and first copies \
         nearly every packet into a fresh page (what a local socket sends is cloned and lacks \
         the headroom XDP needs), which a NIC's receive path does not.",
    );
    wl(w, "");
    wl(
        w,
        "On the XDP rows the routed path forwards the client's MTU-sized segments one by one \
         (no TSO without tx checksum offload); on the others whole GSO segments cross the lb \
         namespace, which is most of the single-stream difference.",
    );
    wl(w, "");
    wl(w, &format!("![end-to-end ratios]({chart})"));
    wl(w, "");
    wl(
        w,
        "| lb vs | new connections | keep-alive requests | single-stream throughput |",
    );
    wl(w, "|---|---:|---:|---:|");
    for lb in ["lb", "lb-tc"] {
        for (key, label) in SYSTEMS[..3].iter().chain([&DIAGNOSTIC]) {
            let mut line = format!("| {lb} vs {label} |");
            for (load, ..) in LOADS {
                write!(line, " {:.2}× |", val(lb, load) / val(key, load)).unwrap();
            }
            wl(w, &line);
        }
    }
    wl(w, "");
    let ratio = |other: &str, load: &str| val("lb", load) / val(other, load);
    wl(w, "Targets:");
    let vs_plain: Vec<String> = LOADS
        .iter()
        .map(|(load, label, _)| {
            let x = ratio("plain", load);
            format!("{label} {x:.2}× ({})", met(x >= 1.0))
        })
        .collect();
    wl(
        w,
        &format!(
            "- lb at or above plain routing on all three: {}.",
            vs_plain.join(", ")
        ),
    );
    let x = ratio("nftables", "cps");
    wl(
        w,
        &format!(
            "- At least 1.3× nftables on new connections: {x:.2}×: {}.",
            met(x >= 1.3)
        ),
    );
    let x = ratio("haproxy", "cps");
    wl(
        w,
        &format!(
            "- At least 2.5× HAProxy on new connections: {x:.2}×: {}.",
            met(x >= 2.5)
        ),
    );
    wl(w, "");
    let tc = |other: &str, load: &str| val("lb-tc", load) / val(other, load);
    wl(w, "Targets for the tc hook (the speed issue), same run:");
    for (other, load, what, min) in [
        ("plain", "cps", "plain routing on new connections", 1.0),
        ("plain", "rps", "plain routing on keep-alive requests", 1.0),
        ("nftables", "cps", "nftables on new connections", 1.3),
        ("haproxy", "cps", "HAProxy on new connections", 2.5),
    ] {
        let x = tc(other, load);
        wl(
            w,
            &format!("- At least {min:.1}× {what}: {x:.2}×: {}.", met(x >= min)),
        );
    }
    wl(w, "");
    e2e_ipv6(w, r);
    if let Some(failed) = r.get(S, "setup", "failed") {
        wl(
            w,
            &format!(
                "Rounds that failed and are left out of the medians: {failed} (see the run's log)."
            ),
        );
        wl(w, "");
    }
    wl(w, "Every round, in order (conn/s; req/s; Mbit/s):");
    wl(w, "");
    for (key, label) in SYSTEMS
        .iter()
        .chain(&[DIAGNOSTIC])
        .chain(&SYSTEMS6)
        .copied()
    {
        let runs = |c| r.get(S, key, c).unwrap_or("?").replace(' ', ", ");
        wl(
            w,
            &format!(
                "- {label}: {}; {}; {}",
                runs("cps_runs"),
                runs("rps_runs"),
                runs("mbit_runs")
            ),
        );
    }
    wl(w, "");
}

/// Section 2's IPv6 rows: the same loads over IPv6 on the topology built
/// dual-stack, against plain IPv6 routing and nftables' `ip6` DNAT.
fn e2e_ipv6(w: &mut String, r: &Results) {
    const S: &str = "e2e";
    let val = |sys: &str, load: &str| r.num(S, sys, load).unwrap_or(f64::NAN);
    wl(w, "### IPv6, same run");
    wl(w, "");
    wl(
        w,
        "The same loads over IPv6: the topology built dual-stack (every namespace has its \
         IPv6 address beside its IPv4 one), wrk and iperf3 addressing the reals' IPv6 \
         addresses (plain routing) or the IPv6 VIP, nftables with the same rules in a `table \
         ip6`, and lb with an IPv6 VIP over the reals' IPv6 addresses (NAT66), on each hook. \
         The last column compares each row with the same system over IPv4.",
    );
    wl(w, "");
    let mut head = String::from("| system |");
    let mut rule = String::from("|---|");
    for (_, label, unit) in LOADS {
        write!(head, " {label} ({unit}) | × plain IPv6 |").unwrap();
        rule.push_str("---:|---:|");
    }
    head.push_str(" new connections × IPv4 | errors |");
    rule.push_str("---:|---:|");
    wl(w, &head);
    wl(w, &rule);
    for (key, label) in SYSTEMS6 {
        let mut line = format!("| {label} |");
        for (load, ..) in LOADS {
            let v = val(key, load);
            write!(line, " {} | {:.2}× |", int(v), v / val("plain-ipv6", load)).unwrap();
        }
        let v4 = key.trim_end_matches("-ipv6");
        write!(
            line,
            " {:.2}× | {} |",
            val(key, "cps") / val(v4, "cps"),
            r.get(S, key, "errors").unwrap_or("?")
        )
        .unwrap();
        wl(w, &line);
    }
    wl(w, "");
    for lb in ["lb-ipv6", "lb-tc-ipv6"] {
        let x = |other: &str| val(lb, "cps") / val(other, "cps");
        wl(
            w,
            &format!(
                "- {lb}: new connections {:.2}× plain IPv6 routing, {:.2}× nftables `ip6` DNAT.",
                x("plain-ipv6"),
                x("nftables-ipv6"),
            ),
        );
    }
    wl(w, "");
}

fn scale(w: &mut String, r: &Results) {
    const S: &str = "scale";
    wl(w, "## 3. Scale: the flow table at 1M, 4M and 8M flows");
    wl(w, "");
    wl(
        w,
        &format!(
            "For each size, the real datapath is loaded with `FLOWS` sized for it (two entries \
             per flow, one per direction, plus room for the SYNs below and 64k spare, so the \
             LRU evicts nothing), and filled with established flows through \
             `flowtable::insert_batch` (BPF_MAP_UPDATE_BATCH). Memory: the map's `memlock` \
             from /proc/self/fdinfo (an LRU hash preallocates every entry at load, so this is \
             what the table costs whether full or not) and the drop in `MemAvailable` across \
             load and fill (noisier: anything else on the machine moves it). New flows: {} \
             distinct SYNs through BPF_PROG_TEST_RUN into the full table, single calls timed \
             by the kernel, and net of the fixed cost of a single call (section 1: {:.1} ns); \
             new flows per second per core is 10⁹ / net. Then the real `lb` binary against the pins, wall time: `lb \
             flows --pin-dir DIR --count`, and `lb flows --pin-dir DIR --real 203.0.113.12 \
             --limit 100` (a third of the flows match; the 100 first in order are printed). \
             Both read the whole table with BPF_MAP_LOOKUP_BATCH.",
            int(r.num(S, "setup", "syns").unwrap_or(0.0)),
            fixed_cost(r)
        ),
    );
    wl(w, "");
    wl(
        w,
        "| flows | table entries | memlock | bytes per flow (memlock) | bytes per flow (MemAvailable) | load | fill | first SYN into the full table, single / net | new flows/s per core (net) | `lb flows --count` | `lb flows --real … --limit 100` |",
    );
    wl(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in r.rows(S) {
        if let Some(why) = r.get(S, row, "skipped") {
            wl(w, &format!("| {row} | skipped: {why} |||||||||"));
            continue;
        }
        let n = |c| r.num(S, row, c).unwrap_or(f64::NAN);
        let syn_net = n("syn_ns") - fixed_cost(r);
        wl(
            w,
            &format!(
                "| {row} | {} | {:.2} GiB | {} | {} | {:.2} s | {:.2} s | {:.0} / {syn_net:.0} ns | {} | {:.2} s | {:.2} s |",
                int(n("table_entries")),
                n("memlock_bytes") / (1u64 << 30) as f64,
                int(n("memlock_per_flow")),
                int(n("meminfo_per_flow")),
                n("load_s"),
                n("fill_s"),
                n("syn_ns"),
                int(1e9 / syn_net),
                n("count_s"),
                n("filtered_s"),
            ),
        );
    }
    wl(w, "");
    wl(
        w,
        "For scale (anchors §2): Cilium and loxilb default to 512k connection-tracking entries, \
         the Cisco CSM held 1M concurrent connections, Katran defaults to 8M LRU entries.",
    );
    wl(w, "");
}

/// The median of the rounds' `col`.
pub(super) fn median_of(r: &Results, section: &str, rows: &[&str], col: &str) -> f64 {
    let mut v: Vec<f64> = rows
        .iter()
        .filter_map(|row| r.num(section, row, col))
        .collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn failover(w: &mut String, r: &Results) {
    const S: &str = "failover";
    wl(w, "## 4. Failover");
    wl(w, "");
    let n = |row: &str, c: &str| r.num(S, row, c).unwrap_or(f64::NAN);
    wl(
        w,
        &format!(
            "The two-node topology of the HA tests (tests/src/ha_pair.rs): the real `lb` binary \
             on both nodes, XDP native, heartbeat {} ms, the floating gateways moved by \
             gratuitous ARP, three `lb-testsrv` reals, flow tables of {} entries.",
            int(n("setup", "heartbeat_ms")),
            int(n("setup", "flow_table_entries"))
        ),
    );
    wl(w, "");
    wl(w, "### The gap a steady stream sees");
    wl(w, "");
    wl(
        w,
        "Each round, while two streams run from the client through the VIP, the active node \
         dies: its agent is SIGKILLed and its three links go down. The UDP stream sends one \
         datagram every millisecond (each numbered; the real echoes the number), its gap is \
         the longest time between two replies; it shows the datapath's outage. The TCP stream \
         is an echo round trip every 5 ms on one connection; its gap adds TCP's own \
         retransmission timer (at least 200 ms on Linux) to the outage. Promotion is when \
         `lb ha status` on the standby first says `active`. Both streams should survive on the \
         same real; a round where one did not says so. The dead node then returns as after a reboot \
         and takes a bulk copy, so the next round kills the other node.",
    );
    wl(w, "");
    wl(
        w,
        "| round | promotion (ms) | UDP gap (ms) | UDP datagrams lost / sent | TCP echo gap (ms) |",
    );
    wl(w, "|---|---:|---:|---:|---:|");
    let rounds: Vec<&str> = r
        .rows(S)
        .into_iter()
        .filter(|row| row.starts_with("round "))
        .collect();
    let mut broken = 0;
    for row in &rounds {
        let reals = r.get(S, row, "udp_reals").unwrap_or("");
        let udp_moved = reals.split_whitespace().count() > 1;
        let tcp = match r.get(S, row, "tcp_broke") {
            Some(e) => format!("**broke**: {e}"),
            None => format!("{:.0}", n(row, "tcp_gap_ms")),
        };
        if udp_moved || r.get(S, row, "tcp_broke").is_some() {
            broken += 1;
        }
        wl(
            w,
            &format!(
                "| {row} | {:.0} | {:.0}{} | {} / {} | {tcp} |",
                n(row, "promotion_ms"),
                n(row, "udp_gap_ms"),
                if udp_moved {
                    format!(" (**changed real**: {reals})")
                } else {
                    String::new()
                },
                int(n(row, "udp_lost")),
                int(n(row, "udp_sent")),
            ),
        );
    }
    let med = |c| median_of(r, S, &rounds, c);
    wl(
        w,
        &format!(
            "| **median** | **{:.0}** | **{:.0}** | | **{:.0}** |",
            med("promotion_ms"),
            med("udp_gap_ms"),
            med("tcp_gap_ms")
        ),
    );
    wl(w, "");
    wl(
        w,
        &if broken == 0 {
            format!(
                "Both streams survived every one of the {} rounds, on the same real.",
                rounds.len()
            )
        } else {
            format!(
                "**In {broken} of {} rounds a stream broke or the UDP flow changed real** \
                 (lb-bench's stderr has what the new active node held).",
                rounds.len()
            )
        },
    );
    wl(w, "");
    wl(
        w,
        "The gap is the dead interval (three heartbeats, confirmed by an unanswered ping to \
         the floating addresses) plus the gratuitous ARP reaching the client and the reals; it \
         scales with `heartbeat`. For comparison, VRRP's defaults (RFC 5798, keepalived: \
         advertisement interval 1 s) declare a master dead after about 3.6 s.",
    );
    wl(w, "");
    wl(w, "### Sync lag and throughput");
    wl(w, "");
    wl(
        w,
        "Flows are made on the active node by running SYNs through its attached XDP program \
         with BPF_PROG_TEST_RUN (nothing is transmitted; the program creates the flow and \
         writes its `SYNC` record as for a real packet), and the standby's pinned flow table is \
         polled every 50 µs for each flow's forward entry. So every figure covers the whole \
         path: ring buffer, active agent, authenticated UDP stream, standby agent, and both of \
         the standby's map writes.",
    );
    wl(w, "");
    let lag = "sync lag, one flow at a time";
    wl(w, "| measurement | value |");
    wl(w, "|---|---:|");
    wl(
        w,
        &format!(
            "| sync lag, one new flow at a time ({} samples, 20 ms apart): median / p90 / max | {:.2} / {:.2} / {:.2} ms |",
            int(n(lag, "samples")),
            n(lag, "median_ms"),
            n(lag, "p90_ms"),
            n(lag, "max_ms")
        ),
    );
    for row in r.rows(S).into_iter().filter(|row| row.starts_with("burst")) {
        wl(
            w,
            &format!(
                "| {row}, injected at {} flows/s: replicated flows/s | {} |",
                int(n(row, "injected_per_s")),
                int(n(row, "replicated_per_s"))
            ),
        );
        wl(
            w,
            &format!(
                "| {row}: the last one on the standby after the last injection | {:.1} ms |",
                n(row, "last_lag_ms")
            ),
        );
        wl(
            w,
            &format!(
                "| {row}: on the standby / records lost in the ring (`sync_lost`) | {} / {} |",
                int(n(row, "on_standby")),
                int(n(row, "sync_lost"))
            ),
        );
    }
    for row in r.rows(S).into_iter().filter(|row| row.starts_with("bulk")) {
        wl(
            w,
            &format!(
                "| {row}: copied (the table also holds the burst's) / time request to last applied / flows/s | {} / {:.0} ms / {} |",
                int(n(row, "flows")),
                n(row, "took_ms"),
                int(n(row, "flows_per_s"))
            ),
        );
        wl(
            w,
            &format!(
                "| {row}: standby agent start to synced | {:.0} ms |",
                n(row, "restart_to_synced_ms")
            ),
        );
    }
    wl(w, "");
    wl(
        w,
        "For scale (anchors §1): IPVS's sync daemon sends a connection only after 3 of every \
         50 packets (`sync_threshold`), loxilb polls established entries on a timer, and \
         Katran, Cilium and DPVS do not sync at all.",
    );
    wl(w, "");
}

fn edges(w: &mut String, r: &Results) {
    const S: &str = "edges";
    let setup = |c| r.num(S, "setup", c).unwrap_or(f64::NAN);
    let (table, embryos, between) = (
        setup("flow_table_entries"),
        setup("embryo_table_entries"),
        setup("flood_between"),
    );
    let embryo_flows = embryos / 2.0;
    let fixed = fixed_cost(r);
    let net = |row: &str| r.num(S, row, "ns_single").unwrap_or(f64::NAN) - fixed;
    wl(w, "## 5. Edges: ICMP errors, fragments and SYN floods");
    wl(w, "");
    wl(
        w,
        &format!(
            "As section 1: the real XDP object through BPF_PROG_TEST_RUN, its maps programmed by \
             `Control::apply`, in the same kind of namespace, pinned to one CPU, each packet \
             timed as a single call by the kernel's clock (every path here rewrites or keeps \
             state), the median of 15 batch means; **net** is single minus section 1's fixed \
             cost of a single call ({fixed:.1} ns). Every case checks the verdict of every run, \
             and that the reason counters moved by exactly what the packets sent account for \
             (timed and untimed) and no other reason moved. This section loads its own \
             datapath with a small flow table, so that floods of many times its size are \
             affordable: `FLOWS` {} entries, and the half-open table `EMBRYOS` a quarter of \
             it, {} entries, that is {} half-open flows (two entries per flow). One VIP, \
             TCP port 80 and UDP port 53, each on three reals, round-robin.",
            int(table),
            int(embryos),
            int(embryo_flows)
        ),
    );
    wl(w, "");
    wl(
        w,
        "- ICMP error to the client: the \"fragmentation needed\" (next-hop MTU 1280) a \
         router's kernel sends (TOS 0xc0, TTL 64), from a router between lb and the reals \
         (203.0.113.254) to the client of an established TCP flow, quoting the client's \
         1,400-byte segment as lb forwarded it, client → real (its IPv4 header and 40 bytes \
         of TCP). lb finds the flow from the quote, rewrites the quote to client → VIP (the \
         quoted address and port, the quoted IPv4 and TCP checksums, the ICMP checksum) and \
         forwards the error to the client.",
    );
    wl(
        w,
        "- ICMP error to the real: the same error from a router in front of lb (192.0.2.254) \
         to the VIP, quoting the real's answer as lb sent it, VIP → client. lb rewrites the \
         quote to real → client and the destination to the real, and forwards it there.",
    );
    wl(
        w,
        "- Later fragment: 3,000-byte UDP datagrams to the UDP VIP, on a flow its real has \
         answered (assured), each cut into three fragments (1,480, 1,480 and 48 bytes of \
         payload) with an IP id of its own. Per datagram the first fragment, which carries \
         the ports, is sent untimed (it is translated and records its translation in \
         `FRAGS`); its two later fragments are timed: found in `FRAGS` by (source, \
         destination, protocol, id), their destination rewritten, forwarded.",
    );
    wl(
        w,
        &format!(
            "- During a flood: `EMBRYOS` is first filled with SYNs from spoofed clients (each \
             a new half-open flow), and before each timed established packet {between:.0} more \
             such SYNs run untimed, each evicting older half-open entries. A first SYN with \
             room: each from a new client, `EMBRYOS` emptied from userspace every {} SYNs so it \
             never fills; during a flood, `EMBRYOS` is full and each SYN's two entries evict \
             two others.",
            int(embryo_flows / 2.0)
        ),
    );
    wl(w, "");
    wl(
        w,
        "| path | verdict | ns/packet, single | ns/packet, net | Mpps per core (net) | packets timed |",
    );
    wl(w, "|---|---|---:|---:|---:|---:|");
    for row in r.rows(S) {
        let Some(single) = r.num(S, row, "ns_single") else {
            continue;
        };
        let n = net(row);
        wl(
            w,
            &format!(
                "| {row} | {} | {single:.1} | {n:.1} | {:.2} | {} |",
                r.get(S, row, "verdict").unwrap_or(""),
                1000.0 / n,
                int(r.num(S, row, "packets").unwrap_or(0.0)),
            ),
        );
    }
    wl(w, "");
    let compare = |with: &str, without: &str| {
        let (a, b) = (net(with), net(without));
        format!(
            "{a:.0} ns net against {b:.0} ns without ({:+.0} ns, {:.2}×)",
            a - b,
            a / b
        )
    };
    wl(
        w,
        &format!(
            "During a flood, an established packet costs {}: it takes the same path, and pays \
             only for the caches the flood's work shares with it. A first SYN costs {}: into a \
             full `EMBRYOS`, each insert first has the kernel's LRU find and evict an entry.",
            compare(
                "established, forward, during a flood",
                "established, forward"
            ),
            compare("first SYN during a flood", "first SYN"),
        ),
    );
    wl(w, "");

    wl(w, "### Established flows through a flood");
    wl(w, "");
    wl(
        w,
        &format!(
            "A fifth of the flow table's room in established flows (each through SYN, SYN-ACK \
             and ACK, so it moved to `FLOWS`), then a flood of SYNs from spoofed clients, many \
             times the size of the flow table, then one packet of each established flow. \
             Survived: the packet still found its flow's entry in `FLOWS` and went to the real \
             its SYN had reached. A flood recycles only `EMBRYOS` ({} entries here), never \
             `FLOWS`.",
            int(embryos)
        ),
    );
    wl(w, "");
    wl(
        w,
        "| flood | flood SYNs | established flows that survived | `FLOWS` entries before / after the flood | `EMBRYOS` entries after |",
    );
    wl(w, "|---|---:|---:|---:|---:|");
    for row in r.rows(S) {
        let Some(survived) = r.num(S, row, "survived") else {
            continue;
        };
        let n = |c| r.num(S, row, c).unwrap_or(f64::NAN);
        wl(
            w,
            &format!(
                "| {row} | {} | {} of {} | {} / {} | {} |",
                int(n("flood_syns")),
                int(survived),
                int(n("flows")),
                int(n("flows_entries_before")),
                int(n("flows_entries_after")),
                int(n("embryos_entries_after")),
            ),
        );
    }
    wl(w, "");

    wl(w, "### New connections during a flood");
    wl(w, "");
    wl(
        w,
        &format!(
            "The rule measured (README, \"New flows start half-open\"): a legitimate connection \
             needs its half-open entries for one handshake round trip, from its SYN to its ACK \
             as lb sees them, so new connections keep being accepted as long as the flood sends \
             fewer SYNs per handshake round trip than `EMBRYOS` holds flows ({} here; 131,072 \
             with a flow table of 1,048,576 entries). With `EMBRYOS` already full of the flood, \
             each legitimate handshake is its SYN, then the given number of flood SYNs (all \
             arriving within its round trip), then its real's SYN-ACK and its client's ACK. \
             Completed: the SYN-ACK was translated and the ACK moved the flow into `FLOWS` (the \
             `assured` counter) on the real its SYN reached. When the flood has evicted the \
             half-open flow, the SYN-ACK leaves untranslated (the client would answer it with \
             a RST) and the ACK finds no flow: lb picks it up mid-stream as a new flow, on \
             whatever real the schedule gives.",
            int(embryo_flows)
        ),
    );
    wl(w, "");
    wl(
        w,
        "| flood SYNs in each handshake's round trip | × `EMBRYOS` flows | handshakes completed | SYN-ACK untranslated | ACK found no flow |",
    );
    wl(w, "|---:|---:|---:|---:|---:|");
    let mut below_ok = true;
    let mut below_any = false;
    for row in r.rows(S) {
        let Some(done) = r.num(S, row, "completed") else {
            continue;
        };
        let n = |c| r.num(S, row, c).unwrap_or(f64::NAN);
        let ratio = n("ratio");
        if ratio < 1.0 {
            below_any = true;
            below_ok &= done == n("handshakes");
        }
        wl(
            w,
            &format!(
                "| {} | {ratio}× | {} of {} | {} | {} |",
                int(n("flood_syns")),
                int(done),
                int(n("handshakes")),
                int(n("synack_untranslated")),
                int(n("ack_without_flow")),
            ),
        );
    }
    wl(w, "");
    if below_any {
        wl(
            w,
            &format!(
                "Every handshake completed at every flood rate below `EMBRYOS`' flows per round \
                 trip: {}.",
                if below_ok { "**held**" } else { "**not held**" }
            ),
        );
        wl(w, "");
    }
}
