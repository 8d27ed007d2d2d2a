//! Datapath fixtures: packets built here run through BPF_PROG_TEST_RUN on the
//! real object, with maps programmed by the agent's own control code. Every
//! case runs through both programs, XDP (`lb_xdp`) and tc (`lb_tc`), each on
//! a datapath of its own.
//! Each case asserts the verdict, the reason counter, and the exact output
//! bytes, whose checksums pnet computes from scratch.
//!
//! The test runs inside a namespace it makes (veth c0 towards clients, s0
//! towards reals, static neighbours) so `bpf_fib_lookup` resolves next hops
//! as on a real lb host, and on one CPU so round-robin cursors are
//! predictable.
mod cluster;
mod edges;
mod packet;
mod packet6;
mod refuse;
mod upgrade;
mod v6;

use std::net::Ipv4Addr;

use aya::programs::{TestRun, TestRunOptions};
use lb_common::{Counters, ST_CLOSED, ST_ESTABLISHED, ST_FIN, ST_SYN, ST_UDP, reason};
use lb_tests::{
    fixture_net::{self, CLIENT, CLIENT_MAC, LB_C_MAC, LB_S_MAC, REALS, real_mac},
    netns::Netns,
};
use lb_userspace::{
    config::{AdminState, Config},
    control::{Control, RealKey},
    datapath::{self, Build, Datapath},
    flowtable,
};
use packet::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const VIP_HAIR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const VIP_NONEIGH: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 13);
const HAIR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const HAIR_MAC: Mac = [2, 0, 0, 0, 0, 0x50];

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

/// Which of the object's two programs the cases run through.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hook {
    Xdp,
    Tc,
}

/// tc's verdicts (linux/pkt_cls.h).
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

struct Fixture {
    hook: Hook,
    build: Build,
    dp: Option<Datapath>,
    /// The trace build's records (its filter matches every packet).
    records: Option<lb_userspace::trace::Records>,
    /// The record of the last packet run, on the trace build.
    last: Option<lb_common::TraceRecord>,
    ctl: Control,
    c0: u32,
    s0: u32,
    cases: Vec<String>,
}

impl Fixture {
    fn dp(&mut self) -> &mut Datapath {
        self.dp.as_mut().expect("loaded")
    }

