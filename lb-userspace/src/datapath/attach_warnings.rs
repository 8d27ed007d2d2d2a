//! Warnings for setups that load and attach fine and then lose or corrupt
//! traffic, each naming its fix:
//! - a veth whose peer has no NAPI (GRO off and no XDP program on it): the
//!   kernel drops every frame XDP sends out of the veth (XDP_TX and
//!   XDP_REDIRECT in native mode);
//! - a veth peer with tx checksum offload on: packets from sockets behind it
//!   arrive CHECKSUM_PARTIAL, and once XDP rewrites them they arrive with bad
//!   checksums;
//! - a bpffs that lb mounted itself inside a private mount namespace (`ip
//!   netns exec` makes one): its pins die with that namespace.
//!
//! Everything here only reads: rtnetlink (RTM_GETLINK), SIOCETHTOOL get
//! commands, /proc/*/ns/mnt. Not /sys/class/net: sysfs shows the network
//! namespace it was mounted in, not necessarily the agent's. Nothing here
//! fails the agent; what cannot be read is logged at debug and skipped.
use std::{
    fs, io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::Path,
    time::Duration,
};

use log::{debug, info, warn};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{self, InfoKind, LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
};

use crate::netlink::{self, check};

// ---------------------------------------------------------------------------
// What to warn about (pure)

/// What lb could read about a veth peer in its own network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerFeatures {
    /// GRO on (`ethtool -k`: generic-receive-offload); `None`: unreadable.
    pub gro: Option<bool>,
    /// Tx checksum offload on (`ethtool -k`: tx-checksumming); `None`:
    /// unreadable.
    pub tx_csum: Option<bool>,
    /// An XDP program in driver (native) mode, which gives the peer NAPI.
    pub native_xdp: bool,
}

/// One thing wrong with a veth's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VethWarning {
    /// No NAPI on the peer: frames XDP sends out of the veth are dropped.
    PeerNoNapi,
    /// The peer hands over partial checksums, which rewrites leave wrong.
    PeerPartialChecksums,
}

/// What to warn about for a veth whose XDP program runs in native mode
/// (`native`; in generic mode XDP_TX and XDP_REDIRECT go through the
/// stack's transmit path, which needs no NAPI on the peer) and whose peer
/// shows `peer`. Unreadable settings warn about nothing.
pub fn veth_warnings(native: bool, peer: &PeerFeatures) -> Vec<VethWarning> {
    let mut out = Vec::new();
    if native && peer.gro == Some(false) && !peer.native_xdp {
        out.push(VethWarning::PeerNoNapi);
    }
    if peer.tx_csum == Some(true) {
        out.push(VethWarning::PeerPartialChecksums);
    }
    out
}

/// The log line for `w` on lb's interface `iface` with veth peer `peer`.
pub fn veth_warning_text(w: VethWarning, iface: &str, peer: &str) -> String {
    match w {
        VethWarning::PeerNoNapi => format!(
            "{iface}: its veth peer {peer} has GRO off and no XDP program, so it has no NAPI \
             and the kernel drops every frame XDP sends out of {iface} (XDP_TX/XDP_REDIRECT); \
             fix: `ethtool -K {peer} gro on` (or attach an XDP program to {peer})"
        ),
        VethWarning::PeerPartialChecksums => format!(
            "{iface}: its veth peer {peer} has tx checksum offload on, so packets sent from \
             sockets behind {peer} arrive with partial checksums (CHECKSUM_PARTIAL) and leave \
             lb's rewrite with bad checksums; fix: `ethtool -K {peer} tx off`"
        ),
    }
}

/// A veth peer in another network namespace: lb cannot read its ethtool
/// settings from its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePeer {
    /// Its name, if rtnetlink could tell (IFLA_TARGET_NETNSID).
    pub name: Option<String>,
    pub ifindex: u32,
    /// The peer namespace's id as seen from lb's (IFLA_LINK_NETNSID).
    pub nsid: i32,
    /// Whether it runs an XDP program in native mode, if known.
    pub native_xdp: Option<bool>,
}

