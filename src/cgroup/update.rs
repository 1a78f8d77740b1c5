//! Live changes to a task's limits ([`ResourceUpdate`]): each limit is kept,
//! set, or removed (back to the kernel's "no limit"), on v1 and v2.
//!
//! An update writes only the limit files it names. It never writes a device
//! rule (v1 `devices.allow`/`devices.deny`, v2's BPF program), so changing
//! limits never opens a moment in which a denied device is let through.

use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::files::{has, read, read_u64, write};
use super::resources::{
    cpu_quota_us, ctl, io_weight_to_blkio, shares_to_weight, Resources, CPU_PERIOD_US,
};

/// One limit in an update: keep it as it is, set it, or remove it.
///
/// On the wire (the control socket's `update` request) `Keep` is the field
/// left out, `Set(v)` is `v`, and `Remove` is the string `"max"`: a request
/// of an older library (a plain [`Resources`]) reads as the same update.
///
/// ```
/// use nomad_shim::Limit;
///
/// let keep: Limit<u64> = Limit::Keep;
/// assert!(keep.is_keep());
/// assert_eq!(Limit::Set(128u64).set(), Some(&128));
/// assert_eq!(Limit::<u64>::Remove.set(), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Limit<T> {
    /// Leave the current value.
    #[default]
    Keep,
    /// Write this value.
    Set(T),
    /// Remove the limit: the kernel's default (`max`, `-1`, the parent's
    /// cpuset, the default weight).
    Remove,
}

impl<T> Limit<T> {
    /// True for [`Limit::Keep`].
    pub fn is_keep(&self) -> bool {
        matches!(self, Limit::Keep)
    }

    /// The value, for [`Limit::Set`].
    pub fn set(&self) -> Option<&T> {
        match self {
            Limit::Set(v) => Some(v),
            _ => None,
        }
    }
}

impl<T> From<Option<T>> for Limit<T> {
    /// `None` keeps, `Some(v)` sets.
    fn from(v: Option<T>) -> Limit<T> {
        v.map_or(Limit::Keep, Limit::Set)
    }
}

impl<T: Serialize> Serialize for Limit<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Limit::Set(v) => v.serialize(s),
            Limit::Remove => s.serialize_str("max"),
            Limit::Keep => s.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Limit<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Limit<T>, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::Null => Ok(Limit::Keep),
            serde_json::Value::String(s) if s == "max" => Ok(Limit::Remove),
            v => T::deserialize(v).map(Limit::Set).map_err(de::Error::custom),
        }
    }
}

/// A change to a running task's limits: each field is a [`Limit`], left
/// out (kept) by default. Units and files are those of [`Resources`].
///
/// Swap alone can be set (`memory_swap` without `memory_max`): on v2 it is
/// `memory.swap.max`; on v1 `memory.memsw.limit_in_bytes` becomes the
/// current memory limit plus the swap (an error if there is no memory
/// limit, since v1 cannot limit swap without one). Changing `memory_max`
/// alone keeps the swap allowance on v1 too (memsw moves with it).
/// Removing `memory_max` on v1 removes the swap limit with it.
///
/// ```
/// use nomad_shim::{Limit, ResourceUpdate};
///
/// // Raise the memory limit to 512 MiB and remove the pids limit; keep the rest.
/// let update = ResourceUpdate {
///     memory_max: Limit::Set(512 << 20),
///     pids_max: Limit::Remove,
///     ..ResourceUpdate::default()
/// };
/// assert!(update.cpus.is_keep());
/// // task.update_resources(update)?;  (a `Resources` converts into one too)
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceUpdate {
    /// Hard memory limit in bytes.
    #[serde(default, skip_serializing_if = "Limit::is_keep")]
    pub memory_max: Limit<u64>,
    /// Soft memory limit in bytes.
    #[serde(default, skip_serializing_if = "Limit::is_keep")]
    pub memory_reservation: Limit<u64>,
    /// Swap beyond `memory_max`, in bytes.
    #[serde(default, skip_serializing_if = "Limit::is_keep")]
    pub memory_swap: Limit<u64>,
    /// Relative CPU weight (Nomad's shares); removing it restores the
    /// default (v1 1024, v2 weight 100).
    #[serde(default, skip_serializing_if = "Limit::is_keep")]
    pub cpu_shares: Limit<u64>,
    /// Hard CPU limit in CPUs.
    #[serde(default, skip_serializing_if = "Limit::is_keep")]
    pub cpus: Limit<f64>,
    /// CPUs the task may run on; removing it gives the parent's.
    #[serde(default, skip_serializing_if = "Limit::is_keep")]
    pub cpuset_cpus: Limit<String>,
    /// Memory nodes the task may use; removing it gives the parent's.
    #[serde(default, skip_serializing_if = "Limit::is_keep")]
    pub cpuset_mems: Limit<String>,
    /// Most processes and threads.
    #[serde(default, skip_serializing_if = "Limit::is_keep")]
    pub pids_max: Limit<u64>,
    /// IO weight, 1..=10000; removing it restores the default.
    #[serde(default, skip_serializing_if = "Limit::is_keep")]
    pub io_weight: Limit<u16>,
}

