//! The live view as text: one frame of `lb top`.
use super::Status;

/// One frame, `width` columns wide at most (long check results are cut),
/// rows in the status's order (busiest first, as the agent sorts them).
pub fn render(s: &Status, width: usize) -> String {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(truncate(&l, width));
        out.push('\n');
    };
    let ha = s.ha.as_ref().map_or(String::new(), |h| {
        format!(
            "  peer {} ({}), sync unacked {}, lag {:.0}ms{}",
            h.peer_role.map_or("unheard", |r| r.as_str()),
            if h.peer_alive { "alive" } else { "silent" },
            h.sync_unacked,
            h.sync_lag_ms,
            if h.bulk_synced {
                ""
            } else {
                ", bulk sync pending"
            }
        )
    });
    line(format!(
        "lb top  role {}  up {}  rates over {:.1}s{ha}",
        s.role,
        duration(s.uptime_s),
        s.rate_window_s
    ));
    line(format!(
        "flows {} ({} of {} entries, {:.1}%)  half-open {} ({} of {} entries, {:.1}%)",
        s.flow_table.flows,
        s.flow_table.entries,
        s.flow_table.capacity,
        s.flow_table.used_pct,
        s.half_open_table.flows,
        s.half_open_table.entries,
        s.half_open_table.capacity,
        s.half_open_table.used_pct
    ));
    line(String::new());

    let vips = &s.vips;
    let w = col_width("VIP", vips.iter().map(|v| v.address.as_str()));
    let n = col_width("NAME", vips.iter().map(|v| v.name.as_str()));
    line(format!(
        "{:<w$} {:<n$} {:<5} {:<12} {:<10} {:>5} {:>8} {:>9} {:>10}",
        "VIP", "NAME", "PROTO", "ALGORITHM", "ROLE", "REALS", "ACTIVE", "CONN/S", "PKTS/S"
    ));
    for v in vips {
        line(format!(
            "{:<w$} {:<n$} {:<5} {:<12} {:<10} {:>5} {:>8} {:>9.1} {:>10.1}",
            v.address,
            v.name,
            v.protocol,
            v.algorithm,
            v.role,
            format!("{}/{}", v.reals_up, v.reals),
            v.active_flows,
            v.new_flows_per_s,
            v.packets_per_s
        ));
    }
    line(String::new());

    let reals = &s.reals;
    let w = col_width("REAL", reals.iter().map(|r| r.address.as_str()));
    let f = col_width("FARM", reals.iter().map(|r| r.farm.as_str()));
    line(format!(
        "{:<w$} {:<f$} {:<8} {:>7} {:>8} {:>9} {:>10} {:>6}  {}",
        "REAL", "FARM", "STATE", "WEIGHT", "ACTIVE", "CONN/S", "PKTS/S", "FAILS", "LAST CHECK"
    ));
    for r in reals {
        let state = if r.backup {
            format!("{} bk", r.state)
        } else {
            r.state.to_string()
        };
        let weight = if r.effective_weight == r.weight {
            r.weight.to_string()
        } else {
            format!("{}/{}", r.effective_weight, r.weight)
        };
        let check = match (&r.last_check, r.last_check_age_ms) {
            (Some(c), Some(age)) => format!("{c} ({:.1}s ago)", age as f64 / 1000.0),
            (Some(c), None) => c.clone(),
            (None, _) => "-".into(),
        };
        line(format!(
            "{:<w$} {:<f$} {:<8} {:>7} {:>8} {:>9.1} {:>10.1} {:>6}  {check}",
            r.address,
            r.farm,
            state,
            weight,
            r.active_flows,
            r.new_flows_per_s,
            r.packets_per_s,
            r.conn_failed_recent,
        ));
    }
    if !s.drops.is_empty() {
        line(String::new());
        line(format!(
            "{:<24} {:>10} {:>9}",
            "DROPS (recent)", "PACKETS", "PER S"
        ));
        for d in &s.drops {
            line(format!(
                "{:<24} {:>10} {:>9.1}",
                d.reason, d.packets_recent, d.per_s
            ));
        }
    }
    out
}

fn col_width<'a>(head: &str, cells: impl Iterator<Item = &'a str>) -> usize {
    cells.map(str::len).chain([head.len()]).max().unwrap_or(0)
}

/// `s` cut to `width` characters (all ASCII but check texts, which may hold
/// anything: cut on a character boundary).
fn truncate(s: &str, width: usize) -> &str {
    match s.char_indices().nth(width) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub(super) fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}
