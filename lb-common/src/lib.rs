//! Types shared by the XDP program and the agent: map keys and values,
//! map sizes, state and counter indexes.
//!
//! Rules: `#[repr(C)]`, `Copy`, integers and byte
//! arrays only, explicit `_pad`, a size assertion per type. Byte order is in
//! the field name: `_be` is network order, everything else is host order.
//! Addresses are 16 bytes so IPv6 can follow without a layout change; an IPv4
//! address is stored IPv4-mapped (`::ffff:a.b.c.d`), see [`v4_mapped`], an
//! IPv6 address as its 16 bytes in network order; [`to_map_addr`] and
//! [`from_map_addr`] convert between `IpAddr` and that form.
// Unit tests need std's test harness; the crate itself is no_std for the datapath.
#![cfg_attr(not(test), no_std)]

use core::mem::size_of;
use core::net::{IpAddr, Ipv6Addr};

/// Virtual servers (VIP:port:protocol): eight times Katran's 512, for
/// multi-tenant hosts. A VIP is one hash lookup whatever the count.
pub const MAX_VIPS: u32 = 4096;
/// Serverfarms; ids are dense array indexes. One per VIP at most is useful.
pub const MAX_FARMS: u32 = MAX_VIPS;
/// Real servers over all farms (Katran's limit is 4096). Arrays indexed by
/// real id: the per-packet cost does not depend on it, the memory does
/// (100 bytes per real per CPU for counters and the next-hop cache, 64
/// shared: 6.5 MiB per CPU and 4 MiB in all at this limit).
pub const MAX_REALS: u32 = 65536;
/// Slots in one farm's round-robin schedule. Weighted round-robin expands
/// weights into this many slots (reduced by their gcd, scaled down if needed).
pub const SCHED_SLOTS: u32 = 256;
/// Default flow-table size: entries, two per flow (one per direction).
pub const FLOW_TABLE_DEFAULT: u32 = 1 << 20;
/// Interfaces the program may redirect to.
pub const MAX_IFACES: u32 = 64;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// `Real::state`. 0 marks a free slot.
pub const REAL_FREE: u32 = 0;
pub const REAL_UP: u32 = 1;
pub const REAL_DOWN: u32 = 2;
pub const REAL_DRAIN: u32 = 3;
pub const REAL_DISABLED: u32 = 4;

/// `Farm::algorithm`.
pub const ALG_ROUND_ROBIN: u32 = 0;
pub const ALG_WEIGHTED_ROUND_ROBIN: u32 = 1;
pub const ALG_LEAST_CONN: u32 = 2;
pub const ALG_SOURCE_HASH: u32 = 3;
pub const ALG_MAGLEV: u32 = 4;

/// Slots of the `MAGLEV` array that holds every hashing farm's lookup ring
/// (16 MiB): 62 farms of up to 655 reals (rings of 65,537) and room to
/// rebuild one, or fewer larger ones. VIPs that share a farm share its ring.
pub const MAGLEV_SLOTS: u32 = 1 << 22;

/// `Flow::flags` of a forward entry: the flow is counted in `ACTIVE` (set
/// when it enters `FLOWS`, at creation or when a half-open flow is assured;
/// cleared when the client's FIN or RST takes it out).
pub const FLOW_COUNTED: u32 = 1;

/// `VipInfo::flags`: new flows of the same client stick to one real.
pub const VIP_STICKY: u32 = 1;
/// `VipInfo::flags`, bits 8..16: with `VIP_STICKY` on an IPv6 VIP, the
/// client-address bits a sticky entry keys on (`sticky.ipv6_prefix`,
/// 1..=127; 0 keys on the whole address), so that one client's rotating
/// privacy addresses share a real.
pub const VIP_STICKY_PREFIX_SHIFT: u32 = 8;

/// `VipInfo::flags`: a new flow the farm has no real for is dropped in
/// silence (`no_real: drop`), not refused with a TCP RST or an ICMP port
/// unreachable (`no_real: reset`, the default).
pub const VIP_NO_REAL_DROP: u32 = 2;