impl From<&Resources> for ResourceUpdate {
    /// Every `Some` field set, every `None` kept: the update of
    /// [`Resources`] as it has always meant.
    fn from(r: &Resources) -> ResourceUpdate {
        ResourceUpdate {
            memory_max: r.memory_max.into(),
            memory_reservation: r.memory_reservation.into(),
            memory_swap: r.memory_swap.into(),
            cpu_shares: r.cpu_shares.into(),
            cpus: r.cpus.into(),
            cpuset_cpus: r.cpuset_cpus.clone().into(),
            cpuset_mems: r.cpuset_mems.clone().into(),
            pids_max: r.pids_max.into(),
            io_weight: r.io_weight.into(),
        }
    }
}

impl From<&ResourceUpdate> for ResourceUpdate {
    fn from(u: &ResourceUpdate) -> ResourceUpdate {
        u.clone()
    }
}

impl From<Resources> for ResourceUpdate {
    fn from(r: Resources) -> ResourceUpdate {
        ResourceUpdate::from(&r)
    }
}

impl ResourceUpdate {
    /// True if nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == ResourceUpdate::default()
    }

    /// The values set are checked as [`Resources::validate`] checks them;
    /// swap may be set alone (see the type's documentation); swap cannot be
    /// set while the memory limit is removed.
    pub fn validate(&self) -> Result<()> {
        let sets = Resources {
            memory_max: self.memory_max.set().copied(),
            memory_reservation: self.memory_reservation.set().copied(),
            memory_swap: None,
            cpu_shares: self.cpu_shares.set().copied(),
            cpus: self.cpus.set().copied(),
            cpuset_cpus: self.cpuset_cpus.set().cloned(),
            cpuset_mems: self.cpuset_mems.set().cloned(),
            pids_max: self.pids_max.set().copied(),
            io_weight: self.io_weight.set().copied(),
        };
        sets.validate()?;
        if let Limit::Set(swap) = self.memory_swap {
            if self.memory_max == Limit::Remove {
                return Err(Error::InvalidResources {
                    field: "memory_swap",
                    value: swap.to_string(),
                    reason: "cannot be set while memory_max is removed",
                });
            }
            if let Limit::Set(max) = self.memory_max {
                if max.checked_add(swap).is_none() {
                    return Err(Error::InvalidResources {
                        field: "memory_swap",
                        value: swap.to_string(),
                        reason: "memory_max + memory_swap overflows",
                    });
                }
            }
        }
        Ok(())
    }

    fn wants_memory(&self) -> bool {
        !(self.memory_max.is_keep()
            && self.memory_reservation.is_keep()
            && self.memory_swap.is_keep())
    }

    fn wants_cpu(&self) -> bool {
        !(self.cpu_shares.is_keep() && self.cpus.is_keep())
    }

    fn wants_cpuset(&self) -> bool {
        !(self.cpuset_cpus.is_keep() && self.cpuset_mems.is_keep())
    }
}

/// v1 reports "no limit" as the largest page-aligned i64.
const V1_UNLIMITED: u64 = 1 << 62;

