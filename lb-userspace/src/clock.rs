//! Measures the datapath's clock (lb-ebpf/src/clock.rs): how many ns of
//! CLOCK_MONOTONIC one jiffy is on this kernel (its HZ) and where jiffies
//! start, so the program can read the time as `jiffies * tick_ns + offset_ns`
//! with one inlined load instead of a helper call.
//!
//! The kernel advances jiffies in whole ticks of CLOCK_MONOTONIC
//! (`tick_do_update_jiffies64`), so `jiffies * TICK_NSEC` plus a constant
//! fixed at boot is the time of the last tick. The coarse clock
//! (`bpf_ktime_get_coarse_ns`) is the time of the last timekeeping update,
//! which the tick also makes. Measured on the bench VM (HZ 250), the two
//! agree to the ns, except that for part of each tick the coarse clock is
//! already a tick ahead, and they drift apart by about 1 ns every 4 ticks
//! (NTP's adjustment of CLOCK_MONOTONIC, 60 ppb there: a tick in about three
//! days). So: read both together (`lb_clock`) over 16 ticks, take HZ from
//! the slope and the constant as the least `coarse - jiffies * tick` (the
//! datapath's time then never runs ahead of the coarse clock), and check at
//! every sweep that they still agree to three ticks, measuring again if not.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{TestRun, TestRunOptions, Xdp},
};
use lb_common::{Clock, ClockSample};
use log::{info, warn};

use crate::datapath;

/// The sampling program's name in the object.
pub const PROGRAM: &str = "lb_clock";

/// The HZ a kernel can be built with (kernel/Kconfig.hz).
const HZ: [u64; 4] = [100, 250, 300, 1000];

/// Jiffies the measurement spans: enough that a tick's error in the coarse
/// clock at either end moves the slope by under 7%, and the nearest two HZ
/// (250 and 300) are 17% apart.
const SPAN_TICKS: u64 = 16;

/// How far the coarse clock and jiffies may disagree, in ticks, before the
/// clock is measured again (see `fit`).
const STRAY_TICKS: u64 = 3;

/// How long the measurement may take before it gives up (HZ 100 needs
/// 160 ms).
const SPAN_LIMIT: Duration = Duration::from_secs(1);

/// The clock of a loaded object: its `CLOCK` (what the datapath reads) and
/// `CLOCK_SAMPLE` (what `lb_clock` writes), and the value written.
pub struct DatapathClock {
    clock: Array<MapData, Clock>,
    samples: Array<MapData, ClockSample>,
    current: Clock,
}

fn program(ebpf: &Ebpf) -> Result<&Xdp> {
    Ok(ebpf
        .program(PROGRAM)
        .ok_or_else(|| anyhow!("{PROGRAM} missing from the object"))?
        .try_into()?)
}

impl DatapathClock {
    /// Loads `lb_clock` from `ebpf` (never attached), measures the clock
    /// and writes it to `CLOCK`. A kernel where the measurement fails keeps
    /// the datapath on `bpf_ktime_get_coarse_ns` (`tick_ns` 0), with a
    /// warning: slower, never wrong.
    pub fn start(ebpf: &mut Ebpf) -> Result<Self> {
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| anyhow!("{PROGRAM} missing from the object"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("the kernel verifier refused {PROGRAM}"))?;
        let mut c = DatapathClock {
            clock: datapath::take(ebpf, "CLOCK")?,
            samples: datapath::take(ebpf, "CLOCK_SAMPLE")?,
            current: Clock::default(),
        };
        c.set(ebpf)?;
        Ok(c)
    }

    /// What the datapath's clock is set to.
    pub fn current(&self) -> Clock {
        self.current
    }

    fn set(&mut self, ebpf: &Ebpf) -> Result<()> {
        let clock = match measure(program(ebpf)?, &self.samples) {
            Ok(c) => {
                info!(
                    "datapath clock: jiffies at HZ {} ({} ns a tick)",
                    1_000_000_000 / c.tick_ns,
                    c.tick_ns
                );
                c
            }
            Err(e) => {
                warn!("datapath clock: {e:#}; it calls bpf_ktime_get_coarse_ns instead");
                Clock::default()
            }
        };
        self.clock.set(0, clock, 0).context("writing CLOCK")?;
        self.current = clock;
        Ok(())
    }