/// The sticky prefix length in `VipInfo::flags` (0: the whole address).
#[inline(always)]
pub const fn sticky_prefix(flags: u32) -> u8 {
    (flags >> VIP_STICKY_PREFIX_SHIFT) as u8
}

/// `Farm::failaction`.
pub const FAIL_NONE: u32 = 0;
pub const FAIL_PURGE: u32 = 1;
pub const FAIL_REASSIGN: u32 = 2;

/// `Flow::dir`: which way the keyed packets travel.
pub const DIR_FORWARD: u8 = 0; // client -> VIP, rewritten to the real
pub const DIR_REVERSE: u8 = 1; // real -> client, rewritten to the VIP

/// `Flow::state`. Each direction's entry records what it saw; the agent
/// merges the two (the later state wins) for display and timeouts.
pub const ST_SYN: u8 = 1;
pub const ST_ESTABLISHED: u8 = 2;
pub const ST_FIN: u8 = 3;
pub const ST_CLOSED: u8 = 4;
pub const ST_UDP: u8 = 5;

/// Key of `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: [u8; 16],
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<VipKey>() == 20);

/// Value of `REPLY_NAT`, keyed by a real's endpoint (a `VipKey` of the
/// real's address, port and protocol): the one VIP endpoint that real
/// serves, which its replies are translated to when no flow says so.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReplyNat {
    pub vip_addr: [u8; 16],
    pub vip_port_be: u16,
    pub _pad: u16,
    pub vip_id: u32,
}
const _: () = assert!(size_of::<ReplyNat>() == 24);

/// Value of `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipInfo {
    pub vip_id: u32,
    pub farm_id: u32,
    pub flags: u32,
    /// `sticky.timeout` in seconds (with `VIP_STICKY`).
    pub sticky_secs: u32,
}
const _: () = assert!(size_of::<VipInfo>() == 16);

/// Value of `REALS`, indexed by real id. `state` is the one word the fail
/// actions key on: flows of a real that is not up or draining get its farm's
/// `failaction` at their next packet, whatever the table size.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Real {
    pub addr: [u8; 16],
    pub port_be: u16,
    pub _pad: u16,
    pub weight: u32,
    pub state: u32,
    pub farm_id: u32,
    /// The farm's fail action (`FAIL_*`), copied here so the per-packet check
    /// reads one map value.
    pub failaction: u32,
    /// 0: no cap. Otherwise new flows skip the real while `ACTIVE[id]` is at it.
    pub max_conns: u32,
    /// Unused; kept so a pinned `REALS` an upgrade adopts keeps its layout.
    pub _reserved: [u32; 2],
}
const _: () = assert!(size_of::<Real>() == 48);

/// Value of `FARMS`, indexed by farm id. Round-robin farms walk their
/// schedule, least-conn farms scan it as a member list: both live in
/// `SCHED[farm_id * SCHED_SLOTS .. + sched_len]`. Hashing farms (maglev,
/// source-hash) look up their ring in `MAGLEV`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Farm {
    pub algorithm: u32,
    /// Unused (the fail action travels in each `Real`); kept, as `_reserved2`
    /// is, so a pinned `FARMS` an upgrade adopts keeps its layout.
    pub _reserved: u32,
    pub sched_len: u32,
    pub _reserved2: u32,
    /// The ring: `offset << 32 | length` in `MAGLEV`, one word so the agent
    /// swaps a rebuilt ring in with one store.
    pub ring: u64,
}
const _: () = assert!(size_of::<Farm>() == 24);

/// Key of `STICKY`: a VIP and a client address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct StickyKey {
    pub vip_id: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<StickyKey>() == 20);

/// Value of `STICKY`: the client's real and when it last started a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Sticky {
    pub real_id: u32,
    pub _pad: u32,
    pub last_ns: u64,
}
const _: () = assert!(size_of::<Sticky>() == 16);

/// Entries of `STICKY` (clients remembered across all sticky VIPs).
pub const STICKY_ENTRIES: u32 = 1 << 18;

