//! Every map the program uses. All are pinned by name under `bpf.pin_dir` so
//! the CLI can read them while the agent is down (and a restarted agent can
//! adopt them). Sizes are the `lb-common` constants; the agent resizes
//! `FLOWS` at load time from `bpf.flow_table_size`.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use lb_common::{
    Clock, ClockSample, Counters, EMBRYO_TABLE_DIVISOR, EVENTS_BYTES, FLOW_TABLE_DEFAULT,
    FRAG_ENTRIES, Farm, Flow, FlowKey, FragKey, FragNat, MAGLEV_SLOTS, MAX_FARMS, MAX_IFACES,
    MAX_REALS, MAX_VIPS, MAX_VLANS, Real, ReplyNat, SCHED_SLOTS, STICKY_ENTRIES, SYNC_BYTES,
    Sticky, StickyKey, VipInfo, VipKey, VlanPort, reason,
};

/// Virtual servers by (address, port, protocol).
#[map]
pub static VIPS: HashMap<VipKey, VipInfo> = HashMap::pinned(MAX_VIPS, 0);

/// Every address that carries at least one VIP (value: number of VIPs on it).
/// Lets the program tell "a VIP address on a port we don't serve" (dropped)
/// from "not ours" (passed) with one lookup.
#[map]
pub static VIP_ADDRS: HashMap<[u8; 16], u32> = HashMap::pinned(MAX_VIPS, 0);

/// A cluster's real endpoints (address, port, protocol as a `VipKey`) and
/// the one VIP each serves: how a node translates a reply it holds no flow
/// for (lb-ebpf's reply.rs). Empty outside a cluster.
#[map]
pub static REPLY_NAT: HashMap<VipKey, ReplyNat> = HashMap::pinned(MAX_REALS, 0);

/// Real servers by id: address, port, weight, state.
#[map]
pub static REALS: Array<Real> = Array::pinned(MAX_REALS, 0);

/// Serverfarms by id: algorithm, fail action, schedule length.
#[map]
pub static FARMS: Array<Farm> = Array::pinned(MAX_FARMS, 0);

/// Per-farm schedules of real ids, `SCHED_SLOTS` slots per farm, built by the
/// agent from the farm's live members and weights.
#[map]
pub static SCHED: Array<u32> = Array::pinned(MAX_FARMS * SCHED_SLOTS, 0);

/// Per-CPU round-robin cursors, one per farm. Per-CPU so the new-flow path
/// takes no lock and bounces no cache line; each CPU walks the whole schedule.
#[map]
pub static RR_CURSOR: PerCpuArray<u32> = PerCpuArray::pinned(MAX_FARMS, 0);

/// The flow table: two entries per flow, one per direction, keyed by the
/// packet's own 5-tuple. LRU so a full table evicts the idlest flows instead
/// of refusing new ones. One LRU list for all CPUs, not
/// `BPF_F_NO_COMMON_LRU`: that measured about 10% cheaper per new flow, but
/// it splits the entries per CPU, so the agent's single-threaded writes (a
/// restored table, an HA bulk copy) could fill only 1/ncpus of the table.
#[map]
pub static FLOWS: LruHashMap<FlowKey, Flow> = LruHashMap::pinned(FLOW_TABLE_DEFAULT, 0);

/// Half-open flows: a TCP flow until the client's handshake ACK, a UDP flow
/// until its real's first answer, both directions, same keys and values as
/// `FLOWS`. They move to `FLOWS` once assured (`flow::assure`). Kept apart
/// so that a flood of new flows (spoofed SYNs) evicts only other half-open
/// flows, never an established one: conntrack's early drop, by table.
/// The agent sizes it at load from `bpf.flow_table_size`
/// (`lb_userspace::datapath::embryo_table_size`).
#[map]
pub static EMBRYOS: LruHashMap<FlowKey, Flow> =
    LruHashMap::pinned(FLOW_TABLE_DEFAULT / EMBRYO_TABLE_DIVISOR, 0);

/// Fragmented datagrams in flight: a first fragment's translation, keyed by
/// (source, destination, protocol, IP id) as its later fragments arrive, so
/// that they (which carry no ports) follow it to the same real or client.
/// LRU and aged by `FRAG_TIMEOUT_NS`: entries are short-lived by nature.
#[map]
pub static FRAGS: LruHashMap<FragKey, FragNat> = LruHashMap::pinned(FRAG_ENTRIES, 0);

/// One counter per verdict and stated rule (`lb_common::reason`).
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(reason::COUNT, 0);

/// Per-VIP packet/byte/new-flow counters, by vip id.
#[map]
pub static VIP_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(MAX_VIPS, 0);

/// Per-real packet/byte/new-flow counters, by real id.
#[map]
pub static REAL_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(MAX_REALS, 0);

/// Interfaces XDP_REDIRECT may send to, keyed by ifindex (the agent inserts
/// the configured interfaces).
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::pinned(MAX_IFACES, 0);

