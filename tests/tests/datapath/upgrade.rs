//! An upgrade to an lb whose maps are larger: the new agent adopts the
//! running datapath's pinned maps, copies the ones whose size changed into
//! new maps of its own size, and adds what the old program counted after
//! the copy once its program has replaced the old one. Flows, VIPs, reals
//! and counts all come through.
use std::path::{Path, PathBuf};

use aya::{maps::MapInfo, programs::TestRun as _};
use lb_common::{MAX_FARMS, MAX_REALS, MAX_VIPS, SCHED_SLOTS, reason};
use lb_tests::{
    fixture_net::{self, CLIENT, REALS},
    netns::Netns,
};
use lb_userspace::{
    config::{Config, XdpMode},
    control::Control,
    datapath::{self, Datapath},
};

use super::{ACK, Pkt, SYN, XDP_REDIRECT, from_client, from_real, pin_to_cpu0};

const VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 51, 100, 10);
const TABLE: u32 = 65_536;

fn config(pin_dir: &Path) -> String {
    format!(
        "interfaces: [c0, s0]\nserverfarms:\n  web:\n    reals:\n{}vips:\n  www: {{ address: {VIP}, port: 80, serverfarm: web }}\nbpf: {{ pin_dir: {}, flow_table_size: {TABLE} }}\n",
        REALS
            .iter()
            .map(|r| format!("      - {{ address: {r}, port: 8080 }}\n"))
            .collect::<String>(),
        pin_dir.display()
    )
}

