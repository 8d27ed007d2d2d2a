//! The XDP program in the kernel: load with pinned maps, attach, program,
//! detach. The map writer behind `control::MapWriter` lives here.
use std::{
    ffi::CString,
    fs,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, ProgramArray, RingBuf, xdp::DevMapHash},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions},
        xdp::{XdpLink, XdpLinkId},
    },
};
use lb_common::{Counters, Farm, Flow, FlowKey, Real, ReplyNat, SCHED_SLOTS, VipInfo, VipKey};
use log::{info, warn};

use crate::{
    clock::DatapathClock,
    config::{Hook, Interface, XdpMode},
    control::MapWriter,
};

pub mod attach_warnings;
mod resize;
mod swap;

/// The compiled XDP object, built by build.rs from lb-ebpf.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));
/// The same datapath with `lb trace`'s records compiled in (lb-ebpf's
/// trace.rs), swapped in only while a trace runs.
pub static TRACE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-trace"));

/// The benchmark's object (the datapath plus lb-ebpf's floor programs),
/// where this build left it: read by `lb-bench`, never by the agent.
pub const BENCH_OBJECT_PATH: &str = concat!(env!("OUT_DIR"), "/lb-bench");

/// Which build of the datapath to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    Production,
    /// With trace records (`lb trace`).
    Trace,
}

impl Build {
    fn object(self) -> &'static [u8] {
        match self {
            Build::Production => OBJECT,
            Build::Trace => TRACE_OBJECT,
        }
    }
}

/// The program's name in the object, for the XDP hook.
pub const PROGRAM: &str = "lb_xdp";
/// The same datapath for the tc (clsact ingress) hook.
pub const TC_PROGRAM: &str = "lb_tc";
/// Each hook's IPv6 program, which the one above hands IPv6 to by tail
/// call through the array named beside it (lb-ebpf's maps.rs says why).
const V6_PROGRAMS: [(&str, &str); 2] = [("lb_xdp6", "JUMP_XDP"), ("lb_tc6", "JUMP_TC")];

/// Every map the program pins, by name (see lb-ebpf/src/maps.rs).
pub const MAP_NAMES: [&str; 28] = [
    "VIPS",
    "VIP_ADDRS",
    "REPLY_NAT",
    "REALS",
    "FARMS",
    "SCHED",
    "RR_CURSOR",
    "FLOWS",
    "EMBRYOS",
    "FRAGS",
    "STATS",
    "VIP_STATS",
    "REAL_STATS",
    "TX_PORTS",
    "PEER_PORTS",
    "ACTIVE",
    "EVENTS",
    "EXPIRED",
    "MAGLEV",
    "STICKY",
    "SYNC",
    "SYNC_ON",
    "STANDBY",
    "HOP_GEN",
    "CLOCK",
    "VLANS",
    "JUMP_XDP",
    "JUMP_TC",
];

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Loads the IPv6 programs and puts each in its hook's tail-call array
/// (pinned: adopted arrays get this agent's programs in place of the last
/// one's, entry by entry, atomically).
fn load_v6(ebpf: &mut Ebpf) -> Result<()> {
    for (name, _) in V6_PROGRAMS {
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the object"))?;
        match prog {
            aya::programs::Program::Xdp(p) => p.load(),
            aya::programs::Program::SchedClassifier(p) => p.load(),
            _ => bail!("program {name} is of an unexpected type"),
        }
        .with_context(|| format!("the kernel verifier refused {name}"))?;
    }
    set_v6(ebpf)
}

/// Puts the (loaded) IPv6 programs in their tail-call arrays.
fn set_v6(ebpf: &mut Ebpf) -> Result<()> {
    for (name, array) in V6_PROGRAMS {
        let fd = match ebpf.program(name) {
            Some(aya::programs::Program::Xdp(p)) => p.fd()?.try_clone()?,
            Some(aya::programs::Program::SchedClassifier(p)) => p.fd()?.try_clone()?,
            _ => bail!("program {name} missing from the object"),
        };
        let mut jump: ProgramArray<_> = ebpf
            .map_mut(array)
            .ok_or_else(|| anyhow!("map {array} missing from the object"))?
            .try_into()?;
        jump.set(0, &fd, 0)
            .with_context(|| format!("setting {array}[0] to {name}"))?;
    }
    Ok(())
}

