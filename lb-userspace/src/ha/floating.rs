//! Floating IPs: the addresses the active node holds. Taking the active role
//! adds them to their interfaces and announces them, IPv4 ones with
//! gratuitous ARP, IPv6 ones with unsolicited neighbour advertisements;
//! giving it up removes them.
//!
//! Addresses go through rtnetlink (RTM_NEWADDR / RTM_DELADDR / RTM_GETADDR,
//! built with netlink-packet-route, sent by netlink.rs) rather than by
//! running `ip`: the kernel's errno tells "already there" (EEXIST) and "not
//! there" (EADDRNOTAVAIL) apart from real failures, with no output to parse
//! and no dependency on iproute2 being installed. The requests take the
//! address as an `IpAddr`, so IPv6 addresses differ only in family.
//!
//! The announcements are pnet's Ethernet, ARP, IPv6 and ICMPv6 packets, sent
//! whole on an AF_PACKET socket that takes the protocol from the frame's
//! ethertype.
//!
//! Every function acts in the calling thread's network namespace (the agent
//! runs inside the one it serves) and opens and closes its own socket: these
//! are rare events (a role change, a periodic check), not a hot path.

use std::{
    ffi::CString,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope},
};
use pnet_base::MacAddr;
use pnet_packet::{
    MutablePacket, Packet,
    arp::{ArpHardwareTypes, ArpOperation, ArpOperations, MutableArpPacket},
    ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket},
    icmpv6::{
        self, Icmpv6Code, Icmpv6Packet, Icmpv6Types,
        ndp::{MutableNeighborAdvertPacket, NdpOption, NdpOptionTypes, NeighborAdvertFlags},
    },
    ip::IpNextHeaderProtocols,
    ipv6::MutableIpv6Packet,
};

use crate::{
    config::{FloatingIp, IpCidr},
    netlink::{self, check},
};

/// How long to wait for the kernel's answer to a netlink request.
const NL_TIMEOUT: Duration = Duration::from_secs(5);
/// An address dump marked NLM_F_DUMP_INTR (addresses changed while it ran)
/// is retried this many times before giving up.
const DUMP_ATTEMPTS: usize = 3;

/// Minimum Ethernet frame without FCS: shorter frames get padded by the NIC
/// or, on some drivers, dropped, so pad ourselves.
const ETH_MIN_FRAME: usize = 60;

/// Adds `ip` to its interface. `Ok(true)` if it was added, `Ok(false)` if
/// the interface already held that address with that prefix length.
pub fn add(ip: &FloatingIp) -> Result<bool> {
    check_prefix(ip.address)?;
    let ifindex = ifindex(&ip.interface)?;
    match addr_change(AddrOp::New, ifindex, ip.address) {
        Ok(()) => Ok(true),
        // The request carries NLM_F_EXCL: an identical address is EEXIST.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(with_hint(e))
            .with_context(|| format!("adding floating IP {} to {}", ip.address, ip.interface)),
    }
}

/// Removes `ip` from its interface. `Ok(true)` if it was removed,
/// `Ok(false)` if it was not there (also when the interface itself is gone:
/// then it cannot hold the address either).
pub fn remove(ip: &FloatingIp) -> Result<bool> {
    check_prefix(ip.address)?;
    let Some(ifindex) = try_ifindex(&ip.interface)? else {
        return Ok(false);
    };
    match addr_change(AddrOp::Del, ifindex, ip.address) {
        Ok(()) => Ok(true),
        // EADDRNOTAVAIL: no such address on the interface. ENODEV: the
        // interface vanished after if_nametoindex. ENOENT: what some
        // kernels answer for a device without IPv4 configuration.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EADDRNOTAVAIL | libc::ENOENT | libc::ENODEV)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(with_hint(e))
            .with_context(|| format!("removing floating IP {} from {}", ip.address, ip.interface)),
    }
}

/// Whether the interface holds the address `ip.address.addr`, with any
/// prefix length: an address held under another prefix still answers ARP
/// (or neighbour solicitations) and receives the traffic, which is what the
/// caller wants to know.
pub fn present(ip: &FloatingIp) -> Result<bool> {
    let ifindex = ifindex(&ip.interface)?;
    holds_addr(ifindex, ip.address.addr)
        .map_err(with_hint)
        .with_context(|| {
            let family = if ip.address.addr.is_ipv6() {
                "IPv6"
            } else {
                "IPv4"
            };
            format!("listing the {family} addresses of {}", ip.interface)
        })
}

