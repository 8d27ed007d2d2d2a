//! Builds the XDP program (lb-ebpf) with the kernel-side toolchain and leaves
//! it in OUT_DIR for `include_bytes_aligned!`. Why a separate toolchain:
//! aya-ebpf needs -Z build-std, which the Debian rustc-web toolchain (linked
//! into rustup as `lb-bpf`) allows with RUSTC_BOOTSTRAP=1.
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LB_BPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    // aya-build watches lb-ebpf only; the map types live in lb-common, and a
    // stale object with an old layout would load and misread every map.
    println!("cargo:rerun-if-changed=../lb-common");
    let out = PathBuf::from(env::var("OUT_DIR")?).join("lb");
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // Unit tests of the agent's logic need no datapath; loading this
        // empty object fails with a message saying so.
        if !out.exists() {
            fs::write(&out, b"")?;
        }
        return Ok(());
    }
    let toolchain = env::var("LB_BPF_TOOLCHAIN").unwrap_or_else(|_| "lb-bpf".to_string());
    // SAFETY: the build script is single-threaded here; the child cargo that
    // aya-build spawns inherits the variable.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../lb-ebpf");
    let root = root.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