/// The v1 update. `dir_of` gives the task directory of a controller's
/// hierarchy; `missing` the error for a controller the task is not in.
pub(crate) fn apply_v1(
    upd: &ResourceUpdate,
    dir_of: impl Fn(&str) -> Option<PathBuf>,
    missing: impl Fn(&str) -> Error,
) -> Result<()> {
    let dir = |c: &str| dir_of(c).ok_or_else(|| missing(c));
    if upd.wants_memory() {
        let d = dir(ctl::MEMORY)?;
        v1_memory(&d, upd)?;
    }
    if upd.wants_cpu() {
        let d = dir(ctl::CPU)?;
        match upd.cpu_shares {
            Limit::Set(shares) => write(&d.join("cpu.shares"), &shares.to_string())?,
            Limit::Remove => write(&d.join("cpu.shares"), "1024")?,
            Limit::Keep => {}
        }
        match upd.cpus {
            Limit::Set(cpus) => {
                write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&d.join("cpu.cfs_quota_us"), &cpu_quota_us(cpus).to_string())?;
            }
            Limit::Remove => write(&d.join("cpu.cfs_quota_us"), "-1")?,
            Limit::Keep => {}
        }
    }
    if upd.wants_cpuset() {
        let d = dir(ctl::CPUSET)?;
        // v1 has no "inherit": a task cpuset must list CPUs and nodes, so
        // removing one copies the parent's.
        let parent = |file: &str| -> Result<String> {
            let p = d.parent().unwrap_or(&d).join(file);
            Ok(read(&p)?.trim().to_string())
        };
        for (limit, file) in [
            (&upd.cpuset_cpus, "cpuset.cpus"),
            (&upd.cpuset_mems, "cpuset.mems"),
        ] {
            match limit {
                Limit::Set(list) => write(&d.join(file), list)?,
                Limit::Remove => write(&d.join(file), &parent(file)?)?,
                Limit::Keep => {}
            }
        }
    }
    match upd.pids_max {
        Limit::Set(max) => write(&dir(ctl::PIDS)?.join("pids.max"), &max.to_string())?,
        Limit::Remove => write(&dir(ctl::PIDS)?.join("pids.max"), "max")?,
        Limit::Keep => {}
    }
    if !upd.io_weight.is_keep() {
        let d = dir(ctl::BLKIO)?;
        // The kernel defaults: CFQ 500, BFQ 100.
        let (cfq, bfq) = match upd.io_weight {
            Limit::Set(w) => {
                let v = io_weight_to_blkio(w).to_string();
                (v.clone(), v)
            }
            _ => ("500".to_string(), "100".to_string()),
        };
        if has(&d, "blkio.weight") {
            write(&d.join("blkio.weight"), &cfq)?;
        } else if has(&d, "blkio.bfq.weight") {
            write(&d.join("blkio.bfq.weight"), &bfq)?;
        } else {
            return Err(Error::Unsupported {
                feature: "io_weight",
                path: d.join("blkio.weight"),
            });
        }
    }
    Ok(())
}

/// v1 memory: `memory.memsw.limit_in_bytes` (memory + swap) may never be
/// below `memory.limit_in_bytes`, each write checked against the other's
/// current value; so the one that grows is written first.
fn v1_memory(dir: &Path, upd: &ResourceUpdate) -> Result<()> {
    let limit_file = dir.join("memory.limit_in_bytes");
    let memsw_file = dir.join("memory.memsw.limit_in_bytes");
    let as_v1 = |v: u64| {
        if v >= V1_UNLIMITED {
            "-1".to_string()
        } else {
            v.to_string()
        }
    };
    if !(upd.memory_max.is_keep() && upd.memory_swap.is_keep()) {
        let cur_limit = read_u64(&limit_file)?;
        let has_memsw = memsw_file.exists();
        let cur_memsw = if has_memsw {
            read_u64(&memsw_file)?
        } else {
            u64::MAX
        };
        let new_limit = match upd.memory_max {
            Limit::Set(m) => m,
            Limit::Remove => u64::MAX,
            Limit::Keep => cur_limit,
        };
        // The swap allowance after the update (None = unlimited).
        let swap = match upd.memory_swap {
            Limit::Set(s) => Some(s),
            Limit::Remove => None,
            Limit::Keep if cur_memsw >= V1_UNLIMITED || cur_limit >= V1_UNLIMITED => None,
            Limit::Keep => Some(cur_memsw - cur_limit),
        };
        if let (Some(s), true) = (upd.memory_swap.set(), new_limit >= V1_UNLIMITED) {
            return Err(Error::InvalidResources {
                field: "memory_swap",
                value: s.to_string(),
                reason: "needs a memory limit on cgroup v1 (memory_max)",
            });
        }
        let new_memsw = match swap {
            _ if new_limit >= V1_UNLIMITED => u64::MAX,
            Some(s) => new_limit.saturating_add(s),
            None => u64::MAX,
        };
        if !has_memsw && !upd.memory_swap.is_keep() {
            return Err(Error::Unsupported {
                feature: "memory_swap",
                path: memsw_file,
            });
        }
        let memsw_changes = has_memsw && new_memsw.min(V1_UNLIMITED) != cur_memsw.min(V1_UNLIMITED);
        if memsw_changes && new_limit > cur_memsw {
            write(&memsw_file, &as_v1(new_memsw))?;
            write(&limit_file, &as_v1(new_limit))?;
        } else {
            write(&limit_file, &as_v1(new_limit))?;
            if memsw_changes {
                write(&memsw_file, &as_v1(new_memsw))?;
            }
        }
    }
    match upd.memory_reservation {
        Limit::Set(v) => write(&dir.join("memory.soft_limit_in_bytes"), &v.to_string())?,
        Limit::Remove => write(&dir.join("memory.soft_limit_in_bytes"), "-1")?,
        Limit::Keep => {}
    }
    Ok(())
}

