//! The lb agent and CLI as a library, so tests drive the same code the daemon runs.
pub mod agent;
pub mod api;
mod bpf_sys;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod datapath;
pub mod endpoint;
pub mod flowtable;
#[doc(hidden)]
pub mod fuzzing;
pub mod ha;
pub mod health;
pub mod http;
pub mod live;
pub mod maglev;
pub mod metrics;
mod netlink;
mod pin_owner;
pub mod reset;
pub mod routewatch;
pub mod sched;
pub mod sdnotify;
pub mod teardown;
pub mod top;
pub mod trace;
pub mod vlans;