/// A program attached to an interface by this agent.
enum Attached {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

/// Where an interface's link is pinned for `hook` (`Hook::Xdp` or
/// `Hook::Tc`): beside the maps, so the datapath outlives the agent.
fn link_pin(pin_dir: &Path, hook: Hook, iface: &str) -> PathBuf {
    match hook {
        Hook::Tc => pin_dir.join(format!("tclink_{iface}")),
        _ => pin_dir.join(format!("link_{iface}")),
    }
}

/// The program loaded, its maps taken out for the agent.
pub struct Datapath {
    ebpf: Ebpf,
    links: Vec<(String, Attached)>,
    adopted: bool,
    /// Adopted maps re-created at a new size, until `attach` has replaced
    /// the program that still uses the old ones.
    resized: Option<resize::Resized>,
    pin_dir: PathBuf,
    pub maps: KernelMaps,
    tx_ports: DevMapHash<MapData>,
    peer_ports: HashMap<MapData, u32, u32>,
    events: Option<RingBuf<MapData>>,
    sync: Option<RingBuf<MapData>>,
    hop_gen: Option<Array<MapData, u32>>,
    vlans: Option<HashMap<MapData, u32, lb_common::VlanPort>>,
    clock: DatapathClock,
}

/// Handles to the maps the control plane writes and the sweep reads.
pub struct KernelMaps {
    vips: HashMap<MapData, VipKey, VipInfo>,
    vip_addrs: HashMap<MapData, [u8; 16], u32>,
    reply_nat: HashMap<MapData, VipKey, ReplyNat>,
    reals: Array<MapData, Real>,
    farms: Array<MapData, Farm>,
    sched: Array<MapData, u32>,
    pub flows: HashMap<MapData, FlowKey, Flow>,
    /// Half-open flows (the datapath's `EMBRYOS`): same keys and values as
    /// `flows`, moved there by the datapath once assured.
    pub embryos: HashMap<MapData, FlowKey, Flow>,
    pub stats: PerCpuArray<MapData, u64>,
    pub vip_stats: PerCpuArray<MapData, Counters>,
    pub real_stats: PerCpuArray<MapData, Counters>,
    pub active: Array<MapData, u64>,
    pub expired: Array<MapData, u64>,
    maglev: Array<MapData, u32>,
    /// `[0]` non-zero: the datapath writes flow changes to `SYNC` (HA).
    pub sync_on: Array<MapData, u32>,
    /// `[0]` non-zero: this node is not HA-active; the datapath passes all.
    pub standby: Array<MapData, u32>,
}

/// Entries of the half-open table for a flow table of `flow_table_size`
/// entries: a quarter of it, at least `EMBRYO_TABLE_MIN`. Half-open flows
/// only need to live for a handshake's round trip, so a flood must send
/// this many SYNs within one round trip to push out a legitimate one.
pub fn embryo_table_size(flow_table_size: u32) -> u32 {
    (flow_table_size / lb_common::EMBRYO_TABLE_DIVISOR).max(lb_common::EMBRYO_TABLE_MIN)
}

pub(crate) fn take<T: TryFrom<Map>>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

/// The flow tables' sizes for `bpf.flow_table_size`, as `load_sized`
/// takes them.
pub fn table_sizes(flow_table_size: u32) -> [(&'static str, u32); 2] {
    [
        ("FLOWS", flow_table_size),
        ("EMBRYOS", embryo_table_size(flow_table_size)),
    ]
}

impl Datapath {
    /// Loads the program with its maps pinned under `pin_dir` and the flow
    /// table sized to `flow_table_size` entries, from a clean slate: pins a
    /// previous agent left there are removed first.
    pub fn load(pin_dir: &Path, flow_table_size: u32) -> Result<Self> {
        Self::load_with(pin_dir, flow_table_size, true)
    }

    /// Like `load`, but with `reset: false` a previous agent's pinned maps
    /// are adopted as they are (flows, reals, counters: the datapath never
    /// stopped); `adopted()` then says whether there was anything to adopt.
    pub fn load_with(pin_dir: &Path, flow_table_size: u32, reset: bool) -> Result<Self> {
        Self::load_sized(pin_dir, reset, &table_sizes(flow_table_size))
    }

    /// Like `load_with`, with the sizes of the maps named in `sizes` set
    /// (the flow tables'; an older lb's smaller arrays in the upgrade test).
    /// Adopted maps of another size are copied into new ones (see `resize`).
    pub fn load_sized(pin_dir: &Path, reset: bool, sizes: &[(&str, u32)]) -> Result<Self> {
        Self::load_build(Build::Production, pin_dir, reset, sizes)
    }

    /// `load_sized` for either build. The trace build, loaded with
    /// `reset: false` beside a running datapath, shares all its pinned maps
    /// (flows, counters, config) and runs nowhere until `take_over`.
    pub fn load_build(
        build: Build,
        pin_dir: &Path,
        reset: bool,
        sizes: &[(&str, u32)],
    ) -> Result<Self> {
        let object = build.object();
        if object.is_empty() {
            bail!(
                "this lb was built with AYA_BUILD_SKIP=1 and holds no XDP program; rebuild without it"
            );
        }
        check_bpffs(pin_dir)?;
        if reset {
            // The directory stays: the agent holds its lock (pin_owner).
            unpin_in(pin_dir, false)?;
        }
        let adopted = pin_dir.join("FLOWS").exists();
        if adopted {
            info!(
                "adopting the pinned maps in {} (start clean with `lb run --reset`)",
                pin_dir.display()
            );
        }
        fs::create_dir_all(pin_dir).with_context(|| format!("creating {}", pin_dir.display()))?;
        let mut resized = resize::set_aside(pin_dir, object, sizes)?;
        match Self::load_resized(object, pin_dir, sizes, &mut resized) {
            Ok(mut dp) => {
                dp.adopted = adopted;
                dp.resized = Some(resized);
                Ok(dp)
            }
            Err(e) => {
                resized.restore(pin_dir);
                Err(e)
            }
        }
    }

    /// The load proper, with the maps `resized` set aside filled before any
    /// of the new programs can run.
    fn load_resized(
        object: &[u8],
        pin_dir: &Path,
        sizes: &[(&str, u32)],
        resized: &mut resize::Resized,
    ) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(pin_dir);
        for &(name, n) in sizes {
            loader.map_max_entries(name, n);
        }
        let mut ebpf = loader
            .load(object)
            .context("loading the XDP object (is this kernel built with BPF and BTF?)")?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| anyhow!("program {PROGRAM} missing from the object"))?
            .try_into()?;
        prog.load()
            .context("the kernel verifier refused the XDP program")?;
        let tc: &mut SchedClassifier = ebpf
            .program_mut(TC_PROGRAM)
            .ok_or_else(|| anyhow!("program {TC_PROGRAM} missing from the object"))?
            .try_into()?;
        tc.load()
            .context("the kernel verifier refused the tc program")?;
        // Before load_v6: it puts the new IPv6 programs into the adopted
        // tail-call arrays, where the old program calls them at once.
        resized.copy(pin_dir)?;
        load_v6(&mut ebpf)?;
        let maps = KernelMaps {
            vips: take(&mut ebpf, "VIPS")?,
            vip_addrs: take(&mut ebpf, "VIP_ADDRS")?,
            reply_nat: take(&mut ebpf, "REPLY_NAT")?,
            reals: take(&mut ebpf, "REALS")?,
            farms: take(&mut ebpf, "FARMS")?,
            sched: take(&mut ebpf, "SCHED")?,
            flows: take(&mut ebpf, "FLOWS")?,
            embryos: take(&mut ebpf, "EMBRYOS")?,
            stats: take(&mut ebpf, "STATS")?,
            vip_stats: take(&mut ebpf, "VIP_STATS")?,
            real_stats: take(&mut ebpf, "REAL_STATS")?,
            active: take(&mut ebpf, "ACTIVE")?,
            expired: take(&mut ebpf, "EXPIRED")?,
            maglev: take(&mut ebpf, "MAGLEV")?,
            sync_on: take(&mut ebpf, "SYNC_ON")?,
            standby: take(&mut ebpf, "STANDBY")?,
        };
        let tx_ports = take(&mut ebpf, "TX_PORTS")?;
        let peer_ports = take(&mut ebpf, "PEER_PORTS")?;
        let events = Some(take(&mut ebpf, "EVENTS")?);
        let sync = Some(take(&mut ebpf, "SYNC")?);
        let hop_gen = Some(take(&mut ebpf, "HOP_GEN")?);
        let vlans = Some(take(&mut ebpf, "VLANS")?);
        let clock = DatapathClock::start(&mut ebpf)?;
        Ok(Self {
            ebpf,
            links: Vec::new(),
            adopted: false,
            resized: None,
            pin_dir: pin_dir.to_path_buf(),
            maps,
            tx_ports,
            peer_ports,
            events,
            sync,
            hop_gen,
            vlans,
            clock,
        })
    }

