//! `lb`: the agent (`lb run`) and its command line.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use lb_userspace::{
    agent, api,
    config::Config,
    control::{Control, NullWriter},
    datapath, endpoint, flowtable, render, teardown, top, trace,
};

const DEFAULT_CONFIG: &str = "/etc/lb/lb.yaml";

#[derive(Parser)]
#[command(name = "lb", version, about = "XDP L4 load-balancing switch")]
struct Cli {
    /// The agent's API socket (default: api.socket from the config).
    #[arg(long, env = "LB_SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent in the foreground (logs to stderr).
    Run {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Start from a clean datapath instead of adopting the flows and
        /// XDP links a previous agent left pinned.
        #[arg(long)]
        reset: bool,
    },
    /// Take the datapath down: detach from every interface and remove the
    /// pins (stopping the agent never does). A running agent is asked to do
    /// it and exit (an HA node hands its role to the peer first).
    Teardown {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Tear down this pin directory instead of the config's bpf.pin_dir.
        #[arg(long)]
        pin_dir: Option<PathBuf>,
    },
    /// Validate a config; errors carry file:line:column. Exit 1 on error.
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask the running agent to re-read its config (same as SIGHUP).
    Reload {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Reals with their state, weight, active flows and last check.
    Reals {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        farm: Option<String>,
    },
    /// Set a real's admin state: enable, disable (down: the fail action
    /// applies) or drain (no new flows; existing ones finish).
    Real {
        #[arg(value_enum)]
        action: api::RealAction,
        farm: String,
        /// ADDR or ADDR:PORT
        real: String,
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Node, role, interfaces, table use.
    Status {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Virtual servers with their farms, reals up, flows and traffic.
    Vips {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Datapath verdicts and drops by reason, and totals.
    Stats {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// The live view: VIPs and reals busiest first with their rates over
    /// the last 10 s, states, checks, table fill and recent drops; redrawn
    /// every second, `q` quits.
    Top {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print one frame and exit (with --json: the agent's live view).
        #[arg(long)]
        once: bool,
    },
    /// Stateful failover: status, takeover, release.
    Ha {
        #[arg(value_enum)]
        action: api::HaAction,
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Scale-out: the nodes, their sync, the BGP sessions and what this node
    /// announces (status); withdraw this node's routes (drain) or announce
    /// them again (undrain).
    Cluster {
        #[arg(value_enum)]
        action: api::ClusterAction,
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// What the datapath does with each matching packet, as it happens:
    /// the 5-tuple received and sent, VIP, real and why, TCP state, verdict
    /// and reason. The agent swaps a trace build of the datapath in for the
    /// trace (flows keep their state) and the production build back when it
    /// ends: Ctrl-C, --count, --max-duration, or this command dying.
    Trace {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// VIP name (from the config) or ADDR[:PORT] ([IPV6]:PORT).
        #[arg(long)]
        vip: Option<String>,
        /// ADDR[:PORT] ([IPV6]:PORT)
        #[arg(long)]
        client: Option<String>,
        /// ADDR[:PORT] ([IPV6]:PORT)
        #[arg(long)]
        real: Option<String>,
        /// Reasons as `lb stats` names them, `drops` or `passes`,
        /// comma-separated.
        #[arg(long)]
        reason: Option<String>,
        /// Stop after this many packets.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long (the agent enforces it; at most 1h).
        #[arg(long, default_value = "60s", value_parser = lb_userspace::config::duration::parse_duration)]
        max_duration: Duration,
    },
    /// List the flow table, half-open flows included (read from the pinned
    /// maps; works while the agent is down).
    Flows {
        /// `clear`: remove the matching flows (through the agent).
        #[arg(value_parser = ["clear"])]
        action: Option<String>,
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Read this pin directory instead of the config's bpf.pin_dir.
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// VIP name (from the config) or ADDR[:PORT] ([IPV6]:PORT).
        #[arg(long)]
        vip: Option<String>,
        /// ADDR[:PORT] ([IPV6]:PORT)
        #[arg(long)]
        real: Option<String>,
        /// ADDR[:PORT] ([IPV6]:PORT)
        #[arg(long)]
        client: Option<String>,
        /// syn | established | fin | closed | udp
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        /// Print only the number of matching flows.
        #[arg(long)]
        count: bool,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<Config> {
    Config::from_file(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Run { config, reset } => agent::run(&config, reset).map(|_| ExitCode::SUCCESS),
        Cmd::Teardown { config, pin_dir } => {
            // The paths alone if the file no longer validates: a broken
            // config must not keep a datapath up.
            let (socket, cfg_pins) = Config::paths(&config);
            let socket = cli.socket.unwrap_or(socket);
            let pin_dir = pin_dir.unwrap_or(cfg_pins);
            let ha = match Config::from_file(&config) {
                Ok(cfg) => cfg.ha,
                Err(e) if config.exists() => {
                    eprintln!("lb: {e}\nlb: going on with the pin dir and socket alone");
                    None
                }
                Err(_) => None,
            };
            println!("{}", teardown::run(&socket, &pin_dir, ha.as_ref())?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { config } => {
            let cfg = match Config::from_file(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            // And what this host says of it.
            let src = std::fs::read_to_string(&config).unwrap_or_default();
            let host = cfg.host_issues(&src, &config.display().to_string(), None);
            for w in &host.warnings {
                eprintln!("warning: {w}");
            }
            if let Some(refusal) = host.refusal() {
                eprintln!("{refusal}");
                return Ok(ExitCode::FAILURE);
            }
            // What the datapath cannot take is an error too.
            if let Err(e) = Control::new().apply(&cfg, &mut NullWriter) {
                eprintln!("{}: {e:#}", config.display());
                return Ok(ExitCode::FAILURE);
            }
            let reals: usize = cfg.serverfarms.values().map(|f| f.reals.len()).sum();
            println!(
                "{}: ok ({} vips, {} serverfarms, {} reals)",
                config.display(),
                cfg.vips.len(),
                cfg.serverfarms.len(),
                reals
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reload { config } => {
            // The agent judges the file; the CLI only needs to find the agent.
            let socket = cli.socket.unwrap_or_else(|| Config::paths(&config).0);
            let resp = api::call(&socket, &api::Request::Reload, Duration::from_secs(30))?;
            if cli.json {
                println!("{}", serde_json::to_string(&resp)?);
            }
            if !resp.ok {
                bail!(
                    "reload refused, running config unchanged:\n{}",
                    resp.error.unwrap_or_default()
                );
            }
            if !cli.json {
                let msg = resp
                    .data
                    .and_then(|d| serde_json::from_value::<api::Message>(d).ok());
                println!("{}", msg.map_or_else(|| "reloaded".into(), |m| m.message));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reals { config, farm } => {
            let rows: Vec<api::RealRow> = ask(
                &socket_of(cli.socket, &config),
                &api::Request::Reals { farm },
            )?;
            print_or_json(cli.json, &rows, |r| render::reals(r))
        }
        Cmd::Real {
            action,
            farm,
            real,
            config,
        } => {
            let done: api::Message = ask(
                &socket_of(cli.socket, &config),
                &api::Request::Real { action, farm, real },
            )?;
            print_or_json(cli.json, &done, |d| format!("{}\n", d.message))
        }
        Cmd::Status { config } => {
            let status: api::Status = ask(&socket_of(cli.socket, &config), &api::Request::Status)?;
            print_or_json(cli.json, &status, render::status)
        }
        Cmd::Vips { config } => {
            let rows: Vec<api::VipRow> = ask(&socket_of(cli.socket, &config), &api::Request::Vips)?;
            print_or_json(cli.json, &rows, |r| render::vips(r))
        }
        Cmd::Stats { config } => {
            let stats: api::Stats = ask(&socket_of(cli.socket, &config), &api::Request::Stats)?;
            print_or_json(cli.json, &stats, render::stats)
        }
        Cmd::Top { config, once } => {
            let socket = socket_of(cli.socket, &config);
            if once || cli.json {
                top::once(&socket, cli.json)?;
            } else {
                top::run(&socket)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Trace {
            config,
            vip,
            client,
            real,
            reason,
            count,
            max_duration,
        } => {
            let spec = trace::Spec {
                vip,
                client,
                real,
                reason,
                count,
                max_duration_s: Some(max_duration.as_secs().max(1)),
            };
            let end = trace::follow(&socket_of(cli.socket, &config), &spec, cli.json)?;
            eprintln!("lb: trace ended ({}): {} packets", end.end, end.packets);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ha { action, config } => {
            let answer: api::HaAnswer = ask(
                &socket_of(cli.socket, &config),
                &api::Request::Ha { action },
            )?;
            print_or_json(cli.json, &answer, render::ha)
        }
        Cmd::Cluster { action, config } => {
            let answer: api::ClusterAnswer = ask(
                &socket_of(cli.socket, &config),
                &api::Request::Cluster { action },
            )?;
            print_or_json(cli.json, &answer, |a| {
                let msg = a.message.as_ref().map(|m| format!("{m}\n\n"));
                format!("{}{}", msg.unwrap_or_default(), render::cluster(&a.status))
            })
        }
        Cmd::Flows {
            action,
            config,
            pin_dir,
            vip,
            real,
            client,
            state,
            limit,
            count,
        } => {
            // A VIP name resolves to its ADDR:PORT. Names never parse as
            // addresses (they cannot hold `:`; a dotted quad is taken as
            // the address it reads as).
            let vip = match vip {
                Some(v) if endpoint::parse(&v).is_none() => {
                    let cfg = load(&config)?;
                    let Some(entry) = cfg.vips.get(&v) else {
                        bail!("no VIP named {v} in {}", config.display());
                    };
                    Some(SocketAddr::new(entry.address, entry.port).to_string())
                }
                v => v,
            };
            if action.as_deref() == Some("clear") {
                // Through the agent: it keeps the active-flow counts exact.
                let req = api::Request::FlowsClear {
                    vip,
                    real,
                    client,
                    state,
                };
                let done: api::Cleared = ask(&socket_of(cli.socket, &config), &req)?;
                return print_or_json(cli.json, &done, |d| {
                    format!("cleared {} flows\n", d.cleared)
                });
            }
            let filter = flowtable::Filter {
                vip,
                real,
                client,
                state,
            };
            // Read from the pinned maps, the flow table and the half-open
            // one: works while the agent is down, and even when the config
            // file is broken. Whose pins: the running agent's, which may
            // not be the config file's (another `--socket`, or a file
            // edited since it started); the file's when no agent answers.
            let pin_dir = pin_dir
                .or_else(|| agent_pin_dir(&socket_of(cli.socket.clone(), &config)))
                .unwrap_or_else(|| Config::paths(&config).1);
            let tables = flowtable::Tables::open(&pin_dir)?;
            let now = datapath::now_ns();
            if count {
                let count = api::FlowCount {
                    count: tables.count(&filter, now)? as u64,
                };
                return print_or_json(cli.json, &count, |c| format!("{}\n", c.count));
            }
            let rows = tables.list(&filter, limit, now)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", flowtable::render(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn socket_of(socket: Option<PathBuf>, config: &Path) -> PathBuf {
    socket.unwrap_or_else(|| Config::paths(config).0)
}

fn print_or_json<T: serde::Serialize>(
    json: bool,
    data: &T,
    human: impl Fn(&T) -> String,
) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(data)?);
    } else {
        print!("{}", human(data));
    }
    Ok(ExitCode::SUCCESS)
}

/// The pin directory of the agent answering on `socket`, if one does.
fn agent_pin_dir(socket: &Path) -> Option<PathBuf> {
    ask::<api::Status>(socket, &api::Request::Status)
        .ok()
        .map(|s| s.pin_dir)
}

/// One request to the agent: its answer, or its error as ours.
fn ask<T: serde::de::DeserializeOwned>(socket: &Path, req: &api::Request) -> Result<T> {
    api::ask(socket, req, Duration::from_secs(10))
}

/// Logs go to stderr through tracing: `RUST_LOG` filters (default info),
/// `LB_LOG_FORMAT=json` gives one JSON object per line for log shippers.
/// The `log` records of lb's modules are carried over by tracing-log.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("LB_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
