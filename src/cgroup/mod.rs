//! Cgroups: a task's resource limits, accounting, OOM detection and reliable kill,
//! on cgroup v1 and v2 behind one interface (docs/cgroups.md).
//!
//! ```text
//! detect.rs     which layout the machine has (statfs), the root path
//! resources.rs  what may be used (Resources), validation, unit conversions
//! v2.rs         unified hierarchy: one directory per task
//! v1.rs         one directory per task in each controller hierarchy
//! stats.rs      usage parsed from cgroup files; CPU % from two samples
//! devices.rs    the device rules (DeviceRule): v1 devices.allow/deny lines
//! bpf.rs        the same rules as a v2 BPF_PROG_TYPE_CGROUP_DEVICE program
//! paths.rs      safe names; CgroupPaths, the form kept in state.json
//! files.rs      every read/write/mkdir/rmdir, each failure naming its path
//! tree.rs       the task's subtree (sub-cgroups it made): walk, pids, removal
//! owner.rs      owner marks (xattr: the state root); a leftover at <parent>/<id>
//! ```
//!
//! Lifecycle, as the supervisor uses it:
//!
//! 1. [`TaskCgroup::create`] before `fork`: directories made, limits written
//!    ([`TaskCgroup::create_owned`]: also marked with the state root, after a
//!    leftover of the same root at that path is killed and removed); then
//!    [`TaskCgroup::restrict_devices`]: the device rules, before any process
//!    of the task is in the cgroup.
//! 2. The child joins *without allocating*: the parent opens the descriptors
//!    ([`TaskCgroup::open_procs_files`], or [`TaskCgroup::dir_fd`] for
//!    `clone3(CLONE_INTO_CGROUP)` on v2); the child calls [`join_with_fds`].
//!    Alternatively the parent writes the child's pid with [`TaskCgroup::add_pid`]
//!    before releasing it.
//! 3. While it runs: [`TaskCgroup::stats`], [`TaskCgroup::update`].
//! 4. At the end: [`TaskCgroup::oom_killed`], then [`TaskCgroup::remove`] (which
//!    kills whatever is left with [`TaskCgroup::kill_all`]).
//! 5. After a supervisor restart: [`TaskCgroup::from_paths`] with the
//!    [`TaskCgroup::paths`] recorded in `state.json`.
//!
//! **Why an enum, not a trait.** There are exactly two backends, chosen once at run
//! time from the machine's layout, and a task cgroup must round-trip through
//! `state.json`. A private `enum Backend { V1, V2 }` behind one concrete
//! [`TaskCgroup`] gives the supervisor a plain, `Clone`-able value with no boxing,
//! no generic parameter leaking into its types, and exhaustive matches, so a
//! method added to one backend cannot be forgotten in the other. Unit tests
//! need no mock: both backends take the cgroup root as a path, and tests point it
//! at a directory of fake files.
//!
//! **What it never does.** It creates cgroups only at `<root>/<parent>/<id>`, and
//! removes only those (and, when asked, the empty parents named by `parent`). The
//! only files of cgroups it did not create that it may write are, on v2,
//! `cgroup.subtree_control` files on the path from the root to the task cgroup:
//! for each controller the task uses, that of the deepest existing directory
//! offering it (in its `cgroup.controllers`: the root, or a parent), then that of
//! each existing directory of the configured parent path below it (parents left
//! by earlier tasks, which may not have used that controller) — `+<controller>`
//! where not yet enabled, one write each, additions only, never undone; a parent
//! with processes of its own cannot hand a controller down, a typed error naming
//! it (details in `v2.rs`). On v1 it writes
//! only inside directories it created (a new cpuset cgroup gets its parent's
//! `cpuset.cpus`/`cpuset.mems` copied *into* it). It signals only processes listed
//! in the task cgroup's `cgroup.procs`.

mod bpf;
mod detect;
mod devices;
mod error;
mod files;
mod kill_steps;
mod owner;
mod paths;
mod resources;
mod stats;
mod tree;
mod update;
mod v1;
mod v2;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod proptests;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use bpf::{device_program, Insn, Program};
pub use detect::{CgroupRoot, Layout, DEFAULT_ROOT};
pub use devices::{default_rules, v1_writes, Access, DeviceKind, DeviceRule};
pub use error::{Error, Result};
#[doc(hidden)]
pub use kill_steps::KillRound;
pub use owner::LEFTOVER_TARGET;
pub use owner::{Owner, OWNER_XATTR};
pub(crate) use paths::parent_name;
pub use paths::CgroupPaths;
pub use resources::{cpu_quota_us, io_weight_to_blkio, shares_to_weight, Resources, CPU_PERIOD_US};
pub use stats::{cpu_percent, CpuStats, MemoryStats, PidsStats, Stats};
pub use update::{Limit, ResourceUpdate};

