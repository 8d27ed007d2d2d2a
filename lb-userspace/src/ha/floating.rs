//! Floating IPs: the addresses the active node holds. Taking the active role
//! adds them to their interfaces and announces them with gratuitous ARP;
//! giving it up removes them.
//!
//! Addresses go through rtnetlink (RTM_NEWADDR / RTM_DELADDR / RTM_GETADDR,
//! built with netlink-packet-route, sent by netlink.rs) rather than by
//! running `ip`: the kernel's errno tells "already there" (EEXIST) and "not
//! there" (EADDRNOTAVAIL) apart from real failures, with no output to parse
//! and no dependency on iproute2 being installed. The requests take the
//! address as an `IpAddr`, so IPv6 addresses differ only in family.
//!
//! The announcements are pnet's Ethernet and ARP packets, sent whole on an
//! AF_PACKET socket that takes the protocol from the frame's ethertype.
//!
//! Every function acts in the calling thread's network namespace (the agent
//! runs inside the one it serves) and opens and closes its own socket: these
//! are rare events (a role change, a periodic check), not a hot path.

use std::{
    ffi::CString,
    io,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage, AddressScope},
};
use pnet_base::MacAddr;
use pnet_packet::{
    MutablePacket,
    arp::{ArpHardwareTypes, ArpOperation, ArpOperations, MutableArpPacket},
    ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket},
};

use crate::{
    config::{FloatingIp, Ipv4Cidr},
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
/// and receives the traffic, which is what the caller wants to know.
pub fn present(ip: &FloatingIp) -> Result<bool> {
    let ifindex = ifindex(&ip.interface)?;
    holds_addr(ifindex, IpAddr::V4(ip.address.addr))
        .map_err(with_hint)
        .with_context(|| format!("listing the IPv4 addresses of {}", ip.interface))
}

/// Announces `ip` on its interface: one gratuitous ARP request (what
/// keepalived sends, and what most switches and hosts learn from) followed
/// by one gratuitous ARP reply (for the few that only learn from replies),
/// both broadcast, sender and target address the floating IP.
pub fn send_garp(ip: &FloatingIp) -> Result<()> {
    let ifindex = ifindex(&ip.interface)?;
    let ctx = || {
        format!(
            "sending gratuitous ARP for {} on {}",
            ip.address.addr, ip.interface
        )
    };
    let sock = packet_socket(ifindex)
        .map_err(with_hint)
        .with_context(ctx)?;
    let mac = hw_addr(&sock, &ip.interface).with_context(ctx)?;
    for op in [ArpOperations::Request, ArpOperations::Reply] {
        send_frame(&sock, ifindex, &garp_frame(mac, ip.address.addr, op))
            .map_err(with_hint)
            .with_context(ctx)?;
    }
    Ok(())
}

fn check_prefix(cidr: Ipv4Cidr) -> Result<()> {
    if cidr.prefix_len > 32 {
        bail!("floating IP {cidr}: prefix length must be 0..=32");
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

fn addr_change(op: AddrOp, ifindex: u32, cidr: Ipv4Cidr) -> io::Result<()> {
    let (msg, flags) = addr_request(op, ifindex, IpAddr::V4(cidr.addr), cidr.prefix_len);
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
/// An IPv6 address would be announced by an unsolicited neighbour
/// advertisement instead (pnet's `icmpv6::ndp`), sent the same way.
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
             gratuitous ARP needs one",
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

    fn cidr(s: &str) -> Ipv4Cidr {
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
    fn addr_request_bytes(op: AddrOp, ifindex: u32, c: Ipv4Cidr, seq: u32) -> Vec<u8> {
        let (msg, flags) = addr_request(op, ifindex, IpAddr::V4(c.addr), c.prefix_len);
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
        broadcast(c.addr, c.prefix_len)
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
