//! What a task may use ([`Resources`]), its validation, and the unit conversions
//! between the one vocabulary callers use and the two kernels' files.

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// The CFS period this module always uses, in microseconds (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The smallest CFS quota the kernel accepts, in microseconds (1 ms).
const CPU_QUOTA_MIN_US: u64 = 1_000;

/// Resource limits of one task. Every field is optional: `None` leaves the kernel's
/// default (no limit) at creation, and the current value on [`update`].
///
/// Units are the caller's, the same for both cgroup versions; each field says which
/// file it lands in and how it is converted.
///
/// [`update`]: crate::Task::update_resources
///
/// # Examples
///
/// ```
/// use nomad_shim::{Resources, TaskSpec};
///
/// let resources = Resources {
///     memory_max: Some(256 << 20), // bytes
///     cpus: Some(0.5),             // half of one CPU
///     pids_max: Some(100),
///     ..Resources::default()
/// };
/// assert!(resources.validate().is_ok());
/// let mut spec = TaskSpec::new("/usr/bin/python3");
/// spec.arg("-m").arg("http.server").resources(resources);
/// // A running task's limits change with `Task::update_resources`.
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Hard memory limit in bytes; the OOM killer acts beyond it.
    /// v2 `memory.max`; v1 `memory.limit_in_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,

    /// Soft memory limit in bytes: reclaim pressure starts here.
    /// v2 `memory.high` (throttles allocations above it);
    /// v1 `memory.soft_limit_in_bytes` (only acts under global memory pressure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u64>,

    /// Swap the task may use *in addition to* `memory_max`, in bytes (0 = no swap).
    /// Requires `memory_max`.
    /// v2 `memory.swap.max` = this value, as is.
    /// v1 `memory.memsw.limit_in_bytes` = `memory_max + memory_swap`, because v1 limits
    /// memory *plus* swap together. That file exists only with swap accounting
    /// (`CONFIG_MEMCG_SWAP`, and `swapaccount=1` on kernels older than 5.8); when it
    /// is missing, asking for this is an [`Error::Unsupported`] naming the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<u64>,

    /// Relative CPU weight in Nomad's unit (MHz-ish shares; 1024 is "one normal task").
    /// v1 `cpu.shares` as is (the kernel clamps to 2..=262144).
    /// v2 `cpu.weight` = `1 + ((shares - 2) * 9999) / 262142` with shares first
    /// clamped to 2..=262144 — the conversion of runc and crun, so a task gets the
    /// same weight as under those runtimes (1024 → 39, 262144 → 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,

    /// Hard CPU limit in CPUs (1.5 = one and a half CPUs of time per period).
    /// v2 `cpu.max` = `"QUOTA 100000"`; v1 `cpu.cfs_period_us` = 100000 then
    /// `cpu.cfs_quota_us` = QUOTA, where QUOTA = round(cpus × 100000) µs. Must be at
    /// least 0.01 (the kernel's minimum quota is 1 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,

    /// CPUs the task may run on, in the kernel's list format (`"0-2,5"`).
    /// v2 `cpuset.cpus`; v1 `cpuset.cpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,

    /// NUMA memory nodes the task may allocate from (`"0"`).
    /// v2 `cpuset.mems`; v1 `cpuset.mems`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_mems: Option<String>,

    /// Maximum number of processes and threads (≥ 1). v2 and v1 `pids.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,

    /// Relative block IO weight in cgroup v2's unit, 1..=10000 (default 100).
    /// v2 `io.weight` = `"default N"`.
    /// v1 `blkio.weight` (CFQ, 10..=1000) or, when only BFQ is there,
    /// `blkio.bfq.weight` (1..=1000), both set to `10 + (N - 1) * 990 / 9999`: the
    /// inverse of runc's v1→v2 conversion, so relative order is kept across the
    /// whole range (100 → 19, 10000 → 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u16>,
}

/// A cgroup controller a limit needs (the names are the kernel's).
pub(crate) mod ctl {
    pub const MEMORY: &str = "memory";
    pub const CPU: &str = "cpu";
    pub const CPUACCT: &str = "cpuacct";
    pub const CPUSET: &str = "cpuset";
    pub const PIDS: &str = "pids";
    pub const IO: &str = "io";
    pub const BLKIO: &str = "blkio";
    pub const FREEZER: &str = "freezer";
    pub const DEVICES: &str = "devices";
}

