//! The cgroup v1 backend: the task has one directory in each controller hierarchy
//! it uses, `<root>/<mount>/<parent>/<id>`.
//!
//! Hierarchies used (cgroups(7), Documentation/admin-guide/cgroup-v1/):
//! * `freezer` — always, and required even with `best_effort`: killing a task
//!   without racing its forks needs it;
//! * `devices` — always, required likewise: the device rules (`devices.rs`)
//!   are what keeps a root task from opening the host's devices;
//! * `memory`, `cpu`, `cpuacct`, `pids` — always when mounted (OOM detection and
//!   [`Stats`]); required when a limit needs them;
//! * `cpuset` and `blkio` — only when a limit needs them.
//!
//! A controller's mount is `<root>/<name>` (a directory or, as systemd makes them,
//! a symlink to a co-mount such as `cpu,cpuacct`), else a directory of `<root>`
//! whose comma-separated name lists it. Co-mounted controllers share one directory.
//!
//! Files written: in every directory we create, nothing but (in `cpuset`) copies of
//! the parent's `cpuset.cpus` and `cpuset.mems` — a new cpuset cgroup starts with
//! empty sets, and joining it fails with `ENOSPC` until they are filled. In the task
//! directories: the limits, `freezer.state` when killing. Nothing in directories we
//! did not create.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use super::detect::CgroupRoot;
use super::error::{Error, Result};
use super::files::{self, has, keyed, read, read_opt, read_u64, read_u64_opt, write};
use super::paths::relative_to;
use super::resources::{cpu_quota_us, ctl, io_weight_to_blkio, Resources, CPU_PERIOD_US};
use super::stats::{self, CpuStats, MemoryStats, PidsStats, Stats};
use super::{fail_or_warn, kill_loop, tree};

/// Controllers joined for accounting even when no limit needs them.
const ACCOUNTING: [&str; 4] = [ctl::MEMORY, ctl::CPU, ctl::CPUACCT, ctl::PIDS];

/// Every v1 controller a task cgroup may be made in (cgroups(7)), for finding
/// a leftover wherever it is.
const ALL_CONTROLLERS: [&str; 13] = [
    "freezer",
    "memory",
    "cpu",
    "cpuacct",
    "pids",
    "cpuset",
    "blkio",
    "devices",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
];

/// One hierarchy the task is in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    /// The controllers of this mount the task uses (`["cpu", "cpuacct"]` if co-mounted).
    controllers: Vec<String>,
    /// The mount point, e.g. `/sys/fs/cgroup/memory`.
    mount: PathBuf,
    /// `<parent>/<id>` below the mount.
    rel: PathBuf,
}

impl Hierarchy {
    fn dir(&self) -> PathBuf {
        self.mount.join(&self.rel)
    }
}

/// A task's cgroups in the v1 hierarchies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cgroup {
    root: CgroupRoot,
    /// Freezer first.
    hierarchies: Vec<Hierarchy>,
}

/// The mount point of `controller` under `root`, if it is mounted there.
fn find_mount(root: &Path, controller: &str) -> Option<PathBuf> {
    find_mount_listed(root, controller, &mut None)
}

/// [`find_mount`], with the sorted listing of `root` (needed only for a
/// controller that is neither a directory nor a link of its own name there)
/// read at most once into `listing` for all the controllers of one call site.
fn find_mount_listed(
    root: &Path,
    controller: &str,
    listing: &mut Option<Vec<std::ffi::OsString>>,
) -> Option<PathBuf> {
    let is_mount = |p: &Path| p.join("cgroup.procs").is_file();
    let direct = root.join(controller);
    // systemd's symlinks (`cpu -> cpu,cpuacct`): use the directory they point to,
    // so that co-mounted controllers are recognised as one hierarchy.
    if let Ok(target) = fs::read_link(&direct) {
        let mut parts = target.components();
        if let (Some(Component::Normal(name)), None) = (parts.next(), parts.next()) {
            let p = root.join(name);
            if is_mount(&p) {
                return Some(p);
            }
        }
    } else if is_mount(&direct) {
        return Some(direct);
    }
    if listing.is_none() {
        let entries = fs::read_dir(root).ok()?;
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        *listing = Some(names);
    }
    listing.as_deref()?.iter().find_map(|n| {
        let name = n.to_str()?;
        let p = root.join(name);
        (name.split(',').any(|c| c == controller) && is_mount(&p)).then_some(p)
    })
}

