//! Builds the datapath (lb-ebpf) with the kernel-side toolchain into
//! OUT_DIR: the production object (`lb`, for `include_bytes_aligned!`), the
//! trace build (`lb-trace`, `--features trace`, for `lb trace`) and the
//! benchmark's object (`lb-bench`, `--features bench`: the datapath and the
//! floor programs `cargo xtask bench` times it against; read from its path,
//! never part of the agent).
//! Why a separate toolchain: aya-ebpf needs -Z build-std, which the Debian
//! rustc-web toolchain (linked into rustup as `lb-bpf`) allows with
//! RUSTC_BOOTSTRAP=1.
use std::{env, fs, path::Path};

/// (features, the object's name in OUT_DIR).
const BUILDS: [(&[&str], &str); 3] = [
    (&["trace"], "lb-trace"),
    (&["bench"], "lb-bench"),
    (&[], "lb"),
];

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LB_BPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    // aya-build watches lb-ebpf only; the map types live in lb-common, and a
    // stale object with an old layout would load and misread every map.
    println!("cargo:rerun-if-changed=../lb-common");
    let out_dir = env::var("OUT_DIR")?;
    let out_dir = Path::new(&out_dir);
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // Unit tests of the agent's logic need no datapath; loading these
        // empty objects fails with a message saying so.
        for (_, name) in BUILDS {
            let o = out_dir.join(name);
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
    let root = Path::new(&env::var("CARGO_MANIFEST_DIR")?).join("../lb-ebpf");
    let root = root.to_str().expect("utf-8 path");
    for (features, name) in BUILDS {
        // Each feature set in an OUT_DIR of its own: aya-build names its
        // target directory and its output after the package, and one target
        // directory for two feature sets would leave one `lb` binary for
        // both. The production build keeps OUT_DIR itself (its cache).
        let dir = if features.is_empty() {
            out_dir.to_path_buf()
        } else {
            out_dir.join(features[0])
        };
        fs::create_dir_all(&dir)?;
        // SAFETY: as above; restored after the loop.
        unsafe { env::set_var("OUT_DIR", &dir) };
        let built = aya_build::build_ebpf(
            [aya_build::Package {
                name: "lb-ebpf",
                root_dir: root,
                features,
                ..Default::default()
            }],
            aya_build::Toolchain::Custom(&toolchain),
        );
        // SAFETY: as above.
        unsafe { env::set_var("OUT_DIR", out_dir) };
        built?;
        if dir != out_dir {
            fs::copy(dir.join("lb"), out_dir.join(name))?;
        }
    }
    Ok(())
}