/// The v2 update of the task cgroup `dir`; `enabled` lists its controllers
/// (read from `controllers_file`, named in the error for one missing).
pub(crate) fn apply_v2(
    upd: &ResourceUpdate,
    dir: &Path,
    enabled: &[String],
    controllers_file: &Path,
) -> Result<()> {
    let need = |c: &str| -> Result<()> {
        if enabled.iter().any(|e| e == c) {
            Ok(())
        } else {
            Err(Error::ControllerUnavailable {
                controller: c.to_string(),
                path: controllers_file.to_path_buf(),
            })
        }
    };
    let set = |file: &str, value: String| write(&dir.join(file), &value);
    let max_or = |l: &Limit<u64>| match l {
        Limit::Set(v) => Some(v.to_string()),
        Limit::Remove => Some("max".to_string()),
        Limit::Keep => None,
    };
    if upd.wants_memory() {
        need(ctl::MEMORY)?;
        if let Some(v) = max_or(&upd.memory_max) {
            set("memory.max", v)?;
        }
        if let Some(v) = max_or(&upd.memory_reservation) {
            set("memory.high", v)?;
        }
        if let Some(v) = max_or(&upd.memory_swap) {
            let file = dir.join("memory.swap.max");
            if !file.exists() {
                return Err(Error::Unsupported {
                    feature: "memory_swap",
                    path: file,
                });
            }
            set("memory.swap.max", v)?;
        }
    }
    if upd.wants_cpu() {
        need(ctl::CPU)?;
        match upd.cpu_shares {
            Limit::Set(shares) => set("cpu.weight", shares_to_weight(shares).to_string())?,
            Limit::Remove => set("cpu.weight", "100".into())?,
            Limit::Keep => {}
        }
        match upd.cpus {
            Limit::Set(cpus) => set("cpu.max", format!("{} {CPU_PERIOD_US}", cpu_quota_us(cpus)))?,
            Limit::Remove => set("cpu.max", format!("max {CPU_PERIOD_US}"))?,
            Limit::Keep => {}
        }
    }
    if upd.wants_cpuset() {
        need(ctl::CPUSET)?;
        // An empty v2 cpuset means "the parent's effective set".
        for (limit, file) in [
            (&upd.cpuset_cpus, "cpuset.cpus"),
            (&upd.cpuset_mems, "cpuset.mems"),
        ] {
            match limit {
                Limit::Set(list) => set(file, list.clone())?,
                Limit::Remove => set(file, "\n".into())?,
                Limit::Keep => {}
            }
        }
    }
    if let Some(v) = max_or(&upd.pids_max) {
        need(ctl::PIDS)?;
        set("pids.max", v)?;
    }
    match upd.io_weight {
        Limit::Set(w) => {
            need(ctl::IO)?;
            set("io.weight", format!("default {w}"))?;
        }
        Limit::Remove => {
            need(ctl::IO)?;
            set("io.weight", "default 100".into())?;
        }
        Limit::Keep => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_keeps_sets_and_removes_apart() {
        let upd = ResourceUpdate {
            memory_max: Limit::Set(1 << 20),
            pids_max: Limit::Remove,
            ..ResourceUpdate::default()
        };
        let json = serde_json::to_string(&upd).unwrap();
        assert_eq!(json, r#"{"memory_max":1048576,"pids_max":"max"}"#);
        assert_eq!(serde_json::from_str::<ResourceUpdate>(&json).unwrap(), upd);
        // An older library's plain Resources reads as the same update.
        let old = serde_json::to_string(&Resources {
            memory_max: Some(1 << 20),
            ..Resources::default()
        })
        .unwrap();
        assert_eq!(
            serde_json::from_str::<ResourceUpdate>(&old).unwrap(),
            ResourceUpdate {
                memory_max: Limit::Set(1 << 20),
                ..ResourceUpdate::default()
            }
        );
        assert!(serde_json::from_str::<ResourceUpdate>(r#"{"pids_max":"lots"}"#).is_err());
    }

    /// A v1 memory directory of plain files (cgroupfs stand-in).
    fn v1_dir(limit: &str, memsw: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (f, v) in [
            ("memory.limit_in_bytes", limit),
            ("memory.memsw.limit_in_bytes", memsw),
            ("memory.soft_limit_in_bytes", "9223372036854771712"),
        ] {
            std::fs::write(d.path().join(f), v).unwrap();
        }
        d
    }

    fn v1_read(d: &tempfile::TempDir) -> (String, String) {
        let r = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap();
        (r("memory.limit_in_bytes"), r("memory.memsw.limit_in_bytes"))
    }

    #[test]
    fn v1_memory_keeps_swap_sets_swap_alone_and_removes() {
        let unlimited = "9223372036854771712";
        // 100 + 50 swap; memory alone to 200 keeps the 50.
        let d = v1_dir("100", "150");
        let upd = ResourceUpdate {
            memory_max: Limit::Set(200),
            ..ResourceUpdate::default()
        };
        v1_memory(d.path(), &upd).unwrap();
        assert_eq!(v1_read(&d), ("200".into(), "250".into()));
        // Swap alone: memsw = limit + swap.
        let upd = ResourceUpdate {
            memory_swap: Limit::Set(0),
            ..ResourceUpdate::default()
        };
        v1_memory(d.path(), &upd).unwrap();
        assert_eq!(v1_read(&d), ("200".into(), "200".into()));
        // Removing memory removes memsw too.
        let upd = ResourceUpdate {
            memory_max: Limit::Remove,
            ..ResourceUpdate::default()
        };
        v1_memory(d.path(), &upd).unwrap();
        assert_eq!(v1_read(&d), ("-1".into(), "-1".into()));
        // Swap without a memory limit cannot be had on v1.
        let d = v1_dir(unlimited, unlimited);
        let upd = ResourceUpdate {
            memory_swap: Limit::Set(10),
            ..ResourceUpdate::default()
        };
        let err = v1_memory(d.path(), &upd).unwrap_err();
        assert!(err.to_string().contains("memory_swap"), "{err}");
        // Memory set with swap unlimited leaves memsw alone.
        let upd = ResourceUpdate {
            memory_max: Limit::Set(300),
            memory_reservation: Limit::Remove,
            ..ResourceUpdate::default()
        };
        v1_memory(d.path(), &upd).unwrap();
        assert_eq!(v1_read(&d), ("300".into(), unlimited.into()));
        let soft = std::fs::read_to_string(d.path().join("memory.soft_limit_in_bytes")).unwrap();
        assert_eq!(soft, "-1");
    }

    #[test]
    fn validation() {
        let swap_alone = ResourceUpdate {
            memory_swap: Limit::Set(0),
            ..ResourceUpdate::default()
        };
        assert!(swap_alone.validate().is_ok());
        let swap_without_memory = ResourceUpdate {
            memory_max: Limit::Remove,
            memory_swap: Limit::Set(1),
            ..ResourceUpdate::default()
        };
        assert!(swap_without_memory.validate().is_err());
        let zero = ResourceUpdate {
            memory_max: Limit::Set(0),
            ..ResourceUpdate::default()
        };
        assert!(zero.validate().is_err());
    }
}
