//! Codec, MAC and replay protection, on bytes made in the tests.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use super::*;

const A: u8 = 1;
const B: u8 = 2;

fn key() -> Key {
    Key::from_bytes(b"0123456789abcdef0123456789abcdef").expect("test key")
}

fn other_key() -> Key {
    Key::from_bytes(b"fedcba9876543210fedcba9876543210").expect("test key")
}

fn addr(last: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, last), port)
}

fn tuple(n: u16) -> FlowTuple {
    FlowTuple::new(
        SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 40_000 + n).into(),
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 80).into(),
        6,
    )
    .expect("one family")
}

fn upsert(n: u16) -> FlowEvent {
    let u = Upsert::new(
        tuple(n),
        addr(11, 8080).into(),
        2,
        1_000_000 + u64::from(n),
        u64::from(n),
    );
    FlowEvent::Upsert(u.expect("one family"))
}

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn tuple6(n: u16) -> FlowTuple {
    let client = sock(&format!("[2001:db8:c::7]:{}", 40_000 + n));
    FlowTuple::new(client, sock("[2001:db8::10]:80"), 17).expect("one family")
}

fn upsert6(n: u16) -> FlowEvent {
    let u = Upsert::new(
        tuple6(n),
        sock("[2001:db8:2::11]:8080"),
        5,
        2_000_000 + u64::from(n),
        u64::from(n),
    );
    FlowEvent::Upsert(u.expect("one family"))
}

fn heartbeat() -> Message {
    Message::Heartbeat(Heartbeat {
        priority: 200,
        role: Role::Active,
        term: 7,
        bulk_synced: true,
        yielding: false,
        flows: 123_456,
        next_seq: 987_654,
    })
}

/// One of each message kind, every field away from zero.
fn every_message() -> Vec<Message> {
    vec![
        heartbeat(),
        Message::Heartbeat(Heartbeat {
            priority: 0,
            role: Role::Init,
            term: 0,
            bulk_synced: false,
            yielding: true,
            flows: 0,
            next_seq: 0,
        }),
        Message::FlowBatch(FlowBatch {
            first_seq: 42,
            events: vec![upsert(1), FlowEvent::Remove { key: tuple(2) }, upsert(3)],
        }),
        Message::FlowBatch(FlowBatch {
            first_seq: 1,
            events: vec![],
        }),
        Message::Ack { up_to_seq: 44 },
        Message::BulkRequest,
        Message::FlowBatch(FlowBatch {
            first_seq: 7,
            events: vec![
                FlowEvent::BulkStart,
                upsert(4),
                FlowEvent::BulkEnd { total: 1 << 40 },
            ],
        }),
        Message::FlowBatch(FlowBatch {
            first_seq: 9,
            events: vec![
                upsert6(1),
                upsert(5),
                FlowEvent::Remove { key: tuple6(2) },
                FlowEvent::Remove { key: tuple(6) },
            ],
        }),
    ]
}

fn pair() -> (Sender, Receiver) {
    (Sender::new(key(), A, 1000), Receiver::new(key(), B))
}

#[test]
fn every_message_round_trips() {
    let (mut tx, mut rx) = pair();
    for (i, msg) in every_message().into_iter().enumerate() {
        let dgram = tx.seal(&msg).expect("fits");
        let got = rx.open(&dgram).unwrap_or_else(|r| panic!("{msg:?}: {r:?}"));
        assert_eq!(got.message, msg);
        let seq = i as u64 + 1;
        assert_eq!(
            got.header,
            Header {
                version: VERSION,
                node_id: A,
                boot_id: 1000,
                seq
            }
        );
        assert_eq!(
            got.new_boot,
            i == 0,
            "only the first datagram is a new boot"
        );
    }
    assert_eq!(rx.counters().accepted, 8);
}

