//! What the benchmarks ran on, for the report's header.
use std::{path::Path, process::Command};

pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
    pub date: String,
    pub commit: String,
    pub tools: Vec<String>,
    /// How long the measuring took (a full run records it, `run_record`).
    pub minutes: Option<f64>,
}

impl Machine {
    pub fn probe(root: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|v| v.split_once(':'))
            .map_or("unknown".into(), |(_, v)| v.trim().to_string());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".into(), |s| s.trim().to_string());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / (1024.0 * 1024.0));
        let date = first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
        let mut commit = first_line(Command::new("git").current_dir(root).args([
            "rev-parse",
            "--short",
            "HEAD",
        ]));
        let dirty = Command::new("git")
            .current_dir(root)
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        if dirty {
            commit += " with uncommitted changes";
        }
        let tools = [
            ("haproxy", &["-v"][..]),
            ("wrk", &["-v"][..]),
            ("iperf3", &["--version"][..]),
            ("nft", &["--version"][..]),
        ]
        .iter()
        .map(|(tool, args)| first_line(Command::new(tool).args(*args)))
        .filter(|v| !v.is_empty())
        // "iperf 3.12 (cJSON 1.7.15)" -> "iperf 3.12": name and version only.
        .map(|v| {
            let end = [" - ", " [", " ("]
                .iter()
                .filter_map(|sep| v.find(sep))
                .min()
                .unwrap_or(v.len());
            v[..end].to_string()
        })
        .collect();
        Machine {
            cpu,
            cores,
            kernel,
            memory_gib,
            date,
            commit,
            tools,
            minutes: None,
        }
    }

    /// What a full run records beside its raw lines, for `--report`: its
    /// commit, date and duration, a `key<TAB>value` line each.
    pub fn run_record(&self) -> String {
        let minutes = self.minutes.map(|m| format!("{m:.3}")).unwrap_or_default();
        format!(
            "commit\t{}\ndate\t{}\nminutes\t{minutes}\n",
            self.commit, self.date
        )
    }

    /// Takes the commit, date and duration from a `run_record`.
    pub fn apply_run_record(&mut self, record: &str) -> anyhow::Result<()> {
        for line in record.lines() {
            match line.split_once('\t') {
                Some(("commit", v)) => self.commit = v.to_string(),
                Some(("date", v)) => self.date = v.to_string(),
                Some(("minutes", v)) => self.minutes = v.parse().ok(),
                _ => anyhow::bail!("a run record line not understood: {line:?}"),
            }
        }
        Ok(())
    }
}

/// The first line a command prints (stdout, else stderr: `wrk -v` writes
/// there and exits 1), or "" if it cannot run.
fn first_line(cmd: &mut Command) -> String {
    let Ok(out) = cmd.output() else {
        return String::new();
    };
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_record_reads_back() {
        let mut m = Machine::probe(Path::new("."));
        (m.commit, m.date, m.minutes) =
            ("abc1234".into(), "2026-12-05 08:41 UTC".into(), Some(19.5));
        let record = m.run_record();
        let mut other = Machine::probe(Path::new("."));
        other.apply_run_record(&record).unwrap();
        assert_eq!(
            (other.commit.as_str(), other.date.as_str(), other.minutes),
            ("abc1234", "2026-12-05 08:41 UTC", Some(19.5))
        );
        assert!(other.apply_run_record("colour\tblue\n").is_err());
    }
}
