//! Who holds the active role: a pure state machine. The agent feeds it
//! heartbeats, ticks, bulk-sync completion, a second liveness signal and
//! operator commands, with the current `Instant`; it answers with the
//! [`Action`]s to perform. It never sleeps and owns no clock.
//!
//! The rules (sync gate, preemption, terms, release), how a dead peer is told
//! from a cut sync link, and our own stalls: docs/architecture.md, "The HA
//! election".

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use super::Role;
use super::wire::Heartbeat;
use crate::config::Ha;

/// How long a bulk copy may take before it is requested again. Generous: a
/// million flows is ~27k datagrams, and a repeated request restarts the copy.
pub const DEFAULT_BULK_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    pub node_id: u8,
    pub priority: u8,
    pub heartbeat: Duration,
    /// Heartbeats missing this long mean the peer is gone.
    pub dead_interval: Duration,
    pub preempt: bool,
    /// How long one "peer alive" report holds back a promotion.
    pub liveness_ttl: Duration,
    pub bulk_retry: Duration,
}

impl ElectionConfig {
    pub fn from_ha(ha: &Ha) -> ElectionConfig {
        let dead_interval = ha.dead_interval.unwrap_or(ha.heartbeat * 3);
        ElectionConfig {
            node_id: ha.node_id,
            priority: ha.priority,
            heartbeat: ha.heartbeat,
            dead_interval,
            preempt: ha.preempt,
            liveness_ttl: dead_interval,
            bulk_retry: DEFAULT_BULK_RETRY,
        }
    }
}

/// What the peer's latest heartbeat said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    pub node_id: u8,
    pub priority: u8,
    pub role: Role,
    pub term: u64,
    pub bulk_synced: bool,
    pub yielding: bool,
}

impl PeerInfo {
    /// From an accepted heartbeat; the node id comes from its datagram header.
    pub fn from_heartbeat(node_id: u8, hb: &Heartbeat) -> PeerInfo {
        PeerInfo {
            node_id,
            priority: hb.priority,
            role: hb.role,
            term: hb.term,
            bulk_synced: hb.bulk_synced,
            yielding: hb.yielding,
        }
    }

    fn rank(&self) -> (u8, u8) {
        (self.priority, self.node_id)
    }

    /// Could take the active role next to a live partner.
    fn candidate(&self) -> bool {
        self.bulk_synced && !self.yielding
    }
}

/// What the agent must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Install the floating IPs and send gratuitous ARPs.
    BecomeActive,
    /// Remove the floating IPs (also on the first decision after start, to
    /// clear any a crashed run left behind).
    BecomeStandby,
    /// Ask the peer for a full copy of its flow table.
    RequestBulk,
    /// Send [`Election::heartbeat`] now.
    SendHeartbeat,
}

/// Why `lb ha takeover` or `lb ha release` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this node is already active")]
    AlreadyActive,
    #[error("this node is not active; run `lb ha takeover` on the peer instead")]
    NotActive,
    #[error(
        "the bulk sync from the peer is not complete; taking over now would reset the peer's clients; wait for `lb ha status` to show synced"
    )]
    NotSynced,
    #[error("the peer is not heard on the sync link; releasing would leave no active node")]
    PeerNotAlive,
    #[error(
        "the peer has not completed its bulk sync; releasing now would reset clients; wait for it to show synced"
    )]
    PeerNotSynced,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    info: PeerInfo,
    last_heard: Instant,
    /// Silence past the dead interval has been noticed since the last
    /// heartbeat.
    lost: bool,
}