    /// Runs one frame arriving on `ingress`: the verdict in XDP's terms
    /// (tc's redirect, which stands for both XDP_TX and XDP_REDIRECT, as
    /// XDP_REDIRECT: the output's MACs tell the interface) and the frame.
    fn run(&mut self, ingress: u32, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let md: Vec<u32> = match self.hook {
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
            // rx_queue_index, egress_ifindex.
            Hook::Xdp => vec![0, frame.len() as u32, 0, ingress, 0, 0],
            // struct __sk_buff up to ifindex (the device the skb is on);
            // the kernel accepts only these few fields set.
            Hook::Tc => {
                let mut skb = vec![0u32; 11];
                skb[9] = ingress;
                skb[10] = ingress;
                skb
            }
        };
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        };
        let hook = self.hook;
        let dp = self.dp();
        let r = match hook {
            Hook::Xdp => dp.program().test_run(opts),
            Hook::Tc => dp.tc_program().test_run(opts),
        }
        .expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        if let Some(records) = self.records.as_mut() {
            // Exactly one record a packet, with the program's own verdict.
            let got = records.read();
            assert_eq!(
                got.len(),
                1,
                "{:?} trace build: records of one packet",
                hook
            );
            assert_eq!(records.malformed, 0);
            assert_eq!(got[0].action, r.return_value, "the record's verdict");
            assert_eq!(got[0].tc != 0, hook == Hook::Tc);
            self.last = Some(got[0]);
        }
        let verdict = match (hook, r.return_value) {
            (Hook::Xdp, v) => v,
            (Hook::Tc, TC_ACT_OK) => XDP_PASS,
            (Hook::Tc, TC_ACT_SHOT) => XDP_DROP,
            (Hook::Tc, TC_ACT_REDIRECT) => XDP_REDIRECT,
            (Hook::Tc, v) => panic!("tc verdict {v}"),
        };
        (verdict, out)
    }

    fn counter(&mut self, why: u32) -> u64 {
        self.dp()
            .maps
            .stats
            .get(&why, 0)
            .expect("STATS")
            .iter()
            .sum()
    }

    /// Runs one case: verdict, the reason counted exactly once, and (when
    /// given) the exact output frame, whose checksums must verify.
    fn case(
        &mut self,
        name: &str,
        ingress: u32,
        input: &[u8],
        action: u32,
        why: u32,
        expect: Option<&[u8]>,
    ) -> Vec<u8> {
        // The kernel's skb test run refuses an IPv4 frame too short for an
        // IPv4 header (EINVAL); such frames only run through XDP here.
        if self.hook == Hook::Tc && input.len() < 14 + 20 {
            self.cases
                .push(format!("{name}: not run, see Fixture::case"));
            return input.to_vec();
        }
        let before = self.counter(why);
        let (got, out) = self.run(ingress, input);
        let action = if self.hook == Hook::Tc && action == XDP_TX {
            XDP_REDIRECT
        } else {
            action
        };
        assert_eq!(
            got, action,
            "{name} ({:?}, {:?}): verdict",
            self.hook, self.build
        );
        if let Some(rec) = self.last.take() {
            assert_eq!(
                rec.reason,
                why,
                "{name}: the trace record's reason ({})",
                reason::NAMES.get(rec.reason as usize).unwrap_or(&"?")
            );
        }
        assert_eq!(
            self.counter(why),
            before + 1,
            "{name}: reason {} counted once",
            reason::NAMES[why as usize]
        );
        if let Some(expect) = expect
            && out != expect
        {
            panic!(
                "{name}: output differs\n got: {}\nwant: {}",
                hex(&out),
                hex(expect)
            );
        }
        // Every frame the program rewrote must carry valid checksums.
        if action != XDP_DROP && out != input {
            let valid = if out[12..14] == [0x86, 0xdd] {
                packet6::checksums_valid6(&out)
            } else {
                checksums_valid(&out)
            };
            assert!(valid, "{name}: checksums");
        }
        self.cases.push(name.to_string());
        out
    }

    fn vip_counters(&mut self, id: u32) -> Counters {
        datapath::sum_counters(
            self.dp()
                .maps
                .vip_stats
                .get(&id, 0)
                .expect("VIP_STATS")
                .iter(),
        )
    }

    fn real_counters(&mut self, id: u32) -> Counters {
        datapath::sum_counters(
            self.dp()
                .maps
                .real_stats
                .get(&id, 0)
                .expect("REAL_STATS")
                .iter(),
        )
    }

    fn real_id(&self, addr: Ipv4Addr, port: u16) -> u32 {
        self.ctl
            .programmed()
            .reals
            .iter()
            .find(|(k, _)| k.addr == addr && k.port == port)
            .expect("real")
            .1
            .0
    }

    fn sweep(&mut self) -> flowtable::Sweep {
        let Fixture { dp, ctl, .. } = self;
        flowtable::sweep(
            &mut dp.as_mut().unwrap().maps.flows,
            ctl,
            datapath::now_ns(),
        )
        .expect("sweep")
    }

    /// The flow, both directions, of the client's port: assured (`FLOWS`)
    /// or half-open (`EMBRYOS`).
    fn flow(&mut self, client_port: u16) -> Option<flowtable::Joined> {
        self.flow_in(client_port, false)
            .or_else(|| self.flow_in(client_port, true))
    }

    /// Entries in both flow tables.
    fn entries(&mut self) -> usize {
        let maps = &self.dp().maps;
        maps.flows.keys().count() + maps.embryos.keys().count()
    }

    /// The flow of the client's port in one table.
    fn flow_in(&mut self, client_port: u16, embryo: bool) -> Option<flowtable::Joined> {
        let maps = &self.dp().maps;
        let t =
            flowtable::read(if embryo { &maps.embryos } else { &maps.flows }).expect("read flows");
        t.flows
            .into_iter()
            .find(|f| u16::from_be(f.fwd_key.src_port_be) == client_port)
    }

    fn flow_state(&mut self, client_port: u16) -> Option<u8> {
        self.flow(client_port).map(|f| f.state())
    }

    fn flow_real(&mut self, client_port: u16) -> Option<Ipv4Addr> {
        self.flow(client_port).map(|f| {
            let a = f.fwd.nat_addr;
            Ipv4Addr::new(a[12], a[13], a[14], a[15])
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

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

fn fixtures(hook: Hook, build: Build) {
    lb_tests::require_root();
    let ns = Netns::new("fx");
    fixture_net::setup(&ns, &[(HAIR, HAIR_MAC)]);
    let pin_dir = format!("/sys/fs/bpf/{}", ns.name());
    let cases = ns.run(move || {
        pin_to_cpu0();
        let cfg =
            Config::parse(&config(&pin_dir), "fixtures.yaml").unwrap_or_else(|e| panic!("{e}"));
        // {e:#} carries the verifier's log when it refused the program.
        let sizes = datapath::table_sizes(cfg.bpf.flow_table_size);
        let mut dp = Datapath::load_build(build, &cfg.bpf.pin_dir, true, &sizes)
            .unwrap_or_else(|e| panic!("load: {e:#}"));
        let records = (build == Build::Trace).then(|| {
            let every = lb_common::TraceFilter {
                on: 1,
                ..Default::default()
            };
            dp.set_trace_filter(&every).expect("TRACE_FILTER");
            lb_userspace::trace::Records::open(&mut dp).expect("the trace build's ring")
        });
        let mut ctl = Control::new();
        ctl.apply(&cfg, &mut dp.maps).expect("program maps");
        let c0 = datapath::ifindex("c0").unwrap();
        let s0 = datapath::ifindex("s0").unwrap();
        dp.allow_redirect(c0).unwrap();
        dp.allow_redirect(s0).unwrap();
        let mut fx = Fixture {
            hook,
            build,
            dp: Some(dp),
            records,
            last: None,
            ctl,
            c0,
            s0,
            cases: Vec::new(),
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cases(&mut fx, &cfg);
            v6::cases(&mut fx);
        }));
        let names = std::mem::take(&mut fx.cases);
        fx.records = None;
        fx.dp.take().expect("loaded").shutdown().expect("unpin");
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
        names
    });
    for c in &cases {
        println!("ok ({hook:?}, {build:?}): {c}");
    }
    assert!(cases.len() >= 25, "only {} cases ran", cases.len());
    assert!(
        !std::path::Path::new(&format!("/sys/fs/bpf/{}", ns.name())).exists(),
        "pins removed"
    );
}

fn cases(fx: &mut Fixture, cfg: &Config) {
    let (c0, s0) = (fx.c0, fx.s0);
    let web_sched: Vec<Ipv4Addr> = {
        let p = fx.ctl.programmed();
        let by_id = |id: u32| {
            p.reals
                .iter()
                .find(|(_, (rid, _))| *rid == id)
                .map(|(k, _)| match k.addr {
                    std::net::IpAddr::V4(a) => a,
                    std::net::IpAddr::V6(a) => panic!("IPv6 real {a} in an IPv4 farm"),
                })
                .expect("real")
        };
        p.farms["web"].sched.iter().map(|&id| by_id(id)).collect()
    };
    assert_eq!(web_sched.len(), 6);

    // --- Not ours: passed byte-identical. ---
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    fx.case(
        "arp is passed unchanged",
        c0,
        &arp,
        XDP_PASS,
        reason::PASS_NOT_IPV4,
        Some(&arp),
    );

    let mut v6 = arp[..12].to_vec();
    v6.extend_from_slice(&[0x86, 0xdd]);
    v6.extend_from_slice(&[0u8; 40]);
    fx.case(
        "an ipv6 header of version 0 is passed unchanged",
        c0,
        &v6,
        XDP_PASS,
        reason::PASS_BAD_IPV6,
        Some(&v6),
    );
    v6[14] = 0x60;
    fx.case(
        "ipv6 to no VIP is passed unchanged",
        c0,
        &v6,
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&v6),
    );

    let other = from_client(Pkt::tcp((CLIENT, 40000), (REALS[0], 22), SYN, 1, b""));
    let b = other.build();
    fx.case(
        "tcp to a non-VIP address is passed unchanged",
        c0,
        &b,
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&b),
    );

    let stray = from_real(Pkt::tcp((REALS[0], 8080), (CLIENT, 1), ACK, 1, b""));
    let b = stray.build();
    fx.case(
        "a real's packet with no flow is passed unchanged",
        s0,
        &b,
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&b),
    );

    // --- Malformed frames: counted, passed for the kernel to judge. ---
    let mut vlan_short = from_client(Pkt::tcp((CLIENT, 1), (VIP, 80), SYN, 1, b"")).build();
    vlan_short[12..14].copy_from_slice(&[0x81, 0x00]);
    vlan_short.truncate(16);
    fx.case(
        "truncated 802.1Q header is passed",
        c0,
        &vlan_short,
        XDP_PASS,
        reason::PASS_BAD_L2,
        Some(&vlan_short),
    );

    let mut qinq = from_client(Pkt::tcp((CLIENT, 1), (VIP, 80), SYN, 1, b"")).build();
    let mut tags = vec![0x81, 0x00, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x0b];
    tags.extend_from_slice(&qinq[12..]);
    qinq.truncate(12);
    qinq.extend_from_slice(&tags);
    fx.case(
        "two VLAN tags are passed",
        c0,
        &qinq,
        XDP_PASS,
        reason::PASS_BAD_L2,
        Some(&qinq),
    );

    let mut short_ip = from_client(Pkt::tcp((CLIENT, 1), (VIP, 80), SYN, 1, b"")).build();
    short_ip.truncate(14 + 12);
    fx.case(
        "truncated IPv4 header is passed",
        c0,
        &short_ip,
        XDP_PASS,
        reason::PASS_BAD_IPV4,
        Some(&short_ip),
    );

    let mut bad_ver = from_client(Pkt::tcp((CLIENT, 1), (VIP, 80), SYN, 1, b"")).build();
    bad_ver[14] = 0x65;
    fx.case(
        "IPv4 ethertype with version 6 is passed",
        c0,
        &bad_ver,
        XDP_PASS,
        reason::PASS_BAD_IPV4,
        Some(&bad_ver),
    );

    let mut long_len = from_client(Pkt::tcp((CLIENT, 1), (VIP, 80), SYN, 1, b"")).build();
    long_len[16..18].copy_from_slice(&1400u16.to_be_bytes());
    fx.case(
        "total length beyond the frame is passed",
        c0,
        &long_len,
        XDP_PASS,
        reason::PASS_BAD_IPV4,
        Some(&long_len),
    );

    // --- Stated rules for packets to a VIP address. ---
    let short_tcp = {
        let mut b = from_client(Pkt::ip(
            CLIENT,
            VIP,
            L4::Udp {
                sport: 1,
                dport: 80,
                payload: vec![],
                zero_csum: true,
            },
        ))
        .build();
        // Claim TCP with only 8 bytes of L4 header.
        b[14 + 9] = 6;
        let mut ip = pnet::packet::ipv4::MutableIpv4Packet::new(&mut b[14..]).unwrap();
        ip.set_checksum(0);
        let c = pnet::packet::ipv4::checksum(&ip.to_immutable());
        ip.set_checksum(c);
        b
    };
    fx.case(
        "truncated TCP header to a VIP is dropped",
        c0,
        &short_tcp,
        XDP_DROP,
        reason::DROP_BAD_L4,
        None,
    );

    let mut bad_doff = from_client(Pkt::tcp((CLIENT, 41000), (VIP, 80), SYN, 1, b""));
    if let L4::Tcp { doff, .. } = &mut bad_doff.l4 {
        *doff = 4;
    }
    fx.case(
        "TCP data offset below 5 to a VIP is dropped",
        c0,
        &bad_doff.build(),
        XDP_DROP,
        reason::DROP_BAD_L4,
        None,
    );

    let mut opts = from_client(Pkt::tcp((CLIENT, 41001), (VIP, 80), SYN, 1, b""));
    opts.options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    fx.case(
        "IPv4 options to a VIP are dropped",
        c0,
        &opts.build(),
        XDP_DROP,
        reason::DROP_IP_OPTIONS,
        None,
    );

    let mut later = from_client(Pkt::tcp((CLIENT, 41002), (VIP, 80), ACK, 1, b"data"));
    later.frag = (0, 185);
    later.id = 0x7777;
    fx.case(
        "a later fragment to a VIP before its first is dropped",
        c0,
        &later.build(),
        XDP_DROP,
        reason::DROP_FRAGMENT_EARLY,
        None,
    );

    let mut ttl1 = from_client(Pkt::tcp((CLIENT, 41003), (VIP, 80), SYN, 1, b""));
    ttl1.ttl = 1;
    let b = ttl1.build();
    fx.case(
        "TTL 1 to a VIP is passed for ICMP time exceeded",
        c0,
        &b,
        XDP_PASS,
        reason::PASS_TTL,
        Some(&b),
    );
    assert_eq!(
        fx.flow_state(41003),
        None,
        "no flow for a TTL-expired packet"
    );

    let port81 = from_client(Pkt::tcp((CLIENT, 41004), (VIP, 81), SYN, 1, b""));
    fx.case(
        "VIP address on an unconfigured port is dropped",
        c0,
        &port81.build(),
        XDP_DROP,
        reason::DROP_NO_VIP_PORT,
        None,
    );
    let udp80 = from_client(Pkt::udp((CLIENT, 41005), (VIP, 80), b"x"));
    fx.case(
        "VIP port with the wrong protocol is dropped",
        c0,
        &udp80.build(),
        XDP_DROP,
        reason::DROP_NO_VIP_PORT,
        None,
    );

    let rst = from_client(Pkt::tcp((CLIENT, 41006), (VIP, 80), RST, 1, b""));
    fx.case(
        "RST to a VIP without a flow is dropped",
        c0,
        &rst.build(),
        XDP_DROP,
        reason::DROP_RST_NO_FLOW,
        None,
    );
    assert_eq!(fx.flow_state(41006), None, "a RST never creates a flow");

    let echo = from_client(Pkt::ip(
        CLIENT,
        VIP,
        L4::Icmp {
            kind: 8,
            code: 0,
            payload: b"ping-payload".to_vec(),
        },
    ));
    let mut reply = echo.clone();
    reply.src = VIP;
    reply.dst = CLIENT;
    reply.ttl = 64;
    reply.src_mac = LB_C_MAC;
    reply.dst_mac = CLIENT_MAC;
    reply.l4 = L4::Icmp {
        kind: 0,
        code: 0,
        payload: b"ping-payload".to_vec(),
    };
    let mut echo_in = echo.clone();
    echo_in.ttl = 55;
    fx.case(
        "ICMP echo to a VIP is answered",
        c0,
        &echo_in.build(),
        XDP_REDIRECT,
        reason::ICMP_ECHO_REPLY,
        Some(&reply.build()),
    );
    let unreach = from_client(Pkt::ip(
        CLIENT,
        VIP,
        L4::Icmp {
            kind: 3,
            code: 3,
            payload: vec![0; 28],
        },
    ));
    fx.case(
        "an ICMP error to a VIP quoting no flow is dropped",
        c0,
        &unreach.build(),
        XDP_DROP,
        reason::DROP_ICMP_NO_FLOW,
        None,
    );
    let timestamp = from_client(Pkt::ip(
        CLIENT,
        VIP,
        L4::Icmp {
            kind: 13,
            code: 0,
            payload: vec![0; 12],
        },
    ));
    fx.case(
        "other ICMP to a VIP is dropped",
        c0,
        &timestamp.build(),
        XDP_DROP,
        reason::DROP_ICMP_VIP,
        None,
    );

    refuse::cases(fx);

    // --- A TCP flow, both directions, exact bytes. ---
    let www_id = fx.ctl.programmed().vips["www"].id;
    let vip_before = fx.vip_counters(www_id);
    let new_before = fx.counter(reason::NEW_FLOW);
    let syn = from_client(Pkt::tcp((CLIENT, 40001), (VIP, 80), SYN, 1000, b""));
    let r = web_sched[0];
    fx.case(
        "SYN to a VIP is NATed to the scheduled real and redirected",
        c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&syn, r, 8080)),
    );
    assert_eq!(fx.counter(reason::NEW_FLOW), new_before + 1);
    assert_eq!(fx.flow_state(40001), Some(ST_SYN));
    assert_eq!(fx.flow_real(40001), Some(r));

    let mut synack = from_real(Pkt::tcp((r, 8080), (CLIENT, 40001), SYN | ACK, 5000, b""));
    if let L4::Tcp { ack, .. } = &mut synack.l4 {
        *ack = 1001;
    }
    fx.case(
        "SYN-ACK from the real is NATed back to the VIP",
        s0,
        &synack.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&snat(&synack, VIP, 80)),
    );

    let mut ack = from_client(Pkt::tcp(
        (CLIENT, 40001),
        (VIP, 80),
        ACK | PSH,
        1001,
        b"GET / HTTP/1.0\r\n\r\n",
    ));
    ack.ttl = 33;
    fx.case(
        "the client's next packet follows its flow",
        c0,
        &ack.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&ack, r, 8080)),
    );
    assert_eq!(
        fx.counter(reason::NEW_FLOW),
        new_before + 1,
        "no second flow"
    );
    assert_eq!(fx.flow_state(40001), Some(ST_ESTABLISHED));

    let mut padded = from_client(Pkt::tcp((CLIENT, 40001), (VIP, 80), ACK, 1019, b""));
    padded.pad = 6; // a 54-byte frame padded to Ethernet's 60
    fx.case(
        "an Ethernet-padded frame keeps its padding",
        c0,
        &padded.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&padded, r, 8080)),
    );

    let fin = from_real(Pkt::tcp((r, 8080), (CLIENT, 40001), FIN | ACK, 5001, b""));
    fx.case(
        "FIN from the real moves the flow to fin",
        s0,
        &fin.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&snat(&fin, VIP, 80)),
    );
    assert_eq!(fx.flow_state(40001), Some(ST_FIN));
    let rst = from_client(Pkt::tcp((CLIENT, 40001), (VIP, 80), RST, 1019, b""));
    fx.case(
        "RST of a known flow is forwarded and closes it",
        c0,
        &rst.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&rst, r, 8080)),
    );
    assert_eq!(fx.flow_state(40001), Some(ST_CLOSED));

    // Per-VIP counters: 4 client packets (SYN 40 + ACK with 18 bytes 58 +
    // padded ACK 40 + RST 40 IP bytes), 2 replies (SYN-ACK 40 + FIN 40).
    let vip_after = fx.vip_counters(www_id);
    assert_eq!(vip_after.packets_in - vip_before.packets_in, 4);
    assert_eq!(vip_after.bytes_in - vip_before.bytes_in, 178);
    assert_eq!(vip_after.packets_out - vip_before.packets_out, 2);
    assert_eq!(vip_after.bytes_out - vip_before.bytes_out, 80);
    assert_eq!(vip_after.new_flows - vip_before.new_flows, 1);
    let real_id = fx.real_id(r, 8080);
    let real = fx.real_counters(real_id);
    assert_eq!(
        (real.packets_in, real.packets_out, real.new_flows),
        (4, 2, 1),
        "first flow on {r}"
    );

    // Sequence tracking for RSTs the agent will send later: the reverse entry
    // holds the server's next sequence number (5001 + FIN).
    {
        let t = flowtable::read(&fx.dp().maps.flows).unwrap();
        let f = t
            .flows
            .iter()
            .find(|f| u16::from_be(f.fwd_key.src_port_be) == 40001)
            .unwrap();
        assert_eq!(f.rev.as_ref().unwrap().1.seq_next, 5002);
    }

    // --- Weighted round-robin over new flows: 1:2:3 in six SYNs. ---
    let mut counts = [0usize; 3];
    for i in 1..6u16 {
        let syn = from_client(Pkt::tcp((CLIENT, 40001 + i), (VIP, 80), SYN, 7, b""));
        let r = web_sched[i as usize];
        let name = format!("SYN #{} goes to the next real in the schedule", i + 1);
        fx.case(
            &name,
            c0,
            &syn.build(),
            XDP_REDIRECT,
            reason::FORWARD,
            Some(&dnat(&syn, r, 8080)),
        );
    }
    for i in 0..6u16 {
        let real = fx.flow_real(40001 + i).expect("flow");
        counts[REALS.iter().position(|&x| x == real).unwrap()] += 1;
    }
    assert_eq!(counts, [1, 2, 3], "weights 1:2:3");

    // --- A connection picked up mid-stream (after an agent restart). ---
    let mid = from_client(Pkt::tcp((CLIENT, 40100), (VIP, 80), ACK, 77, b"x"));
    let r = web_sched[0];
    fx.case(
        "a non-SYN without a flow creates an established flow",
        c0,
        &mid.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&mid, r, 8080)),
    );
    assert_eq!(fx.flow_state(40100), Some(ST_ESTABLISHED));

    // --- UDP. ---
    let q = from_client(Pkt::udp((CLIENT, 53000), (VIP, 53), b"query"));
    let dns_real = REALS[0];
    fx.case(
        "UDP to a VIP is NATed with its checksum updated",
        c0,
        &q.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&q, dns_real, 5353)),
    );
    assert_eq!(fx.flow_state(53000), Some(ST_UDP));
    let a = from_real(Pkt::udp((dns_real, 5353), (CLIENT, 53000), b"answer"));
    fx.case(
        "UDP reply is NATed back",
        s0,
        &a.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&snat(&a, VIP, 53)),
    );
    let mut q0 = from_client(Pkt::udp((CLIENT, 53001), (VIP, 53), b"no checksum"));
    if let L4::Udp { zero_csum, .. } = &mut q0.l4 {
        *zero_csum = true;
    }
    let out = fx.case(
        "a UDP checksum of zero stays zero",
        c0,
        &q0.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&q0, dns_real, 5353)),
    );
    assert_eq!(&out[14 + 26..14 + 28], &[0, 0]);

    // --- The agent rebuilds the half of a flow that LRU eviction dropped. ---
    let key_of = |fx: &mut Fixture, port: u16| {
        let t = flowtable::read(&fx.dp().maps.flows).unwrap();
        let f = t
            .flows
            .iter()
            .find(|f| u16::from_be(f.fwd_key.src_port_be) == port)
            .unwrap()
            .clone();
        (f.fwd_key, f.rev.unwrap().0)
    };
    let (fwd_key, rev_key) = key_of(fx, 53000);
    fx.dp().maps.flows.remove(&rev_key).unwrap();
    let s = fx.sweep();
    assert_eq!(s.repaired, 1, "reverse half rebuilt");
    let a = from_real(Pkt::udp((dns_real, 5353), (CLIENT, 53000), b"again"));
    fx.case(
        "a reply after its half was rebuilt is NATed back",
        s0,
        &a.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&snat(&a, VIP, 53)),
    );
    fx.dp().maps.flows.remove(&fwd_key).unwrap();
    assert_eq!(fx.sweep().repaired, 1, "forward half rebuilt");
    let new_before = fx.counter(reason::NEW_FLOW);
    let q = from_client(Pkt::udp((CLIENT, 53000), (VIP, 53), b"more"));
    fx.case(
        "a client packet after its half was rebuilt stays on its real",
        c0,
        &q.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&q, dns_real, 5353)),
    );
    assert_eq!(fx.counter(reason::NEW_FLOW), new_before, "no new flow");

    // --- Forwarding choices. ---
    let hair = from_client(Pkt::tcp((CLIENT, 40200), (VIP_HAIR, 80), SYN, 1, b""));
    let mut want = hair.clone();
    want.dst = HAIR;
    want.ttl -= 1;
    want.src_mac = LB_C_MAC;
    want.dst_mac = HAIR_MAC;
    set_dport(&mut want, 8080);
    fx.case(
        "a real behind the ingress interface gets XDP_TX",
        c0,
        &hair.build(),
        XDP_TX,
        reason::FORWARD,
        Some(&want.build()),
    );

    let nn = from_client(Pkt::tcp((CLIENT, 40300), (VIP_NONEIGH, 80), SYN, 1, b""));
    let mut want = nn.clone();
    want.dst = Ipv4Addr::new(203, 0, 113, 99);
    set_dport(&mut want, 8080);
    fx.case(
        "no resolved neighbour: NATed, passed to the kernel to forward",
        c0,
        &nn.build(),
        XDP_PASS,
        reason::PASS_FIB,
        Some(&want.build()),
    );

    let mut tagged = from_client(Pkt::tcp((CLIENT, 40400), (VIP, 80), SYN, 1, b""));
    tagged.vlan = Some(10);
    let mut want = tagged.clone();
    // The cursor moved on: 6 SYNs and the mid-stream pick-up came before.
    want.dst = web_sched[1];
    set_dport(&mut want, 8080);
    fx.case(
        "a tagged frame is NATed, keeps its tag, and goes to the kernel",
        c0,
        &tagged.build(),
        XDP_PASS,
        reason::PASS_FIB,
        Some(&want.build()),
    );

    health_cases(fx);
    ha_cases(fx);
    cluster::cases(fx);
    hop_cases(fx);
    fast_path_cases(fx);
    clock_cases(fx);
    edges::edge_cases(fx);

    // --- Reload: removing a VIP stops its traffic. ---
    let mut no_dns = cfg.clone();
    no_dns.vips.remove("dns");
    let Fixture { dp, ctl, .. } = fx;
    ctl.apply(&no_dns, &mut dp.as_mut().unwrap().maps)
        .expect("reload");
    let q = from_client(Pkt::udp((CLIENT, 53002), (VIP, 53), b"query"));
    fx.case(
        "after the VIP's removal its port is refused",
        c0,
        &q.build(),
        XDP_DROP,
        reason::DROP_NO_VIP_PORT,
        None,
    );
}

