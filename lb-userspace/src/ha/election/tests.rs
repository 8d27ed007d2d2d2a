//! Every rule with explicit times: heartbeat 100 ms, dead interval 300 ms.
//! Two `Election`s exchange heartbeats by hand, so each test states exactly
//! which messages got through when.

use std::time::{Duration, Instant};

use super::*;
use crate::ha::wire;

use Action::{BecomeActive, BecomeStandby, RequestBulk, SendHeartbeat};

const HEARTBEAT: Duration = Duration::from_millis(100);
const DEAD: Duration = Duration::from_millis(300);

fn cfg(node_id: u8, priority: u8, preempt: bool) -> ElectionConfig {
    ElectionConfig {
        node_id,
        priority,
        heartbeat: HEARTBEAT,
        dead_interval: DEAD,
        preempt,
        liveness_ttl: DEAD,
        bulk_retry: Duration::from_secs(1),
    }
}

/// Test clock: milliseconds after one fixed origin.
struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }

    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

/// What `from`'s heartbeat says, as the peer decodes it.
fn hb(from: &Election) -> PeerInfo {
    PeerInfo::from_heartbeat(from.cfg.node_id, &from.heartbeat(0))
}

/// Delivers `from`'s heartbeat to `to` at `now`.
fn send(from: &Election, to: &mut Election, now: Instant) -> Vec<Action> {
    to.on_heartbeat(hb(from), now)
}

fn has(actions: &[Action], a: Action) -> bool {
    actions.contains(&a)
}

/// Ticks `e` every heartbeat over `from..=to` ms; returns every action.
fn tick_range(e: &mut Election, c: &Clock, from: u64, to: u64) -> Vec<Action> {
    (from..=to)
        .step_by(HEARTBEAT.as_millis() as usize)
        .flat_map(|ms| e.on_tick(c.at(ms)))
        .collect()
}

/// `b` alone became active; `a` then joined, synced and is standby.
/// Returns at t = 1000 with a heartbeat just exchanged both ways.
fn active_b_standby_a(
    c: &Clock,
    a_cfg: ElectionConfig,
    b_cfg: ElectionConfig,
) -> (Election, Election) {
    let mut b = Election::new(b_cfg, c.at(0));
    tick_range(&mut b, c, 0, 300);
    assert_eq!(b.role(), Role::Active);
    let mut a = Election::new(a_cfg, c.at(500));
    send(&b, &mut a, c.at(500));
    assert_eq!(a.role(), Role::Standby);
    send(&a, &mut b, c.at(500));
    a.on_bulk_done(c.at(550));
    for ms in (600..=1000).step_by(100) {
        send(&b, &mut a, c.at(ms));
        send(&a, &mut b, c.at(ms));
    }
    assert!(a.bulk_synced());
    (a, b)
}

#[test]
fn startup_alone_becomes_active_after_the_dead_interval() {
    let c = Clock::new();
    let mut a = Election::new(cfg(1, 100, false), c.at(0));
    assert_eq!(
        a.on_tick(c.at(0)),
        vec![SendHeartbeat],
        "heartbeats from the start"
    );
    assert_eq!(a.on_tick(c.at(50)), vec![], "not due yet");
    assert_eq!(a.on_tick(c.at(100)), vec![SendHeartbeat]);
    assert_eq!(a.on_tick(c.at(150)), vec![]);
    assert_eq!(a.on_tick(c.at(200)), vec![SendHeartbeat]);
    assert_eq!(a.on_tick(c.at(250)), vec![]);
    assert_eq!(a.on_tick(c.at(299)), vec![]);
    assert_eq!(a.role(), Role::Init);
    assert_eq!(a.on_tick(c.at(300)), vec![BecomeActive, SendHeartbeat]);
    assert_eq!(a.role(), Role::Active);
    assert_eq!(a.term(), 1);
    assert!(
        a.heartbeat(5).bulk_synced,
        "the active's table is the reference"
    );
}

