//! Every step of a start that can fail, and the child's error: one enum for
//! the supervisor's own setup, the task child's steps and the isolation
//! steps; one fixed-size, allocation-free record ([`StepError::encode`]) that
//! the child writes to the close-on-exec error pipe, decoded in one place
//! ([`StepError::decode`]) by the supervisor, which renders isolation steps
//! with [`crate::isolate::Plan::describe`] and reports the typed step in
//! [`crate::protocol::StartReply::Failed`].
//!
//! Each step has two names: [`Step::name`], the stable `snake_case` name on
//! the sync pipe (docs/protocol.md lists them), and its [`Display`], the
//! words it takes in an error message (`set rlimit NOFILE: …`).
//!
//! [`Display`]: fmt::Display

use std::fmt;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

/// One step of a start: the supervisor's setup before `fork`, the task
/// child's own steps, and the isolation steps of
/// [`crate::isolate::Plan::apply_in_child`]; each syscall site has its own.
///
/// Numbers: isolation steps 1-63, the child's own steps 64-127, the
/// supervisor's 128-254 (only the child's and the isolation steps are ever
/// encoded; the numbers are private to one binary, the names are the
/// contract). Serde names are `snake_case` and stable; a name this library
/// does not know (a newer supervisor's) reads as [`Step::Unknown`].
///
/// ```
/// use nomad_shim::Step;
///
/// let step: Step = serde_json::from_str(r#""exec""#).unwrap();
/// assert_eq!(step, Step::Exec);
/// assert_eq!(step.to_string(), "exec");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
#[non_exhaustive]
pub enum Step {
    /// `setrlimit(2)`.
    SetRlimit = 1,
    /// `setns(2)` into the network namespace.
    JoinNetns,
    /// Refusing mount work in the supervisor's own mount namespace.
    CheckMountNamespace,
    /// `mount(MS_REC|MS_PRIVATE)` of `/`.
    MakePrivate,
    /// `mount(MS_BIND)` of the task dir onto itself.
    BindRoot,
    /// `open(O_PATH)` of the new root.
    OpenRoot,
    /// `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)` of a mount point.
    OpenMountPoint,
    /// `mount(MS_BIND)`.
    BindMount,
    /// `mount(MS_BIND|MS_REMOUNT)` with the final flags.
    Remount,
    /// `mount` of a tmpfs.
    MountTmpfs,
    /// `mount` of a new devpts instance.
    MountDevpts,
    /// `mount` of proc.
    MountProc,
    /// `mkdirat` inside the new `/dev`.
    Mkdir,
    /// `openat(O_CREAT)` of a device mount point inside the new `/dev`.
    CreateFile,
    /// `symlinkat` inside the new `/dev`.
    Symlink,
    /// `mount(MS_BIND|MS_REMOUNT|MS_RDONLY)` of the root.
    RemountRootReadOnly,
    /// `fchdir` to the new root.
    ChdirNewRoot,
    /// `pivot_root(".", ".")`.
    PivotRoot,
    /// `umount2(".", MNT_DETACH)` of the old root.
    DetachOldRoot,
    /// `chdir("/")` after the pivot.
    ChdirRoot,
    /// `sethostname(2)`.
    SetHostname,
    /// `prctl(PR_CAPBSET_DROP)`.
    DropBounding,
    /// `prctl(PR_SET_KEEPCAPS)`.
    KeepCaps,
    /// `setgroups(2)`.
    SetGroups,
    /// `setresgid(2)`.
    SetGid,
    /// `setresuid(2)`.
    SetUid,
    /// `capset(2)` of the effective set.
    SetEffective,
    /// `capset(2)` of the permitted set.
    SetPermitted,
    /// `capset(2)` of the inheritable set.
    SetInheritable,
    /// `prctl(PR_CAP_AMBIENT_RAISE)`.
    RaiseAmbient,
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    NoNewPrivs,
    /// `chdir` to the task's working directory.
    Chdir,
    /// `getcwd(2)` after the chdir.
    Getcwd,
    /// The working directory is not under the task's root.
    CwdOutsideRoot,
    /// `mount` of a read-only sysfs.
    MountSysfs,
    /// `mknodat(2)` of a default device node inside the new `/dev`.
    MakeDevice,