fn key(farm: &str, addr: Ipv4Addr, port: u16) -> RealKey {
    RealKey {
        farm: farm.into(),
        addr: addr.into(),
        port,
    }
}

/// Fail actions, admin states and the passive-health signals, with the
/// reals' states set through the agent's own control code.
fn health_cases(fx: &mut Fixture) {
    let (c0, s0) = (fx.c0, fx.s0);
    let set_health = |fx: &mut Fixture, farm: &str, addr: Ipv4Addr, port: u16, up: bool| {
        let Fixture { dp, ctl, .. } = fx;
        ctl.set_health(&key(farm, addr, port), up, &mut dp.as_mut().unwrap().maps)
            .expect("set_health");
    };
    let (r1, r2, r3) = (REALS[0], REALS[1], REALS[2]);
    const PVIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
    const RVIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 21);
    const KVIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 22);
    const CVIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 23);

    // --- purge, TCP: the client's next packet is answered with a RST. ---
    let syn = from_client(Pkt::tcp((CLIENT, 42000), (PVIP, 7), SYN, 100, b""));
    fx.case(
        "purge farm: SYN goes to r1",
        c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&syn, r1, 7)),
    );
    let mut synack = from_real(Pkt::tcp((r1, 7), (CLIENT, 42000), SYN | ACK, 9000, b""));
    if let L4::Tcp { ack, .. } = &mut synack.l4 {
        *ack = 101;
    }
    fx.case(
        "purge farm: SYN-ACK back",
        s0,
        &synack.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&snat(&synack, PVIP, 7)),
    );
    set_health(fx, "purge", r1, 7, false);
    let mut data = from_client(Pkt::tcp(
        (CLIENT, 42000),
        (PVIP, 7),
        ACK | PSH,
        101,
        b"hello after the real died",
    ));
    if let L4::Tcp { ack, .. } = &mut data.l4 {
        *ack = 9001;
    }
    // RFC 793: the segment has an ACK, so the RST takes seq = SEG.ACK, no ACK flag.
    let want = refuse::rst4((PVIP, 7), (CLIENT, 42000), 9001, 0, RST);
    let purged_before = fx.counter(reason::PURGED);
    fx.case(
        "purge: a client packet to a dead real is answered with a RST",
        c0,
        &data.build(),
        XDP_REDIRECT,
        reason::PURGE_RST,
        Some(&want),
    );
    assert_eq!(fx.counter(reason::PURGED), purged_before + 1);
    assert_eq!(fx.flow_state(42000), None, "the purged flow is gone");

    // --- purge, UDP: the flow is removed and the datagram starts anew. ---
    set_health(fx, "purge", r1, 7, true);
    let q = from_client(Pkt::udp((CLIENT, 42001), (PVIP, 7), b"one"));
    // The cursor moved on: r2 is next.
    fx.case(
        "purge farm: UDP flow to r2",
        c0,
        &q.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&q, r2, 7)),
    );
    set_health(fx, "purge", r2, 7, false);
    let q2 = from_client(Pkt::udp((CLIENT, 42001), (PVIP, 7), b"two"));
    fx.case(
        "purge: UDP to a dead real starts a new flow on a live one",
        c0,
        &q2.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&q2, r1, 7)),
    );
    assert_eq!(fx.flow_real(42001), Some(r1));
    set_health(fx, "purge", r2, 7, true);

    // --- reassign: UDP moves on; TCP goes to the new real (which resets it). ---
    let q = from_client(Pkt::udp((CLIENT, 42002), (RVIP, 9), b"a"));
    fx.case(
        "reassign farm: UDP flow to r1",
        c0,
        &q.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&q, r1, 9)),
    );
    let t = from_client(Pkt::tcp((CLIENT, 42003), (RVIP, 9), SYN, 5, b""));
    fx.case(
        "reassign farm: TCP flow to r2",
        c0,
        &t.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&t, r2, 9)),
    );
    set_health(fx, "reassign", r1, 9, false);
    set_health(fx, "reassign", r2, 9, false);
    let q2 = from_client(Pkt::udp((CLIENT, 42002), (RVIP, 9), b"b"));
    fx.case(
        "reassign with no live real drops",
        c0,
        &q2.build(),
        XDP_DROP,
        reason::DROP_NO_REAL,
        None,
    );
    set_health(fx, "reassign", r2, 9, true);
    let moved_before = fx.counter(reason::REASSIGNED);
    fx.case(
        "reassign: UDP continues on a live real",
        c0,
        &q2.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&q2, r2, 9)),
    );
    assert_eq!(fx.counter(reason::REASSIGNED), moved_before + 1);
    assert_eq!(fx.flow_real(42002), Some(r2), "the flow now names r2");
    let old = from_real(Pkt::udp((r1, 9), (CLIENT, 42002), b"late"));
    let b = old.build();
    fx.case(
        "reassign: the old real's replies are no longer translated",
        s0,
        &b,
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&b),
    );
    let new = from_real(Pkt::udp((r2, 9), (CLIENT, 42002), b"answer"));
    fx.case(
        "reassign: the new real's replies come from the VIP",
        s0,
        &new.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&snat(&new, RVIP, 9)),
    );
    set_health(fx, "reassign", r1, 9, true);
    set_health(fx, "reassign", r2, 9, false);
    let mid = from_client(Pkt::tcp((CLIENT, 42003), (RVIP, 9), ACK, 6, b"x"));
    fx.case(
        "reassign: a TCP packet goes to the new real, whose RST tells the client",
        c0,
        &mid.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&mid, r1, 9)),
    );
    set_health(fx, "reassign", r2, 9, true);

    // --- none: a dead real keeps its flows; drain keeps flows, takes none new. ---
    let t = from_client(Pkt::tcp((CLIENT, 42010), (KVIP, 11), SYN, 5, b""));
    fx.case(
        "keep farm: TCP flow to r1",
        c0,
        &t.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&t, r1, 11)),
    );
    set_health(fx, "keep", r1, 11, false);
    let more = from_client(Pkt::tcp((CLIENT, 42010), (KVIP, 11), ACK, 6, b"x"));
    fx.case(
        "none: the flow stays on its dead real",
        c0,
        &more.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&more, r1, 11)),
    );
    set_health(fx, "keep", r1, 11, true);
    {
        let Fixture { dp, ctl, .. } = &mut *fx;
        ctl.set_admin(
            "keep",
            r1,
            Some(11),
            AdminState::Drain,
            &mut dp.as_mut().unwrap().maps,
        )
        .expect("drain");
    }
    fx.case(
        "drain: an open flow continues",
        c0,
        &more.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&more, r1, 11)),
    );
    for port in [42011u16, 42012, 42013] {
        let syn = from_client(Pkt::tcp((CLIENT, port), (KVIP, 11), SYN, 5, b""));
        fx.case(
            "drain: new flows go to the other primary",
            c0,
            &syn.build(),
            XDP_REDIRECT,
            reason::FORWARD,
            Some(&dnat(&syn, r2, 11)),
        );
    }
    // Both primaries unavailable: the backup takes new flows.
    set_health(fx, "keep", r2, 11, false);
    let syn = from_client(Pkt::tcp((CLIENT, 42014), (KVIP, 11), SYN, 5, b""));
    fx.case(
        "no primary can serve: the backup takes new flows",
        c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&syn, r3, 11)),
    );

    // --- max_conns: a real at its cap is skipped. ---
    let syn = from_client(Pkt::tcp((CLIENT, 42020), (CVIP, 10), SYN, 5, b""));
    fx.case(
        "capped farm: first flow to r1",
        c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&syn, r1, 10)),
    );
    // max_conns counts assured flows: the handshake's ACK moves it to
    // FLOWS and counts it on r1.
    let assured_before = fx.counter(reason::ASSURED);
    let ack = from_client(Pkt::tcp((CLIENT, 42020), (CVIP, 10), ACK, 6, b""));
    fx.case(
        "capped farm: the handshake's ACK assures the flow",
        c0,
        &ack.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&ack, r1, 10)),
    );
    assert_eq!(fx.counter(reason::ASSURED), assured_before + 1);
    assert!(fx.flow_in(42020, false).is_some(), "assured: in FLOWS");
    assert!(
        fx.flow_in(42020, true).is_none(),
        "assured: gone from EMBRYOS"
    );
    for port in [42021u16, 42022] {
        let syn = from_client(Pkt::tcp((CLIENT, port), (CVIP, 10), SYN, 5, b""));
        fx.case(
            "max_conns: r1 at its cap of 1 is skipped",
            c0,
            &syn.build(),
            XDP_REDIRECT,
            reason::FORWARD,
            Some(&dnat(&syn, r2, 10)),
        );
    }

    // --- Passive health: what the reply path tells about a real. ---
    let web_r2 = fx.real_id(r2, 8080);
    let before = fx.real_counters(web_r2);
    // Find a SYN that lands on r2 in the web farm.
    let mut port = 43000u16;
    loop {
        let syn = from_client(Pkt::tcp((CLIENT, port), (VIP, 80), SYN, 1, b""));
        fx.run(c0, &syn.build());
        if fx.flow_real(port) == Some(r2) {
            break;
        }
        port += 1;
        assert!(port < 43020, "r2 never scheduled");
    }
    let refused = from_real(Pkt::tcp((r2, 8080), (CLIENT, port), RST | ACK, 0, b""));
    fx.case(
        "a real's RST to a SYN is passed back and counted as a failure",
        s0,
        &refused.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&snat(&refused, VIP, 80)),
    );
    let after = fx.real_counters(web_r2);
    assert_eq!(after.conn_fail, before.conn_fail + 1, "SYN answered by RST");
    let mut landed = None;
    for p in 0..12u16 {
        let s = from_client(Pkt::tcp((CLIENT, port + 100 + p), (VIP, 80), SYN, 1, b""));
        fx.run(c0, &s.build());
        if fx.flow_real(port + 100 + p) == Some(r2) {
            landed = Some(port + 100 + p);
            break;
        }
    }
    let p = landed.expect("a SYN on r2");
    let again = from_client(Pkt::tcp((CLIENT, p), (VIP, 80), SYN, 1, b""));
    fx.case(
        "a retransmitted SYN follows its flow",
        c0,
        &again.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&dnat(&again, r2, 8080)),
    );
    assert_eq!(
        fx.real_counters(web_r2).conn_fail,
        after.conn_fail + 1,
        "SYN retransmitted unanswered"
    );
    let mut ok = from_real(Pkt::tcp((r2, 8080), (CLIENT, p), SYN | ACK, 1, b""));
    if let L4::Tcp { ack, .. } = &mut ok.l4 {
        *ack = 2;
    }
    fx.case(
        "a SYN-ACK counts as a success",
        s0,
        &ok.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&snat(&ok, VIP, 80)),
    );
    assert_eq!(fx.real_counters(web_r2).conn_ok, after.conn_ok + 1);
    // ICMP port unreachable from r2 about the client's packet to it.
    let inner = Pkt::udp((CLIENT, 53100), (r2, 8080), b"").build();
    let quoted = inner[14..14 + 28].to_vec();
    let icmp = from_real(Pkt::ip(
        r2,
        CLIENT,
        L4::Icmp {
            kind: 3,
            code: 3,
            payload: quoted,
        },
    ));
    let fail_before = fx.real_counters(web_r2).conn_fail;
    let b = icmp.build();
    fx.case(
        "ICMP unreachable about an unknown flow is passed",
        s0,
        &b,
        XDP_PASS,
        reason::PASS_NOT_OURS,
        Some(&b),
    );
    let inner = Pkt::tcp((CLIENT, p), (r2, 8080), SYN, 1, b"").build();
    let icmp = from_real(Pkt::ip(
        r2,
        CLIENT,
        L4::Icmp {
            kind: 3,
            code: 3,
            payload: inner[14..14 + 28].to_vec(),
        },
    ));
    // Translated for the client: quote client -> VIP, source the VIP.
    let quote_vip = Pkt::tcp((CLIENT, p), (VIP, 80), SYN, 1, b"").build();
    let mut want = Pkt::ip(
        VIP,
        CLIENT,
        L4::Icmp {
            kind: 3,
            code: 3,
            payload: quote_vip[14..14 + 28].to_vec(),
        },
    );
    want.ttl -= 1;
    want.src_mac = LB_C_MAC;
    want.dst_mac = CLIENT_MAC;
    fx.case(
        "ICMP unreachable from a real about its flow is reported and translated",
        s0,
        &icmp.build(),
        XDP_REDIRECT,
        reason::ICMP_ERROR_TO_CLIENT,
        Some(&want.build()),
    );
    assert_eq!(fx.real_counters(web_r2).conn_fail, fail_before + 1);
}

