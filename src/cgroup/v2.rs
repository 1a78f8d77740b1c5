//! The cgroup v2 backend: one directory in the unified hierarchy.
//!
//! Files written (cgroup-v2(7), Documentation/admin-guide/cgroup-v2.rst):
//! * for each controller the task uses, down the chain of existing directories
//!   from the root to the deepest pre-existing ancestor of the task cgroup: the
//!   `cgroup.subtree_control` of the deepest one whose `cgroup.controllers` lists
//!   it, then of each directory below it down to that ancestor — `+<controller>`
//!   where not yet enabled, one write per controller and directory, only
//!   additions. Without it no controller reaches the cgroups below. Every
//!   directory below the root in that chain is part of the configured parent
//!   path (a parent left by an earlier task that did not use the controller, say
//!   `--cpuset-cpus` after a task without it); the first one written may be the
//!   root or a cgroup we did not create, the only such file ever written. A write
//!   fails with `EBUSY` in a cgroup other than the root that has processes of its
//!   own ("no internal processes" rule): [`Error::InternalProcesses`] names it.
//!   Enabled controllers are left enabled on removal.
//! * each parent cgroup we create: the same `+<controller>` in `cgroup.subtree_control`;
//! * the task cgroup: the limits (`memory.max`, `memory.high`, `memory.swap.max`,
//!   `memory.oom.group` = 1, `cpu.weight`, `cpu.max`, `cpuset.cpus`, `cpuset.mems`,
//!   `pids.max`, `io.weight`), `cgroup.kill` or `cgroup.freeze` when killing.
//!
//! The controllers used are those the limits need plus `memory`, `cpu` and `pids`
//! for accounting (OOM detection and [`Stats`]), when available.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::detect::CgroupRoot;
use super::error::{Error, Result};
use super::files::{self, has, keyed, read, read_opt, read_u64_opt, words, write};
use super::resources::{cpu_quota_us, ctl, shares_to_weight, Resources, CPU_PERIOD_US};
use super::stats::{self, MemoryStats, PidsStats, Stats};
use super::{fail_or_warn, kill_loop, tree};

/// Controllers enabled for accounting even when no limit needs them.
const ACCOUNTING: [&str; 3] = [ctl::MEMORY, ctl::CPU, ctl::PIDS];

/// A task's cgroup in the unified hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cgroup {
    root: CgroupRoot,
    /// `<parent>/<id>`, relative to the root.
    rel: PathBuf,
}

/// The controllers `res` needs.
fn required(res: &Resources) -> Vec<&'static str> {
    let mut v = Vec::new();
    if res.wants_memory() {
        v.push(ctl::MEMORY);
    }
    if res.wants_cpu() {
        v.push(ctl::CPU);
    }
    if res.wants_cpuset() {
        v.push(ctl::CPUSET);
    }
    if res.pids_max.is_some() {
        v.push(ctl::PIDS);
    }
    if res.io_weight.is_some() {
        v.push(ctl::IO);
    }
    v
}

impl Cgroup {
    /// Create `<root>/<parent>/<id>` (see the module docs for what is written).
    pub(crate) fn create(
        root: &CgroupRoot,
        parent: &Path,
        id: &Path,
        res: &Resources,
        best_effort: bool,
        warnings: &mut Vec<Error>,
    ) -> Result<Cgroup> {
        let rel = parent.join(id);
        // The deepest existing ancestor, and the directories to create below it.
        let mut existing = root.path.clone();
        let mut to_create = Vec::new();
        for dir in rel
            .ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .skip(1)
        {
            let abs = root.path.join(dir);
            if to_create.is_empty() && abs.is_dir() && dir != rel {
                existing = abs;
            } else {
                to_create.push(abs);
            }
        }

        // The existing directories from the root down to that ancestor: all
        // but the root lie in the configured parent path.
        let chain: Vec<PathBuf> = rel
            .ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|dir| root.path.join(dir))
            .filter(|abs| existing.starts_with(abs))
            .collect();

