//! What a task's cgroup has used ([`Stats`]), parsed from cgroup files only (no
//! process walk), and the CPU rate between two samples ([`cpu_percent`]).
//!
//! The parsers take file *contents*, so they are tested on text copied from real
//! kernels; the backends read the files.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::files::keyed;

/// One sample of a task cgroup's usage. A section is `None` when its controller is
/// not in use for this cgroup (not mounted in v1, not enabled in v2).
///
/// # Examples
///
/// ```no_run
/// use nomad_shim::Executor;
///
/// # fn main() -> nomad_shim::Result<()> {
/// let stats = Executor::new()?.open("web.1")?.stats()?;
/// if let Some(cpu) = stats.cpu {
///     println!("CPU {} ns, throttled {} ns", cpu.usage_ns, cpu.throttled_ns);
/// }
/// if let Some(memory) = stats.memory {
///     println!("memory {} bytes (peak {:?})", memory.current, memory.peak);
/// }
/// if let Some(pids) = stats.pids {
///     println!("{} processes and threads", pids.current);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU time and throttling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Number of processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<PidsStats>,
}

/// CPU time consumed and CFS throttling, in nanoseconds.
///
/// Part of [`Stats`](crate::Stats), which has an example.
///
/// ```
/// use nomad_shim::CpuStats;
///
/// let cpu = CpuStats { usage_ns: 2_500_000, user_ns: 2_000_000, system_ns: 500_000, ..CpuStats::default() };
/// assert_eq!(cpu.usage_ns as f64 / 1e6, 2.5); // ms of CPU in all
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStats {
    /// Total CPU time (v2 `cpu.stat` `usage_usec`; v1 `cpuacct.usage`).
    pub usage_ns: u64,
    /// Time in user mode (v2 `user_usec`; v1 `cpuacct.usage_user`, else
    /// `cpuacct.stat` `user` ticks × 10⁹ / `CLK_TCK`).
    pub user_ns: u64,
    /// Time in kernel mode (v2 `system_usec`; v1 `cpuacct.usage_sys`, else
    /// `cpuacct.stat` `system` ticks).
    pub system_ns: u64,
    /// CFS periods that elapsed with the task runnable (`cpu.stat` `nr_periods`).
    pub nr_periods: u64,
    /// Periods in which the task hit its quota (`nr_throttled`).
    pub nr_throttled: u64,
    /// Time spent throttled (v2 `throttled_usec`; v1 `throttled_time`).
    pub throttled_ns: u64,
}

/// Memory use in bytes.
///
/// Part of [`Stats`](crate::Stats), which has an example.
///
/// ```
/// use nomad_shim::MemoryStats;
///
/// let mem = MemoryStats { current: 64 << 20, rss: 48 << 20, ..MemoryStats::default() };
/// assert_eq!(mem.current >> 20, 64); // MiB in use
/// assert_eq!(mem.swap, None); // swap not accounted here
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Now (v2 `memory.current`; v1 `memory.usage_in_bytes`, page cache included).
    pub current: u64,
    /// High-water mark (v2 `memory.peak`, kernel ≥ 5.19; v1 `memory.max_usage_in_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<u64>,
    /// Anonymous memory (v2 `memory.stat` `anon`; v1 `total_rss`, else `rss`).
    pub rss: u64,
    /// Page cache (v2 `memory.stat` `file`; v1 `total_cache`, else `cache`).
    pub cache: u64,
    /// Swap in use (v2 `memory.swap.current`; v1 `memory.stat` `total_swap`),
    /// when swap is accounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<u64>,
}

/// Task count.
///
/// Part of [`Stats`](crate::Stats), which has an example.
///
/// ```
/// use nomad_shim::PidsStats;
///
/// let pids = PidsStats { current: 3, ..PidsStats::default() };
/// assert!(pids.current <= 128);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidsStats {
    /// Processes and threads now in the cgroup (`pids.current`).
    pub current: u64,
}

/// CPU use between two samples taken `elapsed` apart, in percent of one CPU
/// (200.0 = two CPUs busy). `None` if `elapsed` is zero, a sample lacks CPU stats,
/// or the counter went backwards (the cgroup was recreated).
pub fn cpu_percent(earlier: &Stats, later: &Stats, elapsed: Duration) -> Option<f64> {
    let (a, b) = (earlier.cpu?, later.cpu?);
    let used = b.usage_ns.checked_sub(a.usage_ns)?;
    let wall = elapsed.as_nanos();
    (wall > 0).then(|| used as f64 * 100.0 / wall as f64)
}

const NS_PER_US: u64 = 1_000;

/// v2 `cpu.stat`.
pub(crate) fn parse_v2_cpu_stat(s: &str) -> CpuStats {
    let us = |k| keyed(s, k).unwrap_or(0).saturating_mul(NS_PER_US);
    CpuStats {
        usage_ns: us("usage_usec"),
        user_ns: us("user_usec"),
        system_ns: us("system_usec"),
        nr_periods: keyed(s, "nr_periods").unwrap_or(0),
        nr_throttled: keyed(s, "nr_throttled").unwrap_or(0),
        throttled_ns: us("throttled_usec"),
    }
}

/// v1 `cpuacct.stat` (`user N` / `system N` in `USER_HZ` ticks) → (user, system) ns.
pub(crate) fn parse_v1_cpuacct_stat(s: &str, ticks_per_sec: u64) -> (u64, u64) {
    let ns_per_tick = 1_000_000_000 / ticks_per_sec.max(1);
    let ns = |k| keyed(s, k).unwrap_or(0).saturating_mul(ns_per_tick);
    (ns("user"), ns("system"))
}

