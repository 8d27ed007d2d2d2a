//! Rules that need the host the config runs on, checked by `lb check`, at
//! start and at every reload (the parse itself stays pure):
//! - a VIP at an address of one of lb's interfaces is refused (but for a
//!   floating IP of `ha:`, which the active node holds for its VIPs): the
//!   datapath would take the host's own traffic to that address and port
//!   (its ssh, its web server) for the VIP;
//! - a real no route reaches is a warning: it may be a route yet to come,
//!   but until then every flow sent to it fails.
use std::{
    collections::{HashMap, HashSet},
    ffi::CStr,
    net::{IpAddr, SocketAddr, UdpSocket},
};

use super::{
    Config, ConfigIssue,
    index::{PosIndex, join},
};

/// Unrouted reals named one by one; the rest are counted.
const MAX_LISTED: usize = 10;

/// What the host says of a config: errors refuse it, warnings are shown.
#[derive(Debug, Default)]
pub struct HostIssues {
    pub errors: Vec<ConfigIssue>,
    pub warnings: Vec<ConfigIssue>,
}

impl HostIssues {
    /// The errors, one per line, for a refusal.
    pub fn refusal(&self) -> Option<String> {
        (!self.errors.is_empty()).then(|| {
            self.errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
    }
}

impl Config {
    /// The host rules for this config, read from `src` (its text, for the
    /// positions) named `file`. Reals of `running` (the config a reload
    /// replaces) were checked when it came: only new ones are asked about
    /// their route, so a reload at 65,536 reals costs no 65,536 lookups.
    pub fn host_issues(&self, src: &str, file: &str, running: Option<&Config>) -> HostIssues {
        let known: HashSet<IpAddr> = running
            .iter()
            .flat_map(|c| c.serverfarms.values())
            .flat_map(|f| f.reals.iter().map(|r| r.address))
            .collect();
        // Built only for an issue to place: it costs a parse of the file.
        let index = std::cell::OnceCell::new();
        let at = |path: String, message: String| {
            let pos = index
                .get_or_init(|| PosIndex::build(src))
                .get(&path)
                .map(|n| n.value);
            ConfigIssue {
                file: file.to_owned(),
                line: pos.map(|p| p.line),
                column: pos.map(|p| p.column),
                path,
                message,
            }
        };
        let mut out = HostIssues::default();
        let mut own = interface_addresses();
        // A floating IP may be a VIP on purpose: the active node holds it so
        // that the segment finds the VIP there (README, failover).
        for ip in self.ha.iter().flat_map(|h| &h.floating_ips) {
            own.remove(&ip.address.addr);
        }
        for name in self.interface_names() {
            for (vip_name, vip) in &self.vips {
                if own.get(&vip.address).is_some_and(|i| *i == name) {
                    out.errors.push(at(
                        format!("{}.address", join("vips", vip_name)),
                        format!(
                            "{} is {name}'s own address: lb would take the host's traffic to it for the VIP; give the VIP an address of its own",
                            vip.address
                        ),
                    ));
                }
            }
        }
        let mut unrouted = 0;
        for (farm, f) in &self.serverfarms {
            for (i, real) in f.reals.iter().enumerate() {
                if known.contains(&real.address) || routable(real.address) {
                    continue;
                }
                unrouted += 1;
                // A few name the problem; thousands would bury the log.
                if unrouted <= MAX_LISTED {
                    out.warnings.push(at(
                        format!("{}.reals[{i}].address", join("serverfarms", farm)),
                        format!(
                            "no route to {} from this host: flows sent to it fail until one exists",
                            real.address
                        ),
                    ));
                }
            }
        }
        if unrouted > MAX_LISTED {
            out.warnings.push(at(
                "serverfarms".into(),
                format!("and {} more reals no route reaches", unrouted - MAX_LISTED),
            ));
        }
        out
    }
}

/// Every address of the host's interfaces, with the interface's name.
fn interface_addresses() -> HashMap<IpAddr, String> {
    let mut out = HashMap::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string; ifa_addr points at a
        // sockaddr of the family it names.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(sa.sin6_addr.s6_addr)
                }
                _ => continue,
            }
        };
        out.insert(addr, name);
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// True if the kernel has a route to `addr`: a UDP socket's connect asks
/// the routing table and sends nothing.
fn routable(addr: IpAddr) -> bool {
    let local: SocketAddr = match addr {
        IpAddr::V4(_) => "0.0.0.0:0",
        IpAddr::V6(_) => "[::]:0",
    }
    .parse()
    .expect("a literal");
    UdpSocket::bind(local)
        .and_then(|s| s.connect(SocketAddr::new(addr, 9)))
        .is_ok()
}
