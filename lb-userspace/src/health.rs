//! Active health checks, on HAProxy's model (`inter`, `fastinter`,
//! `downinter`, `rise`, `fall`).
//!
//! Every (real, probe) pair runs as its own tokio task: check, record the
//! result in the shared state, sleep, again. The state machine lives in
//! `Shared::record`, under one lock, so a real's verdict (up only while all
//! its probes are up) is decided in one place; the tasks only do I/O.
//!
//! - A probe goes down after `fall` failures in a row and up after `rise`
//!   successes in a row. A real that starts down (`init_state: down`) and
//!   has never been up goes up at its first success: it carries no new flows
//!   until then, and need not wait for `rise`.
//! - Intervals: `interval` while stable and up, `fast_interval` while the
//!   last result disagrees with the state (changing), `down_interval` while
//!   stable and down. The first check waits a random fraction of `interval`
//!   and every later wait varies by ±10%, so thousands of reals do not probe
//!   in lockstep.
//! - Passive health ([`Checker::hold_down`]) forces a real down and ignores
//!   its successes for a while; probes then bring it back with `rise`.
//! - A real without probes is up; nothing checks it.
//!
//! Every transition goes to the channel given to [`Checker::new`] and to the
//! log, as `web/10.0.2.11:8080 down: http 503 (3/3)`.

mod check;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use crate::config::{Probe, format_duration};

/// One real to check. `id` is the datapath's real id (stable across reloads).
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub id: u32,
    /// `web/203.0.113.11:8080`, used in logs.
    pub name: String,
    pub addr: IpAddr,
    /// The real's port; a probe's `port:` overrides it.
    pub port: u16,
    /// (probe name, probe); a real is up only while all its probes are up.
    pub probes: Vec<(String, Probe)>,
    /// false (`init_state: down`): starts down and carries no new flows
    /// until its first successful check.
    pub init_up: bool,
}

/// A real changed state.
#[derive(Clone, Debug)]
pub struct Transition {
    pub id: u32,
    pub name: String,
    pub up: bool,
    /// What decided it: `http 503 (3/3)`, `tcp ok (first check)`, or the
    /// reason given to [`Checker::hold_down`].
    pub reason: String,
}

impl fmt::Display for Transition {
    /// The log line: `web/10.0.2.11:8080 down: http 503 (3/3)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.up { "up" } else { "down" };
        write!(f, "{} {state}: {}", self.name, self.reason)
    }
}

/// A real's health, for `lb reals` and the API.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Status {
    pub up: bool,
    /// The latest check result (`http 200 in 1.2ms`, `tcp connect
    /// refused`), or `held down by …` during a passive-health hold. With
    /// several probes it names the probe (`web-http: http 503 in 0.4ms`)
    /// and, while the real is down, shows a failing one.
    pub last_check: String,
    /// How long the last check took; `None` when nothing answered
    /// (timeout, refused) or before the first check.
    pub last_latency_ms: Option<f64>,
    /// Checks run since the real was added (all probes).
    pub checks: u64,
    /// Time in the current state.
    pub since_ms: u64,
    /// How long ago the check `last_check` shows ran; `None` before the
    /// first check, during a hold, or without probes.
    pub last_check_age_ms: Option<u64>,
}

/// Runs the probes of a set of targets; see the module documentation.
pub struct Checker {
    shared: Arc<Mutex<Shared>>,
    runtime: Handle,
    /// Probe tasks by target id.
    tasks: HashMap<u32, Vec<JoinHandle<()>>>,
    /// The timer that ends the hold of a target without probes.
    hold_timers: HashMap<u32, JoinHandle<()>>,
    next_generation: u64,
}

impl Checker {
    /// Must be called inside a tokio runtime (the agent uses a
    /// current_thread one); the probes run on it. Transitions go to `tx`.
    pub fn new(tx: UnboundedSender<Transition>) -> Checker {
        Checker {
            shared: Arc::new(Mutex::new(Shared {
                entries: HashMap::new(),
                tx,
            })),
            runtime: Handle::current(),
            tasks: HashMap::new(),
            hold_timers: HashMap::new(),
            next_generation: 1,
        }
    }