/// Announces `ip` on its interface, so that neighbours send its traffic to
/// this interface's MAC address from now on.
///
/// IPv4: one gratuitous ARP request (what keepalived sends, and what most
/// switches and hosts learn from) followed by one gratuitous ARP reply (for
/// the few that only learn from replies), both broadcast, sender and target
/// address the floating IP. IPv6: one unsolicited neighbour advertisement to
/// all nodes (RFC 4861 §7.2.6), which overrides the neighbours' entries.
pub fn announce(ip: &FloatingIp) -> Result<()> {
    let ifindex = ifindex(&ip.interface)?;
    let ctx = || format!("announcing {} on {}", ip.address.addr, ip.interface);
    let sock = packet_socket(ifindex)
        .map_err(with_hint)
        .with_context(ctx)?;
    let mac = hw_addr(&sock, &ip.interface).with_context(ctx)?;
    for frame in announcements(mac, ip.address.addr) {
        send_frame(&sock, ifindex, &frame)
            .map_err(with_hint)
            .with_context(ctx)?;
    }
    Ok(())
}

/// The frames [`announce`] sends for `addr` from `mac`.
fn announcements(mac: MacAddr, addr: IpAddr) -> Vec<Vec<u8>> {
    match addr {
        IpAddr::V4(a) => [ArpOperations::Request, ArpOperations::Reply]
            .into_iter()
            .map(|op| garp_frame(mac, a, op).to_vec())
            .collect(),
        IpAddr::V6(a) => vec![unsolicited_na_frame(mac, a).to_vec()],
    }
}

fn check_prefix(cidr: IpCidr) -> Result<()> {
    let max = if cidr.addr.is_ipv6() { 128 } else { 32 };
    if cidr.prefix_len > max {
        bail!("floating IP {cidr}: prefix length must be 0..={max}");
    }
    Ok(())
}

/// Adds a hint on what to do for the one errno an operator can fix.
fn with_hint(e: io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            anyhow::Error::new(e).context("the agent needs CAP_NET_ADMIN and CAP_NET_RAW")
        }
        _ => e.into(),
    }
}

fn ifindex(name: &str) -> Result<u32> {
    try_ifindex(name)?.with_context(|| {
        format!(
            "interface {name} not found in this network namespace; \
             check the floating IP's `interface`"
        )
    })
}

/// `Ok(None)` if no interface has that name.
fn try_ifindex(name: &str) -> Result<Option<u32>> {
    let c = CString::new(name).with_context(|| format!("interface name {name:?} contains NUL"))?;
    // SAFETY: a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx != 0 {
        return Ok(Some(idx));
    }
    let e = io::Error::last_os_error();
    // ENODEV is "no such interface"; anything else (EMFILE when the helper
    // socket cannot be opened, ...) is a real failure.
    match e.raw_os_error() {
        Some(libc::ENODEV | libc::ENXIO) => Ok(None),
        _ => Err(e).with_context(|| format!("looking up interface {name}")),
    }
}

// ---------------------------------------------------------------------------
// rtnetlink

/// Which address request to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddrOp {
    New,
    Del,
}

/// The broadcast address of `addr`/`prefix_len` (host bits all ones).
fn broadcast(addr: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) | host_bits)
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The RTM_NEWADDR / RTM_DELADDR request `ip addr add|del CIDR dev IF`
/// sends: IFA_LOCAL and IFA_ADDRESS both the address (on a broadcast link
/// IFA_ADDRESS is the local address too; it is the peer only on
/// point-to-point links), plus the broadcast when adding an IPv4 prefix
/// that has one (RFC 3021: /31 and /32 have none).
///
/// An IPv6 address is added with IFA_F_NODAD (`ip addr add ... nodad`, as
/// keepalived adds its VIPs): duplicate address detection would hold it
/// tentative, unusable, for a second or more after a takeover, and fail it
/// for good if the old holder still answered for it at that moment, which
/// is exactly when a floating address moves.
fn addr_request(
    op: AddrOp,
    ifindex: u32,
    addr: IpAddr,
    prefix_len: u8,
) -> (RouteNetlinkMessage, u16) {
    let mut m = AddressMessage::default();
    m.header.family = family(addr);
    m.header.prefix_len = prefix_len;
    m.header.scope = AddressScope::Universe;
    m.header.index = ifindex;
    if addr.is_ipv6() && op == AddrOp::New {
        m.header.flags = AddressHeaderFlags::Nodad;
    }
    m.attributes = vec![
        AddressAttribute::Local(addr),
        AddressAttribute::Address(addr),
    ];
    match op {
        AddrOp::New => {
            if let IpAddr::V4(v4) = addr
                && prefix_len < 31
            {
                m.attributes
                    .push(AddressAttribute::Broadcast(broadcast(v4, prefix_len)));
            }
            // NLM_F_EXCL makes an existing identical address an error we
            // can tell apart, instead of a silent success.
            (
                RouteNetlinkMessage::NewAddress(m),
                NLM_F_CREATE | NLM_F_EXCL,
            )
        }
        // The kernel deletes the address whose local address and prefix
        // length both match, so another prefix of the same address, added by
        // someone else, is left alone.
        AddrOp::Del => (RouteNetlinkMessage::DelAddress(m), 0),
    }
}

