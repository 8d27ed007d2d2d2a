//! `cargo xtask bench [--quick]`: runs the benchmarks of issue 7 and writes
//! BENCHMARKS.md and docs/bench-e2e.svg.
//!
//! The measuring is done by `lb-bench` (tests/src/bin/lb-bench.rs, code in
//! tests/src/bench/), which needs the datapath and the namespace harness;
//! this module builds it, runs its five sections as root, and turns the
//! lines they print into the report. The raw lines stay in target/bench/.
//! `--quick` is a smoke run (fewer packets, one short round) whose report
//! goes to target/bench/ so it never replaces the committed numbers.
mod chart;
mod machine;
mod report;
mod results;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use results::Results;

const SECTIONS: [&str; 5] = ["packet", "e2e", "scale", "failover", "edges"];

pub fn run(root: &Path, quick: bool) -> Result<()> {
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

    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let machine = machine::Machine::probe(root);
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
    std::fs::write(&svg_path, chart::render(&results, &subtitle))?;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let md = report::render(&results, &machine, command, minutes, svg_link);
    std::fs::write(&md_path, md)?;
    eprintln!(
        "wrote {} and {} in {minutes:.1} minutes",
        md_path.display(),
        svg_path.display()
    );
    Ok(())
}
