//! Stateful failover (`ha:`): the pure parts, with no sockets and no
//! clock of their own, so the agent can wire them up and the tests drive them
//! with explicit bytes and instants.
//!
//! - [`wire`]: the sync protocol's datagrams (heartbeats, flow events, acks,
//!   bulk copies), HMAC-SHA256 authenticated and replay-protected.
//! - [`election`]: who holds the active role, from heartbeats, the bulk-sync
//!   gate, a second liveness signal and operator commands.

pub mod election;
pub mod floating;
pub mod liveness;
pub mod mirror;
pub mod node;
pub mod socket;
pub mod stream;
pub mod wire;

use std::fmt;

/// A node's role in the pair. Carried in every heartbeat as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Just started: has not heard the peer yet and has not decided.
    Init,
    /// Holds no floating IP; mirrors the active node's flow table.
    Standby,
    /// Holds the floating IPs and forwards the traffic.
    Active,
}

impl Role {
    /// The wire byte. Fixed numbers: they are part of the protocol.
    pub fn to_byte(self) -> u8 {
        match self {
            Role::Init => 0,
            Role::Standby => 1,
            Role::Active => 2,
        }
    }

    pub fn from_byte(byte: u8) -> Option<Role> {
        match byte {
            0 => Some(Role::Init),
            1 => Some(Role::Standby),
            2 => Some(Role::Active),
            _ => None,
        }
    }

    /// The spelling `lb ha status` and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::Standby => "standby",
            Role::Active => "active",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