/// Key of `FLOWS`: the packet's own 5-tuple as it arrives. A flow has two
/// entries: (client, VIP) forward and (real, client) reverse. Aligned to 8
/// so the datapath copies it in five 8-byte moves, not twenty 2-byte ones
/// (same size and layout either way).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

impl FlowKey {
    /// The key of the reply direction of the flow keyed `self` (client ->
    /// VIP) when its real is `real_addr:real_port_be`: real -> client. The
    /// datapath builds it for a new flow's second entry, the agent to join
    /// and remove the pair.
    #[inline(always)]
    pub const fn reverse(&self, real_addr: [u8; 16], real_port_be: u16) -> FlowKey {
        FlowKey {
            src_addr: real_addr,
            dst_addr: self.src_addr,
            src_port_be: real_port_be,
            dst_port_be: self.src_port_be,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Value of `FLOWS`, one per direction. Each direction's entry is written only
/// by packets of that direction, so the fast path does one lookup and no
/// cross-entry writes; the agent joins the pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flow {
    /// Forward: the real's address. Reverse: the VIP's address.
    pub nat_addr: [u8; 16],
    /// Forward: the real's port. Reverse: the VIP's port.
    pub nat_port_be: u16,
    pub dir: u8,
    pub state: u8,
    pub real_id: u32,
    pub vip_id: u32,
    pub flags: u32,
    /// CLOCK_MONOTONIC at creation and at the last packet, as the datapath
    /// reads it (`clock::now` in lb-ebpf: the last timer tick).
    pub created_ns: u64,
    pub last_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    /// TCP: the next sequence number this direction's sender will use
    /// (seq + payload + SYN/FIN). Reverse entries hold the server-to-client
    /// number a valid RST to the client needs.
    pub seq_next: u32,
    /// Where this direction's packets leave, from the kernel's FIB.
    pub hop: Hop,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Flow>() == 104);

/// A flow direction's next hop, cached from `bpf_fib_lookup` so that an
/// established flow costs one FIB lookup, not one per packet. The datapath
/// uses it only while all of these hold, and asks the FIB again otherwise:
/// `dst` is the packet's destination (an entry copied from the other
/// direction, or re-pointed to another real, never matches), `generation`
/// is `HOP_GEN[0]` (the agent bumps it on every route, neighbour, address or
/// link change), it is younger than [`HOP_MAX_AGE`] (the bound when no agent
/// watches), and the packet fits `mtu` (a larger one meets the FIB's MTU
/// check, which hands it to the kernel for ICMP "fragmentation needed").
/// All zero: nothing cached.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Hop {
    pub ifindex: u32,
    pub dst: [u8; 4],
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub mtu: u16,
    /// `HOP_PEER`, or 0.
    pub flags: u16,
    pub generation: u32,
    /// The datapath clock (`clock::now`) `>> HOP_AGE_SHIFT` at the lookup (wraps).
    pub at: u32,
}
const _: () = assert!(size_of::<Hop>() == 32);

/// `Hop::flags`: `ifindex` is a veth whose peer lives in another network
/// namespace (`PEER_PORTS`), so tc hands the packet straight to the peer's
/// ingress (`bpf_redirect_peer`) instead of transmitting it on the veth.
pub const HOP_PEER: u16 = 1;

/// `Hop::at` counts units of 2^20 ns (about 1.05 ms).
pub const HOP_AGE_SHIFT: u32 = 20;
/// A cached hop older than this many `Hop::at` units (about 1.05 s) is looked
/// up again, agent or not.
pub const HOP_MAX_AGE: u32 = 1000;

/// `CLOCK[0]`: how the datapath reads CLOCK_MONOTONIC cheaply. The kernel
/// advances jiffies by one every `tick_ns` of CLOCK_MONOTONIC, so the time
/// of the last tick is `jiffies * tick_ns + offset_ns` (wrapping). The
/// verifier inlines `bpf_jiffies64` into one load, where
/// `bpf_ktime_get_coarse_ns` is a helper call (about 18 ns on the bench VM);
/// both give the time at the last tick. The agent measures both fields at
/// load (`lb_clock`, [`ClockSample`]); `tick_ns` 0 means not measured, and
/// the datapath then calls `bpf_ktime_get_coarse_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Clock {
    pub tick_ns: u64,
    pub offset_ns: u64,
}
const _: () = assert!(size_of::<Clock>() == 16);

