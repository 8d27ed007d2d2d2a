//! Datapath fixtures: packets built here run through BPF_PROG_TEST_RUN on the
//! real object, with maps programmed by the agent's own control code. Every
//! case runs through both programs, XDP (`lb_xdp`) and tc (`lb_tc`), each on
//! a datapath of its own, in the production and the trace build.
//!
//! The cases live in tables, one file per concern (nat, tcp_state,
//! failaction, passive, ha, hop, edges, v6, refuse, cluster); `runner.rs`
//! resets the datapath before each and runs it alone, so a failure names
//! its case and the others still run. `LB_FIXTURE=text` runs only the cases
//! whose name holds `text`.
//!
//! The test runs inside a namespace it makes (veth c0 towards clients, s0
//! towards reals, static neighbours) so `bpf_fib_lookup` resolves next hops
//! as on a real lb host, and on one CPU so round-robin cursors are
//! predictable.
mod cluster;
mod edges;
mod failaction;
mod ha;
mod hop;
mod nat;
mod packet;
mod packet6;
mod passive;
mod refuse;
mod runner;
mod tcp_state;
mod upgrade;
mod v6;

use std::net::Ipv4Addr;

use lb_common::reason;
use lb_tests::{
    fixture_net::{self, CLIENT, CLIENT_MAC, LB_C_MAC, LB_S_MAC, REALS, real_mac},
    netns::Netns,
};
use lb_userspace::{config::Config, datapath::Build};
use packet::*;
use runner::*;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const VIP_HAIR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const VIP_NONEIGH: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 13);
const HAIR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const HAIR_MAC: Mac = [2, 0, 0, 0, 0, 0x50];
const R1: Ipv4Addr = REALS[0];
const R2: Ipv4Addr = REALS[1];
const R3: Ipv4Addr = REALS[2];
/// The web farm's smooth weighted round-robin over weights 1:2:3
/// (lb-userspace's sched.rs): where a fresh datapath's new flows go.
const WEB_SCHED: [Ipv4Addr; 6] = [R3, R2, R1, R3, R2, R3];

fn config(pin_dir: &str) -> String {
    format!(
        r#"
interfaces: [c0, s0]
serverfarms:
  web:
    algorithm: weighted-round-robin
    reals:
      - {{ address: 203.0.113.11, port: 8080, weight: 1 }}
      - {{ address: 203.0.113.12, port: 8080, weight: 2 }}
      - {{ address: 203.0.113.13, port: 8080, weight: 3 }}
  dns:
    reals:
      - {{ address: 203.0.113.11, port: 5353 }}
  hair:
    reals: [{{ address: 192.0.2.50, port: 8080 }}]
  noneigh:
    reals: [{{ address: 203.0.113.99, port: 8080 }}]
  purge:
    failaction: purge
    reals: [{{ address: 203.0.113.11, port: 7 }}, {{ address: 203.0.113.12, port: 7 }}]
  reassign:
    failaction: reassign
    reals: [{{ address: 203.0.113.11, port: 9 }}, {{ address: 203.0.113.12, port: 9 }}]
  keep:
    reals:
      - {{ address: 203.0.113.11, port: 11 }}
      - {{ address: 203.0.113.12, port: 11 }}
      - {{ address: 203.0.113.13, port: 11, backup: true }}
  capped:
    reals: [{{ address: 203.0.113.11, port: 10, max_conns: 1 }}, {{ address: 203.0.113.12, port: 10 }}]
  empty:
    reals: [{{ address: 203.0.113.11, port: 9, state: disabled }}]
{farms6}
vips:
  www: {{ address: 198.51.100.10, port: 80, serverfarm: web }}
  dns: {{ address: 198.51.100.10, port: 53, protocol: udp, serverfarm: dns }}
  hair: {{ address: 198.51.100.11, port: 80, serverfarm: hair }}
  noneigh: {{ address: 198.51.100.12, port: 80, serverfarm: noneigh }}
  empty: {{ address: 198.51.100.13, port: 80, serverfarm: empty }}
  ptcp: {{ address: 198.51.100.20, port: 7, serverfarm: purge }}
  pudp: {{ address: 198.51.100.20, port: 7, protocol: udp, serverfarm: purge }}
  rtcp: {{ address: 198.51.100.21, port: 9, serverfarm: reassign }}
  rudp: {{ address: 198.51.100.21, port: 9, protocol: udp, serverfarm: reassign }}
  keep: {{ address: 198.51.100.22, port: 11, serverfarm: keep }}
  capped: {{ address: 198.51.100.23, port: 10, serverfarm: capped }}
{vips6}
{refuse_vips}
bpf: {{ pin_dir: {pin_dir}, flow_table_size: 4096 }}
"#,
        farms6 = [v6::CONFIG, refuse::FARMS]
            .map(|c| c.trim_matches('\n'))
            .join("\n"),
        vips6 = v6::VIPS.trim_matches('\n'),
        refuse_vips = refuse::VIPS.trim_matches('\n'),
    )
}

