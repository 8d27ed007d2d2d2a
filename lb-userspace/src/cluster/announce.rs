//! Which VIP addresses a cluster node announces: those with a VIP whose
//! farm has at least `min_up` reals up, unless the node is draining.
//! One address carries several VIPs (ports, protocols): it is announced
//! while any of them can serve, because withdrawing it takes them all away.
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use lb_common::REAL_UP;

use crate::control::Programmed;

pub fn wanted(p: &Programmed, min_up: u32, draining: bool) -> BTreeSet<IpAddr> {
    if draining {
        return BTreeSet::new();
    }
    let mut up: HashMap<&str, u32> = HashMap::new();
    for (k, (_, real)) in &p.reals {
        if real.state == REAL_UP {
            *up.entry(k.farm.as_str()).or_default() += 1;
        }
    }
    p.vips
        .values()
        .filter(|v| up.get(v.farm.as_str()).copied().unwrap_or(0) >= min_up)
        .map(|v| v.addr.ip())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::control::{Control, MapWriter, tests::MemMaps};

    const CFG: &str = r#"
interfaces: [eth0]
serverfarms:
  web:
    algorithm: maglev
    reals:
      - { address: 203.0.113.11, port: 8080 }
      - { address: 203.0.113.12, port: 8080 }
  api:
    algorithm: maglev
    reals:
      - { address: 203.0.113.13, port: 9000, state: disabled }
vips:
  www: { address: 198.51.100.10, port: 80, serverfarm: web }
  www-api: { address: 198.51.100.10, port: 9000, serverfarm: api }
  api: { address: 198.51.100.11, port: 9000, serverfarm: api }
"#;

    fn programmed(cfg: &str) -> Programmed {
        let cfg = Config::parse(cfg, "t.yaml").expect("config");
        let mut c = Control::new();
        let mut m = MemMaps::default();
        let w: &mut dyn MapWriter = &mut m;
        c.apply(&cfg, w).expect("apply");
        c.programmed().clone()
    }

    #[test]
    fn an_address_is_announced_while_one_of_its_vips_can_serve() {
        let p = programmed(CFG);
        let a: IpAddr = "198.51.100.10".parse().unwrap();
        assert_eq!(wanted(&p, 1, false), BTreeSet::from([a]));
        assert_eq!(wanted(&p, 2, false), BTreeSet::from([a]));
        assert!(wanted(&p, 3, false).is_empty());
        assert!(
            wanted(&p, 1, true).is_empty(),
            "a draining node announces nothing"
        );
    }
}
