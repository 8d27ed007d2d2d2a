//! The config reference, docs/config.md, against the config's serde types:
//! - every whole config in it (a ```yaml block with `serverfarms:`) parses;
//! - every key the types have is named in it, in backticks. The keys are
//!   read off the types themselves: a config that sets every key (`FULL`)
//!   is parsed and serialized back, and serde writes each field of each
//!   struct, defaults included, so a field added to the types shows up
//!   here whether or not anyone remembered the docs;
//! - every key is refused when misspelt (`deny_unknown_fields` on every
//!   struct), as the reference promises.

use std::collections::BTreeMap;

use lb_userspace::config::Config;
use serde_yaml::{Mapping, Value};

const DOC: &str = include_str!("../../docs/config.md");

/// Every key of the config, each section present (an absent `ha`, `sticky`
/// or `observe` would serialize without its keys).
const FULL: &str = r#"
interfaces:
  - eth0
  - { name: eth1, hook: xdp }
  - { name: veth1, hook: tc }
xdp_mode: auto
probes:
  web-http:
    type: http
    path: /healthz
    expect: 200-399
    method: GET
    host: www.example.com
    body: "ok"
    port: 8081
    interval: 2s
    fast_interval: 500ms
    down_interval: 5s
    timeout: 1s
    rise: 2
    fall: 3
serverfarms:
  web:
    algorithm: weighted-round-robin
    failaction: purge
    probes: [web-http]
    observe: { errors: 3, hold: 10s }
    slow_start: 30s
    init_state: down
    reals:
      - { address: 10.0.2.11, port: 8080, weight: 10, max_conns: 5000, backup: false, state: up }
      - { address: 10.0.2.12, port: 8080, weight: 20, state: drain }
      - { address: 10.0.2.20, port: 8080, backup: true }
  api:
    algorithm: least-conn
    failaction: reassign
    init_state: up
    reals:
      - { address: 10.0.2.11, port: 9000, track: web/10.0.2.11:8080 }
  web6:
    algorithm: maglev
    reals:
      - { address: "2001:db8:2::11" }
      - { address: "2001:db8:2::12" }
vips:
  www:
    address: 192.0.2.10
    port: 80
    protocol: tcp
    serverfarm: web
    sticky: { mode: source-ip, timeout: 10m }
    timeouts: { syn: 10s, established: 1h, fin: 30s, closed: 10s, udp: 60s }
    no_real: reset
  api:
    address: 192.0.2.10
    port: 9000
    protocol: tcp
    serverfarm: api
    no_real: drop
  www6:
    address: "2001:db8::10"
    port: 80
    protocol: tcp
    serverfarm: web6
    sticky: { mode: source-ip, timeout: 10m, ipv6_prefix: 64 }
ha:
  node_id: 1
  priority: 200
  preempt: true
  listen: 10.0.9.1:7400
  peer: 10.0.9.2:7400
  key_file: /etc/lb/ha.key
  heartbeat: 100ms
  dead_interval: 300ms
  floating_ips:
    - { address: 192.0.2.1/24, interface: eth0 }
    - { address: "2001:db8::1/64", interface: eth0 }
cluster:
  node_id: 1
  listen: 10.0.9.1:7400
  peers: [10.0.9.2:7400, 10.0.9.3:7400]
  key_file: /etc/lb/cluster.key
  drain_timeout: 30s
  heartbeat: 200ms
  bgp:
    local_as: 65001
    router_id: 10.0.9.1
    hold_time: 3s
    min_up: 1
    neighbors:
      - { address: 10.0.8.1, remote_as: 65000 }
api: { socket: /run/lb/lb.sock }
metrics: { listen: 127.0.0.1:9100 }
bpf: { pin_dir: /sys/fs/bpf/lb, flow_table_size: 1048576 }
"#;

/// The sections whose keys are names the operator chooses, not keys of
/// the types.
const NAMED: [&str; 3] = ["probes", "serverfarms", "vips"];

/// The ```yaml blocks of `doc`: (line of their first line, text).
fn yaml_blocks(doc: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        let fence = line.trim();
        if let Some((_, text)) = open.as_mut() {
            if fence == "```" {
                blocks.extend(open.take());
            } else {
                text.push_str(line);
                text.push('\n');
            }
        } else if fence == "```yaml" {
            open = Some((i + 2, String::new()));
        }
    }
    assert!(
        open.is_none(),
        "docs/config.md: the ```yaml block at line {} is never closed",
        open.map_or(0, |o| o.0)
    );
    blocks
}

/// Whether the mapping at `path` holds names (`probes.NAME`, ...).
fn holds_names(path: &[String]) -> bool {
    matches!(path, [top] if NAMED.contains(&top.as_str()))
}