/// HA: a standby passes everything untouched; an active node with sync on
/// reports a new flow in `SYNC`.
fn ha_cases(fx: &mut Fixture) {
    let c0 = fx.c0;
    fx.dp().maps.standby.set(0, 1, 0).expect("STANDBY");
    let syn = from_client(Pkt::tcp((CLIENT, 40500), (VIP_NONEIGH, 80), SYN, 1, b"")).build();
    fx.case(
        "a standby passes a VIP's SYN unchanged and makes no flow",
        c0,
        &syn,
        XDP_PASS,
        reason::PASS_STANDBY,
        Some(&syn),
    );
    let flows_now = fx.entries();
    fx.dp().maps.standby.set(0, 0, 0).expect("STANDBY");
    fx.dp().maps.sync_on.set(0, 1, 0).expect("SYNC_ON");
    let mut ring = fx.dp().take_sync().expect("SYNC ring");
    while ring.next().is_some() {}
    let syn = from_client(Pkt::tcp((CLIENT, 40501), (VIP_NONEIGH, 80), SYN, 1, b"")).build();
    fx.case(
        "with sync on, a new flow is forwarded as usual",
        c0,
        &syn,
        XDP_PASS,
        reason::PASS_FIB,
        None,
    );
    assert_eq!(fx.entries(), flows_now + 2);
    let rec = ring.next().expect("a SYNC record for the new flow");
    // SAFETY: the datapath writes whole `SyncEvent`s.
    let ev: lb_common::SyncEvent = unsafe { std::ptr::read_unaligned(rec.as_ptr().cast()) };
    drop(rec);
    assert_eq!(ev.kind, lb_common::SYNC_CREATE);
    assert_eq!(ev.state, ST_SYN);
    assert_eq!(ev.key.src_port_be, 40501u16.to_be());
    assert_eq!(ev.key.dst_addr, lb_common::v4_mapped(VIP_NONEIGH.octets()));
    assert!(ring.next().is_none(), "one record per new flow");
    fx.dp().maps.sync_on.set(0, 0, 0).expect("SYNC_ON");
}