/// Add `controller` at `mount` to the hierarchy list (co-mounts share an entry).
fn add(hierarchies: &mut Vec<Hierarchy>, controller: &str, mount: PathBuf, rel: &Path) {
    match hierarchies.iter_mut().find(|h| h.mount == mount) {
        Some(h) => h.controllers.push(controller.to_string()),
        None => hierarchies.push(Hierarchy {
            controllers: vec![controller.to_string()],
            mount,
            rel: rel.to_path_buf(),
        }),
    }
}

/// One order whatever the source: the freezer's hierarchy first (killing starts
/// there), the others by mount point; controllers sorted.
fn canonical(mut hierarchies: Vec<Hierarchy>) -> Vec<Hierarchy> {
    for h in &mut hierarchies {
        h.controllers.sort();
    }
    let is_freezer = |h: &Hierarchy| h.controllers.iter().any(|c| c == ctl::FREEZER);
    hierarchies.sort_by(|a, b| (!is_freezer(a), &a.mount).cmp(&(!is_freezer(b), &b.mount)));
    hierarchies
}

impl Cgroup {
    /// Create `<mount>/<parent>/<id>` in each hierarchy used (module docs).
    pub(crate) fn create(
        root: &CgroupRoot,
        parent: &Path,
        id: &Path,
        res: &Resources,
        best_effort: bool,
        warnings: &mut Vec<Error>,
    ) -> Result<Cgroup> {
        let rel = parent.join(id);
        // (name, required). The device controller always: it is what keeps a
        // root task from opening host devices (devices.rs).
        let mut wanted: Vec<(&str, bool)> = vec![(ctl::FREEZER, true), (ctl::DEVICES, true)];
        for c in ACCOUNTING {
            let needed = match c {
                ctl::MEMORY => res.wants_memory(),
                ctl::CPU => res.wants_cpu(),
                ctl::PIDS => res.pids_max.is_some(),
                _ => false,
            };
            wanted.push((c, needed));
        }
        if res.wants_cpuset() {
            wanted.push((ctl::CPUSET, true));
        }
        if res.io_weight.is_some() {
            wanted.push((ctl::BLKIO, true));
        }

        // Find the mounts; refuse a missing one before any mkdir. The limits of a
        // controller skipped with `best_effort` are dropped here, reported once.
        let mut res = res.clone();
        let mut hierarchies = Vec::new();
        for (c, required) in wanted {
            match find_mount(&root.path, c) {
                Some(mount) => add(&mut hierarchies, c, mount, &rel),
                None => {
                    let e = Error::ControllerUnavailable {
                        controller: c.to_string(),
                        path: root.path.join(c),
                    };
                    let always = c == ctl::FREEZER || c == ctl::DEVICES;
                    let tolerate = !always && (best_effort || !required);
                    fail_or_warn(e, tolerate, warnings)?;
                    drop_limits(&mut res, c);
                }
            }
        }
        let cg = Cgroup {
            root: root.clone(),
            hierarchies: canonical(hierarchies),
        };

        // Swap accounting is a kernel option: check for its file up front too.
        if res.memory_swap.is_some() {
            if let Some(mem) = cg.hierarchy(ctl::MEMORY) {
                let file = mem.mount.join("memory.memsw.limit_in_bytes");
                if !file.exists() {
                    let e = Error::Unsupported {
                        feature: "memory_swap",
                        path: file,
                    };
                    fail_or_warn(e, best_effort, warnings)?;
                    res.memory_swap = None;
                }
            }
        }

        let mut created = Vec::new();
        let result = cg
            .make_dirs(&mut created)
            .and_then(|()| cg.apply(&res, best_effort, warnings));
        if let Err(e) = result {
            for dir in created.iter().rev() {
                // The creation's error is what the caller gets; a directory
                // left behind is logged (a later start of the id kills and
                // removes it as a leftover).
                if let Err(rm) = files::rmdir(root, dir) {
                    log::warn!("cgroup creation rolled back, but {rm}");
                }
            }
            return Err(e);
        }
        Ok(cg)
    }