        // What reaches the ancestor, or can be handed down to it. A limit's
        // controller that is missing is an error before any mkdir (a warning
        // with `best_effort`); a missing accounting controller is always just
        // a warning.
        let required = required(res);
        let tolerate = |c: &str| best_effort || !required.contains(&c);
        let (mut controllers, mut subtrees) = (Vec::new(), Vec::new());
        for dir in &chain {
            controllers.push(words(&read(&dir.join("cgroup.controllers"))?));
            subtrees.push(words(&read(&dir.join("cgroup.subtree_control"))?));
        }
        let mut enable = Vec::new();
        for c in required.iter().chain(ACCOUNTING.iter()) {
            if enable.iter().any(|(e, _)| e == c) {
                continue;
            }
            // The deepest directory of the chain that offers it.
            match controllers.iter().rposition(|a| a.iter().any(|a| a == c)) {
                Some(from) => enable.push((*c, from)),
                None => {
                    let e = Error::ControllerUnavailable {
                        controller: c.to_string(),
                        path: root.path.join("cgroup.controllers"),
                    };
                    fail_or_warn(e, tolerate(c), warnings)?;
                }
            }
        }

        // Enable each down the chain, from the deepest directory that offers
        // it to the ancestor (only where not yet enabled): a parent left by
        // an earlier task that did not use it does not offer it to its
        // children until its own parent hands it down.
        let mut enabled = Vec::new();
        'controllers: for (c, from) in enable {
            for (dir, subtree) in chain.iter().zip(subtrees.iter_mut()).skip(from) {
                if subtree.iter().any(|a| a == c) {
                    continue;
                }
                if let Err(e) = enable_controller(root, dir, c) {
                    fail_or_warn(e, tolerate(c), warnings)?;
                    continue 'controllers;
                }
                subtree.push(c.to_string());
            }
            enabled.push(c);
        }

        let cg = Cgroup {
            root: root.clone(),
            rel,
        };
        let mut created = Vec::new();
        let result = (|| {
            for dir in &to_create {
                if *dir == cg.dir() {
                    files::mkdir(root, dir)?;
                    created.push(dir.clone());
                } else if files::mkdir_parent(root, dir)? {
                    created.push(dir.clone());
                }
                if *dir != cg.dir() {
                    for c in &enabled {
                        enable_controller(root, dir, c)?;
                    }
                }
            }
            // Controllers left out were reported above.
            apply(&cg.dir(), res, &enabled, None, best_effort, warnings)?;
            if enabled.contains(&ctl::MEMORY) {
                // Kill the whole task on OOM, not one arbitrary process of it.
                write(&cg.dir().join("memory.oom.group"), "1")?;
            }
            Ok(())
        })();
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

    /// Reopen from a recorded path, which must lie strictly inside the root.
    pub(crate) fn from_path(root: &CgroupRoot, path: &Path) -> Result<Cgroup> {
        let rel = super::paths::relative_to(path, &root.path)?;
        Ok(Cgroup {
            root: root.clone(),
            rel,
        })
    }

    /// The cgroup root this cgroup is under.
    pub(crate) fn root(&self) -> &CgroupRoot {
        &self.root
    }

    /// The task's directory.
    pub(crate) fn dir(&self) -> PathBuf {
        self.root.path.join(&self.rel)
    }

    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        vec![self.dir().join("cgroup.procs")]
    }

    /// Live update: each limit's controller must be enabled for this cgroup.
    pub(crate) fn update(&self, upd: &super::ResourceUpdate) -> Result<()> {
        let dir = self.dir();
        let controllers_file = dir.join("cgroup.controllers");
        let available = words(&read(&controllers_file)?);
        super::update::apply_v2(upd, &dir, &available, &controllers_file)
    }

    /// Kill every process: `cgroup.kill` (Linux ≥ 5.14), else freeze-kill-thaw.
    pub(crate) fn kill_all(&self, timeout: Duration) -> Result<()> {
        let dir = self.dir();
        if !dir.exists() {
            return Ok(());
        }
        if self.has_kill_file() {
            kill_loop(&self.procs_files(), &dir, timeout, || self.kill_write())
        } else {
            self.kill_by_freezing(timeout)
        }
    }

    /// Whether `cgroup.kill` exists (Linux ≥ 5.14).
    pub(crate) fn has_kill_file(&self) -> bool {
        has(&self.dir(), "cgroup.kill")
    }

    /// Writing "1" to `cgroup.kill` SIGKILLs every process of the cgroup and
    /// its descendants, atomically with respect to fork (cgroup-v2(7)).
    pub(crate) fn kill_write(&self) -> Result<()> {
        let killed = match write(&self.dir().join("cgroup.kill"), "1") {
            Err(e) if tree::gone(&e) => Ok(()),
            other => other,
        };
        crate::failpoint!("cgroup-kill-frozen");
        killed
    }

    /// For kernels without `cgroup.kill`: freeze (so that no process forks or exits
    /// and no pid is reused while we read the list), SIGKILL each listed pid, thaw
    /// (the kills are delivered on thaw).
    pub(crate) fn kill_by_freezing(&self, timeout: Duration) -> Result<()> {
        let dir = self.dir();
        let procs = self.procs_files();
        kill_loop(&procs, &dir, timeout, || {
            self.freeze_begin()?;
            // Freezing is asynchronous: `cgroup.events` says `frozen 1` once done.
            // If it never settles (a task stuck in the kernel), kill anyway.
            files::wait_until(Instant::now() + Duration::from_secs(1), || {
                self.freeze_settled()
            })?;
            self.kill_listed_and_thaw()
        })
    }

    /// A freezing kill round's first step: `cgroup.freeze` = 1 (a cgroup
    /// removed meanwhile, ENOENT/ENODEV, is gone: nothing to do).
    pub(crate) fn freeze_begin(&self) -> Result<()> {
        match write(&self.dir().join("cgroup.freeze"), "1") {
            Err(e) if tree::gone(&e) => Ok(()),
            other => other,
        }
    }

    /// Whether `cgroup.events` says `frozen 1`; a cgroup gone counts as frozen.
    pub(crate) fn freeze_settled(&self) -> Result<bool> {
        match read(&self.events_file()) {
            Ok(s) => Ok(keyed(&s, "frozen") == Some(1)),
            Err(e) if tree::gone(&e) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// `cgroup.events`: `populated` and `frozen`, and a "modified" event on
    /// each change of them (cgroup-v2.rst, "Core Interface Files").
    pub(crate) fn events_file(&self) -> PathBuf {
        self.dir().join("cgroup.events")
    }

    /// SIGKILL every pid listed in the subtree (cgroup.freeze is hierarchical,
    /// cgroup.procs is not), then thaw.
    pub(crate) fn kill_listed_and_thaw(&self) -> Result<()> {
        let dir = self.dir();
        crate::failpoint!("cgroup-kill-frozen");
        let mut killed = Ok(());
        for p in tree::expand_procs(&self.procs_files()) {
            killed = killed.and_then(|()| match files::read_pids(&p) {
                Ok(pids) => files::kill_pids(&pids, &dir),
                Err(e) if tree::gone(&e) => Ok(()),
                Err(e) => Err(e),
            });
        }
        let thawed = match write(&dir.join("cgroup.freeze"), "0") {
            Err(e) if tree::gone(&e) => Ok(()),
            other => other,
        };
        killed.and(thawed)
    }

    /// OOM kills recorded in `memory.events` (hierarchical; `oom_group_kill`
    /// counts whole-group kills, Linux ≥ 5.19). 0 without the memory controller.
    pub(crate) fn oom_kills(&self) -> Result<u64> {
        let Some(s) = read_opt(&self.dir().join("memory.events"))? else {
            return Ok(0);
        };
        let kills = keyed(&s, "oom_kill").unwrap_or(0);
        Ok(kills.max(keyed(&s, "oom_group_kill").unwrap_or(0)))
    }

    pub(crate) fn stats(&self) -> Result<Stats> {
        let dir = self.dir();
        // cpu.stat exists in every v2 cgroup (the usage part even without the cpu
        // controller, which adds the throttling counters).
        let cpu = read_opt(&dir.join("cpu.stat"))?.map(|s| stats::parse_v2_cpu_stat(&s));
        let memory = match read_u64_opt(&dir.join("memory.current"))? {
            None => None,
            Some(current) => {
                let (rss, cache) = match read_opt(&dir.join("memory.stat"))? {
                    Some(s) => stats::parse_v2_memory_stat(&s),
                    None => (0, 0),
                };
                Some(MemoryStats {
                    current,
                    peak: read_u64_opt(&dir.join("memory.peak"))?,
                    rss,
                    cache,
                    swap: read_u64_opt(&dir.join("memory.swap.current"))?,
                })
            }
        };
        let pids = read_u64_opt(&dir.join("pids.current"))?.map(|current| PidsStats { current });
        Ok(Stats { cpu, memory, pids })
    }

    /// `rmdir` the task cgroup and its sub-cgroups, deepest first (after the
    /// caller killed everything).
    pub(crate) fn rmdir(&self) -> Result<()> {
        tree::remove_subtree(&self.root, &self.dir()).map(drop)
    }

    /// `rmdir` the parents named at creation, deepest first, stopping at the first
    /// that still has children (or processes). The root is never touched.
    pub(crate) fn remove_parents_if_empty(&self) -> Result<()> {
        super::remove_empty_ancestors(&self.root, &self.root.path, &self.rel)
    }
}

/// `+<c>` in the `cgroup.subtree_control` of `dir`. A cgroup other than the
/// root that has processes of its own cannot hand a domain controller down
/// (cgroup-v2(7), "no internal processes" rule: `EBUSY`); it can hand down
/// a threaded one (cpuset, cpu, pids), but it is then a thread root and its
/// domain children cannot enable anything (`EOPNOTSUPP`, "invalid domain").
/// Either way the cgroup with the processes (`dir` or an ancestor below the
/// root) is named in a typed error.
fn enable_controller(root: &CgroupRoot, dir: &Path, c: &str) -> Result<()> {
    let subtree = dir.join("cgroup.subtree_control");
    let result = write(&subtree, &format!("+{c}"));
    let Err(Error::Write { cause, .. }) = &result else {
        return result;
    };
    if !matches!(cause.raw_os_error(), Some(libc::EBUSY | libc::EOPNOTSUPP)) {
        return result;
    }
    let busy = dir
        .ancestors()
        .take_while(|d| d.starts_with(&root.path) && *d != root.path)
        .find(|d| read(&d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty()));
    match busy {
        Some(path) => Err(Error::InternalProcesses {
            controller: c.to_string(),
            path: path.to_path_buf(),
        }),
        None => result,
    }
}

/// Write the limits of `res` into the task cgroup `dir`. `enabled` lists the
/// controllers the cgroup has; a limit of any other is skipped silently when
/// `report` is `None` (already reported), else it is an error naming `report`
/// (the file the list came from), or a warning when `best_effort`.
fn apply(
    dir: &Path,
    res: &Resources,
    enabled: &[&str],
    report: Option<&Path>,
    best_effort: bool,
    warnings: &mut Vec<Error>,
) -> Result<()> {
    let usable = |c: &str, warnings: &mut Vec<Error>| -> Result<bool> {
        match report {
            _ if enabled.contains(&c) => Ok(true),
            None => Ok(false),
            Some(path) => {
                let e = Error::ControllerUnavailable {
                    controller: c.to_string(),
                    path: path.to_path_buf(),
                };
                fail_or_warn(e, best_effort, warnings).map(|()| false)
            }
        }
    };
    let set = |file: &str, value: String| write(&dir.join(file), &value);

    if res.wants_memory() && usable(ctl::MEMORY, warnings)? {
        if let Some(v) = res.memory_max {
            set("memory.max", v.to_string())?;
        }
        if let Some(v) = res.memory_reservation {
            set("memory.high", v.to_string())?;
        }
        if let Some(v) = res.memory_swap {
            // Absent when the kernel does not account swap (CONFIG_MEMCG_SWAP off).
            let file = dir.join("memory.swap.max");
            if file.exists() {
                set("memory.swap.max", v.to_string())?;
            } else {
                let e = Error::Unsupported {
                    feature: "memory_swap",
                    path: file,
                };
                fail_or_warn(e, best_effort, warnings)?;
            }
        }
    }
    if res.wants_cpu() && usable(ctl::CPU, warnings)? {
        if let Some(shares) = res.cpu_shares {
            set("cpu.weight", shares_to_weight(shares).to_string())?;
        }
        if let Some(cpus) = res.cpus {
            set("cpu.max", format!("{} {CPU_PERIOD_US}", cpu_quota_us(cpus)))?;
        }
    }
    if res.wants_cpuset() && usable(ctl::CPUSET, warnings)? {
        if let Some(cpus) = &res.cpuset_cpus {
            set("cpuset.cpus", cpus.clone())?;
        }
        if let Some(mems) = &res.cpuset_mems {
            set("cpuset.mems", mems.clone())?;
        }
    }
    if let Some(max) = res.pids_max {
        if usable(ctl::PIDS, warnings)? {
            set("pids.max", max.to_string())?;
        }
    }
    if let Some(w) = res.io_weight {
        if usable(ctl::IO, warnings)? {
            set("io.weight", format!("default {w}"))?;
        }
    }
    Ok(())
}
