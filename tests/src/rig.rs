//! The standard end-to-end rig: the topology with three reals, each running
//! `lb-testsrv` on the standard ports, and `lb` with a given config.
use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use crate::{
    LbAgent, Spawned, TestHook, TestServer, Topology, http_get, require_root, topology::real_name,
};

pub const HTTP: u16 = 8080;
pub const UDP: u16 = 5353;
pub const ECHO: u16 = 7000;
pub const SINK: u16 = 9000;

pub struct Rig {
    pub lb: LbAgent,
    pub servers: Vec<Spawned>,
    pub topo: Topology,
    testsrv: PathBuf,
}

impl Rig {
    /// `testsrv`: the `lb-testsrv` binary (`env!("CARGO_BIN_EXE_lb-testsrv")`).
    pub fn new(config: &str, testsrv: &str) -> Rig {
        Self::sized(config, testsrv, 65536)
    }

    /// [`Rig::new`] with a flow table of `flow_table_size` entries.
    pub fn sized(config: &str, testsrv: &str, flow_table_size: u32) -> Rig {
        Self::with_hook(config, testsrv, flow_table_size, TestHook::Xdp)
    }

    /// [`Rig::sized`] with lb attached by `hook` (the config's interfaces
    /// rewritten by `TestHook::apply`).
    pub fn with_hook(config: &str, testsrv: &str, flow_table_size: u32, hook: TestHook) -> Rig {
        Self::build(
            config,
            testsrv,
            flow_table_size,
            Topology::for_hook(3, hook),
            hook,
        )
    }

    /// [`Rig::with_hook`] on the dual-stack topology: the servers listen
    /// on both families.
    pub fn dual_stack(config: &str, testsrv: &str, hook: TestHook) -> Rig {
        Self::build(config, testsrv, 65536, Topology::dual_stack(3, hook), hook)
    }

    fn build(
        config: &str,
        testsrv: &str,
        flow_table_size: u32,
        topo: Topology,
        hook: TestHook,
    ) -> Rig {
        require_root();
        let config = &hook.apply(config);
        topo.wait_ready();
        let testsrv = PathBuf::from(testsrv);
        let servers = (0..topo.reals.len())
            .map(|i| server(&topo, &testsrv, i))
            .collect();
        let lb = LbAgent::start_sized(&topo.lb, config, flow_table_size);
        Rig {
            lb,
            servers,
            topo,
            testsrv,
        }
    }

    /// Starts real `i`'s server again (after a kill).
    pub fn restart_server(&mut self, i: usize) {
        self.servers[i] = server(&self.topo, &self.testsrv, i);
    }

    /// `GET /` through `addr` from the client; the body names the real.
    pub fn get(&self, addr: SocketAddr) -> std::io::Result<String> {
        self.topo
            .client
            .run(|| http_get(addr, "/", Duration::from_secs(3)))
            .map(|(status, body)| {
                assert_eq!(status, 200);
                body.trim().to_string()
            })
    }
}

fn server(topo: &Topology, exe: &std::path::Path, i: usize) -> Spawned {
    // `[::]` takes both families (bindv6only is off by default).
    let a: IpAddr = if topo.real_addrs6.is_empty() {
        topo.real_addrs[i].into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    TestServer::new(exe, &real_name(i))
        .http(SocketAddr::new(a, HTTP))
        .udp(SocketAddr::new(a, UDP))
        .echo(SocketAddr::new(a, ECHO))
        .sink(SocketAddr::new(a, SINK))
        .spawn(&topo.reals[i])
}