/// A snapshot for `lb ha status` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub role: Role,
    pub term: u64,
    pub bulk_synced: bool,
    pub yielding: bool,
    pub peer: Option<PeerInfo>,
    pub peer_alive: bool,
    pub peer_last_heard: Option<Duration>,
    /// The latest liveness report, if one is still in force.
    pub peer_liveness: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Election {
    cfg: ElectionConfig,
    role: Role,
    /// For the active node, the term it took the role in; otherwise the
    /// highest term seen.
    term: u64,
    /// This node's table is complete: a bulk copy from the peer finished and
    /// no event has been missed since (or this node is, or just was, the
    /// source of truth as the active).
    bulk_synced: bool,
    yielding: bool,
    started: Instant,
    peer: Option<Peer>,
    liveness: Option<(bool, Instant)>,
    bulk_requested: Option<Instant>,
    last_heartbeat: Option<Instant>,
    /// Since when neither node of a live pair has been active.
    leaderless_since: Option<Instant>,
    /// When this machine last ran (any input), to tell our own stalls from
    /// the peer's silence (see `forgive_stall`).
    last_step: Option<Instant>,
}

impl Election {
    pub fn new(cfg: ElectionConfig, now: Instant) -> Election {
        Election {
            cfg,
            role: Role::Init,
            term: 0,
            bulk_synced: false,
            yielding: false,
            started: now,
            peer: None,
            liveness: None,
            bulk_requested: None,
            last_heartbeat: None,
            leaderless_since: None,
            last_step: None,
        }
    }

    /// An agent restarted on the active node, adopting a datapath that kept
    /// forwarding and the floating IPs it still holds: it resumes the role
    /// at once, so the pair keeps one active node. Its term is unknown (1):
    /// if the peer took over meanwhile, the peer's higher term wins the
    /// first heartbeat exchange and this node steps down.
    pub fn resume_active(cfg: ElectionConfig, now: Instant) -> Election {
        let mut e = Election::new(cfg, now);
        e.role = Role::Active;
        e.term = 1;
        e.bulk_synced = true;
        e
    }

    /// This node's copy of the peer's table is incomplete again (the peer
    /// restarted, or events were lost beyond repair): a standby asks for a
    /// new bulk copy at once. The active node's table is the truth; nothing
    /// changes there.
    pub fn on_sync_lost(&mut self, now: Instant) -> Vec<Action> {
        if self.role != Role::Active {
            self.bulk_synced = false;
            self.bulk_requested = None;
        }
        self.step(now, false)
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn bulk_synced(&self) -> bool {
        self.bulk_synced
    }

    pub fn peer(&self) -> Option<PeerInfo> {
        self.peer.map(|p| p.info)
    }

    /// A heartbeat arrived within the dead interval.
    pub fn peer_alive(&self, now: Instant) -> bool {
        self.peer
            .is_some_and(|p| now.saturating_duration_since(p.last_heard) < self.cfg.dead_interval)
    }

    pub fn status(&self, now: Instant) -> Status {
        Status {
            role: self.role,
            term: self.term,
            bulk_synced: self.bulk_synced,
            yielding: self.yielding,
            peer: self.peer(),
            peer_alive: self.peer_alive(now),
            peer_last_heard: self
                .peer
                .map(|p| now.saturating_duration_since(p.last_heard)),
            peer_liveness: self
                .liveness
                .filter(|&(_, at)| now.saturating_duration_since(at) < self.cfg.liveness_ttl)
                .map(|(alive, _)| alive),
        }
    }

    /// The heartbeat to send for [`Action::SendHeartbeat`] (the agent fills
    /// in `next_seq` from its stream).
    pub fn heartbeat(&self, flows: u64) -> Heartbeat {
        Heartbeat {
            priority: self.cfg.priority,
            role: self.role,
            term: self.term,
            bulk_synced: self.bulk_synced,
            yielding: self.yielding,
            flows,
            next_seq: 0,
        }
    }

    /// An authenticated heartbeat from the peer.
    pub fn on_heartbeat(&mut self, peer: PeerInfo, now: Instant) -> Vec<Action> {
        self.forgive_stall(now);
        self.notice_loss(now);
        self.peer = Some(Peer {
            info: peer,
            last_heard: now,
            lost: false,
        });
        self.step(now, false)
    }

    /// Call at least every heartbeat interval.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        self.step(now, false)
    }

    /// Part of the requested bulk copy arrived: a copy that is moving is not
    /// requested again (a large table takes longer than `bulk_retry`, and a
    /// new request would restart it).
    pub fn on_bulk_progress(&mut self, now: Instant) {
        if self.bulk_requested.is_some() {
            self.bulk_requested = Some(now);
        }
    }

