//! The BGP daemon a cluster node announces its VIPs through: BIRD 2, which
//! the agent starts, configures and watches itself, so the operator writes
//! no daemon config (why BIRD: docs/decisions.md).
//!
//! - The config is a function of `cluster.bgp` and the prefixes to announce
//!   ([`render`]): each VIP a blackhole route in a static protocol, exported
//!   to every neighbour of its family. A change rewrites the file and asks
//!   BIRD to `configure`, which adds or withdraws routes without touching
//!   the sessions.
//! - BIRD runs in the foreground as the agent's child, and dies with it
//!   (`PR_SET_PDEATHSIG`): a node whose agent is killed stops announcing at
//!   once instead of attracting traffic nobody programs any more. It is
//!   restarted if it exits on its own.
//! - Its control socket answers `show protocols` once a second, for the
//!   session states `lb cluster status` shows.
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use log::{info, warn};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::api::BgpSession;
use crate::config::Bgp;

/// How often the session states are read.
const POLL: Duration = Duration::from_secs(1);
/// How long BIRD may take to answer one command.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// Between a BIRD that exited and the next start.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// What the daemon reports, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub sessions: Vec<BgpSession>,
    /// The prefixes BIRD last accepted a config with.
    pub announced: BTreeSet<IpAddr>,
    /// Times BIRD was (re)started.
    pub starts: u64,
    /// The last error talking to it, if the last exchange failed.
    pub error: Option<String>,
}

/// BIRD's config for `bgp` announcing `prefixes` (host routes).
pub fn render(bgp: &Bgp, prefixes: &BTreeSet<IpAddr>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by lb for this cluster node; rewritten on every change.\n\
         # Edit cluster.bgp in lb's config instead.\n\
         router id {};\n\
         log stderr all;\n\
         timeformat protocol iso long;\n\
         protocol device {{}}",
        bgp.router_id
    );
    for (name, v6) in [("vips4", false), ("vips6", true)] {
        let _ = write!(
            s,
            "protocol static {name} {{ {};",
            if v6 { "ipv6" } else { "ipv4" }
        );
        for p in prefixes.iter().filter(|p| p.is_ipv6() == v6) {
            let _ = write!(s, " route {p}/{} blackhole;", if v6 { 128 } else { 32 });
        }
        s.push_str(" }\n");
    }
    let hold = bgp.hold_time.as_secs();
    // Keepalives at a third of the hold time, as RFC 4271 suggests. BIRD's
    // own defaults wait 5 s before the first connect and up to minutes after
    // an error; here a session is tried after 1 s and retried every second,
    // so a returning node peers (and is announced) within about a second.
    for (i, n) in bgp.neighbors.iter().enumerate() {
        let channel = if n.address.is_ipv6() {
            "ipv6 { import none; export where proto = \"vips6\"; };"
        } else {
            "ipv4 { import none; export where proto = \"vips4\"; };"
        };
        let _ = writeln!(
            s,
            "protocol bgp n{} {{\n  local as {};\n  neighbor {} as {};\n  \
             hold time {hold}; keepalive time {}; connect delay time 1; connect retry time 1; error wait time 1, 5;\n  \
             {channel}\n}}",
            i + 1,
            bgp.local_as,
            n.address,
            n.remote_as,
            (hold / 3).max(1),
        );
    }
    s
}

/// The sessions in a `show protocols` answer, named `n1`, `n2`… as
/// [`render`] names them.
fn parse_protocols(answer: &[String], bgp: &Bgp) -> Vec<BgpSession> {
    let mut out: Vec<BgpSession> = bgp
        .neighbors
        .iter()
        .map(|n| BgpSession {
            neighbor: n.address,
            state: "unknown".into(),
        })
        .collect();
    for line in answer {
        // `1002-name …` first, ` name …` after: a code and a dash, or a space.
        let coded = line.len() > 5 && line.as_bytes()[..4].iter().all(u8::is_ascii_digit);
        let body = if coded { &line[5..] } else { line.as_str() };
        let t: Vec<&str> = body.split_whitespace().collect();
        if t.len() < 4 || t[1] != "BGP" {
            continue;
        }
        let Some(i) = t[0]
            .strip_prefix('n')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
        else {
            continue;
        };
        if let Some(s) = out.get_mut(i) {
            // name proto table state date time info…
            let info = t.get(6..).map(|i| i.join(" ")).unwrap_or_default();
            s.state = if info.is_empty() {
                t[3].to_string()
            } else if t[3] == "down" {
                format!("down: {info}")
            } else {
                info
            };
        }
    }
    out
}