    /// Checks the clock against the coarse clock, and measures it again
    /// once they disagree by [`STRAY_TICKS`] (NTP's drift takes days to
    /// move them a tick apart).
    pub fn keep(&mut self, ebpf: &Ebpf) -> Result<()> {
        if self.current.tick_ns == 0 {
            return Ok(());
        }
        if check(program(ebpf)?, &self.samples, &self.current)? == Some(false) {
            warn!("datapath clock: jiffies and the coarse clock disagree; measuring again");
            self.set(ebpf)?;
        }
        Ok(())
    }
}

/// The kernel's TICK_NSEC for `hz`.
fn tick_nsec(hz: u64) -> u64 {
    (1_000_000_000 + hz / 2) / hz
}

/// The datapath's time for `jiffies` under `clock`.
fn at(clock: &Clock, jiffies: u64) -> u64 {
    jiffies
        .wrapping_mul(clock.tick_ns)
        .wrapping_add(clock.offset_ns)
}

/// Runs `lb_clock` once; `None` if a tick fell between its reads.
fn sample(prog: &Xdp, samples: &Array<MapData, ClockSample>) -> Result<Option<ClockSample>> {
    // XDP's test run wants at least an Ethernet header; the program reads
    // none of it.
    let frame = [0u8; 64];
    prog.test_run(TestRunOptions {
        data_in: Some(&frame),
        ..TestRunOptions::default()
    })
    .context("running lb_clock")?;
    let s = samples.get(&0, 0).context("CLOCK_SAMPLE")?;
    Ok((s.coarse_before_ns == s.coarse_after_ns).then_some(s))
}