/// What the `lb_clock` program records in `CLOCK_SAMPLE[0]` when the agent
/// runs it: the coarse clock, jiffies, and the coarse clock again (a tick
/// between the reads shows as the two differing; the agent drops that one).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClockSample {
    pub coarse_before_ns: u64,
    pub jiffies: u64,
    pub coarse_after_ns: u64,
}
const _: () = assert!(size_of::<ClockSample>() == 24);

/// Per-VIP and per-real counters (per-CPU arrays, summed by the agent).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    /// Client to server (forward) packets and bytes.
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Server to client (reverse).
    pub packets_out: u64,
    pub bytes_out: u64,
    pub new_flows: u64,
    /// Passive health, per real: connections the real accepted (first
    /// SYN-ACK) and refused or ignored (SYN answered by RST, SYN retransmitted
    /// unanswered).
    pub conn_ok: u64,
    pub conn_fail: u64,
    pub _pad: u64,
}
const _: () = assert!(size_of::<Counters>() == 64);

/// `Event::kind`: what the datapath tells the agent through `EVENTS`.
pub const EV_SYN_RST: u32 = 1;
pub const EV_SYN_RETRANSMIT: u32 = 2;
pub const EV_ICMP_UNREACH: u32 = 3;

/// One record of the `EVENTS` ring buffer: a connection failure seen at a
/// real (passive health).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Event {
    pub kind: u32,
    pub real_id: u32,
    pub ts_ns: u64,
}
const _: () = assert!(size_of::<Event>() == 16);

/// Bytes of the `EVENTS` ring buffer (a power of two, a multiple of the page).
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// `SyncEvent::kind`: a flow was created, changed (TCP state, or its real
/// after a `reassign`), or removed by the datapath (`purge`).
pub const SYNC_CREATE: u8 = 1;
pub const SYNC_UPDATE: u8 = 2;
pub const SYNC_REMOVE: u8 = 3;

/// One record of the `SYNC` ring buffer: what the active node of an HA pair
/// streams to its peer (the agent adds the real's address and the ages).
/// Written only while `SYNC_ON[0]` is non-zero, so a standalone node pays
/// one array load per new flow and nothing else.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SyncEvent {
    /// The flow's forward key (client -> VIP).
    pub key: FlowKey,
    pub real_id: u32,
    pub kind: u8,
    /// The forward entry's TCP state after the change (`ST_*`).
    pub state: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<SyncEvent>() == 48);

/// Bytes of the `SYNC` ring buffer: 87k records, about a second of new
/// flows at a high connection rate between two drains by the agent.
pub const SYNC_BYTES: u32 = 4 * 1024 * 1024;