/// The info line for a peer that could not be checked, with what to check
/// by hand. `native`: lb's program on `iface` runs in native mode.
pub fn remote_peer_text(iface: &str, peer: &RemotePeer, native: bool) -> String {
    let (what, name) = match &peer.name {
        Some(n) => (format!("{n} (ifindex {})", peer.ifindex), n.as_str()),
        None => (format!("ifindex {}", peer.ifindex), "<peer>"),
    };
    let napi = if native && peer.native_xdp != Some(true) {
        format!(
            "`ethtool -K {name} gro on` (or attach an XDP program to it), or the kernel drops \
             every frame XDP sends out of {iface}; and "
        )
    } else {
        String::new()
    };
    format!(
        "{iface}: its veth peer {what} is in another network namespace (nsid {}), so lb could \
         not check its GRO and tx checksum settings; in that namespace run {napi}\
         `ethtool -K {name} tx off`, or packets sent from sockets behind it leave lb's rewrite \
         with bad checksums",
        peer.nsid
    )
}

/// A namespace as /proc shows it: the nsfs device and inode.
pub type NsId = (u64, u64);

/// How lb's mount namespace relates to the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountNs {
    /// The same as pid 1's.
    Host,
    /// Not the one of `reference` ("pid 1" or "the parent process").
    Private { reference: &'static str },
    /// Could not tell (pid 1's is unreadable and the parent shares ours, or
    /// nothing was readable).
    Unknown,
}

/// Judges lb's mount namespace `own` against pid 1's (`init`), or, when
/// that is unreadable (some sandboxes hide it even from root), against the
/// parent's: `ip netns exec` execs lb in a namespace its caller is not in.
pub fn judge_mount_ns(own: Option<NsId>, init: Option<NsId>, parent: Option<NsId>) -> MountNs {
    let Some(own) = own else {
        return MountNs::Unknown;
    };
    match (init, parent) {
        (Some(init), _) if init == own => MountNs::Host,
        (Some(_), _) => MountNs::Private { reference: "pid 1" },
        (None, Some(parent)) if parent != own => MountNs::Private {
            reference: "the parent process",
        },
        _ => MountNs::Unknown,
    }
}

/// The warning for a bpffs lb mounted on `mount_point` in a private mount
/// namespace, with its pins under `pin_dir`.
pub fn private_bpffs_text(mount_point: &Path, pin_dir: &Path, reference: &str) -> String {
    format!(
        "lb mounted the bpf filesystem on {mp} inside a private mount namespace (not the one \
         of {reference}; `ip netns exec` makes one): the pins under {pd} die with this mount \
         namespace, that is with this process, so stopping the agent cannot leave the datapath \
         forwarding, the next agent cannot adopt it (no hitless restart), and `lb flows` run \
         on the host cannot read the flow table; fix: run lb in the host mount namespace, \
         entering only the network namespace (`nsenter --net=/run/netns/NAME lb run -c FILE`), \
         or mount a bpffs in the host namespace before starting lb (`mount -t bpf bpf \
         /sys/fs/bpf`; `ip netns exec` remounts /sys and hides that one, so with it mount one \
         outside /sys, `mkdir -p /run/lb-bpf && mount -t bpf bpf /run/lb-bpf`, and set \
         `bpf.pin_dir: /run/lb-bpf/lb`)",
        mp = mount_point.display(),
        pd = pin_dir.display(),
    )
}

// ---------------------------------------------------------------------------
// Entry points

/// Checks every veth among `interfaces` (after XDP is attached to all of
/// them, so lb's own programs count) and logs what it finds.
pub fn check_interfaces(interfaces: &[String]) {
    let nl = match netlink::Socket::open(NL_TIMEOUT) {
        Ok(nl) => nl,
        Err(e) => {
            debug!("veth checks skipped: rtnetlink: {e}");
            return;
        }
    };
    for iface in interfaces {
        if let Err(e) = check_interface(&nl, iface) {
            debug!("{iface}: veth checks skipped: {e}");
        }
    }
}

