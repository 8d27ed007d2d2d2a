//! Endpoints as operators type them (`lb flows --vip`, `lb real`): an
//! address, optionally with a port. An IPv6 address takes brackets when a
//! port follows (`[2001:db8::10]:80`), as URLs and `SocketAddr` write it,
//! so the port never reads as the address's last group; lb prints endpoints
//! the same way (`SocketAddr`'s `Display`). The map form of an address is
//! `lb_common::to_map_addr`.
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// `ADDR`, `ADDR:PORT`, `[V6]` or `[V6]:PORT`: the address, and the port
/// when one is given. `None` for anything else (a VIP name, a typo).
pub fn parse(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip(), Some(sa.port())));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(|a| (a.into(), None));
    }
    s.parse::<IpAddr>().ok().map(|ip| (ip, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_and_without_ports() {
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let v4: IpAddr = "198.51.100.10".parse().unwrap();
        assert_eq!(parse("198.51.100.10"), Some((v4, None)));
        assert_eq!(parse("198.51.100.10:80"), Some((v4, Some(80))));
        assert_eq!(parse("2001:db8::10"), Some((v6, None)));
        assert_eq!(parse("[2001:db8::10]"), Some((v6, None)));
        assert_eq!(parse("[2001:db8::10]:80"), Some((v6, Some(80))));
        // Unbracketed, the last group is the address's own, not a port.
        assert_eq!(
            parse("2001:db8::10:80"),
            Some(("2001:db8::10:80".parse().unwrap(), None))
        );
        for bad in [
            "www",
            "",
            "[198.51.100.10]",
            "198.51.100.10:x",
            "[2001:db8::10]:",
            "[::1]:65536",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