    /// Replaces the set of targets (config reload).
    ///
    /// - A target whose (id, addr, port, probes) is unchanged keeps its
    ///   state and schedule (a new `name` is taken for later logs).
    /// - A new id, or an id whose address or port changed, starts in its
    ///   init state; no transition is sent for that state, read it with
    ///   [`Checker::is_up`].
    /// - An id whose probes changed keeps its up/down state (so it stays
    ///   what the datapath was told) and its hold; its probes restart from
    ///   that state with fresh counters. If it no longer has probes and is
    ///   down (not held), it goes up with a transition, reason `no probes`.
    /// - Removed ids stop: their tasks are aborted, nothing more is sent.
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        let keep: HashSet<u32> = targets.iter().map(|t| t.id).collect();
        let shared = Arc::clone(&self.shared);
        let mut guard = lock(&shared);
        let removed: Vec<u32> = guard
            .entries
            .keys()
            .filter(|id| !keep.contains(id))
            .copied()
            .collect();
        for id in removed {
            guard.entries.remove(&id);
            self.stop(id);
        }
        let now = Instant::now();
        for target in targets {
            let id = target.id;
            let entry = guard.entries.get_mut(&id);
            match entry {
                Some(e) if same_checks(&e.target, &target) => {
                    e.target.name = target.name;
                    e.target.init_up = target.init_up;
                }
                Some(e) if e.target.addr == target.addr && e.target.port == target.port => {
                    self.stop(id);
                    let generation = self.generation();
                    e.generation = generation;
                    e.probes = fresh_probes(target.probes.len(), e.up);
                    e.last = None;
                    e.target = target;
                    let held = e.held(now).is_some();
                    if e.target.probes.is_empty() && !e.up && !held {
                        e.up = true;
                        e.initial = false;
                        e.since = now;
                        let t = e.transition(true, "no probes".to_owned());
                        guard.emit(t);
                    }
                    let e = &guard.entries[&id];
                    self.spawn(e);
                    if let Some(until) = e.held(now).map(|h| h.until)
                        && e.target.probes.is_empty()
                    {
                        self.spawn_hold_timer(id, e.generation, until);
                    }
                }
                _ => {
                    self.stop(id);
                    let generation = self.generation();
                    let entry = Entry::new(target, generation, now);
                    self.spawn(&entry);
                    guard.entries.insert(id, entry);
                }
            }
        }
    }

    /// Passive health: forces `id` down now (with a transition carrying
    /// `reason` if it was up), ignores its successes until `hold` has
    /// elapsed, then lets its probes bring it back with the usual `rise`
    /// rule (no first-check shortcut). A target without probes comes back
    /// up by itself after `hold`. Calling it again while held extends the
    /// hold to the later end.
    ///
    /// `reason` should read well after `down: ` and after `held down by `
    /// (the status text during the hold), e.g. `passive health (3 errors)`.
    pub fn hold_down(&mut self, id: u32, hold: Duration, reason: String) {
        let shared = Arc::clone(&self.shared);
        let mut guard = lock(&shared);
        let now = Instant::now();
        let Some(e) = guard.entries.get_mut(&id) else {
            return;
        };
        let (mut from, mut until) = (now, now + hold);
        if let Some(h) = e.held(now) {
            (from, until) = (h.from, until.max(h.until));
        }
        e.hold = Some(Hold {
            from,
            until,
            reason: reason.clone(),
        });
        e.initial = false;
        for p in &mut e.probes {
            p.up = false;
            p.successes = 0;
        }
        let generation = e.generation;
        let no_probes = e.target.probes.is_empty();
        if e.up {
            e.up = false;
            e.since = now;
            let t = e.transition(false, reason);
            guard.emit(t);
        }
        drop(guard);
        if no_probes {
            self.spawn_hold_timer(id, generation, until);
        }
    }

    pub fn status(&self, id: u32) -> Option<Status> {
        let guard = lock(&self.shared);
        let e = guard.entries.get(&id)?;
        let now = Instant::now();
        let picked = e.shown_probe();
        let last_check = match (e.held(now), picked) {
            (Some(h), _) => format!("held down by {}", h.reason),
            (None, Some(i)) => {
                let text = e.probes[i].last.as_ref().map(|l| l.0.describe());
                let text = text.unwrap_or_default();
                if e.target.probes.len() > 1 {
                    format!("{}: {text}", e.target.probes[i].0)
                } else {
                    text
                }
            }
            (None, None) if e.target.probes.is_empty() => "no probes".to_owned(),
            (None, None) => "not checked yet".to_owned(),
        };
        Some(Status {
            up: e.up,
            last_check,
            last_latency_ms: e
                .last
                .as_ref()
                .and_then(|o| o.latency)
                .map(|l| l.as_secs_f64() * 1000.0),
            checks: e.checks,
            since_ms: u64::try_from(now.duration_since(e.since).as_millis()).unwrap_or(u64::MAX),
            last_check_age_ms: match (e.held(now), picked) {
                (None, Some(i)) => e.probes[i].last.as_ref().map(|(_, at)| {
                    u64::try_from(now.duration_since(*at).as_millis()).unwrap_or(u64::MAX)
                }),
                _ => None,
            },
        })
    }

    pub fn is_up(&self, id: u32) -> Option<bool> {
        lock(&self.shared).entries.get(&id).map(|e| e.up)
    }

    fn generation(&mut self) -> u64 {
        let g = self.next_generation;
        self.next_generation += 1;
        g
    }

    /// Aborts `id`'s tasks. The generation check in `Shared::record`
    /// covers a task that is mid-poll on another thread.
    fn stop(&mut self, id: u32) {
        for task in self.tasks.remove(&id).unwrap_or_default() {
            task.abort();
        }
        if let Some(timer) = self.hold_timers.remove(&id) {
            timer.abort();
        }
    }

    fn spawn(&mut self, e: &Entry) {
        let tasks = e
            .target
            .probes
            .iter()
            .enumerate()
            .map(|(index, (_, probe))| {
                let run = ProbeRun {
                    shared: Arc::clone(&self.shared),
                    id: e.target.id,
                    generation: e.generation,
                    index,
                    addr: e.target.addr,
                    port: probe.port.unwrap_or(e.target.port),
                    probe: probe.clone(),
                };
                self.runtime.spawn(run.run())
            })
            .collect();
        self.tasks.insert(e.target.id, tasks);
    }

    fn spawn_hold_timer(&mut self, id: u32, generation: u64, until: Instant) {
        let shared = Arc::clone(&self.shared);
        let timer = self.runtime.spawn(async move {
            tokio::time::sleep_until(until.into()).await;
            lock(&shared).hold_over(id, generation);
        });
        if let Some(old) = self.hold_timers.insert(id, timer) {
            old.abort();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        let ids: Vec<u32> = self
            .tasks
            .keys()
            .chain(self.hold_timers.keys())
            .copied()
            .collect();
        for id in ids {
            self.stop(id);
        }
    }
}