#[test]
fn datapath_fixtures_xdp() {
    fixtures(Hook::Xdp, Build::Production);
}

#[test]
fn datapath_fixtures_tc() {
    fixtures(Hook::Tc, Build::Production);
}

/// The same cases through the trace build (`lb trace`), tracing every
/// packet: the same verdicts, reasons and bytes, and one record a packet
/// naming that verdict and reason.
#[test]
fn datapath_fixtures_xdp_trace_build() {
    fixtures(Hook::Xdp, Build::Trace);
}

#[test]
fn datapath_fixtures_tc_trace_build() {
    fixtures(Hook::Tc, Build::Trace);
}

/// Every table, in the order they run.
fn all_cases() -> Vec<Case> {
    [
        nat::cases(),
        refuse::cases(),
        tcp_state::cases(),
        failaction::cases(),
        passive::cases(),
        ha::cases(),
        cluster::cases(),
        hop::cases(),
        edges::cases(),
        v6::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn fixtures(hook: Hook, build: Build) {
    lb_tests::require_root();
    let ns = Netns::new("fx");
    fixture_net::setup(&ns, &[(HAIR, HAIR_MAC)]);
    let pin_dir = format!("/sys/fs/bpf/{}", ns.name());
    let started = std::time::Instant::now();
    let sum = ns.run(move || {
        pin_to_cpu0();
        let cfg =
            Config::parse(&config(&pin_dir), "fixtures.yaml").unwrap_or_else(|e| panic!("{e}"));
        let mut fx = Fixture::load(hook, build, cfg);
        let sum = run_all(&mut fx, all_cases());
        fx.shutdown();
        sum
    });
    let (passed, failed) = (sum.passed, sum.failed.len());
    println!(
        "({hook:?}, {build:?}): {passed} cases passed, {failed} failed ({} steps run) in {:.1?}",
        sum.steps,
        started.elapsed()
    );
    assert!(failed == 0, "failed cases: {:#?}", sum.failed);
    match std::env::var("LB_FIXTURE") {
        Ok(f) => assert!(passed > 0, "LB_FIXTURE={f:?} matched no case"),
        Err(_) => assert!(passed >= 100, "only {passed} cases ran"),
    }
    assert!(
        !std::path::Path::new(&format!("/sys/fs/bpf/{}", ns.name())).exists(),
        "pins removed"
    );
}

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0,
            "sched_setaffinity"
        );
    }
}

// --- Frames and steps the tables share. ---

fn from_client(p: Pkt) -> Pkt {
    Pkt {
        src_mac: CLIENT_MAC,
        dst_mac: LB_C_MAC,
        ..p
    }
}

fn from_real(p: Pkt) -> Pkt {
    Pkt {
        src_mac: real_mac(p.src),
        dst_mac: LB_S_MAC,
        ..p
    }
}

/// A client's TCP segment to `to`.
fn tcp_in(port: u16, to: (Ipv4Addr, u16), flags: u8, seq: u32, ack: u32, data: &[u8]) -> Pkt {
    acked(
        from_client(Pkt::tcp((CLIENT, port), to, flags, seq, data)),
        ack,
    )
}

