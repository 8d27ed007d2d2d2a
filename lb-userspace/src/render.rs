//! The CLI's answers for people: aligned tables and summaries of the API's
//! answers (`--json` prints the answers themselves).
use std::{
    fmt::{Display, Write as _},
    net::{IpAddr, SocketAddr},
};

use crate::{
    api::{ClusterStatus, HaAnswer, HaStatus, RealRow, Stats, Status, VipRow},
    flowtable,
};

/// `lb status`.
pub fn status(d: &Status) -> String {
    // Table counts come from the agent's sweep; before its first, say so.
    let unswept = if d.swept {
        ""
    } else {
        "\n             (tables not counted yet: the agent's first sweep has not run)"
    };
    let interfaces: Vec<String> = d
        .interfaces
        .iter()
        .map(|i| match d.hooks.get(i) {
            Some(hook) => format!("{i} by {hook}"),
            None => i.clone(),
        })
        .collect();
    let (t, h, n) = (&d.flow_table, &d.half_open_table, &d.new_flows);
    format!(
        "role:        {}\nconfig:      {}\ninterfaces:  {} (xdp_mode {})\npin_dir:     {}{}\nuptime:      {}s\nvips:        {}\nreals:       {} ({} up)\nflows:       {} ({} of {} entries, {}%)\nhalf-open:   {} ({} of {} entries, {}%){}\nnew flows:   {} created, {} assured, {} refused (table full)\nlast sweep:  {:.1}ms\n",
        d.role,
        d.config.display(),
        interfaces.join(", "),
        serde_plain(&d.xdp_mode),
        d.pin_dir.display(),
        if d.adopted {
            " (adopted from a previous agent)"
        } else {
            ""
        },
        d.uptime_s,
        d.vips,
        d.reals,
        d.reals_up,
        d.flows,
        t.entries,
        t.capacity,
        t.used_pct,
        d.half_open,
        h.entries,
        h.capacity,
        h.used_pct,
        unswept,
        n.created,
        n.assured,
        n.refused,
        d.last_sweep_ms,
    )
}

/// `lb vips`.
pub fn vips(rows: &[VipRow]) -> String {
    let vips: Vec<String> = rows.iter().map(|v| endpoint(&v.address, v.port)).collect();
    let w = flowtable::endpoint_width(vips.iter().map(String::as_str));
    let mut out = format!(
        "{:<12} {:<w$} {:<5} {:<12} {:<20} {:>7} {:>8} {:>9} {:>10} {:>10}\n",
        "NAME",
        "VIP",
        "PROTO",
        "FARM",
        "ALGORITHM",
        "REALS",
        "ACTIVE",
        "NEW",
        "PKTS_IN",
        "PKTS_OUT"
    );
    for (v, vip) in rows.iter().zip(&vips) {
        out.push_str(&format!(
            "{:<12} {:<w$} {:<5} {:<12} {:<20} {:>7} {:>8} {:>9} {:>10} {:>10}\n",
            v.name,
            vip,
            v.protocol,
            v.serverfarm,
            v.algorithm.map_or("-", |a| a.name()),
            format!("{}/{}", v.reals_up, v.reals),
            v.active_flows,
            v.new_flows,
            v.packets_in,
            v.packets_out,
        ));
    }
    out
}

/// `lb reals`.
pub fn reals(rows: &[RealRow]) -> String {
    let reals: Vec<String> = rows.iter().map(|r| endpoint(&r.address, r.port)).collect();
    let w = flowtable::endpoint_width(reals.iter().map(String::as_str));
    let mut out = format!(
        "{:<12} {:<w$} {:<9} {:>6} {:>6} {:>6}  {}\n",
        "FARM", "REAL", "STATE", "WEIGHT", "ACTIVE", "BACKUP", "LAST CHECK"
    );
    for (r, real) in rows.iter().zip(&reals) {
        let weight = if r.weight == r.effective_weight {
            r.weight.to_string()
        } else {
            format!("{}/{}", r.effective_weight, r.weight)
        };
        out.push_str(&format!(
            "{:<12} {:<w$} {:<9} {:>6} {:>6} {:>6}  {}\n",
            r.farm,
            real,
            r.state.as_str(),
            weight,
            r.active_flows,
            if r.backup { "yes" } else { "" },
            match (&r.tracks, &r.last_check) {
                (Some(t), _) => format!("tracks {t}"),
                (None, Some(c)) => c.clone(),
                (None, None) => "-".into(),
            },
        ));
    }
    out
}