/// RTM_GETADDR dump of one family's addresses. The index asks kernels with
/// NETLINK_GET_STRICT_CHK for that interface only; older kernels send all
/// and [`ifaddr_matches`] filters.
fn dump_request(ifindex: u32, family: AddressFamily) -> RouteNetlinkMessage {
    // Strict checking rejects a dump request with a prefix length or scope.
    let mut m = AddressMessage::default();
    m.header.family = family;
    m.header.index = ifindex;
    RouteNetlinkMessage::GetAddress(m)
}

/// Whether an RTM_NEWADDR message describes `addr` on `ifindex`.
fn ifaddr_matches(m: &AddressMessage, ifindex: u32, addr: IpAddr) -> bool {
    m.header.family == family(addr)
        && m.header.index == ifindex
        && m.attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Local(a) | AddressAttribute::Address(a) if *a == addr)
        })
}

/// A socket for one request, with strict checking where the kernel has it.
fn open_netlink() -> io::Result<netlink::Socket> {
    let nl = netlink::Socket::open(NL_TIMEOUT)?;
    // Best effort: only saves the kernel dumping other interfaces'
    // addresses (Linux >= 4.20); we filter by index either way.
    let _ = nl.strict_checking();
    Ok(nl)
}

fn addr_change(op: AddrOp, ifindex: u32, cidr: IpCidr) -> io::Result<()> {
    let (msg, flags) = addr_request(op, ifindex, cidr.addr, cidr.prefix_len);
    open_netlink()?.ack(msg, flags)
}

fn holds_addr(ifindex: u32, addr: IpAddr) -> io::Result<bool> {
    for _ in 0..DUMP_ATTEMPTS {
        let mut found = false;
        let interrupted = open_netlink()?.dump(dump_request(ifindex, family(addr)), |m| {
            if let RouteNetlinkMessage::NewAddress(m) = m {
                found |= ifaddr_matches(&m, ifindex, addr);
            }
        })?;
        // An interrupted dump may have missed or doubled entries: ask again.
        if !interrupted {
            return Ok(found);
        }
    }
    Err(io::Error::other(format!(
        "the address dump was interrupted by concurrent changes {DUMP_ATTEMPTS} times"
    )))
}

// ---------------------------------------------------------------------------
// Gratuitous ARP

/// A gratuitous ARP frame (RFC 5227's announcement layout): broadcast
/// Ethernet destination, sender and target protocol address both `addr`,
/// target hardware address zero, padded with zeros to the 60-byte minimum.
fn garp_frame(mac: MacAddr, addr: Ipv4Addr, op: ArpOperation) -> [u8; ETH_MIN_FRAME] {
    let mut f = [0u8; ETH_MIN_FRAME];
    let mut eth = MutableEthernetPacket::new(&mut f).expect("60 bytes hold an Ethernet header");
    eth.set_destination(MacAddr::broadcast());
    eth.set_source(mac);
    eth.set_ethertype(EtherTypes::Arp);
    let mut arp = MutableArpPacket::new(eth.payload_mut()).expect("46 bytes hold an ARP packet");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(op);
    arp.set_sender_hw_addr(mac);
    arp.set_sender_proto_addr(addr);
    arp.set_target_hw_addr(MacAddr::zero());
    arp.set_target_proto_addr(addr);
    f
}