/// A real's TCP segment from `from` to the client's `port`.
fn tcp_out(from: (Ipv4Addr, u16), port: u16, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Pkt {
    acked(
        from_real(Pkt::tcp(from, (CLIENT, port), flags, seq, data)),
        ack,
    )
}

/// `p` with its TCP acknowledgement number set.
fn acked(mut p: Pkt, ack_no: u32) -> Pkt {
    if let L4::Tcp { ack, .. } = &mut p.l4 {
        *ack = ack_no;
    }
    p
}

/// What a client packet becomes: to the real, via s0, TTL one less.
fn dnat(p: &Pkt, real: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut e = p.clone();
    e.dst = real;
    e.ttl -= 1;
    e.src_mac = LB_S_MAC;
    e.dst_mac = real_mac(real);
    set_dport(&mut e, port);
    e.build()
}

/// What a real's reply becomes: from the VIP, via c0, TTL one less.
fn snat(p: &Pkt, vip: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut e = p.clone();
    e.src = vip;
    e.ttl -= 1;
    e.src_mac = LB_C_MAC;
    e.dst_mac = CLIENT_MAC;
    match &mut e.l4 {
        L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = port,
        L4::Icmp { .. } => unreachable!(),
    }
    e.build()
}

fn set_dport(p: &mut Pkt, port: u16) {
    match &mut p.l4 {
        L4::Tcp { dport, .. } | L4::Udp { dport, .. } => *dport = port,
        L4::Icmp { .. } => unreachable!(),
    }
}

/// A frame arriving on `on`, redirected as `want`, counted as `why`.
fn redirected(name: &str, on: Side, send: Vec<u8>, why: u32, want: Vec<u8>) -> Step {
    Step {
        name: name.into(),
        on,
        send,
        verdict: XDP_REDIRECT,
        reason: why,
        out: Out::Exact(want),
        ..Step::default()
    }
}

/// A client packet NATed to `real:port` and redirected.
fn fwd(name: &str, p: &Pkt, real: Ipv4Addr, port: u16) -> Step {
    redirected(name, C0, p.build(), reason::FORWARD, dnat(p, real, port))
}

/// A real's packet NATed back from `vip:port` and redirected.
fn rev(name: &str, p: &Pkt, vip: Ipv4Addr, port: u16) -> Step {
    redirected(name, S0, p.build(), reason::REVERSE, snat(p, vip, port))
}

/// A client frame forwarded by redirect, its bytes judged by a `then`.
fn forwarded(name: &str, send: Vec<u8>) -> Step {
    Step {
        name: name.into(),
        send,
        verdict: XDP_REDIRECT,
        reason: reason::FORWARD,
        ..Step::default()
    }
}

/// A frame passed to the kernel byte-identical.
fn passed(name: &str, on: Side, send: Vec<u8>, why: u32) -> Step {
    Step {
        name: name.into(),
        on,
        send,
        verdict: XDP_PASS,
        reason: why,
        out: Out::Same,
        ..Step::default()
    }
}

/// A client frame dropped.
fn dropped(name: &str, send: Vec<u8>, why: u32) -> Step {
    Step {
        name: name.into(),
        send,
        verdict: XDP_DROP,
        reason: why,
        ..Step::default()
    }
}

/// A TCP handshake from the client's `port` to VIP:80, checked as far as
/// its verdicts and the flow's assurance; the real it reached.
fn handshake(fx: &mut Fixture, port: u16) -> Ipv4Addr {
    let syn = tcp_in(port, (VIP, 80), SYN, 100, 0, b"");
    assert_eq!(fx.run(C0, &syn.build()).0, XDP_REDIRECT, "port {port}: SYN");
    let real = fx.flow_real(port).expect("a flow for the SYN");
    let synack = tcp_out((real, 8080), port, SYN | ACK, 500, 101, b"");
    assert_eq!(
        fx.run(S0, &synack.build()).0,
        XDP_REDIRECT,
        "port {port}: SYN-ACK"
    );
    let assured = fx.counter(reason::ASSURED);
    let ack = tcp_in(port, (VIP, 80), ACK, 101, 501, b"");
    assert_eq!(fx.run(C0, &ack.build()).0, XDP_REDIRECT, "port {port}: ACK");
    assert_eq!(
        fx.counter(reason::ASSURED),
        assured + 1,
        "port {port}: assured"
    );
    assert!(fx.flow_in(port, false).is_some(), "port {port}: in FLOWS");
    real
}

fn mac_text(m: Mac) -> String {
    let b: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
    b.join(":")
}