/// Indexes of `STATS`: one per verdict and per stated rule. Every packet
/// increments exactly one verdict reason; `NEW_FLOW`, `PURGED` and `REASSIGNED`
/// count events in addition.
pub mod reason {
    /// Neither IPv4 nor IPv6 (ARP, LLDP, ...): passed unchanged.
    pub const PASS_NOT_IPV4: u32 = 0;
    /// IP not addressed to a VIP and not a known reply, or ICMPv6 (neighbour
    /// discovery, router advertisements, MLD, echo): passed unchanged.
    pub const PASS_NOT_OURS: u32 = 1;
    /// Client packet of a flow, rewritten and forwarded.
    pub const FORWARD: u32 = 2;
    /// Real's reply, rewritten and forwarded.
    pub const REVERSE: u32 = 3;
    /// Truncated Ethernet/802.1Q header, or more than one VLAN tag: passed
    /// (the kernel validates and drops what it must).
    pub const PASS_BAD_L2: u32 = 4;
    /// Truncated or malformed IPv4 header (version, IHL, total length): passed
    /// for the kernel to drop.
    pub const PASS_BAD_IPV4: u32 = 5;
    /// To a VIP with a truncated or malformed TCP/UDP header: dropped.
    pub const DROP_BAD_L4: u32 = 6;
    /// To a VIP with IPv4 options: dropped (Katran's rule too).
    pub const DROP_IP_OPTIONS: u32 = 7;
    /// Retired: fragments to a VIP were dropped before lb tracked them
    /// (`FRAGMENT`, `DROP_FRAGMENT_EARLY`). No packet counts here now; the
    /// index and name stay so dashboards and `lb stats` keep their rows.
    pub const DROP_FRAGMENT: u32 = 8;
    /// To a VIP, or a reply, with TTL <= 1: passed so the kernel sends
    /// ICMP time exceeded.
    pub const PASS_TTL: u32 = 9;
    /// To a VIP address on a port/protocol that is not configured: dropped.
    pub const DROP_NO_VIP_PORT: u32 = 10;
    /// ICMP or ICMPv6 echo request to a VIP address: answered with an echo
    /// reply (XDP_TX).
    pub const ICMP_ECHO_REPLY: u32 = 11;
    /// Any other ICMP to an IPv4 VIP address that is not an error about a flow
    /// (`DROP_ICMP_NO_FLOW`): dropped.
    pub const DROP_ICMP_VIP: u32 = 12;
    /// TCP RST to a VIP with no flow: dropped (a RST never creates a flow).
    pub const DROP_RST_NO_FLOW: u32 = 13;
    /// New flow but the farm has no real to take it: dropped, when the VIP
    /// says `no_real: drop` or an ICMP port unreachable would exceed its
    /// rate (`NO_REAL_RST`, `NO_REAL_UNREACH`).
    pub const DROP_NO_REAL: u32 = 14;
    /// New flow but the flow table refused the entry: dropped.
    pub const DROP_TABLE_FULL: u32 = 15;
    /// Rewritten, but the route has no resolved neighbour, leaves by an
    /// interface lb does not own, or a tagged frame's route leaves untagged
    /// or by a VLAN device lb does not know (`VLANS`): handed to the kernel
    /// to forward.
    pub const PASS_FIB: u32 = 16;
    /// New flows created (counted in addition to FORWARD).
    pub const NEW_FLOW: u32 = 17;
    /// A client packet of a TCP flow whose real is down under `purge`:
    /// answered with a RST (XDP_TX) and the flow removed.
    pub const PURGE_RST: u32 = 18;
    /// A flow removed by `purge` at its next packet (counted in addition; a
    /// UDP packet then starts a new flow).
    pub const PURGED: u32 = 19;
    /// A flow moved to a live real by `reassign` (counted in addition).
    pub const REASSIGNED: u32 = 20;
    /// An ICMP or ICMPv6 error from the server side (the real, or a router between lb
    /// and the real) about a flow: its quoted packet rewritten from
    /// client -> real to client -> VIP (and its source to the VIP when the
    /// real sent it), then forwarded to the client. Destination unreachable
    /// other than "fragmentation needed" is also reported to passive health.
    pub const ICMP_ERROR_TO_CLIENT: u32 = 21;
    /// The node is the standby of an HA pair (`STANDBY`): every packet goes
    /// to the kernel untouched, so a frame a switch floods to both nodes is
    /// translated by the active one only.
    pub const PASS_STANDBY: u32 = 22;
    /// A flow change the HA peer will not hear of: the `SYNC` ring was full
    /// (counted in addition; the packet goes on). The agent's refreshes and
    /// the next bulk copy repair the peer's table.
    pub const SYNC_LOST: u32 = 23;
    /// A packet of an established flow forwarded by the fast path (counted in
    /// addition to `forward` or `reverse`): what the rest of those took the
    /// full path for is a state change, a fail action or a next hop asked
    /// again (lb-ebpf's fast.rs).
    pub const FAST_PATH: u32 = 24;
    /// An ICMP or ICMPv6 error addressed to a VIP (a router in front of lb) about a
    /// flow: its quoted packet rewritten from VIP -> client to real ->
    /// client, its destination to the real, and forwarded to the real.
    pub const ICMP_ERROR_TO_REAL: u32 = 25;
    /// An ICMP error addressed to a VIP that quotes no known flow (or quotes
    /// a packet lb cannot read: IPv4 options, a non-first fragment, not
    /// TCP/UDP): dropped. No real could match it.
    pub const DROP_ICMP_NO_FLOW: u32 = 26;
    /// A packet with DF set (every IPv6 packet) too big for the next hop's
    /// MTU: lb answered with ICMP "fragmentation needed" or ICMPv6 "packet
    /// too big" quoting the packet as its sender sent it (XDP_TX), instead
    /// of the kernel's message, which would quote the translated addresses.
    pub const ICMP_FRAG_NEEDED: u32 = 27;
    /// A later fragment (non-zero offset) of a datagram whose first fragment
    /// was translated: given the same translation and forwarded.
    pub const FRAGMENT: u32 = 28;
    /// A later fragment to a VIP that arrived before its first fragment (or
    /// after its `FRAGS` entry expired): dropped. Nothing is forwarded
    /// untranslated; the sender's retransmission starts over.
    pub const DROP_FRAGMENT_EARLY: u32 = 29;
    /// A half-open flow (TCP before the client's handshake ACK, UDP before
    /// the real's first answer) moved from `EMBRYOS` into `FLOWS` (counted
    /// in addition).
    pub const ASSURED: u32 = 30;
    /// A client's SYN on a flow in `fin` or `closed` state: the old flow was
    /// removed and the SYN started a new one with a fresh pick (counted in
    /// addition to the new flow).
    pub const TUPLE_REUSE: u32 = 31;
    /// A truncated or malformed IPv6 header (version, payload length past
    /// the frame): passed for the kernel to drop.
    pub const PASS_BAD_IPV6: u32 = 32;
    /// To an IPv6 VIP with extension headers lb does not walk: a routing
    /// header with segments left (the packet is not at its destination),
    /// a header other than hop-by-hop, destination options, routing and
    /// fragment, a chain of more than five, or one reaching past the
    /// headers lb reads: dropped. Walked chains are translated (lb-ebpf's
    /// family.rs, `V6::walk`).
    pub const DROP_IPV6_EXT: u32 = 33;
    /// A new TCP flow the farm has no real for (all down, disabled or
    /// full): answered with a RST from the VIP (XDP_TX), so the client
    /// fails at once instead of waiting out its connect timeout, as IPVS
    /// answers. `no_real: drop` on the VIP drops it instead.
    pub const NO_REAL_RST: u32 = 34;
    /// A new UDP flow the farm has no real for: answered with an ICMP (or
    /// ICMPv6) port unreachable from the VIP, quoting the datagram, at
    /// most about 1,000 a second per CPU (beyond: `DROP_NO_REAL`).
    pub const NO_REAL_UNREACH: u32 = 35;
    /// A real's reply this node has no flow for, translated by `REPLY_NAT`
    /// (a cluster: the flow began on another node, and the reply came back
    /// through this one before the flow's sync did).
    pub const REVERSE_STATELESS: u32 = 36;
    pub const COUNT: u32 = 37;