/// Ethernet + IPv6 header + neighbour advertisement + one 8-byte option.
const NA_FRAME: usize = 14 + 40 + 24 + 8;
/// The all-nodes multicast address, and its Ethernet address (RFC 2464 §7).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: MacAddr = MacAddr(0x33, 0x33, 0, 0, 0, 1);

/// An unsolicited neighbour advertisement for `addr` (RFC 4861 §4.4,
/// §7.2.6), the IPv6 counterpart of a gratuitous ARP: to all nodes, from
/// `addr` itself, hop limit 255 (receivers drop ND messages with any other:
/// they must not have crossed a router), Override set so that neighbours
/// replace the old holder's MAC, Solicited clear (nobody asked), and the
/// Target Link-Layer Address option naming `mac`.
fn unsolicited_na_frame(mac: MacAddr, addr: Ipv6Addr) -> [u8; NA_FRAME] {
    let mut f = [0u8; NA_FRAME];
    let mut eth = MutableEthernetPacket::new(&mut f).expect("the frame holds an Ethernet header");
    eth.set_destination(ALL_NODES_MAC);
    eth.set_source(mac);
    eth.set_ethertype(EtherTypes::Ipv6);
    let mut ip = MutableIpv6Packet::new(eth.payload_mut()).expect("the frame holds IPv6");
    ip.set_version(6);
    ip.set_payload_length((24 + 8) as u16);
    ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
    ip.set_hop_limit(255);
    ip.set_source(addr);
    ip.set_destination(ALL_NODES);
    let mut na = MutableNeighborAdvertPacket::new(ip.payload_mut()).expect("the frame holds an NA");
    na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
    na.set_icmpv6_code(Icmpv6Code(0));
    na.set_flags(NeighborAdvertFlags::Override);
    na.set_target_addr(addr);
    na.set_options(&[NdpOption {
        option_type: NdpOptionTypes::TargetLLAddr,
        // In units of 8 bytes: type, length and the 6-byte MAC.
        length: 1,
        data: mac.octets().to_vec(),
    }]);
    let icmp = Icmpv6Packet::new(na.packet()).expect("an NA is an ICMPv6 message");
    let sum = icmpv6::checksum(&icmp, &addr, &ALL_NODES);
    na.set_checksum(sum);
    f
}