/// One XDP run of `frame` arriving on `ingress`: the verdict and the frame.
fn run(dp: &mut Datapath, ingress: u32, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...
    let ctx: Vec<u8> = [0, frame.len() as u32, 0, ingress, 0, 0]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    let r = dp
        .program()
        .test_run(aya::programs::TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// A whole handshake of client port `port` through `dp`: SYN, the real's
/// SYN-ACK, ACK, which makes an assured flow counted active on its real.
fn connect(dp: &mut Datapath, (c0, s0): (u32, u32), port: u16) {
    let (verdict, out) = run(dp, c0, &syn(port));
    assert_eq!(verdict, XDP_REDIRECT, "SYN from {port}");
    // The real the SYN went to: the IPv4 destination of the output.
    let real = std::net::Ipv4Addr::new(out[30], out[31], out[32], out[33]);
    let synack = from_real(Pkt::tcp((real, 8080), (CLIENT, port), SYN | ACK, 9000, b""));
    assert_eq!(
        run(dp, s0, &synack.build()).0,
        XDP_REDIRECT,
        "SYN-ACK to {port}"
    );
    let ack = from_client(Pkt::tcp((CLIENT, port), (VIP, 80), ACK, 101, b""));
    assert_eq!(run(dp, c0, &ack.build()).0, XDP_REDIRECT, "ACK from {port}");
}

fn syn(port: u16) -> Vec<u8> {
    from_client(Pkt::tcp((CLIENT, port), (VIP, 80), SYN, 100, b"")).build()
}

fn new_flows(dp: &Datapath) -> u64 {
    let per_cpu = dp.maps.stats.get(&reason::NEW_FLOW, 0).expect("STATS");
    per_cpu.iter().sum()
}

fn active(dp: &Datapath) -> u64 {
    (0..REALS.len() as u32)
        .map(|id| dp.maps.active.get(&id, 0).expect("ACTIVE"))
        .sum()
}

fn entries(pin_dir: &Path, map: &str) -> u32 {
    MapInfo::from_pin(pin_dir.join(map))
        .unwrap_or_else(|e| panic!("{map}: {e}"))
        .max_entries()
}

#[test]
fn an_upgrade_resizes_adopted_maps_keeping_entries_flows_and_counts() {
    lb_tests::require_root();
    let ns = Netns::new("upg");
    fixture_net::setup(&ns, &[]);
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", ns.name()));
    let pins = pin_dir.clone();
    ns.run(move || {
        pin_to_cpu0();
        let pin_dir = pins;
        let cfg =
            Config::parse(&config(&pin_dir), "upgrade.yaml").unwrap_or_else(|e| panic!("{e}"));
        // The last release's sizes: 512 VIPs and farms, 4,096 reals, and
        // two drop reasons fewer.
        let old_sizes = [
            ("FLOWS", TABLE),
            ("EMBRYOS", datapath::embryo_table_size(TABLE)),
            ("VIPS", 512),
            ("VIP_ADDRS", 512),
            ("VIP_STATS", 512),
            ("FARMS", 512),
            ("SCHED", 512 * SCHED_SLOTS),
            ("RR_CURSOR", 512),
            ("REALS", 4096),
            ("REAL_STATS", 4096),
            ("ACTIVE", 4096),
            ("EXPIRED", 4096),
            // The release before the no-real refusals (34, 35) and the
            // cluster's stateless replies (36) counted 34 reasons.
            ("STATS", 34),
        ];
        let mut old = Datapath::load_sized(&pin_dir, true, &old_sizes)
            .unwrap_or_else(|e| panic!("the old datapath: {e:#}"));
        Control::new()
            .apply(&cfg, &mut old.maps)
            .expect("programming the old maps");
        let ifs = (
            datapath::ifindex("c0").unwrap(),
            datapath::ifindex("s0").unwrap(),
        );
        for i in [ifs.0, ifs.1] {
            old.allow_redirect(i).unwrap();
        }
        connect(&mut old, ifs, 40001);
        let mut before = old.maps.programmed().expect("the old maps");
        before.vips.sort_by_key(|(k, _)| (k.addr, k.port_be));
        assert_eq!(entries(&pin_dir, "REALS"), 4096);
        assert_eq!((new_flows(&old), active(&old)), (1, 1), "one assured flow");

        let mut new = Datapath::load_with(&pin_dir, TABLE, false)
            .unwrap_or_else(|e| panic!("the new datapath: {e:#}"));
        assert!(new.adopted());
        for (map, want) in [
            ("VIPS", MAX_VIPS),
            ("FARMS", MAX_FARMS),
            ("SCHED", MAX_FARMS * SCHED_SLOTS),
            ("REALS", MAX_REALS),
            ("REAL_STATS", MAX_REALS),
            ("ACTIVE", MAX_REALS),
            ("STATS", reason::COUNT),
            ("FLOWS", TABLE),
        ] {
            assert_eq!(entries(&pin_dir, map), want, "{map} at this lb's size");
        }
        assert!(
            pin_dir.join("REALS_old").exists(),
            "the old REALS kept until the swap"
        );
        let mut after = new.maps.programmed().expect("the new maps");
        after.vips.sort_by_key(|(k, _)| (k.addr, k.port_be));
        assert_eq!(after.vips, before.vips, "VIPs copied");
        assert_eq!(after.reals, before.reals, "reals copied, same ids");
        assert_eq!((new_flows(&new), active(&new)), (1, 1), "counts copied");

        // Until the swap the old program runs, on the old maps.
        connect(&mut old, ifs, 40002);
        assert_eq!((new_flows(&new), active(&new)), (1, 1));
        // The swap (no interfaces here: the test runs the programs itself),
        // then what the old program counted since the copy is added.
        new.attach(&[], XdpMode::Auto)
            .expect("finishing the upgrade");
        assert_eq!(
            (new_flows(&new), active(&new)),
            (2, 2),
            "the old program's late counts added"
        );
        assert!(!pin_dir.join("REALS_old").exists(), "the old pins removed");

        // The new program knows both flows and the VIP.
        for i in [ifs.0, ifs.1] {
            new.allow_redirect(i).unwrap();
        }
        for port in [40001, 40002] {
            let data = from_client(Pkt::tcp((CLIENT, port), (VIP, 80), ACK, 101, b"x"));
            assert_eq!(
                run(&mut new, ifs.0, &data.build()).0,
                XDP_REDIRECT,
                "flow {port} continues"
            );
        }
        assert_eq!(new_flows(&new), 2, "no new flow for them");
        connect(&mut new, ifs, 40003);
        assert_eq!(
            (new_flows(&new), active(&new)),
            (3, 3),
            "a flow after the upgrade"
        );
        new.shutdown().expect("removing the pins");
        drop(old);
    });
    assert!(!pin_dir.exists(), "pins removed");
}