/// One command over the control socket; the answer's lines, or BIRD's
/// error (codes 8000 and up, 9000 and up).
async fn ask(ctl: &Path, command: &str) -> Result<Vec<String>> {
    let talk = async {
        let stream = UnixStream::connect(ctl)
            .await
            .with_context(|| format!("connecting to {}", ctl.display()))?;
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        // The greeting: `0001 BIRD 2.0.12 ready.`
        lines.next_line().await?;
        w.write_all(format!("{command}\n").as_bytes()).await?;
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await? {
            let last = line.len() >= 5
                && line.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                && line.as_bytes()[4] == b' ';
            if last && (line.starts_with('8') || line.starts_with('9')) {
                bail!("BIRD refused `{command}`: {}", line[5..].trim());
            }
            out.push(line);
            if last {
                return Ok(out);
            }
        }
        bail!("BIRD closed the control socket mid-answer")
    };
    tokio::time::timeout(ANSWER_WITHIN, talk)
        .await
        .map_err(|_| anyhow!("BIRD did not answer `{command}` within {ANSWER_WITHIN:?}"))?
}

/// Starts BIRD on `conf`, as a child that dies with this process.
fn spawn(conf: &Path, ctl: &Path) -> Result<Child> {
    let mut cmd = Command::new("bird");
    cmd.arg("-f")
        .arg("-c")
        .arg(conf)
        .arg("-s")
        .arg(ctl)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec. The parent that counts is the thread that forks: the
    // agent's runtime runs on the main thread, which lives until exit.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context(
        "starting bird (BIRD 2; `cargo xtask setup` or `apt-get install bird2` installs it)",
    )?;
    if let Some(err) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                info!("bgp: {l}");
            }
        });
    }
    Ok(child)
}

