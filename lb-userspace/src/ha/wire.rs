//! The sync protocol between the two nodes: one message per UDP datagram,
//! authenticated with HMAC-SHA256 under the shared key and replay-protected
//! by a per-sender boot id and sequence number.
//!
//! The format, its versions and why it is hand-written: docs/architecture.md,
//! "The HA sync protocol".

mod key;
mod receiver;
#[cfg(test)]
mod tests;

pub use key::{Key, KeyError};
pub use receiver::{Received, Receiver, Reject, RxCounters};

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Role;

pub const MAGIC: [u8; 4] = *b"LBHA";
/// The newest version: what this build seals with unless its peer speaks
/// an older one (see Versions).
pub const VERSION: u8 = 2;
/// The oldest version this build reads and still sends (see Versions).
pub const MIN_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 23;
pub const MAC_LEN: usize = 32;
/// Bytes every datagram spends outside its payload.
pub const OVERHEAD: usize = HEADER_LEN + MAC_LEN;
/// Default largest datagram: fits a 1500-byte MTU after IPv4 + UDP headers
/// with room for a tunnel or VLAN on the sync link, so nothing fragments.
pub const MAX_DATAGRAM: usize = 1400;
/// The largest UDP payload over IPv4.
pub const UDP_MAX: usize = 65_507;
const BATCH_HEADER_LEN: usize = 8 + 2;
/// A tuple and an upsert or remove event, by address length.
const fn tuple_len(addr: usize) -> usize {
    addr + 2 + addr + 2 + 1
}
const fn upsert_len(addr: usize) -> usize {
    1 + tuple_len(addr) + addr + 2 + 1 + 8 + 8
}
const fn remove_len(addr: usize) -> usize {
    1 + tuple_len(addr)
}
pub const UPSERT_LEN: usize = upsert_len(4);
pub const REMOVE_LEN: usize = remove_len(4);
pub const UPSERT6_LEN: usize = upsert_len(16);
pub const REMOVE6_LEN: usize = remove_len(16);
pub const BULK_START_LEN: usize = 1;
pub const BULK_END_LEN: usize = 1 + 8;
/// The smallest datagram limit a [`Sender`] accepts: one upsert of either
/// family must fit, or a batch could never make progress.
pub const MIN_DATAGRAM: usize = OVERHEAD + BATCH_HEADER_LEN + UPSERT6_LEN;

const KIND_HEARTBEAT: u8 = 1;
const KIND_FLOW_BATCH: u8 = 2;
const KIND_ACK: u8 = 3;
const KIND_BULK_REQUEST: u8 = 4;

const TAG_UPSERT: u8 = 1;
const TAG_REMOVE: u8 = 2;
const TAG_BULK_START: u8 = 3;
const TAG_BULK_END: u8 = 4;
const TAG_UPSERT6: u8 = 5;
const TAG_REMOVE6: u8 = 6;

const FLAG_BULK_SYNCED: u8 = 1;
const FLAG_YIELDING: u8 = 2;

/// The authenticated header fields of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The wire version the datagram was sealed with: what the peer reads.
    pub version: u8,
    pub node_id: u8,
    pub boot_id: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Heartbeat(Heartbeat),
    FlowBatch(FlowBatch),
    /// Every flow event up to and including this sequence number arrived.
    Ack {
        up_to_seq: u64,
    },
    /// Send me a full copy of your flow table.
    BulkRequest,
}

/// What a node tells its peer every heartbeat interval. The sender's node id
/// is in the datagram header, not repeated here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub priority: u8,
    pub role: Role,
    /// Election term: raised by whoever takes the active role, so two actives
    /// meeting after a partition resolve deterministically (see `election`).
    pub term: u64,
    /// The sender holds a complete copy of its peer's table.
    pub bulk_synced: bool,
    /// The sender released the active role and will not take it back from a
    /// live peer on its own.
    pub yielding: bool,
    /// Flows in the sender's table, for `lb ha status` and the sync-lag view.
    pub flows: u64,
    /// The number the sender's next flow event will get (0: it streams
    /// nothing). A standby expecting less is missing events, even when no
    /// datagram after them has arrived to show the gap (see `stream::Inbox`).
    pub next_seq: u64,
}

