//! Which datapath hook an end-to-end test runs lb with. XDP on veth needs
//! the endpoints' offloads changed (topology.rs says why); tc needs nothing,
//! so its topologies keep the kernel's default offloads, as a container
//! host has them.

/// The hook a test's topology is built for and its agents attach by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestHook {
    Xdp,
    Tc,
}

impl TestHook {
    /// Whether the topology changes offloads for XDP on veth.
    pub fn xdp_workarounds(self) -> bool {
        self == TestHook::Xdp
    }

    /// `config` for this hook: for tc, its `interfaces: [a, b]` line
    /// becomes `[{ name: a, hook: tc }, ...]` and an `xdp_mode:` line goes.
    pub fn apply(self, config: &str) -> String {
        if self == TestHook::Xdp {
            return config.to_string();
        }
        let mut out = String::new();
        for line in config.lines() {
            if line.starts_with("xdp_mode:") {
                continue;
            }
            if let Some(list) = line
                .strip_prefix("interfaces: [")
                .and_then(|l| l.strip_suffix(']'))
            {
                let tc: Vec<String> = list
                    .split(',')
                    .map(|n| format!("{{ name: {}, hook: tc }}", n.trim()))
                    .collect();
                out.push_str(&format!("interfaces: [{}]\n", tc.join(", ")));
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::TestHook;

    #[test]
    fn tc_rewrites_the_interfaces_line_only() {
        let cfg = "interfaces: [eth0, eth1]\nxdp_mode: native\nvips: {}\n";
        assert_eq!(TestHook::Xdp.apply(cfg), cfg);
        assert_eq!(
            TestHook::Tc.apply(cfg),
            "interfaces: [{ name: eth0, hook: tc }, { name: eth1, hook: tc }]\nvips: {}\n"
        );
    }
}