#[test]
fn layout_is_the_documented_one() {
    let (mut tx, _) = pair();
    let dgram = tx.seal(&heartbeat()).expect("fits");
    assert_eq!(dgram.len(), OVERHEAD + 27);
    assert_eq!(&dgram[..4], b"LBHA");
    assert_eq!(dgram[4..7], [2, 1, A]);
    assert_eq!(dgram[7..15], 1000u64.to_be_bytes());
    assert_eq!(dgram[15..23], 1u64.to_be_bytes());
    // priority, role, flags (bulk_synced), term, flows, next_seq
    assert_eq!(dgram[23..26], [200, 2, 1]);
    assert_eq!(dgram[26..34], 7u64.to_be_bytes());
    assert_eq!(dgram[34..42], 123_456u64.to_be_bytes());
    assert_eq!(dgram[42..50], 987_654u64.to_be_bytes());

    let (dgram, n) = tx.seal_events(9, &[upsert(1), FlowEvent::Remove { key: tuple(2) }]);
    assert_eq!(n, 2);
    assert_eq!(dgram.len(), OVERHEAD + 10 + UPSERT_LEN + REMOVE_LEN);
    assert_eq!(UPSERT_LEN, 37);
    assert_eq!(REMOVE_LEN, 14);
    let p = &dgram[HEADER_LEN..];
    assert_eq!(p[..8], 9u64.to_be_bytes());
    assert_eq!(p[8..10], [0, 2]);
    // upsert: tag, client 198.51.100.7:40001, vip 192.0.2.10:80, tcp, real 10.0.0.11:8080
    assert_eq!(
        p[10..30],
        [
            1, 198, 51, 100, 7, 0x9c, 0x41, 192, 0, 2, 10, 0, 80, 6, 10, 0, 0, 11, 0x1f, 0x90
        ]
    );
}

#[test]
fn a_flipped_bit_anywhere_is_rejected() {
    let (mut tx, _) = pair();
    let dgram = tx.seal(&heartbeat()).expect("fits");
    for byte in 0..dgram.len() {
        for bit in 0..8 {
            let mut bad = dgram.clone();
            bad[byte] ^= 1 << bit;
            // A fresh receiver each time, so the window plays no part.
            let mut rx = Receiver::new(key(), B);
            let expected = match byte {
                0..4 => Reject::Malformed,
                4 => Reject::WrongVersion,
                _ => Reject::BadMac,
            };
            assert_eq!(rx.open(&bad), Err(expected), "byte {byte} bit {bit}");
        }
    }
    let mut rx = Receiver::new(key(), B);
    assert!(rx.open(&dgram).is_ok(), "the unmodified datagram opens");
}

#[test]
fn wrong_key_fails_the_mac_and_changes_nothing() {
    let mut forger = Sender::new(other_key(), A, 1000);
    let (mut tx, mut rx) = pair();
    // A forged datagram with a huge seq and a later boot id must not move
    // the window: the genuine traffic after it is still accepted.
    let forged = Sender::new(other_key(), A, u64::MAX).seal(&heartbeat());
    assert_eq!(rx.open(&forged.expect("fits")), Err(Reject::BadMac));
    assert_eq!(
        rx.open(&forger.seal(&heartbeat()).expect("fits")),
        Err(Reject::BadMac)
    );
    assert!(rx.open(&tx.seal(&heartbeat()).expect("fits")).is_ok());
    assert_eq!(rx.peer_boot(A), Some(1000));
    assert_eq!(rx.counters().bad_mac, 2);
    assert_eq!(rx.counters().accepted, 1);
}

#[test]
fn truncated_padded_or_foreign_datagrams_are_malformed() {
    let (mut tx, mut rx) = pair();
    let dgram = tx.seal(&heartbeat()).expect("fits");
    for len in [0, 4, HEADER_LEN, OVERHEAD - 1] {
        assert_eq!(rx.open(&dgram[..len]), Err(Reject::Malformed), "len {len}");
    }
    // Cut inside the payload: the MAC no longer matches.
    assert_eq!(rx.open(&dgram[..dgram.len() - 1]), Err(Reject::BadMac));
    assert_eq!(
        rx.open(b"GET / HTTP/1.1\r\n\r\n......................................"),
        Err(Reject::Malformed)
    );
    assert_eq!(rx.counters().malformed, 5);
}

/// A datagram with a valid MAC over a payload that does not parse: sealed
/// by hand, as only a broken or incompatible peer would send it.
fn sealed_raw(kind: u8, seq: u64, payload: &[u8]) -> Vec<u8> {
    sealed_raw_in(VERSION, kind, seq, payload)
}

/// `sealed_raw` in another wire version.
fn sealed_raw_in(version: u8, kind: u8, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[version, kind, A]);
    out.extend_from_slice(&1000u64.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(payload);
    let tag = key().tag(&out);
    out.extend_from_slice(&tag);
    out
}