#[test]
fn two_nodes_the_higher_priority_is_active_only_after_its_bulk_sync() {
    let c = Clock::new();
    let mut a = Election::new(cfg(1, 200, false), c.at(0));
    let mut b = Election::new(cfg(2, 100, false), c.at(0));
    assert_eq!(
        send(&b, &mut a, c.at(10)),
        vec![BecomeStandby, RequestBulk, SendHeartbeat]
    );
    assert_eq!(
        send(&a, &mut b, c.at(10)),
        vec![BecomeStandby, RequestBulk, SendHeartbeat]
    );

    // B's copy finishes first: B is synced but does not outrank A.
    assert_eq!(b.on_bulk_done(c.at(20)), vec![]);
    assert_eq!(b.role(), Role::Standby);
    for ms in [100, 200] {
        send(&a, &mut b, c.at(ms));
        send(&b, &mut a, c.at(ms));
        assert_eq!(a.role(), Role::Standby, "A unsynced at {ms}");
        assert_eq!(b.role(), Role::Standby, "B waits for A at {ms}");
    }
    assert_eq!(a.on_bulk_done(c.at(250)), vec![BecomeActive, SendHeartbeat]);
    assert_eq!(send(&a, &mut b, c.at(250)), vec![]);
    assert_eq!((a.role(), b.role()), (Role::Active, Role::Standby));
    // Stable afterwards.
    for ms in (300..2000).step_by(100) {
        assert!(!has(&send(&a, &mut b, c.at(ms)), BecomeActive));
        assert!(!has(&send(&b, &mut a, c.at(ms)), BecomeStandby));
    }
}

#[test]
fn the_lower_synced_node_steps_in_if_the_better_one_stays_unsynced() {
    let c = Clock::new();
    let mut a = Election::new(cfg(1, 200, false), c.at(0));
    let mut b = Election::new(cfg(2, 100, false), c.at(0));
    send(&b, &mut a, c.at(10));
    send(&a, &mut b, c.at(10));
    b.on_bulk_done(c.at(20));
    tick_range(&mut b, &c, 100, 100);
    send(&a, &mut b, c.at(200));
    assert_eq!(b.role(), Role::Standby, "within the dead interval B waits");
    b.on_tick(c.at(260));
    assert!(
        has(&send(&a, &mut b, c.at(310)), BecomeActive),
        "no active for 300 ms"
    );
    // A, still syncing, sees B active and stays standby.
    assert!(!has(&send(&b, &mut a, c.at(310)), BecomeActive));
    assert_eq!(a.role(), Role::Standby);
}

#[test]
fn a_returning_higher_priority_node_without_preempt_stays_standby() {
    let c = Clock::new();
    let (mut a, mut b) = active_b_standby_a(&c, cfg(1, 200, false), cfg(2, 100, false));
    assert!(a.bulk_synced());
    for ms in (1100..5000).step_by(100) {
        let acts = send(&b, &mut a, c.at(ms));
        assert!(!has(&acts, BecomeActive), "{ms}: {acts:?}");
        send(&a, &mut b, c.at(ms));
    }
    assert_eq!((a.role(), b.role()), (Role::Standby, Role::Active));
}

#[test]
fn with_preempt_a_returning_node_takes_over_only_after_its_bulk_sync() {
    let c = Clock::new();
    let mut b = Election::new(cfg(2, 100, false), c.at(0));
    tick_range(&mut b, &c, 0, 300);
    let b_term = b.term();
    let mut a = Election::new(cfg(1, 200, true), c.at(500));
    // Heartbeats flow for seconds while the bulk copy is in progress.
    let mut requests = 0;
    for ms in (500..3000).step_by(100) {
        let acts = send(&b, &mut a, c.at(ms));
        assert!(
            !has(&acts, BecomeActive),
            "preempted before its sync at {ms}"
        );
        requests += acts.iter().filter(|&&x| x == RequestBulk).count();
        send(&a, &mut b, c.at(ms));
    }
    assert_eq!(a.role(), Role::Standby);
    assert_eq!(
        requests, 3,
        "requested on joining, then every bulk_retry (1 s)"
    );

    assert_eq!(
        a.on_bulk_done(c.at(3050)),
        vec![BecomeActive, SendHeartbeat]
    );
    assert!(a.term() > b_term);
    // B sees an active with a higher term and yields, then resyncs.
    assert_eq!(
        send(&a, &mut b, c.at(3050)),
        vec![BecomeStandby, RequestBulk, SendHeartbeat]
    );
    assert_eq!(b.role(), Role::Standby);
    b.on_bulk_done(c.at(3100));
    assert!(!has(&send(&a, &mut b, c.at(3100)), BecomeActive));
}

