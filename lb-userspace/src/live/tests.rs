use std::time::{Duration, Instant};

use super::*;
use crate::{
    api::{
        NodeRole, RealState,
        live::{RealStatus, VipStatus},
    },
    metrics::{RealSample, Snapshot, VipSample},
};

fn snap(vip_new: u64, vip_pkts: u64, real_pkts: u64, real_fail: u64, drops: u64) -> Snapshot {
    Snapshot {
        vips: vec![VipSample {
            name: "www".into(),
            address: "198.51.100.10:80".into(),
            protocol: "tcp".into(),
            packets_in: vip_pkts,
            packets_out: vip_pkts,
            new_flows: vip_new,
            ..VipSample::default()
        }],
        reals: vec![RealSample {
            farm: "web".into(),
            address: "203.0.113.11:8080".into(),
            state: RealState::Up,
            packets_in: real_pkts,
            conn_fail: real_fail,
            ..RealSample::default()
        }],
        reasons: vec![
            ("forward".into(), 1000),
            ("drop_no_vip_port".into(), drops),
            ("drop_fragment".into(), 7),
        ],
        ..Snapshot::default()
    }
}

#[test]
fn rates_span_the_last_ten_seconds() {
    let t0 = Instant::now();
    let mut h = History::default();
    // 20 records a second apart: 10 new flows and 100 packets each way a
    // second, 5 drops a second of one reason, none of the other.
    for i in 0..20u64 {
        h.record(
            t0 + Duration::from_secs(i),
            &snap(10 * i, 100 * i, 50 * i, i / 4, 5 * i),
        );
    }
    let now = t0 + Duration::from_millis(19_400);
    let current = snap(194, 1940, 970, 4, 97);
    let r = h.rates(now, &current);
    assert!(
        (9.5..=10.5).contains(&r.window_s()),
        "window {}",
        r.window_s()
    );
    let (new, pkts) = r.vip("www");
    assert!((new - 10.0).abs() < 0.2, "new flows/s {new}");
    assert!((pkts - 200.0).abs() < 2.0, "packets/s {pkts}");
    let (_, real_pkts, failed) = r.real("web", "203.0.113.11:8080");
    assert!((real_pkts - 50.0).abs() < 1.0, "{real_pkts}");
    assert!(failed >= 2, "failures within the window: {failed}");
    let drops = r.drops();
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(drops[0].reason, "drop_no_vip_port");
    assert!((drops[0].per_s - 5.0).abs() < 0.2, "{drops:?}");
    // Verdicts that are not drops never show, however they move.
    assert!(drops.iter().all(|d| d.reason.starts_with("drop_")));
}

#[test]
fn no_record_means_no_rates_and_unknown_names_are_zero() {
    let h = History::default();
    let r = h.rates(Instant::now(), &snap(5, 5, 5, 0, 5));
    assert_eq!(r.window_s(), 0.0);
    assert_eq!(r.vip("www"), (0.0, 0.0));
    assert_eq!(r.vip("gone"), (0.0, 0.0));
    assert!(r.drops().is_empty());
}

#[test]
fn a_counter_that_went_back_gives_zero_not_a_wrap() {
    let t0 = Instant::now();
    let mut h = History::default();
    h.record(t0, &snap(1000, 1000, 1000, 10, 1000));
    let r = h.rates(t0 + Duration::from_secs(5), &snap(3, 3, 3, 0, 3));
    assert_eq!(r.vip("www"), (0.0, 0.0));
    assert_eq!(r.real("web", "203.0.113.11:8080"), (0.0, 0.0, 0));
}

#[test]
fn the_frame_sorts_busiest_first_and_fits_the_width() {
    let real = |addr: &str, conn: f64, state: RealState| RealStatus {
        farm: "web".into(),
        address: addr.into(),
        state,
        weight: 10,
        effective_weight: 10,
        new_flows_per_s: conn,
        last_check: Some("http 200 in 0.4ms and a long tail ".repeat(10)),
        last_check_age_ms: Some(300),
        ..RealStatus::default()
    };
    let st = Status {
        role: NodeRole::Standalone,
        rate_window_s: 10.0,
        vips: vec![
            VipStatus {
                name: "quiet".into(),
                address: "198.51.100.11:80".into(),
                new_flows_per_s: 1.0,
                ..VipStatus::default()
            },
            VipStatus {
                name: "busy".into(),
                address: "198.51.100.10:80".into(),
                new_flows_per_s: 50.0,
                ..VipStatus::default()
            },
        ],
        reals: vec![
            real("203.0.113.11:8080", 2.0, RealState::Up),
            real("203.0.113.12:8080", 30.0, RealState::Down),
        ],
        ..Status::default()
    };
    let mut st = st;
    st.sort_busiest_first();
    let frame = render(&st, 100);
    assert!(frame.lines().all(|l| l.chars().count() <= 100), "{frame}");
    let at = |needle: &str| {
        frame
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} in {frame}"))
    };
    assert!(at("busy") < at("quiet"), "{frame}");
    assert!(at("203.0.113.12:8080") < at("203.0.113.11:8080"), "{frame}");
    assert!(frame.contains("down"), "{frame}");
}

#[test]
fn the_page_holds_the_first_frame_escaped() {
    let st = Status {
        role: NodeRole::Standalone,
        rate_window_s: 10.0,
        vips: vec![VipStatus {
            name: "a<b>&\"c\"".into(),
            address: "198.51.100.10:80".into(),
            ..VipStatus::default()
        }],
        reals: vec![RealStatus {
            farm: "web".into(),
            address: "203.0.113.11:8080".into(),
            state: RealState::Down,
            backup: true,
            last_check: Some("http 503 <script>".into()),
            ..RealStatus::default()
        }],
        ..Status::default()
    };
    let page = html::page(&st);
    assert!(
        page.contains(r#"<tr data-vip="a&lt;b&gt;&amp;&quot;c&quot;"><td>198.51.100.10:80</td><td>a&lt;b&gt;&amp;&quot;c&quot;</td>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<td class="state down">down (backup)</td>"#),
        "{page}"
    );
    assert!(page.contains("http 503 &lt;script&gt;"), "{page}");
    assert!(!page.contains("<script>\""), "{page}");
    assert!(page.contains("none in the last 10 s"), "{page}");
    assert!(
        !page.contains("<!--"),
        "every placeholder is filled: {page}"
    );
}