/// Measures the clock: samples every millisecond until they span
/// [`SPAN_TICKS`] jiffies, then fits them.
fn measure(prog: &Xdp, samples: &Array<MapData, ClockSample>) -> Result<Clock> {
    let started = Instant::now();
    let mut taken: Vec<ClockSample> = Vec::new();
    loop {
        if let Some(s) = sample(prog, samples)? {
            let span = taken
                .first()
                .map_or(0, |f| s.jiffies.wrapping_sub(f.jiffies));
            taken.push(s);
            if span >= SPAN_TICKS {
                return fit(&taken);
            }
        }
        ensure!(
            started.elapsed() < SPAN_LIMIT,
            "jiffies moved {} in {SPAN_LIMIT:?}",
            taken
                .last()
                .zip(taken.first())
                .map_or(0, |(l, f)| l.jiffies.wrapping_sub(f.jiffies))
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `coarse - jiffies * tick` as a signed distance from `base` (wrapping
/// arithmetic: jiffies start near 2^32 and the product exceeds the clock).
fn residual(s: &ClockSample, tick: u64, base: u64) -> i64 {
    s.coarse_before_ns
        .wrapping_sub(s.jiffies.wrapping_mul(tick))
        .wrapping_sub(base) as i64
}

/// The clock from samples in time order (each read without a tick
/// between its reads).
fn fit(samples: &[ClockSample]) -> Result<Clock> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        bail!("no samples");
    };
    let ticks = last.jiffies.wrapping_sub(first.jiffies);
    ensure!(ticks > 0, "jiffies did not move");
    let slope = last.coarse_before_ns.wrapping_sub(first.coarse_before_ns) as f64 / ticks as f64;
    let hz = HZ
        .into_iter()
        .min_by(|a, b| {
            let err = |hz: u64| (slope / tick_nsec(hz) as f64 - 1.0).abs();
            err(*a).total_cmp(&err(*b))
        })
        .expect("HZ is not empty");
    let tick = tick_nsec(hz);
    ensure!(
        (slope / tick as f64 - 1.0).abs() < 0.08,
        "one jiffy measured {slope:.0} ns, which is no known HZ"
    );
    // Each residual is where that sample puts the tick boundary. On a real
    // kernel they take two values a tick apart (the coarse clock and
    // jiffies are updated at different points of the tick, so for part of
    // each tick one is a tick ahead) and drift by a ns every few ticks
    // (NTP's adjustment of CLOCK_MONOTONIC); a sample read between the two
    // updates is another tick off. The least is taken, so the datapath's
    // time is never after the coarse clock; more than three ticks between
    // them means the relation does not hold on this kernel.
    let base = first
        .coarse_before_ns
        .wrapping_sub(first.jiffies.wrapping_mul(tick));
    let residuals: Vec<i64> = samples.iter().map(|s| residual(s, tick, base)).collect();
    let least = *residuals.iter().min().expect("not empty");
    let most = *residuals.iter().max().expect("not empty");
    ensure!(
        most - least < STRAY_TICKS as i64 * tick as i64,
        "the coarse clock strays {} ns from jiffies at HZ {hz}",
        most - least
    );
    Ok(Clock {
        tick_ns: tick,
        offset_ns: base.wrapping_add(least as u64),
    })
}

/// Checks `clock` against a fresh sample: the datapath's time must be
/// within [`STRAY_TICKS`] of the coarse clock. `Ok(None)`
/// if a tick fell between the reads (try later).
fn check(prog: &Xdp, samples: &Array<MapData, ClockSample>, clock: &Clock) -> Result<Option<bool>> {
    let Some(s) = sample(prog, samples)? else {
        return Ok(None);
    };
    // Normally 0 or a tick; NTP's drift moves it by about a tick a day.
    let behind = s.coarse_before_ns.wrapping_sub(at(clock, s.jiffies)) as i64;
    Ok(Some(behind.unsigned_abs() < STRAY_TICKS * clock.tick_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of a kernel at `hz` whose jiffies start at 2^32 - 300 HZ (the
    /// kernel's INITIAL_JIFFIES) and whose coarse clock lags each tick by
    /// `lag(i)` ns.
    fn kernel(hz: u64, n: u64, lag: impl Fn(u64) -> u64) -> Vec<ClockSample> {
        let tick = tick_nsec(hz);
        let j0 = (1u64 << 32) - 300 * hz;
        let boot = 7_123_456_789u64;
        (0..n)
            .map(|i| {
                let jiffies = j0 + 1000 * hz + i;
                let t = boot + (jiffies - j0) * tick + lag(i);
                ClockSample {
                    coarse_before_ns: t,
                    jiffies,
                    coarse_after_ns: t,
                }
            })
            .collect()
    }

    #[test]
    fn finds_hz_and_never_runs_ahead_of_the_coarse_clock() {
        for hz in HZ {
            let tick = tick_nsec(hz);
            // As measured on the bench VM: the coarse clock a tick ahead of
            // jiffies for part of the time, and a ns of drift every few
            // ticks.
            let s = kernel(
                hz,
                40,
                |i| if i % 3 == 0 { tick } else { 0 } + 1_000 - i / 4,
            );
            let c = fit(&s).unwrap();
            assert_eq!(c.tick_ns, tick, "HZ {hz}");
            let behind: Vec<u64> = s
                .iter()
                .map(|x| x.coarse_before_ns.wrapping_sub(at(&c, x.jiffies)))
                .collect();
            // Behind by at most a tick and the drift over the samples.
            assert!(
                behind.iter().all(|b| *b <= tick + 10),
                "HZ {hz}: {behind:?}"
            );
            assert_eq!(behind.iter().min(), Some(&0), "HZ {hz}");
        }
    }

    #[test]
    fn a_sample_between_the_two_updates_costs_at_most_a_tick() {
        let tick = tick_nsec(250);
        let mut s = kernel(250, 20, |_| 3_000);
        // Jiffies already moved on, the coarse clock not yet.
        s[7].coarse_before_ns -= tick;
        s[7].coarse_after_ns -= tick;
        let c = fit(&s).unwrap();
        assert_eq!(c.tick_ns, tick);
        assert_eq!(s[0].coarse_before_ns - at(&c, s[0].jiffies), tick);
    }

    #[test]
    fn refuses_an_unknown_rate_and_a_straying_clock() {
        // 2 ms per jiffy: HZ 500 is not a choice the kernel offers here.
        let s: Vec<ClockSample> = (0..20)
            .map(|i| ClockSample {
                coarse_before_ns: 1_000_000_000 + i * 2_000_000,
                jiffies: 5_000 + i,
                coarse_after_ns: 1_000_000_000 + i * 2_000_000,
            })
            .collect();
        assert!(fit(&s).is_err());
        // Right slope at the ends, but one sample three ticks off.
        let mut s = kernel(250, 20, |_| 0);
        s[10].coarse_before_ns += 3 * tick_nsec(250);
        assert!(fit(&s).is_err());
        assert!(fit(&[]).is_err());
    }
}
