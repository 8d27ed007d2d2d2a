//! One node of the pair at run time: the sync socket, the election, the
//! event stream both ways, the floating IPs and their announcements
//! (gratuitous ARP, unsolicited neighbour advertisements). The agent's
//! loop owns it and calls it with what happened (a datagram, a tick, records
//! from the datapath, a liveness verdict, an operator command); everything
//! here runs on that one thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::api::{
    FloatingIp, HaMessages, HaPeer, HaStatus, HaSync, LastBulk, Rejected, Transitions,
};
use anyhow::{Context, Result, anyhow};
use lb_common::SyncEvent;
use log::{debug, info, warn};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::election::{Action, Election, ElectionConfig, PeerInfo};
use super::mirror::{self, Applied, Applier, Index};
use super::stream::{Inbox, Outbox};
use super::wire::{self, FlowEvent, Key, Message, Receiver, Sender};
use super::{Role, floating, liveness};
use crate::config::Ha;
use crate::control::Programmed;
use crate::datapath::{KernelMaps, now_ns};
use crate::flowtable::Joined;

/// When the floating IPs are announced (gratuitous ARP, unsolicited
/// neighbour advertisement) after taking the role: a burst, then again a
/// few seconds later for hosts that missed it (a port that was still
/// coming up, a switch that was reconverging).
const GARP_SCHEDULE: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_secs(2),
    Duration::from_secs(5),
];
/// Most events kept for resending beyond the flow table's size.
const OUTBOX_SLACK: usize = 64 * 1024;

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    became_active: u64,
    became_standby: u64,
    garps: u64,
    floating_errors: u64,
    send_errors: u64,
    bulk_requests_sent: u64,
    bulk_copies_sent: u64,
    refreshed: u64,
    /// IPv6 flow events not streamed because the peer speaks wire version 1.
    ipv6_held_back: u64,
}

/// What the agent's loop receives for this node.
pub struct Inputs {
    pub datagrams: super::socket::Datagrams,
    /// Whether another box answers on the floating IPs (see `liveness`).
    pub liveness: mpsc::Receiver<bool>,
}

pub struct Node {
    cfg: Ha,
    sock: Arc<UdpSocket>,
    tx: Sender,
    rx: Receiver,
    election: Election,
    outbox: Outbox,
    inbox: Inbox,
    applier: Applier,
    index: Index,
    counters: Counters,
    garp_at: Vec<Instant>,
    flows: u64,
    /// The last sweep's time, for the refresh window.
    last_refresh_ns: Option<u64>,
    last_bulk: Option<LastBulk>,
    bulk_requested_at: Option<Instant>,
    /// The peer asked for a bulk copy (`take_bulk_request`).
    bulk_wanted: bool,
    /// IPv6 flows were held back since the peer last changed version: said
    /// once in the log, then only counted.
    held_back_logged: bool,
}