/// Every key of the types in `v`, each with the first path it was seen at
/// (for messages), in walk order.
fn keys(v: &Value, path: &mut Vec<String>, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Mapping(m) => {
            let names = holds_names(path);
            for (k, child) in m {
                let k = k.as_str().unwrap_or_else(|| {
                    panic!("a key that is not a string at {}: {k:?}", path.join("."))
                });
                path.push(k.to_owned());
                if !names {
                    out.entry(k.to_owned()).or_insert_with(|| path.join("."));
                }
                keys(child, path, out);
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let last = path.pop().unwrap_or_default();
                path.push(format!("{last}[{i}]"));
                keys(item, path, out);
                path.pop();
                path.push(last);
            }
        }
        Value::Tagged(t) => keys(&t.value, path, out),
        _ => {}
    }
}

fn keys_of(v: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    keys(v, &mut Vec::new(), &mut out);
    out
}

/// FULL read by the types alone: it sets `ha` and `cluster` together,
/// which the rules refuse (they are exclusive).
fn full() -> Config {
    serde_yaml::from_str(FULL).unwrap_or_else(|e| panic!("the test's FULL config:\n{e}"))
}

#[test]
fn every_whole_config_in_the_reference_parses() {
    let whole: Vec<(usize, String)> = yaml_blocks(DOC)
        .into_iter()
        .filter(|(_, text)| text.contains("serverfarms:"))
        .collect();
    assert!(
        !whole.is_empty(),
        "docs/config.md shows no whole config (a ```yaml block with `serverfarms:`)"
    );
    for (line, text) in whole {
        if let Err(e) = Config::parse(&text, "docs/config.md") {
            panic!(
                "the ```yaml block at docs/config.md line {line} does not parse \
                 (the positions below count from the block's first line):\n{e}"
            );
        }
    }
}

#[test]
fn every_key_of_the_types_is_in_the_reference() {
    let serialized = serde_yaml::to_value(full()).expect("Config serializes");
    let found = keys_of(&serialized);
    // The walk saw the whole tree: keys of every optional section and of
    // the interface's mapping form.
    for key in [
        "interfaces",
        "hook",
        "method",
        "observe",
        "hold",
        "track",
        "sticky",
        "ipv6_prefix",
        "closed",
        "no_real",
        "dead_interval",
        "floating_ips",
        "interface",
        "flow_table_size",
        "drain_timeout",
        "neighbors",
        "min_up",
    ] {
        assert!(
            found.contains_key(key),
            "the serialized FULL config has no `{key}`: {found:?}"
        );
    }
    let missing: Vec<String> = found
        .iter()
        .filter(|(key, _)| !DOC.contains(&format!("`{key}`")))
        .map(|(key, path)| format!("`{key}` (at {path})"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/config.md does not name these config keys in backticks; document them:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_full_config_sets_every_key_the_types_have() {
    // Else a new key's own keys (a new optional section, say) would stay
    // out of the walk above: add the key to FULL, and to docs/config.md.
    let written: Value = serde_yaml::from_str(FULL).expect("FULL is YAML");
    let written = keys_of(&written);
    let serialized = keys_of(&serde_yaml::to_value(full()).expect("Config serializes"));
    let unset: Vec<&String> = serialized
        .keys()
        .filter(|k| !written.contains_key(*k))
        .collect();
    assert!(
        unset.is_empty(),
        "the types have keys the test's FULL config does not set: {unset:?}"
    );
}

/// `v` with its `target`-th key of the types (in walk order) renamed to
/// `KEY_x`; `seen` counts keys as the walk goes. Returns the renamed key.
fn misspell(
    v: &mut Value,
    path: &mut Vec<String>,
    target: usize,
    seen: &mut usize,
) -> Option<String> {
    match v {
        Value::Mapping(m) => {
            let names = holds_names(path);
            let mut renamed = None;
            let mut out = Mapping::new();
            for (k, mut child) in std::mem::take(m) {
                let key = k.as_str().expect("string keys").to_owned();
                let mut new_key = k;
                if renamed.is_none() {
                    if !names {
                        if *seen == target {
                            new_key = Value::String(format!("{key}_x"));
                            renamed = Some(key.clone());
                        }
                        *seen += 1;
                    }
                    if renamed.is_none() {
                        path.push(key);
                        renamed = misspell(&mut child, path, target, seen);
                        path.pop();
                    }
                }
                out.insert(new_key, child);
            }
            *m = out;
            renamed
        }
        Value::Sequence(items) => items
            .iter_mut()
            .find_map(|item| misspell(item, path, target, seen)),
        _ => None,
    }
}

#[test]
fn every_key_is_refused_when_misspelt() {
    let written: Value = serde_yaml::from_str(FULL).expect("FULL is YAML");
    let mut target = 0;
    loop {
        let mut v = written.clone();
        let Some(key) = misspell(&mut v, &mut Vec::new(), target, &mut 0) else {
            break;
        };
        let text = serde_yaml::to_string(&v).expect("YAML");
        match Config::parse(&text, "misspelt") {
            Ok(_) => panic!("`{key}_x` (key {target} of FULL misspelt) was accepted:\n{text}"),
            Err(e) => assert!(
                e.to_string().contains("unknown field"),
                "`{key}_x` was refused, but not as an unknown key:\n{e}"
            ),
        }
        target += 1;
    }
    assert!(target > 50, "only {target} keys were misspelt");
}