    // The task child's own steps (shim/src/supervisor/child.rs, init.rs).
    /// `setsid(2)` (the supervisor's own, or the child's).
    Setsid = 64,
    /// Unblocking signals in the child (`sigprocmask(2)`).
    Sigmask,
    /// Writing the task's `oom_score_adj` (the supervisor lowered its own).
    #[serde(rename = "oom_score_adj")]
    OomScoreAdj,
    /// Joining the task's cgroup (v1: writing `cgroup.procs`).
    JoinCgroup,
    /// `sched_setaffinity(2)`: every CPU of the task's cpuset.
    #[serde(rename = "sched_setaffinity")]
    SchedSetaffinity,
    /// Setting up fds 0, 1 and 2 (`dup2(2)`).
    Stdio,
    /// Marking inherited fds close-on-exec (`close_range(2)`).
    CloseRange,
    /// `execve(2)` of the task's program.
    Exec,
    /// The init's own steps: becoming a subreaper, forking the program.
    Init,
    /// `setns(2)` through a pidfd of the task, for an exec'd process
    /// (shim/src/supervisor/exec.rs).
    Setns,
    /// `fchdir(2)` + `chroot(2)` into the task's root, for an exec'd process.
    Chroot,
    /// `ioctl(TIOCSCTTY)`: the pty as controlling terminal of an exec'd
    /// process.
    #[serde(rename = "controlling_terminal")]
    ControllingTerminal,
    /// Opening a pseudo-terminal in the task's root for an exec'd process
    /// (`posix_openpt`, `unlockpt`, `TIOCGPTPEER`, `fchown`, sending the
    /// master).
    Pty,

    // The supervisor's setup, before the task child exists
    // (shim/src/supervisor/mod.rs).
    /// Forking the supervisor away from the intermediate.
    Fork = 128,
    /// `prctl(2)` of the supervisor (`PR_SET_CHILD_SUBREAPER`).
    Prctl,
    /// Reading or checking the spec (or the task id).
    Spec,
    /// Opening the task's state directory.
    Open,
    /// Taking the supervisor's lock.
    Lock,
    /// Reading the boot id.
    BootId,
    /// Reading a process's identity from `/proc/<pid>/stat`.
    Identity,
    /// Checking the device rules.
    Devices,
    /// Creating, configuring or opening the task's cgroup.
    Cgroup,
    /// Writing `state.json`.
    State,
    /// Blocking the supervisor's signals (`sigprocmask(2)`).
    Sigprocmask,
    /// `signalfd(2)`.
    Signalfd,
    /// `timerfd_create(2)`.
    TimerfdCreate,
    /// Binding and listening on `control.sock`.
    Listen,
    /// Creating a log file.
    Create,
    /// `pipe2(2)`.
    Pipe,
    /// `fcntl(2)` on a pipe.
    Fcntl,
    /// Preparing the isolation plan ([`crate::isolate::prepare`]).
    Isolate,
    /// Mounting the task's `secrets/`.
    Secrets,
    /// `clone3(2)` (or `fork(2)`) of the task child.
    Clone3,
    /// Opening the task's pseudo-terminal (`openpty(3)`) or stdin pipe.
    OpenPty,

    /// A step this library does not know: named by a newer supervisor.
    /// Never encoded.
    #[serde(other)]
    Unknown = 255,
}

