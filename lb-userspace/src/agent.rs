//! `lb run`: load and attach the datapath, program it from the config, and
//! then serve: reloads (SIGHUP or the API), the flow sweep, a clean stop on
//! SIGTERM/SIGINT.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use log::{error, info, warn};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    api::{self, Call, Request, Response},
    config::Config,
    control::{self, Control},
    datapath::{self, Datapath},
    flowtable,
};

/// The sweep runs at least this often; slower when a sweep takes long, so a
/// huge table never keeps the agent busy more than a tenth of the time.
const SWEEP_MIN: Duration = Duration::from_secs(1);

struct Agent {
    path: PathBuf,
    cfg: Config,
    ctl: Control,
    dp: Datapath,
    last_sweep: Option<flowtable::Sweep>,
}

pub fn run(path: &Path) -> Result<()> {
    let cfg = Config::from_file(path).map_err(|e| anyhow!("{e}"))?;
    // Before touching the pins: they may belong to a live agent.
    api::ensure_no_agent(&cfg.api.socket)?;
    let mut dp = Datapath::load(&cfg.bpf.pin_dir, cfg.bpf.flow_table_size)?;
    let mut ctl = Control::new();
    // Program before attaching, so the first packet already finds the VIPs.
    let ch = ctl
        .apply(&cfg, &mut dp.maps)
        .context("programming the datapath")?;
    info!(
        "programmed {} vips, {} reals",
        ch.vips_added.len(),
        ch.reals_added
    );
    dp.attach(&cfg.interfaces, cfg.xdp_mode)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let agent = Agent {
        path: path.to_path_buf(),
        cfg,
        ctl,
        dp,
        last_sweep: None,
    };
    rt.block_on(agent.serve())
}

impl Agent {
    async fn serve(mut self) -> Result<()> {
        let (tx, mut rx) = mpsc::channel::<Call>(16);
        let socket = self.cfg.api.socket.clone();
        let api_task = api::serve(&socket, tx)?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut next_sweep = tokio::time::Instant::now() + SWEEP_MIN;
        info!(
            "lb running on {:?}; api {}",
            self.cfg.interfaces,
            socket.display()
        );
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => { let _ = self.reload(); }
                Some((req, reply)) = rx.recv() => {
                    let _ = reply.send(self.handle(req));
                }
                _ = tokio::time::sleep_until(next_sweep) => {
                    let took = self.sweep();
                    next_sweep = tokio::time::Instant::now() + SWEEP_MIN.max(took * 10);
                }
            }
        }
        info!("stopping: detaching and removing pins");
        api_task.abort();
        let _ = std::fs::remove_file(&socket);
        self.dp.shutdown()
    }

    fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Reload => match self.reload() {
                Ok(msg) => Response::ok(serde_json::json!({ "message": msg })),
                Err(e) => Response::err(format!("{e:#}")),
            },
            Request::Status => Response::ok(serde_json::json!({
                "interfaces": self.cfg.interfaces,
                "vips": self.ctl.programmed().vips.len(),
                "reals": self.ctl.programmed().reals.len(),
                "flows": self.last_sweep.as_ref().map(|s| s.flows),
            })),
        }
    }

    /// Re-reads the config file and applies the difference. A bad file is
    /// refused with its errors and the running config stays in force.
    fn reload(&mut self) -> Result<String> {
        let result = (|| {
            let cfg = Config::from_file(&self.path).map_err(|e| anyhow!("{e}"))?;
            for (what, changed) in [
                ("interfaces", cfg.interfaces != self.cfg.interfaces),
                ("xdp_mode", cfg.xdp_mode != self.cfg.xdp_mode),
                ("bpf", cfg.bpf != self.cfg.bpf),
                ("api", cfg.api != self.cfg.api),
            ] {
                if changed {
                    warn!("reload: `{what}` changed; it takes effect at the next restart");
                }
            }
            let ch = self.ctl.apply(&cfg, &mut self.dp.maps)?;
            for w in control::not_yet_applied(&cfg) {
                warn!("{w}");
            }
            self.cfg = cfg;
            // Flows of removed VIPs go now, not at the next tick.
            self.sweep();
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

    fn sweep(&mut self) -> Duration {
        let start = Instant::now();
        match flowtable::sweep(&mut self.dp.maps.flows, &self.ctl, datapath::now_ns()) {
            Ok(s) => {
                if s.expired + s.removed_vip + s.repaired > 0 {
                    info!(
                        "sweep: {} flows, {} expired, {} of removed vips, {} repaired",
                        s.flows, s.expired, s.removed_vip, s.repaired
                    );
                }
                if let Err(e) =
                    self.ctl
                        .release_unused(&s.vips_in_use, &s.reals_in_use, &mut self.dp.maps)
                {
                    warn!("releasing retired ids: {e:#}");
                }
                self.last_sweep = Some(s);
            }
            Err(e) => warn!("flow sweep failed: {e:#}"),
        }
        start.elapsed()
    }
}
