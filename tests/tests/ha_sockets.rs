//! The HA agent's own sockets on real interfaces, each in a namespace made
//! by the test: floating IPs over rtnetlink with gratuitous ARP or
//! unsolicited neighbour advertisements (`ha::floating`), and the ICMP
//! pinger that checks them (`ha::liveness`).
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use lb_tests::{Netns, ha_topology::link_mac, require_root};
use lb_userspace::{
    config::FloatingIp,
    ha::{floating, liveness::Pinger},
};

fn ip_out(ns: &Netns, args: &[&str]) -> String {
    String::from_utf8_lossy(&ns.ip(args).stdout).into_owned()
}

#[test]
fn floating_ips_are_added_found_removed_and_announced() {
    require_root();
    let ns = Netns::new("fl");
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    ns.ip(&["link", "set", "va", "up"]);
    ns.ip(&["link", "set", "vb", "up"]);
    let fip = FloatingIp {
        address: "10.98.0.10/24".parse().expect("cidr"),
        interface: "va".into(),
    };
    let f = fip.clone();
    ns.run(move || {
        assert!(!floating::present(&f).expect("present before add"));
        assert!(floating::add(&f).expect("first add"), "first add adds");
        assert!(
            !floating::add(&f).expect("second add"),
            "second add finds it there"
        );
        assert!(floating::present(&f).expect("present after add"));
    });
    let out = ip_out(&ns, &["-4", "addr", "show", "dev", "va"]);
    assert!(
        out.contains("inet 10.98.0.10/24 brd 10.98.0.255 scope global va"),
        "{out}"
    );

    // The announcement, captured on the veth's other end: an ARP request,
    // then a reply, both from va's MAC, sender = target = the address.
    let f = fip.clone();
    let frames = ns.run(move || {
        let cap = capture("vb", libc::ETH_P_ARP);
        floating::announce(&f).expect("announce");
        let addr = Ipv4Addr::new(10, 98, 0, 10).octets();
        read_frames(&cap, 2, |f| f.get(28..32) == Some(&addr[..]))
    });
    let mac: Vec<u8> = link_mac(&ns, "va")
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    for (frame, op) in frames.iter().zip([1u8, 2]) {
        assert_eq!(frame.len(), 60, "padded to the Ethernet minimum");
        assert_eq!(frame[..6], [0xff; 6], "broadcast");
        assert_eq!(frame[6..12], mac[..], "from va");
        assert_eq!(frame[12..14], [0x08, 0x06], "ARP");
        assert_eq!(frame[21], op, "request, then reply");
        assert_eq!(frame[22..28], mac[..], "sender MAC");
        assert_eq!(frame[28..32], [10, 98, 0, 10], "sender IP");
        assert_eq!(frame[38..42], [10, 98, 0, 10], "target IP = sender IP");
    }

    ns.run(move || {
        assert!(
            floating::remove(&fip).expect("first remove"),
            "first remove removes"
        );
        assert!(
            !floating::remove(&fip).expect("second remove"),
            "second remove finds nothing"
        );
        assert!(!floating::present(&fip).expect("present after remove"));
        let gone = FloatingIp {
            interface: "nosuch0".into(),
            ..fip.clone()
        };
        assert!(!floating::remove(&gone).expect("remove on a missing interface"));
        let err = format!(
            "{:#}",
            floating::add(&gone).expect_err("add on a missing interface")
        );
        assert!(err.contains("nosuch0"), "{err}");
        let lo = FloatingIp {
            interface: "lo".into(),
            ..fip
        };
        let err = format!("{:#}", floating::announce(&lo).expect_err("GARP on lo"));
        assert!(err.contains("not an Ethernet interface"), "{err}");
    });
    let out = ip_out(&ns, &["-4", "addr", "show", "dev", "va"]);
    assert!(!out.contains("10.98.0.10"), "{out}");
}