/// Whether `iface` is a veth (`hook: auto` runs tc there).
pub fn is_veth(iface: &str) -> io::Result<bool> {
    let nl = netlink::Socket::open(NL_TIMEOUT)?;
    let ifindex = super::ifindex(iface).map_err(io::Error::other)?;
    Ok(get_link(&nl, ifindex, None)?.kind == Some(InfoKind::Veth))
}

/// Whether `iface` is a veth whose peer lives in another network namespace:
/// the one kind of device tc may hand a packet to by `bpf_redirect_peer`
/// (the kernel drops it for any other, and for a peer in this namespace).
pub fn veth_peer_elsewhere(iface: &str) -> io::Result<bool> {
    let nl = netlink::Socket::open(NL_TIMEOUT)?;
    let ifindex = super::ifindex(iface).map_err(io::Error::other)?;
    let link = get_link(&nl, ifindex, None)?;
    Ok(link.kind == Some(InfoKind::Veth) && link.link_netnsid.is_some())
}

fn check_interface(nl: &netlink::Socket, iface: &str) -> io::Result<()> {
    let ifindex = super::ifindex(iface).map_err(io::Error::other)?;
    let link = get_link(nl, ifindex, None)?;
    if link.kind != Some(InfoKind::Veth) {
        return Ok(());
    }
    // Only generic mode needs no NAPI on the peer; anything else (native,
    // or a state we cannot read) is judged as native.
    let native = link.xdp_attached != Some(XdpAttached::SocketBuffer);
    let Some(peer_index) = link.link.filter(|&i| i != 0) else {
        debug!("{iface}: veth without a visible peer");
        return Ok(());
    };
    if let Some(nsid) = link.link_netnsid {
        // Best effort: the name and XDP state through the peer's nsid.
        let remote = get_link(nl, peer_index, Some(nsid)).ok();
        let peer = RemotePeer {
            name: remote.as_ref().map(|l| l.name.clone()),
            ifindex: peer_index,
            nsid,
            native_xdp: remote.as_ref().map(LinkInfo::native_xdp),
        };
        info!("{}", remote_peer_text(iface, &peer, native));
        return Ok(());
    }
    let peer = get_link(nl, peer_index, None)?;
    let sock = ethtool_socket()?;
    let read = |cmd, what| match ethtool_get(&sock, &peer.name, cmd) {
        Ok(v) => Some(v),
        Err(e) => {
            debug!(
                "{iface}: reading {what} of its veth peer {}: {e}",
                peer.name
            );
            None
        }
    };
    let features = PeerFeatures {
        gro: read(ETHTOOL_GGRO, "GRO"),
        tx_csum: read(ETHTOOL_GTXCSUM, "tx checksumming"),
        native_xdp: peer.native_xdp(),
    };
    debug!("{iface}: veth peer {}: {features:?}", peer.name);
    for w in veth_warnings(native, &features) {
        warn!("{}", veth_warning_text(w, iface, &peer.name));
    }
    Ok(())
}

/// Called right after lb mounted a bpffs on `mount_point` for `pin_dir`:
/// warns if this mount namespace is a private one.
pub fn check_mounted_bpffs(mount_point: &Path, pin_dir: &Path) {
    let ns = |p: &str| match fs::metadata(p) {
        Ok(m) => Some((m.dev(), m.ino())),
        Err(e) => {
            debug!("reading {p}: {e}");
            None
        }
    };
    // SAFETY: getppid has no preconditions and cannot fail.
    let ppid = unsafe { libc::getppid() };
    let parent = if ppid > 1 {
        ns(&format!("/proc/{ppid}/ns/mnt"))
    } else {
        None
    };
    match judge_mount_ns(ns("/proc/self/ns/mnt"), ns("/proc/1/ns/mnt"), parent) {
        MountNs::Private { reference } => {
            warn!("{}", private_bpffs_text(mount_point, pin_dir, reference))
        }
        MountNs::Host => {}
        MountNs::Unknown => debug!(
            "could not tell whether the bpffs on {} is in a private mount namespace",
            mount_point.display()
        ),
    }
}

// ---------------------------------------------------------------------------
// rtnetlink: RTM_GETLINK for one interface

/// How long to wait for the kernel's answer to RTM_GETLINK.
const NL_TIMEOUT: Duration = Duration::from_secs(2);