#[test]
fn authentic_but_unparsable_payloads_are_malformed_and_do_not_move_the_window() {
    let mut rx = Receiver::new(key(), B);
    let cases: Vec<(u8, Vec<u8>)> = vec![
        (99, vec![]),                                            // unknown kind
        (KIND_BULK_REQUEST, vec![0]),                            // trailing byte
        (KIND_ACK, vec![0; 7]),                                  // short
        (KIND_HEARTBEAT, [&[200, 3, 0][..], &[0; 16]].concat()), // role 3
        (KIND_HEARTBEAT, [&[200, 2, 4][..], &[0; 16]].concat()), // unknown flag bit
        (
            KIND_FLOW_BATCH,
            [&[0; 8][..], &[0, 1], &[9], &[0; 13]].concat(),
        ), // unknown tag
        (KIND_FLOW_BATCH, [&[0; 8][..], &[0xff, 0xff]].concat()), // count past the end
    ];
    for (i, (kind, payload)) in cases.iter().enumerate() {
        let dgram = sealed_raw(*kind, 100 + i as u64, payload);
        assert_eq!(rx.open(&dgram), Err(Reject::Malformed), "case {i}");
    }
    assert_eq!(rx.peer_boot(A), None, "nothing was accepted");
    // A proper datagram with a low seq is still first contact.
    let ok = sealed_raw(KIND_BULK_REQUEST, 1, &[]);
    assert!(rx.open(&ok).expect("valid").new_boot);
}

#[test]
fn another_version_is_counted_not_parsed() {
    let (mut tx, mut rx) = pair();
    let dgram = tx.seal(&heartbeat()).expect("fits");
    for version in [0, 3, 255] {
        let mut d = dgram.clone();
        d[4] = version;
        assert_eq!(rx.open(&d), Err(Reject::WrongVersion), "version {version}");
    }
    assert_eq!(rx.counters().dropped(Reject::WrongVersion), 3);
}

#[test]
fn our_own_datagrams_are_rejected() {
    let mut tx = Sender::new(key(), B, 1000);
    let mut rx = Receiver::new(key(), B);
    assert_eq!(
        rx.open(&tx.seal(&heartbeat()).expect("fits")),
        Err(Reject::FromSelf)
    );
    assert_eq!(rx.counters().from_self, 1);
    assert_eq!(Reject::FromSelf.as_str(), "self");
}

#[test]
fn replayed_datagrams_are_rejected() {
    let (mut tx, mut rx) = pair();
    let first = tx.seal(&heartbeat()).expect("fits");
    let second = tx.seal(&Message::Ack { up_to_seq: 1 }).expect("fits");
    assert!(rx.open(&first).is_ok());
    assert!(rx.open(&second).is_ok());
    assert_eq!(rx.open(&second), Err(Reject::Replay), "newest again");
    assert_eq!(rx.open(&first), Err(Reject::Replay), "older again");
    assert_eq!(rx.counters().replay, 2);
    assert_eq!(rx.counters().accepted, 2);
}

#[test]
fn reordering_within_the_window_is_accepted_once() {
    let (mut tx, mut rx) = pair();
    let dgrams: Vec<Vec<u8>> = (0..70)
        .map(|n| tx.seal(&Message::Ack { up_to_seq: n }).expect("fits"))
        .collect();
    // First contact at seq 1, then seq 70, then 69 down to 7 (63 behind:
    // inside), each once.
    assert!(rx.open(&dgrams[0]).is_ok());
    assert!(rx.open(&dgrams[69]).is_ok());
    for seq in (7..70).rev() {
        let d = &dgrams[seq as usize - 1];
        assert!(rx.open(d).is_ok(), "seq {seq} within the window");
        assert_eq!(rx.open(d), Err(Reject::Replay), "seq {seq} twice");
    }
    // seq 6 is 64 behind 70: outside the window.
    assert_eq!(rx.open(&dgrams[5]), Err(Reject::Stale));
    assert_eq!(rx.counters().accepted, 65);
    assert_eq!(rx.counters().replay, 63);
    assert_eq!(rx.counters().stale, 1);
}