/// An AF_PACKET socket bound to `ifindex`. Protocol 0: it only sends, so
/// the kernel never queues received frames to it.
fn packet_socket(ifindex: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right below.
    let raw =
        check(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let sll = sockaddr_ll(ifindex, 0);
    // SAFETY: a valid sockaddr_ll of the size passed.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

fn sockaddr_ll(ifindex: u32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as libc::c_int;
    sll
}

/// The interface's Ethernet address (SIOCGIFHWADDR). Not /sys/class/net:
/// sysfs shows the namespace it was mounted in, not necessarily ours.
fn hw_addr(sock: &OwnedFd, name: &str) -> Result<MacAddr> {
    // SAFETY: ifreq is plain data (a name and a union); all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= ifr.ifr_name.len() {
        bail!("interface name {name} is longer than IFNAMSIZ");
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the name from and writes a sockaddr into
    // the ifreq, which lives for the call's duration.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut ifr) })
        .with_context(|| format!("reading the MAC address of {name}"))?;
    // SAFETY: SIOCGIFHWADDR succeeded, so the union holds ifru_hwaddr.
    let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        bail!(
            "{name} is not an Ethernet interface (hardware type {}); \
             announcing a floating IP needs one",
            hw.sa_family
        );
    }
    let b = hw.sa_data.map(|c| c as u8);
    Ok(MacAddr::new(b[0], b[1], b[2], b[3], b[4], b[5]))
}

/// Sends `frame`, a whole Ethernet frame, out of `ifindex`.
fn send_frame(sock: &OwnedFd, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    // The protocol here sets the skb's protocol: the frame's ethertype. The
    // frame carries its own Ethernet header, so no destination address is
    // needed (SOCK_RAW).
    let ethertype = EthernetPacket::new(frame)
        .ok_or_else(|| io::Error::other("frame shorter than an Ethernet header"))?
        .get_ethertype();
    let sll = sockaddr_ll(ifindex, ethertype.0);
    // SAFETY: the frame and address are valid for the call's duration.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != frame.len() {
        return Err(io::Error::other("short send of the frame"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{decode, encode, kernel, split};

    fn cidr(s: &str) -> IpCidr {
        s.parse().expect("test CIDR")
    }

    /// The expected bytes of a netlink header, for comparisons.
    fn hdr(len: u32, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v
    }

    fn attr(ty: u16, data: [u8; 4]) -> Vec<u8> {
        kernel::attr(ty, &data)
    }

    /// The request as the socket sends it: NLM_F_REQUEST and NLM_F_ACK
    /// added to the request's own flags.
    fn addr_request_bytes(op: AddrOp, ifindex: u32, c: IpCidr, seq: u32) -> Vec<u8> {
        let (msg, flags) = addr_request(op, ifindex, c.addr, c.prefix_len);
        encode(msg, 0x1 | 0x4 | flags, seq)
    }

    #[test]
    fn new_addr_request_bytes() {
        let msg = addr_request_bytes(AddrOp::New, 7, cidr("192.0.2.10/24"), 42);
        let mut want = hdr(
            48,
            20, // RTM_NEWADDR
            0x1 | 0x4 | 0x400 | 0x200,
            42,
        );
        // ifaddrmsg: AF_INET, /24, no flags, scope universe, ifindex 7.
        want.extend_from_slice(&[2, 24, 0, 0]);
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend(attr(2, [192, 0, 2, 10])); // IFA_LOCAL
        want.extend(attr(1, [192, 0, 2, 10])); // IFA_ADDRESS
        want.extend(attr(4, [192, 0, 2, 255])); // IFA_BROADCAST
        assert_eq!(msg, want);
    }

    #[test]
    fn del_addr_request_has_no_broadcast() {
        let msg = addr_request_bytes(AddrOp::Del, 3, cidr("10.1.2.3/16"), 9);
        let mut want = hdr(40, 21, 0x1 | 0x4, 9); // RTM_DELADDR, REQUEST|ACK
        want.extend_from_slice(&[2, 16, 0, 0]);
        want.extend_from_slice(&3u32.to_ne_bytes());
        want.extend(attr(2, [10, 1, 2, 3]));
        want.extend(attr(1, [10, 1, 2, 3]));
        assert_eq!(msg, want);
    }

    #[test]
    fn no_broadcast_for_31_and_32() {
        for c in ["198.51.100.4/31", "198.51.100.4/32"] {
            let msg = addr_request_bytes(AddrOp::New, 1, cidr(c), 1);
            assert_eq!(msg.len(), 16 + 8 + 8 + 8, "{c}");
            assert_eq!(&msg[0..4], &(msg.len() as u32).to_ne_bytes(), "{c}");
        }
    }

    fn bcast(c: &str) -> Ipv4Addr {
        let c = cidr(c);
        let IpAddr::V4(a) = c.addr else {
            panic!("not IPv4: {c}")
        };
        broadcast(a, c.prefix_len)
    }

    #[test]
    fn ipv6_addr_requests_bytes() {
        let a = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let v6attr = |ty: u16| kernel::attr(ty, &a);
        let msg = addr_request_bytes(AddrOp::New, 7, cidr("2001:db8::10/64"), 5);
        let mut want = hdr(64, 20, 0x1 | 0x4 | 0x400 | 0x200, 5);
        // ifaddrmsg: AF_INET6, /64, IFA_F_NODAD, scope universe, ifindex 7;
        // no broadcast in IPv6.
        want.extend_from_slice(&[10, 64, 0x02, 0]);
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend(v6attr(2)); // IFA_LOCAL
        want.extend(v6attr(1)); // IFA_ADDRESS
        assert_eq!(msg, want);
        // Deleting names the address and prefix only.
        let msg = addr_request_bytes(AddrOp::Del, 7, cidr("2001:db8::10/64"), 6);
        let mut want = hdr(64, 21, 0x1 | 0x4, 6);
        want.extend_from_slice(&[10, 64, 0, 0]);
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend(v6attr(2));
        want.extend(v6attr(1));
        assert_eq!(msg, want);
    }

    /// RFC 1071 sum over the IPv6 pseudo-header (RFC 8200 §8.1) and the
    /// ICMPv6 message, written here apart from pnet's.
    fn icmpv6_checksum(src: &[u8], dst: &[u8], msg: &[u8]) -> u16 {
        let len = (msg.len() as u32).to_be_bytes();
        let pseudo = [src, dst, &len, &[0, 0, 0, 58]].concat();
        let mut sum = 0u32;
        for chunk in [pseudo, msg.to_vec()].concat().chunks(2) {
            sum += u32::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn unsolicited_na_frame_layout() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let addr: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let target = addr.octets();
        let frames = announcements(MacAddr::new(2, 0x11, 0x22, 0x33, 0x44, 0x55), addr.into());
        assert_eq!(frames.len(), 1, "one advertisement per announcement");
        let f = &frames[0];
        let all_nodes = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        // The whole frame, built here byte by byte.
        let mut want = vec![0x33, 0x33, 0, 0, 0, 1]; // all-nodes MAC
        want.extend_from_slice(&mac);
        want.extend_from_slice(&[0x86, 0xdd]); // IPv6
        // Version 6, no traffic class or flow label; payload 32; ICMPv6;
        // hop limit 255.
        want.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
        want.extend_from_slice(&target); // source: the address itself
        want.extend_from_slice(&all_nodes);
        let mut icmp = vec![136, 0, 0, 0]; // NA, code 0, checksum below
        icmp.extend_from_slice(&[0x20, 0, 0, 0]); // R=0 S=0 O=1
        icmp.extend_from_slice(&target);
        icmp.extend_from_slice(&[2, 1]); // Target Link-Layer Address, 8 bytes
        icmp.extend_from_slice(&mac);
        let sum = icmpv6_checksum(&target, &all_nodes, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        want.extend_from_slice(&icmp);
        assert_eq!(f[..], want[..]);
        // And as a receiver's parser reads it: the checksum verifies.
        let eth = EthernetPacket::new(f).expect("ethernet");
        let ip = pnet_packet::ipv6::Ipv6Packet::new(eth.payload()).expect("ipv6");
        assert_eq!((ip.get_hop_limit(), ip.get_destination()), (255, ALL_NODES));
        let msg = Icmpv6Packet::new(ip.payload()).expect("icmpv6");
        assert_eq!(
            msg.get_checksum(),
            icmpv6::checksum(&msg, &addr, &ALL_NODES)
        );
        assert_eq!(
            icmpv6_checksum(&target, &all_nodes, ip.payload()),
            0,
            "sums to zero"
        );
        let na = pnet_packet::icmpv6::ndp::NeighborAdvertPacket::new(ip.payload()).expect("na");
        assert_eq!(na.get_flags(), NeighborAdvertFlags::Override);
        assert_eq!(na.get_target_addr(), addr);
        let opts = na.get_options();
        assert_eq!(opts.len(), 1);
        assert_eq!(
            (opts[0].option_type, opts[0].length, &opts[0].data[..]),
            (NdpOptionTypes::TargetLLAddr, 1, &mac[..])
        );
    }

    #[test]
    fn ipv4_announcements_are_a_garp_request_and_reply() {
        let mac = MacAddr::new(2, 0x11, 0x22, 0x33, 0x44, 0x55);
        let addr = Ipv4Addr::new(192, 0, 2, 10);
        let frames = announcements(mac, addr.into());
        assert_eq!(
            frames,
            [
                garp_frame(mac, addr, ArpOperations::Request).to_vec(),
                garp_frame(mac, addr, ArpOperations::Reply).to_vec()
            ]
        );
    }

    #[test]
    fn prefix_lengths_by_family() {
        assert!(check_prefix(cidr("2001:db8::10/128")).is_ok());
        assert!(check_prefix(cidr("192.0.2.10/32")).is_ok());
        let bad = IpCidr {
            addr: "192.0.2.10".parse().unwrap(),
            prefix_len: 33,
        };
        assert!(check_prefix(bad).is_err());
    }

    #[test]
    fn broadcast_addresses() {
        assert_eq!(bcast("192.0.2.10/24"), Ipv4Addr::new(192, 0, 2, 255));
        assert_eq!(bcast("192.0.2.10/30"), Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(bcast("10.0.0.1/8"), Ipv4Addr::new(10, 255, 255, 255));
        assert_eq!(bcast("10.0.0.1/0"), Ipv4Addr::BROADCAST);
        assert_eq!(bcast("10.0.0.1/32"), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn dump_request_bytes() {
        // As the socket sends it: REQUEST|DUMP.
        let msg = encode(dump_request(5, AddressFamily::Inet), 0x1 | 0x300, 77);
        let mut want = hdr(24, 22, 0x1 | 0x300, 77); // RTM_GETADDR
        want.extend_from_slice(&[2, 0, 0, 0]);
        want.extend_from_slice(&5u32.to_ne_bytes());
        assert_eq!(msg, want);
    }

    /// An RTM_NEWADDR message as the kernel sends it.
    fn newaddr(seq: u32, ifindex: u32, addr: [u8; 4], extra: &[u8]) -> Vec<u8> {
        let mut body = vec![2, 24, 0x80, 0];
        body.extend_from_slice(&ifindex.to_ne_bytes());
        body.extend(attr(1, addr));
        body.extend(attr(2, addr));
        body.extend_from_slice(extra);
        kernel::msg(20, 2, seq, &body)
    }

    /// The address message `m` decodes to.
    fn addr_msg(m: &netlink_packet_core::NetlinkBuffer<&[u8]>) -> io::Result<AddressMessage> {
        match decode(m)?.payload {
            netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(
                a,
            )) => Ok(a),
            other => panic!("not RTM_NEWADDR: {other:?}"),
        }
    }

    #[test]
    fn parses_a_multipart_datagram() {
        let mut d = newaddr(3, 2, [10, 0, 0, 1], &[]);
        d.extend(newaddr(3, 4, [10, 0, 0, 2], &[]));
        d.extend(kernel::msg(3, 2, 3, &0i32.to_ne_bytes()));
        let msgs = split(&d).expect("well-formed");
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[2].message_type(), 3);
        assert!(msgs.iter().all(|m| m.sequence_number() == 3));
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        assert!(!ifaddr_matches(&addr_msg(&msgs[0]).unwrap(), 4, a));
        assert!(ifaddr_matches(&addr_msg(&msgs[1]).unwrap(), 4, a));
        // Right address, wrong interface.
        assert!(!ifaddr_matches(&addr_msg(&msgs[1]).unwrap(), 2, a));
        // Right address and interface, other family.
        let a6 = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped());
        assert!(!ifaddr_matches(&addr_msg(&msgs[1]).unwrap(), 4, a6));
    }

    #[test]
    fn rejects_bad_lengths() {
        // Attribute longer than what is left of the message.
        let mut bad_attr = newaddr(1, 1, [10, 0, 0, 1], &[40, 0, 8, 0]);
        let msgs = split(&bad_attr).expect("outer lengths fine");
        assert!(addr_msg(&msgs[0]).is_err());
        // Attribute header cut short.
        bad_attr.truncate(bad_attr.len() - 2);
        let n = bad_attr.len() as u32;
        bad_attr[0..4].copy_from_slice(&n.to_ne_bytes());
        let msgs = split(&bad_attr).expect("outer lengths fine");
        assert!(addr_msg(&msgs[0]).is_err());
        // ifaddrmsg cut short.
        let short = kernel::msg(20, 2, 1, &[2, 24, 0]);
        assert!(addr_msg(&split(&short).unwrap()[0]).is_err());
    }

    #[test]
    fn garp_frame_layout() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let addr = Ipv4Addr::new(192, 0, 2, 10);
        for (op, code) in [(ArpOperations::Request, 1), (ArpOperations::Reply, 2)] {
            let f = garp_frame(MacAddr::new(2, 0x11, 0x22, 0x33, 0x44, 0x55), addr, op);
            assert_eq!(f.len(), 60);
            assert_eq!(f[0..6], [0xff; 6], "broadcast destination");
            assert_eq!(f[6..12], mac, "source MAC");
            assert_eq!(f[12..14], [0x08, 0x06], "ethertype ARP");
            assert_eq!(f[14..16], [0, 1], "htype Ethernet");
            assert_eq!(f[16..18], [0x08, 0x00], "ptype IPv4");
            assert_eq!(f[18..20], [6, 4], "address lengths");
            assert_eq!(f[20..22], [0, code], "opcode");
            assert_eq!(f[22..28], mac, "sender MAC");
            assert_eq!(f[28..32], [192, 0, 2, 10], "sender IP");
            assert_eq!(f[32..38], [0; 6], "target MAC");
            assert_eq!(f[38..42], [192, 0, 2, 10], "target IP");
            assert_eq!(f[42..60], [0; 18], "padding");
        }
    }
}