    /// The bulk copy requested from the peer has fully arrived.
    pub fn on_bulk_done(&mut self, now: Instant) -> Vec<Action> {
        self.bulk_synced = true;
        self.bulk_requested = None;
        self.step(now, true)
    }

    /// The second path's verdict on the peer (see the module docs). Report
    /// at least every `liveness_ttl`.
    pub fn on_peer_liveness(&mut self, alive: bool, now: Instant) -> Vec<Action> {
        self.liveness = Some((alive, now));
        self.step(now, false)
    }

    /// `lb ha takeover`. Without a live peer there is nothing to sync from,
    /// so it is allowed unsynced: that is the operator's way out when the
    /// liveness veto keeps a standby down next to a hung peer.
    pub fn takeover(&mut self, now: Instant) -> Result<Vec<Action>, Refused> {
        if self.role == Role::Active {
            return Err(Refused::AlreadyActive);
        }
        if self.peer_alive(now) && !self.bulk_synced {
            return Err(Refused::NotSynced);
        }
        let mut actions = Vec::new();
        self.become_active(&mut actions);
        self.finish(now, &mut actions);
        Ok(actions)
    }

    /// `lb ha release`: hand the active role to the peer.
    pub fn release(&mut self, now: Instant) -> Result<Vec<Action>, Refused> {
        if self.role != Role::Active {
            return Err(Refused::NotActive);
        }
        if !self.peer_alive(now) {
            return Err(Refused::PeerNotAlive);
        }
        if self.peer.is_some_and(|p| !p.info.bulk_synced) {
            return Err(Refused::PeerNotSynced);
        }
        let mut actions = Vec::new();
        // Our table was the source of truth up to now: still complete.
        self.become_standby(true, &mut actions);
        self.yielding = true;
        self.finish(now, &mut actions);
        Ok(actions)
    }

    fn step(&mut self, now: Instant, bulk_just_done: bool) -> Vec<Action> {
        let mut actions = Vec::new();
        self.forgive_stall(now);
        self.notice_loss(now);
        match self.peer.filter(|_| self.peer_alive(now)) {
            None => self.alone(now, &mut actions),
            Some(p) => self.with_peer(p.info, now, bulk_just_done, &mut actions),
        }
        self.finish(now, &mut actions);
        actions
    }

    /// A gap between two of our own inputs longer than a heartbeat means this
    /// node was not running: a long sweep, bulk copy or table write blocks
    /// the agent's loop, and the agent ticks every half heartbeat otherwise.
    /// What the peer sent meanwhile is still queued, unread, so that time is
    /// not the peer's silence: every clock of silence moves on by the stall.
    /// Without this, a node coming out of a stall would promote itself (or
    /// drop its copy) before reading the heartbeats waiting for it.
    fn forgive_stall(&mut self, now: Instant) {
        let Some(last) = self.last_step.replace(now) else {
            return;
        };
        let gap = now.saturating_duration_since(last);
        if gap <= self.cfg.heartbeat {
            return;
        }
        let credit = gap - self.cfg.heartbeat;
        let shift = |at: Instant| (at + credit).min(now);
        if let Some(p) = self.peer.as_mut() {
            p.last_heard = shift(p.last_heard);
        }
        if let Some((alive, at)) = self.liveness {
            self.liveness = Some((alive, shift(at)));
        }
        if let Some(since) = self.leaderless_since {
            self.leaderless_since = Some(shift(since));
        }
        self.started = shift(self.started);
    }

    /// Marks the peer lost once its silence passes the dead interval. The
    /// copy stays complete: the stream resends what the active node sent
    /// meanwhile, and if it had to drop events the standby sees the gap
    /// (`stream::Inbox::stuck`) and the agent calls `on_sync_lost`. A bulk
    /// copy in progress stays requested: an active node busy reading a big
    /// table for it goes quiet for a while, and asking again would restart
    /// the copy (`bulk_retry` repeats a request that is truly lost).
    fn notice_loss(&mut self, now: Instant) {
        let alive = self.peer_alive(now);
        if let Some(p) = self.peer.as_mut()
            && !alive
            && !p.lost
        {
            p.lost = true;
        }
    }