/// The parent cgroup of tasks when none is configured.
pub const DEFAULT_PARENT: &str = "nomad-shim";

/// How long [`TaskCgroup::kill_all`] tries before giving up.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// A task's cgroup (v2: one directory; v1: one per controller hierarchy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCgroup {
    backend: Backend,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Backend {
    V1(v1::Cgroup),
    V2(v2::Cgroup),
}

impl TaskCgroup {
    /// Create the task cgroup `<parent>/<id>` under `root` and write the limits of
    /// `res` (validated first).
    ///
    /// * `parent` is a relative path of one or more components (default
    ///   [`DEFAULT_PARENT`]); missing parents are created. `id` is one component.
    ///   Absolute paths, `.` and `..` are refused.
    /// * It is an error if the task cgroup already exists (`File exists`).
    /// * A limit whose controller is unavailable (v1: not mounted; v2: not in the
    ///   deepest existing ancestor's `cgroup.controllers`), or whose kernel file is
    ///   missing (v1 swap accounting, v1 blkio weight), is an error naming the
    ///   controller or file — unless `best_effort`, when the limit is skipped and
    ///   the error is returned in the list of warnings instead. Controllers used
    ///   only for accounting are warnings either way; the v1 freezer is required.
    /// * On error, every directory it created is removed again.
    pub fn create(
        root: &CgroupRoot,
        parent: &str,
        id: &str,
        res: &Resources,
        best_effort: bool,
    ) -> Result<(TaskCgroup, Vec<Error>)> {
        res.validate()?;
        let parent = paths::parent_name(parent)?;
        let id = paths::task_name(id)?;
        let mut warnings = Vec::new();
        let backend = match root.layout {
            Layout::V2 => Backend::V2(v2::Cgroup::create(
                root,
                &parent,
                &id,
                res,
                best_effort,
                &mut warnings,
            )?),
            Layout::V1 | Layout::Hybrid => Backend::V1(v1::Cgroup::create(
                root,
                &parent,
                &id,
                res,
                best_effort,
                &mut warnings,
            )?),
        };
        Ok((TaskCgroup { backend }, warnings))
    }

    /// Reopen a task cgroup from its recorded [`paths`](Self::paths). Every path
    /// must lie strictly inside the root (v1: inside its controller's mount), be
    /// normalized (no `.`, `..`, `//`), and match the root's layout; the v1 paths
    /// must include the freezer. The directories need not exist any more (a
    /// removed cgroup reopens as empty, and removing it again is fine).
    pub fn from_paths(root: &CgroupRoot, paths: &CgroupPaths) -> Result<TaskCgroup> {
        let backend = match (root.layout, paths) {
            (Layout::V2, CgroupPaths::V2(p)) => Backend::V2(v2::Cgroup::from_path(root, p)?),
            (Layout::V1 | Layout::Hybrid, CgroupPaths::V1(map)) => {
                Backend::V1(v1::Cgroup::from_paths(root, map)?)
            }
            _ => {
                return Err(Error::LayoutMismatch {
                    paths: serde_json::to_string(paths).unwrap_or_default(),
                    layout: root.layout,
                    root: root.path.clone(),
                })
            }
        };
        Ok(TaskCgroup { backend })
    }

    /// Where the cgroup is, for `state.json`.
    pub fn paths(&self) -> CgroupPaths {
        match &self.backend {
            Backend::V1(c) => CgroupPaths::V1(c.paths()),
            Backend::V2(c) => CgroupPaths::V2(c.dir()),
        }
    }

    /// Which cgroup version this task cgroup is (`V1` for hybrid machines too).
    pub fn layout(&self) -> Layout {
        match &self.backend {
            Backend::V1(_) => Layout::V1,
            Backend::V2(_) => Layout::V2,
        }
    }

