//! The child's error: built without allocating, sent over the close-on-exec
//! error pipe as [`StepError::ENCODED_LEN`] bytes, rendered by the supervisor
//! with [`super::Plan::describe`].

use std::fmt;

use nix::errno::Errno;

/// One step of [`super::Plan::apply_in_child`]; each syscall site has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Step {
    const ALL: [Step; 35] = [
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
    ];

    fn from_u8(b: u8) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u8 == b)
    }

    /// What the step does, as in an error message.
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
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An index into the plan's subject table (what a step acted on: a path, a
/// capability, a limit), rendered by [`super::Plan::describe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectId(pub u16);

/// A failed step of [`super::Plan::apply_in_child`]. `Copy`, no heap.
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
    fn steps_are_numbered_densely() {
        for (i, s) in Step::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i + 1, "{s:?}");
        }
    }
}
