//! `lb teardown`: the one explicit way to take the datapath down. Stopping
//! or restarting the agent never does (its pins keep forwarding for the
//! next agent).
//!
//! With an agent answering on the API socket, the agent is asked to do it
//! and exit: only it can hand the active role of an HA pair to its peer
//! before forwarding ends, and it holds the links, so unpinning them from
//! outside would not detach anything. Without one, the pins are removed
//! here: a pinned link nobody else holds detaches as its pin goes. An HA
//! node's floating IPs go too, or the peer's liveness ping would still hear
//! this node and never take over.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{
    api::{self, Request},
    config::Ha,
    datapath,
    ha::floating,
};

/// How long the agent may take to hand over, detach and exit.
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Takes the datapath pinned in `pin_dir` down; returns what was done, for
/// the operator. `ha`: the node's HA config, when the config could be read
/// and has one (only used without an agent).
pub fn run(socket: &Path, pin_dir: &Path, ha: Option<&Ha>) -> Result<String> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return through_agent(socket, pin_dir);
    }
    if let Some(pid) = crate::pin_owner::held(pin_dir) {
        bail!(
            "an lb agent (pid {pid}) owns {} but does not answer on {}: point --socket at its API socket, or stop it first",
            pin_dir.display(),
            socket.display()
        );
    }
    let pinned = pin_dir.exists();
    let links = datapath::unpin(pin_dir)?;
    let mut done = if !pinned {
        format!(
            "nothing pinned in {}: no datapath to take down",
            pin_dir.display()
        )
    } else if links.is_empty() {
        format!(
            "no agent on {}; no link was pinned (nothing attached); removed the pins in {}",
            socket.display(),
            pin_dir.display()
        )
    } else {
        format!(
            "no agent on {}; unpinned {} (detached) and removed the pins in {}",
            socket.display(),
            links.join(", "),
            pin_dir.display()
        )
    };
    for ip in ha.map_or(&[][..], |h| &h.floating_ips[..]) {
        // Not there is fine: a standby node holds none.
        if floating::remove(ip)? {
            done += &format!("\nremoved floating IP {} from {}", ip.address, ip.interface);
        }
    }
    Ok(done)
}

fn through_agent(socket: &Path, pin_dir: &Path) -> Result<String> {
    let resp = api::call(socket, &Request::Teardown, Duration::from_secs(10))?;
    if !resp.ok {
        bail!(
            "the agent on {} refused to tear down: {}",
            socket.display(),
            resp.error.unwrap_or_default()
        );
    }
    // Done once the agent is gone and its links with it.
    let start = Instant::now();
    while start.elapsed() < AGENT_TIMEOUT {
        let agent_gone = std::os::unix::net::UnixStream::connect(socket).is_err();
        if agent_gone
            && datapath::pinned_links(pin_dir)?.is_empty()
            && !pin_dir.join("FLOWS").exists()
        {
            return Ok(format!(
                "the agent on {} tore the datapath down (detached; pins in {} removed) and exited",
                socket.display(),
                pin_dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the agent on {} accepted the teardown but {} still holds pins after {:?}; see its log",
        socket.display(),
        pin_dir.display(),
        AGENT_TIMEOUT
    )
}