impl Step {
    /// Every step that can be encoded, in number order.
    pub const ALL: [Step; 70] = [
        Step::SetRlimit,
        Step::JoinNetns,
        Step::CheckMountNamespace,
        Step::MakePrivate,
        Step::BindRoot,
        Step::OpenRoot,
        Step::OpenMountPoint,
        Step::BindMount,
        Step::Remount,
        Step::MountTmpfs,
        Step::MountDevpts,
        Step::MountProc,
        Step::Mkdir,
        Step::CreateFile,
        Step::Symlink,
        Step::RemountRootReadOnly,
        Step::ChdirNewRoot,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::ChdirRoot,
        Step::SetHostname,
        Step::DropBounding,
        Step::KeepCaps,
        Step::SetGroups,
        Step::SetGid,
        Step::SetUid,
        Step::SetEffective,
        Step::SetPermitted,
        Step::SetInheritable,
        Step::RaiseAmbient,
        Step::NoNewPrivs,
        Step::Chdir,
        Step::Getcwd,
        Step::CwdOutsideRoot,
        Step::MountSysfs,
        Step::MakeDevice,
        Step::Setsid,
        Step::Sigmask,
        Step::OomScoreAdj,
        Step::JoinCgroup,
        Step::SchedSetaffinity,
        Step::Stdio,
        Step::CloseRange,
        Step::Exec,
        Step::Init,
        Step::Setns,
        Step::Chroot,
        Step::ControllingTerminal,
        Step::Pty,
        Step::Fork,
        Step::Prctl,
        Step::Spec,
        Step::Open,
        Step::Lock,
        Step::BootId,
        Step::Identity,
        Step::Devices,
        Step::Cgroup,
        Step::State,
        Step::Sigprocmask,
        Step::Signalfd,
        Step::TimerfdCreate,
        Step::Listen,
        Step::Create,
        Step::Pipe,
        Step::Fcntl,
        Step::Isolate,
        Step::Secrets,
        Step::Clone3,
        Step::OpenPty,
    ];

    /// True for the steps of [`crate::isolate::Plan::apply_in_child`], whose
    /// messages [`crate::isolate::Plan::describe`] renders.
    pub fn is_isolation(self) -> bool {
        (self as u8) < 64
    }

    /// The stable `snake_case` name, as in the start reply (its serde form).
    pub fn name(self) -> &'static str {
        match self {
            Step::SetRlimit => "set_rlimit",
            Step::JoinNetns => "join_netns",
            Step::CheckMountNamespace => "check_mount_namespace",
            Step::MakePrivate => "make_private",
            Step::BindRoot => "bind_root",
            Step::OpenRoot => "open_root",
            Step::OpenMountPoint => "open_mount_point",
            Step::BindMount => "bind_mount",
            Step::Remount => "remount",
            Step::MountTmpfs => "mount_tmpfs",
            Step::MountDevpts => "mount_devpts",
            Step::MountProc => "mount_proc",
            Step::Mkdir => "mkdir",
            Step::CreateFile => "create_file",
            Step::Symlink => "symlink",
            Step::RemountRootReadOnly => "remount_root_read_only",
            Step::ChdirNewRoot => "chdir_new_root",
            Step::PivotRoot => "pivot_root",
            Step::DetachOldRoot => "detach_old_root",
            Step::ChdirRoot => "chdir_root",
            Step::SetHostname => "set_hostname",
            Step::DropBounding => "drop_bounding",
            Step::KeepCaps => "keep_caps",
            Step::SetGroups => "set_groups",
            Step::SetGid => "set_gid",
            Step::SetUid => "set_uid",
            Step::SetEffective => "set_effective",
            Step::SetPermitted => "set_permitted",
            Step::SetInheritable => "set_inheritable",
            Step::RaiseAmbient => "raise_ambient",
            Step::NoNewPrivs => "no_new_privs",
            Step::Chdir => "chdir",
            Step::Getcwd => "getcwd",
            Step::CwdOutsideRoot => "cwd_outside_root",
            Step::MountSysfs => "mount_sysfs",
            Step::MakeDevice => "make_device",
            Step::Setsid => "setsid",
            Step::Sigmask => "sigmask",
            Step::OomScoreAdj => "oom_score_adj",
            Step::JoinCgroup => "join_cgroup",
            Step::SchedSetaffinity => "sched_setaffinity",
            Step::Stdio => "stdio",
            Step::CloseRange => "close_range",
            Step::Exec => "exec",
            Step::Init => "init",
            Step::Setns => "setns",
            Step::Chroot => "chroot",
            Step::ControllingTerminal => "controlling_terminal",
            Step::Pty => "pty",
            Step::Fork => "fork",
            Step::Prctl => "prctl",
            Step::Spec => "spec",
            Step::Open => "open",
            Step::Lock => "lock",
            Step::BootId => "boot_id",
            Step::Identity => "identity",
            Step::Devices => "devices",
            Step::Cgroup => "cgroup",
            Step::State => "state",
            Step::Sigprocmask => "sigprocmask",
            Step::Signalfd => "signalfd",
            Step::TimerfdCreate => "timerfd_create",
            Step::Listen => "listen",
            Step::Create => "create",
            Step::Pipe => "pipe",
            Step::Fcntl => "fcntl",
            Step::Isolate => "isolate",
            Step::Secrets => "secrets",
            Step::Clone3 => "clone3",
            Step::OpenPty => "open_pty",
            Step::Unknown => "unknown",
        }
    }

    fn from_u8(b: u8) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u8 == b)
    }

    /// What the step does, as in an error message (its [`fmt::Display`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::SetRlimit => "set rlimit",
            Step::JoinNetns => "join network namespace",
            Step::CheckMountNamespace => "refuse mount work in the supervisor's mount namespace",
            Step::MakePrivate => "make mount propagation private",
            Step::BindRoot => "bind task dir onto itself",
            Step::OpenRoot => "open new root",
            Step::OpenMountPoint => "open mount point",
            Step::BindMount => "bind mount",
            Step::Remount => "remount",
            Step::MountTmpfs => "mount tmpfs on",
            Step::MountDevpts => "mount devpts on",
            Step::MountProc => "mount proc on",
            Step::Mkdir => "create directory",
            Step::CreateFile => "create mount point",
            Step::Symlink => "create symlink",
            Step::RemountRootReadOnly => "remount root read-only",
            Step::ChdirNewRoot => "chdir to new root",
            Step::PivotRoot => "pivot_root into",
            Step::DetachOldRoot => "detach old root",
            Step::ChdirRoot => "chdir to /",
            Step::SetHostname => "set hostname",
            Step::DropBounding => "drop from bounding set",
            Step::KeepCaps => "set keep-caps",
            Step::SetGroups => "setgroups",
            Step::SetGid => "setresgid",
            Step::SetUid => "setresuid",
            Step::SetEffective => "set effective capabilities",
            Step::SetPermitted => "set permitted capabilities",
            Step::SetInheritable => "set inheritable capabilities",
            Step::RaiseAmbient => "raise ambient capability",
            Step::NoNewPrivs => "set no_new_privs",
            Step::Chdir => "chdir",
            Step::Getcwd => "getcwd after chdir",
            Step::CwdOutsideRoot => "check working directory is inside the root",
            Step::MountSysfs => "mount sysfs on",
            Step::MakeDevice => "create device node",
            Step::JoinCgroup => "join cgroup",
            // The others are named in messages as on the wire (`exec /x: …`,
            // `setsid supervisor: …`).
            other => other.name(),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An index into the plan's subject table (what a step acted on: a path, a