impl Node {
    /// Binds the sync socket and starts the receiving and liveness tasks.
    /// `resume`: this agent adopted a datapath that kept forwarding while it
    /// held the floating IPs (a restart of the active node's agent).
    pub fn start(
        cfg: &Ha,
        programmed: &Programmed,
        flow_table_size: u32,
        resume: bool,
    ) -> Result<(Node, Inputs)> {
        let key = Key::from_file(&cfg.key_file)?;
        let (sock, datagrams) = super::socket::bind(cfg.listen, "the HA sync socket")?;
        let (ltx, liveness) = mpsc::channel(16);
        // The second opinion on a silent peer (see `election`): does anyone
        // answer on the floating IPs? Only the box serving them does. The
        // pinger speaks ICMP (IPv4) only: IPv6 floating IPs are not asked,
        // and a pair with none of IPv4 has no second opinion (README).
        let targets: Vec<_> = cfg
            .floating_ips
            .iter()
            .filter_map(|f| match f.address.addr {
                std::net::IpAddr::V4(a) => Some(a),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        if !targets.is_empty() {
            let mut pinger = liveness::Pinger::new(targets)
                .context("opening the ICMP socket that checks the floating IPs")?;
            let every = cfg.heartbeat;
            tokio::spawn(async move {
                loop {
                    let started = tokio::time::Instant::now();
                    let alive = pinger.probe(every).await;
                    // A probe that ran far past its time was starved (the
                    // agent's loop was blocked): the answer may have come
                    // and gone unread, so its "no answer" says nothing.
                    let starved = started.elapsed() > every * 2;
                    if (alive || !starved) && ltx.send(alive).await.is_err() {
                        return;
                    }
                    tokio::time::sleep_until(started + every).await;
                }
            });
        }
        let now = Instant::now();
        let ecfg = ElectionConfig::from_ha(cfg);
        let election = if resume {
            info!("ha: resuming the active role of the previous agent");
            Election::resume_active(ecfg, now)
        } else {
            Election::new(ecfg, now)
        };
        let node = Node {
            cfg: cfg.clone(),
            sock,
            tx: Sender::new(key.clone(), cfg.node_id, wire::boot_id(SystemTime::now())),
            rx: Receiver::new(key, cfg.node_id),
            election,
            outbox: Outbox::new(
                flow_table_size as usize + OUTBOX_SLACK,
                // Resend after a few heartbeats without progress: a lost
                // datagram costs that much delay, a slow peer no storm.
                (cfg.heartbeat * 2).max(Duration::from_millis(50)),
            ),
            inbox: Inbox::default(),
            applier: Applier::default(),
            index: Index::new(programmed),
            counters: Counters::default(),
            garp_at: Vec::new(),
            flows: 0,
            last_refresh_ns: None,
            last_bulk: None,
            bulk_requested_at: None,
            bulk_wanted: false,
            held_back_logged: false,
        };
        if !resume {
            // Whatever a crashed run left behind: hold nothing until elected.
            node.release_floating();
        }
        Ok((
            node,
            Inputs {
                datagrams,
                liveness,
            },
        ))
    }

    /// Whether a restarted agent should resume the active role: it adopted
    /// a datapath, and every floating IP is still on its interface.
    pub fn holds_floating(cfg: &Ha) -> bool {
        !cfg.floating_ips.is_empty()
            && cfg
                .floating_ips
                .iter()
                .all(|ip| floating::present(ip).unwrap_or(false))
    }

    pub fn role(&self) -> Role {
        self.election.role()
    }

    /// After a reload: VIPs and reals may have new ids.
    pub fn set_programmed(&mut self, p: &Programmed) {
        self.index = Index::new(p);
    }

    /// The flow count heartbeats advertise (from the last sweep).
    pub fn set_flows(&mut self, flows: u64) {
        self.flows = flows;
    }

    pub fn on_tick(&mut self) {
        let now = Instant::now();
        let actions = self.election.on_tick(now);
        self.perform(actions);
        if self.role() != Role::Active && self.inbox.stuck() {
            warn!("ha: events from the peer were lost beyond resending; asking for a new copy");
            self.inbox.reset();
            let actions = self.election.on_sync_lost(now);
            self.perform(actions);
        }
        self.flush(now);
        self.garps_due(now);
    }

    pub fn on_liveness(&mut self, alive: bool) {
        if self.role() == Role::Active {
            // It holds the floating IPs: the answer was its own.
            return;
        }
        let actions = self.election.on_peer_liveness(alive, Instant::now());
        self.perform(actions);
    }

    pub fn on_datagram(&mut self, d: &[u8], maps: &mut KernelMaps) {
        let now = Instant::now();
        let r = match self.rx.open(d) {
            Ok(r) => r,
            Err(why) => {
                debug!("ha: dropped a datagram: {}", why.as_str());
                return;
            }
        };
        self.peer_speaks(r.header.version);
        if r.new_boot {
            // The peer (re)started: its event numbers start over, and what
            // it held before is gone, so a standby needs a fresh copy.
            info!(
                "ha: peer node {} started (boot {})",
                r.header.node_id, r.header.boot_id
            );
            self.inbox.reset();
            self.applier.abandon_bulk();
            let actions = self.election.on_sync_lost(now);
            self.perform(actions);
        }
        match r.message {
            Message::Heartbeat(hb) => {
                if hb.role == Role::Active && self.role() != Role::Active {
                    self.inbox.on_heartbeat(hb.next_seq);
                }
                let peer = PeerInfo::from_heartbeat(r.header.node_id, &hb);
                let actions = self.election.on_heartbeat(peer, now);
                self.perform(actions);
            }
            Message::FlowBatch(batch) => {
                if self.role() == Role::Active {
                    // Two actives for a moment (a partition healing): ours
                    // is the table in force until the election settles it.
                    return;
                }
                let acc = self.inbox.on_batch(batch);
                if self.applier.in_bulk() && !acc.events.is_empty() {
                    self.election.on_bulk_progress(now);
                }
                let now_ns = now_ns();
                for ev in &acc.events {
                    match self.applier.apply(maps, &self.index, ev, now_ns) {
                        Ok(Applied::Flow) => {}
                        Ok(Applied::BulkComplete {
                            total,
                            stale_removed,
                        }) => self.bulk_complete(total, stale_removed),
                        Err(e) => {
                            self.applier.counters.errors += 1;
                            warn!("ha: applying a synced flow: {e:#}");
                        }
                    }
                }
                if let Err(e) = self.applier.flush(maps) {
                    self.applier.counters.errors += 1;
                    warn!("ha: writing synced flows: {e:#}");
                }
                if let Some(up_to) = acc.ack {
                    self.send(&Message::Ack { up_to_seq: up_to });
                }
            }
            Message::Ack { up_to_seq } => {
                self.outbox.ack(up_to_seq, now);
                self.flush(now);
            }
            // Read off the agent's loop (agent/bulk.rs): see `bulk_wanted`.
            Message::BulkRequest => self.bulk_wanted = true,
        }
    }

    fn bulk_complete(&mut self, total: u64, stale_removed: u64) {
        let took = self.bulk_requested_at.take().map(|at| at.elapsed());
        info!(
            "ha: bulk copy complete: {total} flows, {stale_removed} stale removed{}",
            took.map(|t| format!(", {:.0}ms after the request", t.as_secs_f64() * 1e3))
                .unwrap_or_default()
        );
        self.last_bulk = Some(LastBulk {
            flows: total,
            stale_removed,
            took_ms: took.map(|t| t.as_secs_f64() * 1e3),
        });
        let actions = self.election.on_bulk_done(Instant::now());
        self.perform(actions);
    }

    /// Whether the peer asked for a bulk copy since the last call. The
    /// agent reads the table off its loop (seconds for millions of flows),
    /// calling `bulk_reading` when it starts and `send_bulk` with what it
    /// read. Served in any role: when neither node is active yet, each
    /// needs the other's (maybe empty) copy to count as synced.
    pub fn take_bulk_request(&mut self) -> bool {
        std::mem::take(&mut self.bulk_wanted)
    }

    /// The table is being read for a copy: events from now on follow it.
    pub fn bulk_reading(&mut self) {
        self.outbox.begin_bulk();
    }

    /// A copy of the whole table, as the stream's next events.
    pub fn send_bulk(&mut self, table: Result<Vec<FlowEvent>>) {
        let now = Instant::now();
        match table {
            Ok(table) => {
                let table: Vec<_> = table.into_iter().filter(|ev| self.carried(ev)).collect();
                info!("ha: sending a bulk copy of {} flows", table.len());
                self.outbox.restart_with_bulk(table, now);
                self.counters.bulk_copies_sent += 1;
            }
            Err(e) => {
                warn!("ha: reading the flow table for a bulk copy: {e:#}");
                self.outbox.abandon_bulk(now);
            }
        }
        self.flush(now);
    }

    /// Records the datapath wrote to `SYNC`. Streamed by the active node to
    /// a peer it has heard (one that never answered gets a bulk copy when
    /// it does).
    pub fn on_records(&mut self, recs: &[SyncEvent]) {
        if self.role() != Role::Active || self.election.peer().is_none() {
            return;
        }
        let now = Instant::now();
        for rec in recs {
            if let Some(ev) = mirror::from_record(rec, &self.index) {
                self.stream(ev, now);
            }
        }
        self.flush(now);
    }

    /// The refresh window of this sweep, if this node streams: flows with
    /// traffic within it are sent again with their ages, so the standby's
    /// copy of a long-lived flow does not time out (see `on_swept`).
    pub fn refresh_window(&mut self, now_ns: u64) -> Option<u64> {
        if self.role() != Role::Active || self.election.peer().is_none() {
            self.last_refresh_ns = None;
            return None;
        }
        let since = self.last_refresh_ns.replace(now_ns)?;
        Some(now_ns.saturating_sub(since))
    }

    /// What the sweep saw, for a window from `refresh_window`: a removed
    /// flow is a `Remove`; a live one active within the window and older
    /// than it (so not just sent as a create) is a refresh.
    pub fn on_swept(&mut self, f: &Joined, removed: bool, window: u64, now_ns: u64) {
        let now = Instant::now();
        if removed {
            if let Some(key) = mirror::tuple_of(&f.fwd_key) {
                self.stream(FlowEvent::Remove { key }, now);
            }
        } else if refresh_due(f, window, now_ns)
            && let Some(ev) = mirror::upsert_of(f, now_ns)
            && self.stream(ev, now)
        {
            self.counters.refreshed += 1;
        }
    }

    /// Queues `ev` for the peer if its wire version carries it; whether it
    /// did. The one way events enter the stream, so none reaches the
    /// sender that the peer could not read (see `wire::Sender::seal_events`).
    fn stream(&mut self, ev: FlowEvent, now: Instant) -> bool {
        let carried = self.carried(&ev);
        if carried {
            self.outbox.push(ev, now);
        }
        carried
    }

    /// Whether the peer's wire version carries `ev`; if not, counts it held
    /// back, and says so in the log the first time.
    fn carried(&mut self, ev: &FlowEvent) -> bool {
        if self.tx.carries(ev) {
            return true;
        }
        self.counters.ipv6_held_back += 1;
        if !std::mem::replace(&mut self.held_back_logged, true) {
            warn!(
                "ha: the peer speaks sync wire version {}, which carries IPv4 flows only: IPv6 flows are not synced until it runs a build with version {} (counted in sync.ipv6_held_back)",
                self.tx.version(),
                wire::VERSION
            );
        }
        false
    }

    /// An authentic datagram of the peer came in `version`: seal with it
    /// from now on (wire.rs, Versions). A version changes only with a
    /// restart of the peer, which resyncs by a bulk copy; what was queued
    /// for the other version is dropped, as it may not fit this one.
    fn peer_speaks(&mut self, version: u8) {
        if version == self.tx.version() {
            return;
        }
        info!(
            "ha: the peer speaks sync wire version {version} (this build: {}); sending in version {version}",
            wire::VERSION
        );
        self.tx.set_version(version);
        self.outbox.clear();
        self.held_back_logged = false;
    }

    /// Sends what the stream has to send now.
    pub fn flush(&mut self, now: Instant) {
        for d in self.outbox.poll(&mut self.tx, now) {
            self.send_raw(&d);
        }
    }

    pub fn takeover(&mut self) -> Result<String> {
        let actions = self
            .election
            .takeover(Instant::now())
            .map_err(|e| anyhow!("{e}"))?;
        self.perform(actions);
        info!("ha: takeover by operator");
        Ok(format!("node {} is active", self.cfg.node_id))
    }

    pub fn release(&mut self) -> Result<String> {
        let actions = self
            .election
            .release(Instant::now())
            .map_err(|e| anyhow!("{e}"))?;
        self.perform(actions);
        info!("ha: released the active role");
        Ok(format!(
            "node {} released the active role to its peer",
            self.cfg.node_id
        ))
    }

    /// The agent stops. With the datapath staying (`keep_datapath`, a
    /// restart) nothing changes: the next agent resumes. Otherwise forwarding
    /// ends here, so hand the role to a synced peer first, or at least stop
    /// answering for the floating IPs.
    pub fn stop(&mut self, keep_datapath: bool) {
        if keep_datapath {
            return;
        }
        if self.role() == Role::Active {
            match self.election.release(Instant::now()) {
                Ok(actions) => self.perform(actions),
                Err(e) => {
                    warn!("ha: stopping while active without a peer to hand over to: {e}");
                }
            }
        }
        self.release_floating();
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::BecomeActive => {
                    info!("ha: becoming active (term {})", self.election.term());
                    self.counters.became_active += 1;
                    self.inbox.reset();
                    self.applier.abandon_bulk();
                    self.hold_floating();
                    let now = Instant::now();
                    self.garp_at = GARP_SCHEDULE.iter().map(|d| now + *d).collect();
                    self.garps_due(now);
                }
                Action::BecomeStandby => {
                    info!("ha: standby (term {})", self.election.term());
                    self.counters.became_standby += 1;
                    self.garp_at.clear();
                    self.outbox.clear();
                    self.last_refresh_ns = None;
                    self.release_floating();
                }
                Action::RequestBulk => {
                    debug!("ha: asking the peer for a bulk copy");
                    self.inbox.reset();
                    self.applier.abandon_bulk();
                    self.counters.bulk_requests_sent += 1;
                    self.bulk_requested_at.get_or_insert_with(Instant::now);
                    self.send(&Message::BulkRequest);
                }
                Action::SendHeartbeat => {
                    let mut hb = self.election.heartbeat(self.flows);
                    if self.role() == Role::Active {
                        hb.next_seq = self.outbox.next_seq();
                    }
                    self.send(&Message::Heartbeat(hb));
                }
            }
        }
    }

