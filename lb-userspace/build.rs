//! Builds the XDP program (lb-ebpf) with the kernel-side toolchain and leaves
//! it in OUT_DIR for `include_bytes_aligned!`: the production object (`lb`)
//! and the trace build (`lb-trace`, `--features trace`, for `lb trace`).
//! Why a separate toolchain: aya-ebpf needs -Z build-std, which the Debian rustc-web toolchain (linked
//! into rustup as `lb-bpf`) allows with RUSTC_BOOTSTRAP=1.
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LB_BPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    // aya-build watches lb-ebpf only; the map types live in lb-common, and a
    // stale object with an old layout would load and misread every map.
    println!("cargo:rerun-if-changed=../lb-common");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let (out, trace_out) = (out_dir.join("lb"), out_dir.join("lb-trace"));
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // Unit tests of the agent's logic need no datapath; loading these
        // empty objects fails with a message saying so.
        for o in [&out, &trace_out] {
            if !o.exists() {
                fs::write(o, b"")?;
            }
        }
        return Ok(());
    }
    let toolchain = env::var("LB_BPF_TOOLCHAIN").unwrap_or_else(|_| "lb-bpf".to_string());
    // SAFETY: the build script is single-threaded here; the child cargo that
    // aya-build spawns inherits the variable.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../lb-ebpf");
    let root = root.to_str().expect("utf-8 path");
    // The trace build first, in an OUT_DIR of its own: aya-build names its
    // target directory and its output after the package, and one target
    // directory for two feature sets would leave one `lb` binary for both.
    let trace_dir = out_dir.join("trace");
    fs::create_dir_all(&trace_dir)?;
    // SAFETY: as above; restored before the production build.
    unsafe { env::set_var("OUT_DIR", &trace_dir) };
    let built = aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: root,
            features: &["trace"],
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    );
    // SAFETY: as above.
    unsafe { env::set_var("OUT_DIR", &out_dir) };
    built?;
    fs::copy(trace_dir.join("lb"), &trace_out)?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