    /// Names for logs, metrics and `lb stats`, indexed by reason.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_not_ipv4",
        "pass_not_ours",
        "forward",
        "reverse",
        "pass_bad_l2",
        "pass_bad_ipv4",
        "drop_bad_l4",
        "drop_ip_options",
        "drop_fragment",
        "pass_ttl",
        "drop_no_vip_port",
        "icmp_echo_reply",
        "drop_icmp_vip",
        "drop_rst_no_flow",
        "drop_no_real",
        "drop_table_full",
        "pass_fib",
        "new_flow",
        "purge_rst",
        "purged",
        "reassigned",
        "icmp_error_to_client",
        "pass_standby",
        "sync_lost",
        "fast_path",
        "icmp_error_to_real",
        "drop_icmp_no_flow",
        "icmp_frag_needed",
        "fragment",
        "drop_fragment_early",
        "assured",
        "tuple_reuse",
        "pass_bad_ipv6",
        "drop_ipv6_ext",
        "no_real_rst",
        "no_real_unreach",
        "reverse_stateless",
    ];
}

/// Key of `FRAGS`: a fragmented datagram as each of its fragments names it
/// on arrival (before translation). `id_be` is the IPv4 identification in
/// its low 16 bits (32 bits leave room for IPv6's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub id_be: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FragKey>() == 40);