/// Flow events numbered `first_seq`, `first_seq + 1`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowBatch {
    pub first_seq: u64,
    pub events: Vec<FlowEvent>,
}

/// A flow as the client sees it: the forward key of `FLOWS`, in std types so
/// the wire does not inherit a map layout. Client and VIP are of one family
/// and in the one form the wire has for it (see [`FlowTuple::new`]), so
/// every tuple can be encoded and decodes back to itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    client: SocketAddr,
    vip: SocketAddr,
    proto: u8,
}

impl FlowTuple {
    /// `None` if the two are of different families, or if either is an
    /// IPv4-mapped IPv6 address (an IPv4 flow is written as IPv4). An IPv6
    /// address's flow label and scope are not part of a flow: dropped.
    pub fn new(client: SocketAddr, vip: SocketAddr, proto: u8) -> Option<FlowTuple> {
        let (client, vip) = (canonical(client)?, canonical(vip)?);
        (client.is_ipv6() == vip.is_ipv6()).then_some(FlowTuple { client, vip, proto })
    }

    pub fn client(&self) -> SocketAddr {
        self.client
    }

    pub fn vip(&self) -> SocketAddr {
        self.vip
    }

    pub fn proto(&self) -> u8 {
        self.proto
    }

    pub fn is_ipv6(&self) -> bool {
        self.client.is_ipv6()
    }
}

/// An address as the wire has it; `None` for an IPv4-mapped IPv6 one.
fn canonical(a: SocketAddr) -> Option<SocketAddr> {
    match a {
        SocketAddr::V4(_) => Some(a),
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => None,
        SocketAddr::V6(v6) => Some(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0).into()),
    }
}

/// A flow and the real serving it, as an upsert carries them: the real is
/// of the flow's family (see [`Upsert::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upsert {
    key: FlowTuple,
    real: SocketAddr,
    pub state: u8,
    pub created_age_ms: u64,
    pub idle_ms: u64,
}

impl Upsert {
    /// `None` if `real` is not of the flow's family (or IPv4-mapped).
    pub fn new(
        key: FlowTuple,
        real: SocketAddr,
        state: u8,
        created_age_ms: u64,
        idle_ms: u64,
    ) -> Option<Upsert> {
        let real = canonical(real)?;
        (real.is_ipv6() == key.is_ipv6()).then_some(Upsert {
            key,
            real,
            state,
            created_age_ms,
            idle_ms,
        })
    }

    pub fn key(&self) -> &FlowTuple {
        &self.key
    }

    pub fn real(&self) -> SocketAddr {
        self.real
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEvent {
    /// Create or update. The real is named by address, never by a local id:
    /// the two nodes number their reals independently. Times are ages
    /// relative to the moment of sending, because the two hosts' monotonic
    /// clocks share no origin.
    Upsert(Upsert),
    Remove {
        key: FlowTuple,
    },
    /// A bulk copy of the sender's table begins: the receiver starts the
    /// stream here whatever it expected, and will drop the flows the copy
    /// does not name.
    BulkStart,
    /// The bulk copy is complete; it held `total` upserts.
    BulkEnd {
        total: u64,
    },
}

impl FlowEvent {
    /// The flow the event is about; none for the bulk markers.
    pub fn key(&self) -> Option<&FlowTuple> {
        match self {
            FlowEvent::Upsert(u) => Some(u.key()),
            FlowEvent::Remove { key } => Some(key),
            FlowEvent::BulkStart | FlowEvent::BulkEnd { .. } => None,
        }
    }

    /// Bytes this event takes inside a flow batch.
    pub fn encoded_len(&self) -> usize {
        let v6 = self.key().is_some_and(FlowTuple::is_ipv6);
        match (self, v6) {
            (FlowEvent::Upsert(_), false) => UPSERT_LEN,
            (FlowEvent::Upsert(_), true) => UPSERT6_LEN,
            (FlowEvent::Remove { .. }, false) => REMOVE_LEN,
            (FlowEvent::Remove { .. }, true) => REMOVE6_LEN,
            (FlowEvent::BulkStart, _) => BULK_START_LEN,
            (FlowEvent::BulkEnd { .. }, _) => BULK_END_LEN,
        }
    }

    /// The oldest wire version that carries this event: 2 for an IPv6 flow.
    pub fn min_version(&self) -> u8 {
        if self.key().is_some_and(FlowTuple::is_ipv6) {
            2
        } else {
            MIN_VERSION
        }
    }
}

/// A boot id for an agent started at `now`: nanoseconds since the Unix
/// epoch.
///
/// Ordered rather than random, on purpose: a receiver accepts a changed boot
/// id only if it is greater than the one it knows (a restart happens later),
/// so datagrams recorded during an earlier run of the peer cannot be
/// replayed after it restarts. A random id could not tell an old boot from
/// a new one. WireGuard's handshake timestamp makes the same trade. The cost:
/// a peer whose wall clock stepped back across its restart is dropped as
/// `stale` until this agent restarts too; the counter shows it.
pub fn boot_id(now: SystemTime) -> u64 {
    let nanos = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error(
        "message is {len} bytes, over the {max}-byte datagram limit; send fewer flow events per batch (Sender::seal_events packs them)"
    )]
    TooLarge { len: usize, max: usize },
    #[error(
        "an IPv6 flow event cannot go in a version {version} message (the peer's); version 2 carries IPv6 flows"
    )]
    NotInVersion { version: u8 },
}