/// `lb stats`.
pub fn stats(d: &Stats) -> String {
    let mut out = format!("{:<24} {:>12}\n", "REASON", "PACKETS");
    for (name, n) in &d.reasons {
        out.push_str(&format!("{name:<24} {n:>12}\n"));
    }
    out.push_str(&format!(
        "\nflows {} of capacity {} entries; half-open {} of capacity {} entries; packets in {}, out {}; new flows {}\n",
        d.flows,
        d.flow_capacity,
        d.half_open,
        d.half_open_capacity,
        d.packets_in,
        d.packets_out,
        d.new_flows
    ));
    out
}

/// `lb ha status|takeover|release`.
pub fn ha(d: &HaAnswer) -> String {
    match d {
        HaAnswer::Role(r) => format!("role: {}\n{}\n", r.role, r.message),
        HaAnswer::Status(st) => ha_status(st),
    }
}

fn ha_status(d: &HaStatus) -> String {
    let (p, y, m) = (&d.peer, &d.sync, &d.messages);
    let floating: Vec<String> = d
        .floating_ips
        .iter()
        .map(|f| {
            format!(
                "{} on {}{}",
                f.address,
                f.interface,
                if f.held == Some(true) { " (held)" } else { "" }
            )
        })
        .collect();
    let rejected: Vec<String> = m
        .rejected
        .by_reason()
        .iter()
        .map(|(why, n)| format!("{why} {n}"))
        .collect();
    format!(
        "role:      {} (node {}, priority {}, term {}, {}{})\n\
         peer:      {} node {} {} (priority {}, {}), heard {} ms ago\n\
         floating:  {}\n\
         sync out:  {} events queued, {} acked, {} unacked (stalled {:.0} ms), {} resends, {} bulk copies sent\n\
         sync in:   {} events, {} upserts, {} removes, {} unmatched, {} bulk copies received, last {}\n\
         messages:  {} accepted, rejected {}\n",
        d.role,
        d.node_id,
        d.priority,
        d.term,
        if d.bulk_synced {
            "synced"
        } else {
            "not synced"
        },
        if d.preempt { ", preempt" } else { "" },
        p.address,
        or_dash(p.node_id),
        or_dash(p.role),
        or_dash(p.priority),
        if p.alive { "alive" } else { "silent" },
        or_dash(p.last_heard_ms.map(|ms| format!("{ms:.0}"))),
        floating.join(", "),
        y.events_queued,
        y.events_acked,
        y.unacked,
        y.stalled_ms,
        y.resends,
        y.bulk_copies_sent,
        y.events_received,
        y.applied_upserts,
        y.applied_removes,
        y.unmatched,
        y.bulk_copies_received,
        or_dash(y.last_bulk.map(|b| {
            format!(
                "{} flows, {} stale removed{}",
                b.flows,
                b.stale_removed,
                b.took_ms
                    .map(|ms| format!(", {ms:.0} ms"))
                    .unwrap_or_default()
            )
        })),
        m.accepted,
        rejected.join(", "),
    )
}