/// Value of `FRAGS`: the translation the datagram's first fragment got, for
/// its later fragments (which carry no ports).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragNat {
    /// `DIR_FORWARD`: the real (new destination). `DIR_REVERSE`: the VIP
    /// (new source).
    pub nat_addr: [u8; 16],
    pub dir: u8,
    pub _pad: [u8; 3],
    pub vip_id: u32,
    pub real_id: u32,
    pub _pad2: u32,
    /// The datapath clock when the first fragment passed.
    pub created_ns: u64,
}
const _: () = assert!(size_of::<FragNat>() == 40);

/// Datagrams whose later fragments `FRAGS` can follow at once.
pub const FRAG_ENTRIES: u32 = 8192;
/// A `FRAGS` entry older than this is ignored: the kernel's own reassembly
/// timeout (`ipfrag_time`), after which no host still waits for the rest.
pub const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;

/// Size of `EMBRYOS`, the table of half-open flows (entries, two per flow):
/// the flow table's size divided by this.
pub const EMBRYO_TABLE_DIVISOR: u32 = 4;
/// The smallest `EMBRYOS` lb makes, whatever the flow table's size.
pub const EMBRYO_TABLE_MIN: u32 = 1024;

/// Value of `VLANS`, keyed by a VLAN device's ifindex: the interface lb
/// owns that carries it, and its VLAN id. Lets the datapath send a tagged
/// frame out of the VLAN the FIB chose by redirect, rewriting the tag.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VlanPort {
    pub parent_ifindex: u32,
    /// The 12-bit VLAN id, host order.
    pub vid: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<VlanPort>() == 8);

/// VLAN devices the datapath can send through (over all its interfaces).
pub const MAX_VLANS: u32 = 1024;

/// The 16-byte form of an IPv4 address (`::ffff:a.b.c.d`).
pub const fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// An address as the maps store it: IPv6 as its octets (network order),
/// IPv4 mapped (`::ffff:a.b.c.d`), exactly the bytes the datapath copies
/// from a packet's header into a [`FlowKey`]. The one conversion the agent
/// uses for every key and value it writes.
#[inline]
pub const fn to_map_addr(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address a map holds: an IPv4-mapped one is the IPv4 address it
/// maps, anything else IPv6. The inverse of [`to_map_addr`] (configs refuse
/// IPv4-mapped IPv6 addresses, so no IPv6 address of lb's reads back as IPv4).
#[inline]
pub const fn from_map_addr(addr: &[u8; 16]) -> IpAddr {
    Ipv6Addr::from_octets(*addr).to_canonical()
}

/// What the datapath's trace build records about one packet (`lb trace`),
/// sent to the agent through aya-log as the record's bytes in hex. The
/// production build records nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceRecord {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the verdict was given.
    pub ktime_ns: u64,
    /// The packet's 5-tuple as it arrived (ports and protocol zero when it
    /// was no TCP or UDP lb could read).
    pub received: FlowKey,
    /// The 5-tuple after NAT; `rewritten` says whether it is set.
    pub sent: FlowKey,
    pub ifindex: u32,
    /// The hook's verdict (XDP action or tc action, as `tc` says).
    pub action: u32,
    /// The verdict's reason (`reason`).
    pub reason: u32,
    /// The flow's VIP and real, `u32::MAX` when none was found.
    pub vip_id: u32,
    pub real_id: u32,
    /// The farm a new flow's real was picked from, `u32::MAX` if none.
    pub farm_id: u32,
    /// 1 for the tc hook, 0 for XDP.
    pub tc: u8,
    /// 4 or 6; 0 when the packet was no IP lb could read.
    pub family: u8,
    /// `DIR_FORWARD`, `DIR_REVERSE`, or `TRACE_DIR_NONE`.
    pub dir: u8,
    /// Why the packet went where it went (`TRACE_WHY_*`).
    pub why: u8,
    /// A new flow's algorithm (`ALG_*`).
    pub alg: u8,
    /// The flow's TCP/UDP state before and after the packet (`ST_*`; 0: no
    /// flow).
    pub state_before: u8,
    pub state_after: u8,
    pub rewritten: u8,
}
const _: () = assert!(size_of::<TraceRecord>() == 120);

