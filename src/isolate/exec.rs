//! The isolation of a process started inside a running task (`exec`): the
//! task's own privilege steps, prepared from its spec, applied by a process
//! that has already joined the task's namespaces, cgroup and root
//! (shim/src/supervisor/exec.rs).
//!
//! What the task got and an exec'd process gets the same, from the same
//! code: rlimits (`rlimit`), bounding set → keep-caps → setgroups →
//! setresgid → setresuid → capability sets → ambient (`caps`, `user`),
//! `no_new_privs`, working directory (checked inside the root). What it
//! does not redo: the namespaces, the root and the hostname, which it joins
//! instead of making.

use std::ffi::CString;
use std::path::Path;

use super::{caps, default_cwd, rlimit, user, IsolateError, IsolationSpec, Subjects};
use crate::step::StepError;

/// Another user than the task's, given by number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecCreds {
    /// The uid.
    pub uid: u32,
    /// The gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// The user's name, for `USER` and `LOGNAME` (may be empty).
    pub name: String,
    /// The user's home, for `HOME` (may be empty).
    pub home: String,
}

/// The privilege steps of an exec'd process, computed before `fork`.
#[derive(Debug)]
pub struct ExecPlan {
    rlimits: Vec<rlimit::RlimitPlan>,
    creds: user::CredPlan,
    caps: caps::CapPlan,
    cwd: (CString, crate::step::SubjectId),
    env: Vec<(String, String)>,
    subjects: Vec<String>,
    oom_score_adj: String,
}

/// Prepares the steps of a process exec'd into the task of `spec`: its
/// user unless `creds` says otherwise (capabilities then follow the new
/// user as for a task: none granted to a non-root user), its cwd unless
/// `cwd` says otherwise (the task's, else `/` in a chroot, else the task
/// dir). Touches nothing on the system.
pub fn prepare_exec(
    spec: &IsolationSpec,
    task_cwd: Option<&Path>,
    cwd: Option<&Path>,
    creds: Option<&ExecCreds>,
) -> Result<ExecPlan, IsolateError> {
    let mut spec = spec.clone();
    if let Some(c) = creds {
        spec.uid = Some(c.uid);
        spec.gid = Some(c.gid);
        spec.groups = c.groups.clone();
        spec.user_name = c.name.clone();
        spec.home = c.home.clone();
    }
    let mut subjects = Subjects::default();
    let creds = user::plan(&spec)?;
    let caps = caps::plan(&spec, creds.is_root())?;
    let rlimits = rlimit::plan(&spec.rlimits, &mut subjects)?;
    let cwd = default_cwd(&spec, cwd.or(task_cwd));
    let cwd = (super::cstring(&cwd)?, subjects.add(&cwd));
    Ok(ExecPlan {
        rlimits,
        creds,
        caps,
        cwd,
        env: spec.env_defaults(),
        subjects: subjects.0,
        oom_score_adj: spec.oom_score_adj.unwrap_or(0).to_string(),
    })
}

impl ExecPlan {
    /// HOME, USER and LOGNAME of the process's user (only those known).
    pub fn env_defaults(&self) -> &[(String, String)] {
        &self.env
    }

    /// The uid and gid the process runs as.
    pub fn owner(&self) -> (u32, u32) {
        let (uid, gid) = self.creds.owner();
        (uid.as_raw(), gid.as_raw())
    }

    /// The task's `oom_score_adj`, as the decimal to write.
    pub fn oom_score_adj(&self) -> &[u8] {
        self.oom_score_adj.as_bytes()
    }

    /// The task's privilege steps, in the task's order (docs/isolation.md,
    /// "The child, in order", steps 1, 5 and 6), in a process that is
    /// already in the task's namespaces, cgroup and root. Allocates nothing.
    pub fn apply_in_child(&self) -> Result<(), StepError> {
        // Resource limits first: raising a hard limit needs
        // CAP_SYS_RESOURCE (setrlimit(2)).
        rlimit::apply(&self.rlimits)?;
        // The privileges and the working directory, as the task child's.
        super::apply_privileges(&self.creds, &self.caps, &self.cwd)
    }

    /// Renders a failed step, like [`super::Plan::describe`].
    pub fn describe(&self, err: &StepError) -> String {
        super::describe_step(&self.subjects, err)
    }
}