/// lb's interfaces that are veths with their peer in another network
/// namespace, by ifindex (value unused): tc sends to these by
/// `bpf_redirect_peer` (`lb_common::HOP_PEER`). Kept by the agent at attach.
#[map]
pub static PEER_PORTS: HashMap<u32, u32> = HashMap::pinned(MAX_IFACES, 0);

/// VLAN devices over the interfaces in `TX_PORTS`, by their ifindex: where
/// a tagged frame goes when the FIB routes it out of one. Kept by the agent
/// from the kernel's VLAN list at attach and at every link change.
#[map]
pub static VLANS: HashMap<u32, VlanPort> = HashMap::pinned(MAX_VLANS, 0);

/// Flows per real id counted in by the datapath: +1 at creation, -1 at the
/// client's FIN or RST (atomic adds). A real's active flows are
/// `ACTIVE - EXPIRED`: least-conn and `max_conns` read them.
#[map]
pub static ACTIVE: Array<u64> = Array::pinned(MAX_REALS, 0);

/// Counted flows the agent removed (idle timeout, purge, removed VIP), per
/// real id. Only the agent writes it, so it needs no atomic add.
#[map]
pub static EXPIRED: Array<u64> = Array::pinned(MAX_REALS, 0);

/// Lookup rings of the hashing farms (maglev, source-hash), each at its
/// farm's `ring` offset; built by the agent.
#[map]
pub static MAGLEV: Array<u32> = Array::pinned(MAGLEV_SLOTS, 0);

/// Source-IP persistence: (vip, client) -> real, refreshed by each new flow.
#[map]
pub static STICKY: LruHashMap<StickyKey, Sticky> = LruHashMap::pinned(STICKY_ENTRIES, 0);

/// Connection failures seen at reals (SYN answered by RST, SYN retransmitted
/// unanswered, ICMP unreachable), for the agent's passive health.
#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

/// Flow changes for the HA peer (`lb_common::SyncEvent`), read by the
/// agent's sync stream. Written only while `SYNC_ON[0]` is non-zero.
#[map]
pub static SYNC: RingBuf = RingBuf::pinned(SYNC_BYTES, 0);

/// `[0]`: non-zero when the agent streams flow changes to an HA peer. The
/// agent sets it while `ha:` is configured; a standalone node writes nothing
/// to `SYNC`.
#[map]
pub static SYNC_ON: Array<u32> = Array::pinned(1, 0);

/// `[0]`: non-zero while this node is not the active one of an HA pair;
/// the program then passes every packet (`reason::PASS_STANDBY`). Pinned, so
/// an active node's datapath keeps forwarding while its agent restarts.
#[map]
pub static STANDBY: Array<u32> = Array::pinned(1, 0);

/// `[0]`: the generation of the kernel's routes and neighbours as the agent
/// saw them; it adds one at every change, which invalidates every flow's
/// cached next hop (`lb_common::Hop`).
#[map]
pub static HOP_GEN: Array<u32> = Array::pinned(1, 0);

/// `[0]`: how the datapath's clock turns jiffies into CLOCK_MONOTONIC
/// (`lb_common::Clock`), measured and written by the agent at load.
#[map]
pub static CLOCK: Array<Clock> = Array::pinned(1, 0);

/// `[0]`: the `lb_clock` program's reading of both clocks, for the agent's
/// measurement (never read by `lb_xdp`).
#[map]
pub static CLOCK_SAMPLE: Array<ClockSample> = Array::with_max_entries(1, 0);

/// `[0]`: `lb_xdp6`, which `lb_xdp` hands IPv6 packets to by tail call
/// (set by the agent at load). IPv6 runs as a program of its own because
/// the verifier walks every path of a program within one budget (a million
/// instructions), and the two families' paths together exceed it. Pinned:
/// an array's entries are cleared once no process or pin holds it, and
/// IPv6 must keep flowing while a restarting agent is away.
#[map]
pub static JUMP_XDP: ProgramArray = ProgramArray::pinned(1, 0);

/// `[0]`: `lb_tc6`, as `JUMP_XDP` for the tc hook (an array holds programs
/// of one type).
#[map]
pub static JUMP_TC: ProgramArray = ProgramArray::pinned(1, 0);

/// Per real, this CPU's last next hop towards it (`fwd::forward`), so
/// that a new flow, whose entry has no hop cached yet, asks no FIB: a
/// cold FIB lookup is a large share of a first SYN's cost. Valid under the
/// same rules as a flow's cached hop (`lb_common::Hop`), for packets that
/// arrived where it was looked up. Per CPU so the writes bounce no cache
/// line; not pinned, being only a cache.
#[map]
pub static REAL_HOPS: PerCpuArray<crate::fwd::RealHop> =
    PerCpuArray::with_max_entries(MAX_REALS, 0);

/// `[0]`: this CPU's port unreachables for flows no real can take
/// (refuse.rs): tokens left, and when they were last counted.
#[map]
pub static UNREACH_TOKENS: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch space for the new-flow path: a key and a value built
/// here instead of on the BPF stack, which is 512 bytes for the whole
/// program (LLVM's own advice for large locals).
#[map]
pub static SCRATCH: PerCpuArray<crate::flow::Scratch> = PerCpuArray::with_max_entries(1, 0);
