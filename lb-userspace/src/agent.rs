//! `lb run`: load (or adopt) and attach the datapath, program it from the
//! config, and then serve: health verdicts (probes and passive), fail-action
//! sweeps, reloads (SIGHUP or the API), operators' commands, metrics, the
//! flow sweep. SIGTERM and SIGQUIT (what `systemctl stop` and `restart`
//! send) end the agent and leave the datapath pinned and forwarding for the
//! next one; only `lb teardown` (the API) and SIGINT (Ctrl-C in a terminal)
//! take it down.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use aya::maps::{MapData, RingBuf};
use lb_common::{
    EV_ICMP_UNREACH, EV_SYN_RETRANSMIT, EV_SYN_RST, Event, FAIL_PURGE, REAL_DISABLED, REAL_DOWN,
    SyncEvent,
};
use log::{error, info, warn};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

mod bulk;
mod live_view;
mod requests;
mod sweep;
mod tracing;
mod track;
mod views;

use crate::{
    api::{self, Call, Request, Response},
    config::{Config, InitState},
    control::{Control, RealKey},
    datapath::{self, Datapath},
    flowtable,
    ha::{self, node::Node},
    health::{Checker, Target, Transition},
    http, live,
    reset::ResetSender,
    sdnotify::{self, Notifier},
};

/// How the agent's loop ended, and so what happens to the datapath.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Exit {
    /// SIGTERM or SIGQUIT: a stop or restart; the datapath keeps forwarding
    /// and the next `lb run` adopts it.
    KeepDatapath,
    /// `lb teardown` or SIGINT: hand over (HA), detach and unpin.
    Teardown,
}

/// The sweep runs at least this often; slower when a sweep takes long, so a
/// huge table never keeps the agent busy more than a tenth of the time.
const SWEEP_MIN: Duration = Duration::from_secs(1);
/// How long passive health keeps a real out when `observe.hold` is not set.
const DEFAULT_HOLD: Duration = Duration::from_secs(10);

/// Consecutive connection failures seen for one real.
#[derive(Default)]
struct Passive {
    failures: u32,
    /// The real's success counter at the last failure: if it moved since,
    /// the failures were not consecutive.
    conn_ok: u64,
}

struct Agent {
    path: PathBuf,
    cfg: Config,
    ctl: Control,
    dp: Datapath,
    checker: Checker,
    /// Shared with purges running off the loop.
    resets: Option<Arc<ResetSender>>,
    /// Where work done off the loop reports (`Done`).
    done: mpsc::UnboundedSender<Done>,
    passive: HashMap<u32, Passive>,
    last_sweep: Option<flowtable::Sweep>,
    sweep_took: Duration,
    started: Instant,
    /// Stateful failover, when `ha:` is configured.
    ha: Option<Node>,
    /// Scale-out, when `cluster:` is configured.
    cluster: Option<crate::cluster::Runtime>,
    /// Counter records for the live view's rates.
    history: live::History,
    /// The production build's program ids (XDP, tc).
    program_ids: (u32, u32),
    /// `lb trace`, while one runs.
    trace: Option<tracing::Session>,
}

/// The rules that need this host (config/host.rs): warnings logged, errors
/// refuse the config.
fn host_rules(cfg: &Config, path: &Path, running: Option<&Config>) -> Result<()> {
    let src = std::fs::read_to_string(path).unwrap_or_default();
    let host = cfg.host_issues(&src, &path.display().to_string(), running);
    for w in &host.warnings {
        warn!("{w}");
    }
    match host.refusal() {
        Some(refusal) => bail!("{refusal}"),
        None => Ok(()),
    }
}

