//! A cluster node's flow sync: every node streams its datapath's new and
//! changed flows to every peer and writes theirs into its own table, so a
//! flow that ECMP moves to another node (a node died, joined or drained)
//! finds its entry there and continues on its real, whatever the farm's
//! real set became meanwhile.
//!
//! Built from the HA pair's parts, once per peer: the same authenticated
//! datagrams (`ha::wire`), an acknowledged, resent stream each way
//! (`ha::stream`) and the same writer into the table (`ha::mirror`, in its
//! additive mode). What differs from a pair:
//! - every node is active: all stream, all apply;
//! - removals are not streamed. Each node expires its copies by its own
//!   timeouts, so a flow one node stopped seeing (ECMP moved it away) is
//!   never removed from the node that now carries it;
//! - a node asks each peer for a copy of its table when it first hears it
//!   (or hears it restarted), and a copy adds to the table, removing
//!   nothing.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use lb_common::SyncEvent;
use log::{debug, info, warn};
use tokio::net::UdpSocket;

use crate::api::{PeerState, PeerStatus, SyncCounters};
use crate::config::Cluster;
use crate::control::Programmed;
use crate::datapath::{KernelMaps, now_ns};
use crate::flowtable::Joined;
use crate::ha::mirror::{self, Applied, Applier, Index};
use crate::ha::socket::{self, Datagrams};
use crate::ha::stream::{Inbox, Outbox};
use crate::ha::wire::{self, FlowEvent, Heartbeat, Key, Message, Receiver, Sender};
use crate::ha::{self, Role};

/// Most events kept for resending beyond the flow table's size.
const OUTBOX_SLACK: usize = 64 * 1024;
/// Heartbeats a peer may miss before it is shown down.
const DEAD_AFTER: u32 = 3;
/// How long a copy may take to start arriving (its first batch) before it
/// is asked for again; once it arrives, the stream's resends carry it.
const COPY_RETRY: Duration = Duration::from_secs(2);

/// One other node, by its configured address.
struct Peer {
    addr: SocketAddr,
    node_id: Option<u8>,
    last_heard: Option<Instant>,
    /// Flows in its table, from its heartbeats.
    flows: u64,
    outbox: Outbox,
    inbox: Inbox,
    /// It asked for a copy of this node's table.
    wants_copy: bool,
    /// Its copy of its table arrived whole since it last (re)started.
    copied: bool,
    copy_requested_at: Option<Instant>,
}

pub struct Node {
    cfg: Cluster,
    sock: Arc<UdpSocket>,
    tx: Sender,
    rx: Receiver,
    peers: Vec<Peer>,
    applier: Applier,
    index: Index,
    flows: u64,
    last_refresh_ns: Option<u64>,
    counters: SyncCounters,
    started: Instant,
}

impl Node {
    /// Binds the sync socket; datagrams arrive on the returned channel.
    pub fn start(
        cfg: &Cluster,
        programmed: &Programmed,
        flow_table_size: u32,
    ) -> Result<(Node, Datagrams)> {
        let key = Key::from_file(&cfg.key_file)?;
        let (sock, datagrams) = socket::bind(cfg.listen, "the cluster sync socket")?;
        // Resend after a few heartbeats without progress.
        let rto = (cfg.heartbeat * 2).max(Duration::from_millis(50));
        let peers = cfg
            .peers
            .iter()
            .map(|&addr| Peer {
                addr,
                node_id: None,
                last_heard: None,
                flows: 0,
                outbox: Outbox::new(flow_table_size as usize + OUTBOX_SLACK, rto),
                inbox: Inbox::default(),
                wants_copy: false,
                copied: false,
                copy_requested_at: None,
            })
            .collect();
        Ok((
            Node {
                cfg: cfg.clone(),
                sock,
                tx: Sender::new(key.clone(), cfg.node_id, wire::boot_id(SystemTime::now())),
                rx: Receiver::new(key, cfg.node_id),
                peers,
                applier: Applier::additive(),
                index: Index::new(programmed),
                flows: 0,
                last_refresh_ns: None,
                counters: SyncCounters::default(),
                started: Instant::now(),
            },
            datagrams,
        ))
    }

    /// After a reload: VIPs and reals may have new ids.
    pub fn set_programmed(&mut self, p: &Programmed) {
        self.index = Index::new(p);
    }

    /// The flow count heartbeats advertise (from the last sweep).
    pub fn set_flows(&mut self, flows: u64) {
        self.flows = flows;
    }

    fn alive(&self, p: &Peer, now: Instant) -> bool {
        p.last_heard
            .is_some_and(|at| now.duration_since(at) < self.cfg.heartbeat * DEAD_AFTER)
    }