#[test]
fn what_was_sent_before_first_contact_cannot_be_replayed() {
    let (mut tx, mut rx) = pair();
    let dgrams: Vec<Vec<u8>> = (0..10)
        .map(|n| tx.seal(&Message::Ack { up_to_seq: n }).expect("fits"))
        .collect();
    // The receiver starts listening at seq 10; 1..9 were recorded by
    // someone else while it was down.
    assert!(rx.open(&dgrams[9]).expect("live").new_boot);
    for d in &dgrams[..9] {
        assert_eq!(rx.open(d), Err(Reject::Replay));
    }
    assert_eq!(rx.counters().accepted, 1);
}

#[test]
fn a_jump_past_the_window_forgets_the_old_bitmap() {
    let (mut tx, mut rx) = pair();
    let dgrams: Vec<Vec<u8>> = (0..200)
        .map(|n| tx.seal(&Message::Ack { up_to_seq: n }).expect("fits"))
        .collect();
    assert!(rx.open(&dgrams[0]).is_ok()); // seq 1
    assert!(rx.open(&dgrams[149]).is_ok()); // seq 150, far ahead
    assert!(rx.open(&dgrams[99]).is_ok(), "seq 100 is 50 behind: inside");
    assert_eq!(
        rx.open(&dgrams[49]),
        Err(Reject::Stale),
        "seq 50 is 100 behind"
    );
    assert_eq!(rx.open(&dgrams[0]), Err(Reject::Stale));
}

#[test]
fn a_restarted_peer_is_accepted_and_its_old_boot_is_not() {
    let (mut old, mut rx) = pair();
    let early = old.seal(&heartbeat()).expect("fits");
    let recorded: Vec<Vec<u8>> = (0..5)
        .map(|_| old.seal(&heartbeat()).expect("fits"))
        .collect();
    assert!(rx.open(&early).is_ok());
    for d in &recorded {
        assert!(rx.open(d).is_ok());
    }
    // The peer restarts: a later boot id, seq back at 1.
    let mut new = Sender::new(key(), A, 2000);
    let got = rx
        .open(&new.seal(&heartbeat()).expect("fits"))
        .expect("restart accepted");
    assert!(got.new_boot);
    assert_eq!(got.header.seq, 1);
    assert_eq!(rx.counters().peer_restarts, 1);
    // Recorded traffic of the previous run is now stale, even unseen seqs.
    let unseen = old.seal(&heartbeat()).expect("fits");
    assert_eq!(rx.open(&unseen), Err(Reject::Stale));
    assert_eq!(rx.open(&recorded[0]), Err(Reject::Stale));
    // The new boot carries on.
    assert!(
        !rx.open(&new.seal(&heartbeat()).expect("fits"))
            .expect("next")
            .new_boot
    );
    assert_eq!(rx.peer_boot(A), Some(2000));
}

#[test]
fn boot_ids_follow_the_wall_clock() {
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert!(boot_id(t + Duration::from_millis(1)) > boot_id(t));
    assert_eq!(boot_id(UNIX_EPOCH), 1, "never zero");
}

#[test]
fn batches_respect_the_datagram_limit() {
    let events: Vec<FlowEvent> = (0..500)
        .map(|n| match n % 6 {
            0 => FlowEvent::Remove { key: tuple(n) },
            1 => FlowEvent::Remove { key: tuple6(n) },
            2 => upsert6(n),
            _ => upsert(n),
        })
        .collect();
    for max in [MIN_DATAGRAM, 200, 576, MAX_DATAGRAM, 9000] {
        let (mut tx, mut rx) = (
            Sender::new(key(), A, 1).with_max_datagram(max),
            Receiver::new(key(), B),
        );
        let mut sent = 0;
        let mut seq = 1;
        while sent < events.len() {
            let (dgram, n) = tx.seal_events(seq, &events[sent..]);
            assert!(n >= 1, "progress at max {max}");
            assert!(dgram.len() <= max, "{} > {max}", dgram.len());
            // Nothing more would have fit.
            if let Some(next) = events.get(sent + n) {
                assert!(
                    dgram.len() + next.encoded_len() > max,
                    "packed at max {max}"
                );
            }
            let Message::FlowBatch(batch) = rx.open(&dgram).expect("opens").message else {
                panic!("not a batch");
            };
            assert_eq!(batch.first_seq, seq);
            assert_eq!(batch.events, events[sent..sent + n]);
            sent += n;
            seq += n as u64;
        }
    }
    // At the default limit: (1400 - 55 - 10) / 37 = 36 upserts per datagram.
    let upserts: Vec<FlowEvent> = (0..100).map(upsert).collect();
    let (_, n) = Sender::new(key(), A, 1).seal_events(1, &upserts);
    assert_eq!(n, 36);
}