    /// What the datapath's clock is set to (`tick_ns` 0: the helper).
    pub fn clock(&self) -> lb_common::Clock {
        self.clock.current()
    }

    /// Checks the datapath's clock (the agent does at every sweep).
    pub fn keep_clock(&mut self) {
        if let Err(e) = self.clock.keep(&self.ebpf) {
            warn!("datapath clock: {e:#}");
        }
    }

    /// The next-hop generation, for the route watcher (once).
    pub fn take_hop_gen(&mut self) -> Option<Array<MapData, u32>> {
        self.hop_gen.take()
    }

    /// The VLAN device map, for the route watcher (once).
    pub fn take_vlans(&mut self) -> Option<HashMap<MapData, u32, lb_common::VlanPort>> {
        self.vlans.take()
    }

    /// The HA flow-change ring, for the sync stream's reader (once).
    pub fn take_sync(&mut self) -> Option<RingBuf<MapData>> {
        self.sync.take()
    }

    /// The passive-health event ring, for the agent's reader (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// The loaded XDP program, for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    /// The loaded tc program, for BPF_PROG_TEST_RUN.
    pub fn tc_program(&mut self) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(TC_PROGRAM)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    /// Lets the program redirect to `ifindex` (done for each attached
    /// interface; tests call it directly).
    pub fn allow_redirect(&mut self, ifindex: u32) -> Result<()> {
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .context("TX_PORTS")?;
        Ok(())
    }