/// Seals outgoing messages for one agent run: numbers them and appends the
/// MAC.
#[derive(Debug, Clone)]
pub struct Sender {
    key: Key,
    node_id: u8,
    boot_id: u64,
    next_seq: u64,
    max_datagram: usize,
    /// The version sealed with: the peer's (see Versions).
    version: u8,
}

impl Sender {
    pub fn new(key: Key, node_id: u8, boot_id: u64) -> Sender {
        Sender {
            key,
            node_id,
            boot_id,
            next_seq: 1,
            max_datagram: MAX_DATAGRAM,
            version: VERSION,
        }
    }

    /// Seals with `version` from now on, clamped to
    /// `MIN_VERSION..=VERSION`: the version the peer was last heard in.
    pub fn set_version(&mut self, version: u8) {
        self.version = version.clamp(MIN_VERSION, VERSION);
    }

    pub fn version(&self) -> u8 {
        self.version
    }

    /// Whether a datagram sealed now can carry `ev`.
    pub fn carries(&self, ev: &FlowEvent) -> bool {
        ev.min_version() <= self.version
    }

    /// Sets the datagram limit, clamped to `MIN_DATAGRAM..=UDP_MAX`.
    pub fn with_max_datagram(mut self, max: usize) -> Sender {
        self.max_datagram = max.clamp(MIN_DATAGRAM, UDP_MAX);
        self
    }

    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    pub fn boot_id(&self) -> u64 {
        self.boot_id
    }

    /// The sequence number the next sealed datagram will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// One datagram holding `msg`. Consumes a sequence number only on success.
    pub fn seal(&mut self, msg: &Message) -> Result<Vec<u8>, WireError> {
        if let Message::FlowBatch(b) = msg
            && !b.events.iter().all(|ev| self.carries(ev))
        {
            return Err(WireError::NotInVersion {
                version: self.version,
            });
        }
        let mut out = self.start(kind_of(msg), self.version);
        encode_payload(msg, &mut out);
        let len = out.len() + MAC_LEN;
        if len > self.max_datagram {
            return Err(WireError::TooLarge {
                len,
                max: self.max_datagram,
            });
        }
        Ok(self.finish(out))
    }

    /// A flow batch with as many of `events` (from the front) as fit in one
    /// datagram, numbered from `first_seq`; returns it and how many it holds.
    /// Always at least one when `events` is not empty.
    ///
    /// Events the peer's version cannot carry are the caller's to hold back
    /// (see [`Sender::carries`]): one reaching here ends the batch before it,
    /// and at the front it makes the datagram of the version that carries
    /// it, which a peer of an older version drops: the stream stalls rather
    /// than skips an event.
    pub fn seal_events(&mut self, first_seq: u64, events: &[FlowEvent]) -> (Vec<u8>, usize) {
        let version = events
            .first()
            .map_or(self.version, |ev| ev.min_version().max(self.version));
        let mut room = self.max_datagram - OVERHEAD - BATCH_HEADER_LEN;
        let count = events
            .iter()
            .take(usize::from(u16::MAX))
            .take_while(|ev| {
                let fits = ev.encoded_len() <= room && ev.min_version() <= version;
                if fits {
                    room -= ev.encoded_len();
                }
                fits
            })
            .count();
        let mut out = self.start(KIND_FLOW_BATCH, version);
        encode_batch(first_seq, &events[..count], &mut out);
        (self.finish(out), count)
    }