#[test]
fn takeover_is_refused_until_synced_and_the_peer_yields() {
    let c = Clock::new();
    let mut b = Election::new(cfg(2, 100, false), c.at(0));
    tick_range(&mut b, &c, 0, 300);
    let mut a = Election::new(cfg(1, 50, false), c.at(500));
    send(&b, &mut a, c.at(500));
    assert_eq!(a.takeover(c.at(510)), Err(Refused::NotSynced));
    assert_eq!(a.role(), Role::Standby);

    a.on_bulk_done(c.at(600));
    send(&b, &mut a, c.at(600));
    assert_eq!(a.takeover(c.at(610)), Ok(vec![BecomeActive, SendHeartbeat]));
    assert_eq!(a.takeover(c.at(620)), Err(Refused::AlreadyActive));
    // B (higher priority, but a lower term) yields to the operator's choice.
    assert_eq!(
        send(&a, &mut b, c.at(620)),
        vec![BecomeStandby, RequestBulk, SendHeartbeat]
    );
    assert_eq!((a.role(), b.role()), (Role::Active, Role::Standby));
    assert!(
        !has(&send(&b, &mut a, c.at(700)), BecomeStandby),
        "A keeps it"
    );
}

#[test]
fn release_hands_the_role_to_a_synced_peer_and_sticks() {
    let c = Clock::new();
    // A: higher priority, preempt on, and active.
    let (mut b, mut a) = active_b_standby_a(&c, cfg(2, 100, false), cfg(1, 200, true));
    assert_eq!((a.role(), b.role()), (Role::Active, Role::Standby));
    assert_eq!(b.release(c.at(1000)), Err(Refused::NotActive));

    assert_eq!(
        a.release(c.at(1010)),
        Ok(vec![BecomeStandby, SendHeartbeat])
    );
    assert!(a.heartbeat(0).yielding);
    // B is lower-ranked but A yields: B takes over at once.
    assert_eq!(
        send(&a, &mut b, c.at(1010)),
        vec![BecomeActive, SendHeartbeat]
    );
    send(&b, &mut a, c.at(1020));
    assert!(
        !a.heartbeat(0).yielding,
        "yielding ends once the peer is active"
    );
    assert!(
        a.bulk_synced(),
        "A's table was the reference: no resync needed"
    );
    for ms in (1100..3000).step_by(100) {
        assert!(
            !has(&send(&b, &mut a, c.at(ms)), BecomeActive),
            "preempt does not undo a release"
        );
        send(&a, &mut b, c.at(ms));
    }
    assert_eq!((a.role(), b.role()), (Role::Standby, Role::Active));
}

#[test]
fn release_is_refused_without_a_live_synced_peer() {
    let c = Clock::new();
    let mut a = Election::new(cfg(1, 100, false), c.at(0));
    tick_range(&mut a, &c, 0, 300);
    assert_eq!(a.release(c.at(400)), Err(Refused::PeerNotAlive));
    let mut b = Election::new(cfg(2, 100, false), c.at(400));
    send(&a, &mut b, c.at(400));
    send(&b, &mut a, c.at(400));
    assert_eq!(a.release(c.at(410)), Err(Refused::PeerNotSynced));
    assert_eq!(a.role(), Role::Active);
    assert_eq!(
        Refused::NotSynced.to_string(),
        "the bulk sync from the peer is not complete; taking over now would reset the peer's clients; wait for `lb ha status` to show synced"
    );
}

