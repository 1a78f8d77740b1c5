//! The cgroup module's one error type.
//!
//! Every variant names the operation and carries the path it failed on, so that the
//! message alone tells an operator what went wrong, e.g.
//! `write 67108864 to /sys/fs/cgroup/memory/nomad-shim/t1/memory.limit_in_bytes:
//! Device or resource busy`.
//!
//! The OS error is part of the message (and kept, as an [`io::Error`], in the `cause`
//! field for callers that match on its kind); it is deliberately *not* exposed as
//! [`std::error::Error::source`], so that a chain printer does not repeat it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a cgroup operation.
///
/// # Examples
///
/// ```
/// use nomad_shim::{CgroupError, Resources};
///
/// let err = Resources { memory_max: Some(0), ..Resources::default() }.validate().unwrap_err();
/// assert!(matches!(err, CgroupError::InvalidResources { field: "memory_max", .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `statfs(2)` on the cgroup root failed.
    #[error("statfs {path}: {}", os(cause))]
    Statfs {
        /// The cgroup root.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
    },
    /// The cgroup root is neither cgroup2 nor a tmpfs of v1 hierarchies.
    #[error("{path} is not a cgroup mount (neither cgroup2 nor a tmpfs of cgroup v1 hierarchies)")]
    UnknownLayout {
        /// The cgroup root.
        path: PathBuf,
    },
    /// A parent or task name is not a safe relative cgroup path.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A [`Resources`](super::Resources) field holds a nonsensical value.
    #[error("invalid resources: {field} = {value}: {reason}")]
    InvalidResources {
        /// The field's name in [`Resources`](super::Resources).
        field: &'static str,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A controller a limit needs is not mounted (v1) or not delegated (v2).
    #[error("cgroup controller {controller} is not available at {path}")]
    ControllerUnavailable {
        /// The controller, e.g. `memory`.
        controller: String,
        /// Where it was looked for (v1 mount point, v2 `cgroup.controllers` file).
        path: PathBuf,
    },
    /// A controller is there but the kernel lacks the file of one feature
    /// (e.g. v1 swap accounting off: no `memory.memsw.limit_in_bytes`).
    #[error("{feature} is not supported by this kernel: {path} does not exist")]
    Unsupported {
        /// What was asked for, e.g. `memory_swap`.
        feature: &'static str,
        /// The file that would implement it.
        path: PathBuf,
    },
    /// `mkdir` of a cgroup failed (`File exists` when the task cgroup is already there).
    #[error("create cgroup {path}: {}", os(cause))]
    Mkdir {
        /// The cgroup directory.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
    },
    /// `rmdir` of a cgroup failed.
    #[error("remove cgroup {path}: {}", os(cause))]
    Rmdir {
        /// The cgroup directory.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
    },
    /// Opening a cgroup file or directory failed.
    #[error("open {path}: {}", os(cause))]
    Open {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
    },
    /// Reading a cgroup file failed.
    #[error("read {path}: {}", os(cause))]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
    },
    /// Writing a cgroup file failed.
    #[error("write {value} to {path}: {}", os(cause))]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        cause: io::Error,
    },
    /// A cgroup file held something this module cannot parse.
    #[error("parse {path}: unexpected content {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The offending content (or line).
        content: String,
    },
    /// `kill(2)` of a process of the cgroup failed (other than "no such process").
    #[error("kill pid {pid} of {path}: {}", os(cause))]
    Kill {
        /// The process.
        pid: i32,
        /// The cgroup it was listed in.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
    },
    /// The cgroup still had processes when the kill deadline passed.
    #[error("cgroup {path} still has processes {pids:?} after killing for {waited:?}")]
    KillTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// The pids still listed in `cgroup.procs`.
        pids: Vec<i32>,
        /// How long the kill loop ran.
        waited: Duration,
    },
    /// A path from state does not lie inside the cgroup root (or is not normal).
    #[error("cgroup path {path} is outside the cgroup root {root}")]
    OutsideRoot {
        /// The refused path.
        path: PathBuf,
        /// The root (v1: the controller's mount point).
        root: PathBuf,
    },
    /// Paths recorded for one layout were given with a root of another.
    #[error("cgroup paths {paths} do not match the {layout} layout of {root}")]
    LayoutMismatch {
        /// The paths, as JSON.
        paths: String,
        /// The root's layout.
        layout: super::Layout,
        /// The cgroup root.
        root: PathBuf,
    },
    /// Setting or reading a cgroup's owner mark (an extended attribute) failed.
    #[error("{op} {name} of {path}: {}", os(cause))]
    Xattr {
        /// `set` or `get`.
        op: &'static str,
        /// The attribute, e.g. `trusted.nomad-shim.root`.
        name: &'static str,
        /// The cgroup directory.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
    },
    /// A controller cannot be enabled for the cgroups below `path`: it is not
    /// the root and has processes of its own (cgroup v2's "no internal
    /// processes" rule).
    #[error(
        "cannot enable cgroup controller {controller} below {path}: that cgroup has \
         processes of its own (cgroup v2 hands controllers down from a cgroup only when its \
         processes are in its children); move them into a child cgroup, or use a cgroup \
         parent without processes"
    )]
    InternalProcesses {
        /// The controller.
        controller: String,
        /// The cgroup that has processes.
        path: PathBuf,
    },
    /// The task cgroup to create exists and was made for a task of another
    /// state root: it is left alone, and the start fails.
    #[error(
        "cgroup {path} already exists and belongs to a task of another root ({owner}): \
         not touched; stop that task (nomad-shim --root {owner} --cgroup-parent {parent} rm --force {id}) \
         or use another task id or cgroup parent"
    )]
    ForeignCgroup {
        /// The existing cgroup directory.
        path: PathBuf,
        /// The cgroup parent it is in (relative to the hierarchy).
        parent: String,
        /// The task id (the directory's name).
        id: String,
        /// The state root named by its owner mark.
        owner: String,
    },
    /// The task cgroup to create exists, has no owner mark, and is not empty: it
    /// was not made by nomad-shim (or by a version before owner marks).
    #[error(
        "cgroup {path} already exists, has no owner mark ({name}) and is not empty: \
         not made by nomad-shim for this root, so not touched; kill its processes and \
         remove it (rmdir), or use another task id or cgroup parent"
    )]
    UnmarkedCgroup {
        /// The existing cgroup directory.
        path: PathBuf,
        /// The attribute looked for.
        name: &'static str,
    },
    /// A device rule list that cannot be applied the same way on v1 and v2.
    #[error("invalid device rules: {reason}")]
    InvalidDeviceRules {
        /// What is wrong with the list.
        reason: &'static str,
    },
    /// `bpf(BPF_PROG_LOAD)` of the v2 device program failed.
    #[error("load the device program for {path}: {}{}{log}", os(cause), if log.is_empty() { "" } else { ": verifier: " })]
    BpfLoad {
        /// The cgroup the program was for.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
        /// The last line of the verifier's log, if any.
        log: String,
    },
    /// `bpf(BPF_PROG_ATTACH)` of the device program to the cgroup failed.
    #[error("attach the device program to {path}: {}", os(cause))]
    BpfAttach {
        /// The cgroup directory.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
    },
}

/// The OS error's text without Rust's " (os error N)" suffix: "Device or resource busy".
fn os(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rsplit_once(" (os error ") {
        Some((msg, _)) => msg.to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_error_reads_well() {
        let e = Error::Write {
            path: "/sys/fs/cgroup/memory/nomad-shim/t1/memory.limit_in_bytes".into(),
            value: "67108864".into(),
            cause: io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert_eq!(
            e.to_string(),
            "write 67108864 to /sys/fs/cgroup/memory/nomad-shim/t1/memory.limit_in_bytes: \
             Device or resource busy"
        );
    }
}
