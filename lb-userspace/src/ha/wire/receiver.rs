//! Acceptance of incoming datagrams: MAC first, then replay protection per
//! sender, and a count for every reason a datagram is dropped.

use std::collections::HashMap;

use super::{HEADER_LEN, Header, Key, MAC_LEN, MAGIC, MIN_VERSION, Message, VERSION, decode};

/// How far behind the newest accepted sequence number a datagram may arrive
/// and still be accepted (once): UDP may reorder, the window absorbs it.
pub const WINDOW: u64 = 64;

/// Why a datagram was dropped. Nothing from a dropped datagram is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Too short, wrong magic, or an authenticated payload that does not
    /// parse (a bug or an incompatible build on the peer).
    Malformed,
    /// A protocol version this build does not read (outside
    /// `MIN_VERSION..=VERSION`); its MAC layout is unknown, so this count is
    /// unauthenticated.
    WrongVersion,
    /// The MAC does not verify: forged, corrupted, or a different key.
    BadMac,
    /// Carries our own node id: our datagram reflected back, or both nodes
    /// configured with the same `ha.node_id`.
    FromSelf,
    /// A sequence number already accepted.
    Replay,
    /// Older than the reordering window, or from an earlier boot of the peer.
    Stale,
}

impl Reject {
    /// The label in metrics and `lb status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::WrongVersion => "wrong_version",
            Reject::BadMac => "bad_mac",
            Reject::FromSelf => "self",
            Reject::Replay => "replay",
            Reject::Stale => "stale",
        }
    }
}

/// Counters since this receiver was made, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxCounters {
    pub accepted: u64,
    pub malformed: u64,
    pub wrong_version: u64,
    pub bad_mac: u64,
    pub from_self: u64,
    pub replay: u64,
    pub stale: u64,
    /// Accepted boot id changes of a known peer (not first contact).
    pub peer_restarts: u64,
}

impl RxCounters {
    pub fn dropped(&self, reason: Reject) -> u64 {
        match reason {
            Reject::Malformed => self.malformed,
            Reject::WrongVersion => self.wrong_version,
            Reject::BadMac => self.bad_mac,
            Reject::FromSelf => self.from_self,
            Reject::Replay => self.replay,
            Reject::Stale => self.stale,
        }
    }

    fn count(&mut self, reason: Reject) {
        let n = match reason {
            Reject::Malformed => &mut self.malformed,
            Reject::WrongVersion => &mut self.wrong_version,
            Reject::BadMac => &mut self.bad_mac,
            Reject::FromSelf => &mut self.from_self,
            Reject::Replay => &mut self.replay,
            Reject::Stale => &mut self.stale,
        };
        *n += 1;
    }
}

/// An accepted datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub header: Header,
    pub message: Message,
    /// First datagram of this sender boot: first contact or a peer restart.
    /// A restarted peer lost whatever it had not persisted; the agent decides
    /// what to resend.
    pub new_boot: bool,
}

/// Replay state of one sender boot: the newest sequence number accepted and
/// a bitmap of the `WINDOW` numbers below it (bit `i` = `highest - i` seen).
#[derive(Debug, Clone, Copy)]
struct Window {
    boot_id: u64,
    highest: u64,
    seen: u64,
}

impl Window {
    /// The first datagram of a sender boot. Everything numbered below it
    /// counts as seen: those datagrams were sent before this receiver was
    /// listening (or while the link was down), so one arriving now can only
    /// be a recording replayed. A genuinely reordered one is lost with them,
    /// once per peer boot; the stream resends it.
    fn new(boot_id: u64, seq: u64) -> Window {
        Window {
            boot_id,
            highest: seq,
            seen: u64::MAX,
        }
    }

    fn check(&self, seq: u64) -> Result<(), Reject> {
        if seq > self.highest {
            return Ok(());
        }
        let behind = self.highest - seq;
        if behind >= WINDOW {
            Err(Reject::Stale)
        } else if self.seen & (1 << behind) != 0 {
            Err(Reject::Replay)
        } else {
            Ok(())
        }
    }

    /// Marks `seq` seen; `check` must have passed.
    fn mark(&mut self, seq: u64) {
        if seq > self.highest {
            let ahead = seq - self.highest;
            self.seen = if ahead >= WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = seq;
        } else {
            self.seen |= 1 << (self.highest - seq);
        }
    }
}

/// Opens datagrams from the peer(s) under one key. Keeps replay state per
/// sender node id; node ids are one byte, so that map stays tiny.
#[derive(Debug)]
pub struct Receiver {
    key: Key,
    local_node_id: u8,
    senders: HashMap<u8, Window>,
    counters: RxCounters,
}

impl Receiver {
    pub fn new(key: Key, local_node_id: u8) -> Receiver {
        Receiver {
            key,
            local_node_id,
            senders: HashMap::new(),
            counters: RxCounters::default(),
        }
    }

    pub fn counters(&self) -> &RxCounters {
        &self.counters
    }

    /// The boot id last accepted from `node_id`.
    pub fn peer_boot(&self, node_id: u8) -> Option<u64> {
        self.senders.get(&node_id).map(|w| w.boot_id)
    }

    /// Authenticates, checks freshness and decodes one datagram. The replay
    /// state moves only when the whole datagram is accepted.
    ///
    /// Order matters: nothing about a datagram is trusted before its MAC
    /// verifies, so a forger cannot advance the window or reset it with a
    /// made-up boot id. The version is checked before the MAC only because
    /// another version's layout is unknown.
    ///
    /// Limit: after this receiver starts it has no state, so the first
    /// authentic datagram of a sender boot it has not seen is accepted
    /// whatever its sequence number (from then on, lower numbers are
    /// refused). An attacker holding a recording of the peer's current boot
    /// can replay one datagram this way after this agent restarts, before
    /// the live peer's next datagram; it cannot be an old boot's, and the
    /// next heartbeat restores the peer's real state.
    pub fn open(&mut self, datagram: &[u8]) -> Result<Received, Reject> {
        let result = self.check(datagram);
        match &result {
            Ok(_) => self.counters.accepted += 1,
            Err(reason) => self.counters.count(*reason),
        }
        result
    }

    fn check(&mut self, datagram: &[u8]) -> Result<Received, Reject> {
        if datagram.len() < HEADER_LEN + MAC_LEN || datagram[..4] != MAGIC {
            return Err(Reject::Malformed);
        }
        if !(MIN_VERSION..=VERSION).contains(&datagram[4]) {
            return Err(Reject::WrongVersion);
        }
        let (body, tag) = datagram.split_at(datagram.len() - MAC_LEN);
        if !self.key.verify(body, tag) {
            return Err(Reject::BadMac);
        }
        // Authentic from here on.
        let (header, message) = decode(body).ok_or(Reject::Malformed)?;
        if header.node_id == self.local_node_id {
            return Err(Reject::FromSelf);
        }
        let new_boot = match self.senders.get_mut(&header.node_id) {
            Some(w) if header.boot_id == w.boot_id => {
                w.check(header.seq)?;
                w.mark(header.seq);
                false
            }
            Some(w) if header.boot_id < w.boot_id => return Err(Reject::Stale),
            Some(w) => {
                self.counters.peer_restarts += 1;
                *w = Window::new(header.boot_id, header.seq);
                true
            }
            None => {
                let window = Window::new(header.boot_id, header.seq);
                self.senders.insert(header.node_id, window);
                true
            }
        };
        Ok(Received {
            header,
            message,
            new_boot,
        })
    }
}