/// `reset`: start from a clean datapath instead of adopting the maps and
/// XDP links a previous agent left pinned (hitless restart).
pub fn run(path: &Path, reset: bool) -> Result<()> {
    let cfg = Config::from_file(path).map_err(|e| anyhow!("{e}"))?;
    host_rules(&cfg, path, None)?;
    // Before touching the pins: they may belong to a live agent.
    api::ensure_no_agent(&cfg.api.socket)?;
    // Nor may another agent with a socket of its own: held until exit
    // (on the bpf filesystem, mounted first if need be).
    datapath::check_bpffs(&cfg.bpf.pin_dir)?;
    let _owner = crate::pin_owner::own(&cfg.bpf.pin_dir)?;
    let mut dp = Datapath::load_with(&cfg.bpf.pin_dir, cfg.bpf.flow_table_size, reset)?;
    let mut ctl = if dp.adopted() {
        let c = Control::adopt(
            &cfg,
            &dp.maps.programmed().context("reading the adopted maps")?,
        );
        info!(
            "adopted {} vips and {} reals from the running datapath",
            c.programmed().vips.len(),
            c.programmed().reals.len()
        );
        c
    } else {
        Control::new()
    };
    // Program before attaching, so the first packet already finds the VIPs.
    let ch = ctl
        .apply(&cfg, &mut dp.maps)
        .context("programming the datapath")?;
    info!(
        "programmed {} vips, {} reals",
        ch.vips_added.len(),
        ch.reals_added
    );
    // The datapath reports flow changes only for an HA pair or a cluster.
    dp.maps
        .sync_on
        .set(0, u32::from(cfg.ha.is_some() || cfg.cluster.is_some()), 0)
        .context("SYNC_ON")?;
    // A restarted agent on the active node finds its floating IPs still in
    // place on a datapath that kept forwarding: it resumes the role.
    let resume = dp.adopted() && cfg.ha.as_ref().is_some_and(Node::holds_floating);
    // A node of a pair forwards only once elected (or resuming).
    dp.maps
        .standby
        .set(0, u32::from(cfg.ha.is_some() && !resume), 0)
        .context("STANDBY")?;
    dp.attach(&cfg.interfaces, cfg.xdp_mode)?;
    let program_ids = dp.program_ids()?;
    let resets = ResetSender::new()
        .map_err(|e| {
            warn!("no raw socket for purge resets ({e}); idle clients learn at their next packet")
        })
        .ok()
        .map(Arc::new);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if let Some(hop_gen) = dp.take_hop_gen() {
            let vlans = dp
                .take_vlans()
                .map(|m| crate::vlans::Vlans::new(m, &cfg.interface_names()));
            crate::routewatch::spawn(hop_gen, vlans)?;
        }
        let (tx, transitions) = mpsc::unbounded_channel();
        let (ha, ha_inputs) = match &cfg.ha {
            Some(h) => {
                let (node, inputs) =
                    Node::start(h, ctl.programmed(), cfg.bpf.flow_table_size, resume)?;
                info!(
                    "ha: node {} (priority {}) syncing with {} from {}",
                    h.node_id, h.priority, h.peer, h.listen
                );
                (Some(node), Some(inputs))
            }
            None => (None, None),
        };
        // After the datapath is attached: what BIRD announces is served.
        let (cluster, cluster_dgrams) = match &cfg.cluster {
            Some(c) => {
                let run_dir = cfg
                    .api
                    .socket
                    .parent()
                    .unwrap_or(Path::new("/run/lb"))
                    .join("bird");
                let (rt, d) = crate::cluster::Runtime::start(
                    c,
                    ctl.programmed(),
                    cfg.bpf.flow_table_size,
                    &run_dir,
                )?;
                (Some(rt), Some(d))
            }
            None => (None, None),
        };
        let (done, finished_work) = mpsc::unbounded_channel();
        let mut agent = Agent {
            path: path.to_path_buf(),
            cfg,
            ctl,
            dp,
            checker: Checker::new(tx),
            resets,
            done,
            passive: HashMap::new(),
            last_sweep: None,
            sweep_took: Duration::ZERO,
            started: Instant::now(),
            ha,
            cluster,
            history: live::History::default(),
            program_ids,
            trace: None,
        };
        agent.checker.set_targets(agent.targets());
        let downs = agent.sync_tracks();
        agent.fail_action(&downs);
        agent
            .serve(transitions, finished_work, ha_inputs, cluster_dgrams)
            .await
    })
}

/// Forwards the datapath's passive-health events to the agent's loop.
fn read_events(ring: RingBuf<MapData>) -> Result<mpsc::UnboundedReceiver<Event>> {
    let (tx, rx) = mpsc::unbounded_channel();
    // SAFETY: the AsyncFd owns the ring buffer, so its fd lives exactly as
    // long as the registration.
    let mut fd = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow!("watching the EVENTS ring buffer: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if item.len() >= size_of::<Event>() {
                    // SAFETY: the datapath writes whole `Event`s; read unaligned.
                    let ev = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            }
            guard.clear_ready();
        }
    });
    Ok(rx)
}