    /// The hook each interface's program runs at (`xdp` or `tc`), as
    /// attached.
    pub fn hooks(&self) -> Vec<(String, &'static str)> {
        self.links
            .iter()
            .map(|(iface, a)| {
                let hook = match a {
                    Attached::Xdp(_) => "xdp",
                    Attached::Tc(_) => "tc",
                };
                (iface.clone(), hook)
            })
            .collect()
    }

    /// True if the maps came from a previous agent's pins.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Attaches to every interface by its hook (`config::Hook`). Each
    /// attachment is a bpf_link pinned beside the maps (`link_<iface>` for
    /// XDP, `tclink_<iface>` for tc), so the datapath keeps forwarding if the
    /// agent dies; an agent that finds a pinned link swaps its program in
    /// atomically instead (no packet sees no program). A link of the other
    /// hook, left by an agent configured otherwise, is removed once the new
    /// one is in place (XDP runs before tc, so either order leaves no gap).
    pub fn attach(&mut self, interfaces: &[Interface], mode: XdpMode) -> Result<()> {
        let mut xdp = Vec::new();
        for iface in interfaces {
            let name = &iface.name;
            let ifindex = ifindex(name)?;
            self.allow_redirect(ifindex)?;
            let hook = self.choose_hook(iface, mode);
            let attached = match hook {
                Hook::Tc => self.attach_tc(name)?,
                _ => self.attach_xdp(name, mode)?,
            };
            let other = if hook == Hook::Tc {
                Hook::Xdp
            } else {
                Hook::Tc
            };
            let stale = link_pin(&self.pin_dir, other, name);
            if stale.exists() {
                fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
                info!("{name}: removed the previous agent's {other:?} link");
            }
            if hook != Hook::Tc {
                xdp.push(name.clone());
            }
            self.links.push((name.clone(), attached));
        }
        self.set_peer_ports(interfaces)?;
        // Once all are attached, so lb's own programs count for the peers.
        attach_warnings::check_interfaces(&xdp);
        // The old program runs nowhere now: what it counted since the copy
        // can be added to the resized maps.
        if let Some(r) = self.resized.take() {
            r.finish(&self.pin_dir)?;
        }
        Ok(())
    }

    /// Lists in `PEER_PORTS` the interfaces tc may send to by
    /// `bpf_redirect_peer`: veths whose peer is in another namespace. Hops
    /// cached before carry the old answer until the agent's route watcher
    /// bumps `HOP_GEN`, which it does when it starts.
    fn set_peer_ports(&mut self, interfaces: &[Interface]) -> Result<()> {
        let listed: Vec<u32> = self.peer_ports.keys().filter_map(Result::ok).collect();
        for ifindex in listed {
            self.peer_ports.remove(&ifindex).context("PEER_PORTS")?;
        }
        for iface in interfaces {
            match attach_warnings::veth_peer_elsewhere(&iface.name) {
                Ok(true) => self.set_peer_port(ifindex(&iface.name)?, true)?,
                Ok(false) => {}
                Err(e) => warn!(
                    "{}: cannot tell whether it is a veth with its peer elsewhere ({e}); tc redirects to it without bpf_redirect_peer",
                    iface.name
                ),
            }
        }
        Ok(())
    }

    /// Lists `ifindex` in `PEER_PORTS` (`on`) or takes it out (`attach`
    /// keeps the list; the fixtures set it directly).
    pub fn set_peer_port(&mut self, ifindex: u32, on: bool) -> Result<()> {
        if on {
            self.peer_ports.insert(ifindex, 1, 0)
        } else if self.peer_ports.get(&ifindex, 0).is_ok() {
            self.peer_ports.remove(&ifindex)
        } else {
            Ok(())
        }
        .context("PEER_PORTS")
    }

