//! The status page (`GET /`) with the first frame written in, so it reads
//! in a browser without a script (a terminal browser, say) and shows data
//! before the first poll. Its script (in `page.html`) redraws the same rows,
//! cell for cell, from `GET /api/status`; a test in Chromium compares the
//! two.
use std::fmt::Write;

use super::Status;

/// The page: inline CSS and script, no other asset, so it works on a host
/// without a network.
const PAGE: &str = include_str!("page.html");

/// The page with `st`'s rows in its tables.
pub fn page(st: &Status) -> String {
    PAGE.replacen("<!--summary-->", &esc(&summary(st)), 1)
        .replacen("<!--vips-->", &vips(st), 1)
        .replacen("<!--reals-->", &reals(st), 1)
        .replacen("<!--drops-->", &drops(st), 1)
}

fn summary(st: &Status) -> String {
    let (ft, ho) = (&st.flow_table, &st.half_open_table);
    let mut s = format!(
        "role {}, up {}, rates over {:.1}s; flows {} ({:.1}% of {} entries), half-open {} ({:.1}% of {})",
        st.role,
        super::text::duration(st.uptime_s),
        st.rate_window_s,
        ft.flows,
        ft.used_pct,
        ft.capacity,
        ho.flows,
        ho.used_pct,
        ho.capacity
    );
    if let Some(h) = &st.ha {
        let _ = write!(
            s,
            "; peer {}{}, sync unacked {}, lag {:.0}ms{}",
            h.peer_role.map_or("unheard", |r| r.as_str()),
            if h.peer_alive { " alive" } else { " silent" },
            h.sync_unacked,
            h.sync_lag_ms,
            if h.bulk_synced {
                ""
            } else {
                ", bulk sync pending"
            }
        );
    }
    s
}

/// One row: `key` is the `data-` attribute naming it, each cell is (text,
/// class).
fn row(out: &mut String, key: (&str, &str), cells: &[(String, &str)]) {
    let _ = write!(out, "<tr data-{}=\"{}\">", key.0, esc(key.1));
    for (text, class) in cells {
        if class.is_empty() {
            let _ = write!(out, "<td>{}</td>", esc(text));
        } else {
            let _ = write!(out, "<td class=\"{}\">{}</td>", esc(class), esc(text));
        }
    }
    out.push_str("</tr>");
}

fn none(out: &mut String, columns: usize, text: &str) {
    let _ = write!(out, "<tr><td colspan=\"{columns}\">{}</td></tr>", esc(text));
}

fn vips(st: &Status) -> String {
    let mut out = String::new();
    for v in &st.vips {
        row(
            &mut out,
            ("vip", &v.name),
            &[
                (v.address.clone(), ""),
                (v.name.clone(), ""),
                (v.protocol.clone(), ""),
                (v.algorithm.clone(), ""),
                (v.role.to_string(), "role"),
                (format!("{}/{}", v.reals_up, v.reals), "n"),
                (v.active_flows.to_string(), "n"),
                (format!("{:.1}", v.new_flows_per_s), "n"),
                (format!("{:.1}", v.packets_per_s), "n"),
            ],
        );
    }
    if st.vips.is_empty() {
        none(&mut out, 9, "no virtual server");
    }
    out
}

fn reals(st: &Status) -> String {
    let mut out = String::new();
    for r in &st.reals {
        let state = if r.backup {
            format!("{} (backup)", r.state)
        } else {
            r.state.to_string()
        };
        let age = r.last_check_age_ms.map_or("-".to_owned(), |ms| {
            format!("{:.1}s ago", ms as f64 / 1000.0)
        });
        row(
            &mut out,
            ("real", &format!("{}/{}", r.farm, r.address)),
            &[
                (r.address.clone(), ""),
                (r.farm.clone(), ""),
                (state, &format!("state {}", r.state)),
                (r.weight.to_string(), "n"),
                (r.effective_weight.to_string(), "n"),
                (r.active_flows.to_string(), "n"),
                (format!("{:.1}", r.new_flows_per_s), "n"),
                (format!("{:.1}", r.packets_per_s), "n"),
                (
                    format!(
                        "{}/{}/{}",
                        r.conn_failed_recent, r.consecutive_failures, r.conn_failed
                    ),
                    "n",
                ),
                (r.last_check.clone().unwrap_or_else(|| "-".into()), ""),
                (age, ""),
            ],
        );
    }
    if st.reals.is_empty() {
        none(&mut out, 11, "no real");
    }
    out
}

fn drops(st: &Status) -> String {
    let mut out = String::new();
    for d in &st.drops {
        row(
            &mut out,
            ("drop", &d.reason),
            &[
                (d.reason.clone(), ""),
                (d.packets_recent.to_string(), "n"),
                (format!("{:.1}", d.per_s), "n"),
                (d.packets.to_string(), "n"),
            ],
        );
    }
    if st.drops.is_empty() {
        none(
            &mut out,
            4,
            &format!("none in the last {:.0} s", st.rate_window_s),
        );
    }
    out
}

/// Text for HTML element content and quoted attribute values. Names come
/// from the config and check results from the network: never markup.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