/// capability, a limit), rendered by [`crate::isolate::Plan::describe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectId(pub u16);

/// A failed step of the task child (its own or one of
/// [`crate::isolate::Plan::apply_in_child`]'s). `Copy`, no heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepError {
    /// The step that failed.
    pub step: Step,
    /// The errno it failed with.
    pub errno: Errno,
    /// What it acted on, if anything.
    pub subject: Option<SubjectId>,
}

/// First byte of an encoded [`StepError`], to reject stray bytes.
const MAGIC: u8 = 0xA5;
/// Encoded "no subject".
const NO_SUBJECT: u16 = u16::MAX;

impl StepError {
    /// Size of [`StepError::encode`]'s output: magic, step, subject (u16 LE),
    /// errno (i32 LE). Well under `PIPE_BUF`, so one `write(2)` is atomic.
    pub const ENCODED_LEN: usize = 8;

    /// A step error without a subject.
    pub fn new(step: Step, errno: Errno) -> StepError {
        StepError {
            step,
            errno,
            subject: None,
        }
    }

    /// A step error about `subject`.
    pub fn on(step: Step, errno: Errno, subject: SubjectId) -> StepError {
        StepError {
            step,
            errno,
            subject: Some(subject),
        }
    }

    /// `map_err` adapter: `.map_err(StepError::with(Step::SetUid))`.
    pub fn with(step: Step) -> impl Fn(Errno) -> StepError {
        move |errno| StepError::new(step, errno)
    }