impl Resources {
    /// Refuse values that cannot be meant: zero memory, non-positive or tiny CPU
    /// counts, weights out of range, swap without a memory limit, empty cpusets.
    /// Values that are merely large are accepted (and clamped where documented).
    pub fn validate(&self) -> Result<()> {
        fn bad(field: &'static str, value: impl ToString, reason: &'static str) -> Error {
            Error::InvalidResources {
                field,
                value: value.to_string(),
                reason,
            }
        }
        if self.memory_max == Some(0) {
            return Err(bad("memory_max", 0, "must be at least 1 byte"));
        }
        if self.memory_reservation == Some(0) {
            return Err(bad("memory_reservation", 0, "must be at least 1 byte"));
        }
        if let (Some(max), Some(res)) = (self.memory_max, self.memory_reservation) {
            if res > max {
                return Err(bad("memory_reservation", res, "must not exceed memory_max"));
            }
        }
        if let Some(swap) = self.memory_swap {
            let Some(max) = self.memory_max else {
                return Err(bad("memory_swap", swap, "needs memory_max"));
            };
            if max.checked_add(swap).is_none() {
                return Err(bad(
                    "memory_swap",
                    swap,
                    "memory_max + memory_swap overflows",
                ));
            }
        }
        if self.cpu_shares == Some(0) {
            return Err(bad("cpu_shares", 0, "must be at least 1"));
        }
        if let Some(cpus) = self.cpus {
            if !cpus.is_finite() || cpus <= 0.0 {
                return Err(bad("cpus", cpus, "must be a positive number"));
            }
            if cpu_quota_us(cpus) < CPU_QUOTA_MIN_US {
                return Err(bad("cpus", cpus, "must be at least 0.01 (1 ms per 100 ms)"));
            }
            if cpus > 1e6 {
                return Err(bad("cpus", cpus, "must be at most 1000000"));
            }
        }
        for (field, v) in [
            ("cpuset_cpus", &self.cpuset_cpus),
            ("cpuset_mems", &self.cpuset_mems),
        ] {
            if let Some(list) = v {
                if !is_cpu_list(list) {
                    return Err(bad(field, format!("{list:?}"), "must be a list like 0-2,5"));
                }
            }
        }
        if self.pids_max == Some(0) {
            return Err(bad("pids_max", 0, "must be at least 1"));
        }
        if let Some(n) = self.pids_max.filter(|&n| n > PID_MAX_LIMIT) {
            return Err(bad(
                "pids_max",
                n,
                "must be at most 4194304 (the kernel's PID_MAX_LIMIT); leave it unset for no limit",
            ));
        }
        if let Some(w) = self.io_weight {
            if !(1..=10_000).contains(&w) {
                return Err(bad("io_weight", w, "must be within 1..=10000"));
            }
        }
        Ok(())
    }

    /// True if any memory field is set.
    pub(crate) fn wants_memory(&self) -> bool {
        self.memory_max.is_some() || self.memory_reservation.is_some() || self.memory_swap.is_some()
    }

    /// True if any CPU time field (`cpu` controller) is set.
    pub(crate) fn wants_cpu(&self) -> bool {
        self.cpu_shares.is_some() || self.cpus.is_some()
    }

    /// True if any cpuset field is set.
    pub(crate) fn wants_cpuset(&self) -> bool {
        self.cpuset_cpus.is_some() || self.cpuset_mems.is_some()
    }
}

/// The largest `pids.max` the kernel takes (`PID_MAX_LIMIT` on 64-bit,
/// include/linux/threads.h); a larger value fails with EINVAL or ERANGE.
const PID_MAX_LIMIT: u64 = 4 * 1024 * 1024;

/// Nomad/v1 shares → v2 `cpu.weight` (runc's and crun's conversion).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// v2 `io.weight` (1..=10000) → v1 `blkio.weight` (10..=1000).
pub fn io_weight_to_blkio(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(1, 10_000));
    10 + (w - 1) * 990 / 9999
}