#[test]
fn ipv6_floating_ips_are_added_without_dad_and_advertised() {
    require_root();
    let ns = Netns::new("fl6");
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    ns.ip(&["link", "set", "va", "up"]);
    ns.ip(&["link", "set", "vb", "up"]);
    let fip = FloatingIp {
        address: "2001:db8:98::10/64".parse().expect("cidr"),
        interface: "va".into(),
    };
    let f = fip.clone();
    ns.run(move || {
        assert!(!floating::present(&f).expect("present before add"));
        assert!(floating::add(&f).expect("first add"), "first add adds");
        assert!(!floating::add(&f).expect("second add"), "already there");
        assert!(floating::present(&f).expect("present after add"));
    });
    // Usable at once: not tentative, as duplicate address detection would
    // leave it for a second or more.
    let out = ip_out(&ns, &["-6", "addr", "show", "dev", "va"]);
    let line = out
        .lines()
        .find(|l| l.contains("2001:db8:98::10/64"))
        .unwrap_or_else(|| panic!("address missing: {out}"));
    assert!(
        line.contains("nodad") && !line.contains("tentative"),
        "{line}"
    );

    // The announcement, captured on the veth's other end.
    let f = fip.clone();
    let target = "2001:db8:98::10".parse::<Ipv6Addr>().unwrap().octets();
    let frames = ns.run(move || {
        let cap = capture("vb", libc::ETH_P_IPV6);
        floating::announce(&f).expect("announce");
        // ICMPv6 neighbour advertisements for the address; the kernel's own
        // (MLD, link-local DAD) are skipped.
        read_frames(&cap, 1, |f| {
            f.get(20) == Some(&58) && f.get(54) == Some(&136) && f.get(62..78) == Some(&target)
        })
    });
    let mac: Vec<u8> = link_mac(&ns, "va")
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    let f = &frames[0];
    assert_eq!(f.len(), 86);
    assert_eq!(f[..6], [0x33, 0x33, 0, 0, 0, 1], "all-nodes MAC");
    assert_eq!(f[6..12], mac[..], "from va");
    assert_eq!(f[12..14], [0x86, 0xdd], "IPv6");
    assert_eq!(f[21], 255, "hop limit");
    assert_eq!(f[22..38], target, "source: the address");
    assert_eq!(
        f[38..54],
        [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        "to all nodes"
    );
    assert_eq!(f[58], 0x20, "Override, not Solicited, not Router");
    assert_eq!(f[78..80], [2, 1], "Target Link-Layer Address option");
    assert_eq!(f[80..86], mac[..]);
    // The checksum as a receiving kernel checks it: over the pseudo-header.
    let ip = pnet::packet::ipv6::Ipv6Packet::new(&f[14..]).expect("ipv6");
    let icmp = pnet::packet::icmpv6::Icmpv6Packet::new(&f[54..]).expect("icmpv6");
    let sum = pnet::packet::icmpv6::checksum(&icmp, &ip.get_source(), &ip.get_destination());
    assert_eq!(icmp.get_checksum(), sum);

    ns.run(move || {
        assert!(floating::remove(&fip).expect("remove"), "removes");
        assert!(!floating::remove(&fip).expect("second remove"));
        assert!(!floating::present(&fip).expect("present after remove"));
    });
    let out = ip_out(&ns, &["-6", "addr", "show", "dev", "va"]);
    assert!(!out.contains("2001:db8:98::10"), "{out}");
}

#[test]
fn the_pinger_tells_an_answering_address_from_a_silent_one() {
    require_root();
    let ns = Netns::new("lv");
    ns.ip(&["link", "set", "lo", "up"]);
    // A veth whose peer stays down: an unplugged link.
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    ns.ip(&["addr", "add", "10.97.0.1/24", "dev", "va"]);
    ns.ip(&["link", "set", "va", "up"]);
    let silent = Ipv4Addr::new(10, 97, 0, 2);
    let unroutable = Ipv4Addr::new(10, 96, 0, 2);
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            let second = Duration::from_secs(1);
            let mut lo = Pinger::new(vec![Ipv4Addr::LOCALHOST]).expect("Pinger lo");
            assert!(lo.probe(second).await, "127.0.0.1 answers");
            assert!(lo.probe(second).await, "and again with the next seq");
            // Same pid, so the same identifier and first sequence number as
            // `both`, probing at the same moment: only the nonce and the
            // source keep `dead` from taking `both`'s replies.
            let mut dead = Pinger::new(vec![silent]).expect("Pinger silent");
            let mut both = Pinger::new(vec![silent, Ipv4Addr::LOCALHOST]).expect("Pinger both");
            let t = Instant::now();
            let short = Duration::from_millis(300);
            let (d, b) = tokio::join!(dead.probe(short), both.probe(second));
            assert!(!d, "nobody answers for {silent}");
            assert!(b, "one live target is enough");
            assert!(t.elapsed() >= short, "waited the full timeout");
            let mut nowhere = Pinger::new(vec![unroutable]).expect("Pinger unroutable");
            assert!(!nowhere.probe(second).await, "{unroutable} is unroutable");
        });
    });
}

/// An AF_PACKET socket receiving the ARP frames that arrive on `iface`.
/// A packet socket receiving the frames of one ethertype on `iface`, each
/// recv waiting at most 2 s.
fn capture(iface: &str, ethertype: i32) -> OwnedFd {
    let name = std::ffi::CString::new(iface).expect("name");
    // SAFETY: a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex != 0, "no interface {iface}");
    let proto = (ethertype as u16).to_be();
    // SAFETY: plain socket(2); owned right below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(
        raw >= 0,
        "capture socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: a valid timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVTIMEO");
    fd
}

/// `want` frames that are `ours` (anything else the kernel sends is
/// skipped), waiting at most 2 s for each.
fn read_frames(fd: &OwnedFd, want: usize, ours: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut buf = [0u8; 2048];
    // Bounded: each recv waits at most 2 s, and a failed one ends the test.
    for _ in 0..100 {
        if frames.len() == want {
            break;
        }
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert!(
            n >= 0,
            "waiting for frame {}: {}",
            frames.len() + 1,
            std::io::Error::last_os_error()
        );
        let frame = &buf[..n as usize];
        if ours(frame) {
            frames.push(frame.to_vec());
        }
    }
    assert_eq!(frames.len(), want, "frames captured");
    frames
}