    fn hold_floating(&mut self) {
        for ip in &self.cfg.floating_ips {
            if let Err(e) = floating::add(ip) {
                self.counters.floating_errors += 1;
                warn!(
                    "ha: adding floating ip {} on {}: {e:#}",
                    ip.address, ip.interface
                );
            }
        }
    }

    fn release_floating(&self) {
        for ip in &self.cfg.floating_ips {
            if let Err(e) = floating::remove(ip) {
                warn!(
                    "ha: removing floating ip {} from {}: {e:#}",
                    ip.address, ip.interface
                );
            }
        }
    }

    fn garps_due(&mut self, now: Instant) {
        let before = self.garp_at.len();
        self.garp_at.retain(|at| *at > now);
        if self.garp_at.len() == before || self.role() != Role::Active {
            return;
        }
        for ip in &self.cfg.floating_ips {
            match floating::announce(ip) {
                Ok(()) => self.counters.garps += 1,
                Err(e) => warn!("ha: {e:#}"),
            }
        }
    }

    fn send(&mut self, msg: &Message) {
        match self.tx.seal(msg) {
            Ok(d) => self.send_raw(&d),
            Err(e) => warn!("ha: {e}"),
        }
    }

    fn send_raw(&mut self, d: &[u8]) {
        // Never waits: a full socket buffer loses the datagram, which the
        // stream resends and the next heartbeat replaces.
        if let Err(e) = self.sock.try_send_to(d, self.cfg.peer) {
            self.counters.send_errors += 1;
            debug!("ha: sending to {}: {e}", self.cfg.peer);
        }
    }

