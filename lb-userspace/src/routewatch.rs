//! Keeps the datapath's cached next hops honest. Every flow direction keeps
//! the answer of its first `bpf_fib_lookup` (`lb_common::Hop`); this watcher
//! listens to the kernel's rtnetlink notifications (links, addresses,
//! neighbours, routes, rules, nexthop objects) and adds one to `HOP_GEN[0]`
//! after each burst of them, so every flow asks the FIB again at its next
//! packet. One bump per wake-up is enough: the datapath only needs to know
//! that something changed since a hop was cached.
//!
//! Without a running agent the datapath still bounds a cached hop's age
//! (`lb_common::HOP_MAX_AGE`, about a second).
//!
//! The same changes refresh the datapath's list of VLAN devices (vlans.rs).
//!
//! The socket is netlink-sys's. The notifications are not decoded: any
//! message is a change, and a change the decoder did not know (a newer
//! kernel's attribute) must still bump.
use std::io;

use anyhow::{Context, Result};
use aya::maps::{Array, MapData};
use log::{debug, warn};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use tokio::io::{Interest, unix::AsyncFd};

use crate::vlans::Vlans;

/// The rtnetlink multicast groups whose changes can move a next hop. IPv6
/// adds its own address, route and rule groups here.
const GROUPS: [u32; 6] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_NEIGH,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_IPV4_RULE,
    RTNLGRP_NEXTHOP,
];
/// `RTNLGRP_NEXTHOP` (linux/rtnetlink.h; not in the libc crate).
const RTNLGRP_NEXTHOP: u32 = 32;

/// Subscribes to the changes and bumps `HOP_GEN` once now (an agent that
/// adopts a running datapath missed whatever changed while none watched),
/// then at every burst of notifications, from a task on the agent's runtime.
pub fn spawn(mut hop_gen: Array<MapData, u32>, mut vlans: Option<Vlans>) -> Result<()> {
    let sock = subscribe().context("subscribing to rtnetlink route and neighbour changes")?;
    if let Some(v) = vlans.as_mut() {
        v.sync_or_warn();
    }
    bump(&mut hop_gen);
    // SAFETY: the AsyncFd owns the socket, so its fd lives exactly as long
    // as the registration.
    let fd = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }
        .context("watching the rtnetlink socket")?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return;
            };
            let mut changed = false;
            // Drain everything queued; WouldBlock ends the burst.
            while let Ok(r) = guard.try_io(|s| recv(s.get_ref(), &mut buf)) {
                match r {
                    Ok(0) => break,
                    Ok(_) => changed = true,
                    // The socket overflowed: changes were lost, so a bump
                    // is exactly what is needed.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed = true,
                    Err(e) => {
                        warn!("rtnetlink watch: {e}; cached next hops now expire by age only");
                        return;
                    }
                }
            }
            if changed {
                if let Some(v) = vlans.as_mut() {
                    v.sync_or_warn();
                }
                bump(&mut hop_gen);
            }
        }
    });
    Ok(())
}

fn bump(hop_gen: &mut Array<MapData, u32>) {
    let next = hop_gen.get(&0, 0).unwrap_or(0).wrapping_add(1);
    match hop_gen.set(0, next, 0) {
        Ok(()) => debug!("routes or neighbours changed: next-hop generation {next}"),
        Err(e) => warn!("writing HOP_GEN: {e}"),
    }
}

fn subscribe() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.set_non_blocking(true)?;
    sock.bind_auto()?;
    for group in GROUPS {
        sock.add_membership(group)?;
    }
    Ok(sock)
}

fn recv(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    sock.recv(&mut &mut buf[..], 0)
}