#[test]
fn an_oversized_hand_built_batch_is_refused_without_using_a_seq() {
    let mut tx = Sender::new(key(), A, 1);
    let batch = Message::FlowBatch(FlowBatch {
        first_seq: 1,
        events: (0..100).map(upsert).collect(),
    });
    assert_eq!(
        tx.seal(&batch),
        Err(WireError::TooLarge {
            len: OVERHEAD + 10 + 100 * UPSERT_LEN,
            max: MAX_DATAGRAM
        })
    );
    assert_eq!(tx.next_seq(), 1);
    assert_eq!(tx.with_max_datagram(1).max_datagram(), MIN_DATAGRAM);
}

/// A file in a fresh temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &[u8], mode: u32) -> TempFile {
        let dir = std::env::temp_dir().join(format!("lb-ha-key-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("ha.key");
        fs::write(&path, content).expect("write key");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn key_file_is_read_trimmed() {
    let f = TempFile::new("ok", b"0123456789abcdef0123456789abcdef\n", 0o600);
    let from_file = Key::from_file(&f.0).expect("valid key file");
    // Same key as the untrimmed bytes without the newline: they interoperate.
    let mut tx = Sender::new(from_file, A, 1);
    let mut rx = Receiver::new(key(), B);
    assert!(rx.open(&tx.seal(&heartbeat()).expect("fits")).is_ok());
    assert_eq!(format!("{:?}", key()), "Key(..)", "the secret never prints");
}

#[test]
fn key_file_errors_say_what_to_do() {
    let empty = TempFile::new("empty", b" \n", 0o600);
    let err = Key::from_file(&empty.0).expect_err("empty");
    assert!(matches!(err, KeyError::Empty { .. }), "{err:?}");
    assert!(err.to_string().contains("head -c 32 /dev/urandom"), "{err}");

    let short = TempFile::new("short", b"secret\n", 0o600);
    let err = Key::from_file(&short.0).expect_err("short");
    assert!(matches!(err, KeyError::TooShort { len: 6, .. }), "{err:?}");

    let open = TempFile::new("open", b"0123456789abcdef0123456789abcdef", 0o644);
    let err = Key::from_file(&open.0).expect_err("world-readable");
    assert!(
        matches!(err, KeyError::WorldAccessible { mode: 0o644, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");

    let writable = TempFile::new("writable", b"0123456789abcdef0123456789abcdef", 0o602);
    assert!(matches!(
        Key::from_file(&writable.0),
        Err(KeyError::WorldAccessible { .. })
    ));

    // Group-readable is allowed: an `lb` group may share it.
    let group = TempFile::new("group", b"0123456789abcdef0123456789abcdef", 0o640);
    assert!(Key::from_file(&group.0).is_ok());

    let dir = group.0.parent().expect("dir").to_owned();
    assert!(matches!(
        Key::from_file(&dir),
        Err(KeyError::NotAFile { .. })
    ));
    let missing = dir.join("missing");
    let err = Key::from_file(&missing).expect_err("missing");
    assert!(matches!(err, KeyError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");

    assert!(matches!(
        Key::from_bytes(b""),
        Err(KeyError::Empty { path: None })
    ));
}

#[test]
fn ipv6_events_have_the_documented_layout() {
    assert_eq!((UPSERT6_LEN, REMOVE6_LEN), (73, 38));
    let (mut tx, _) = pair();
    let events = [upsert6(1), FlowEvent::Remove { key: tuple6(2) }];
    let (dgram, n) = tx.seal_events(3, &events);
    assert_eq!(n, 2);
    assert_eq!(dgram.len(), OVERHEAD + 10 + 73 + 38);
    assert_eq!(dgram[4], 2, "IPv6 events go in version 2");
    let p = &dgram[HEADER_LEN..dgram.len() - MAC_LEN];
    assert_eq!(p[..10], [0, 0, 0, 0, 0, 0, 0, 3, 0, 2]);
    let client = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
    ];
    let vip = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let real = [
        0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
    ];
    let mut want = vec![5];
    want.extend_from_slice(&client);
    want.extend_from_slice(&[0x9c, 0x41]); // 40001
    want.extend_from_slice(&vip);
    want.extend_from_slice(&[0, 80, 17]);
    want.extend_from_slice(&real);
    want.extend_from_slice(&[0x1f, 0x90, 5]); // 8080, state
    want.extend_from_slice(&2_000_001u64.to_be_bytes());
    want.extend_from_slice(&1u64.to_be_bytes());
    want.push(6);
    want.extend_from_slice(&client);
    want.extend_from_slice(&[0x9c, 0x42]); // 40002
    want.extend_from_slice(&vip);
    want.extend_from_slice(&[0, 80, 17]);
    assert_eq!(p[10..], want[..]);
}

#[test]
fn tuples_and_upserts_are_of_one_family() {
    let v4 = sock("192.0.2.10:80");
    let v6 = sock("[2001:db8::10]:80");
    assert!(FlowTuple::new(v4, v6, 6).is_none());
    assert!(FlowTuple::new(v6, v4, 6).is_none());
    // IPv4 has one form on the wire: never IPv4-mapped IPv6.
    let mapped = sock("[::ffff:192.0.2.7]:4000");
    assert!(FlowTuple::new(mapped, sock("[::ffff:192.0.2.10]:80"), 6).is_none());
    assert!(Upsert::new(tuple(1), v6, 2, 0, 0).is_none());
    assert!(Upsert::new(tuple6(1), v4, 2, 0, 0).is_none());
    assert!(Upsert::new(tuple6(1), mapped, 2, 0, 0).is_none());
    // Flow label and scope are no part of a flow.
    let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
        "2001:db8:c::7".parse().unwrap(),
        40_001,
        7,
        3,
    ));
    assert_eq!(FlowTuple::new(scoped, v6, 17).unwrap(), tuple6(1));
}

#[test]
fn malformed_ipv6_events_are_refused() {
    let mut rx = Receiver::new(key(), B);
    let v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1];
    let tuple_of =
        |client: [u8; 16], vip: [u8; 16]| [&client[..], &[0, 1], &vip, &[0, 80, 6]].concat();
    let remove = |tag: u8, tuple: Vec<u8>| [&[0; 8][..], &[0, 1], &[tag], &tuple].concat();
    let cases: Vec<(u8, Vec<u8>)> = vec![
        // A remove of an IPv6 flow cut one byte short.
        (VERSION, remove(6, tuple_of(v6, v6)[..36].to_vec())),
        // An IPv6 upsert with the tuple and no real.
        (VERSION, remove(5, tuple_of(v6, v6))),
        // IPv4-mapped addresses under an IPv6 tag.
        (VERSION, remove(6, tuple_of(mapped, v6))),
        (VERSION, remove(6, tuple_of(v6, mapped))),
        // An IPv6 event in a version 1 datagram: version 1 has no tag 6.
        (1, remove(6, tuple_of(v6, v6))),
        // An IPv4 remove's 14 bytes under the IPv6 tag.
        (VERSION, remove(6, vec![0; 13])),
    ];
    for (i, (version, payload)) in cases.iter().enumerate() {
        let dgram = sealed_raw_in(*version, KIND_FLOW_BATCH, 100 + i as u64, payload);
        assert_eq!(rx.open(&dgram), Err(Reject::Malformed), "case {i}");
    }
    assert_eq!(rx.peer_boot(A), None, "nothing was accepted");
    // The first case's bytes whole: accepted.
    let ok = sealed_raw(KIND_FLOW_BATCH, 1, &remove(6, tuple_of(v6, v6)));
    let Message::FlowBatch(b) = rx.open(&ok).expect("well-formed").message else {
        panic!("not a batch");
    };
    let key = b.events[0].key().expect("a remove names its flow");
    assert_eq!(key.client(), sock("[2001:db8::1]:1"));
    assert_eq!(key.vip(), sock("[2001:db8::1]:80"));
}

#[test]
fn version_1_is_read_and_sent_for_an_older_peer() {
    // An older peer's datagrams (sealed by hand: version 1, IPv4 events).
    let mut rx = Receiver::new(key(), B);
    let hb = sealed_raw_in(1, KIND_BULK_REQUEST, 1, &[]);
    let got = rx.open(&hb).expect("version 1 is read");
    assert_eq!(got.header.version, 1);
    let mut v1_batch = [&5u64.to_be_bytes()[..], &[0, 1]].concat();
    let (full, _) = Sender::new(key(), A, 1).seal_events(5, &[upsert(1)]);
    v1_batch.extend_from_slice(&full[HEADER_LEN + 10..full.len() - MAC_LEN]);
    let got = rx
        .open(&sealed_raw_in(1, KIND_FLOW_BATCH, 2, &v1_batch))
        .expect("an IPv4 upsert in version 1");
    assert_eq!(
        got.message,
        Message::FlowBatch(FlowBatch {
            first_seq: 5,
            events: vec![upsert(1)]
        })
    );

    // Answering it: version 1, byte for byte the older layout.
    let mut tx = Sender::new(key(), A, 1000);
    assert_eq!(tx.version(), VERSION, "until the peer is heard");
    tx.set_version(1);
    assert!(tx.carries(&upsert(1)) && !tx.carries(&upsert6(1)));
    assert!(tx.carries(&FlowEvent::BulkEnd { total: 1 }));
    let d = tx.seal(&heartbeat()).expect("fits");
    assert_eq!(d[4], 1);
    let mut rx = Receiver::new(key(), B);
    assert_eq!(rx.open(&d).expect("opens").header.version, 1);

    // An IPv6 event cannot go in version 1: refused whole, no seq used.
    let batch = Message::FlowBatch(FlowBatch {
        first_seq: 1,
        events: vec![upsert(1), upsert6(2)],
    });
    assert_eq!(tx.seal(&batch), Err(WireError::NotInVersion { version: 1 }));
    assert_eq!(tx.next_seq(), 2);
    // Packing stops before it; at the front it takes version 2 (which an
    // older peer drops: the stream stalls rather than skip it).
    let events = [upsert(1), upsert(2), upsert6(3), upsert(4)];
    let (d, n) = tx.seal_events(1, &events);
    assert_eq!((d[4], n), (1, 2));
    let (d, n) = tx.seal_events(3, &events[2..]);
    assert_eq!((d[4], n), (2, 2));
    // A version 2 datagram relabelled version 1 fails its MAC: the version
    // cannot be downgraded in flight.
    let mut d = Sender::new(key(), A, 2000)
        .seal(&heartbeat())
        .expect("fits");
    d[4] = 1;
    assert_eq!(Receiver::new(key(), B).open(&d), Err(Reject::BadMac));
    // The version is clamped to what this build knows.
    tx.set_version(0);
    assert_eq!(tx.version(), MIN_VERSION);
    tx.set_version(9);
    assert_eq!(tx.version(), VERSION);
}

/// Writes the seeds of the `ha_datagrams` fuzz corpus (fuzz/corpus): every
/// message kind sealed by a sender, as `fuzz_datagrams` reads them (a
/// length byte, then the body without its MAC), one file each and all in
/// one. Run by hand after a wire change: `LB_FUZZ_SEEDS=fuzz/corpus/ha_datagrams
/// cargo test -p lb-userspace --lib write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes files; run by hand with LB_FUZZ_SEEDS"]
fn write_fuzz_seeds() {
    let dir = std::path::PathBuf::from(std::env::var("LB_FUZZ_SEEDS").expect("LB_FUZZ_SEEDS"));
    let mut tx = Sender::new(key(), A, 1000);
    let mut all = Vec::new();
    for (i, msg) in every_message().iter().enumerate() {
        let sealed = tx.seal(msg).expect("seals");
        let body = &sealed[..sealed.len() - MAC_LEN];
        let mut seed = vec![u8::try_from(body.len()).expect("a short body")];
        seed.extend_from_slice(body);
        std::fs::write(dir.join(format!("seed-{i}")), &seed).expect("write");
        all.extend_from_slice(&seed);
    }
    std::fs::write(dir.join("seed-all"), &all).expect("write");
    // The same datagrams from the receiver's own node id.
    let mut own = Sender::new(key(), B, 1000);
    let sealed = own.seal(&heartbeat()).expect("seals");
    let body = &sealed[..sealed.len() - MAC_LEN];
    let mut seed = vec![body.len() as u8];
    seed.extend_from_slice(body);
    std::fs::write(dir.join("seed-self"), &seed).expect("write");
}
