//! `lb-bench`: the measurements behind `cargo xtask bench`, run as
//! root. Each section makes its own namespaces and BPF pins and removes them
//! at the end, also when it fails; all traffic stays inside them.
//!
//! ```text
//! lb-bench packet|e2e|scale|failover|edges|cluster [--quick]
//! ```
//! Prints `section<TAB>row<TAB>column<TAB>value` lines on stdout (see
//! tests/src/bench/record.rs); `cargo xtask bench` turns them into
//! BENCHMARKS.md. The code lives in tests/src/bench/.

#[path = "../bench/cluster.rs"]
mod cluster;
#[path = "../bench/e2e.rs"]
mod e2e;
#[path = "../bench/edges.rs"]
mod edges;
#[path = "../bench/failover.rs"]
mod failover;
#[path = "../bench/frame.rs"]
mod frame;
#[path = "../bench/katran.rs"]
mod katran;
#[path = "../bench/packet.rs"]
mod packet;
#[path = "../bench/record.rs"]
mod record;
#[path = "../bench/scale.rs"]
mod scale;
#[path = "../bench/testrun.rs"]
mod testrun;

const USAGE: &str = "usage: lb-bench packet|e2e|scale|failover|edges|cluster [--quick]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let section = args.iter().find(|a| !a.starts_with('-'));
    if args.iter().any(|a| a.starts_with('-') && a != "--quick") {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    lb_tests::require_root();
    match section.map(String::as_str) {
        Some("packet") => packet::run(quick),
        Some("e2e") => e2e::run(quick),
        Some("scale") => scale::run(quick),
        Some("failover") => failover::run(quick),
        Some("edges") => edges::run(quick),
        Some("cluster") => cluster::run(quick),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