/// Forwards the datapath's HA flow-change records, a batch per wake-up.
fn read_sync(ring: RingBuf<MapData>) -> Result<mpsc::Receiver<Vec<SyncEvent>>> {
    let (tx, rx) = mpsc::channel(64);
    // SAFETY: as in read_events.
    let mut fd = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow!("watching the SYNC ring buffer: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            let ring = guard.get_inner_mut();
            let mut batch = Vec::new();
            while let Some(item) = ring.next() {
                if item.len() >= size_of::<SyncEvent>() {
                    // SAFETY: the datapath writes whole records; read unaligned.
                    batch.push(unsafe {
                        std::ptr::read_unaligned(item.as_ptr().cast::<SyncEvent>())
                    });
                }
            }
            guard.clear_ready();
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// The next tick of an optional interval; never, without one.
async fn tick(t: Option<&mut tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Tells systemd `state`, when started by it; a failure is only logged:
/// systemd's own timeouts then speak for it.
fn notify(n: &Option<Notifier>, state: &str) {
    if let Some(n) = n
        && let Err(e) = n.notify(state)
    {
        warn!("sd_notify {}: {e}", state.lines().next().unwrap_or(state));
    }
}

/// The next item of an optional channel; never, without one.
async fn next_of<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Agent {
    async fn serve(
        mut self,
        mut transitions: mpsc::UnboundedReceiver<Transition>,
        mut finished_work: mpsc::UnboundedReceiver<Done>,
        ha_inputs: Option<ha::node::Inputs>,
        mut cluster_dgrams: Option<ha::socket::Datagrams>,
    ) -> Result<()> {
        let (tx, mut rx) = mpsc::channel::<Call>(16);
        let socket = self.cfg.api.socket.clone();
        let api_task = api::serve(&socket, tx)?;
        let (mtx, mut http_rx) = mpsc::channel::<http::Ask>(4);
        let metrics_task = match http::serve(self.cfg.metrics.listen, mtx) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!("metrics: {e:#}");
                None
            }
        };
        let mut events = match self.dp.take_events() {
            Some(ring) => read_events(ring)?,
            None => bail!("the EVENTS map is missing"),
        };
        let (mut ha_dgrams, mut ha_liveness) = match ha_inputs {
            Some(i) => (Some(i.datagrams), Some(i.liveness)),
            None => (None, None),
        };
        let mut sync_recs = if self.ha.is_some() || self.cluster.is_some() {
            let ring = self
                .dp
                .take_sync()
                .ok_or_else(|| anyhow!("the SYNC map is missing"))?;
            Some(read_sync(ring)?)
        } else {
            None
        };
        let mut cluster_tick = tokio::time::interval(
            self.cluster
                .as_ref()
                .map_or(Duration::from_secs(3600), |c| c.tick_every()),
        );
        cluster_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A cluster node's SIGTERM: routes withdrawn, then this long serving.
        let mut stop_at: Option<tokio::time::Instant> = None;
        // Half the heartbeat: heartbeats go out on time and resends and
        // gratuitous ARPs are not late by more than that.
        let tick_every = self.cfg.ha.as_ref().map_or(Duration::from_secs(3600), |h| {
            (h.heartbeat / 2).max(Duration::from_millis(5))
        });
        let mut ha_tick = tokio::time::interval(tick_every);
        ha_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // SIGTERM (systemd's stop and restart) and SIGQUIT (its older
        // spelling) leave the datapath forwarding. SIGINT is Ctrl-C at a
        // terminal, where an operator who ran `lb run` by hand expects it
        // all to go away with it: a teardown.
        let mut term = signal(SignalKind::terminate())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let exit;
        // Only once the datapath is attached (run() did that before
        // serving) and the API socket is listening: systemd orders units
        // after lb on this.
        let notifier = Notifier::from_env()?;
        notify(
            &notifier,
            &format!(
                "READY=1\nSTATUS=serving on {:?}",
                self.cfg.interface_names()
            ),
        );
        // Pinged from this loop, so a stalled loop is what systemd sees.
        let mut watchdog = sdnotify::watchdog_interval().map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        // The first sweep at once: until it has run, `lb status` has no
        // table counts to show (an adopted table may hold many flows).
        let mut next_sweep = tokio::time::Instant::now();
        let mut sweeping: Option<sweep::Sweeping> = None;
        let mut bulk_reading = None;
        // The live view's rates: the counters once a second.
        let mut record = tokio::time::interval(Duration::from_secs(1));
        record.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut trace_check = tokio::time::interval(tracing::CHECK_EVERY);
        info!(
            "lb running on {:?}; api {}",
            self.cfg.interface_names(),
            socket.display()
        );
        loop {
            tokio::select! {
                _ = term.recv() => {
                    if stop_at.is_none()
                        && let Some(c) = self.cluster.as_mut()
                    {
                        let at = c.stop(self.ctl.programmed());
                        info!(
                            "SIGTERM: routes withdrawn; serving {:?} more while the router moves flows to the other nodes (SIGTERM again stops now)",
                            at.saturating_duration_since(Instant::now())
                        );
                        stop_at = Some(at.into());
                        continue;
                    }
                    info!("SIGTERM: stopping the agent; the datapath keeps forwarding (take it down with `lb teardown`)");
                    exit = Exit::KeepDatapath;
                    break;
                }
                _ = tokio::time::sleep_until(stop_at.unwrap_or_else(tokio::time::Instant::now)), if stop_at.is_some() => {
                    info!("drained: stopping the agent; the datapath keeps forwarding (take it down with `lb teardown`)");
                    exit = Exit::KeepDatapath;
                    break;
                }
                _ = quit.recv() => {
                    info!("SIGQUIT: stopping the agent; the datapath keeps forwarding (same as SIGTERM)");
                    exit = Exit::KeepDatapath;
                    break;
                }
                _ = int.recv() => {
                    info!("SIGINT: tearing the datapath down (`systemctl stop` and SIGTERM leave it forwarding)");
                    exit = Exit::Teardown;
                    break;
                }
                _ = tick(watchdog.as_mut()) => notify(&notifier, "WATCHDOG=1"),
                _ = hup.recv() => { let _ = self.reload(); }
                Some((req, reply, stream)) = rx.recv() => match req {
                    Request::Trace(spec) => {
                        let _ = reply.send(self.start_trace(&spec, stream));
                    }
                    Request::FlowsClear { vip, real, client, state } => {
                        self.clear_flows(flowtable::Filter { vip, real, client, state }, reply);
                    }
                    Request::Teardown => {
                        info!("lb teardown: tearing the datapath down and exiting");
                        let _ = reply.send(Response::ok(&api::Message {
                            message: "tearing down: handing over, detaching, unpinning, exiting".into(),
                        }));
                        // Lets the connection's task write the answer before
                        // the runtime ends.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        exit = Exit::Teardown;
                        break;
                    }
                    req => {
                        let _ = reply.send(self.handle(req));
                        self.sync_role();
                    }
                },
                Some(t) = transitions.recv() => self.on_transition(t),
                Some(d) = finished_work.recv() => self.finished(d),
                Some(ev) = events.recv() => self.on_event(ev),
                Some(ask) = http_rx.recv() => match ask {
                    http::Ask::Metrics(reply) => { let _ = reply.send(self.snapshot()); }
                    http::Ask::Status(reply) => { let _ = reply.send(self.live_status()); }
                },
                _ = record.tick() => self.history.record(Instant::now(), &self.snapshot()),
                _ = trace_check.tick(), if self.trace.is_some() => {
                    if let Some(why) = self.trace.as_ref().and_then(|t| t.due()) {
                        self.end_trace(why);
                    }
                }
                Some((_, d)) = next_of(&mut ha_dgrams) => {
                    if let Some(h) = self.ha.as_mut() {
                        h.on_datagram(&d, &mut self.dp.maps);
                    }
                    self.start_bulk_read(&mut bulk_reading);
                    self.sync_role();
                }
                r = finished(bulk_reading.as_mut()) => {
                    bulk_reading = None;
                    self.bulk_read(r, &mut bulk_reading);
                }
                Some(alive) = next_of(&mut ha_liveness) => {
                    if let Some(h) = self.ha.as_mut() {
                        h.on_liveness(alive);
                    }
                    self.sync_role();
                }
                Some(recs) = next_of(&mut sync_recs) => {
                    if let Some(h) = self.ha.as_mut() {
                        h.on_records(&recs);
                    }
                    if let Some(c) = self.cluster.as_mut() {
                        c.node.on_records(&recs);
                    }
                }
                Some((from, d)) = next_of(&mut cluster_dgrams) => {
                    if let Some(c) = self.cluster.as_mut() {
                        c.node.on_datagram(from, &d, &mut self.dp.maps);
                    }
                    self.start_bulk_read(&mut bulk_reading);
                }
                _ = cluster_tick.tick(), if self.cluster.is_some() => {
                    if let Some(c) = self.cluster.as_mut() {
                        c.node.on_tick();
                        c.announce(self.ctl.programmed());
                    }
                }
                _ = ha_tick.tick(), if self.ha.is_some() => {
                    if let Some(h) = self.ha.as_mut() {
                        h.on_tick();
                    }
                    self.sync_role();
                }
                _ = tokio::time::sleep_until(next_sweep), if sweeping.is_none() => {
                    sweeping = Some(self.start_sweep());
                }
                r = finished(sweeping.as_mut().map(|s| &mut s.task)) => {
                    let took = self.finish_swept(sweeping.take().expect("a sweep ran"), r);
                    next_sweep = tokio::time::Instant::now() + SWEEP_MIN.max(took * 10);
                }
            }
        }
        // Before the datapath is left forwarding or taken down: the
        // production build back on every link.
        self.end_trace("agent stopping");
        api_task.abort();
        if let Some(t) = metrics_task {
            t.abort();
        }
        notify(&notifier, "STOPPING=1");
        let _ = std::fs::remove_file(&socket);
        let keep = exit == Exit::KeepDatapath;
        if let Some(h) = self.ha.as_mut() {
            h.stop(keep);
        }
        if keep {
            info!(
                "stopped; the datapath keeps forwarding with its pinned maps and links \
                 (`lb teardown` takes it down)"
            );
            return Ok(());
        }
        info!("stopping: detaching and removing pins");
        self.dp.shutdown()
    }

    /// `lb trace`: one at a time; the answer, then lines on `stream`.
    fn start_trace(&mut self, spec: &crate::trace::Spec, stream: Option<api::Stream>) -> Response {
        let Some(stream) = stream else {
            return Response::err("trace: a streaming request needs its own connection");
        };
        if let Some(t) = &self.trace {
            return Response::err(tracing::busy(t.pid));
        }
        match tracing::Session::start(spec, stream, &self.cfg, self.ctl.programmed(), &mut self.dp)
        {
            Ok(s) => {
                self.trace = Some(s);
                Response::ok(&api::TraceStarted {
                    message: "tracing; the production build is back when this connection closes"
                        .into(),
                    max_duration_s: spec.max_duration().map(|d| d.as_secs()).unwrap_or(0),
                })
            }
            Err(e) => Response::err(format!("trace: {e:#}")),
        }
    }

    fn end_trace(&mut self, why: &str) {
        if let Some(t) = self.trace.take() {
            t.end(&mut self.dp, why);
        }
    }

    /// Tells the datapath whether to forward: only the active node of a
    /// pair does (a standalone node always does).
    fn sync_role(&mut self) {
        let Some(h) = self.ha.as_ref() else { return };
        let standby = u32::from(h.role() != ha::Role::Active);
        if self.dp.maps.standby.get(&0, 0).ok() != Some(standby)
            && let Err(e) = self.dp.maps.standby.set(0, standby, 0)
        {
            error!("ha: switching the datapath's role: {e:#}");
        }
    }

    /// The health-checker targets: every real of a farm with probes or
    /// passive health.
    fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        for (key, (id, _)) in &self.ctl.programmed().reals {
            let Some(farm) = self.cfg.serverfarms.get(&key.farm) else {
                continue;
            };
            if farm.probes.is_empty() && farm.observe.is_none() {
                continue;
            }
            out.push(Target {
                id: *id,
                name: real_name(key),
                addr: key.addr,
                port: key.port,
                probes: farm
                    .probes
                    .iter()
                    .filter_map(|p| self.cfg.probes.get(p).map(|cfg| (p.clone(), cfg.clone())))
                    .collect(),
                // As the real is now: an adopted real that was serving
                // keeps serving until its probes say otherwise.
                init_up: farm.probes.is_empty()
                    || self
                        .ctl
                        .overlay()
                        .health
                        .get(key)
                        .copied()
                        .unwrap_or(farm.init_state == InitState::Up),
            });
        }
        out
    }

    fn key_of(&self, id: u32) -> Option<RealKey> {
        self.ctl
            .programmed()
            .reals
            .iter()
            .find(|(_, (rid, _))| *rid == id)
            .map(|(k, _)| k.clone())
    }

    /// A probe or passive-health verdict: reprogram the real, then apply its
    /// farm's fail action to its flows if it went down.
    fn on_transition(&mut self, t: Transition) {
        let Some(key) = self.key_of(t.id) else { return };
        if let Err(e) = self.ctl.set_health(&key, t.up, &mut self.dp.maps) {
            error!("{}: applying health verdict: {e:#}", t.name);
            return;
        }
        let mut keys = self.follow(&key, t.up);
        keys.push(key);
        if !t.up {
            self.fail_action(&keys);
        }
    }

    /// `purge` is the one fail action with work outside the datapath:
    /// resetting idle clients and removing the flows now. (`reassign` and the
    /// RST to active clients happen at each flow's next packet.)
    fn fail_action(&mut self, keys: &[RealKey]) {
        let ids: HashSet<u32> = keys
            .iter()
            .filter_map(|k| self.ctl.programmed().reals.get(k))
            .filter(|(_, r)| {
                r.failaction == FAIL_PURGE && matches!(r.state, REAL_DOWN | REAL_DISABLED)
            })
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return;
        }
        // Off the loop: finding a real's flows reads the whole table, which
        // takes seconds with millions of flows (the datapath has already
        // stopped forwarding them: this is the proactive resets and the
        // tidying).
        let pin_dir = self.cfg.bpf.pin_dir.clone();
        let (resets, done) = (self.resets.clone(), self.done.clone());
        tokio::task::spawn_blocking(move || {
            let purge = datapath::open_flows(&pin_dir)
                .and_then(|mut flows| flowtable::purge_reals(&mut flows, &ids, resets.as_deref()));
            let _ = done.send(Done::Purge(purge));
        });
    }

    /// `lb flows clear`, off the loop: with millions of flows it reads the
    /// table for seconds. The operator's command waits for it; the loop
    /// does not.
    fn clear_flows(&mut self, filter: flowtable::Filter, reply: oneshot::Sender<Response>) {
        let pin_dir = self.cfg.bpf.pin_dir.clone();
        let done = self.done.clone();
        tokio::task::spawn_blocking(move || {
            let cleared = flowtable::Tables::open(&pin_dir)
                .and_then(|mut t| t.clear(&filter, datapath::now_ns()));
            let _ = done.send(Done::Clear(cleared, reply));
        });
    }

    /// Applies what work done off the loop found.
    fn finished(&mut self, done: Done) {
        match done {
            Done::Purge(p) => self.purged(p),
            Done::Clear(Ok(c), reply) => {
                if let Err(e) = self.dp.maps.add_expired(&c.uncounted) {
                    warn!("active flow counts: {e:#}");
                }
                info!("flows clear: removed {} flows", c.flows);
                let _ = reply.send(Response::ok(&api::Cleared {
                    cleared: c.flows as u64,
                }));
            }
            Done::Clear(Err(e), reply) => {
                let _ = reply.send(Response::err(format!("{e:#}")));
            }
        }
    }

    /// A purge started by `fail_action` finished.
    fn purged(&mut self, purge: Result<flowtable::Purge>) {
        match purge {
            Ok(p) => {
                if p.flows > 0 {
                    info!(
                        "purge: removed {} flows, reset {} clients",
                        p.flows, p.resets
                    );
                }
                if let Err(e) = self.dp.maps.add_expired(&p.uncounted) {
                    warn!("active flow counts: {e:#}");
                }
            }
            Err(e) => warn!("purge: {e:#}"),
        }
    }

    /// A connection failure the datapath saw. `observe: { errors: N }` marks
    /// the real down after N in a row (a success in between resets the run).
    fn on_event(&mut self, ev: Event) {
        let Some(key) = self.key_of(ev.real_id) else {
            return;
        };
        let Some(observe) = self
            .cfg
            .serverfarms
            .get(&key.farm)
            .and_then(|f| f.observe.clone())
        else {
            return;
        };
        let what = match ev.kind {
            EV_SYN_RST => "syn answered by rst",
            EV_SYN_RETRANSMIT => "syn retransmitted unanswered",
            EV_ICMP_UNREACH => "icmp unreachable",
            _ => "connection failure",
        };
        let ok_now = self
            .dp
            .maps
            .real_counters(ev.real_id)
            .map(|c| c.conn_ok)
            .unwrap_or(0);
        let p = self.passive.entry(ev.real_id).or_default();
        if p.conn_ok != ok_now {
            p.failures = 0;
            p.conn_ok = ok_now;
        }
        p.failures += 1;
        let failures = p.failures;
        if failures < observe.errors || self.checker.is_up(ev.real_id) == Some(false) {
            return;
        }
        p.failures = 0;
        let hold = observe.hold.unwrap_or(DEFAULT_HOLD);
        self.checker.hold_down(
            ev.real_id,
            hold,
            format!(
                "passive: {what} ({failures}/{} in a row), held {hold:?}",
                observe.errors
            ),
        );
    }

    /// Re-reads the config file and applies the difference. A bad file is
    /// refused with its errors and the running config stays in force.
    fn reload(&mut self) -> Result<String> {
        let result = (|| {
            let mut cfg = Config::from_file(&self.path).map_err(|e| anyhow!("{e}"))?;
            host_rules(&cfg, &self.path, Some(&self.cfg))?;
            for (what, changed) in [
                ("interfaces", cfg.interfaces != self.cfg.interfaces),
                ("xdp_mode", cfg.xdp_mode != self.cfg.xdp_mode),
                ("bpf", cfg.bpf != self.cfg.bpf),
                ("api", cfg.api != self.cfg.api),
                ("metrics", cfg.metrics != self.cfg.metrics),
                ("ha", cfg.ha != self.cfg.ha),
                ("cluster", cfg.cluster != self.cfg.cluster),
            ] {
                if changed {
                    warn!("reload: `{what}` changed; it takes effect at the next restart");
                }
            }
            // Until then the running values stay, so that the sweep, purges
            // and `lb flows` keep reading the pin dir the datapath is in.
            cfg.interfaces.clone_from(&self.cfg.interfaces);
            cfg.xdp_mode = self.cfg.xdp_mode;
            cfg.bpf.clone_from(&self.cfg.bpf);
            cfg.api.clone_from(&self.cfg.api);
            cfg.metrics.clone_from(&self.cfg.metrics);
            cfg.ha.clone_from(&self.cfg.ha);
            cfg.cluster.clone_from(&self.cfg.cluster);
            let ch = self.ctl.apply(&cfg, &mut self.dp.maps)?;
            self.cfg = cfg;
            self.checker.set_targets(self.targets());
            let downs = self.sync_tracks();
            self.fail_action(&downs);
            if let Some(h) = self.ha.as_mut() {
                h.set_programmed(self.ctl.programmed());
            }
            if let Some(c) = self.cluster.as_mut() {
                c.node.set_programmed(self.ctl.programmed());
                c.announce(self.ctl.programmed());
            }
            // Flows of removed VIPs go now, not at the next tick.
            self.sweep_now();
            Ok(format!(
                "reloaded {}: vips +{:?} -{:?}, reals +{} -{}, {} map writes",
                self.path.display(),
                ch.vips_added,
                ch.vips_removed,
                ch.reals_added,
                ch.reals_removed,
                ch.writes
            ))
        })();
        match &result {
            Ok(msg) => info!("{msg}"),
            Err(e) => error!("reload refused, running config unchanged: {e:#}"),
        }
        result
    }
}

/// Work done off the agent's loop, for the loop to apply.
enum Done {
    /// A purge started by `fail_action`.
    Purge(Result<flowtable::Purge>),
    /// `lb flows clear`, and where its answer goes.
    Clear(Result<flowtable::Cleared>, oneshot::Sender<Response>),
}

/// The result of a task running off the loop, if there is one (`select!`
/// polls this forever when there is none).
async fn finished<T>(
    task: Option<&mut tokio::task::JoinHandle<T>>,
) -> std::result::Result<T, tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

fn real_name(key: &RealKey) -> String {
    format!("{}/{}", key.farm, key.endpoint())
}