    /// The task's directories: one on v2, one per hierarchy on v1 (freezer first).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.backend {
            Backend::V1(c) => c.dirs(),
            Backend::V2(c) => vec![c.dir()],
        }
    }

    /// `cgroup.procs` of every directory, opened `O_WRONLY | O_CLOEXEC`, for the
    /// child to join with [`join_with_fds`]. Open them in the supervisor before
    /// `fork`; close them in the supervisor after.
    pub fn open_procs_files(&self) -> Result<Vec<OwnedFd>> {
        self.procs_files()
            .iter()
            .map(|p| files::open_procs(p))
            .collect()
    }

    /// v2: an `O_PATH | O_DIRECTORY | O_CLOEXEC` descriptor of the task cgroup,
    /// for `clone3` with `CLONE_INTO_CGROUP` (Linux ≥ 5.7). v1: `None`.
    pub fn dir_fd(&self) -> Result<Option<OwnedFd>> {
        match &self.backend {
            Backend::V1(_) => Ok(None),
            Backend::V2(c) => files::open_dir_path(&c.dir()).map(Some),
        }
    }

    /// Move process `pid` (all its threads) into the task cgroup, every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for p in self.procs_files() {
            files::write(&p, &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup and its sub-cgroups (v1: in any of its
    /// hierarchies), sorted.
    /// A cgroup that no longer exists has none.
    pub fn pids(&self) -> Result<Vec<i32>> {
        read_all_pids(&self.procs_files())
    }

    /// Whether no process is left in the cgroup.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.pids()?.is_empty())
    }

    /// Kill every process of the cgroup and wait until none is listed, for up to
    /// [`DEFAULT_KILL_TIMEOUT`]. v2: `cgroup.kill`, or freeze / SIGKILL each / thaw
    /// before Linux 5.14; v1: the same with the freezer. Repeated until
    /// `cgroup.procs` is empty; [`Error::KillTimeout`] lists the survivors.
    ///
    /// The whole subtree: the processes of sub-cgroups the task made (in any v1
    /// hierarchy) are killed too, and "empty" means empty throughout.
    ///
    /// "Empty" means no live process: killed processes leave `cgroup.procs` when
    /// they exit, before their parent reaps them.
    pub fn kill_all(&self) -> Result<()> {
        self.kill_all_timeout(DEFAULT_KILL_TIMEOUT)
    }

    /// [`kill_all`](Self::kill_all) with its deadline.
    pub fn kill_all_timeout(&self, timeout: Duration) -> Result<()> {
        match &self.backend {
            Backend::V1(c) => c.kill_all(timeout),
            Backend::V2(c) => c.kill_all(timeout),
        }
    }

    /// How many processes the OOM killer killed in this cgroup (v2 `memory.events`
    /// `oom_kill`, or `oom_group_kill` if larger; v1 `memory.oom_control`
    /// `oom_kill`). 0 without the memory controller.
    pub fn oom_kills(&self) -> Result<u64> {
        match &self.backend {
            Backend::V1(c) => c.oom_kills(),
            Backend::V2(c) => c.oom_kills(),
        }
    }

    /// Whether the OOM killer acted in this cgroup; `false` if that cannot be read.
    /// Read it before [`remove`](Self::remove): the counters go with the cgroup.
    pub fn oom_killed(&self) -> bool {
        self.oom_kills().is_ok_and(|n| n > 0)
    }

    /// Current usage, from the cgroup's files only.
    pub fn stats(&self) -> Result<Stats> {
        match &self.backend {
            Backend::V1(c) => c.stats(),
            Backend::V2(c) => c.stats(),
        }
    }

    /// Change the limits of a live cgroup: each limit of the update is kept,
    /// set or removed ([`Limit`]); a [`Resources`] converts to the update
    /// that sets its `Some` fields. Each limit touched needs its controller in
    /// this cgroup (else [`Error::ControllerUnavailable`]). On v1 the memory
    /// and memory+swap limits are written in the order the kernel accepts
    /// (see `update::v1_memory`). No device rule is ever written here.
    pub fn update(&self, res: impl Into<ResourceUpdate>) -> Result<()> {
        let upd = res.into();
        upd.validate()?;
        match &self.backend {
            Backend::V1(c) => c.update(&upd),
            Backend::V2(c) => c.update(&upd),
        }
    }

    /// Kill everything left ([`kill_all`](Self::kill_all)) and remove the task's
    /// directories, each with its sub-cgroups deepest first (retrying briefly on
    /// `EBUSY`). Idempotent: directories already gone are fine. The parents stay (see
    /// [`remove_parents_if_empty`](Self::remove_parents_if_empty)).
    pub fn remove(&self) -> Result<()> {
        // v1, the common case at a task's end (its processes were killed at
        // its exit): an empty cgroup goes with one rmdir per hierarchy,
        // without walking the subtree and reading every cgroup.procs twice
        // (kill, then removal). Anything refused or failing takes the full
        // path below.
        if let Backend::V1(c) = &self.backend {
            if matches!(c.rmdir_if_empty(), Ok(true)) {
                return Ok(());
            }
        }
        self.kill_all()?;
        match &self.backend {
            Backend::V1(c) => c.rmdir(),
            Backend::V2(c) => c.rmdir(),
        }
    }

    /// Remove the parent cgroups named at creation (`"a/b"`: `a/b`, then `a`), each
    /// only if it is empty — no child cgroup, no process — stopping at the first
    /// that is not. Never the root (v1: the mounts). For a parent of one's own
    /// (tests); the shared default parent is better left in place, as another
    /// task may be created in it concurrently.
    pub fn remove_parents_if_empty(&self) -> Result<()> {
        match &self.backend {
            Backend::V1(c) => c.remove_parents_if_empty(),
            Backend::V2(c) => c.remove_parents_if_empty(),
        }
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        match &self.backend {
            Backend::V1(c) => c.procs_files(),
            Backend::V2(c) => c.procs_files(),
        }
    }
}