    fn start(&self, kind: u8, version: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.max_datagram);
        out.extend_from_slice(&MAGIC);
        out.push(version);
        out.push(kind);
        out.push(self.node_id);
        out.extend_from_slice(&self.boot_id.to_be_bytes());
        out.extend_from_slice(&self.next_seq.to_be_bytes());
        out
    }

    fn finish(&mut self, mut out: Vec<u8>) -> Vec<u8> {
        let tag = self.key.tag(&out);
        out.extend_from_slice(&tag);
        self.next_seq += 1;
        out
    }
}

fn kind_of(msg: &Message) -> u8 {
    match msg {
        Message::Heartbeat(_) => KIND_HEARTBEAT,
        Message::FlowBatch(_) => KIND_FLOW_BATCH,
        Message::Ack { .. } => KIND_ACK,
        Message::BulkRequest => KIND_BULK_REQUEST,
    }
}

fn encode_payload(msg: &Message, out: &mut Vec<u8>) {
    match msg {
        Message::Heartbeat(hb) => {
            let mut flags = 0;
            if hb.bulk_synced {
                flags |= FLAG_BULK_SYNCED;
            }
            if hb.yielding {
                flags |= FLAG_YIELDING;
            }
            out.push(hb.priority);
            out.push(hb.role.to_byte());
            out.push(flags);
            out.extend_from_slice(&hb.term.to_be_bytes());
            out.extend_from_slice(&hb.flows.to_be_bytes());
            out.extend_from_slice(&hb.next_seq.to_be_bytes());
        }
        Message::FlowBatch(batch) => encode_batch(batch.first_seq, &batch.events, out),
        Message::Ack { up_to_seq } => out.extend_from_slice(&up_to_seq.to_be_bytes()),
        Message::BulkRequest => {}
    }
}

