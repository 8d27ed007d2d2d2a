//! The fixtures' runner: the loaded datapath (`Fixture`), a reset that puts
//! every map back to the config, and the loop that runs each table's cases
//! on a clean datapath under `catch_unwind`, so a failure names its case and
//! the others still run.
use std::net::{IpAddr, Ipv4Addr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::{cell::Cell, rc::Rc};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues, RingBuf};
use aya::programs::{TestRun, TestRunOptions};
use lb_common::{
    Counters, FragKey, FragNat, ReplyNat, Sticky, StickyKey, VipKey, VlanPort, reason,
};
use lb_userspace::{
    config::Config,
    control::{Control, RealKey},
    datapath::{self, Build, Datapath, KernelMaps},
    flowtable,
};

use super::packet::checksums_valid;
use super::packet6::checksums_valid6;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// tc's verdicts (linux/pkt_cls.h).
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// Which of the object's two programs the cases run through.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Hook {
    Xdp,
    Tc,
}

/// The interface a frame arrives on: c0 (clients) or s0 (reals).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Side {
    C0,
    S0,
}
pub use Side::{C0, S0};

/// What a step's output frame must be.
pub enum Out {
    Exact(Vec<u8>),
    /// The input, byte for byte.
    Same,
    /// Not checked (a drop, or bytes the step's `then` judges).
    Any,
}

pub type Action = Box<dyn Fn(&mut Fixture)>;
pub type Check = Box<dyn Fn(&mut Fixture, &[u8])>;

/// One frame through the program and what must come of it.
pub struct Step {
    pub name: String,
    /// Done just before the frame is sent (a real's health changed...).
    pub before: Option<Action>,
    pub on: Side,
    pub send: Vec<u8>,
    pub verdict: u32,
    pub reason: u32,
    pub out: Out,
    /// Checked after, given the output frame.
    pub then: Option<Check>,
}

impl Default for Step {
    fn default() -> Self {
        Step {
            name: String::new(),
            before: None,
            on: C0,
            send: Vec::new(),
            verdict: XDP_PASS,
            reason: 0,
            out: Out::Any,
            then: None,
        }
    }
}

impl Step {
    pub fn before(mut self, f: impl Fn(&mut Fixture) + 'static) -> Self {
        self.before = Some(Box::new(f));
        self
    }

    /// Adds a check after the step's others.
    pub fn then(mut self, f: impl Fn(&mut Fixture, &[u8]) + 'static) -> Self {
        let prev = self.then.take();
        self.then = Some(Box::new(move |fx, out| {
            if let Some(p) = &prev {
                p(fx, out);
            }
            f(fx, out);
        }));
        self
    }
}

/// A value one step's hook keeps for a later step's check. The steps are
/// built afresh for each case, so each case has its own.
pub struct Saved<T>(Rc<Cell<Option<T>>>);

impl<T: Copy> Saved<T> {
    pub fn new() -> Self {
        Saved(Rc::new(Cell::new(None)))
    }

    /// A hook that keeps what `f` reads.
    pub fn keep(&self, f: impl Fn(&mut Fixture) -> T + 'static) -> impl Fn(&mut Fixture) + 'static
    where
        T: 'static,
    {
        let at = self.clone();
        move |fx| at.0.set(Some(f(fx)))
    }

    pub fn get(&self) -> T {
        self.0.get().expect("saved by an earlier step")
    }
}

impl<T> Clone for Saved<T> {
    fn clone(&self) -> Self {
        Saved(self.0.clone())
    }
}

/// A case: run alone on a clean datapath, its setup then its steps.
pub struct Case {
    pub name: String,
    pub setup: Option<Action>,
    pub steps: Vec<Step>,
}

impl Case {
    /// A case of steps that build on each other, under one name.
    pub fn new(name: &str, steps: Vec<Step>) -> Self {
        Case {
            name: name.into(),
            setup: None,
            steps,
        }
    }

