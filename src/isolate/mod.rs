//! Task isolation: what the supervisor prepares before `fork`, and the ordered
//! steps the forked child applies just before `execve` (docs/isolation.md, "The child, in order").
//!
//! Two halves, split by `fork(2)`:
//!
//! * [`prepare`] runs in the supervisor (root, single-threaded). It validates
//!   the [`IsolationSpec`], builds the task directory layout with
//!   `openat`-relative, never-following operations (`taskdir`), opens the
//!   network namespace, and compiles everything the child will need — C
//!   strings, the ordered mount list, the final capability sets — into a
//!   [`Plan`].
//! * [`Plan::apply_in_child`] runs in the child, which the supervisor created
//!   with [`Plan::clone_flags`] (a pid namespace can only be entered by a new
//!   process, see pid_namespaces(7)), so it is already in its namespaces and
//!   its cgroup. It allocates nothing: a failure is a [`StepError`] — a step,
//!   an errno and an index into the plan's subject table — that the child
//!   sends to the supervisor as [`StepError::encode`] bytes, and the
//!   supervisor renders with [`Plan::describe`].

mod caps;
mod devices;
mod error;
mod exec;
mod fsview_spec;
mod mounts;
mod ns;
mod passwd;
mod rlimit;
mod rootfs;
mod secrets;
mod spec;
mod taskdir;
mod user;

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::stat::stat;

pub use crate::step::{Step, StepError, SubjectId};
pub use devices::{device_rules, DeviceSpec};
pub use error::IsolateError;
pub use exec::{prepare_exec, ExecCreds, ExecPlan};
pub use fsview_spec::{DnsSpec, MountSpec};
pub use secrets::{
    mount_secrets, secrets_source, unmount_secrets, unmount_secrets_kept, SecretsMount,
    DEFAULT_SECRETS_SIZE,
};
pub use spec::{BindSpec, IsolationSpec, RlimitSpec, DEFAULT_CHROOT_ENV};
pub(crate) use user::{resolve_user, ResolvedUser};

use caps::CapPlan;
use rlimit::RlimitPlan;
use rootfs::RootPlan;
use user::CredPlan;

/// Everything the child needs, computed before `fork` by [`prepare`].
///
/// Keep it alive in the supervisor until the child has been forked (it owns
/// the network namespace fd the child joins), then drop it — after reading
/// the child's error pipe if you want [`Plan::describe`].
#[derive(Debug)]
pub struct Plan {
    /// Namespaces the clone must create.
    clone_flags: CloneFlags,
    /// Resource limits, applied first.
    rlimits: Vec<RlimitPlan>,
    /// The network namespace to join (`O_CLOEXEC`: it vanishes at exec).
    netns: Option<(OwnedFd, SubjectId)>,
    /// The root filesystem to build and pivot into; `None` without chroot.
    root: Option<RootPlan>,
    /// The hostname to set (UTS namespace only).
    hostname: Option<(CString, SubjectId)>,
    /// Credentials to switch to.
    creds: CredPlan,
    /// Capability sets to end with.
    caps: CapPlan,
    /// The working directory, as seen by the task (inside the new root).
    cwd: (CString, SubjectId),
    /// HOME, USER and LOGNAME of the task user, for the supervisor.
    env: Vec<(String, String)>,
    /// What each [`SubjectId`] names, for [`Plan::describe`].
    subjects: Vec<String>,
    /// The task's `oom_score_adj`, as the decimal the child writes.
    oom_score_adj: String,
}

