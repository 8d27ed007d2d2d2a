//! Harness for lb's end-to-end tests: network namespaces, the standard
//! routed two-arm topology, the `lb-testsrv` real servers and the clients
//! that drive traffic through them.
//!
//! Safety model: every address a test talks to lives in a namespace the test
//! created ([`netns::Netns`]), the topology has no link to the root namespace,
//! and every wait is bounded in time. Namespaces and the processes in them are
//! removed on drop, also when a test panics.

pub mod browser;
pub mod client;
pub mod cluster;
pub mod cluster_topology;
pub mod data;
pub mod edges_net;
pub mod filled;
pub mod fixture_net;
pub mod frames;
pub mod ha_pair;
pub mod ha_topology;
pub mod hook;
pub mod lbagent;
pub mod limits;
pub mod liveview;
pub mod netns;
pub mod rig;
pub mod spawned;
pub mod testsrv;
pub mod topology;

pub use client::{
    BulkResult, DownloadResult, EchoConn, HttpConn, bulk_receive, bulk_send, http_get,
    http_get_from, udp_request, wait_until,
};
pub use data::{Fnv1a64, PatternGen, fnv1a64};
pub use ha_topology::HaTopology;
pub use hook::TestHook;
pub use lbagent::{LbAgent, lb_bin};
pub use netns::{Netns, veth};
pub use spawned::Spawned;
pub use testsrv::TestServer;
pub use topology::Topology;

/// Panics unless the process runs as root.
///
/// End-to-end tests need root for namespaces, veth and XDP. They fail rather
/// than skip: CI runs as root, so a skip there would hide a broken setup.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "\n\n*** lb end-to-end tests must run as root (euid is {euid}). ***\n\
         They create network namespaces, veth pairs and attach XDP programs.\n\
         Run them with sudo, or in CI as root. They fail instead of skipping \
         so that a misconfigured CI cannot silently pass.\n"
    );
}