    /// A case of one step, named after it.
    pub fn one(step: Step) -> Self {
        Case {
            name: step.name.clone(),
            setup: None,
            steps: vec![step],
        }
    }

    /// A case whose body is code (loops, values read back): it runs its
    /// steps itself with `Fixture::step`.
    pub fn code(name: &str, body: impl Fn(&mut Fixture) + 'static) -> Self {
        Case {
            name: name.into(),
            setup: Some(Box::new(body)),
            steps: Vec::new(),
        }
    }

    pub fn setup(mut self, f: impl Fn(&mut Fixture) + 'static) -> Self {
        self.setup = Some(Box::new(f));
        self
    }
}

/// Cases from steps that build on each other (a handshake, then data...):
/// one for each named step, running the steps before it first, so each can
/// run alone and fails alone. A run of steps of one name is one case.
/// `make` builds the steps afresh for each case.
pub fn chain(make: impl Fn() -> Vec<Step>) -> Vec<Case> {
    let names: Vec<String> = make().into_iter().map(|s| s.name).collect();
    let last = |k: usize| names.get(k + 1) != Some(&names[k]);
    (0..names.len())
        .filter(|&k| !names[k].is_empty() && last(k))
        .map(|k| {
            let mut steps = make();
            steps.truncate(k + 1);
            Case {
                name: names[k].clone(),
                setup: None,
                steps,
            }
        })
        .collect()
}

/// Pinned maps the agent's `KernelMaps` has no handle for, opened from
/// their pins to be cleared between cases.
struct Pinned {
    sticky: HashMap<MapData, StickyKey, Sticky>,
    frags: HashMap<MapData, FragKey, FragNat>,
    reply_nat: HashMap<MapData, VipKey, ReplyNat>,
    rr_cursor: PerCpuArray<MapData, u32>,
}

impl Pinned {
    fn open(pin_dir: &std::path::Path) -> Self {
        let pin = |name: &str| MapData::from_pin(pin_dir.join(name)).expect(name);
        Pinned {
            sticky: HashMap::try_from(Map::LruHashMap(pin("STICKY"))).expect("STICKY"),
            frags: HashMap::try_from(Map::LruHashMap(pin("FRAGS"))).expect("FRAGS"),
            reply_nat: HashMap::try_from(Map::HashMap(pin("REPLY_NAT"))).expect("REPLY_NAT"),
            rr_cursor: PerCpuArray::try_from(Map::PerCpuArray(pin("RR_CURSOR")))
                .expect("RR_CURSOR"),
        }
    }
}

pub struct Fixture {
    pub hook: Hook,
    pub build: Build,
    dp: Option<Datapath>,
    /// The trace build's records (its filter matches every packet).
    records: Option<lb_userspace::trace::Records>,
    /// The record of the last packet run, on the trace build.
    last: Option<lb_common::TraceRecord>,
    pub cfg: Config,
    pub ctl: Control,
    pub c0: u32,
    pub s0: u32,
    pinned: Pinned,
    pub hop_gen: Array<MapData, u32>,
    pub vlans: HashMap<MapData, u32, VlanPort>,
    pub sync: RingBuf<MapData>,
    events: RingBuf<MapData>,
    /// A case changed the namespace (MTUs, neighbours, routes).
    net_dirty: bool,
    /// Notes of the current case (`passed`).
    notes: Vec<String>,
    steps_run: usize,
}

impl Fixture {
    /// Loads `build` of the object with `cfg` programmed, in the calling
    /// thread's namespace (c0 and s0 made by `fixture_net::setup`).
    pub fn load(hook: Hook, build: Build, cfg: Config) -> Self {
        let sizes = datapath::table_sizes(cfg.bpf.flow_table_size);
        // {e:#} carries the verifier's log when it refused the program.
        let mut dp = Datapath::load_build(build, &cfg.bpf.pin_dir, true, &sizes)
            .unwrap_or_else(|e| panic!("load: {e:#}"));
        let records = (build == Build::Trace).then(|| {
            let every = lb_common::TraceFilter {
                on: 1,
                ..Default::default()
            };
            dp.set_trace_filter(&every).expect("TRACE_FILTER");
            lb_userspace::trace::Records::open(&mut dp).expect("the trace build's ring")
        });
        let (c0, s0) = (
            datapath::ifindex("c0").unwrap(),
            datapath::ifindex("s0").unwrap(),
        );
        dp.allow_redirect(c0).unwrap();
        dp.allow_redirect(s0).unwrap();
        let mut fx = Fixture {
            hook,
            build,
            pinned: Pinned::open(&cfg.bpf.pin_dir),
            hop_gen: dp.take_hop_gen().expect("HOP_GEN"),
            vlans: dp.take_vlans().expect("VLANS"),
            sync: dp.take_sync().expect("SYNC"),
            events: dp.take_events().expect("EVENTS"),
            dp: Some(dp),
            records,
            last: None,
            cfg,
            ctl: Control::new(),
            c0,
            s0,
            net_dirty: false,
            notes: Vec::new(),
            steps_run: 0,
        };
        fx.reset();
        fx
    }