/// What RTM_GETLINK tells about one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LinkInfo {
    name: String,
    /// IFLA_INFO_KIND: veth, bridge, ...
    kind: Option<InfoKind>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in its namespace).
    link: Option<u32>,
    /// IFLA_LINK_NETNSID: set when the peer is in another namespace.
    link_netnsid: Option<i32>,
    /// IFLA_XDP_ATTACHED; `None`: no XDP attribute at all.
    xdp_attached: Option<XdpAttached>,
    /// IFLA_XDP_DRV_PROG_ID present: a native program (with MULTI).
    xdp_drv_prog: bool,
}

impl LinkInfo {
    /// An XDP program in driver mode: the veth has NAPI for it.
    fn native_xdp(&self) -> bool {
        match self.xdp_attached {
            Some(XdpAttached::Driver) => true,
            Some(XdpAttached::Multiple) => self.xdp_drv_prog,
            _ => false,
        }
    }
}

/// RTM_GETLINK for `ifindex`, in the namespace with id `nsid` if given
/// (IFLA_TARGET_NETNSID, which netlink-packet-route calls IfNetnsId).
fn link_request(ifindex: u32, nsid: Option<i32>) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    m.attributes.extend(nsid.map(LinkAttribute::IfNetnsId));
    RouteNetlinkMessage::GetLink(m)
}

