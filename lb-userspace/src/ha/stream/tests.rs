//! The stream over a lossy "link" made of byte vectors.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::*;
use crate::ha::wire::{FlowTuple, Key, Message, Receiver};

const RTO: Duration = Duration::from_millis(200);

fn key() -> Key {
    Key::from_bytes(b"0123456789abcdef0123456789abcdef").expect("test key")
}

fn ev(n: u16) -> FlowEvent {
    FlowEvent::Remove {
        key: FlowTuple::new(
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), n).into(),
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 80).into(),
            6,
        )
        .expect("one family"),
    }
}

struct Pair {
    out: Outbox,
    tx: Sender,
    rx: Receiver,
    inbox: Inbox,
    applied: Vec<FlowEvent>,
    now: Instant,
}

impl Pair {
    fn new(cap: usize) -> Pair {
        Pair {
            out: Outbox::new(cap, RTO),
            tx: Sender::new(key(), 1, 1000),
            rx: Receiver::new(key(), 2),
            inbox: Inbox::default(),
            applied: Vec::new(),
            now: Instant::now(),
        }
    }

    /// One round: the outbox sends, `lose(i)` drops the i-th datagram of the
    /// round, the inbox applies and its acks come back.
    fn round(&mut self, mut lose: impl FnMut(usize) -> bool) -> usize {
        let dgrams = self.out.poll(&mut self.tx, self.now);
        let n = dgrams.len();
        for (i, d) in dgrams.into_iter().enumerate() {
            if lose(i) {
                continue;
            }
            let Message::FlowBatch(b) = self.rx.open(&d).expect("authentic").message else {
                panic!("not a batch")
            };
            let acc = self.inbox.on_batch(b);
            self.applied.extend(acc.events);
            if let Some(up_to) = acc.ack {
                self.out.ack(up_to, self.now);
            }
        }
        n
    }
}

#[test]
fn events_arrive_once_and_in_order_despite_losses() {
    let mut p = Pair::new(100_000);
    p.out.restart_with_bulk(vec![], p.now);
    let want: Vec<FlowEvent> = (0..5000).map(ev).collect();
    for e in &want {
        p.out.push(*e, p.now);
    }
    // Every third datagram lost; time moves past the resend timeout
    // between rounds. Bounded: the test fails rather than loops.
    let mut rounds = 0;
    while p.out.unacked() > 0 {
        rounds += 1;
        assert!(rounds < 1000, "no convergence");
        let mut k = 0;
        p.round(|_| {
            k += 1;
            k % 3 == 0
        });
        p.now += RTO;
    }
    let got: Vec<FlowEvent> = p
        .applied
        .iter()
        .filter(|e| e.key().is_some())
        .copied()
        .collect();
    assert_eq!(got, want);
    assert!(p.out.counters.resends > 0);
    assert!(p.inbox.counters.out_of_order > 0);
}

#[test]
fn the_window_bounds_what_is_in_flight() {
    let mut p = Pair::new(100_000);
    p.out
        .restart_with_bulk((0..20_000).map(ev).collect(), p.now);
    let sent = p.round(|_| true); // all lost
    assert_eq!(sent, WINDOW_DATAGRAMS);
    // Nothing acknowledged, no timeout yet: nothing more goes out.
    assert_eq!(p.round(|_| false), 0);
    p.now += RTO;
    // The resend starts from the first event again.
    assert_eq!(p.round(|_| false), WINDOW_DATAGRAMS);
    assert!(matches!(p.applied[0], FlowEvent::BulkStart));
}

#[test]
fn events_while_a_copy_is_read_follow_the_copy() {
    let mut p = Pair::new(1000);
    p.out.restart_with_bulk(vec![ev(1)], p.now);
    p.round(|_| false);
    p.out.push(ev(2), p.now);
    // The table is being read off the loop: a flow that changes meanwhile
    // may be missing from the copy, so its event must come after it.
    p.out.begin_bulk();
    p.out.push(ev(3), p.now);
    p.round(|_| false);
    assert_eq!(p.out.next_seq(), 5, "ev(2) numbered, ev(3) held");
    p.out.restart_with_bulk(vec![ev(4)], p.now);
    p.out.push(ev(5), p.now);
    p.round(|_| false);
    let copy = [FlowEvent::BulkStart, ev(4), FlowEvent::BulkEnd { total: 1 }];
    let tail = &p.applied[p.applied.len() - 5..];
    assert_eq!(tail[..3], copy, "{:?}", p.applied);
    assert_eq!(tail[3..], [ev(3), ev(5)], "held, then new");

    // A read that failed: what was held goes out as it would have.
    p.out.begin_bulk();
    p.out.push(ev(6), p.now);
    p.out.abandon_bulk(p.now);
    p.round(|_| false);
    assert_eq!(p.applied.last(), Some(&ev(6)));
}