    /// Unpins the maps (the test checks the pins are gone).
    pub fn shutdown(mut self) {
        self.records = None;
        self.dp.take().expect("loaded").shutdown().expect("unpin");
    }

    pub fn dp(&mut self) -> &mut Datapath {
        self.dp.as_mut().expect("loaded")
    }

    pub fn ifindex(&self, side: Side) -> u32 {
        match side {
            C0 => self.c0,
            S0 => self.s0,
        }
    }

    /// A clean datapath: no flows or per-flow state, counters at zero, the
    /// config programmed afresh by a new `Control` (reals up, admin states
    /// as configured), HA off, cached hops stale, the namespace as set up.
    /// Not reset: `UNREACH_TOKENS` (per CPU, unpinned, no handle; it refills
    /// within milliseconds) and `REAL_HOPS` (unpinned, made stale by the
    /// `HOP_GEN` bump).
    pub fn reset(&mut self) {
        if std::mem::take(&mut self.net_dirty) {
            restore_net();
        }
        for ifindex in [self.c0, self.s0] {
            self.dp().set_peer_port(ifindex, false).expect("PEER_PORTS");
        }
        let Fixture {
            dp,
            pinned,
            vlans,
            ctl,
            cfg,
            ..
        } = self;
        let maps = &mut dp.as_mut().expect("loaded").maps;
        clear(&mut maps.flows);
        clear(&mut maps.embryos);
        clear(&mut pinned.sticky);
        clear(&mut pinned.frags);
        clear(&mut pinned.reply_nat);
        clear(vlans);
        *ctl = Control::new();
        ctl.apply(cfg, maps).expect("program maps");
        // Only the config's ids can hold counts: the arrays are far larger.
        let p = ctl.programmed();
        let reals: Vec<u32> = p.reals.values().map(|&(id, _)| id).collect();
        let vips: Vec<u32> = p.vips.values().map(|v| v.id).collect();
        let farms: Vec<u32> = p.farms.values().map(|f| f.id).collect();
        zero_per_cpu(&mut pinned.rr_cursor, &farms);
        zero_per_cpu(&mut maps.stats, &(0..reason::COUNT).collect::<Vec<_>>());
        zero_per_cpu(&mut maps.vip_stats, &vips);
        zero_per_cpu(&mut maps.real_stats, &reals);
        for a in [&mut maps.active, &mut maps.expired] {
            for &i in &reals {
                a.set(i, 0, 0).expect("array");
            }
        }
        maps.sync_on.set(0, 0, 0).expect("SYNC_ON");
        maps.standby.set(0, 0, 0).expect("STANDBY");
        self.bump_hop_gen();
        while self.sync.next().is_some() {}
        while self.events.next().is_some() {}
        if let Some(r) = self.records.as_mut() {
            r.read();
        }
        self.last = None;
        self.notes.clear();
    }