/// Validates `spec`, lays out the task directory and precomputes the child's
/// steps. Runs in the supervisor, before `fork`.
///
/// `cwd` is the task's working directory: inside the new root with a chroot
/// (default `/`), else on the host (default: the task dir, else `/`).
/// `cgroup` is the task's cgroup (already created): with a chroot, it is
/// shown read-only at `/sys/fs/cgroup`. `state_dir` is the task's state
/// directory (`<root>/<id>/`): the private resolv.conf of a `dns` block is
/// written there, out of the task's root.
pub fn prepare(
    spec: &IsolationSpec,
    cwd: Option<&Path>,
    cgroup: Option<&crate::cgroup::CgroupPaths>,
    state_dir: &Path,
) -> Result<Plan, IsolateError> {
    spec.validate()?;
    let mut subjects = Subjects::default();
    // The child refuses mount work in the supervisor's own mount namespace:
    // remember which one that is.
    let host_mntns = stat("/proc/self/ns/mnt").map_err(IsolateError::StatMountNamespace)?;
    let creds = user::plan(spec)?;
    let caps = caps::plan(spec, creds.is_root())?;
    let rlimits = rlimit::plan(&spec.rlimits, &mut subjects)?;
    let (root, mountpoints) = if spec.chroot {
        let (root, mountpoints) = rootfs::plan(
            spec,
            creds.owner(),
            host_mntns.st_ino,
            &mut subjects,
            cgroup,
            state_dir,
        )?;
        (Some(root), mountpoints)
    } else {
        (None, Vec::new())
    };
    if let Some(task_dir) = &spec.task_dir {
        let alloc_is_mount = spec.chroot && spec.alloc_dir.is_some();
        taskdir::build(task_dir, creds.owner(), alloc_is_mount, &mountpoints)?;
        if let (true, Some(dns)) = (spec.chroot, &spec.dns) {
            rootfs::write_resolv_conf(state_dir, dns)?;
        }
    }
    let netns = match &spec.netns {
        Some(path) => Some((ns::open_netns(path)?, subjects.add(path.display()))),
        None => None,
    };
    let hostname = match &spec.hostname {
        Some(name) => Some((cstring(name)?, subjects.add(name))),
        None => None,
    };
    let cwd = default_cwd(spec, cwd);
    let cwd = (cstring(&cwd)?, subjects.add(&cwd));
    Ok(Plan {
        clone_flags: ns::clone_flags(spec),
        rlimits,
        netns,
        root,
        hostname,
        creds,
        caps,
        cwd,
        env: spec.env_defaults(),
        subjects: subjects.0,
        oom_score_adj: spec.oom_score_adj.unwrap_or(0).to_string(),
    })
}

impl Plan {
    /// The namespaces the supervisor must create when it forks the child
    /// (`clone`/`clone3` flags): `CLONE_NEWNS` with a chroot, plus
    /// `CLONE_NEWPID`, `CLONE_NEWIPC`, `CLONE_NEWUTS` as asked.
    pub fn clone_flags(&self) -> CloneFlags {
        self.clone_flags
    }

    /// HOME, USER and LOGNAME for the task user (only those known), for the
    /// supervisor to merge into the task's environment before `fork`.
    pub fn env_defaults(&self) -> &[(String, String)] {
        &self.env
    }

    /// What the child writes to `/proc/self/oom_score_adj` (the spec's
    /// value, default `0`): the supervisor lowered its own, which the child
    /// inherits (proc(5)).
    pub fn oom_score_adj(&self) -> &[u8] {
        self.oom_score_adj.as_bytes()
    }

    /// Applies the isolation, in the order of docs/isolation.md ("The child, in order"), in the forked child just
    /// before `execve`. Allocates nothing.
    ///
    /// Preconditions: the child was created with [`Plan::clone_flags`]; it is
    /// in its cgroup; signals, session and dumpable are handled by the caller.
    /// Afterwards the caller closes every fd above 2 and execs.
    pub fn apply_in_child(&self) -> Result<(), StepError> {
        // 1. Resource limits first: raising a hard limit needs
        //    CAP_SYS_RESOURCE, which the privilege steps below may drop
        //    (setrlimit(2), capabilities(7)).
        rlimit::apply(&self.rlimits)?;
        // 2. Join the network namespace while we still hold CAP_SYS_ADMIN
        //    (setns(2)).
        if let Some((fd, subject)) = &self.netns {
            ns::join_netns(fd, *subject)?;
        }
        // 3. Build the root in the task dir and pivot into it; chdir("/").
        if let Some(root) = &self.root {
            root.build_and_pivot()?;
        }
        // 4. Hostname, in our own UTS namespace (validate() requires uts).
        if let Some((name, subject)) = &self.hostname {
            ns::set_hostname(name, *subject)?;
        }
        // 5-6. Privileges, then the working directory.
        apply_privileges(&self.creds, &self.caps, &self.cwd)
    }