    /// The hook `iface` gets: as configured; for `auto`, XDP when `xdp_mode`
    /// asks for a mode, else tc on a veth, native XDP if the driver takes it
    /// and tc if not.
    fn choose_hook(&mut self, iface: &Interface, mode: XdpMode) -> Hook {
        if iface.hook != Hook::Auto {
            return iface.hook;
        }
        let name = &iface.name;
        if link_pin(&self.pin_dir, Hook::Xdp, name).exists() {
            // An adopted XDP link stays XDP: its mode was judged at its attach.
            return Hook::Xdp;
        }
        if mode != XdpMode::Auto {
            return Hook::Xdp;
        }
        match attach_warnings::is_veth(name) {
            Ok(true) => return Hook::Tc,
            Ok(false) => {}
            Err(e) => warn!("{name}: cannot tell whether it is a veth ({e}); judging by XDP"),
        }
        // Probe native XDP with the real program, then detach: attach_xdp
        // attaches it again, pinned.
        let prog = self.program();
        match prog.attach(name, AyaXdpMode::Driver) {
            Ok(link) => {
                let _ = prog.detach(link);
                Hook::Xdp
            }
            Err(e) => {
                info!("{name}: no native XDP ({e}); using the tc hook");
                Hook::Tc
            }
        }
    }

    /// Attaches the XDP program to `iface` (see `attach`). `auto` mode
    /// tries native (driver) mode and falls back to generic with a warning.
    fn attach_xdp(&mut self, iface: &str, mode: XdpMode) -> Result<Attached> {
        let ifindex = ifindex(iface)?;
        let pin = link_pin(&self.pin_dir, Hook::Xdp, iface);
        if pin.exists() {
            let link: FdLink = PinnedLink::from_pin(&pin)
                .with_context(|| format!("opening {}", pin.display()))?
                .into();
            let link = XdpLink::try_from(link).context("the pinned link is not an XDP link")?;
            let id = self
                .program()
                .attach_to_link(link)
                .with_context(|| format!("replacing the program on {iface}"))?;
            info!("took over {iface} (ifindex {ifindex}) from the previous agent's pinned link");
            return Ok(Attached::Xdp(id));
        }
        let prog = self.program();
        let (link, used) = match mode {
            XdpMode::Native => (
                prog.attach(iface, AyaXdpMode::Driver).with_context(|| {
                    format!("attach to {iface} failed in native mode; try `xdp_mode: generic`")
                })?,
                "native",
            ),
            XdpMode::Generic => (
                prog.attach(iface, AyaXdpMode::Skb)
                    .with_context(|| format!("attach to {iface} failed in generic mode"))?,
                "generic",
            ),
            XdpMode::Auto => match prog.attach(iface, AyaXdpMode::Driver) {
                Ok(link) => (link, "native"),
                Err(e) => {
                    warn!("{iface}: native XDP failed ({e}); falling back to generic (slower)");
                    (
                        prog.attach(iface, AyaXdpMode::Skb).with_context(|| {
                            format!("attach to {iface} failed in native and generic mode")
                        })?,
                        "generic",
                    )
                }
            },
        };
        // Pin it: take the link out, pin, and hand it back to the program.
        let id = match prog.take_link(link).map(FdLink::try_from) {
            Ok(Ok(fd_link)) => {
                let pinned = fd_link
                    .pin(&pin)
                    .with_context(|| format!("pinning {}", pin.display()))?;
                let link = XdpLink::try_from(FdLink::from(pinned))?;
                prog.attach_to_link(link)?
            }
            _ => bail!(
                "{iface}: the kernel attached XDP without a bpf_link; lb needs Linux 5.9 or newer"
            ),
        };
        info!(
            "attached to {iface} (ifindex {ifindex}) by XDP in {used} mode, link pinned at {}",
            pin.display()
        );
        Ok(Attached::Xdp(id))
    }