#[test]
fn nothing_is_applied_before_a_bulk_copy_places_the_stream() {
    let mut p = Pair::new(1000);
    p.out.push(ev(1), p.now);
    p.round(|_| false);
    assert!(p.applied.is_empty());
    assert_eq!(p.inbox.counters.unplaced, 1);
    p.out.restart_with_bulk(vec![ev(2)], p.now);
    p.out.push(ev(3), p.now);
    p.round(|_| false);
    assert_eq!(
        p.applied,
        vec![
            FlowEvent::BulkStart,
            ev(2),
            FlowEvent::BulkEnd { total: 1 },
            ev(3)
        ]
    );
}

#[test]
fn an_overflow_leaves_a_gap_that_asks_for_a_copy() {
    let mut p = Pair::new(10);
    p.out.restart_with_bulk(vec![], p.now);
    p.round(|_| false);
    // The peer hears nothing while 25 events pile up past the cap of 10.
    for i in 0..25 {
        p.out.push(ev(i), p.now);
    }
    assert_eq!(p.out.counters.overflows, 2);
    p.round(|_| false);
    assert_eq!(p.applied.len(), 2, "only the empty copy");
    // The sender keeps running: its heartbeats announce events that never
    // come, each resend round starting past the hole.
    for beat in 1..=STUCK_HEARTBEATS {
        assert!(!p.inbox.stuck(), "after {} heartbeats", beat - 1);
        p.inbox.on_heartbeat(p.out.next_seq());
        p.now += RTO;
        p.round(|_| false);
    }
    assert!(p.inbox.stuck());
    // A new copy repairs it.
    p.out.restart_with_bulk(vec![ev(99)], p.now);
    p.round(|_| false);
    assert!(!p.inbox.stuck());
    assert_eq!(p.applied.last(), Some(&FlowEvent::BulkEnd { total: 1 }));
}

#[test]
fn events_still_in_flight_or_resent_are_not_a_stuck_stream() {
    let mut p = Pair::new(1000);
    p.out.restart_with_bulk(vec![], p.now);
    p.round(|_| false);
    // Every datagram of a round is lost, many heartbeats in a row, while
    // the sender still holds the events: each resend round that gets
    // through makes progress and clears the count.
    for i in 0..100 {
        p.out.push(ev(i), p.now);
    }
    for _ in 0..3 {
        for _ in 0..STUCK_HEARTBEATS - 1 {
            p.inbox.on_heartbeat(p.out.next_seq());
            p.now += RTO;
            p.round(|_| true);
        }
        assert!(!p.inbox.stuck());
        p.now += RTO;
        p.round(|_| false);
        p.inbox.on_heartbeat(p.out.next_seq());
        assert!(!p.inbox.stuck());
    }
    assert_eq!(p.applied.len(), 2 + 100);
    // A heartbeat announcing nothing new (or a stalled sender sending none)
    // never counts.
    for _ in 0..2 * STUCK_HEARTBEATS {
        p.inbox.on_heartbeat(p.out.next_seq());
    }
    assert!(!p.inbox.stuck());
}

#[test]
fn resent_events_already_applied_are_acknowledged_not_reapplied() {
    let mut p = Pair::new(1000);
    p.out.restart_with_bulk(vec![ev(1), ev(2)], p.now);
    let dgrams = p.out.poll(&mut p.tx, p.now);
    let mut batches = Vec::new();
    for d in &dgrams {
        let Message::FlowBatch(b) = p.rx.open(d).expect("ok").message else {
            panic!()
        };
        batches.push(b);
    }
    let first = p.inbox.on_batch(batches[0].clone());
    assert_eq!(first.events.len(), 4);
    assert_eq!(first.ack, Some(4));
    let again = p.inbox.on_batch(batches[0].clone());
    assert_eq!(
        again,
        Accepted {
            events: vec![],
            ack: Some(4)
        }
    );
    assert_eq!(p.inbox.counters.duplicates, 4);
}

#[test]
fn a_late_ack_after_a_resend_does_not_confuse_the_window() {
    let mut p = Pair::new(1000);
    p.out.restart_with_bulk((0..100).map(ev).collect(), p.now);
    p.out.poll(&mut p.tx, p.now);
    p.now += RTO;
    p.out.poll(&mut p.tx, p.now); // resend round
    p.out.ack(50, p.now);
    assert_eq!(p.out.unacked(), 102 - 50);
    p.out.ack(40, p.now); // older ack: ignored
    assert_eq!(p.out.unacked(), 52);
    p.out.ack(102, p.now);
    assert_eq!(p.out.unacked(), 0);
    assert_eq!(p.out.stalled_for(p.now + RTO), Duration::ZERO);
}