    /// Whether this node holds what its live peers hold, so that the flows
    /// ECMP brings it once it is announced find their entries: every peer
    /// that is up has delivered its copy. A peer not heard since this node
    /// started is waited for as long as it takes to call a peer down.
    pub fn caught_up(&self) -> bool {
        let now = Instant::now();
        let grace = now.duration_since(self.started) >= self.cfg.heartbeat * DEAD_AFTER;
        self.peers.iter().all(|p| match p.last_heard {
            None => grace,
            Some(_) => p.copied || !self.alive(p, now),
        })
    }

    /// Every heartbeat interval: heartbeats, repairs, resends.
    pub fn on_tick(&mut self) {
        let now = Instant::now();
        for i in 0..self.peers.len() {
            let hb = Message::Heartbeat(Heartbeat {
                priority: 0,
                role: Role::Active,
                term: 0,
                bulk_synced: self.peers[i].copied,
                yielding: false,
                flows: self.flows,
                next_seq: self.peers[i].outbox.next_seq(),
            });
            self.send(i, &hb);
            let p = &self.peers[i];
            if p.inbox.stuck() {
                warn!(
                    "cluster: events from {} were lost beyond resending; asking for a new copy",
                    p.addr
                );
                self.request_copy(i);
            } else if !p.copied
                && p.inbox.expected().is_none()
                && self.alive(p, now)
                && p.copy_requested_at
                    .is_some_and(|at| now.duration_since(at) > COPY_RETRY)
            {
                // The request or the copy's start was lost (a datagram).
                debug!("cluster: no copy from {} yet; asking again", p.addr);
                self.peers[i].copy_requested_at = None;
                self.request_copy(i);
            }
        }
        self.flush(now);
    }

    pub fn on_datagram(&mut self, from: SocketAddr, d: &[u8], maps: &mut KernelMaps) {
        let now = Instant::now();
        let Some(i) = self.peers.iter().position(|p| p.addr == from) else {
            self.counters.unknown_senders += 1;
            debug!("cluster: a datagram from {from}, which is not a peer");
            return;
        };
        let r = match self.rx.open(d) {
            Ok(r) => r,
            Err(why) => {
                self.counters.rejected_datagrams += 1;
                debug!("cluster: dropped a datagram from {from}: {}", why.as_str());
                return;
            }
        };
        let p = &mut self.peers[i];
        p.last_heard = Some(now);
        p.node_id = Some(r.header.node_id);
        if r.new_boot {
            info!(
                "cluster: node {} at {from} is up (boot {}); asking for its flows",
                r.header.node_id, r.header.boot_id
            );
            p.copied = false;
            // Whatever was queued was for its previous life: its copy
            // request restarts the stream.
            p.outbox.clear();
            self.request_copy(i);
        }
        let p = &mut self.peers[i];
        match r.message {
            Message::Heartbeat(hb) => {
                p.flows = hb.flows;
                p.inbox.on_heartbeat(hb.next_seq);
            }
            Message::FlowBatch(batch) => {
                let acc = p.inbox.on_batch(batch);
                let now_ns = now_ns();
                for ev in &acc.events {
                    match self.applier.apply(maps, &self.index, ev, now_ns) {
                        Ok(Applied::Flow) => self.counters.events_applied += 1,
                        Ok(Applied::BulkComplete { total, .. }) => {
                            let p = &mut self.peers[i];
                            p.copied = true;
                            self.counters.copies_received += 1;
                            let took = p.copy_requested_at.take().map(|t| t.elapsed());
                            info!(
                                "cluster: copy of {}'s {total} flows complete{}",
                                p.addr,
                                took.map(|t| format!(" in {:.0}ms", t.as_secs_f64() * 1e3))
                                    .unwrap_or_default()
                            );
                        }
                        Err(e) => {
                            self.counters.apply_errors += 1;
                            warn!("cluster: applying a synced flow: {e:#}");
                        }
                    }
                }
                if let Err(e) = self.applier.flush(maps) {
                    self.counters.apply_errors += 1;
                    warn!("cluster: writing synced flows: {e:#}");
                }
                self.counters.unmatched = self.applier.counters.unmatched;
                if let Some(up_to) = acc.ack {
                    self.send(i, &Message::Ack { up_to_seq: up_to });
                }
            }
            Message::Ack { up_to_seq } => {
                p.outbox.ack(up_to_seq, now);
                self.flush(now);
            }
            Message::BulkRequest => p.wants_copy = true,
        }
    }

    fn request_copy(&mut self, i: usize) {
        let p = &mut self.peers[i];
        p.inbox.reset();
        p.copy_requested_at.get_or_insert_with(Instant::now);
        self.applier.abandon_bulk();
        self.send(i, &Message::BulkRequest);
    }