#[test]
fn cutting_only_the_sync_link_changes_no_role() {
    let c = Clock::new();
    let (mut a, mut b) = active_b_standby_a(&c, cfg(1, 100, false), cfg(2, 200, false));
    // Last heartbeats at 1000. From then on only ticks, and the data-plane
    // check says the peer is up.
    for ms in (1050..10_000).step_by(50) {
        let now = c.at(ms);
        for (e, name) in [(&mut a, "standby"), (&mut b, "active")] {
            let acts = [e.on_peer_liveness(true, now), e.on_tick(now)].concat();
            assert!(
                acts.iter().all(|&x| x == SendHeartbeat),
                "{name} at {ms}: {acts:?}"
            );
        }
    }
    assert_eq!((a.role(), b.role()), (Role::Standby, Role::Active));
    assert!(!a.status(c.at(10_000)).peer_alive);
    assert_eq!(a.status(c.at(10_000)).peer_liveness, Some(true));
    // Silence alone loses nothing: the stream resends what the active sent
    // meanwhile, and a gap it cannot fill asks for a copy (stream::Inbox).
    assert!(a.bulk_synced());

    // The link heals: nobody changes role, no copy is needed.
    let acts = send(&b, &mut a, c.at(10_000));
    assert!(!has(&acts, RequestBulk), "{acts:?}");
    assert!(!has(&acts, BecomeActive));
    assert!(!has(&send(&a, &mut b, c.at(10_000)), BecomeStandby));
    // Had the active dropped events, the agent would report it.
    let acts = a.on_sync_lost(c.at(10_050));
    assert!(has(&acts, RequestBulk), "{acts:?}");
    a.on_bulk_done(c.at(10_500));
    assert!(a.bulk_synced());
}

#[test]
fn a_node_starting_while_the_link_is_cut_stays_off_the_floating_ips() {
    let c = Clock::new();
    let mut a = Election::new(cfg(1, 200, false), c.at(0));
    a.on_peer_liveness(true, c.at(250));
    assert_eq!(a.on_tick(c.at(300)), vec![BecomeStandby, SendHeartbeat]);
    for ms in (350..2000).step_by(50) {
        a.on_peer_liveness(true, c.at(ms));
        assert!(!has(&a.on_tick(c.at(ms)), BecomeActive), "{ms}");
    }
    assert_eq!(a.role(), Role::Standby);
}

#[test]
fn the_active_dies_and_the_standby_takes_over_within_the_dead_interval() {
    let c = Clock::new();
    let (mut a, b) = active_b_standby_a(&c, cfg(1, 100, false), cfg(2, 200, false));
    let b_term = b.term();
    // Last heartbeat from B at 1000; its links go down, the check fails.
    for ms in [1100, 1200] {
        a.on_peer_liveness(false, c.at(ms));
        assert!(
            !has(&a.on_tick(c.at(ms)), BecomeActive),
            "too early at {ms}"
        );
    }
    a.on_peer_liveness(false, c.at(1299));
    assert_eq!(a.on_tick(c.at(1299)), vec![]);
    assert_eq!(a.on_tick(c.at(1300)), vec![BecomeActive, SendHeartbeat]);
    assert_eq!(a.role(), Role::Active);
    assert!(a.term() > b_term);
}

#[test]
fn without_a_liveness_report_or_with_a_stale_one_silence_alone_promotes() {
    let c = Clock::new();
    // Never reported: plain VRRP behaviour.
    let (mut a, _b) = active_b_standby_a(&c, cfg(1, 100, false), cfg(2, 200, false));
    assert!(!has(&tick_range(&mut a, &c, 1100, 1200), BecomeActive));
    assert!(has(&a.on_tick(c.at(1300)), BecomeActive));

    // "Alive" last reported at 1000 expires at 1300 (ttl = dead interval).
    let (mut a, _b) = active_b_standby_a(&c, cfg(1, 100, false), cfg(2, 200, false));
    a.on_peer_liveness(true, c.at(1000));
    assert!(!has(&tick_range(&mut a, &c, 1100, 1200), BecomeActive));
    assert!(!has(&a.on_tick(c.at(1299)), BecomeActive));
    assert!(has(&a.on_tick(c.at(1300)), BecomeActive));
}

