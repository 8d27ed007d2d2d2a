//! `cargo xtask setup|build|test|demo|install|bench|fuzz`: the project's own set-up and
//! entry points. Every command that needs tools runs `setup` first, which is
//! idempotent and fast when everything is present.
mod bench;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "lb's build, test and demo tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (Debian packages, the eBPF toolchain, bpf-linker).
    Setup,
    /// Set up, then build lb (release).
    Build,
    /// Set up, build, and run every test: lint, unit, datapath fixtures, end to end (needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run lb on a demo topology of network namespaces.
    Demo,
    /// Build and install lb: /usr/local/sbin/lb, a systemd unit, and an
    /// example /etc/lb/lb.yaml (never over an existing one). DESTDIR stages
    /// the files under another root.
    Install,
    /// Set up, build, and run the benchmarks (as root); rewrites BENCHMARKS.md
    /// and docs/bench-e2e.svg. Never part of `test`.
    Bench {
        /// A smoke run: fewer packets, one short round; writes its report
        /// under target/bench/ instead.
        #[arg(long)]
        quick: bool,
        /// Measure nothing: write the report again from the last full
        /// run's raw lines in target/bench/.
        #[arg(long, conflicts_with = "quick")]
        report: bool,
    },
    /// Run one fuzz target (lb_userspace::fuzzing) under libFuzzer with
    /// cargo-fuzz and the nightly toolchain (installed if missing); what it
    /// finds grows fuzz/corpus/TARGET, crashes land in fuzz/artifacts/.
    Fuzz {
        /// config | ha_datagrams | api_request | trace_record
        #[arg(value_parser = ["config", "ha_datagrams", "api_request", "trace_record"])]
        target: String,
        /// Seconds to run.
        #[arg(long, default_value_t = 60)]
        time: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.cmd {
        Cmd::Setup => setup(&root),
        Cmd::Build => {
            setup(&root)?;
            cargo(&["build", "--release", "-p", "lb-userspace"])
        }
        Cmd::Test { args } => {
            setup(&root)?;
            require_root(
                "the datapath and end-to-end tests load XDP programs and make network namespaces",
            )?;
            step("format", || cargo(&["fmt", "--all", "--", "--check"]))?;
            step("clippy", || {
                cargo(&[
                    "clippy",
                    "--workspace",
                    "--exclude",
                    "lb-ebpf",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ])
            })?;
            step("clippy (eBPF)", clippy_ebpf)?;
            // The end-to-end tests run the real `lb` binary; `cargo test`
            // alone does not build another package's binaries.
            step("build lb", || cargo(&["build", "-p", "lb-userspace"]))?;
            // SAFETY: single-threaded here; children inherit it.
            unsafe { std::env::set_var("LB_BIN", target_dir(&root).join("debug/lb")) };
            // Integration tests share the machine's two cores and make
            // namespaces with real traffic: one at a time keeps them honest.
            let mut test = vec!["test", "--workspace", "--exclude", "lb-ebpf", "--"];
            test.extend(args.iter().map(String::as_str));
            test.extend(["--test-threads=1"]);
            step("tests", || cargo(&test))
        }
        Cmd::Install => {
            setup(&root)?;
            cargo(&["build", "--release", "-p", "lb-userspace"])?;
            install(
                &root,
                &std::env::var("DESTDIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| "/".into()),
            )
        }
        Cmd::Bench { quick, report } => bench::run(&root, quick, report),
        Cmd::Fuzz { target, time } => fuzz(&root, &target, time),
        Cmd::Demo => {
            setup(&root)?;
            require_root("the demo makes network namespaces and attaches XDP")?;
            cargo(&["build", "--release", "-p", "lb-userspace", "-p", "lb-tests"])?;
            let target = target_dir(&root);
            run(Command::new(target.join("release/lb-demo"))
                .env("LB_BIN", target.join("release/lb"))
                .env("LB_TESTSRV_BIN", target.join("release/lb-testsrv")))
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn setup(root: &Path) -> Result<()> {
    run(Command::new("bash").arg(root.join("scripts/setup.sh")))
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("run as root: {why}");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("==> {name}");
    f().with_context(|| format!("step `{name}` failed"))
}

/// `cargo xtask fuzz`: cargo-fuzz needs nightly (for the sanitizer and
/// coverage flags); the datapath is not built (AYA_BUILD_SKIP), since no
/// target loads it.
fn fuzz(root: &Path, target: &str, secs: u64) -> Result<()> {
    let has = |args: &[&str]| {
        Command::new("rustup")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has(&["run", "nightly", "rustc", "--version"]) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let fuzz_installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !fuzz_installed {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let corpus = format!("fuzz/corpus/{target}");
    let max = format!("-max_total_time={secs}");
    run(Command::new("cargo")
        .current_dir(root)
        .env("AYA_BUILD_SKIP", "1")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .args(["+nightly", "fuzz", "run", target, &corpus, "--", &max]))
}

fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(args))
}

/// Clippy on the kernel crate with its own toolchain and target, for the
/// production build, the trace build (`--features trace`) and the bench's
/// (`--features bench`).
fn clippy_ebpf() -> Result<()> {
    for features in [
        &[][..],
        &["--features", "trace"][..],
        &["--features", "bench"][..],
    ] {
        run(Command::new("cargo")
            .current_dir("lb-ebpf")
            .env("RUSTC_BOOTSTRAP", "1")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .args([
                "+lb-bpf",
                "clippy",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--target-dir",
                "../target/ebpf-clippy",
            ])
            .args(features)
            .args(["--", "-D", "warnings"]))?;
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn install(root: &Path, dest: &Path) -> Result<()> {
    let put = |from: PathBuf, to: &str, mode: u32, overwrite: bool| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let to = dest.join(to.trim_start_matches('/'));
        if !overwrite && to.exists() {
            eprintln!(
                "kept {} (exists); the example is at {}",
                to.display(),
                from.display()
            );
            return Ok(());
        }
        std::fs::create_dir_all(to.parent().expect("has a parent"))?;
        std::fs::copy(&from, &to)
            .with_context(|| format!("{} -> {}", from.display(), to.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))?;
        eprintln!("installed {}", to.display());
        Ok(())
    };
    put(
        target_dir(root).join("release/lb"),
        "/usr/local/sbin/lb",
        0o755,
        true,
    )?;
    put(
        root.join("scripts/lb.service"),
        "/etc/systemd/system/lb.service",
        0o644,
        true,
    )?;
    put(
        root.join("scripts/lb.example.yaml"),
        "/etc/lb/lb.yaml",
        0o644,
        false,
    )?;
    put(
        root.join("README.md"),
        "/usr/local/share/doc/lb/README.md",
        0o644,
        true,
    )?;
    if dest == Path::new("/") {
        let _ = Command::new("systemctl").arg("daemon-reload").status();
        eprintln!("next: edit /etc/lb/lb.yaml, `lb check`, then `systemctl enable --now lb`");
    }
    Ok(())
}