    /// Whether a peer asked for a copy since the last call; the agent then
    /// reads the table off its loop (`copy_reading`, `send_copy`).
    pub fn copy_wanted(&self) -> bool {
        self.peers.iter().any(|p| p.wants_copy)
    }

    /// The table is being read for the peers that asked: their events from
    /// now on follow the copy. Returns how many copies the read serves.
    pub fn copy_reading(&mut self) -> usize {
        let mut n = 0;
        for p in self.peers.iter_mut().filter(|p| p.wants_copy) {
            p.wants_copy = false;
            p.outbox.begin_bulk();
            n += 1;
        }
        n
    }

    /// A copy of the whole table to every peer `copy_reading` started one for.
    pub fn send_copy(&mut self, table: Result<Vec<FlowEvent>>) {
        let now = Instant::now();
        let table = match table {
            Ok(t) => t,
            Err(e) => {
                warn!("cluster: reading the flow table for a copy: {e:#}");
                for p in &mut self.peers {
                    p.outbox.abandon_bulk(now);
                }
                return;
            }
        };
        for p in &mut self.peers {
            // The peers a read started for are the ones holding events.
            if p.outbox.holding() {
                info!(
                    "cluster: sending {} a copy of {} flows",
                    p.addr,
                    table.len()
                );
                p.outbox.restart_with_bulk(table.clone(), now);
                self.counters.copies_sent += 1;
            }
        }
        self.flush(now);
    }

    /// Records the datapath wrote to `SYNC`: new and changed flows go to
    /// every peer heard from (one never heard gets a copy when it is).
    pub fn on_records(&mut self, recs: &[SyncEvent]) {
        let now = Instant::now();
        let events: Vec<FlowEvent> = recs
            .iter()
            .filter_map(|rec| mirror::from_record(rec, &self.index))
            .filter(|ev| matches!(ev, FlowEvent::Upsert(_)))
            .collect();
        if events.is_empty() {
            return;
        }
        for p in self.peers.iter_mut().filter(|p| p.last_heard.is_some()) {
            for ev in &events {
                p.outbox.push(*ev, now);
            }
        }
        self.counters.events_sent += events.len() as u64;
        self.flush(now);
    }

    /// The refresh window of this sweep: flows with traffic within it are
    /// sent again with their ages, so no peer's copy of a long-lived flow
    /// times out while this node carries it.
    pub fn refresh_window(&mut self, now_ns: u64) -> Option<u64> {
        let since = self.last_refresh_ns.replace(now_ns)?;
        Some(now_ns.saturating_sub(since))
    }

    /// What the sweep saw: a live flow active within the window is a
    /// refresh. A removed flow is not streamed (see the module's doc).
    pub fn on_swept(&mut self, f: &Joined, removed: bool, window: u64, now_ns: u64) {
        if removed || !ha::node::refresh_due(f, window, now_ns) {
            return;
        }
        let Some(ev) = mirror::upsert_of(f, now_ns) else {
            return;
        };
        let now = Instant::now();
        for p in self.peers.iter_mut().filter(|p| p.last_heard.is_some()) {
            p.outbox.push(ev, now);
        }
        self.counters.refreshed += 1;
    }

    /// Sends what the streams have to send now.
    pub fn flush(&mut self, now: Instant) {
        for i in 0..self.peers.len() {
            let ds = self.peers[i].outbox.poll(&mut self.tx, now);
            for d in ds {
                self.send_raw(i, &d);
            }
        }
    }

    fn send(&mut self, i: usize, msg: &Message) {
        match self.tx.seal(msg) {
            Ok(d) => self.send_raw(i, &d),
            Err(e) => warn!("cluster: {e}"),
        }
    }

    fn send_raw(&mut self, i: usize, d: &[u8]) {
        // Never waits: a lost datagram is resent by the stream, and the next
        // heartbeat replaces a lost one.
        let to = self.peers[i].addr;
        if let Err(e) = self.sock.try_send_to(d, to) {
            self.counters.send_errors += 1;
            debug!("cluster: sending to {to}: {e}");
        }
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        self.peers
            .iter()
            .map(|p| PeerStatus {
                node_id: p.node_id,
                address: p.addr,
                state: match p.last_heard {
                    None => PeerState::Unknown,
                    Some(_) if self.alive(p, now) => PeerState::Up,
                    Some(_) => PeerState::Down,
                },
                sync_lag_ms: p.outbox.stalled_for(now).as_millis() as u64,
                unacked: p.outbox.unacked() as u64,
                synced: p.copied,
                flows: p.flows,
            })
            .collect()
    }

    pub fn counters(&self) -> SyncCounters {
        self.counters
    }
}
