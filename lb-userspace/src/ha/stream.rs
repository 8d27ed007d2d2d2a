//! The flow-event stream between the two nodes, reliable over UDP: the
//! active node's [`Outbox`] numbers events, sends them in batches within a
//! window, and resends everything unacknowledged after a timeout (go-back-N);
//! the standby's [`Inbox`] applies them strictly in order and acknowledges
//! cumulatively. Pure: no sockets, no clock of its own.
//!
//! In-order delivery is the point. Events are not commutative: a `Remove`
//! overtaken by an older `Upsert` of the same flow would resurrect it. The
//! cost is that one lost datagram holds back the ones after it until the
//! resend, which on a sync link (a direct cable or a quiet VLAN) is rare.
//!
//! A bulk copy is part of the stream (see `wire`): the active node restarts
//! the stream with `BulkStart`, the table, `BulkEnd`. The inbox takes a
//! `BulkStart` as the place to (re)start whatever it expected, so a standby
//! that joined, restarted or lost events converges by asking for a copy.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::wire::{FlowBatch, FlowEvent, Sender};

/// Batches in flight beyond the last acknowledgement. With ~35 events per
/// datagram that is ~2200 events per round trip: enough for a LAN, small
/// enough not to overrun the peer's socket buffer.
pub const WINDOW_DATAGRAMS: usize = 64;

/// The sending side, on the active node.
#[derive(Debug)]
pub struct Outbox {
    /// Unacknowledged events; `queue[0]` has number `base`.
    queue: VecDeque<FlowEvent>,
    base: u64,
    /// The first event not sent since the last (re)start of sending.
    sent: u64,
    /// The queue's limit: past it the stream is cut (see `push`).
    cap: usize,
    rto: Duration,
    /// Last time the peer acknowledged something new, or a resend started.
    last_progress: Option<Instant>,
    /// Sizes of the batches in flight, oldest first, for the window.
    in_flight: VecDeque<usize>,
    /// While a bulk copy is being read (off the agent's loop): the events
    /// pushed meanwhile, which must follow the copy (see `begin_bulk`).
    held: Option<Vec<FlowEvent>>,
    pub counters: OutCounters,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutCounters {
    /// Events given numbers.
    pub queued: u64,
    /// Events acknowledged by the peer.
    pub acked: u64,
    /// Datagrams sent, first time or again.
    pub datagrams: u64,
    /// Go-back-N rounds (each resends everything unacknowledged).
    pub resends: u64,
    /// Times the queue overflowed and was dropped (the peer resyncs).
    pub overflows: u64,
}

impl Outbox {
    /// `cap`: the most events kept unacknowledged; make it larger than the
    /// flow table so a bulk copy fits. `rto`: how long without progress
    /// before everything unacknowledged is sent again.
    pub fn new(cap: usize, rto: Duration) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            base: 1,
            sent: 1,
            cap: cap.max(1),
            rto,
            last_progress: None,
            in_flight: VecDeque::new(),
            held: None,
            counters: OutCounters::default(),
        }
    }

    /// The number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.base + self.queue.len() as u64
    }

    /// Events numbered but not acknowledged.
    pub fn unacked(&self) -> usize {
        self.queue.len()
    }

    /// How long the oldest unacknowledged event has waited for progress.
    pub fn stalled_for(&self, now: Instant) -> Duration {
        match (self.queue.is_empty(), self.last_progress) {
            (false, Some(at)) => now.saturating_duration_since(at),
            _ => Duration::ZERO,
        }
    }

    /// Numbers one event. If the queue is full the peer is too far behind
    /// to catch up by resends: everything queued is dropped, the numbers
    /// move on, and the peer, seeing the gap never filled, asks for a bulk
    /// copy.
    pub fn push(&mut self, ev: FlowEvent, now: Instant) {
        if let Some(held) = self.held.as_mut() {
            held.push(ev);
            return;
        }
        if self.queue.len() >= self.cap {
            self.counters.overflows += 1;
            self.skip_all();
        }
        if self.queue.is_empty() {
            self.last_progress = Some(now);
        }
        self.queue.push_back(ev);
        self.counters.queued += 1;
    }

    /// A bulk copy is being read from the table: events pushed from now on
    /// are held and follow the copy (`restart_with_bulk`). The read may
    /// miss a flow created or removed meanwhile, but not the event that
    /// says so.
    pub fn begin_bulk(&mut self) {
        self.held.get_or_insert_with(Vec::new);
    }

    /// Whether a copy is being read for this stream (`begin_bulk`).
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Restarts the stream with a bulk copy: what is queued is superseded by
    /// the copy, which starts with `BulkStart` and ends with `BulkEnd`, and
    /// is followed by the events held since `begin_bulk`.
    pub fn restart_with_bulk(&mut self, table: Vec<FlowEvent>, now: Instant) {
        let held = self.held.take().unwrap_or_default();
        self.skip_all();
        let total = table.len() as u64;
        // Past the cap on purpose: a copy is sent whole or not at all.
        self.queue.push_back(FlowEvent::BulkStart);
        self.queue.extend(table);
        self.queue.push_back(FlowEvent::BulkEnd { total });
        self.counters.queued += total + 2;
        self.last_progress = Some(now);
        for ev in held {
            self.push(ev, now);
        }
    }

    /// The bulk copy begun could not be read: the held events go out as
    /// they would have.
    pub fn abandon_bulk(&mut self, now: Instant) {
        for ev in self.held.take().unwrap_or_default() {
            self.push(ev, now);
        }
    }

    /// Drops everything queued (this node stopped being the source), held
    /// events included.
    pub fn clear(&mut self) {
        self.skip_all();
        if let Some(held) = self.held.as_mut() {
            held.clear();
        }
    }

    fn skip_all(&mut self) {
        self.base = self.next_seq();
        self.queue.clear();
        self.sent = self.base;
        self.in_flight.clear();
    }

    /// The peer has every event up to `up_to`.
    pub fn ack(&mut self, up_to: u64, now: Instant) {
        if up_to < self.base || up_to >= self.next_seq() {
            return;
        }
        let n = (up_to + 1 - self.base) as usize;
        self.queue.drain(..n);
        self.base = up_to + 1;
        self.sent = self.sent.max(self.base);
        self.counters.acked += n as u64;
        self.last_progress = Some(now);
        // Batches wholly acknowledged leave the window.
        let mut left = n;
        while let Some(&front) = self.in_flight.front() {
            if front > left {
                self.in_flight[0] = front - left;
                break;
            }
            left -= front;
            self.in_flight.pop_front();
        }
    }

    /// The datagrams to send now: a resend from the oldest unacknowledged
    /// event if the peer made no progress for `rto`, then new events as the
    /// window allows.
    pub fn poll(&mut self, tx: &mut Sender, now: Instant) -> Vec<Vec<u8>> {
        if self.sent > self.base
            && self
                .last_progress
                .is_some_and(|at| now.saturating_duration_since(at) >= self.rto)
        {
            self.sent = self.base;
            self.in_flight.clear();
            self.last_progress = Some(now);
            self.counters.resends += 1;
        }
        let mut out = Vec::new();
        let events = self.queue.make_contiguous();
        while self.sent < self.base + events.len() as u64 && self.in_flight.len() < WINDOW_DATAGRAMS
        {
            let from = (self.sent - self.base) as usize;
            let (dgram, n) = tx.seal_events(self.sent, &events[from..]);
            self.sent += n as u64;
            self.in_flight.push_back(n);
            out.push(dgram);
        }
        self.counters.datagrams += out.len() as u64;
        out
    }
}