    /// `map_err` adapter with a subject.
    pub fn with_on(step: Step, subject: SubjectId) -> impl Fn(Errno) -> StepError {
        move |errno| StepError::on(step, errno, subject)
    }

    /// Fixed-size bytes for the error pipe (no allocation).
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let subject = self.subject.map_or(NO_SUBJECT, |s| s.0).to_le_bytes();
        let errno = (self.errno as i32).to_le_bytes();
        [
            MAGIC,
            self.step as u8,
            subject[0],
            subject[1],
            errno[0],
            errno[1],
            errno[2],
            errno[3],
        ]
    }

    /// The inverse of [`StepError::encode`]; `None` for bytes it did not
    /// produce.
    pub fn decode(bytes: &[u8; Self::ENCODED_LEN]) -> Option<StepError> {
        if bytes[0] != MAGIC {
            return None;
        }
        let step = Step::from_u8(bytes[1])?;
        let subject = match u16::from_le_bytes([bytes[2], bytes[3]]) {
            NO_SUBJECT => None,
            id => Some(SubjectId(id)),
        };
        let errno = Errno::from_raw(i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]));
        Some(StepError {
            step,
            errno,
            subject,
        })
    }

    /// Reads a child's record from the read end of its error pipe, after
    /// the parent has closed its own write end: `None` when the pipe closed
    /// without one (the child exec'd: close-on-exec). A short or stray
    /// record reads as a failed exec (`EIO`). The one reader of what
    /// [`StepError::encode`] wrote, for the task child and an exec'd
    /// process alike.
    pub fn read_record(fd: std::os::fd::BorrowedFd<'_>) -> Option<StepError> {
        let mut buf = [0u8; Self::ENCODED_LEN];
        let mut got = 0;
        while got < buf.len() {
            match nix::unistd::read(fd, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        if got == 0 {
            return None;
        }
        Some(StepError::decode(&buf).unwrap_or(StepError::new(Step::Exec, Errno::EIO)))
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.subject {
            Some(s) => write!(f, "{} (subject #{}): {}", self.step, s.0, self.errno.desc()),
            None => write!(f, "{}: {}", self.step, self.errno.desc()),
        }
    }
}

impl std::error::Error for StepError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        for step in Step::ALL {
            for subject in [None, Some(SubjectId(0)), Some(SubjectId(513))] {
                let e = StepError {
                    step,
                    errno: Errno::EACCES,
                    subject,
                };
                assert_eq!(StepError::decode(&e.encode()), Some(e));
            }
        }
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(StepError::decode(&[0; 8]), None);
        assert_eq!(StepError::decode(&[MAGIC, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(StepError::decode(&[MAGIC, 200, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn steps_are_numbered_densely_per_kind() {
        let mut next = [1u8, 64, 128];
        for s in Step::ALL {
            let kind = match s as u8 {
                0..64 => 0,
                64..128 => 1,
                _ => 2,
            };
            assert_eq!(s as u8, next[kind], "{s:?}");
            next[kind] += 1;
        }
        assert!(Step::SetRlimit.is_isolation() && Step::MountSysfs.is_isolation());
        assert!(!Step::Exec.is_isolation() && !Step::Lock.is_isolation());
    }

    #[test]
    fn names_are_the_serde_names_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in Step::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()), "{s:?}");
            assert_eq!(serde_json::from_str::<Step>(&json).unwrap(), s);
            assert!(seen.insert(s.name()), "duplicate name {}", s.name());
            assert!(
                s.name()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{s:?}"
            );
        }
    }

    #[test]
    fn unknown_names_read_as_unknown() {
        // A newer supervisor's step, and today's isolation phrases.
        for name in ["\"mount_something_new\"", "\"set rlimit\""] {
            assert_eq!(serde_json::from_str::<Step>(name).unwrap(), Step::Unknown);
        }
        assert_eq!(StepError::decode(&[MAGIC, 255, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn messages_name_steps_as_before() {
        assert_eq!(Step::JoinCgroup.to_string(), "join cgroup");
        assert_eq!(Step::Exec.to_string(), "exec");
        assert_eq!(Step::OomScoreAdj.to_string(), "oom_score_adj");
        assert_eq!(Step::SetRlimit.to_string(), "set rlimit");
    }
}
