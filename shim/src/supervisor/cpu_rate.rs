//! The task's CPU rate for `stats`, without a wait between two samples: the
//! supervisor keeps the samples of earlier requests and measures from them.
//!
//! Two samples are kept, `older` and `newer`. A request measures from
//! `newer` when that is at least [`MIN_WINDOW`] old, else from `older`, so
//! that two requests in quick succession do not divide by a few
//! microseconds; it becomes `newer` itself when the window it measured from
//! `newer` was long enough. Both start as (the supervisor's start, 0 ns): a
//! task's cgroup is new, so its usage counts from 0.

use std::time::{Duration, Instant};

/// The shortest window measured from the newer sample (what `nomad-shim
/// stats` used to sleep between its two samples).
const MIN_WINDOW: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    usage_ns: u64,
}

/// The kept samples.
#[derive(Debug)]
pub struct CpuRate {
    older: Sample,
    newer: Sample,
}

impl CpuRate {
    /// Samples start at `start` with no CPU used.
    pub fn new(start: Instant) -> CpuRate {
        let s = Sample {
            at: start,
            usage_ns: 0,
        };
        CpuRate { older: s, newer: s }
    }

    /// The rate (percent of one CPU) up to `usage_ns` read at `now`, and the
    /// window it spans; `None` for a zero window or a counter that went
    /// backwards (a cgroup recreated).
    pub fn measure(&mut self, now: Instant, usage_ns: u64) -> Option<(f64, Duration)> {
        let long_enough = now.saturating_duration_since(self.newer.at) >= MIN_WINDOW;
        let from = if long_enough { self.newer } else { self.older };
        let window = now.saturating_duration_since(from.at);
        let rate = usage_ns
            .checked_sub(from.usage_ns)
            .filter(|_| !window.is_zero())
            .map(|used| (used as f64 * 100.0 / window.as_nanos() as f64, window));
        if long_enough {
            self.older = self.newer;
            self.newer = Sample { at: now, usage_ns };
        }
        rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn windows_are_never_shorter_than_the_minimum_after_the_first() {
        let t0 = Instant::now();
        let mut r = CpuRate::new(t0);
        // 50 ms of CPU in the first 200 ms: 25 %.
        assert_eq!(r.measure(t0 + 200 * MS, 50_000_000), Some((25.0, 200 * MS)));
        // 10 ms later: measured from the start again, not over 10 ms.
        let (p, w) = r.measure(t0 + 210 * MS, 60_000_000).unwrap();
        assert_eq!(w, 210 * MS);
        assert!((p - 60.0 / 210.0 * 100.0).abs() < 1e-9, "{p}");
        // 1 s after the 200 ms sample: from it (one CPU busy: 100 %).
        assert_eq!(
            r.measure(t0 + 1200 * MS, 1_050_000_000),
            Some((100.0, 1000 * MS))
        );
    }

    #[test]
    fn a_zero_window_or_a_counter_going_back_has_no_rate() {
        let t0 = Instant::now();
        let mut r = CpuRate::new(t0);
        assert_eq!(r.measure(t0, 5), None);
        assert_eq!(r.measure(t0 + 500 * MS, 100), Some((0.00002, 500 * MS)));
        assert_eq!(r.measure(t0 + 1000 * MS, 50), None);
    }
}