#[test]
fn a_node_s_own_stall_is_not_the_peer_s_silence() {
    let c = Clock::new();
    let (mut a, b) = active_b_standby_a(&c, cfg(1, 100, false), cfg(2, 200, false));
    // Nothing ran on A from 1000 to 3000 (a sweep of a big table blocked
    // its loop); B's heartbeats wait unread in its socket. A comes back to
    // a failing liveness check (its pinger starved too): still no takeover,
    // no copy lost, since A cannot have heard anyone meanwhile.
    a.on_peer_liveness(false, c.at(3000));
    let acts = a.on_tick(c.at(3000));
    assert!(!has(&acts, BecomeActive), "{acts:?}");
    assert!(a.status(c.at(3000)).peer_alive);
    assert!(a.bulk_synced());
    // It reads the queued heartbeats: all is well.
    let acts = send(&b, &mut a, c.at(3010));
    assert!(
        !has(&acts, BecomeActive) && !has(&acts, RequestBulk),
        "{acts:?}"
    );
    assert_eq!(a.role(), Role::Standby);

    // A stall and then real silence: the dead interval counts from the end
    // of the stall, so the takeover comes one dead interval later.
    let (mut a, _b) = active_b_standby_a(&c, cfg(1, 100, false), cfg(2, 200, false));
    a.on_peer_liveness(false, c.at(3000));
    assert!(!has(&a.on_tick(c.at(3000)), BecomeActive));
    for ms in (3050..=3150).step_by(50) {
        let acts = [a.on_peer_liveness(false, c.at(ms)), a.on_tick(c.at(ms))].concat();
        assert!(!has(&acts, BecomeActive), "{ms}");
    }
    assert!(has(&a.on_peer_liveness(false, c.at(3200)), BecomeActive));
}

#[test]
fn two_actives_resolve_the_same_way_on_both_sides() {
    let c = Clock::new();
    // Both started alone while the link was down: both active, term 1.
    let mut a = Election::new(cfg(1, 100, false), c.at(0));
    let mut b = Election::new(cfg(2, 200, false), c.at(0));
    tick_range(&mut a, &c, 0, 300);
    tick_range(&mut b, &c, 0, 300);
    assert_eq!((a.term(), b.term()), (1, 1));
    // Equal terms: priority decides. Both heartbeats cross in flight.
    let (hb_a, hb_b) = (hb(&a), hb(&b));
    assert_eq!(
        a.on_heartbeat(hb_b, c.at(400)),
        vec![BecomeStandby, RequestBulk, SendHeartbeat]
    );
    assert!(!has(&b.on_heartbeat(hb_a, c.at(400)), BecomeStandby));
    assert_eq!((a.role(), b.role()), (Role::Standby, Role::Active));

    // A higher term beats a higher priority: a fresh A syncs from B and
    // takes over by hand (term 2).
    let mut a = Election::new(cfg(1, 100, false), c.at(340));
    send(&b, &mut a, c.at(350));
    a.on_bulk_done(c.at(360));
    a.takeover(c.at(370)).expect("synced");
    assert_eq!((a.term(), b.term()), (2, 1));
    assert_eq!(
        send(&a, &mut b, c.at(400)),
        vec![BecomeStandby, RequestBulk, SendHeartbeat]
    );
    assert_eq!(send(&b, &mut a, c.at(400)), vec![]);
}

#[test]
fn heartbeats_carry_the_state_and_go_out_on_every_change() {
    let c = Clock::new();
    let (a, b) = active_b_standby_a(&c, cfg(1, 100, false), cfg(2, 200, false));
    let beat = b.heartbeat(42);
    assert_eq!(
        beat,
        wire::Heartbeat {
            priority: 200,
            role: Role::Active,
            term: 1,
            bulk_synced: true,
            yielding: false,
            flows: 42,
            next_seq: 0,
        }
    );
    assert_eq!(PeerInfo::from_heartbeat(2, &beat), hb(&b));
    assert!(a.heartbeat(0).bulk_synced);
    assert_eq!(a.heartbeat(0).role, Role::Standby);
}

#[test]
fn config_defaults_the_dead_interval_to_three_heartbeats() {
    let ha: Ha = serde_yaml::from_str(
        "node_id: 3\npriority: 150\nlisten: 10.0.9.1:7400\npeer: 10.0.9.2:7400\nkey_file: /etc/lb/ha.key\nheartbeat: 200ms\npreempt: true\n",
    )
    .expect("valid ha section");
    let cfg = ElectionConfig::from_ha(&ha);
    assert_eq!(cfg.dead_interval, Duration::from_millis(600));
    assert_eq!(cfg.liveness_ttl, cfg.dead_interval);
    assert_eq!((cfg.node_id, cfg.priority, cfg.preempt), (3, 150, true));
}