    /// `mkdir` the missing parents and the task directory in each hierarchy,
    /// recording what was created (for rollback).
    fn make_dirs(&self, created: &mut Vec<PathBuf>) -> Result<()> {
        for h in &self.hierarchies {
            let is_cpuset = h.controllers.iter().any(|c| c == ctl::CPUSET);
            // The common case: the parents are there (an earlier start made
            // them). One mkdir, without a look at each parent first; the
            // walk below only when one is missing.
            let leaf = h.mount.join(&h.rel);
            match files::mkdir(&self.root, &leaf) {
                Ok(()) => {
                    created.push(leaf.clone());
                    if is_cpuset {
                        if let Some(parent) = leaf.parent() {
                            for file in ["cpuset.cpus", "cpuset.mems"] {
                                let value = read(&parent.join(file))?;
                                write(&leaf.join(file), value.trim())?;
                            }
                        }
                    }
                    continue;
                }
                Err(Error::Mkdir { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
                }
                Err(e) => return Err(e),
            }
            let mut dir = h.mount.clone();
            let mut components = h.rel.components().peekable();
            while let Some(c) = components.next() {
                let parent = dir.clone();
                dir.push(c);
                let last = components.peek().is_none();
                if !last && dir.is_dir() {
                    continue; // an existing parent: not ours, not touched
                }
                if last {
                    files::mkdir(&self.root, &dir)?;
                } else if !files::mkdir_parent(&self.root, &dir)? {
                    continue; // made a moment ago by a concurrent start
                }
                created.push(dir.clone());
                if is_cpuset {
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let value = read(&parent.join(file))?;
                        write(&dir.join(file), value.trim())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reopen from recorded paths: each must lie strictly inside its controller's
    /// mount under `root`; the freezer must be among them.
    pub(crate) fn from_paths(
        root: &CgroupRoot,
        paths: &BTreeMap<String, PathBuf>,
    ) -> Result<Cgroup> {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for (c, path) in paths {
            let mount = find_mount(&root.path, c).ok_or_else(|| Error::ControllerUnavailable {
                controller: c.clone(),
                path: root.path.join(c),
            })?;
            let rel = relative_to(path, &mount)?;
            if let Some(h) = hierarchies.iter().find(|h| h.mount == mount) {
                if h.rel != rel {
                    return Err(Error::OutsideRoot {
                        path: path.clone(),
                        root: h.dir(),
                    });
                }
            }
            add(&mut hierarchies, c, mount, &rel);
        }
        Cgroup::freezer_first(root, hierarchies)
    }

    /// The cgroup of `hierarchies` (made canonical), which must include the
    /// freezer: it is what kills the task (docs/cgroups.md).
    fn freezer_first(root: &CgroupRoot, hierarchies: Vec<Hierarchy>) -> Result<Cgroup> {
        let hierarchies = canonical(hierarchies);
        if !hierarchies
            .first()
            .is_some_and(|h| h.controllers.iter().any(|c| c == ctl::FREEZER))
        {
            return Err(Error::ControllerUnavailable {
                controller: ctl::FREEZER.to_string(),
                path: root.path.join(ctl::FREEZER),
            });
        }
        Ok(Cgroup {
            root: root.clone(),
            hierarchies,
        })
    }

    /// `<mount>/<rel>` in every hierarchy of a known controller mounted under
    /// `root` (whether that directory exists or not), freezer first: where a
    /// leftover of task cgroup `rel` can be, whatever limits made it.
    pub(crate) fn everywhere(root: &CgroupRoot, rel: &Path) -> Result<Cgroup> {
        let mut hierarchies = Vec::new();
        // One listing of the root for every controller this host lacks
        // (v1 hosts often mount only some: net_cls, rdma...).
        let mut listing = None;
        for c in ALL_CONTROLLERS {
            if let Some(mount) = find_mount_listed(&root.path, c, &mut listing) {
                add(&mut hierarchies, c, mount, rel);
            }
        }
        Cgroup::freezer_first(root, hierarchies)
    }

    /// The cgroup root this cgroup is under.
    pub(crate) fn root(&self) -> &CgroupRoot {
        &self.root
    }

    pub(crate) fn paths(&self) -> BTreeMap<String, PathBuf> {
        let mut map = BTreeMap::new();
        for h in &self.hierarchies {
            for c in &h.controllers {
                map.insert(c.clone(), h.dir());
            }
        }
        map
    }

    fn hierarchy(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
    }

    /// The task directory in `controller`'s hierarchy, if the task is in it.
    fn dir_of(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchy(controller).map(Hierarchy::dir)
    }

    /// The task directory in the `devices` hierarchy (the device rules go there).
    pub(crate) fn devices_dir(&self) -> Result<PathBuf> {
        self.dir_of(ctl::DEVICES)
            .ok_or_else(|| Error::ControllerUnavailable {
                controller: ctl::DEVICES.to_string(),
                path: self.root.path.join(ctl::DEVICES),
            })
    }

    /// One task directory per hierarchy.
    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(Hierarchy::dir).collect()
    }

    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().iter().map(|d| d.join("cgroup.procs")).collect()
    }

    pub(crate) fn freezer_dir(&self) -> PathBuf {
        self.hierarchies[0].dir()
    }

    /// Live update; each limit's controller must be one the task is in.
    pub(crate) fn update(&self, upd: &super::ResourceUpdate) -> Result<()> {
        super::update::apply_v1(
            upd,
            |c| self.dir_of(c),
            |c| Error::ControllerUnavailable {
                controller: c.to_string(),
                path: self.root.path.join(c),
            },
        )
    }

    /// Write the limits of `res`. A limit whose hierarchy the task is not in is
    /// [`Error::ControllerUnavailable`] (a warning when `best_effort`).
    fn apply(&self, res: &Resources, best_effort: bool, warnings: &mut Vec<Error>) -> Result<()> {
        let dir = |c: &str, warnings: &mut Vec<Error>| -> Result<Option<PathBuf>> {
            match self.dir_of(c) {
                Some(d) => Ok(Some(d)),
                None => {
                    let e = Error::ControllerUnavailable {
                        controller: c.to_string(),
                        path: self.root.path.join(c),
                    };
                    fail_or_warn(e, best_effort, warnings).map(|()| None)
                }
            }
        };

        if res.wants_memory() {
            if let Some(d) = dir(ctl::MEMORY, warnings)? {
                set_memory(&d, res, best_effort, warnings)?;
            }
        }
        if res.wants_cpu() {
            if let Some(d) = dir(ctl::CPU, warnings)? {
                if let Some(shares) = res.cpu_shares {
                    write(&d.join("cpu.shares"), &shares.to_string())?;
                }
                if let Some(cpus) = res.cpus {
                    write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&d.join("cpu.cfs_quota_us"), &cpu_quota_us(cpus).to_string())?;
                }
            }
        }
        if res.wants_cpuset() {
            if let Some(d) = dir(ctl::CPUSET, warnings)? {
                if let Some(cpus) = &res.cpuset_cpus {
                    write(&d.join("cpuset.cpus"), cpus)?;
                }
                if let Some(mems) = &res.cpuset_mems {
                    write(&d.join("cpuset.mems"), mems)?;
                }
            }
        }
        if let Some(max) = res.pids_max {
            if let Some(d) = dir(ctl::PIDS, warnings)? {
                write(&d.join("pids.max"), &max.to_string())?;
            }
        }
        if let Some(w) = res.io_weight {
            if let Some(d) = dir(ctl::BLKIO, warnings)? {
                // CFQ's blkio.weight (10..=1000) on older kernels; with blk-mq only
                // BFQ's blkio.bfq.weight (1..=1000); neither without those schedulers.
                let value = io_weight_to_blkio(w).to_string();
                if has(&d, "blkio.weight") {
                    write(&d.join("blkio.weight"), &value)?;
                } else if has(&d, "blkio.bfq.weight") {
                    write(&d.join("blkio.bfq.weight"), &value)?;
                } else {
                    let e = Error::Unsupported {
                        feature: "io_weight",
                        path: d.join("blkio.weight"),
                    };
                    fail_or_warn(e, best_effort, warnings)?;
                }
            }
        }
        Ok(())
    }

    /// Kill every process: freeze, SIGKILL each pid, thaw — repeated until no
    /// hierarchy lists a process (a process forked while we read can only appear
    /// in a later round, never escape: it inherits the cgroups).
    ///
    /// The whole subtree: the pids of every sub-cgroup of every hierarchy are
    /// killed (a process the task moved into `<task>/foo` of the memory
    /// hierarchy is listed there, not in `<task>/cgroup.procs`). The v1 freezer
    /// is hierarchical (freezing `<task>` freezes its descendants,
    /// Documentation/admin-guide/cgroup-v1/freezer-subsystem.rst), but a
    /// sub-cgroup the task froze itself stays frozen when `<task>` is thawed,
    /// and a frozen process cannot die: every sub-cgroup is thawed too.
    pub(crate) fn kill_all(&self, timeout: Duration) -> Result<()> {
        let freezer = self.freezer_dir();
        let procs = self.procs_files();
        if !self.dirs().iter().any(|d| d.exists()) {
            return Ok(());
        }
        kill_loop(&procs, &freezer, timeout, || {
            // FROZEN is reached asynchronously (FREEZING in between). Frozen, no
            // process can fork or exit, so no listed pid can be reused before the
            // kill. If it does not settle within a second (a task in an
            // uninterruptible sleep), kill what is listed anyway.
            self.freeze_begin()?;
            files::wait_until(Instant::now() + Duration::from_secs(1), || {
                self.freeze_settled()
            })?;
            self.kill_listed_and_thaw()
        })
    }

    /// A kill round's first step: ask the freezer to freeze the task. A
    /// freezer directory that is gone (a leftover made without one) is not
    /// frozen, and needs no freezing.
    pub(crate) fn freeze_begin(&self) -> Result<()> {
        match write(&self.freezer_dir().join("freezer.state"), "FROZEN") {
            Err(e) if tree::gone(&e) => Ok(()),
            other => other,
        }
    }

    /// Whether the freeze asked by [`freeze_begin`](Self::freeze_begin) has
    /// settled (`FROZEN`, not `FREEZING`); a freezer gone counts as frozen.
    pub(crate) fn freeze_settled(&self) -> Result<bool> {
        match read(&self.freezer_dir().join("freezer.state")) {
            Ok(s) => Ok(s.trim() == "FROZEN"),
            Err(e) if tree::gone(&e) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// SIGKILL to every process listed in any hierarchy's subtree, then thaw
    /// the task's freezer cgroup and each sub-cgroup (SIGKILL is delivered
    /// once thawed; one frozen on its own stays frozen otherwise).
    pub(crate) fn kill_listed_and_thaw(&self) -> Result<()> {
        let freezer = self.freezer_dir();
        crate::failpoint!("cgroup-kill-frozen");
        let mut killed = Ok(());
        for p in tree::expand_procs(&self.procs_files()) {
            killed = killed.and_then(|()| match files::read_pids(&p) {
                Ok(pids) => files::kill_pids(&pids, &freezer),
                Err(e) if tree::gone(&e) => Ok(()),
                Err(e) => Err(e),
            });
        }
        let mut thawed = Ok(());
        for d in tree::subtree(&freezer) {
            thawed = thawed.and_then(|()| match write(&d.join("freezer.state"), "THAWED") {
                Err(e) if tree::gone(&e) => Ok(()),
                other => other,
            });
        }
        killed.and(thawed)
    }

    /// `memory.oom_control`'s `oom_kill` counter (Linux ≥ 4.13); 0 without memory.
    pub(crate) fn oom_kills(&self) -> Result<u64> {
        let Some(d) = self.dir_of(ctl::MEMORY) else {
            return Ok(0);
        };
        Ok(read_opt(&d.join("memory.oom_control"))?
            .and_then(|s| keyed(&s, "oom_kill"))
            .unwrap_or(0))
    }

    pub(crate) fn stats(&self) -> Result<Stats> {
        let cpu = match self.dir_of(ctl::CPUACCT) {
            None => None,
            Some(d) => {
                let usage_ns = read_u64(&d.join("cpuacct.usage"))?;
                // cpuacct.usage_{user,sys} (ns, Linux ≥ 4.6) are exact; cpuacct.stat
                // is in USER_HZ ticks.
                let (user_ns, system_ns) = match (
                    read_u64_opt(&d.join("cpuacct.usage_user"))?,
                    read_u64_opt(&d.join("cpuacct.usage_sys"))?,
                ) {
                    (Some(u), Some(s)) => (u, s),
                    _ => stats::parse_v1_cpuacct_stat(
                        &read(&d.join("cpuacct.stat"))?,
                        stats::clock_ticks(),
                    ),
                };
                let (nr_periods, nr_throttled, throttled_ns) = match self.dir_of(ctl::CPU) {
                    Some(c) => read_opt(&c.join("cpu.stat"))?
                        .map(|s| stats::parse_v1_cpu_stat(&s))
                        .unwrap_or_default(),
                    None => (0, 0, 0),
                };
                Some(CpuStats {
                    usage_ns,
                    user_ns,
                    system_ns,
                    nr_periods,
                    nr_throttled,
                    throttled_ns,
                })
            }
        };
        let memory = match self.dir_of(ctl::MEMORY) {
            None => None,
            Some(d) => {
                let (rss, cache, swap) =
                    stats::parse_v1_memory_stat(&read(&d.join("memory.stat"))?);
                Some(MemoryStats {
                    current: read_u64(&d.join("memory.usage_in_bytes"))?,
                    peak: read_u64_opt(&d.join("memory.max_usage_in_bytes"))?,
                    rss,
                    cache,
                    swap,
                })
            }
        };
        let pids = match self.dir_of(ctl::PIDS) {
            None => None,
            Some(d) => Some(PidsStats {
                current: read_u64(&d.join("pids.current"))?,
            }),
        };
        Ok(Stats { cpu, memory, pids })
    }

    /// `rmdir` the task directory of every hierarchy, each with its
    /// sub-cgroups deepest first (after the caller killed everything); all are
    /// attempted, the first error is returned.
    /// `rmdir(2)` of the task's directory in every hierarchy, the freezer's
    /// last, stopping at the first the kernel refuses: whether all are gone.
    /// The kernel refuses (`EBUSY`) a cgroup that has a process or a child
    /// cgroup, so success proves there was nothing to kill or to walk; with
    /// the freezer's directory kept until the end, a refusal leaves the
    /// usual freeze-kill path intact. Never on a fixture, whose files prove
    /// nothing.
    pub(crate) fn rmdir_if_empty(&self) -> Result<bool> {
        if self.root.fixture {
            return Ok(false);
        }
        for d in self.dirs().iter().rev() {
            if !files::rmdir_if_empty(&self.root, d)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(crate) fn rmdir(&self) -> Result<()> {
        let mut result = Ok(());
        for d in self.dirs() {
            let r = tree::remove_subtree(&self.root, &d).map(drop);
            result = result.and(r);
        }
        result
    }

    pub(crate) fn remove_parents_if_empty(&self) -> Result<()> {
        for h in &self.hierarchies {
            super::remove_empty_ancestors(&self.root, &h.mount, &h.rel)?;
        }
        Ok(())
    }
}

/// Forget the limits that need `controller`.
fn drop_limits(res: &mut Resources, controller: &str) {
    match controller {
        ctl::MEMORY => {
            (res.memory_max, res.memory_reservation, res.memory_swap) = (None, None, None)
        }
        ctl::CPU => (res.cpu_shares, res.cpus) = (None, None),
        ctl::CPUSET => (res.cpuset_cpus, res.cpuset_mems) = (None, None),
        ctl::PIDS => res.pids_max = None,
        ctl::BLKIO => res.io_weight = None,
        _ => {}
    }
}

/// v1 memory limits. `memory.memsw.limit_in_bytes` (memory + swap) must never be
/// below `memory.limit_in_bytes`, and the kernel checks each write against the
/// other's *current* value (EINVAL otherwise). So when the new memory limit is
/// above the current memsw limit, memsw is raised first; otherwise memory is set
/// first (lowering both, or raising memory within the current memsw).
fn set_memory(
    dir: &Path,
    res: &Resources,
    best_effort: bool,
    warnings: &mut Vec<Error>,
) -> Result<()> {
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if let Some(max) = res.memory_max {
        match res.memory_swap {
            // Validation guarantees max + swap does not overflow.
            Some(swap) if memsw.exists() => {
                let total = max.saturating_add(swap);
                if max > read_u64(&memsw)? {
                    write(&memsw, &total.to_string())?;
                    write(&limit, &max.to_string())?;
                } else {
                    write(&limit, &max.to_string())?;
                    write(&memsw, &total.to_string())?;
                }
            }
            Some(_) => {
                write(&limit, &max.to_string())?;
                let e = Error::Unsupported {
                    feature: "memory_swap",
                    path: memsw,
                };
                fail_or_warn(e, best_effort, warnings)?;
            }
            None => write(&limit, &max.to_string())?,
        }
    }
    if let Some(soft) = res.memory_reservation {
        write(&dir.join("memory.soft_limit_in_bytes"), &soft.to_string())?;
    }
    Ok(())
}
