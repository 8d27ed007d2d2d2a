//! `lb`: the agent (`lb run`) and its command line.
use std::{
    net::{IpAddr, SocketAddr},
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
    datapath, endpoint, flowtable, teardown, top, trace,
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
        #[arg(value_parser = ["enable", "disable", "drain"])]
        action: String,
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
        #[arg(value_parser = ["status", "takeover", "release"])]
        action: String,
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Scale-out: the nodes, their sync, the BGP sessions and what this node
    /// announces (status); withdraw this node's routes (drain) or announce
    /// them again (undrain).
    Cluster {
        #[arg(value_enum)]
        action: lb_userspace::cluster::Action,
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
                    .and_then(|d| d["message"].as_str().map(String::from));
                println!("{}", msg.unwrap_or_else(|| "reloaded".into()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reals { config, farm } => {
            let rows = agent_call(
                &socket_of(cli.socket, &config),
                &api::Request::Reals { farm },
            )?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!(
                    "{}",
                    render_reals(rows.as_array().map_or(&[][..], Vec::as_slice))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Real {
            action,
            farm,
            real,
            config,
        } => {
            let data = agent_call(
                &socket_of(cli.socket, &config),
                &api::Request::Real { action, farm, real },
            )?;
            if cli.json {
                println!("{data}");
            } else {
                println!("{}", data["message"].as_str().unwrap_or("ok"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { config } => {
            let data = agent_call(&socket_of(cli.socket, &config), &api::Request::Status)?;
            print_or_json(cli.json, &data, render_status)
        }
        Cmd::Vips { config } => {
            let data = agent_call(&socket_of(cli.socket, &config), &api::Request::Vips)?;
            print_or_json(cli.json, &data, render_vips)
        }
        Cmd::Stats { config } => {
            let data = agent_call(&socket_of(cli.socket, &config), &api::Request::Stats)?;
            print_or_json(cli.json, &data, render_stats)
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
            let data = agent_call(
                &socket_of(cli.socket, &config),
                &api::Request::Ha { action },
            )?;
            print_or_json(cli.json, &data, render_ha)
        }
        Cmd::Cluster { action, config } => {
            let data = agent_call(
                &socket_of(cli.socket, &config),
                &api::Request::Cluster { action },
            )?;
            print_or_json(cli.json, &data, |d| {
                let msg = d["message"].as_str().map(|m| format!("{m}\n\n"));
                match serde_json::from_value::<lb_userspace::cluster::Status>(d.clone()) {
                    Ok(st) => format!("{}{}", msg.unwrap_or_default(), st.render()),
                    Err(e) => format!("unexpected answer from the agent ({e}): {d}\n"),
                }
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
                let data = agent_call(&socket_of(cli.socket, &config), &req)?;
                return print_or_json(cli.json, &data, |d| {
                    format!("cleared {} flows\n", d["cleared"])
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
                let n = tables.count(&filter, now)?;
                let data = serde_json::json!({ "count": n });
                return print_or_json(cli.json, &data, |_| format!("{n}\n"));
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

fn print_or_json(
    json: bool,
    data: &serde_json::Value,
    human: impl Fn(&serde_json::Value) -> String,
) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(data)?);
    } else {
        print!("{}", human(data));
    }
    Ok(ExitCode::SUCCESS)
}

/// `lb ha status|takeover|release` for people.
fn render_ha(d: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    if d.get("node_id").is_none() {
        return format!("role: {}\n{}\n", s(&d["role"]), s(&d["message"]));
    }
    let p = &d["peer"];
    let y = &d["sync"];
    let m = &d["messages"];
    let floating: Vec<String> = d["floating_ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    format!(
                        "{} on {}{}",
                        s(&f["address"]),
                        s(&f["interface"]),
                        if f["held"] == true { " (held)" } else { "" }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "role:      {} (node {}, priority {}, term {}, {}{})\n\
         peer:      {} node {} {} (priority {}, {}), heard {} ms ago\n\
         floating:  {}\n\
         sync out:  {} events queued, {} acked, {} unacked (stalled {:.0} ms), {} resends, {} bulk copies sent\n\
         sync in:   {} events, {} upserts, {} removes, {} unmatched, {} bulk copies received, last {}\n\
         messages:  {} accepted, rejected {}\n",
        s(&d["role"]),
        s(&d["node_id"]),
        s(&d["priority"]),
        s(&d["term"]),
        if d["bulk_synced"] == true {
            "synced"
        } else {
            "not synced"
        },
        if d["preempt"] == true {
            ", preempt"
        } else {
            ""
        },
        s(&p["address"]),
        s(&p["node_id"]),
        s(&p["role"]),
        s(&p["priority"]),
        if p["alive"] == true {
            "alive"
        } else {
            "silent"
        },
        p["last_heard_ms"]
            .as_f64()
            .map_or("-".into(), |v| format!("{v:.0}")),
        floating.join(", "),
        s(&y["events_queued"]),
        s(&y["events_acked"]),
        s(&y["unacked"]),
        y["stalled_ms"].as_f64().unwrap_or(0.0),
        s(&y["resends"]),
        s(&y["bulk_copies_sent"]),
        s(&y["events_received"]),
        s(&y["applied_upserts"]),
        s(&y["applied_removes"]),
        s(&y["unmatched"]),
        s(&y["bulk_copies_received"]),
        s(&y["last_bulk"]),
        s(&m["accepted"]),
        s(&m["rejected"]),
    )
}

fn render_status(d: &serde_json::Value) -> String {
    let t = &d["flow_table"];
    let h = &d["half_open_table"];
    let n = &d["new_flows"];
    // Table counts come from the agent's sweep; before its first, say so.
    let unswept = if d["swept"] == false {
        "\n             (tables not counted yet: the agent's first sweep has not run)"
    } else {
        ""
    };
    format!(
        "role:        {}\nconfig:      {}\ninterfaces:  {} (xdp_mode {})\npin_dir:     {}{}\nuptime:      {}s\nvips:        {}\nreals:       {} ({} up)\nflows:       {} ({} of {} entries, {}%)\nhalf-open:   {} ({} of {} entries, {}%){}\nnew flows:   {} created, {} assured, {} refused (table full)\nlast sweep:  {:.1}ms\n",
        d["role"].as_str().unwrap_or("-"),
        d["config"].as_str().unwrap_or("-"),
        d["interfaces"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|i| i.as_str())
                .map(|i| match d["hooks"][i].as_str() {
                    Some(hook) => format!("{i} by {hook}"),
                    None => i.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        d["xdp_mode"].as_str().unwrap_or("-"),
        d["pin_dir"].as_str().unwrap_or("-"),
        if d["adopted"] == true {
            " (adopted from a previous agent)"
        } else {
            ""
        },
        d["uptime_s"],
        d["vips"],
        d["reals"],
        d["reals_up"],
        d["flows"],
        t["entries"],
        t["capacity"],
        t["used_pct"],
        cell(&d["half_open"]),
        cell(&h["entries"]),
        cell(&h["capacity"]),
        cell(&h["used_pct"]),
        unswept,
        cell(&n["created"]),
        cell(&n["assured"]),
        cell(&n["refused"]),
        d["last_sweep_ms"].as_f64().unwrap_or(0.0),
    )
}

fn render_vips(d: &serde_json::Value) -> String {
    let rows = d.as_array().map_or(&[][..], Vec::as_slice);
    let vips: Vec<String> = rows.iter().map(endpoint_cell).collect();
    let w = flowtable::endpoint_width(vips.iter().map(String::as_str));
    let mut out = format!(
        "{:<12} {:<w$} {:<5} {:<12} {:<20} {:>7} {:>8} {:>9} {:>10} {:>10}\n",
        "NAME",
        "VIP",
        "PROTO",
        "FARM",
        "ALGORITHM",
        "REALS",
        "ACTIVE",
        "NEW",
        "PKTS_IN",
        "PKTS_OUT"
    );
    for (v, vip) in rows.iter().zip(&vips) {
        out.push_str(&format!(
            "{:<12} {:<w$} {:<5} {:<12} {:<20} {:>7} {:>8} {:>9} {:>10} {:>10}\n",
            v["name"].as_str().unwrap_or("-"),
            vip,
            v["protocol"].as_str().unwrap_or("-"),
            v["serverfarm"].as_str().unwrap_or("-"),
            v["algorithm"].as_str().unwrap_or("-"),
            format!("{}/{}", v["reals_up"], v["reals"]),
            cell(&v["active_flows"]),
            cell(&v["new_flows"]),
            cell(&v["packets_in"]),
            cell(&v["packets_out"]),
        ));
    }
    out
}

fn render_stats(d: &serde_json::Value) -> String {
    let mut out = format!("{:<24} {:>12}\n", "REASON", "PACKETS");
    if let Some(reasons) = d["reasons"].as_object() {
        for (name, n) in reasons {
            out.push_str(&format!("{name:<24} {:>12}\n", cell(n)));
        }
    }
    out.push_str(&format!(
        "\nflows {} of capacity {} entries; half-open {} of capacity {} entries; packets in {}, out {}; new flows {}\n",
        d["flows"],
        d["flow_capacity"],
        cell(&d["half_open"]),
        cell(&d["half_open_capacity"]),
        d["packets_in"],
        d["packets_out"],
        d["new_flows"]
    ));
    out
}

/// One request to the agent; its data, or its error as ours.
/// The pin directory of the agent answering on `socket`, if one does.
fn agent_pin_dir(socket: &Path) -> Option<PathBuf> {
    let status = agent_call(socket, &api::Request::Status).ok()?;
    status["pin_dir"].as_str().map(PathBuf::from)
}

fn agent_call(socket: &Path, req: &api::Request) -> Result<serde_json::Value> {
    let resp = api::call(socket, req, Duration::from_secs(10))?;
    if !resp.ok {
        bail!("{}", resp.error.unwrap_or_default());
    }
    Ok(resp.data.unwrap_or_default())
}

fn render_reals(rows: &[serde_json::Value]) -> String {
    let reals: Vec<String> = rows.iter().map(endpoint_cell).collect();
    let w = flowtable::endpoint_width(reals.iter().map(String::as_str));
    let mut out = format!(
        "{:<12} {:<w$} {:<9} {:>6} {:>6} {:>6}  {}\n",
        "FARM", "REAL", "STATE", "WEIGHT", "ACTIVE", "BACKUP", "LAST CHECK"
    );
    for (r, real) in rows.iter().zip(&reals) {
        let weight = match (r["weight"].as_u64(), r["effective_weight"].as_u64()) {
            (Some(w), Some(e)) if w != e => format!("{e}/{w}"),
            (Some(w), _) => w.to_string(),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<12} {:<w$} {:<9} {:>6} {:>6} {:>6}  {}\n",
            r["farm"].as_str().unwrap_or("-"),
            real,
            r["state"].as_str().unwrap_or("-"),
            weight,
            cell(&r["active_flows"]),
            if r["backup"].as_bool() == Some(true) {
                "yes"
            } else {
                ""
            },
            match r["tracks"].as_str() {
                Some(t) => format!("tracks {t}"),
                None => r["last_check"].as_str().unwrap_or("-").to_string(),
            },
        ));
    }
    out
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

/// A row's `address` and `port` as one endpoint cell, `[addr]:port` for
/// IPv6 (the JSON keeps the plain address).
fn endpoint_cell(row: &serde_json::Value) -> String {
    let address = row["address"].as_str().unwrap_or("-");
    match (address.parse::<IpAddr>(), row["port"].as_u64()) {
        (Ok(ip), Some(port)) if port <= u64::from(u16::MAX) => {
            SocketAddr::new(ip, port as u16).to_string()
        }
        _ => format!("{address}:{}", cell(&row["port"])),
    }
}

/// A JSON value as a table cell: numbers and strings plain, so `{:>N}`
/// pads them (serde_json's Display ignores width).
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn vips_and_reals_tables_show_ipv6_endpoints_bracketed_and_aligned() {
        let vips = json!([
            { "name": "www", "address": "198.51.100.10", "port": 80, "protocol": "tcp",
              "serverfarm": "web", "algorithm": "maglev", "reals_up": 2, "reals": 2 },
            { "name": "www6", "address": "2001:db8:ffff:ffff:ffff:ffff:ffff:10", "port": 443,
              "protocol": "tcp", "serverfarm": "web6", "algorithm": "maglev", "reals_up": 1, "reals": 2 },
        ]);
        let table = render_vips(&vips);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].contains(" 198.51.100.10:80 "), "{table}");
        assert!(
            lines[2].contains(" [2001:db8:ffff:ffff:ffff:ffff:ffff:10]:443 "),
            "{table}"
        );
        let proto = lines[0].find("PROTO").unwrap();
        assert!(
            lines.iter().skip(1).all(|l| &l[proto..proto + 3] == "tcp"),
            "{table}"
        );

        let reals = [
            json!({ "farm": "web6", "address": "2001:db8:2::11", "port": 8080, "state": "up",
                    "weight": 1, "effective_weight": 1 }),
            json!({ "farm": "web", "address": "203.0.113.11", "port": 8080, "state": "down",
                    "weight": 1, "effective_weight": 1 }),
        ];
        let table = render_reals(&reals);
        assert!(
            table.contains("web6         [2001:db8:2::11]:8080 up "),
            "{table}"
        );
        assert!(
            table.contains("web          203.0.113.11:8080     down "),
            "{table}"
        );
        // IPv4 alone: the columns as they were.
        let table = render_reals(&reals[1..]);
        assert_eq!(table.lines().next().unwrap().find("STATE"), Some(13 + 22));
    }
}