    /// `lb ha status`, and the `ha` part of `lb status`.
    pub fn status(&self) -> HaStatus {
        let now = Instant::now();
        let st = self.election.status(now);
        let rx = self.rx.counters();
        let out = &self.outbox.counters;
        let inc = &self.inbox.counters;
        let ap = &self.applier.counters;
        HaStatus {
            role: st.role.into(),
            node_id: self.cfg.node_id,
            priority: self.cfg.priority,
            preempt: self.cfg.preempt,
            term: st.term,
            bulk_synced: st.bulk_synced,
            yielding: st.yielding,
            listen: self.cfg.listen,
            boot_id: self.tx.boot_id(),
            peer: HaPeer {
                address: self.cfg.peer,
                node_id: st.peer.map(|p| p.node_id),
                role: st.peer.map(|p| p.role.into()),
                priority: st.peer.map(|p| p.priority),
                term: st.peer.map(|p| p.term),
                bulk_synced: st.peer.map(|p| p.bulk_synced),
                alive: st.peer_alive,
                last_heard_ms: st.peer_last_heard.map(|d| d.as_secs_f64() * 1e3),
                liveness: st.peer_liveness,
                boot_id: st.peer.and_then(|p| self.rx.peer_boot(p.node_id)),
            },
            floating_ips: self
                .cfg
                .floating_ips
                .iter()
                .map(|ip| FloatingIp {
                    address: ip.address.to_string(),
                    interface: ip.interface.clone(),
                    held: floating::present(ip).ok(),
                })
                .collect(),
            sync: HaSync {
                unacked: self.outbox.unacked() as u64,
                stalled_ms: self.outbox.stalled_for(now).as_secs_f64() * 1e3,
                events_queued: out.queued,
                events_acked: out.acked,
                datagrams_sent: out.datagrams,
                resends: out.resends,
                overflows: out.overflows,
                refreshed: self.counters.refreshed,
                wire_version: self.tx.version(),
                ipv6_held_back: self.counters.ipv6_held_back,
                bulk_copies_sent: self.counters.bulk_copies_sent,
                bulk_requests_sent: self.counters.bulk_requests_sent,
                events_received: inc.accepted,
                duplicates: inc.duplicates,
                out_of_order: inc.out_of_order,
                unplaced: inc.unplaced,
                applied_upserts: ap.upserts,
                applied_removes: ap.removes,
                unmatched: ap.unmatched,
                apply_errors: ap.errors,
                bulk_copies_received: ap.bulk_copies,
                stale_removed: ap.stale_removed,
                last_bulk: self.last_bulk,
                send_errors: self.counters.send_errors,
            },
            messages: HaMessages {
                accepted: rx.accepted,
                rejected: Rejected {
                    bad_mac: rx.bad_mac,
                    replay: rx.replay,
                    stale: rx.stale,
                    malformed: rx.malformed,
                    wrong_version: rx.wrong_version,
                    from_self: rx.from_self,
                },
                peer_restarts: rx.peer_restarts,
            },
            transitions: Transitions {
                to_active: self.counters.became_active,
                to_standby: self.counters.became_standby,
            },
            garps_sent: self.counters.garps,
            floating_errors: self.counters.floating_errors,
        }
    }

    /// The peer address, for logs.
    pub fn peer(&self) -> SocketAddr {
        self.cfg.peer
    }
}

/// Whether the sweep's live flow `f` is refreshed to the peer for a window
/// from `Node::refresh_window`: active within the window and older than it
/// (so not just sent as a create).
pub fn refresh_due(f: &Joined, window: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(f.last_ns()) < window && now_ns.saturating_sub(f.fwd.created_ns) >= window
}
