//! Errors of the supervisor's half ([`super::prepare`] and validation). The
//! child's half reports [`super::StepError`]s instead.

use std::path::PathBuf;

use nix::errno::Errno;

/// Why a spec is invalid or the task directory could not be prepared.
///
/// # Examples
///
/// ```
/// use nomad_shim::{IsolateError, IsolationSpec};
///
/// // A hostname needs a UTS namespace of the task's own.
/// let isolation = IsolationSpec { hostname: Some("web-1".into()), ..IsolationSpec::default() };
/// let err: IsolateError = isolation.validate().unwrap_err();
/// println!("{err}");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IsolateError {
    /// A capability name the kernel and this build do not know.
    #[error("unknown capability {name:?}")]
    UnknownCapability {
        /// The name as given.
        name: String,
    },
    /// A resource name setrlimit(2) does not know.
    #[error("unknown rlimit {name:?}")]
    UnknownRlimit {
        /// The name as given.
        name: String,
    },
    /// A soft limit above its hard limit.
    #[error("rlimit {name}: soft limit {soft} above hard limit {hard}")]
    RlimitSoftAboveHard {
        /// The resource.
        name: String,
        /// The soft limit asked.
        soft: u64,
        /// The hard limit asked.
        hard: u64,
    },
    /// A hostname needs its own UTS namespace.
    #[error("a hostname needs the uts namespace")]
    HostnameWithoutUts,
    /// Empty, longer than 64 bytes, or with a NUL.
    #[error("invalid hostname {hostname:?}")]
    InvalidHostname {
        /// The hostname as given.
        hostname: String,
    },
    /// A path that must be absolute is not.
    #[error("{field}: path {path:?} is not absolute")]
    RelativePath {
        /// The spec field.
        field: &'static str,
        /// The path as given.
        path: PathBuf,
    },
    /// A path with a `..` component.
    #[error("{field}: path {path:?} contains '..'")]
    DotDotInPath {
        /// The spec field.
        field: &'static str,
        /// The path as given.
        path: PathBuf,
    },
    /// A path or name with a NUL byte.
    #[error("{path:?} contains a NUL byte")]
    NulInPath {
        /// The path, lossily.
        path: String,
    },
    /// A `chroot_env` destination that is `/` or one of the task's own
    /// directories (`alloc local secrets tmp dev proc`).
    #[error("chroot_env destination {dst:?} is reserved")]
    ReservedChrootDst {
        /// The destination.
        dst: PathBuf,
    },
    /// A `chroot_env` destination inside another one.
    #[error("chroot_env destination {inner:?} is inside {outer:?}")]
    NestedChrootDst {
        /// The enclosing destination.
        outer: PathBuf,
        /// The nested destination.
        inner: PathBuf,
    },
    /// `chroot` without a `task_dir` to pivot into.
    #[error("chroot needs a task_dir")]
    ChrootWithoutTaskDir,
    /// `alloc_dir` without a `task_dir` to bind it into.
    #[error("alloc_dir needs a task_dir")]
    AllocWithoutTaskDir,
    /// `uid` without `gid`.
    #[error("uid given without gid")]
    UidWithoutGid,
    /// The running kernel has capabilities this build cannot name, so it
    /// could not drop them from the bounding set: refuse rather than leak.
    #[error("kernel has capabilities up to {last_cap}, this build knows up to {known}")]
    UnknownKernelCapabilities {
        /// `/proc/sys/kernel/cap_last_cap`.
        last_cap: u8,
        /// The highest capability this build can drop.
        known: u8,
    },
    /// Reading `/proc/sys/kernel/cap_last_cap` failed.
    #[error("read /proc/sys/kernel/cap_last_cap: {0}")]
    ReadCapLastCap(#[source] std::io::Error),
    /// `stat("/proc/self/ns/mnt")` failed.
    #[error("stat /proc/self/ns/mnt: {0}")]
    StatMountNamespace(#[source] Errno),
    /// `mkdir` of the task dir itself failed.
    #[error("create task dir {path:?}: {source}")]
    CreateTaskDir {
        /// The task dir.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// Opening the task dir (`O_DIRECTORY|O_NOFOLLOW`) failed: missing, not
    /// a directory, or a symlink.
    #[error("open task dir {path:?}: {source}")]
    OpenTaskDir {
        /// The task dir.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// `fstatat(AT_SYMLINK_NOFOLLOW)` of an entry in the task dir failed.
    #[error("stat {path:?}: {source}")]
    StatEntry {
        /// The entry.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// `unlinkat` of a symlink planted where a directory belongs failed.
    #[error("remove symlink {path:?}: {source}")]
    RemoveSymlink {
        /// The entry.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// `mkdirat` in the task dir failed.
    #[error("create directory {path:?}: {source}")]
    CreateDir {
        /// The entry.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// `openat(O_DIRECTORY|O_NOFOLLOW)` in the task dir failed.
    #[error("open directory {path:?}: {source}")]
    OpenDir {
        /// The entry.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// `openat(O_CREAT|O_EXCL|O_NOFOLLOW)` of a file mount point failed.
    #[error("create file {path:?}: {source}")]
    CreateFile {
        /// The entry.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// An entry of the wrong type (neither the expected kind nor a symlink).
    #[error("{path:?} exists and is not a {expected}")]
    WrongFileType {
        /// The entry.
        path: PathBuf,
        /// `directory` or `regular file`.
        expected: &'static str,
    },
    /// `fchown` of a task directory failed.
    #[error("chown {path:?}: {source}")]
    Chown {
        /// The entry.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// `fchmod` of a task directory failed.
    #[error("chmod {path:?}: {source}")]
    Chmod {
        /// The entry.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// A `chroot_env` source or `alloc_dir` could not be examined.
    #[error("stat {path:?}: {source}")]
    StatSource {
        /// The host path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A host path named by an option (`--chroot-env`, `--mount src=`) that
    /// cannot be examined: usually it does not exist.
    #[error("{option}{}: {}", path.display(), crate::isolate::error::os_desc(source))]
    OptionSource {
        /// The option, as the CLI spells it, with its separator
        /// (`--chroot-env `, `--mount src=`).
        option: &'static str,
        /// The host path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A `chroot_env` source that is neither a directory nor a file.
    #[error("chroot_env source {path:?} is neither a directory nor a regular file")]
    UnsupportedSource {
        /// The host path.
        path: PathBuf,
    },
    /// Opening the network namespace file failed.
    #[error("open network namespace {path:?}: {}", source.desc())]
    OpenNetns {
        /// The namespace file.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// Looking a user or group up failed.
    #[error("look up user {user:?}: {source}")]
    LookupUser {
        /// The name or id.
        user: String,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// No such user.
    #[error("unknown user {user:?}")]
    UnknownUser {
        /// The name or id.
        user: String,
    },
    /// No such group.
    #[error("unknown group {group:?}")]
    UnknownGroup {
        /// The name or id.
        group: String,
    },
    /// A name absent from `/etc/passwd` or `/etc/group`, to a build linked
    /// statically (the shipped `nomad-shim`), which never asks NSS.
    #[error("{what} {name:?} is not in {}: a statically linked nomad-shim resolves names from /etc/passwd and /etc/group only (never through NSS modules such as systemd, sss or ldap); pass numeric ids (--user UID --group GID), or start the task through the library in a dynamically linked agent", file.display())]
    NotInUserFiles {
        /// "user" or "group".
        what: &'static str,
        /// The name as given.
        name: String,
        /// The file searched.
        file: PathBuf,
    },
    /// Reading `/etc/passwd` or `/etc/group` failed.
    #[error("read {}: {source}", path.display())]
    ReadUserFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A `cap_add` entry outside the operator's `allowed_caps`.
    #[error("capability {name} is not allowed (allowed caps: {allowed})")]
    CapabilityNotAllowed {
        /// The capability (or capabilities, for `ALL`), as `CAP_NAME`.
        name: String,
        /// The allow list in effect.
        allowed: String,
    },
    /// `oom_score_adj` outside -1000..=1000 (proc(5)).
    #[error("oom_score_adj {value} is outside -1000..=1000")]
    OomScoreAdjOutOfRange {
        /// The value asked.
        value: i32,
    },
    /// A `secrets_size` of 0 (tmpfs would read it as "no limit").
    #[error("secrets_size must be at least 1 byte")]
    SecretsSizeZero,
    /// Another task's secrets tmpfs is mounted where ours goes.
    #[error("{path:?} is the secrets mount of another task ({source_name})")]
    SecretsInUse {
        /// `<task_dir>/secrets`.
        path: PathBuf,
        /// The mount's source, naming the other task.
        source_name: String,
    },
    /// A mount or unmount step of the secrets tmpfs failed.
    #[error("{op} {path:?}: {source}")]
    Secrets {
        /// What failed: `open`, `mount tmpfs on`, `make private`, `unmount`...
        op: &'static str,
        /// `<task_dir>/secrets` (or the task dir).
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// `/proc/self/mountinfo` or `/proc/self/fdinfo` could not be read.
    #[error("read {path}: {source}")]
    ReadProcMounts {
        /// The proc file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `--dns-server` that is not an IP address.
    #[error("dns-server {value:?} is not an IP address")]
    InvalidDnsServer {
        /// The value as given.
        value: String,
    },
    /// A `--dns-search` or `--dns-option` value that is empty, too long, or
    /// would add words or lines to resolv.conf (whitespace, `#`).
    #[error("{option} {value:?} is empty, too long, or has whitespace or '#'")]
    InvalidDnsValue {
        /// `dns-search` or `dns-option`.
        option: &'static str,
        /// The value as given.
        value: String,
    },
    /// `dns` without a chroot: the task would use the host's resolv.conf.
    #[error("dns settings need chroot (they replace /etc/resolv.conf inside the task's root)")]
    DnsWithoutChroot,
    /// `mounts` without a chroot: there is no root to mount into.
    #[error("mount needs chroot (the destination is a path inside the task's root)")]
    MountWithoutChroot,
    /// A mount destination that is `/` or inside `/dev`, `/proc`, `/sys` or
    /// `/secrets`.
    #[error("mount destination {dst:?} is reserved")]
    ReservedMountDst {
        /// The destination.
        dst: PathBuf,
    },
    /// A mount destination inside (or at) a read-only `chroot_env` bind.
    #[error("mount destination {dst:?} is inside the read-only chroot_env bind {chroot_env:?}")]
    MountDstInChrootEnv {
        /// The destination.
        dst: PathBuf,
        /// The chroot_env destination it lies in.
        chroot_env: PathBuf,
    },
    /// Two mounts with the same destination.
    #[error("mount destination {dst:?} is given twice")]
    DuplicateMountDst {
        /// The destination.
        dst: PathBuf,
    },
    /// A mount destination inside another mount's.
    #[error("mount destination {inner:?} is inside mount destination {outer:?}")]
    NestedMountDst {
        /// The enclosing destination.
        outer: PathBuf,
        /// The nested destination.
        inner: PathBuf,
    },
    /// Writing the task's private resolv.conf failed.
    #[error("write {path:?}: {source}")]
    WriteResolvConf {
        /// The file.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// With a `dns` block, the chroot's `/etc/resolv.conf` is neither a
    /// file nor a symlink whose target can be shown in the root, so there is
    /// nothing to bind the task's resolv.conf onto.
    #[error("cannot place the task's resolv.conf: {path:?} is missing or a symlink that cannot be resolved inside the root")]
    ResolvConfUnplaceable {
        /// The file in the chroot env's /etc source.
        path: PathBuf,
    },
    /// A passed-through device that cannot be used as given.
    #[error("device {device}: {reason}")]
    InvalidDevice {
        /// The device as given (its host path).
        device: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `stat` of a passed-through device's host path failed.
    #[error("stat device {}: {}", path.display(), os_desc(source))]
    StatDevice {
        /// The host path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A passed-through host path whose symlinks lead through `/proc`
    /// (`/dev/stdin`, `/dev/fd/N`): a descriptor of whoever opens it, not a
    /// device node.
    #[error(
        "device {}: leads to {}, a descriptor in /proc, not a device node; pass the node itself (e.g. /dev/null)",
        path.display(),
        via.display()
    )]
    DeviceThroughProc {
        /// The host path as given.
        path: PathBuf,
        /// Where its links lead, under `/proc`.
        via: PathBuf,
    },
    /// A passed-through host path that is not a char or block device.
    #[error("device {}: not a character or block device", path.display())]
    NotADevice {
        /// The host path.
        path: PathBuf,
    },
    /// 4294967295, `(uid_t)-1`: setresuid(2) and setresgid(2) read it as
    /// "leave unchanged", so it can never name the task's user or group.
    #[error("user or group id {id} is not an id ((uid_t)-1 means \"unchanged\" to the kernel, which would leave the task root)")]
    InvalidId {
        /// The id.
        id: u32,
    },
}

/// An I/O error's text without Rust's ` (os error N)` suffix.
pub(crate) fn os_desc(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rsplit_once(" (os error ") {
        Some((msg, _)) => format!("{msg} on the host"),
        None => s,
    }
}