/// Runs BIRD for as long as the returned handle lives: (re)starts it,
/// applies every new config sent on `conf`, and reports on `report`.
/// `dir` holds its config and control socket.
pub fn supervise(
    dir: PathBuf,
    bgp: Bgp,
    mut want: watch::Receiver<BTreeSet<IpAddr>>,
    report: watch::Sender<Report>,
) -> Result<tokio::task::JoinHandle<()>> {
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (conf, ctl) = (dir.join("bird.conf"), dir.join("bird.ctl"));
    let write = {
        let (bgp, conf, tmp) = (bgp.clone(), conf.clone(), dir.join("bird.conf.new"));
        move |prefixes: &BTreeSet<IpAddr>| -> Result<()> {
            std::fs::write(&tmp, render(&bgp, prefixes))?;
            std::fs::rename(&tmp, &conf).with_context(|| format!("writing {}", conf.display()))
        }
    };
    // Written before the first start, so a bad config is this call's error.
    write(&want.borrow_and_update())?;
    Ok(tokio::spawn(async move {
        let mut starts = 0;
        loop {
            let announced = want.borrow_and_update().clone();
            if let Err(e) = write(&announced) {
                warn!("bgp: {e:#}");
            }
            let _ = std::fs::remove_file(&ctl);
            let mut child = match spawn(&conf, &ctl) {
                Ok(c) => c,
                Err(e) => {
                    warn!("bgp: {e:#}");
                    report.send_modify(|r| r.error = Some(format!("{e:#}")));
                    tokio::time::sleep(RESTART_AFTER * 5).await;
                    continue;
                }
            };
            starts += 1;
            info!(
                "bgp: bird started (pid {:?}), announcing {announced:?}",
                child.id()
            );
            report.send_modify(|r| {
                r.starts = starts;
                r.announced = announced.clone();
            });
            let mut poll = tokio::time::interval(POLL);
            let started = Instant::now();
            loop {
                tokio::select! {
                    status = child.wait() => {
                        warn!("bgp: bird exited ({status:?}); starting it again in {RESTART_AFTER:?}");
                        break;
                    }
                    changed = want.changed() => {
                        if changed.is_err() {
                            // The agent is going: BIRD goes with the handle.
                            return;
                        }
                        let next = want.borrow_and_update().clone();
                        let r = match write(&next) {
                            Ok(()) => ask(&ctl, "configure").await.map(|_| ()),
                            Err(e) => Err(e),
                        };
                        match r {
                            Ok(()) => {
                                info!("bgp: announcing {next:?}");
                                report.send_modify(|r| { r.announced = next; r.error = None; });
                            }
                            Err(e) => {
                                warn!("bgp: reconfiguring: {e:#}");
                                report.send_modify(|r| r.error = Some(format!("{e:#}")));
                            }
                        }
                    }
                    _ = poll.tick() => {
                        match ask(&ctl, "show protocols").await {
                            Ok(lines) => report.send_modify(|r| {
                                r.sessions = parse_protocols(&lines, &bgp);
                                r.error = None;
                            }),
                            // BIRD opens its socket a moment after it starts.
                            Err(_) if started.elapsed() < POLL * 2 => {}
                            Err(e) => report.send_modify(|r| r.error = Some(format!("{e:#}"))),
                        }
                    }
                }
            }
            report.send_modify(|r| {
                for s in &mut r.sessions {
                    s.state = "down: bird not running".into();
                }
            });
            tokio::time::sleep(RESTART_AFTER).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Neighbor;

    fn bgp() -> Bgp {
        Bgp {
            local_as: 65001,
            router_id: "10.0.9.1".parse().unwrap(),
            hold_time: Duration::from_secs(3),
            neighbors: vec![
                Neighbor {
                    address: "10.0.8.1".parse().unwrap(),
                    remote_as: 65000,
                },
                Neighbor {
                    address: "2001:db8:8::1".parse().unwrap(),
                    remote_as: 65000,
                },
            ],
            min_up: 1,
        }
    }

    #[test]
    fn each_family_goes_to_its_neighbours() {
        let p: BTreeSet<IpAddr> = ["198.51.100.10", "2001:db8::10"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let c = render(&bgp(), &p);
        assert!(c.contains("protocol static vips4 { ipv4; route 198.51.100.10/32 blackhole; }"));
        assert!(c.contains("protocol static vips6 { ipv6; route 2001:db8::10/128 blackhole; }"));
        assert!(c.contains("neighbor 10.0.8.1 as 65000;"));
        assert!(c.contains("hold time 3; keepalive time 1;"));
        let n2 = &c[c.find("protocol bgp n2").unwrap()..];
        assert!(n2.contains("export where proto = \"vips6\""), "{n2}");
        // Nothing announced: both statics empty, sessions stay up.
        let empty = render(&bgp(), &BTreeSet::new());
        assert!(empty.contains("protocol static vips4 { ipv4; }"), "{empty}");
    }

    #[test]
    fn session_states_from_show_protocols() {
        let answer: Vec<String> = [
            "2002-Name       Proto      Table      State  Since         Info",
            "1002-device1    Device     ---        up     2026-12-06 00:12:12  ",
            " vips4      Static     master4    up     2026-12-06 00:12:12  ",
            " n1         BGP        ---        up     2026-12-06 00:12:14  Established   ",
            " n2         BGP        ---        down   2026-12-06 00:12:12  Error: Invalid next hop",
            "0000 ",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let s = parse_protocols(&answer, &bgp());
        assert_eq!(s[0].state, "Established");
        assert_eq!(s[1].state, "down: Error: Invalid next hop");
    }
}