/// The receiving side, on the standby.
#[derive(Debug, Default)]
pub struct Inbox {
    /// The next event number wanted; `None` until a bulk copy starts the
    /// stream (a standby applies nothing it cannot place).
    expected: Option<u64>,
    /// Heartbeats of the active peer that announced events this inbox has
    /// not received, with no event arriving in order since (see `stuck`).
    quiet_heartbeats: u32,
    pub counters: InCounters,
}

/// Heartbeats (two seconds at the default interval) during which the active
/// peer announces events it never delivers before a standby gives up on
/// them and asks for a bulk copy: the peer dropped them (see
/// `Outbox::push`). Counted in the peer's heartbeats, not in time, so
/// neither node's stalls (a long sweep blocks an agent's loop) count: a
/// stalled sender sends no heartbeats, and a stalled receiver reads the
/// resent events queued among the heartbeats.
pub const STUCK_HEARTBEATS: u32 = 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InCounters {
    /// Events handed on to be applied.
    pub accepted: u64,
    /// Events received again (a resend of what was already applied).
    pub duplicates: u64,
    /// Batches dropped because events before them are missing.
    pub out_of_order: u64,
    /// Batches dropped because no bulk copy has started the stream yet.
    pub unplaced: u64,
}

/// What to do with one batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Events to apply, in order.
    pub events: Vec<FlowEvent>,
    /// Acknowledge every event up to this number.
    pub ack: Option<u64>,
}

impl Inbox {
    /// Forgets the stream: the peer restarted (its numbers start over) or
    /// this node asked for a fresh copy.
    pub fn reset(&mut self) {
        self.expected = None;
        self.quiet_heartbeats = 0;
    }

    pub fn expected(&self) -> Option<u64> {
        self.expected
    }

    /// Whether the events the active peer keeps announcing have stopped
    /// arriving for [`STUCK_HEARTBEATS`] of its heartbeats: it dropped them
    /// (overflow) and only a bulk copy can repair this node.
    pub fn stuck(&self) -> bool {
        self.quiet_heartbeats >= STUCK_HEARTBEATS
    }

    /// A heartbeat of the active peer: `next_seq` is the number its next
    /// event will get, so every event below it exists.
    pub fn on_heartbeat(&mut self, next_seq: u64) {
        match self.expected {
            Some(e) if next_seq > e => self.quiet_heartbeats += 1,
            _ => self.quiet_heartbeats = 0,
        }
    }

    pub fn on_batch(&mut self, batch: FlowBatch) -> Accepted {
        let first = batch.first_seq;
        let starts_bulk = matches!(batch.events.first(), Some(FlowEvent::BulkStart));
        if starts_bulk && self.expected.is_none_or(|e| first >= e) {
            self.expected = Some(first);
            self.quiet_heartbeats = 0;
        }
        let Some(expected) = self.expected else {
            self.counters.unplaced += 1;
            return Accepted::default();
        };
        let ack = expected.checked_sub(1).filter(|&n| n > 0);
        if first > expected {
            self.counters.out_of_order += 1;
            return Accepted {
                events: vec![],
                ack,
            };
        }
        let skip = (expected - first) as usize;
        if skip >= batch.events.len() {
            self.counters.duplicates += batch.events.len() as u64;
            return Accepted {
                events: vec![],
                ack,
            };
        }
        self.counters.duplicates += skip as u64;
        let mut events = batch.events;
        events.drain(..skip);
        let next = expected + events.len() as u64;
        self.expected = Some(next);
        self.quiet_heartbeats = 0;
        self.counters.accepted += events.len() as u64;
        Accepted {
            events,
            ack: Some(next - 1),
        }
    }
}

#[cfg(test)]
mod tests;