    /// Makes every cached next hop stale, as the agent's route watcher does.
    pub fn bump_hop_gen(&mut self) {
        let g = self.hop_gen.get(&0, 0).expect("HOP_GEN[0]");
        self.hop_gen.set(0, g.wrapping_add(1), 0).expect("HOP_GEN");
    }

    /// `ip ARGS` in the fixture's namespace; the next reset undoes it.
    pub fn ip(&mut self, args: &[&str]) {
        self.net_dirty = true;
        ip(args);
    }

    /// Runs one frame arriving on `side`: the verdict in XDP's terms (tc's
    /// redirect, which stands for both XDP_TX and XDP_REDIRECT, as
    /// XDP_REDIRECT: the output's MACs tell the interface) and the frame.
    pub fn run(&mut self, side: Side, frame: &[u8]) -> (u32, Vec<u8>) {
        let ingress = self.ifindex(side);
        let mut out = vec![0u8; frame.len() + 256];
        let md: Vec<u32> = match self.hook {
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
            // rx_queue_index, egress_ifindex.
            Hook::Xdp => vec![0, frame.len() as u32, 0, ingress, 0, 0],
            // struct __sk_buff up to ifindex (the device the skb is on);
            // the kernel accepts only these few fields set.
            Hook::Tc => {
                let mut skb = vec![0u32; 11];
                skb[9] = ingress;
                skb[10] = ingress;
                skb
            }
        };
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        };
        let hook = self.hook;
        let dp = self.dp();
        let r = match hook {
            Hook::Xdp => dp.program().test_run(opts),
            Hook::Tc => dp.tc_program().test_run(opts),
        }
        .expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        if let Some(records) = self.records.as_mut() {
            // Exactly one record a packet, with the program's own verdict.
            let got = records.read();
            assert_eq!(got.len(), 1, "{hook:?} trace build: records of one packet");
            assert_eq!(records.malformed, 0);
            assert_eq!(got[0].action, r.return_value, "the record's verdict");
            assert_eq!(got[0].tc != 0, hook == Hook::Tc);
            self.last = Some(got[0]);
        }
        let verdict = match (hook, r.return_value) {
            (Hook::Xdp, v) => v,
            (Hook::Tc, TC_ACT_OK) => XDP_PASS,
            (Hook::Tc, TC_ACT_SHOT) => XDP_DROP,
            (Hook::Tc, TC_ACT_REDIRECT) => XDP_REDIRECT,
            (Hook::Tc, v) => panic!("tc verdict {v}"),
        };
        (verdict, out)
    }

    /// Runs one step: its verdict, its reason counted exactly once, its
    /// output (checksums valid on any frame the program rewrote), then its
    /// `then`. Returns the output frame.
    pub fn step(&mut self, s: &Step) -> Vec<u8> {
        let name = &s.name;
        self.steps_run += 1;
        if let Some(f) = &s.before {
            f(self);
        }
        // The kernel's skb test run refuses an IPv4 frame too short for an
        // IPv4 header (EINVAL); such frames only run through XDP here.
        if self.hook == Hook::Tc && s.send.len() < 14 + 20 {
            self.passed(&format!("{name}: not run, see Fixture::step"));
            return s.send.clone();
        }
        let before = self.counter(s.reason);
        let (got, out) = self.run(s.on, &s.send);
        let want = match (self.hook, s.verdict) {
            (Hook::Tc, XDP_TX) => XDP_REDIRECT,
            (_, v) => v,
        };
        assert_eq!(got, want, "{name}: verdict");
        if let Some(rec) = self.last.take() {
            let named = reason::NAMES.get(rec.reason as usize).unwrap_or(&"?");
            assert_eq!(
                rec.reason, s.reason,
                "{name}: the trace record's reason ({named})"
            );
        }
        let why = reason::NAMES[s.reason as usize];
        assert_eq!(
            self.counter(s.reason),
            before + 1,
            "{name}: reason {why} counted once"
        );
        let expect = match &s.out {
            Out::Exact(b) => Some(b),
            Out::Same => Some(&s.send),
            Out::Any => None,
        };
        if let Some(expect) = expect
            && out != *expect
        {
            panic!(
                "{name}: output differs\n got: {}\nwant: {}",
                hex(&out),
                hex(expect)
            );
        }
        // Every frame the program rewrote must carry valid checksums.
        if want != XDP_DROP && out != s.send {
            let valid = if out[12..14] == [0x86, 0xdd] {
                checksums_valid6(&out)
            } else {
                checksums_valid(&out)
            };
            assert!(valid, "{name}: checksums");
        }
        if let Some(f) = &s.then {
            f(self, &out);
        }
        out
    }

