//! docs/bench-e2e.svg: section 2 at a glance. One group of bars per load,
//! one bar per system, heights relative to plain routing (the three loads
//! have different units), each bar labelled with its absolute value.
use std::fmt::Write as _;

use super::{
    Results,
    report::{LOADS, SYSTEMS},
};

/// One per `report::SYSTEMS` entry, in its order.
const COLORS: [&str; SYSTEMS.len()] = ["#9e9e9e", "#5b8ff9", "#f6bd16", "#e8684a", "#5ad8a6"];
const W: f64 = 760.0;
const H: f64 = 360.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 300.0;
const LEFT: f64 = 60.0;

pub fn render(r: &Results, subtitle: &str) -> String {
    let val = |sys: &str, load: &str| r.num("e2e", sys, load).unwrap_or(0.0);
    // Percent of plain routing; the axis reaches the tallest bar.
    let pct = |sys: &str, load: &str| {
        let base = val("plain", load);
        if base > 0.0 {
            100.0 * val(sys, load) / base
        } else {
            0.0
        }
    };
    let max = SYSTEMS
        .iter()
        .flat_map(|(s, _)| LOADS.iter().map(move |(l, ..)| pct(s, l)))
        .fold(100.0f64, f64::max);
    let top_pct = (max / 50.0).ceil() * 50.0;
    let y = |p: f64| BOTTOM - (BOTTOM - TOP) * p / top_pct;

    let mut s = String::new();
    writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    )
    .unwrap();
    writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#).unwrap();
    writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">End to end through the lb namespace, relative to plain routing</text>"#
    )
    .unwrap();
    writeln!(
        s,
        r#"<text x="{LEFT}" y="40" fill="dimgray">{}</text>"#,
        esc(subtitle)
    )
    .unwrap();
    // Axis and grid, every 50%.
    let mut p = 0.0;
    while p <= top_pct {
        let yy = y(p);
        let dash = if p == 100.0 {
            ""
        } else {
            r#" stroke-dasharray="2,3""#
        };
        let color = if p == 100.0 { "#333" } else { "#ccc" };
        writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="{color}"{dash}/><text x="{}" y="{:.1}" text-anchor="end" fill="dimgray">{p:.0}%</text>"#,
            W - 20.0,
            LEFT - 6.0,
            yy + 4.0
        )
        .unwrap();
        p += 50.0;
    }
    let group_w = (W - LEFT - 20.0) / LOADS.len() as f64;
    let bar_w = 34.0;
    for (g, (load, label, unit)) in LOADS.iter().enumerate() {
        let x0 = LEFT + g as f64 * group_w + (group_w - bar_w * SYSTEMS.len() as f64) / 2.0;
        for (i, (sys, _)) in SYSTEMS.iter().enumerate() {
            let x = x0 + i as f64 * bar_w;
            let yy = y(pct(sys, load));
            writeln!(
                s,
                r#"<rect x="{:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                x + 2.0,
                bar_w - 4.0,
                BOTTOM - yy,
                COLORS[i],
                x + bar_w / 2.0,
                yy - 4.0,
                short(val(sys, load))
            )
            .unwrap();
        }
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label} ({unit})</text>"#,
            LEFT + g as f64 * group_w + group_w / 2.0,
            BOTTOM + 18.0
        )
        .unwrap();
    }
    // Legend, each entry as wide as its text (about 7 px a character).
    let mut x = LEFT;
    for (i, (_, name)) in SYSTEMS.iter().enumerate() {
        writeln!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            BOTTOM + 34.0,
            COLORS[i],
            x + 16.0,
            BOTTOM + 44.0,
            esc(name)
        )
        .unwrap();
        x += 16.0 + 7.0 * name.len() as f64 + 24.0;
    }
    s.push_str("</svg>\n");
    s
}

/// 21130 -> "21.1k".
fn short(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
