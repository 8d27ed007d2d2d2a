//! The agent's side of `lb trace`: load the trace build beside the running
//! datapath (sharing its pinned maps, so every flow keeps its state), swap
//! it into the pinned links, stream its records to the one tracing client,
//! and swap the production build back when the trace ends: the client
//! leaves (Ctrl-C, kill -9), `--count` is reached, `--max-duration` passes
//! (enforced here, not by the client), or the agent stops. An agent that
//! dies meanwhile leaves the trace build running until the next agent
//! starts, which attaches its production build as every start does.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use log::{info, warn};
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};

use crate::{
    api::Stream,
    config::Config,
    control::Programmed,
    datapath::{self, Build, Datapath},
    trace::{End, Event, Line, Names, Records, Spec},
};

/// How often the agent checks whether a trace should end.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);

/// A trace in progress.
pub struct Session {
    /// The trace build, loaded and running on every link.
    dp: Datapath,
    pub pid: Option<u32>,
    started: Instant,
    deadline: Instant,
    lines: mpsc::Sender<String>,
    /// The client asked for the end (`api::Stream::stopped`).
    stopped: Arc<std::sync::atomic::AtomicBool>,
    reader: JoinHandle<()>,
    shown: Arc<AtomicU64>,
    count: Option<u64>,
}

impl Session {
    /// Starts a trace for `stream`'s client: the filter checked, the trace
    /// build loaded and swapped in. On an error nothing has changed.
    pub fn start(
        spec: &Spec,
        stream: Stream,
        cfg: &Config,
        programmed: &Programmed,
        prod: &mut Datapath,
    ) -> Result<Session> {
        let filter = spec.filter(programmed)?;
        let max = spec.max_duration()?;
        let sizes = datapath::table_sizes(cfg.bpf.flow_table_size);
        let mut dp = Datapath::load_build(Build::Trace, &cfg.bpf.pin_dir, false, &sizes)
            .context("loading the trace build")?;
        // Loading put the trace build's IPv6 programs in place: from here
        // on, any failure swaps the production build back.
        let started = (|| -> Result<_> {
            dp.set_trace_filter(&filter)?;
            let records = Records::open(&mut dp)?;
            dp.take_over()?;
            Ok(records)
        })();
        let records = match started {
            Ok(v) => v,
            Err(e) => {
                if let Err(e) = prod.take_over() {
                    warn!("trace: swapping the production build back: {e:#}");
                }
                return Err(e);
            }
        };
        let names = Names::new(programmed, &cfg.interface_names());
        let shown = Arc::new(AtomicU64::new(0));
        let reader = tokio::spawn(read(
            records,
            names,
            stream.lines.clone(),
            shown.clone(),
            spec.count,
        ));
        info!(
            "trace started for pid {:?} ({spec:?}); the trace build runs for at most {max:?}",
            stream.pid
        );
        let now = Instant::now();
        Ok(Session {
            dp,
            pid: stream.pid,
            started: now,
            deadline: now + max,
            lines: stream.lines,
            stopped: stream.stopped,
            reader,
            shown,
            count: spec.count,
        })
    }

    /// Why the trace should end now, if it should.
    pub fn due(&self) -> Option<&'static str> {
        if self.lines.is_closed() {
            Some("client gone")
        } else if self.stopped.load(Ordering::SeqCst) {
            Some("stopped by the client")
        } else if self
            .count
            .is_some_and(|n| self.shown.load(Ordering::Relaxed) >= n)
        {
            Some("count reached")
        } else if Instant::now() >= self.deadline {
            Some("max duration reached")
        } else if self.reader.is_finished() {
            Some("reader ended")
        } else {
            None
        }
    }

    /// Swaps the production build back in and tells the client why the
    /// trace ended.
    pub fn end(self, prod: &mut Datapath, why: &str) {
        if let Err(e) = prod.take_over() {
            // The links still run the trace build, which forwards as the
            // production one does; the next agent start replaces it.
            warn!("trace: swapping the production build back: {e:#}");
        }
        self.reader.abort();
        let packets = self.shown.load(Ordering::Relaxed);
        let end = Line::End(End {
            end: why.to_string(),
            packets,
        });
        if let Ok(mut s) = serde_json::to_string(&end) {
            s.push('\n');
            let _ = self.lines.try_send(s);
        }
        info!(
            "trace ended ({why}) after {:.1}s, {packets} packets; production build back in place",
            self.started.elapsed().as_secs_f64()
        );
        drop(self.dp);
    }
}

/// Reads the trace build's records as they come and sends each one, named,
/// to the client, until `count` or the client goes.
async fn read(
    records: Records,
    names: Names,
    lines: mpsc::Sender<String>,
    shown: Arc<AtomicU64>,
    count: Option<u64>,
) {
    // SAFETY: the AsyncFd owns the logger and so its ring's fd, which
    // lives exactly as long as the registration.
    let Ok(mut fd) = unsafe { AsyncFd::register(records) }
        .map_err(|e| warn!("trace: watching the log ring: {e}"))
    else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        let batch = guard.get_inner_mut().read();
        guard.clear_ready();
        for rec in batch {
            if count.is_some_and(|n| shown.load(Ordering::Relaxed) >= n) {
                return;
            }
            let line = Line::Event(Box::new(Event::new(&rec, &names)));
            let Ok(mut s) = serde_json::to_string(&line) else {
                continue;
            };
            s.push('\n');
            if lines.send(s).await.is_err() {
                return;
            }
            shown.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The refusal a second trace meets.
pub fn busy(pid: Option<u32>) -> anyhow::Error {
    match pid {
        Some(p) => anyhow!("a trace is already running (pid {p}); one at a time"),
        None => anyhow!("a trace is already running; one at a time"),
    }
}