    /// Notes a check within the case, printed under its name when it passes.
    pub fn passed(&mut self, name: &str) {
        self.notes.push(name.into());
    }

    pub fn counter(&mut self, why: u32) -> u64 {
        let v = self.dp().maps.stats.get(&why, 0).expect("STATS");
        v.iter().sum()
    }

    pub fn vip_counters(&mut self, id: u32) -> Counters {
        let v = self.dp().maps.vip_stats.get(&id, 0).expect("VIP_STATS");
        datapath::sum_counters(v.iter())
    }

    pub fn real_counters(&mut self, id: u32) -> Counters {
        let v = self.dp().maps.real_stats.get(&id, 0).expect("REAL_STATS");
        datapath::sum_counters(v.iter())
    }

    pub fn vip_id(&self, name: &str) -> u32 {
        self.ctl.programmed().vips[name].id
    }

    pub fn real_id(&self, addr: Ipv4Addr, port: u16) -> u32 {
        let reals = &self.ctl.programmed().reals;
        let found = reals.iter().find(|(k, _)| k.addr == addr && k.port == port);
        found.expect("real").1.0
    }

    /// Runs `f` on the agent's control plane and the maps it writes.
    pub fn control<T>(&mut self, f: impl FnOnce(&mut Control, &mut KernelMaps) -> T) -> T {
        let Fixture { dp, ctl, .. } = self;
        f(ctl, &mut dp.as_mut().expect("loaded").maps)
    }

    /// Marks a real up or down, as its health check would.
    pub fn set_health(&mut self, farm: &str, addr: impl Into<IpAddr>, port: u16, up: bool) {
        let key = RealKey {
            farm: farm.into(),
            addr: addr.into(),
            port,
        };
        self.control(|ctl, maps| ctl.set_health(&key, up, maps).expect("set_health"));
    }

    pub fn sweep(&mut self) -> flowtable::Sweep {
        let Fixture { dp, ctl, .. } = self;
        let flows = &mut dp.as_mut().expect("loaded").maps.flows;
        flowtable::sweep(flows, ctl, datapath::now_ns()).expect("sweep")
    }

    /// Entries in both flow tables.
    pub fn entries(&mut self) -> usize {
        let maps = &self.dp().maps;
        maps.flows.keys().count() + maps.embryos.keys().count()
    }

    /// The flow, both directions, from the client's port: assured (`FLOWS`)
    /// or half-open (`EMBRYOS`).
    pub fn flow(&mut self, client_port: u16) -> Option<flowtable::Joined> {
        self.flow_in(client_port, false)
            .or_else(|| self.flow_in(client_port, true))
    }

    /// The flow from the client's port in one table.
    pub fn flow_in(&mut self, client_port: u16, embryo: bool) -> Option<flowtable::Joined> {
        let maps = &self.dp().maps;
        let t = flowtable::read(if embryo { &maps.embryos } else { &maps.flows });
        let flows = t.expect("read flows").flows;
        flows
            .into_iter()
            .find(|f| u16::from_be(f.fwd_key.src_port_be) == client_port)
    }

