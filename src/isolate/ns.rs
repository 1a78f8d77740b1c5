//! Namespaces (created by the supervisor's clone, joined here), hostname,
//! and the final working directory.

use std::ffi::{CStr, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, sethostname};

use super::error::IsolateError;
use super::spec::IsolationSpec;
use crate::step::{Step, StepError, SubjectId};

/// The namespaces the clone must create. A pid namespace can only be
/// entered by a new process (pid_namespaces(7): "the process's PID
/// namespace membership is determined when the process is created"), so the
/// supervisor creates them all at clone time rather than the child with
/// unshare(2).
pub(crate) fn clone_flags(spec: &IsolationSpec) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    flags.set(CloneFlags::CLONE_NEWNS, spec.chroot);
    flags.set(CloneFlags::CLONE_NEWPID, spec.pid);
    flags.set(CloneFlags::CLONE_NEWIPC, spec.ipc);
    flags.set(CloneFlags::CLONE_NEWUTS, spec.uts);
    flags
}

/// Supervisor: opens the network namespace file (close-on-exec).
pub(crate) fn open_netns(path: &Path) -> Result<OwnedFd, IsolateError> {
    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|source| {
        IsolateError::OpenNetns {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Child: setns(2) into the network namespace; `CLONE_NEWNET` makes the
/// kernel check that the fd really is one.
pub(crate) fn join_netns(fd: &OwnedFd, subject: SubjectId) -> Result<(), StepError> {
    setns(fd, CloneFlags::CLONE_NEWNET).map_err(StepError::with_on(Step::JoinNetns, subject))
}

/// Child: sethostname(2) in the task's own UTS namespace.
pub(crate) fn set_hostname(name: &CStr, subject: SubjectId) -> Result<(), StepError> {
    sethostname(OsStr::from_bytes(name.to_bytes()))
        .map_err(StepError::with_on(Step::SetHostname, subject))
}

/// Child: chdir to the working directory, then check with getcwd(2) that it
/// is below our root. A cwd that resolves through a leaked host fd (e.g.
/// `/proc/self/fd/7`) is reported by the kernel as `(unreachable)/...`
/// (getcwd(3) NOTES); runc's CVE-2024-21626 was exactly that breakout.
pub(crate) fn enter_cwd(cwd: &CStr, subject: SubjectId) -> Result<(), StepError> {
    chdir(cwd).map_err(StepError::with_on(Step::Chdir, subject))?;
    let mut buf = [0u8; libc::PATH_MAX as usize];
    let got = crate::sys::getcwd(&mut buf).map_err(StepError::with_on(Step::Getcwd, subject))?;
    if got.to_bytes().first() != Some(&b'/') {
        return Err(StepError::on(Step::CwdOutsideRoot, Errno::EPERM, subject));
    }
    Ok(())
}