fn encode_batch(first_seq: u64, events: &[FlowEvent], out: &mut Vec<u8>) {
    // A batch over u16::MAX events would exceed any datagram anyway; `seal`
    // reports it as too large, so the truncated count is never sent.
    let count = u16::try_from(events.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&first_seq.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for ev in events {
        match ev {
            // One family per event (FlowTuple::new, Upsert::new): the tag
            // names it and each address is written at its own length.
            FlowEvent::Upsert(u) => {
                out.push(if u.key.is_ipv6() {
                    TAG_UPSERT6
                } else {
                    TAG_UPSERT
                });
                encode_tuple(&u.key, out);
                encode_addr(u.real, out);
                out.push(u.state);
                out.extend_from_slice(&u.created_age_ms.to_be_bytes());
                out.extend_from_slice(&u.idle_ms.to_be_bytes());
            }
            FlowEvent::Remove { key } => {
                out.push(if key.is_ipv6() {
                    TAG_REMOVE6
                } else {
                    TAG_REMOVE
                });
                encode_tuple(key, out);
            }
            FlowEvent::BulkStart => out.push(TAG_BULK_START),
            FlowEvent::BulkEnd { total } => {
                out.push(TAG_BULK_END);
                out.extend_from_slice(&total.to_be_bytes());
            }
        }
    }
}

fn encode_tuple(t: &FlowTuple, out: &mut Vec<u8>) {
    encode_addr(t.client, out);
    encode_addr(t.vip, out);
    out.push(t.proto);
}

fn encode_addr(a: SocketAddr, out: &mut Vec<u8>) {
    match a {
        SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

/// Fuzz target (`crate::fuzzing::ha_datagrams`): `data` cut into bodies
/// (a length byte, then that many bytes), each sealed with a fixed key as a
/// peer holding the key would, and opened by one receiver in turn. Whatever
/// the bytes: no panic, every datagram counted once, and an accepted one
/// decodes the same again.
#[doc(hidden)]
pub fn fuzz_datagrams(data: &[u8]) {
    let key = Key::from_bytes(&[7u8; 32]).expect("a 32-byte key");
    let mut rx = Receiver::new(key.clone(), 2);
    let mut rest = data;
    let mut opened = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let (body, next) = tail.split_at((len as usize).min(tail.len()));
        rest = next;
        let mut datagram = body.to_vec();
        datagram.extend_from_slice(&key.tag(body));
        opened += 1;
        if rx.open(&datagram).is_ok() {
            assert!(decode(body).is_some(), "an accepted body decodes");
        }
    }
    let c = rx.counters();
    let counted =
        c.accepted + c.malformed + c.wrong_version + c.bad_mac + c.from_self + c.stale + c.replay;
    assert_eq!(counted, opened, "every datagram counted once: {c:?}");
}

/// Splits an authenticated datagram body (header + payload, MAC already
/// checked and removed) into its parts; `None` if anything is off.
fn decode(body: &[u8]) -> Option<(Header, Message)> {
    let mut r = Reader(body);
    if r.bytes(4)? != MAGIC {
        return None;
    }
    let version = r.u8()?;
    if !(MIN_VERSION..=VERSION).contains(&version) {
        return None;
    }
    let kind = r.u8()?;
    let header = Header {
        version,
        node_id: r.u8()?,
        boot_id: r.u64()?,
        seq: r.u64()?,
    };
    let msg = match kind {
        KIND_HEARTBEAT => {
            let priority = r.u8()?;
            let role = Role::from_byte(r.u8()?)?;
            let flags = r.u8()?;
            if flags & !(FLAG_BULK_SYNCED | FLAG_YIELDING) != 0 {
                return None;
            }
            Message::Heartbeat(Heartbeat {
                priority,
                role,
                term: r.u64()?,
                bulk_synced: flags & FLAG_BULK_SYNCED != 0,
                yielding: flags & FLAG_YIELDING != 0,
                flows: r.u64()?,
                next_seq: r.u64()?,
            })
        }
        KIND_FLOW_BATCH => {
            let first_seq = r.u64()?;
            let count = r.u16()?;
            // No allocation sized by the peer beyond what the datagram can hold.
            let mut events = Vec::with_capacity(usize::from(count).min(r.0.len()));
            for _ in 0..count {
                events.push(decode_event(&mut r, version)?);
            }
            Message::FlowBatch(FlowBatch { first_seq, events })
        }
        KIND_ACK => Message::Ack {
            up_to_seq: r.u64()?,
        },
        KIND_BULK_REQUEST => Message::BulkRequest,
        _ => return None,
    };
    r.0.is_empty().then_some((header, msg))
}

/// One event of a batch sealed with `version`: tags 5 and 6 (IPv6) exist
/// from version 2 on.
fn decode_event(r: &mut Reader<'_>, version: u8) -> Option<FlowEvent> {
    let tag = r.u8()?;
    let (upsert, v6) = match tag {
        TAG_BULK_START => return Some(FlowEvent::BulkStart),
        TAG_BULK_END => return Some(FlowEvent::BulkEnd { total: r.u64()? }),
        TAG_UPSERT => (true, false),
        TAG_REMOVE => (false, false),
        TAG_UPSERT6 if version >= 2 => (true, true),
        TAG_REMOVE6 if version >= 2 => (false, true),
        _ => return None,
    };
    // The constructors refuse what has no place on the wire (an
    // IPv4-mapped address under an IPv6 tag): malformed.
    let key = FlowTuple::new(r.addr(v6)?, r.addr(v6)?, r.u8()?)?;
    if !upsert {
        return Some(FlowEvent::Remove { key });
    }
    let u = Upsert::new(key, r.addr(v6)?, r.u8()?, r.u64()?, r.u64()?)?;
    Some(FlowEvent::Upsert(u))
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }

    /// An address and port: 16 bytes of IPv6 address if `v6`, else 4 of
    /// IPv4.
    fn addr(&mut self, v6: bool) -> Option<SocketAddr> {
        Some(if v6 {
            let ip = Ipv6Addr::from(self.array::<16>()?);
            SocketAddrV6::new(ip, self.u16()?, 0, 0).into()
        } else {
            let ip = Ipv4Addr::from(self.array::<4>()?);
            SocketAddrV4::new(ip, self.u16()?).into()
        })
    }
}