    /// Attaches the tc program to `iface`'s ingress as a tcx link (Linux
    /// 6.6; no qdisc needed), pinned like an XDP link.
    fn attach_tc(&mut self, iface: &str) -> Result<Attached> {
        let ifindex = ifindex(iface)?;
        let pin = link_pin(&self.pin_dir, Hook::Tc, iface);
        let prog = self.tc_program();
        if pin.exists() {
            let link: FdLink = PinnedLink::from_pin(&pin)
                .with_context(|| format!("opening {}", pin.display()))?
                .into();
            let link =
                SchedClassifierLink::try_from(link).context("the pinned link is not a tc link")?;
            let id = prog
                .attach_to_link(link)
                .with_context(|| format!("replacing the tc program on {iface}"))?;
            info!("took over {iface} (ifindex {ifindex}) from the previous agent's pinned tc link");
            return Ok(Attached::Tc(id));
        }
        let link = prog
            .attach_with_options(
                iface,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .with_context(|| {
                format!("attaching tc (tcx ingress) to {iface}; lb needs Linux 6.6")
            })?;
        let fd_link: FdLink = prog
            .take_link(link)?
            .try_into()
            .with_context(|| format!("{iface}: the tc attachment is not a bpf_link"))?;
        let pinned = fd_link
            .pin(&pin)
            .with_context(|| format!("pinning {}", pin.display()))?;
        let id = prog.attach_to_link(SchedClassifierLink::try_from(FdLink::from(pinned))?)?;
        info!(
            "attached to {iface} (ifindex {ifindex}) by tc, link pinned at {}",
            pin.display()
        );
        Ok(Attached::Tc(id))
    }

    /// Runs this datapath's programs wherever lb is attached: its IPv6
    /// programs in the tail-call arrays, then its XDP or tc program in every
    /// pinned link, each swapped atomically (`BPF_LINK_UPDATE`), as a
    /// hitless restart does. How `lb trace` swaps the trace build in, and the
    /// production one back.
    pub fn take_over(&mut self) -> Result<()> {
        set_v6(&mut self.ebpf)?;
        for name in pinned_links(&self.pin_dir)? {
            let prog = if name.starts_with("tclink_") {
                self.tc_program().fd()?.as_fd().try_clone_to_owned()?
            } else {
                self.program().fd()?.as_fd().try_clone_to_owned()?
            };
            swap::link_update(&self.pin_dir.join(&name), prog.as_fd())
                .with_context(|| format!("swapping the program of {name}"))?;
        }
        Ok(())
    }

    /// The id of the XDP program, then the tc program, as the kernel knows
    /// them (to tell which build a link runs).
    pub fn program_ids(&mut self) -> Result<(u32, u32)> {
        Ok((self.program().info()?.id(), self.tc_program().info()?.id()))
    }

    /// The trace build's filter (`lb trace`); an error on the production
    /// build, which has none.
    pub fn set_trace_filter(&mut self, f: &lb_common::TraceFilter) -> Result<()> {
        let mut m: Array<_, lb_common::TraceFilter> = self
            .ebpf
            .map_mut("TRACE_FILTER")
            .ok_or_else(|| anyhow!("this datapath is not the trace build"))?
            .try_into()?;
        m.set(0, f, 0).context("writing TRACE_FILTER")
    }

    /// The trace build's records, handed to `logger` as aya-log records.
    pub fn trace_logger<T: log::Log>(&mut self, logger: T) -> Result<aya_log::EbpfLogger<T>> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, logger)
            .map_err(|e| anyhow!("the trace build's log ring: {e}"))
    }

    /// Detaches from every interface and removes the pins: a clean stop.
    pub fn shutdown(mut self) -> Result<()> {
        // A pinned link stays attached while its pin exists: unpin first.
        for (iface, _) in &self.links {
            for hook in [Hook::Xdp, Hook::Tc] {
                let _ = fs::remove_file(link_pin(&self.pin_dir, hook, iface));
            }
        }
        for (iface, link) in std::mem::take(&mut self.links) {
            let r = match link {
                Attached::Xdp(id) => self.program().detach(id),
                Attached::Tc(id) => self.tc_program().detach(id),
            };
            if let Err(e) = r {
                warn!("detaching from {iface}: {e}");
            }
        }
        let pin_dir = self.pin_dir.clone();
        drop(self);
        remove_pins(&pin_dir)
    }
}

impl KernelMaps {
    /// What a previous agent programmed, read back for adoption.
    pub fn programmed(&self) -> Result<crate::control::Adopted> {
        let mut a = crate::control::Adopted::default();
        for kv in self.vips.iter() {
            a.vips.push(kv.context("VIPS")?);
        }
        for kv in self.reply_nat.iter() {
            a.reply_nat.push(kv.context("REPLY_NAT")?);
        }
        for id in 0..self.reals.len() {
            let r = self.reals.get(&id, 0).context("REALS")?;
            if r.state != lb_common::REAL_FREE {
                a.reals.push((id, r));
            }
        }
        for id in 0..self.farms.len() {
            let f = self.farms.get(&id, 0).context("FARMS")?;
            if f != Farm::default() {
                let (off, len) = ((f.ring >> 32) as u32, f.ring as u32);
                let ring = (off..off + len)
                    .map(|i| self.maglev.get(&i, 0))
                    .collect::<Result<Vec<_>, _>>()?;
                a.farms.push((id, f, ring));
            }
        }
        Ok(a)
    }

