//! `cargo xtask bench [--quick]`: runs the benchmarks and writes
//! BENCHMARKS.md and docs/bench-e2e.svg.
//!
//! The measuring is done by `lb-bench` (tests/src/bin/lb-bench.rs, code in
//! tests/src/bench/), which needs the datapath and the namespace harness;
//! this module builds it, runs its six sections as root, and turns the
//! lines they print into the report. The raw lines stay in target/bench/.
//! `--quick` is a smoke run (fewer packets, one short round) whose report
//! goes to target/bench/ so it never replaces the committed numbers.
//! `--report` measures nothing: it renders the report again from the raw
//! lines of the last full run (after a change to the report's code).
mod chart;
mod machine;
mod report;
mod report_cluster;
mod results;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use results::Results;

const SECTIONS: [&str; 6] = ["packet", "e2e", "scale", "failover", "edges", "cluster"];

pub fn run(root: &Path, quick: bool, report_only: bool) -> Result<()> {
    if report_only {
        return rerender(root);
    }
    let started = Instant::now();
    super::setup(root)?;
    super::require_root("the benchmarks load XDP programs and make network namespaces")?;
    super::cargo(&["build", "--release", "-p", "lb-userspace", "-p", "lb-tests"])?;
    let bin = super::target_dir(root).join("release");
    let out_dir = super::target_dir(root).join("bench");
    std::fs::create_dir_all(&out_dir)?;

    let mut results = Results::default();
    for section in SECTIONS {
        eprintln!("==> bench {section}");
        let mut cmd = Command::new(bin.join("lb-bench"));
        cmd.arg(section)
            .env("LB_BIN", bin.join("lb"))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        if quick {
            cmd.arg("--quick");
        }
        let out = cmd.output().context("running lb-bench")?;
        let raw = out_dir.join(format!("{section}.tsv"));
        std::fs::write(&raw, &out.stdout)?;
        if !out.status.success() {
            bail!(
                "bench section `{section}` failed ({}); nothing written. Its output so far is in {}",
                out.status,
                raw.display()
            );
        }
        results.parse(&String::from_utf8_lossy(&out.stdout));
    }

    let mut machine = machine::Machine::probe(root);
    machine.minutes = Some(started.elapsed().as_secs_f64() / 60.0);
    if !quick {
        std::fs::write(out_dir.join(RUN), machine.run_record())?;
    }
    write(root, &results, quick, &machine)
}

/// The file beside the raw lines that records the full run that measured
/// them: its commit, date and duration.
const RUN: &str = "run";

/// The report of the last full run again, from target/bench/: the machine
/// as it is now, the commit, date and duration as the run recorded them.
fn rerender(root: &Path) -> Result<()> {
    let out_dir = super::target_dir(root).join("bench");
    let mut results = Results::default();
    for section in SECTIONS {
        let raw = out_dir.join(format!("{section}.tsv"));
        let text = std::fs::read_to_string(&raw).with_context(|| {
            format!("reading {} (run `cargo xtask bench` first)", raw.display())
        })?;
        results.parse(&text);
    }
    let record = out_dir.join(RUN);
    let record = std::fs::read_to_string(&record).with_context(|| {
        format!(
            "reading {}: no record of the run that measured these lines; run `cargo xtask bench`",
            record.display()
        )
    })?;
    let mut machine = machine::Machine::probe(root);
    machine.apply_run_record(&record)?;
    write(root, &results, false, &machine)
}

/// Writes the report and its chart: BENCHMARKS.md and docs/, or under
/// target/bench/ for a quick run.
fn write(root: &Path, results: &Results, quick: bool, machine: &machine::Machine) -> Result<()> {
    let out_dir = super::target_dir(root).join("bench");
    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let (md_path, svg_path, svg_link) = if quick {
        (
            out_dir.join("BENCHMARKS.md"),
            out_dir.join("bench-e2e.svg"),
            "bench-e2e.svg",
        )
    } else {
        (
            root.join("BENCHMARKS.md"),
            root.join("docs/bench-e2e.svg"),
            "docs/bench-e2e.svg",
        )
    };
    let subtitle = format!("{command}, {}; {}", machine.date, machine.cpu);
    std::fs::create_dir_all(svg_path.parent().expect("a parent"))?;
    std::fs::write(&svg_path, chart::render(results, &subtitle))?;
    let md = report::render(results, machine, command, svg_link);
    std::fs::write(&md_path, md)?;
    eprintln!("wrote {} and {}", md_path.display(), svg_path.display());
    Ok(())
}