/// Whether two versions of a target check the same thing the same way.
fn same_checks(a: &Target, b: &Target) -> bool {
    (a.id, a.addr, a.port, &a.probes) == (b.id, b.addr, b.port, &b.probes)
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic elsewhere leaves consistent data: every update is a few
    // assignments that cannot panic halfway.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state every task and the [`Checker`] share.
struct Shared {
    entries: HashMap<u32, Entry>,
    tx: UnboundedSender<Transition>,
}

struct Entry {
    target: Target,
    /// Bumped whenever the target's tasks are replaced; a task with an older
    /// one is stale and records nothing.
    generation: u64,
    up: bool,
    /// Started down and never up since: the first success is enough.
    initial: bool,
    /// When the current state began.
    since: Instant,
    probes: Vec<ProbeState>,
    hold: Option<Hold>,
    checks: u64,
    /// The latest result of any probe.
    last: Option<Outcome>,
}

struct ProbeState {
    up: bool,
    successes: u32,
    failures: u32,
    last: Option<(Outcome, Instant)>,
}

struct Hold {
    /// When it began (an extension keeps the first start).
    from: Instant,
    until: Instant,
    reason: String,
}

fn fresh_probes(n: usize, up: bool) -> Vec<ProbeState> {
    (0..n)
        .map(|_| ProbeState {
            up,
            successes: 0,
            failures: 0,
            last: None,
        })
        .collect()
}

impl Entry {
    fn new(target: Target, generation: u64, now: Instant) -> Entry {
        // Nothing checks a real without probes: it is up.
        let up = target.init_up || target.probes.is_empty();
        Entry {
            probes: fresh_probes(target.probes.len(), up),
            target,
            generation,
            up,
            initial: !up,
            since: now,
            hold: None,
            checks: 0,
            last: None,
        }
    }

    /// The hold, while it lasts.
    fn held(&self, now: Instant) -> Option<&Hold> {
        self.hold.as_ref().filter(|h| h.until > now)
    }

    fn transition(&self, up: bool, reason: String) -> Transition {
        Transition {
            id: self.target.id,
            name: self.target.name.clone(),
            up,
            reason,
        }
    }

    /// The probe whose result [`Checker::status`] shows: the latest checked,
    /// among the down ones while the real is down.
    fn shown_probe(&self) -> Option<usize> {
        let latest = |down_only: bool| {
            self.probes
                .iter()
                .enumerate()
                .filter(|(_, p)| !down_only || !p.up)
                .filter_map(|(i, p)| p.last.as_ref().map(|(_, at)| (*at, i)))
                .max()
                .map(|(_, i)| i)
        };
        if self.up {
            latest(false)
        } else {
            latest(true).or_else(|| latest(false))
        }
    }
}

impl Shared {
    fn emit(&self, t: Transition) {
        if t.up {
            log::info!("{t}");
        } else {
            log::warn!("{t}");
        }
        // The receiver may be gone while the agent stops; nothing to do then.
        let _ = self.tx.send(t);
    }

    /// Records one check of probe `index` of target `id` and returns how
    /// long to wait before the next; `None` when the task is stale (the
    /// target was removed or replaced) and must stop.
    fn record(
        &mut self,
        id: u32,
        generation: u64,
        index: usize,
        outcome: Outcome,
    ) -> Option<Duration> {
        let now = Instant::now();
        let e = self
            .entries
            .get_mut(&id)
            .filter(|e| e.generation == generation)?;
        let probe = &e.target.probes.get(index)?.1;
        let (rise, fall, interval) = (probe.rise.max(1), probe.fall.max(1), probe.interval);
        let fast = probe.fast_interval.unwrap_or(interval);
        let down = probe.down_interval.unwrap_or(interval);
        e.checks += 1;
        e.last = Some(outcome.clone());
        let held_until = e.held(now).map(|h| h.until);
        if held_until.is_none() {
            e.hold = None;
        }
        let initial = e.initial;
        let p = &mut e.probes[index];
        let mut change = None;
        if outcome.ok {
            // During a hold successes do not count at all.
            if held_until.is_none() {
                p.successes = p.successes.saturating_add(1);
                p.failures = 0;
                if !p.up && (initial || p.successes >= rise) {
                    p.up = true;
                    let reason = if initial {
                        format!("{} (first check)", outcome.text)
                    } else {
                        format!("{} ({}/{rise})", outcome.text, p.successes)
                    };
                    change = Some((true, reason));
                }
            }
        } else {
            p.failures = p.failures.saturating_add(1);
            p.successes = 0;
            if p.up && p.failures >= fall {
                p.up = false;
                change = Some((false, format!("{} ({}/{fall})", outcome.text, p.failures)));
            }
        }
        let wait = match held_until {
            // Check again as the hold ends, not a whole down_interval later.
            Some(until) => jitter(down).min(until - now + Duration::from_millis(1)),
            None if p.up == outcome.ok && p.up => jitter(interval),
            None if p.up == outcome.ok => jitter(down),
            None => jitter(fast),
        };
        p.last = Some((outcome, now));
        if let Some((up, reason)) = change {
            let all_up = e.probes.iter().all(|p| p.up);
            // The real follows its probes: down when one falls, up when the
            // last one rises.
            if up != e.up && (!up || all_up) {
                e.up = up;
                e.since = now;
                if up {
                    e.initial = false;
                }
                let t = e.transition(up, reason);
                self.emit(t);
            }
        }
        Some(wait)
    }

    /// The hold of a target without probes is over: it comes back up.
    fn hold_over(&mut self, id: u32, generation: u64) {
        let now = Instant::now();
        let Some(e) = self
            .entries
            .get_mut(&id)
            .filter(|e| e.generation == generation && e.target.probes.is_empty())
        else {
            return;
        };
        let Some(hold) = e.hold.take_if(|h| h.until <= now) else {
            return;
        };
        if !e.up {
            e.up = true;
            e.since = now;
            let reason = format!(
                "hold of {} over (no probes)",
                format_duration(hold.until.duration_since(hold.from))
            );
            let t = e.transition(true, reason);
            self.emit(t);
        }
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    ok: bool,
    /// `http 200`, `tcp connect refused`, `http timeout 1s`.
    text: String,
    /// Set when the real answered.
    latency: Option<Duration>,
}

impl Outcome {
    /// `http 200 in 1.2ms`; `tcp connect refused`.
    fn describe(&self) -> String {
        match self.latency {
            Some(l) => format!("{} in {:.1}ms", self.text, l.as_secs_f64() * 1000.0),
            None => self.text.clone(),
        }
    }
}

/// One (target, probe) task.
struct ProbeRun {
    shared: Arc<Mutex<Shared>>,
    id: u32,
    generation: u64,
    index: usize,
    addr: IpAddr,
    port: u16,
    probe: Probe,
}

impl ProbeRun {
    /// Runs until aborted or stale.
    async fn run(self) {
        tokio::time::sleep(self.probe.interval.mul_f64(random_unit())).await;
        loop {
            let outcome = check::run(self.addr, self.port, &self.probe).await;
            let wait = lock(&self.shared).record(self.id, self.generation, self.index, outcome);
            let Some(wait) = wait else {
                return;
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// `d` ±10%.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.9 + 0.2 * random_unit())
}

/// xorshift64 state; 0 until first used.
static RNG: AtomicU64 = AtomicU64::new(0);

/// A number in [0, 1) from a process-wide xorshift64, seeded from the clock
/// and the pid. Spreads probes; not for anything secret.
fn random_unit() -> f64 {
    let mut current = RNG.load(Ordering::Relaxed);
    loop {
        let mut x = if current == 0 { seed() } else { current };
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match RNG.compare_exchange_weak(current, x, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return (x >> 11) as f64 / (1u64 << 53) as f64,
            Err(seen) => current = seen,
        }
    }
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // splitmix64's finalizer, so close seeds give unrelated sequences.
    let mut z = nanos ^ (u64::from(std::process::id()) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}
