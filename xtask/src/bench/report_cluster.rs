//! Section 6 of BENCHMARKS.md: the cluster (lb-bench's cluster.rs).
use super::report::{int, median_of, wl};
use super::results::Results;

pub fn cluster(w: &mut String, r: &Results) {
    const S: &str = "cluster";
    let n = |row: &str, c: &str| r.num(S, row, c).unwrap_or(f64::NAN);
    wl(w, "## 6. Scale-out: a cluster of three nodes");
    wl(w, "");
    wl(
        w,
        &format!(
            "The topology of the cluster tests (tests/src/cluster.rs): {} lb nodes, each running \
             the BIRD it configures, peering with an FRR router (bgpd + zebra, ECMP with an L4 \
             hash, BGP hold time {} s) in front of a client; two `lb-testsrv` reals answer over a \
             multipath default route through every node; flow tables of {} entries. All of it \
             shares this machine's cores.",
            int(n("setup", "nodes")),
            int(n("setup", "bgp_hold_time_s")),
            int(n("setup", "flow_table_entries")),
        ),
    );
    wl(w, "");
    wl(w, "### A node dies and returns");
    wl(w, "");
    wl(
        w,
        "Each round a TCP echo stream (a round trip every 5 ms, one connection) runs through \
         one node, which is then killed: its agent SIGKILLed (BIRD dies with it) and its links \
         taken down. *Withdrawn* is the time until the router's route has lost the node; the \
         *death gap* is the stream's longest silence after it (the reals' return path to the \
         dead node fails only with their ARP entry). The node then returns: links up, agent \
         started on its pinned datapath, copies of its peers' flows taken (*synced*), then \
         announced and routed through again (*announced*), both counted from its links coming \
         up; the *return gap* is the stream's longest silence while ECMP moves flows back.",
    );
    wl(w, "");
    wl(
        w,
        "| round | withdrawn (ms) | death gap (ms) | synced (ms) | announced (ms) | return gap (ms) |",
    );
    wl(w, "|---|---:|---:|---:|---:|---:|");
    let rounds: Vec<&str> = r
        .rows(S)
        .into_iter()
        .filter(|row| row.starts_with("round "))
        .collect();
    for row in &rounds {
        let (death, ret) = match r.get(S, row, "stream_broke") {
            Some(e) => (format!("**broke**: {e}"), "-".to_string()),
            None => (
                format!("{:.0}", n(row, "death_gap_ms")),
                format!("{:.0}", n(row, "return_gap_ms")),
            ),
        };
        wl(
            w,
            &format!(
                "| {row} | {:.0} | {death} | {:.0} | {:.0} | {ret} |",
                n(row, "withdrawn_ms"),
                n(row, "synced_ms"),
                n(row, "announced_ms"),
            ),
        );
    }
    let med = |c| median_of(r, S, &rounds, c);
    wl(
        w,
        &format!(
            "| **median** | **{:.0}** | **{:.0}** | **{:.0}** | **{:.0}** | **{:.0}** |",
            med("withdrawn_ms"),
            med("death_gap_ms"),
            med("synced_ms"),
            med("announced_ms"),
            med("return_gap_ms"),
        ),
    );
    wl(w, "");
    let frozen = "node frozen (SIGSTOP), links up";
    wl(
        w,
        &format!(
            "A node whose agent and BIRD are frozen (SIGSTOP) with its links up closes no \
             session: the router drops it when the hold time runs out, {} ms after the freeze.",
            r.get(S, frozen, "withdrawn_ms").unwrap_or("-")
        ),
    );
    wl(w, "");
    wl(w, "### Sync to two peers");
    wl(w, "");
    wl(
        w,
        "A burst of new flows is made on node 1 by running SYNs through its attached XDP \
         program with BPF_PROG_TEST_RUN (nothing is transmitted), and each peer's pinned \
         tables are polled for them: the whole path from node 1's `SYNC` ring through its \
         agent and one authenticated stream per peer to each peer's table.",
    );
    wl(w, "");
    wl(
        w,
        "| burst | injected / s | replicated / s | last flow's lag (ms) | on the peer |",
    );
    wl(w, "|---|---:|---:|---:|---:|");
    for row in r
        .rows(S)
        .into_iter()
        .filter(|row| row.starts_with("burst "))
    {
        wl(
            w,
            &format!(
                "| {row} | {} | {} | {} | {} / {} |",
                int(n(row, "injected_per_s")),
                int(n(row, "replicated_per_s")),
                r.get(S, row, "last_lag_ms").unwrap_or("-"),
                int(n(row, "on_peer")),
                int(n(row, "flows")),
            ),
        );
    }
    wl(w, "");
    wl(w, "### New connections per second, three nodes and one");
    wl(w, "");
    let row = "new connections per second (4 client threads)";
    wl(
        w,
        &format!(
            "Four client threads open a connection, make one HTTP request and close it, for a \
             fixed time, through all three nodes and then through one (the other two drained): \
             {} and {} connections per second, a ratio of {} ({} failed). The client, the \
             router, every node and both reals run on this machine's two cores, so three nodes \
             cost more CPU for the same work here; the figure shows that spreading over nodes \
             works, not what three machines would add.",
            int(n(row, "three_nodes")),
            int(n(row, "one_node")),
            r.get(S, row, "ratio").unwrap_or("-"),
            int(n(row, "failed")),
        ),
    );
    wl(w, "");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw lines of a `lb-bench cluster --quick` run.
    const RAW: &str = "cluster\tsetup\tnodes\t3\n\
cluster\tsetup\tbgp_hold_time_s\t3\n\
cluster\tround 1\twithdrawn_ms\t68.4\n\
cluster\tround 1\tagent_started_ms\t3901.4\n\
cluster\tround 1\tsynced_ms\t3907.2\n\
cluster\tround 1\tannounced_ms\t4958.7\n\
cluster\tround 1\tdeath_gap_ms\t212.1\n\
cluster\tround 1\treturn_gap_ms\t11.3\n\
cluster\tround 1\tkilled_to_returned_ms\t11043.6\n\
cluster\tnode frozen (SIGSTOP), links up\twithdrawn_ms\t2479.4\n\
cluster\tnode frozen (SIGSTOP), links up\tback_ms\t4286.6\n\
cluster\tburst of 5000 new flows, to node 2\tflows\t5000\n\
cluster\tburst of 5000 new flows, to node 2\tinjected_per_s\t161741\n\
cluster\tburst of 5000 new flows, to node 2\treplicated_per_s\t112948\n\
cluster\tburst of 5000 new flows, to node 2\tlast_lag_ms\t13.4\n\
cluster\tburst of 5000 new flows, to node 2\ton_peer\t5000\n\
cluster\tburst of 5000 new flows, to node 3\tflows\t5000\n\
cluster\tburst of 5000 new flows, to node 3\tinjected_per_s\t161741\n\
cluster\tburst of 5000 new flows, to node 3\treplicated_per_s\t88294\n\
cluster\tburst of 5000 new flows, to node 3\tlast_lag_ms\t25.7\n\
cluster\tburst of 5000 new flows, to node 3\ton_peer\t5000\n\
cluster\tnew connections per second (4 client threads)\tthree_nodes\t4995\n\
cluster\tnew connections per second (4 client threads)\tone_node\t5474\n\
cluster\tnew connections per second (4 client threads)\tratio\t0.91\n\
cluster\tnew connections per second (4 client threads)\tfailed\t0\n\
";

    #[test]
    fn the_cluster_section_renders_every_measurement() {
        let mut r = Results::default();
        r.parse(RAW);
        let mut w = String::new();
        cluster(&mut w, &r);
        for want in [
            "| round 1 | 68 | 212 | 3907 | 4959 | 11 |",
            "the hold time runs out, 2479.4 ms after the freeze",
            "| burst of 5000 new flows, to node 3 | 161,741 | 88,294 | 25.7 | 5,000 / 5,000 |",
            "4,995 and 5,474 connections per second, a ratio of 0.91 (0 failed)",
        ] {
            assert!(w.contains(want), "no {want:?} in:\n{w}");
        }
    }
}