/// `TraceRecord::dir` of a packet of no flow direction (passed, ICMP, ...).
pub const TRACE_DIR_NONE: u8 = 0xff;
/// `TraceRecord::why`.
pub const TRACE_WHY_NONE: u8 = 0;
/// A new flow; its real picked by the farm's algorithm.
pub const TRACE_WHY_NEW: u8 = 1;
/// A new flow; its real the client's sticky one.
pub const TRACE_WHY_STICKY: u8 = 2;
/// A packet of an existing flow, to the real it has.
pub const TRACE_WHY_ESTABLISHED: u8 = 3;
/// A packet of an existing flow that its fail action moved to another real.
pub const TRACE_WHY_REASSIGNED: u8 = 4;
/// A packet of a flow its fail action removed.
pub const TRACE_WHY_PURGED: u8 = 5;
/// A real's reply, translated back.
pub const TRACE_WHY_REPLY: u8 = 6;
pub const TRACE_WHY_NAMES: [&str; 7] = [
    "-",
    "new",
    "sticky",
    "established",
    "reassigned",
    "purged",
    "reply",
];

/// One endpoint a trace matches on: an address, and a port if `port` is
/// set (`TraceFilter`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceEndpoint {
    pub addr: [u8; 16],
    pub port_be: u16,
    /// 0: any endpoint; 1: this address; 2: this address and port.
    pub set: u8,
    pub _pad: u8,
}

/// What the trace build records: a packet is recorded when it matches every
/// part that is set. A packet of a known direction is matched by role
/// (forward: client = received source, VIP = received destination, real =
/// sent destination; reverse: the other way round); one of no direction by
/// either endpoint of what arrived.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceFilter {
    pub client: TraceEndpoint,
    pub vip: TraceEndpoint,
    pub real: TraceEndpoint,
    pub _pad0: u32,
    /// A bit per verdict reason (`1 << reason`); 0 matches every reason.
    pub reasons: u64,
    /// 0 until the agent has written the filter: nothing is recorded.
    pub on: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<TraceFilter>() == 80);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), made only of integers and byte arrays,
    // with explicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipInfo {}
    unsafe impl aya::Pod for ReplyNat {}
    unsafe impl aya::Pod for Real {}
    unsafe impl aya::Pod for Farm {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for SyncEvent {}
    unsafe impl aya::Pod for StickyKey {}
    unsafe impl aya::Pod for Sticky {}
    unsafe impl aya::Pod for Clock {}
    unsafe impl aya::Pod for ClockSample {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragNat {}
    unsafe impl aya::Pod for VlanPort {}
    unsafe impl aya::Pod for TraceFilter {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn map_addresses_round_trip_in_the_datapaths_byte_order() {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10));
        assert_eq!(to_map_addr(v4), v4_mapped([198, 51, 100, 10]));
        assert_eq!(from_map_addr(&to_map_addr(v4)), v4);
        let six = IpAddr::V6(v6("2001:db8::10"));
        let bytes = to_map_addr(six);
        // Network order: the bytes as they stand in the IPv6 header.
        assert_eq!(bytes[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(bytes[15], 0x10);
        assert_eq!(from_map_addr(&bytes), six);
        // The IPv4-mapped form reads back as IPv4: one address, one form.
        assert_eq!(
            from_map_addr(&v6("::ffff:192.0.2.1").octets()),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
        );
        assert_eq!(from_map_addr(&[0; 16]), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
}