    /// Renders a child's error for the supervisor's log, e.g.
    /// `bind mount /usr onto /srv/t1/usr: Permission denied`.
    pub fn describe(&self, err: &StepError) -> String {
        describe_step(&self.subjects, err)
    }
}

/// The steps that end every process of a task, the task child and each
/// process exec'd into it alike, in their one order (docs/isolation.md,
/// "The child, in order", steps 5 and 6): bounding set → keep-caps →
/// setgroups → setresgid → setresuid → permitted/effective/inheritable →
/// ambient → no_new_privs (capabilities(7), prctl(2)); then the working
/// directory, proven inside the root (CVE-2024-21626: a leaked host fd as
/// cwd). Allocates nothing.
fn apply_privileges(
    creds: &CredPlan,
    caps: &CapPlan,
    cwd: &(CString, SubjectId),
) -> Result<(), StepError> {
    caps.drop_bounding()?;
    creds.switch()?;
    caps.set_final()?;
    caps.raise_ambient()?;
    nix::sys::prctl::set_no_new_privs().map_err(StepError::with(Step::NoNewPrivs))?;
    ns::enter_cwd(&cwd.0, cwd.1)
}

/// Renders a failed step with what its subject id names in `subjects`.
fn describe_step(subjects: &[String], err: &StepError) -> String {
    let subject = err.subject.and_then(|id| subjects.get(usize::from(id.0)));
    if err.step == Step::CwdOutsideRoot {
        let cwd = subject.map_or("", String::as_str);
        return format!("working directory {cwd} is outside the task's root (CVE-2024-21626)");
    }
    match subject {
        Some(s) => format!("{} {}: {}", err.step, s, err.errno.desc()),
        None => format!("{}: {}", err.step, err.errno.desc()),
    }
}

/// The subject table: what each step acts on, rendered once in `prepare`.
#[derive(Default)]
struct Subjects(Vec<String>);

impl Subjects {
    /// Adds a subject and returns its id (saturates at the last id: the
    /// table only ever holds a few dozen entries).
    fn add(&mut self, s: impl std::fmt::Display) -> SubjectId {
        self.0.push(s.to_string());
        SubjectId(u16::try_from(self.0.len() - 1).unwrap_or(u16::MAX - 1))
    }
}

/// The task's working directory: `/` in a chroot, else the task dir.
fn default_cwd(spec: &IsolationSpec, cwd: Option<&Path>) -> String {
    match (cwd, spec.chroot, &spec.task_dir) {
        (Some(cwd), _, _) => cwd.display().to_string(),
        (None, true, _) => "/".to_string(),
        (None, false, Some(dir)) => dir.display().to_string(),
        (None, false, None) => "/".to_string(),
    }
}

/// A C string of a path or name; a NUL byte inside is a typed error.
fn cstring(s: impl AsRef<std::ffi::OsStr>) -> Result<CString, IsolateError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = s.as_ref().as_bytes();
    CString::new(bytes).map_err(|_| IsolateError::NulInPath {
        path: String::from_utf8_lossy(bytes).into_owned(),
    })
}

/// `errno` of a failed step that the kernel reported through a library that
/// formats its own message (the `caps` crate); glibc leaves errno alone on a
/// successful allocation.
fn last_errno() -> Errno {
    match Errno::last() {
        Errno::UnknownErrno => Errno::EINVAL,
        e => e,
    }
}
