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
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result};
use aya::maps::{Array, MapData};
use log::{debug, warn};
use tokio::io::{Interest, unix::AsyncFd};

use crate::vlans::Vlans;

/// rtnetlink multicast groups, as the legacy `nl_groups` bitmask (bit
/// `group - 1`).
const GROUPS: u32 = (1 << (libc::RTNLGRP_LINK - 1))
    | (1 << (libc::RTNLGRP_NEIGH - 1))
    | (1 << (libc::RTNLGRP_IPV4_IFADDR - 1))
    | (1 << (libc::RTNLGRP_IPV4_ROUTE - 1))
    | (1 << (libc::RTNLGRP_IPV4_RULE - 1))
    | (1 << (RTNLGRP_NEXTHOP - 1));
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

fn subscribe() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right after.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: all-zero is a valid sockaddr_nl; the fields are set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = GROUPS;
    // SAFETY: addr is a valid sockaddr_nl of the size passed.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

fn recv(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is writable for its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
