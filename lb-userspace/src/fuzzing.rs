//! Fuzz targets: the inputs lb takes from outside, each a function of bytes
//! that must not panic and must keep the property its doc states. `fuzz/`
//! runs them under libFuzzer (`cargo xtask fuzz TARGET --time N`); the unit
//! tests below replay every file of `fuzz/corpus/TARGET` (the seeds and
//! whatever a fuzz run found and was kept), so `cargo xtask test` runs them
//! all.
use crate::{
    api::Request,
    config::Config,
    control::{Control, NullWriter},
    trace,
};

/// A fuzz target: bytes in, a panic if a property breaks.
pub type Target = fn(&[u8]);

/// The targets by name, as `cargo xtask fuzz` and the corpora call them.
pub const TARGETS: [(&str, Target); 4] = [
    ("config", config),
    ("ha_datagrams", ha_datagrams),
    ("api_request", api_request),
    ("trace_record", trace_record),
];

/// The YAML loader, then the control plane: a config `lb check` accepts
/// programs the datapath (into a map writer that keeps nothing) without a
/// panic, and resolves every `track:`.
pub fn config(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse(src, "fuzz.yaml") else {
        return;
    };
    for (tracker, _) in cfg.tracks() {
        let (farm, i) = tracker;
        let t = cfg.serverfarms[&farm].reals[i].track.as_deref();
        assert!(t.is_some_and(|t| cfg.tracked(t).is_ok()));
    }
    let _ = Control::new().apply(&cfg, &mut NullWriter);
}

/// The HA receiver and wire decoder past the MAC (see
/// `ha::wire::fuzz_datagrams`, which reaches the private decoder).
pub fn ha_datagrams(data: &[u8]) {
    crate::ha::wire::fuzz_datagrams(data);
}

/// An API request line: decoded or refused, and a decoded one reads back
/// the same after encoding.
pub fn api_request(data: &[u8]) {
    let Ok(req) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    let again = serde_json::to_vec(&req).expect("a request encodes");
    let back: Request = serde_json::from_slice(&again).expect("an encoded request decodes");
    assert_eq!(back, req);
}

/// A trace record as aya-log hands it over (hex): decoded or not, named and
/// rendered without a panic, and the filter parts an operator types.
pub fn trace_record(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(rec) = trace::decode(&text) {
        let e = trace::Event::new(&rec, &trace::Names::default());
        let _ = trace::render(&e);
    }
    let _ = trace::endpoint(&text);
    let _ = trace::reasons(&text);
    let _ = crate::endpoint::parse(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of every corpus through its target.
    #[test]
    fn corpora_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let mut n = 0;
            for entry in
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            {
                let path = entry.expect("a corpus entry").path();
                let data = std::fs::read(&path).expect("a corpus file");
                let caught = std::panic::catch_unwind(|| target(&data));
                assert!(caught.is_ok(), "{name}: {} fails", path.display());
                n += 1;
            }
            assert!(n > 0, "{name}: an empty corpus");
            println!("{name}: {n} inputs replayed");
        }
    }
}
