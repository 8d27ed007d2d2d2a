//! lb-bench's output: one measurement per line on stdout,
//! `section<TAB>row<TAB>column<TAB>value`, in the order measured.
//! `cargo xtask bench` (xtask/src/bench) reads these and writes the report;
//! progress goes to stderr.
use std::{
    fmt::Display,
    io::Write,
    time::{Duration, Instant},
};

pub fn emit(section: &str, row: &str, col: &str, value: impl Display) {
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let line = format!(
        "{}\t{}\t{}\t{}\n",
        clean(section),
        clean(row),
        clean(col),
        clean(&value.to_string())
    );
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .expect("writing results to stdout");
}

pub fn progress(msg: impl Display) {
    eprintln!("lb-bench: {msg}");
}

/// A section's time bound: every load loop checks it, so a run that goes
/// wrong stops on its own instead of spinning.
#[derive(Clone, Copy)]
pub struct Deadline {
    at: Instant,
    what: &'static str,
}

impl Deadline {
    pub fn new(what: &'static str, budget: Duration) -> Self {
        Deadline {
            at: Instant::now() + budget,
            what,
        }
    }

    pub fn check(&self) {
        assert!(
            Instant::now() < self.at,
            "{} ran past its time bound; stopping",
            self.what
        );
    }
}