    /// Records counted flows the agent removed (`n` per real id): the
    /// datapath's view of active flows is `ACTIVE - EXPIRED`.
    pub fn add_expired(&mut self, removed: &std::collections::HashMap<u32, u64>) -> Result<()> {
        for (&id, &n) in removed {
            let now = self.expired.get(&id, 0).context("EXPIRED")?;
            self.expired
                .set(id, now.wrapping_add(n), 0)
                .context("EXPIRED")?;
        }
        Ok(())
    }

    /// Flows the agent itself wrote (HA sync on the standby) count as
    /// active on `id`. `ACTIVE` belongs to the datapath's atomic adds, so the
    /// agent moves `EXPIRED` down instead: the difference is what counts.
    pub fn count_in(&mut self, id: u32, n: u64) -> Result<()> {
        let now = self.expired.get(&id, 0).context("EXPIRED")?;
        self.expired
            .set(id, now.wrapping_sub(n), 0)
            .context("EXPIRED")
    }

    /// Counted flows the agent removed, `n` of them on `id`.
    pub fn count_out(&mut self, id: u32, n: u64) -> Result<()> {
        let now = self.expired.get(&id, 0).context("EXPIRED")?;
        self.expired
            .set(id, now.wrapping_add(n), 0)
            .context("EXPIRED")
    }

    /// Active flows of a real, as least-conn and `max_conns` see them.
    pub fn active_flows(&self, id: u32) -> u64 {
        let added = self.active.get(&id, 0).unwrap_or(0);
        added.wrapping_sub(self.expired.get(&id, 0).unwrap_or(0))
    }

    /// Zeroes a released real id's counts before the id is reused.
    pub fn reset_active(&mut self, id: u32) -> Result<()> {
        self.active.set(id, 0, 0).context("ACTIVE")?;
        self.expired.set(id, 0, 0).context("EXPIRED")
    }

    /// Per-real counters summed over CPUs.
    pub fn real_counters(&self, id: u32) -> Result<Counters> {
        Ok(sum_counters(self.real_stats.get(&id, 0)?.iter()))
    }
}

/// Sums per-CPU counters.
pub fn sum_counters<'a>(per_cpu: impl Iterator<Item = &'a Counters>) -> Counters {
    per_cpu.fold(Counters::default(), |a, c| Counters {
        packets_in: a.packets_in + c.packets_in,
        bytes_in: a.bytes_in + c.bytes_in,
        packets_out: a.packets_out + c.packets_out,
        bytes_out: a.bytes_out + c.bytes_out,
        new_flows: a.new_flows + c.new_flows,
        conn_ok: a.conn_ok + c.conn_ok,
        conn_fail: a.conn_fail + c.conn_fail,
        _pad: 0,
    })
}

impl MapWriter for KernelMaps {
    fn set_real(&mut self, id: u32, real: &Real) -> Result<()> {
        self.reals.set(id, real, 0).context("REALS")?;
        // A freed id starts its next life with no flows counted.
        if real.state == lb_common::REAL_FREE {
            self.reset_active(id)?;
        }
        Ok(())
    }
    fn set_farm(&mut self, id: u32, farm: &Farm) -> Result<()> {
        self.farms.set(id, farm, 0).context("FARMS")
    }
    fn set_ring(&mut self, offset: u32, slots: &[u32]) -> Result<()> {
        for (i, id) in slots.iter().enumerate() {
            self.maglev
                .set(offset + i as u32, id, 0)
                .context("MAGLEV")?;
        }
        Ok(())
    }
    fn set_sched(&mut self, farm_id: u32, slots: &[u32]) -> Result<()> {
        for (i, id) in slots.iter().enumerate() {
            self.sched
                .set(farm_id * SCHED_SLOTS + i as u32, id, 0)
                .context("SCHED")?;
        }
        Ok(())
    }
    fn put_vip(&mut self, key: &VipKey, info: &VipInfo) -> Result<()> {
        self.vips.insert(key, info, 0).context("VIPS")
    }
    fn del_vip(&mut self, key: &VipKey) -> Result<()> {
        self.vips.remove(key).context("VIPS")
    }
    fn put_vip_addr(&mut self, addr: &[u8; 16], vips: u32) -> Result<()> {
        self.vip_addrs.insert(addr, vips, 0).context("VIP_ADDRS")
    }
    fn del_vip_addr(&mut self, addr: &[u8; 16]) -> Result<()> {
        self.vip_addrs.remove(addr).context("VIP_ADDRS")
    }
    fn put_reply_nat(&mut self, real: &VipKey, nat: &ReplyNat) -> Result<()> {
        self.reply_nat.insert(real, nat, 0).context("REPLY_NAT")
    }
    fn del_reply_nat(&mut self, real: &VipKey) -> Result<()> {
        self.reply_nat.remove(real).context("REPLY_NAT")
    }
}