/// Join the cgroup(s) whose `cgroup.procs` descriptors are `fds`
/// ([`TaskCgroup::open_procs_files`]) by writing `"0"` — "the writing process" —
/// to each with one plain `write(2)`.
///
/// It does not allocate, take locks or touch global state, so it is safe in a
/// child between `fork` and `exec` of a multi-threaded parent. Stops at the first
/// failure and returns its errno (`EBUSY`, `ENOSPC`: an empty v1 cpuset, ...).
pub fn join_with_fds(fds: &[OwnedFd]) -> std::result::Result<(), nix::errno::Errno> {
    static SELF: &[u8] = b"0";
    for fd in fds {
        let n = nix::unistd::write(fd.as_fd(), SELF)?;
        if n != SELF.len() {
            return Err(nix::errno::Errno::EIO);
        }
    }
    Ok(())
}

/// Return `e` as the error, or record it as a warning when it may be tolerated.
fn fail_or_warn(e: Error, tolerate: bool, warnings: &mut Vec<Error>) -> Result<()> {
    if tolerate {
        warnings.push(e);
        Ok(())
    } else {
        Err(e)
    }
}

/// The union of the pids in `procs` files and in those of every sub-cgroup
/// below them (the task's whole subtree; a cgroup removed meanwhile lists
/// none), sorted.
fn read_all_pids(procs: &[PathBuf]) -> Result<Vec<i32>> {
    let mut all = Vec::new();
    for p in tree::expand_procs(procs) {
        match files::read_pids(&p) {
            Ok(pids) => all.extend(pids),
            Err(e) if tree::gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

/// Run kill rounds until the `procs` files list no process, or `timeout` passes.
/// After each round, wait a little for the killed processes to leave the list.
fn kill_loop(
    procs: &[PathBuf],
    cgroup: &Path,
    timeout: Duration,
    mut round: impl FnMut() -> Result<()>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let pids = read_all_pids(procs)?;
        if pids.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::KillTimeout {
                path: cgroup.to_path_buf(),
                pids,
                waited: start.elapsed(),
            });
        }
        round()?;
        // `start + timeout` would panic for a timeout past Instant's range.
        let settle = Instant::now() + Duration::from_millis(250);
        let settle = start
            .checked_add(timeout)
            .map_or(settle, |end| settle.min(end));
        files::wait_until(settle, || Ok(read_all_pids(procs)?.is_empty()))?;
    }
}

/// `rmdir` the ancestors of `base/rel` below `base`, deepest first, stopping
/// quietly at the first one that is not empty.
fn remove_empty_ancestors(root: &CgroupRoot, base: &Path, rel: &Path) -> Result<()> {
    for parent in rel.ancestors().skip(1) {
        if parent.as_os_str().is_empty() || !files::rmdir_if_empty(root, &base.join(parent))? {
            break;
        }
    }
    Ok(())
}