/// CPUs → CFS quota in µs per [`CPU_PERIOD_US`].
pub fn cpu_quota_us(cpus: f64) -> u64 {
    // `as` saturates for out-of-range floats; validation bounds `cpus` anyway.
    (cpus * CPU_PERIOD_US as f64).round() as u64
}

/// A kernel CPU/node list: comma-separated numbers or ranges `a-b` with a <= b.
fn is_cpu_list(s: &str) -> bool {
    let num = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    !s.is_empty()
        && s.split(',').all(|part| match part.split_once('-') {
            Some((a, b)) => num(a) && num(b) && a.parse::<u32>().ok() <= b.parse::<u32>().ok(),
            None => num(part),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_matches_runc() {
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1_000_000), 10_000);
    }

    #[test]
    fn io_weight_maps_onto_blkio_range() {
        assert_eq!(io_weight_to_blkio(1), 10);
        assert_eq!(io_weight_to_blkio(100), 19);
        assert_eq!(io_weight_to_blkio(10_000), 1000);
    }

    #[test]
    fn cpu_quota() {
        assert_eq!(cpu_quota_us(1.5), 150_000);
        assert_eq!(cpu_quota_us(0.01), 1_000);
    }

    #[test]
    fn validation_refuses_nonsense() {
        let ok = Resources {
            memory_max: Some(64 << 20),
            memory_reservation: Some(32 << 20),
            memory_swap: Some(0),
            cpu_shares: Some(500),
            cpus: Some(0.5),
            cpuset_cpus: Some("0-1,3".into()),
            cpuset_mems: Some("0".into()),
            pids_max: Some(10),
            io_weight: Some(100),
        };
        ok.validate().unwrap();
        let cases: Vec<(Resources, &str)> = vec![
            (
                Resources {
                    memory_max: Some(0),
                    ..Default::default()
                },
                "memory_max",
            ),
            (
                Resources {
                    memory_swap: Some(1),
                    ..Default::default()
                },
                "memory_swap",
            ),
            (
                Resources {
                    memory_max: Some(u64::MAX),
                    memory_swap: Some(1),
                    ..Default::default()
                },
                "memory_swap",
            ),
            (
                Resources {
                    memory_max: Some(1),
                    memory_reservation: Some(2),
                    ..Default::default()
                },
                "memory_reservation",
            ),
            (
                Resources {
                    cpus: Some(0.0),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                Resources {
                    cpus: Some(-1.0),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                Resources {
                    cpus: Some(f64::NAN),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                Resources {
                    cpus: Some(0.001),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                Resources {
                    cpu_shares: Some(0),
                    ..Default::default()
                },
                "cpu_shares",
            ),
            (
                Resources {
                    pids_max: Some(0),
                    ..Default::default()
                },
                "pids_max",
            ),
            (
                Resources {
                    pids_max: Some(u64::MAX),
                    ..Default::default()
                },
                "pids_max",
            ),
            (
                Resources {
                    io_weight: Some(0),
                    ..Default::default()
                },
                "io_weight",
            ),
            (
                Resources {
                    io_weight: Some(10_001),
                    ..Default::default()
                },
                "io_weight",
            ),
            (
                Resources {
                    cpuset_cpus: Some("".into()),
                    ..Default::default()
                },
                "cpuset_cpus",
            ),
            (
                Resources {
                    cpuset_cpus: Some("3-1".into()),
                    ..Default::default()
                },
                "cpuset_cpus",
            ),
            (
                Resources {
                    cpuset_mems: Some("0,a".into()),
                    ..Default::default()
                },
                "cpuset_mems",
            ),
        ];
        for (r, field) in cases {
            match r.validate() {
                Err(Error::InvalidResources { field: f, .. }) => assert_eq!(f, field, "{r:?}"),
                other => panic!("{r:?}: expected InvalidResources({field}), got {other:?}"),
            }
        }
    }

    #[test]
    fn serde_skips_none_and_round_trips() {
        assert_eq!(serde_json::to_string(&Resources::default()).unwrap(), "{}");
        let r = Resources {
            memory_max: Some(1 << 20),
            cpus: Some(1.5),
            ..Default::default()
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"memory_max":1048576,"cpus":1.5}"#);
        assert_eq!(serde_json::from_str::<Resources>(&s).unwrap(), r);
    }
}