/// Opens the pinned flow table read-write (the CLI works while the agent is
/// down, and `flows clear` will write it).
pub fn open_flows(pin_dir: &Path) -> Result<HashMap<MapData, FlowKey, Flow>> {
    let path = pin_dir.join("FLOWS");
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is lb running with this bpf.pin_dir?)",
            path.display()
        )
    })?;
    Ok(HashMap::try_from(Map::LruHashMap(data))?)
}

/// Opens the pinned half-open table (`EMBRYOS`) read-write, as
/// `open_flows`. `None` when the datapath has none: one pinned by an lb
/// from before the half-open table (a running agent always has one).
pub fn open_embryos(pin_dir: &Path) -> Result<Option<HashMap<MapData, FlowKey, Flow>>> {
    let path = pin_dir.join("EMBRYOS");
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Some(HashMap::try_from(Map::LruHashMap(data))?))
}

pub fn ifindex(iface: &str) -> Result<u32> {
    let name = CString::new(iface)?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        bail!("interface {iface} not found");
    }
    Ok(idx)
}

/// Pins only work on a bpf filesystem. Like Cilium's agent, mount the
/// standard one at /sys/fs/bpf when the pin_dir is under it and nothing is
/// mounted there yet; anywhere else, say how to get one.
pub fn check_bpffs(pin_dir: &Path) -> Result<()> {
    const STD: &str = "/sys/fs/bpf";
    if is_bpffs(pin_dir)? {
        return Ok(());
    }
    if pin_dir.starts_with(STD) && !is_bpffs(Path::new(STD))? {
        let (src, dir, fstype) = (
            CString::new("bpf")?,
            CString::new(STD)?,
            CString::new("bpf")?,
        );
        // SAFETY: valid NUL-terminated strings; no mount data.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dir.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .context(format!("mounting bpffs on {STD}"));
        }
        info!("mounted a bpf filesystem on {STD}");
        attach_warnings::check_mounted_bpffs(Path::new(STD), pin_dir);
        if is_bpffs(pin_dir)? {
            return Ok(());
        }
    }
    bail!(
        "bpf.pin_dir {} is not on a bpf filesystem; mount one (`mount -t bpf bpf /sys/fs/bpf`) or pick a pin_dir under it",
        pin_dir.display()
    )
}

/// Whether `path` (or its nearest existing ancestor) is on a bpf filesystem.
fn is_bpffs(path: &Path) -> Result<bool> {
    let mut dir = path;
    while !dir.exists() {
        dir = dir.parent().unwrap_or(Path::new("/"));
    }
    let c = CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs writes into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("statfs {}", dir.display()));
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Removes our pinned maps from `pin_dir`, and the directory if that leaves
/// it empty. Touches nothing else.
pub fn remove_pins(pin_dir: &Path) -> Result<()> {
    unpin(pin_dir).map(|_| ())
}

/// The names of the pinned links (`link_IFACE` for XDP, `tclink_IFACE` for
/// tc) in `pin_dir`.
pub fn pinned_links(pin_dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if !pin_dir.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(pin_dir).with_context(|| format!("reading {}", pin_dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("link_") || name.starts_with("tclink_") {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Like `remove_pins`, returning the links it unpinned. The links go first:
/// with no agent holding them, unpinning a link detaches its program from
/// the interface, so no packet meets a program whose maps are going.
pub fn unpin(pin_dir: &Path) -> Result<Vec<String>> {
    unpin_in(pin_dir, true)
}

/// `unpin`, removing the emptied directory too if `remove_dir`.
fn unpin_in(pin_dir: &Path, remove_dir: bool) -> Result<Vec<String>> {
    let links = pinned_links(pin_dir)?;
    for name in &links {
        let p = pin_dir.join(name);
        fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    if !pin_dir.exists() {
        return Ok(links);
    }
    for name in MAP_NAMES {
        let p = pin_dir.join(name);
        if p.exists() {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    for p in resize::leftover_pins(pin_dir) {
        fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    if remove_dir && fs::read_dir(pin_dir)?.next().is_none() {
        fs::remove_dir(pin_dir)?;
    }
    Ok(links)
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
