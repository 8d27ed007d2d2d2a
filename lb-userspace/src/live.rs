//! The live view: what the status page (`GET /`, polling `GET /api/status`)
//! and `lb top` show. The agent fills a [`Status`] from the same
//! [`Snapshot`] a Prometheus scrape renders, plus what only it knows (roles,
//! check results, weights), and the rates come from [`History`].
//!
//! Rates are computed by the agent, not by the viewer: it records its
//! counters once a second and a rate is the difference between now and the
//! oldest record of the last 10 s. So the first frame of `lb top --once`
//! already has rates, and every viewer sees the same numbers.
use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::{
    api::live::{DropStatus, Status},
    metrics::Snapshot,
};

pub mod html;
mod text;

pub use text::render;

/// How far back the rates look.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

impl Status {
    /// VIP and real rows busiest first (new flows/s, then packets/s), ties
    /// by name: the order every view shows.
    pub fn sort_busiest_first(&mut self) {
        self.vips.sort_by(|a, b| {
            busier(
                (a.new_flows_per_s, a.packets_per_s),
                (b.new_flows_per_s, b.packets_per_s),
            )
            .then_with(|| a.name.cmp(&b.name))
        });
        self.reals.sort_by(|a, b| {
            busier(
                (a.new_flows_per_s, a.packets_per_s),
                (b.new_flows_per_s, b.packets_per_s),
            )
            .then_with(|| a.farm.cmp(&b.farm))
            .then_with(|| a.address.cmp(&b.address))
        });
    }
}

/// Busier first: higher new flows/s, then higher packets/s.
fn busier(a: (f64, f64), b: (f64, f64)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then_with(|| b.1.total_cmp(&a.1))
}

/// The counters of one moment, keyed so a VIP or real that comes or goes
/// with a reload finds its own past.
#[derive(Debug, Default)]
struct Counters {
    /// By VIP name: (new flows, packets both ways).
    vips: HashMap<String, (u64, u64)>,
    /// By (farm, address): (new flows, packets both ways, failed connections).
    reals: HashMap<(String, String), (u64, u64, u64)>,
    reasons: HashMap<String, u64>,
}

impl Counters {
    fn of(s: &Snapshot) -> Self {
        Self {
            vips: s
                .vips
                .iter()
                .map(|v| (v.name.clone(), (v.new_flows, v.packets_in + v.packets_out)))
                .collect(),
            reals: s
                .reals
                .iter()
                .map(|r| {
                    (
                        (r.farm.clone(), r.address.clone()),
                        (r.new_flows, r.packets_in + r.packets_out, r.conn_fail),
                    )
                })
                .collect(),
            reasons: s.reasons.iter().cloned().collect(),
        }
    }
}

/// The agent's counter records of the last [`RATE_WINDOW`].
#[derive(Debug, Default)]
pub struct History {
    records: VecDeque<(Instant, Counters)>,
}

/// Per-second rates between a past record and now.
pub struct Rates<'a> {
    base: Option<&'a Counters>,
    now: Counters,
    secs: f64,
}

impl History {
    /// Records the counters of `s`, taken at `at`, and forgets records the
    /// window no longer needs.
    pub fn record(&mut self, at: Instant, s: &Snapshot) {
        self.records.push_back((at, Counters::of(s)));
        // Keep the newest record at least RATE_WINDOW old as the base.
        while self.records.len() > 1 && at.duration_since(self.records[1].0) >= RATE_WINDOW {
            self.records.pop_front();
        }
    }

    /// The rates from the oldest record within the window to `now`. Records
    /// come a second apart, so the half second of slack makes the window
    /// 9.5 to 10.5 s once the agent has run that long.
    pub fn rates(&self, at: Instant, now: &Snapshot) -> Rates<'_> {
        let base = self.records.iter().find(|(t, _)| {
            at.saturating_duration_since(*t) <= RATE_WINDOW + Duration::from_millis(500)
        });
        let secs = base.map_or(0.0, |(t, _)| at.saturating_duration_since(*t).as_secs_f64());
        Rates {
            base: base.map(|(_, c)| c),
            now: Counters::of(now),
            secs,
        }
    }
}

impl Rates<'_> {
    /// The seconds the rates cover.
    pub fn window_s(&self) -> f64 {
        self.secs
    }

    fn per_s(&self, delta: u64) -> f64 {
        if self.secs < 0.5 {
            return 0.0;
        }
        ((delta as f64 / self.secs) * 10.0).round() / 10.0
    }

    /// A VIP's (new flows/s, packets/s).
    pub fn vip(&self, name: &str) -> (f64, f64) {
        let now = self.now.vips.get(name).copied().unwrap_or_default();
        let then = self
            .base
            .and_then(|b| b.vips.get(name))
            .copied()
            .unwrap_or(now);
        (
            self.per_s(now.0.saturating_sub(then.0)),
            self.per_s(now.1.saturating_sub(then.1)),
        )
    }

    /// A real's (new flows/s, packets/s, failed connections in the window).
    pub fn real(&self, farm: &str, address: &str) -> (f64, f64, u64) {
        let key = (farm.to_owned(), address.to_owned());
        let now = self.now.reals.get(&key).copied().unwrap_or_default();
        let then = self
            .base
            .and_then(|b| b.reals.get(&key))
            .copied()
            .unwrap_or(now);
        (
            self.per_s(now.0.saturating_sub(then.0)),
            self.per_s(now.1.saturating_sub(then.1)),
            now.2.saturating_sub(then.2),
        )
    }

    /// The drop reasons that moved in the window, busiest first.
    pub fn drops(&self) -> Vec<DropStatus> {
        let mut out: Vec<DropStatus> = self
            .now
            .reasons
            .iter()
            .filter(|(name, _)| name.starts_with("drop_"))
            .filter_map(|(name, &n)| {
                let then = self
                    .base
                    .and_then(|b| b.reasons.get(name))
                    .copied()
                    .unwrap_or(n);
                let recent = n.saturating_sub(then);
                (recent > 0).then(|| DropStatus {
                    reason: name.clone(),
                    packets_recent: recent,
                    per_s: self.per_s(recent),
                    packets: n,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.packets_recent
                .cmp(&a.packets_recent)
                .then(a.reason.cmp(&b.reason))
        });
        out
    }
}

#[cfg(test)]
mod tests;