    pub fn flow_state(&mut self, client_port: u16) -> Option<u8> {
        self.flow(client_port).map(|f| f.state())
    }

    pub fn flow_real(&mut self, client_port: u16) -> Option<Ipv4Addr> {
        self.flow(client_port)
            .map(|f| match lb_common::from_map_addr(&f.fwd.nat_addr) {
                IpAddr::V4(a) => a,
                IpAddr::V6(a) => panic!("an IPv6 real {a} where an IPv4 one was asked for"),
            })
    }
}

fn clear<K: aya::Pod, V: aya::Pod>(m: &mut HashMap<MapData, K, V>) {
    let keys: Vec<K> = m.keys().map(|k| k.expect("key")).collect();
    for k in keys {
        // An LRU map may have dropped it meanwhile; nothing else writes.
        let _ = m.remove(&k);
    }
}

fn zero_per_cpu<V: aya::Pod + Default>(a: &mut PerCpuArray<MapData, V>, at: &[u32]) {
    let cpus = aya::util::nr_cpus().expect("nr_cpus");
    for &i in at {
        let zero = PerCpuValues::try_from(vec![V::default(); cpus]).expect("values");
        a.set(i, zero, 0).expect("per-CPU array");
    }
}

/// `ip ARGS` in the calling thread's namespace.
pub fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip").args(args).status();
    assert!(st.expect("ip").success(), "ip {args:?}");
}

/// The namespace as `fixture_net::setup` left it: MTUs, the reals'
/// neighbours, IPv6 addresses (an MTU below 1280 removes them), no routes
/// of a case's own.
fn restore_net() {
    use lb_tests::fixture_net::{REALS, ipv6_setup, real_mac};
    ip(&["link", "set", "c0", "mtu", "1500"]);
    ip(&["link", "set", "s0", "mtu", "1500"]);
    for r in REALS {
        let (r, m) = (r.to_string(), super::mac_text(real_mac(r)));
        #[rustfmt::skip]
        ip(&["neigh", "replace", &r, "lladdr", &m, "dev", "s0", "nud", "permanent"]);
    }
    for args in ipv6_setup() {
        ip(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    // A case's narrow IPv6 route, if it made one.
    let _ = std::process::Command::new("ip")
        .args(["-6", "route", "del", "2001:db8:5::13/128", "dev", "s0"])
        .stderr(std::process::Stdio::null())
        .status();
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What `run_all` saw.
#[derive(Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: Vec<String>,
    /// Steps run, each case's own and those of the code cases.
    pub steps: usize,
}

/// Runs every case (those whose name holds `$LB_FIXTURE`, if set), each on
/// a reset datapath, printing an `ok` line for each passed case (and its
/// notes), a `FAILED` line for each failed case.
pub fn run_all(fx: &mut Fixture, cases: Vec<Case>) -> Summary {
    let filter = std::env::var("LB_FIXTURE").ok();
    let tag = format!("({:?}, {:?})", fx.hook, fx.build);
    let mut sum = Summary::default();
    // Off libtest's "test NAME ... " line, so every case's line starts one.
    println!();
    for case in cases {
        if filter
            .as_ref()
            .is_some_and(|f| !case.name.contains(f.as_str()))
        {
            continue;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            fx.reset();
            if let Some(f) = &case.setup {
                f(fx);
            }
            for s in &case.steps {
                fx.step(s);
            }
        }));
        match result {
            Ok(()) => {
                println!("ok {tag}: {}", case.name);
                sum.passed += 1;
                for s in std::mem::take(&mut fx.notes) {
                    println!("ok {tag}: {} / {s}", case.name);
                }
            }
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("?");
                // A step's own messages start with its name, often the case's.
                let msg = msg.strip_prefix(&format!("{}: ", case.name)).unwrap_or(msg);
                println!("FAILED {tag}: {}: {msg}", case.name);
                sum.failed.push(case.name.clone());
            }
        }
    }
    sum.steps = fx.steps_run;
    sum
}