#[test]
fn a_resumed_active_keeps_the_role_next_to_a_standby() {
    let c = Clock::new();
    let (mut a, _b) = active_b_standby_a(&c, cfg(1, 100, false), cfg(2, 200, false));
    // b's agent restarts on a datapath that kept forwarding.
    let mut b2 = Election::resume_active(cfg(2, 200, false), c.at(2000));
    assert_eq!(b2.role(), Role::Active);
    let acts = send(&b2, &mut a, c.at(2000));
    assert_eq!(a.role(), Role::Standby);
    assert!(!has(&acts, BecomeActive));
    send(&a, &mut b2, c.at(2000));
    assert_eq!(b2.role(), Role::Active);
}

#[test]
fn a_resumed_node_steps_down_for_a_peer_that_took_over() {
    let c = Clock::new();
    let (mut a, mut b) = active_b_standby_a(&c, cfg(1, 100, false), cfg(2, 200, false));
    // b dies; a takes over after the dead interval with the peer silent.
    a.on_peer_liveness(false, c.at(1100));
    let acts = tick_range(&mut a, &c, 1100, 1400);
    assert!(has(&acts, BecomeActive));
    assert!(a.term() > b.term());
    // b's agent comes back on its old datapath and claims the role with an
    // unknown term: the first heartbeat from a settles it.
    b = Election::resume_active(cfg(2, 200, false), c.at(2000));
    let acts = send(&a, &mut b, c.at(2000));
    assert_eq!(b.role(), Role::Standby);
    assert!(has(&acts, BecomeStandby));
    assert!(has(&acts, RequestBulk), "it needs a's table now");
    send(&b, &mut a, c.at(2000));
    assert_eq!(a.role(), Role::Active);
}

#[test]
fn a_lost_sync_makes_a_standby_ask_for_a_new_copy() {
    let c = Clock::new();
    let (mut a, mut b) = active_b_standby_a(&c, cfg(1, 100, false), cfg(2, 200, false));
    let acts = a.on_sync_lost(c.at(1050));
    assert!(!a.bulk_synced());
    assert!(has(&acts, RequestBulk));
    assert_eq!(a.role(), Role::Standby);
    // On the active node it changes nothing.
    let acts = b.on_sync_lost(c.at(1050));
    assert!(b.bulk_synced());
    assert!(!has(&acts, RequestBulk));
}

#[test]
fn a_copy_in_progress_is_not_requested_again_while_the_active_is_busy() {
    let c = Clock::new();
    let (mut a, b) = active_b_standby_a(&c, cfg(1, 100, false), cfg(2, 200, false));
    // Events were lost: A asks for a copy at 1050.
    assert!(has(&a.on_sync_lost(c.at(1050)), RequestBulk));
    // B goes quiet for 600 ms reading its big table (the floating IPs still
    // answer), then is heard again: the copy it is sending is not restarted.
    for ms in (1100..=1650).step_by(50) {
        let acts = [a.on_peer_liveness(true, c.at(ms)), a.on_tick(c.at(ms))].concat();
        assert!(
            !has(&acts, RequestBulk) && !has(&acts, BecomeActive),
            "{ms}: {acts:?}"
        );
    }
    assert!(!has(&send(&b, &mut a, c.at(1700)), RequestBulk));
    // Parts of it arrive, each resetting the retry timer (1 s here)...
    for ms in (1750..=2900).step_by(50) {
        a.on_bulk_progress(c.at(ms));
        if ms % 100 == 0 {
            assert!(!has(&send(&b, &mut a, c.at(ms)), RequestBulk), "{ms}");
        } else {
            assert!(!has(&a.on_tick(c.at(ms)), RequestBulk), "{ms}");
        }
    }
    // ...and a copy that stopped moving is asked for again.
    let acts: Vec<Action> = (2950..=4000)
        .step_by(50)
        .flat_map(|ms| {
            if ms % 100 == 0 {
                send(&b, &mut a, c.at(ms))
            } else {
                a.on_tick(c.at(ms))
            }
        })
        .collect();
    assert!(has(&acts, RequestBulk), "{acts:?}");
}
