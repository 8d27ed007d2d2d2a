//! `track:` at run time: a tracking real has the health of the real it
//! follows (HAProxy's `track`), at start, after every reload, and at each of
//! that real's transitions, whose fail action it shares when it goes down.
//! `lb check` has made sure every chain ends at a checked real, loop-free.
use std::collections::HashSet;

use log::{error, info};

use super::{Agent, real_name};
use crate::{
    config::{Config, RealAt},
    control::RealKey,
};

/// The keys a config real is programmed under (one per port it serves).
fn keys(cfg: &Config, (farm, i): &RealAt) -> Vec<RealKey> {
    let r = &cfg.serverfarms[farm].reals[*i];
    cfg.real_ports(farm, r)
        .into_iter()
        .map(|port| RealKey {
            farm: farm.clone(),
            addr: r.address,
            port,
        })
        .collect()
}

impl Agent {
    /// The reals that track `key` directly.
    fn followers(&self, key: &RealKey) -> Vec<RealKey> {
        self.cfg
            .tracks()
            .iter()
            .filter(|(_, to)| keys(&self.cfg, to).contains(key))
            .flat_map(|(tracker, _)| keys(&self.cfg, tracker))
            .collect()
    }

    /// A real's health as the agent holds it (see `control::Overlay`).
    fn health_of(&self, key: &RealKey) -> bool {
        self.cfg
            .serverfarms
            .get(&key.farm)
            .is_none_or(|f| self.ctl.overlay().healthy(key, f))
    }

    fn set_followed(&mut self, key: &RealKey, up: bool, of: &RealKey) -> bool {
        if self.health_of(key) == up && self.ctl.overlay().health.contains_key(key) {
            return false;
        }
        match self.ctl.set_health(key, up, &mut self.dp.maps) {
            Ok(_) => {
                let state = if up { "up" } else { "down" };
                info!("track: {} {state}, as {} is", real_name(key), real_name(of));
                true
            }
            Err(e) => {
                error!("track: {}: {e:#}", real_name(key));
                false
            }
        }
    }

    /// `key` went `up` or down: so do the reals that track it, and those
    /// that track them. Returns the reals set down (for the fail action).
    pub(super) fn follow(&mut self, key: &RealKey, up: bool) -> Vec<RealKey> {
        let (mut downs, mut seen) = (Vec::new(), HashSet::new());
        let mut todo = vec![key.clone()];
        while let Some(k) = todo.pop() {
            for f in self.followers(&k) {
                if !seen.insert(f.clone()) {
                    continue;
                }
                if self.set_followed(&f, up, &k) && !up {
                    downs.push(f.clone());
                }
                todo.push(f);
            }
        }
        downs
    }

    /// Every tracking real set to the health of the real it follows (at
    /// start and after a reload). Returns the reals set down.
    pub(super) fn sync_tracks(&mut self) -> Vec<RealKey> {
        let pairs = self.cfg.tracks();
        let mut downs = Vec::new();
        // A chain of n trackers settles in n rounds.
        for _ in 0..=pairs.len() {
            let mut changed = false;
            for (tracker, to) in &pairs {
                let targets = keys(&self.cfg, to);
                let up = targets.iter().all(|k| self.health_of(k));
                let Some(of) = targets.first() else { continue };
                for k in keys(&self.cfg, tracker) {
                    if self.set_followed(&k, up, of) {
                        changed = true;
                        if !up {
                            downs.push(k);
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        downs
    }
}