    /// No peer heard within the dead interval.
    fn alone(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.leaderless_since = None;
        if self.role == Role::Active {
            return;
        }
        let quiet_since = self.peer.map_or(self.started, |p| p.last_heard);
        if now.saturating_duration_since(quiet_since) < self.cfg.dead_interval {
            return;
        }
        if self.peer_reported_alive(now) {
            // Sync link cut, peer still up: hold, and make sure a starting
            // node holds no floating IP either.
            if self.role == Role::Init {
                self.become_standby(false, actions);
            }
        } else {
            self.become_active(actions);
        }
    }

    fn with_peer(
        &mut self,
        p: PeerInfo,
        now: Instant,
        bulk_just_done: bool,
        actions: &mut Vec<Action>,
    ) {
        if p.role == Role::Active {
            self.yielding = false;
        }
        if self.role != Role::Active {
            self.term = self.term.max(p.term);
        }
        let outranks = (self.cfg.priority, self.cfg.node_id) > p.rank();
        match (self.role, p.role) {
            (Role::Active, Role::Active) => {
                let ours = (self.term, self.cfg.priority, self.cfg.node_id);
                if (p.term, p.priority, p.node_id) > ours {
                    self.term = p.term;
                    self.become_standby(false, actions);
                }
            }
            (Role::Active, _) => {}
            (_, Role::Active) => {
                if self.role == Role::Init {
                    self.become_standby(false, actions);
                }
                if bulk_just_done && self.cfg.preempt && !self.yielding && outranks {
                    self.become_active(actions);
                }
            }
            (_, _) => {
                if self.role == Role::Init {
                    self.become_standby(false, actions);
                }
                // Nobody active. The better-ranked node should take it once
                // synced; the other steps in only if the better one hands
                // over (yielding) or is still unsynced after a dead interval
                // without an active node, so which bulk copy happens to
                // finish first at a joint start decides nothing.
                let since = *self.leaderless_since.get_or_insert(now);
                let waited = now.saturating_duration_since(since) >= self.cfg.dead_interval;
                let candidate = self.bulk_synced && !self.yielding;
                if candidate && (outranks || p.yielding || (!p.candidate() && waited)) {
                    self.become_active(actions);
                }
            }
        }
        if p.role == Role::Active || self.role == Role::Active {
            self.leaderless_since = None;
        }
        let retry_due = self
            .bulk_requested
            .is_none_or(|at| now.saturating_duration_since(at) >= self.cfg.bulk_retry);
        if self.role != Role::Active && !self.bulk_synced && retry_due {
            self.bulk_requested = Some(now);
            actions.push(Action::RequestBulk);
        }
    }

    fn peer_reported_alive(&self, now: Instant) -> bool {
        matches!(self.liveness, Some((true, at))
            if now.saturating_duration_since(at) < self.cfg.liveness_ttl)
    }

    fn become_active(&mut self, actions: &mut Vec<Action>) {
        let peer_term = self.peer.map_or(0, |p| p.info.term);
        self.term = self.term.max(peer_term) + 1;
        self.role = Role::Active;
        self.bulk_synced = true;
        self.yielding = false;
        self.bulk_requested = None;
        actions.push(Action::BecomeActive);
    }

    fn become_standby(&mut self, synced: bool, actions: &mut Vec<Action>) {
        self.role = Role::Standby;
        self.bulk_synced = synced;
        actions.push(Action::BecomeStandby);
    }

    /// Heartbeat on every role change, so the peer learns at once, and
    /// otherwise every interval.
    fn finish(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let changed = actions
            .iter()
            .any(|a| matches!(a, Action::BecomeActive | Action::BecomeStandby));
        let due = self
            .last_heartbeat
            .is_none_or(|at| now.saturating_duration_since(at) >= self.cfg.heartbeat);
        if changed || due {
            self.last_heartbeat = Some(now);
            actions.push(Action::SendHeartbeat);
        }
    }
}