/// `ip ARGS` in the fixture's namespace (the calling thread's).
fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("ip");
    assert!(st.success(), "ip {args:?}");
}

fn mac_text(m: Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A flow's cached next hop (lb_common::Hop): used while valid, asked again
/// when `HOP_GEN` moves, when it is older than `HOP_MAX_AGE`, or for a packet
/// larger than its MTU. No agent runs here, so nothing bumps `HOP_GEN` but
/// the fixture.
fn hop_cases(fx: &mut Fixture) {
    let c0 = fx.c0;
    let mut hop_gen = fx.dp().take_hop_gen().expect("HOP_GEN");
    let mut generation = hop_gen.get(&0, 0).expect("HOP_GEN[0]");
    let mut bump = |g: &mut u32| {
        *g += 1;
        hop_gen.set(0, *g, 0).expect("HOP_GEN");
    };
    let port = 40600;
    let pkt = |flags: u8, payload: &[u8]| {
        from_client(Pkt::tcp((CLIENT, port), (VIP, 80), flags, 2, payload)).build()
    };
    // The flow's next packet, forwarded: the MAC it went to.
    let next = |fx: &mut Fixture, name: &str| -> Mac {
        let out = fx.case(
            name,
            c0,
            &pkt(ACK, b""),
            XDP_REDIRECT,
            reason::FORWARD,
            None,
        );
        out[..6].try_into().expect("a MAC")
    };
    fx.case(
        "hop: SYN",
        c0,
        &pkt(SYN, b""),
        XDP_REDIRECT,
        reason::FORWARD,
        None,
    );
    let real = fx.flow_real(port).expect("the flow's real");
    let got = next(
        fx,
        "hop: the flow's next packet looks its hop up and caches it",
    );
    assert_eq!(got, real_mac(real));

    let moved: Mac = [2, 0, 0, 0, 9, 9];
    let neigh = |mac: Mac| {
        let (r, m) = (real.to_string(), mac_text(mac));
        #[rustfmt::skip]
        ip(&["neigh", "replace", &r, "lladdr", &m, "dev", "s0", "nud", "permanent"]);
    };
    neigh(moved);
    let got = next(
        fx,
        "hop: the cached hop is used while HOP_GEN stands (a new MAC is not seen)",
    );
    assert_eq!(got, real_mac(real), "from the cache");
    bump(&mut generation);
    let got = next(fx, "hop: after HOP_GEN moves the FIB is asked again");
    assert_eq!(got, moved);

    // The age bound, for when no agent watches the kernel.
    neigh(real_mac(real));
    std::thread::sleep(std::time::Duration::from_millis(1150));
    let got = next(
        fx,
        "hop: a cached hop older than HOP_MAX_AGE is asked again",
    );
    assert_eq!(got, real_mac(real));

    // The route's MTU is cached with the hop; a larger packet meets the
    // FIB's own check.
    ip(&["link", "set", "s0", "mtu", "1000"]);
    bump(&mut generation);
    next(
        fx,
        "hop: a small packet caches the hop with the route's MTU",
    );
    let f = fx.flow(port).expect("the flow");
    assert_eq!(
        f.fwd.hop.mtu, 1000,
        "the helper's mtu_result: {:?}",
        f.fwd.hop
    );
    // DF set: lb answers itself, quoting the packet as the client sent it
    // (the kernel's message would quote the real).
    let big = from_client(Pkt::tcp(
        (CLIENT, port),
        (VIP, 80),
        ACK | PSH,
        2,
        &[0u8; 1100],
    ));
    fx.case(
        "hop: a DF packet larger than the route's MTU is answered with frag needed",
        c0,
        &big.build(),
        XDP_REDIRECT,
        reason::ICMP_FRAG_NEEDED,
        Some(&edges::frag_needed(&big, VIP, 1000)),
    );
    let mut may_fragment = big.clone();
    may_fragment.frag = (0, 0);
    fx.case(
        "hop: a packet without DF larger than the MTU goes to the kernel to fragment",
        c0,
        &may_fragment.build(),
        XDP_PASS,
        reason::PASS_FIB,
        None,
    );
    ip(&["link", "set", "s0", "mtu", "1500"]);
    bump(&mut generation);
}

/// An established flow's plain segments take the fast path (lb-ebpf's
/// fast.rs), which must leave exactly what the full path would: the same
/// bytes, counters, sequence tracking; and every packet it declines (TTL 1,
/// a FIN) must still meet the full path's rules.
/// The datapath's clock (lb-ebpf/src/clock.rs): jiffies scaled by what
/// `Datapath::load` measured, read into every flow timestamp; it must agree
/// with CLOCK_MONOTONIC, the agent's clock, to a few ticks.
fn clock_cases(fx: &mut Fixture) {
    let clock = fx.dp().clock();
    assert!(
        [1_000_000, 3_333_333, 4_000_000, 10_000_000].contains(&clock.tick_ns),
        "the load measured the kernel's tick: {clock:?}"
    );
    let port = 40800;
    let before = datapath::now_ns();
    let syn = from_client(Pkt::tcp((CLIENT, port), (VIP, 80), SYN, 1, b""));
    fx.case(
        "clock: a new flow",
        fx.c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        None,
    );
    let after = datapath::now_ns();
    let f = fx.flow(port).expect("the flow");
    // The datapath's time is that of the last tick: up to a tick (and the
    // tick the coarse clock may lead jiffies by) before the call.
    let (created, slack) = (f.fwd.created_ns, 3 * clock.tick_ns);
    assert!(
        created + slack >= before && created <= after,
        "created at {created}, called between {before} and {after} (tick {} ns)",
        clock.tick_ns
    );
    fx.cases
        .push("clock: a flow's timestamp is CLOCK_MONOTONIC to three ticks".into());
}

fn fast_path_cases(fx: &mut Fixture) {
    let (c0, s0) = (fx.c0, fx.s0);
    let port = 40700;
    let tcp = |flags: u8, seq: u32, ack_no: u32, payload: &[u8]| {
        let mut p = from_client(Pkt::tcp((CLIENT, port), (VIP, 80), flags, seq, payload));
        if let L4::Tcp { ack, .. } = &mut p.l4 {
            *ack = ack_no;
        }
        p
    };
    let syn = tcp(SYN, 100, 0, b"");
    fx.case(
        "fast: SYN",
        c0,
        &syn.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        None,
    );
    let real = fx.flow_real(port).expect("the flow's real");
    let reply = |flags: u8, seq: u32, payload: &[u8]| {
        let mut p = from_real(Pkt::tcp((real, 8080), (CLIENT, port), flags, seq, payload));
        if let L4::Tcp { ack, .. } = &mut p.l4 {
            *ack = 101;
        }
        p
    };
    let synack = reply(SYN | ACK, 9000, b"");
    let want = snat(&synack, VIP, 80);
    fx.case(
        "fast: SYN-ACK",
        s0,
        &synack.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&want),
    );
    let ack = tcp(ACK, 101, 9001, b"");
    let want = dnat(&ack, real, 8080);
    fx.case(
        "fast: ACK",
        c0,
        &ack.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&want),
    );
    assert_eq!(fx.flow_state(port), Some(ST_ESTABLISHED));

    // Both directions' hops are cached now: data segments go the fast way.
    let entries = |fx: &mut Fixture| {
        let t = flowtable::read(&fx.dp().maps.flows).expect("read flows");
        let f = t
            .flows
            .iter()
            .find(|f| u16::from_be(f.fwd_key.src_port_be) == port)
            .expect("the flow")
            .clone();
        (f.fwd, f.rev.expect("its reverse entry").1)
    };
    let (vip_id, real_id) = (fx.ctl.programmed().vips["www"].id, fx.real_id(real, 8080));
    let (fwd0, rev0) = entries(fx);
    let (vip0, real0) = (fx.vip_counters(vip_id), fx.real_counters(real_id));
    let fast0 = fx.counter(reason::FAST_PATH);
    let data = tcp(ACK | PSH, 101, 9001, b"abc");
    let want = dnat(&data, real, 8080);
    fx.case(
        "fast: client data",
        c0,
        &data.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&want),
    );
    let answer = reply(ACK | PSH, 9001, b"hello");
    let want = snat(&answer, VIP, 80);
    fx.case(
        "fast: real's data",
        s0,
        &answer.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&want),
    );
    // The real's first data segment moves the reverse entry from syn to
    // established (the full path); its second goes the fast way too.
    fx.case(
        "fast: real's data again",
        s0,
        &answer.build(),
        XDP_REDIRECT,
        reason::REVERSE,
        Some(&want),
    );
    assert_eq!(
        fx.counter(reason::FAST_PATH),
        fast0 + 2,
        "the fast path was taken"
    );
    let (fwd1, rev1) = entries(fx);
    assert_eq!(
        (fwd1.packets, fwd1.bytes),
        (fwd0.packets + 1, fwd0.bytes + 43)
    );
    assert_eq!(
        (rev1.packets, rev1.bytes),
        (rev0.packets + 2, rev0.bytes + 90)
    );
    assert_eq!(
        (fwd1.seq_next, rev1.seq_next),
        (104, 9006),
        "sequence tracking"
    );
    assert!(fwd1.last_ns >= fwd0.last_ns && rev1.last_ns >= rev0.last_ns);
    assert_eq!(fx.flow_state(port), Some(ST_ESTABLISHED));
    let (vip1, real1) = (fx.vip_counters(vip_id), fx.real_counters(real_id));
    for (was, now) in [(vip0, vip1), (real0, real1)] {
        assert_eq!(
            (now.packets_in, now.bytes_in),
            (was.packets_in + 1, was.bytes_in + 43)
        );
        assert_eq!(
            (now.packets_out, now.bytes_out),
            (was.packets_out + 2, was.bytes_out + 90)
        );
        assert_eq!(now.new_flows, was.new_flows);
    }

    // Declined: TTL 1 is the kernel's to answer, and counts nothing.
    let fast1 = fx.counter(reason::FAST_PATH);
    let mut last_hop = tcp(ACK, 104, 9006, b"");
    last_hop.ttl = 1;
    let bytes = last_hop.build();
    fx.case(
        "fast: TTL 1 of a flow is passed",
        c0,
        &bytes,
        XDP_PASS,
        reason::PASS_TTL,
        Some(&bytes),
    );
    assert_eq!(entries(fx).0.packets, fwd1.packets, "not counted");

    // Declined: a FIN moves the state (the full path's job), and is still
    // forwarded to the flow's real.
    let fin = tcp(FIN | ACK, 104, 9006, b"");
    let want = dnat(&fin, real, 8080);
    fx.case(
        "fast: the client's FIN",
        c0,
        &fin.build(),
        XDP_REDIRECT,
        reason::FORWARD,
        Some(&want),
    );
    assert_eq!(fx.flow_state(port), Some(ST_FIN));
    assert_eq!(entries(fx).0.seq_next, 105, "a FIN takes a sequence number");
    assert_eq!(
        fx.counter(reason::FAST_PATH),
        fast1,
        "neither took the fast path"
    );
}