/// What lb needs of an RTM_NEWLINK answer.
fn link_info(m: &LinkMessage) -> LinkInfo {
    let mut l = LinkInfo::default();
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name.clone_from(n),
            LinkAttribute::Link(i) => l.link = Some(*i),
            LinkAttribute::LinkNetNsId(id) => l.link_netnsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let link::LinkInfo::Kind(k) = i {
                        l.kind = Some(k.clone());
                    }
                }
            }
            LinkAttribute::Xdp(xdp) => {
                for x in xdp {
                    match x {
                        LinkXdp::Attached(a) => l.xdp_attached = Some(*a),
                        LinkXdp::DrvProgId(_) => l.xdp_drv_prog = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// The link `ifindex` (in the namespace with id `nsid`, if given).
fn get_link(nl: &netlink::Socket, ifindex: u32, nsid: Option<i32>) -> io::Result<LinkInfo> {
    match nl.get(link_request(ifindex, nsid))? {
        RouteNetlinkMessage::NewLink(m) => Ok(link_info(&m)),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("RTM_GETLINK answered with {other:?}"),
        )),
    }
}

// ---------------------------------------------------------------------------
// SIOCETHTOOL

// include/uapi/linux/ethtool.h
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_GGRO: u32 = 0x2b;

/// struct ethtool_value
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

fn ethtool_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right below.
    let raw =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A legacy ethtool get command (`ETHTOOL_G*` with a struct ethtool_value)
/// on `name`: whether the feature is on.
fn ethtool_get(sock: &OwnedFd, name: &str, cmd: u32) -> io::Result<bool> {
    // SAFETY: ifreq is plain data (a name and a union); all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let mut value = EthtoolValue { cmd, data: 0 };
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: SIOCETHTOOL reads the name and the command from, and writes
    // the value into, memory that lives for the call's duration.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &raw mut ifr) })?;
    Ok(value.data != 0)
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NetlinkPayload;

    use super::*;
    use crate::netlink::{decode, encode, kernel, split};

    const OFF: Option<bool> = Some(false);
    const ON: Option<bool> = Some(true);

    fn peer(gro: Option<bool>, tx_csum: Option<bool>, native_xdp: bool) -> PeerFeatures {
        PeerFeatures {
            gro,
            tx_csum,
            native_xdp,
        }
    }

    #[test]
    fn a_fresh_veth_peer_gets_both_warnings() {
        // A new veth: GRO off, tx checksumming on, no XDP.
        assert_eq!(
            veth_warnings(true, &peer(OFF, ON, false)),
            [VethWarning::PeerNoNapi, VethWarning::PeerPartialChecksums]
        );
    }

    #[test]
    fn the_fixed_peer_gets_none() {
        assert_eq!(veth_warnings(true, &peer(ON, OFF, false)), []);
    }

    #[test]
    fn gro_on_or_native_xdp_gives_the_peer_napi() {
        assert_eq!(veth_warnings(true, &peer(ON, OFF, false)), []);
        assert_eq!(veth_warnings(true, &peer(OFF, OFF, true)), []);
        assert_eq!(
            veth_warnings(true, &peer(OFF, OFF, false)),
            [VethWarning::PeerNoNapi]
        );
    }

    #[test]
    fn generic_mode_needs_no_napi_but_still_suffers_partial_checksums() {
        assert_eq!(
            veth_warnings(false, &peer(OFF, ON, false)),
            [VethWarning::PeerPartialChecksums]
        );
    }

    #[test]
    fn unreadable_settings_warn_about_nothing() {
        assert_eq!(veth_warnings(true, &peer(None, None, false)), []);
    }

    #[test]
    fn warnings_name_the_interface_and_the_exact_fix() {
        let t = veth_warning_text(VethWarning::PeerNoNapi, "eth0", "eth0p");
        assert!(
            t.starts_with("eth0: its veth peer eth0p has GRO off"),
            "{t}"
        );
        assert!(t.contains("fix: `ethtool -K eth0p gro on`"), "{t}");
        let t = veth_warning_text(VethWarning::PeerPartialChecksums, "eth0", "eth0p");
        assert!(
            t.starts_with("eth0: its veth peer eth0p has tx checksum"),
            "{t}"
        );
        assert!(t.ends_with("fix: `ethtool -K eth0p tx off`"), "{t}");
    }

    #[test]
    fn a_remote_peer_is_named_with_what_to_check() {
        let mut p = RemotePeer {
            name: Some("to-lb".into()),
            ifindex: 7,
            nsid: 2,
            native_xdp: Some(false),
        };
        let t = remote_peer_text("eth1", &p, true);
        assert!(t.contains("peer to-lb (ifindex 7) is in another network namespace (nsid 2)"));
        assert!(t.contains("`ethtool -K to-lb gro on`") && t.contains("`ethtool -K to-lb tx off`"));
        // Native XDP on the peer, or generic mode here: GRO does not matter.
        p.native_xdp = Some(true);
        assert!(!remote_peer_text("eth1", &p, true).contains("gro on"));
        p.native_xdp = None;
        assert!(!remote_peer_text("eth1", &p, false).contains("gro on"));
        p.name = None;
        let t = remote_peer_text("eth1", &p, true);
        assert!(t.contains("peer ifindex 7 is") && t.contains("`ethtool -K <peer> gro on`"));
    }

    #[test]
    fn mount_namespace_judged_against_pid_1_then_the_parent() {
        let (a, b) = (Some((4, 100)), Some((4, 200)));
        assert_eq!(judge_mount_ns(a, a, b), MountNs::Host);
        assert_eq!(
            judge_mount_ns(a, b, a),
            MountNs::Private { reference: "pid 1" }
        );
        // pid 1 unreadable: `ip netns exec` left its caller behind.
        assert_eq!(
            judge_mount_ns(a, None, b),
            MountNs::Private {
                reference: "the parent process"
            }
        );
        assert_eq!(judge_mount_ns(a, None, a), MountNs::Unknown);
        assert_eq!(judge_mount_ns(a, None, None), MountNs::Unknown);
        assert_eq!(judge_mount_ns(None, a, b), MountNs::Unknown);
    }

    #[test]
    fn private_bpffs_warning_names_the_fix() {
        let t = private_bpffs_text(
            Path::new("/sys/fs/bpf"),
            Path::new("/sys/fs/bpf/lb"),
            "pid 1",
        );
        assert!(t.contains("private mount namespace (not the one of pid 1"));
        assert!(t.contains("pins under /sys/fs/bpf/lb die with this mount namespace"));
        assert!(t.contains("`nsenter --net=/run/netns/NAME lb run -c FILE`"));
        assert!(t.contains("`mount -t bpf bpf /sys/fs/bpf`"));
    }

    // include/uapi/linux/if_link.h, for messages as the kernel sends them.
    const IFINFOMSG_LEN: usize = 16;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINK: u16 = 5;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_LINK_NETNSID: u16 = 37;
    const IFLA_XDP: u16 = 43;
    const IFLA_TARGET_NETNSID: u16 = 46;
    const IFLA_XDP_ATTACHED: u16 = 2;
    const IFLA_XDP_DRV_PROG_ID: u16 = 5;
    const XDP_ATTACHED_MULTI: u8 = 4;
    const RTM_NEWLINK: u16 = 16;

    use kernel::attr;

    fn ne_u16(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([b[at], b[at + 1]])
    }

    fn ne_u32(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// The RTM_NEWLINK answer with `payload` (ifinfomsg and attributes),
    /// decoded as the socket decodes it.
    fn parse_link(payload: &[u8]) -> io::Result<LinkInfo> {
        let d = kernel::msg(RTM_NEWLINK, 0, 1, payload);
        match decode(&split(&d)?[0])?.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => Ok(link_info(&m)),
            other => panic!("not RTM_NEWLINK: {other:?}"),
        }
    }

    #[test]
    fn link_request_bytes() {
        // As the socket sends it: NLM_F_REQUEST.
        let m = encode(link_request(5, None), 1, 9);
        assert_eq!(m.len(), 16 + IFINFOMSG_LEN);
        assert_eq!(ne_u32(&m, 0), 32);
        assert_eq!(ne_u16(&m, 4), 18); // RTM_GETLINK
        assert_eq!(ne_u16(&m, 6), 1); // NLM_F_REQUEST
        assert_eq!(ne_u32(&m, 8), 9);
        assert_eq!(m[16..32], [0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let m = encode(link_request(5, Some(3)), 1, 9);
        assert_eq!(ne_u32(&m, 0), 40);
        assert_eq!(ne_u16(&m, 32), 8); // rta_len
        assert_eq!(ne_u16(&m, 34), IFLA_TARGET_NETNSID);
        assert_eq!(m[36..], 3i32.to_ne_bytes());
    }

    #[test]
    fn parses_a_veth_link() {
        let mut p = vec![0u8; IFINFOMSG_LEN];
        p.extend(attr(IFLA_IFNAME, b"lbv0\0"));
        p.extend(attr(IFLA_LINK, &9u32.to_ne_bytes()));
        // NLA_F_NESTED set on the container, as the kernel does.
        p.extend(attr(IFLA_LINKINFO | 0x8000, &attr(IFLA_INFO_KIND, b"veth")));
        let mut xdp = attr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_MULTI]);
        xdp.extend(attr(IFLA_XDP_DRV_PROG_ID, &42u32.to_ne_bytes()));
        p.extend(attr(IFLA_XDP | 0x8000, &xdp));
        let l = parse_link(&p).unwrap();
        assert_eq!(l.name, "lbv0");
        assert_eq!(l.kind, Some(InfoKind::Veth));
        assert_eq!((l.link, l.link_netnsid), (Some(9), None));
        assert!(l.native_xdp());

        p.extend(attr(IFLA_LINK_NETNSID, &1i32.to_ne_bytes()));
        assert_eq!(parse_link(&p).unwrap().link_netnsid, Some(1));
    }

    #[test]
    fn xdp_modes() {
        let l = |xdp_attached, xdp_drv_prog| LinkInfo {
            xdp_attached,
            xdp_drv_prog,
            ..LinkInfo::default()
        };
        assert!(l(Some(XdpAttached::Driver), true).native_xdp());
        assert!(!l(Some(XdpAttached::SocketBuffer), false).native_xdp());
        assert!(!l(Some(XdpAttached::Multiple), false).native_xdp());
        assert!(!l(Some(XdpAttached::None), false).native_xdp());
        assert!(!l(None, false).native_xdp());
    }

    #[test]
    fn rejects_malformed_attributes() {
        let mut p = vec![0u8; IFINFOMSG_LEN];
        p.extend_from_slice(&[200, 0, 3, 0, b'x']);
        assert!(parse_link(&p).is_err());
        assert!(parse_link(&[0u8; 8]).is_err());
    }
}