/// `lb cluster status`.
pub fn cluster(d: &ClusterStatus) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "node {} at {}{}{}{}",
        d.node_id,
        d.listen,
        if d.draining { ", draining" } else { "" },
        if d.caught_up {
            ""
        } else {
            ", catching up with its peers' flows (announces nothing yet)"
        },
        d.stopping_in_ms
            .map(|ms| format!(", stopping in {:.1}s", ms as f64 / 1e3))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "\n{:<6} {:<24} {:<8} {:>8} {:>8} {:>7} {:>9}",
        "NODE", "ADDRESS", "STATE", "LAG_MS", "UNACKED", "SYNCED", "FLOWS"
    );
    for n in &d.nodes {
        let _ = writeln!(
            s,
            "{:<6} {:<24} {:<8} {:>8} {:>8} {:>7} {:>9}",
            n.node_id.map_or("-".into(), |i| i.to_string()),
            n.address,
            serde_plain(&n.state),
            n.sync_lag_ms,
            n.unacked,
            if n.synced { "yes" } else { "no" },
            n.flows
        );
    }
    let _ = writeln!(s, "\n{:<40} STATE", "BGP NEIGHBOR");
    for b in &d.bgp.sessions {
        let _ = writeln!(s, "{:<40} {}", b.neighbor, b.state);
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(" ")
        }
    };
    let _ = writeln!(s, "\nannounced: {}", list(&d.bgp.announced));
    if d.bgp.wanted != d.bgp.announced {
        let _ = writeln!(s, "wanted:    {}", list(&d.bgp.wanted));
    }
    if let Some(e) = &d.bgp.error {
        let _ = writeln!(s, "bgp error: {e}");
    }
    s
}

fn or_dash(v: Option<impl Display>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// A unit enum's serde spelling (`xdp_mode`'s `auto`).
fn serde_plain(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "-".into(),
    }
}

/// A row's address and port as one endpoint cell, `[addr]:port` for IPv6
/// (the JSON keeps the plain address).
fn endpoint(address: &str, port: u16) -> String {
    match address.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{address}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::RealState, config::Algorithm};

    fn vip(name: &str, address: &str, port: u16, reals_up: usize) -> VipRow {
        VipRow {
            name: name.into(),
            address: address.into(),
            port,
            protocol: "tcp".into(),
            serverfarm: "web".into(),
            algorithm: Some(Algorithm::Maglev),
            sticky_s: 0,
            reals_up,
            reals: 2,
            active_flows: 0,
            new_flows: 0,
            packets_in: 0,
            bytes_in: 0,
            packets_out: 0,
            bytes_out: 0,
        }
    }

    fn real(farm: &str, address: &str, state: RealState) -> RealRow {
        RealRow {
            farm: farm.into(),
            address: address.into(),
            port: 8080,
            state,
            weight: 1,
            effective_weight: 1,
            backup: false,
            active_flows: 0,
            last_check: None,
            check_latency_ms: None,
            since_ms: None,
            tracks: None,
        }
    }

    #[test]
    fn vips_and_reals_tables_show_ipv6_endpoints_bracketed_and_aligned() {
        let table = vips(&[
            vip("www", "198.51.100.10", 80, 2),
            vip("www6", "2001:db8:ffff:ffff:ffff:ffff:ffff:10", 443, 1),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].contains(" 198.51.100.10:80 "), "{table}");
        assert!(
            lines[2].contains(" [2001:db8:ffff:ffff:ffff:ffff:ffff:10]:443 "),
            "{table}"
        );
        let proto = lines[0].find("PROTO").unwrap();
        assert!(
            lines.iter().skip(1).all(|l| &l[proto..proto + 3] == "tcp"),
            "{table}"
        );

        let rows = [
            real("web6", "2001:db8:2::11", RealState::Up),
            real("web", "203.0.113.11", RealState::Down),
        ];
        let table = reals(&rows);
        assert!(
            table.contains("web6         [2001:db8:2::11]:8080 up "),
            "{table}"
        );
        assert!(
            table.contains("web          203.0.113.11:8080     down "),
            "{table}"
        );
        // IPv4 alone: the columns as they were.
        let table = reals(&rows[1..]);
        assert_eq!(table.lines().next().unwrap().find("STATE"), Some(13 + 22));
    }

    #[test]
    fn a_ramping_weight_shows_effective_over_configured_and_a_tracker_whom() {
        let mut r = real("web", "203.0.113.11", RealState::Up);
        r.weight = 10;
        r.effective_weight = 3;
        r.tracks = Some("db/203.0.113.20:5432".into());
        let table = reals(&[r]);
        assert!(table.contains(" 3/10 "), "{table}");
        assert!(table.contains("tracks db/203.0.113.20:5432"), "{table}");
    }
}