/// v1 `cpu.stat` → (nr_periods, nr_throttled, throttled ns).
pub(crate) fn parse_v1_cpu_stat(s: &str) -> (u64, u64, u64) {
    let k = |key| keyed(s, key).unwrap_or(0);
    (k("nr_periods"), k("nr_throttled"), k("throttled_time"))
}

/// v2 `memory.stat` → (anon, file).
pub(crate) fn parse_v2_memory_stat(s: &str) -> (u64, u64) {
    (keyed(s, "anon").unwrap_or(0), keyed(s, "file").unwrap_or(0))
}

/// v1 `memory.stat` → (rss, cache, swap): the hierarchical `total_*` counters when
/// present (they include child cgroups), else the cgroup's own.
pub(crate) fn parse_v1_memory_stat(s: &str) -> (u64, u64, Option<u64>) {
    let k = |total, own| keyed(s, total).or_else(|| keyed(s, own));
    (
        k("total_rss", "rss").unwrap_or(0),
        k("total_cache", "cache").unwrap_or(0),
        k("total_swap", "swap"),
    )
}

/// `USER_HZ`, the unit of v1 `cpuacct.stat` (100 on every Linux architecture we
/// run on; `sysconf(_SC_CLK_TCK)` says so).
pub(crate) fn clock_ticks() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Copied from kernel 6.1 (cgroup v2, in scripts/vm-v2).
    const V2_CPU_STAT: &str = "usage_usec 939536\nuser_usec 200086\nsystem_usec 739449\n\
        nr_periods 12\nnr_throttled 3\nthrottled_usec 4500\nnr_bursts 0\nburst_usec 0\n";
    const V2_MEMORY_STAT: &str = "anon 16384\nfile 32768\nkernel 4096\nkernel_stack 0\n\
        pagetables 0\nsec_pagetables 0\npercpu 0\nsock 0\nvmalloc 0\nshmem 0\nzswap 0\n\
        zswapped 0\nfile_mapped 24576\nfile_dirty 0\nfile_writeback 0\nswapcached 0\n\
        anon_thp 0\nfile_thp 0\nshmem_thp 0\ninactive_anon 16384\nactive_anon 0\n";
    // Copied from kernel 6.18 (cgroup v1, this project's machines).
    const V1_CPU_STAT: &str =
        "nr_periods 7\nnr_throttled 2\nthrottled_time 123456\nnr_bursts 0\nburst_time 0\n";
    const V1_CPUACCT_STAT: &str = "user 11997\nsystem 5477\n";
    const V1_MEMORY_STAT: &str = "cache 0\nrss 0\nrss_huge 0\nshmem 0\nmapped_file 0\n\
        dirty 0\nwriteback 0\nswap 0\nswapcached 0\npgpgin 0\npgpgout 0\npgfault 0\n\
        hierarchical_memory_limit 9223372036854771712\n\
        hierarchical_memsw_limit 9223372036854771712\ntotal_cache 748163072\n\
        total_rss 4448256\ntotal_rss_huge 0\ntotal_shmem 0\ntotal_swap 0\n";

    #[test]
    fn v2_cpu() {
        let c = parse_v2_cpu_stat(V2_CPU_STAT);
        assert_eq!(
            c,
            CpuStats {
                usage_ns: 939_536_000,
                user_ns: 200_086_000,
                system_ns: 739_449_000,
                nr_periods: 12,
                nr_throttled: 3,
                throttled_ns: 4_500_000,
            }
        );
    }

    #[test]
    fn v1_cpu() {
        assert_eq!(parse_v1_cpu_stat(V1_CPU_STAT), (7, 2, 123_456));
        assert_eq!(
            parse_v1_cpuacct_stat(V1_CPUACCT_STAT, 100),
            (119_970_000_000, 54_770_000_000)
        );
    }

    #[test]
    fn memory() {
        assert_eq!(parse_v2_memory_stat(V2_MEMORY_STAT), (16384, 32768));
        assert_eq!(
            parse_v1_memory_stat(V1_MEMORY_STAT),
            (4_448_256, 748_163_072, Some(0))
        );
        assert_eq!(parse_v1_memory_stat("cache 5\nrss 7\n"), (7, 5, None));
    }

    #[test]
    fn cpu_rate() {
        let at = |ns| Stats {
            cpu: Some(CpuStats {
                usage_ns: ns,
                ..Default::default()
            }),
            ..Default::default()
        };
        let one_s = Duration::from_secs(1);
        assert_eq!(cpu_percent(&at(0), &at(500_000_000), one_s), Some(50.0));
        assert_eq!(cpu_percent(&at(0), &at(2_000_000_000), one_s), Some(200.0));
        assert_eq!(cpu_percent(&at(5), &at(1), one_s), None);
        assert_eq!(cpu_percent(&at(0), &at(1), Duration::ZERO), None);
        assert_eq!(cpu_percent(&Stats::default(), &at(1), one_s), None);
    }

    #[test]
    fn stats_serde() {
        let s = Stats {
            pids: Some(PidsStats { current: 2 }),
            ..Default::default()
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"pids":{"current":2}}"#);
        assert_eq!(serde_json::from_str::<Stats>(&j).unwrap(), s);
    }
}
