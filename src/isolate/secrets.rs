//! `secrets/`: a small tmpfs mounted **on the host** at `<task_dir>/secrets`
//! by the supervisor before it forks the task (as Nomad does), so that the
//! agent can write secrets into it too and no secret ever reaches a disk, in
//! every mode. With a chroot the child binds it into the new root.
//!
//! * Mounting: the mount point is opened with `O_PATH|O_NOFOLLOW` relative
//!   to the task dir, and the tmpfs is mounted on its `/proc/self/fd/N`
//!   magic link: a symlink planted at `secrets` (replaced by
//!   `taskdir::build` before, and refused here by `O_NOFOLLOW`) can never make
//!   root mount over a host path.
//! * The mount's source names its task (`nomad-shim-secrets:<id>`), which is
//!   how an unmount recognises it in `/proc/self/mountinfo`.
//! * Propagation: the new mount is made `MS_PRIVATE` at once, so nothing
//!   mounted inside it travels to or from other namespaces, and the copy in
//!   the task's own mount namespace (made private by the child before it
//!   builds the root) lives exactly as long as that namespace. Copies that
//!   the kernel made at mount time in peers of the parent mount (a shared
//!   `/`) go with our unmount: unmount events propagate to those peers
//!   (mount_namespaces(7), "MS_SHARED").
//! * Unmounting (end of the task, and the reconcile of a task whose
//!   supervisor died): `umount2(MNT_DETACH)` through the magic link of the
//!   opened mount point, only when the mount found there is a tmpfs whose
//!   source is this task's tag, mounted exactly at `<task_dir>/secrets`;
//!   anything else mounted there is left alone.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

use super::error::IsolateError;
use super::mounts::FdPath;
use super::spec::IsolationSpec;

/// Size of `secrets/` unless the spec says otherwise: 1 MiB, as Nomad's.
pub const DEFAULT_SECRETS_SIZE: u64 = 1 << 20;

/// The mount source of every secrets tmpfs; the task id follows.
const SOURCE_PREFIX: &str = "nomad-shim-secrets:";

/// The mount source that marks task `id`'s secrets tmpfs.
pub fn secrets_source(id: &str) -> String {
    format!("{SOURCE_PREFIX}{id}")
}

/// Supervisor, before the fork: mounts task `id`'s secrets tmpfs on
/// `<task_dir>/secrets` (size `secrets_size`, mode 0700, owned by the task
/// user, `nosuid,nodev,noexec`). The directory must exist
/// ([`super::prepare`] makes it). Returns the mount, to unmount at the end
/// with [`unmount_secrets_kept`]; `None` without a task dir, or
/// when the supervisor is not root (mount(2) needs CAP_SYS_ADMIN; the 0700
/// directory then stays a plain directory).
///
/// A leftover secrets mount of the same task id (an earlier run whose
/// supervisor was killed and never reconciled) is unmounted first; another
/// task's is an error ([`IsolateError::SecretsInUse`]). Undo with
/// [`unmount_secrets`].
pub fn mount_secrets(spec: &IsolationSpec, id: &str) -> Result<Option<SecretsMount>, IsolateError> {
    let Some(task_dir) = &spec.task_dir else {
        return Ok(None);
    };
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let path = task_dir.join("secrets");
    let tag = secrets_source(id);
    // What is left at secrets/ once our own leftovers are gone, read in the
    // same pass (one read of mountinfo, which grows with the host's mounts).
    let (_, left) = unmount_tagged(task_dir, &tag)?;
    if let Some(m) = left {
        if m.source.starts_with(SOURCE_PREFIX) {
            return Err(IsolateError::SecretsInUse {
                path,
                source_name: m.source,
            });
        }
    }
    let err = |op| {
        move |source| IsolateError::Secrets {
            op,
            path: task_dir.join("secrets"),
            source,
        }
    };
    let dir = open_secrets(task_dir)?.ok_or_else(|| err("open")(Errno::ENOENT))?;
    let (uid, gid) = super::user::plan(spec)?.owner();
    let size = spec.secrets_size.unwrap_or(DEFAULT_SECRETS_SIZE);
    let data = format!("size={size},mode=0700,uid={uid},gid={gid}");
    // The chroot's bind of it copies these flags (rootfs::bind_secrets has
    // no remount of its own).
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some(tag.as_str()),
        FdPath::new(&dir).as_cstr(),
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(err("mount tmpfs on"))?;
    drop(dir);
    // Reopen: the old fd names the directory under the new mount. Not
    // MS_REC: the tmpfs has no submounts, and only it changes.
    let root = open_secrets(task_dir)?.ok_or_else(|| err("reopen")(Errno::ENOENT))?;
    mount(
        None::<&str>,
        FdPath::new(&root).as_cstr(),
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("make private"))?;
    Ok(Some(SecretsMount(root)))
}

/// The secrets tmpfs a supervisor mounted ([`mount_secrets`]): an `O_PATH`
/// descriptor of its root, kept for the task's life, through which
/// [`unmount_secrets_kept`] unmounts exactly that mount at the end.
#[derive(Debug)]
pub struct SecretsMount(OwnedFd);

/// The end of the task, in its supervisor: unmounts the tmpfs `mount`
/// names with one `umount2(MNT_DETACH)` through its descriptor, with no
/// lookup in `/proc/self/mountinfo` (which grows with the host's mounts, a
/// secrets tmpfs per live task among them) before and after. The magic link
/// of the mount's root names that mount and no other, even with something
/// mounted over it. Should it be gone already (`EINVAL`: no longer a mount
/// of ours), what is at `<task_dir>/secrets` is looked for as
/// [`unmount_secrets`] does. Returns whether anything was unmounted.
pub fn unmount_secrets_kept(
    mount: SecretsMount,
    task_dir: &Path,
    id: &str,
) -> Result<bool, IsolateError> {
    match umount2(FdPath::new(&mount.0).as_cstr(), MntFlags::MNT_DETACH) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL) => unmount_secrets(task_dir, id),
        Err(source) => Err(IsolateError::Secrets {
            op: "unmount",
            path: task_dir.join("secrets"),
            source,
        }),
    }
}

/// Unmounts task `id`'s secrets tmpfs from `<task_dir>/secrets` if, and
/// only if, that is what is mounted there (see the module doc). Returns
/// whether anything was unmounted. Missing directories are not an error.
pub fn unmount_secrets(task_dir: &Path, id: &str) -> Result<bool, IsolateError> {
    unmount_tagged(task_dir, &secrets_source(id)).map(|(unmounted, _)| unmounted)
}

/// [`unmount_secrets`] for source `tag`; also returns what is mounted at
/// `<task_dir>/secrets` afterwards (another mount than ours, or `None`).
fn unmount_tagged(task_dir: &Path, tag: &str) -> Result<(bool, Option<MountEntry>), IsolateError> {
    let mut unmounted = false;
    // A few rounds: a leftover of an earlier run may lie under this one.
    for _ in 0..8 {
        let Some((fd, m)) = mounted_at(task_dir)? else {
            return Ok((unmounted, None));
        };
        if m.fstype != "tmpfs" || m.source != tag {
            return Ok((unmounted, Some(m)));
        }
        // MNT_DETACH: a task process that still has it as cwd or an open
        // file (none should be left) does not keep it in the host's table.
        umount2(FdPath::new(&fd).as_cstr(), MntFlags::MNT_DETACH).map_err(|source| {
            IsolateError::Secrets {
                op: "unmount",
                path: task_dir.join("secrets"),
                source,
            }
        })?;
        unmounted = true;
    }
    Ok((unmounted, mounted_at(task_dir)?.map(|(_, m)| m)))
}

/// `<task_dir>/secrets` opened `O_PATH|O_DIRECTORY|O_NOFOLLOW` (the task
/// dir too): `None` if either is missing or not a directory.
fn open_secrets(task_dir: &Path) -> Result<Option<OwnedFd>, IsolateError> {
    Ok(open_secrets_in(task_dir)?.map(|(_, fd)| fd))
}

/// [`open_secrets`], with the task dir's descriptor: (task dir, secrets).
fn open_secrets_in(task_dir: &Path) -> Result<Option<(OwnedFd, OwnedFd)>, IsolateError> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let absent = |e| matches!(e, Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP);
    let dir = match open(task_dir, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if absent(e) => return Ok(None),
        Err(source) => {
            return Err(IsolateError::Secrets {
                op: "open",
                path: task_dir.to_path_buf(),
                source,
            })
        }
    };
    match openat(&dir, "secrets", flags, Mode::empty()) {
        Ok(fd) => Ok(Some((dir, fd))),
        Err(e) if absent(e) => Ok(None),
        Err(source) => Err(IsolateError::Secrets {
            op: "open",
            path: task_dir.join("secrets"),
            source,
        }),
    }
}

/// One line of `/proc/self/mountinfo` (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    id: u64,
    root: String,
    mount_point: PathBuf,
    fstype: String,
    source: String,
}

/// The mount whose root is `<task_dir>/secrets`, with an `O_PATH` fd of
/// it: `None` when nothing is mounted exactly there.
fn mounted_at(task_dir: &Path) -> Result<Option<(OwnedFd, MountEntry)>, IsolateError> {
    let Some((parent, fd)) = open_secrets_in(task_dir)? else {
        return Ok(None);
    };
    let read = |path: &str| {
        crate::sys::read_small_string(path.as_ref()).map_err(|source| {
            IsolateError::ReadProcMounts {
                path: path.to_string(),
                source,
            }
        })
    };
    // statx's mount id (one call); fdinfo's on a kernel without it.
    let mnt_id = match crate::sys::mount_id(fd.as_fd()) {
        Some(id) => Some(id),
        None => read(&format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?
            .lines()
            .find_map(|l| {
                l.strip_prefix("mnt_id:")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            }),
    };
    let Some(mnt_id) = mnt_id else {
        return Ok(None);
    };
    // Nothing is mounted on secrets/ when it lies on the task dir's own
    // mount (the common case at every start): no need to read mountinfo,
    // which grows with the host's mounts (a secrets tmpfs per live task).
    if crate::sys::mount_id(parent.as_fd()) == Some(mnt_id) {
        return Ok(None);
    }
    drop(parent);
    let entry = read("/proc/self/mountinfo")?
        .lines()
        .filter_map(parse_mountinfo)
        .find(|m| m.id == mnt_id);
    let path = task_dir.join("secrets");
    Ok(entry
        .filter(|m| m.root == "/" && m.mount_point == path)
        .map(|m| (fd, m)))
}

/// Parses `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`.
fn parse_mountinfo(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let id = l.next()?.parse().ok()?;
    let _parent = l.next()?;
    let _dev = l.next()?;
    let root = unescape(l.next()?);
    let mount_point = PathBuf::from(unescape(l.next()?));
    let mut r = right.split(' ');
    let fstype = unescape(r.next()?);
    let source = unescape(r.next()?);
    Some(MountEntry {
        id,
        root,
        mount_point,
        fstype,
        source,
    })
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(c) = u8::try_from(n) {
                out.push(c);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let line = "36 35 98:0 / /srv/a\\040b/secrets rw,nosuid shared:7 - tmpfs nomad-shim-secrets:web.1 rw,size=1024k";
        let m = parse_mountinfo(line).unwrap();
        assert_eq!(m.id, 36);
        assert_eq!(m.root, "/");
        assert_eq!(m.mount_point, Path::new("/srv/a b/secrets"));
        assert_eq!(m.fstype, "tmpfs");
        assert_eq!(m.source, secrets_source("web.1"));
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn nothing_mounted_is_nothing_to_unmount() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!unmount_secrets(&tmp.path().join("missing"), "t").unwrap());
        std::fs::create_dir(tmp.path().join("secrets")).unwrap();
        assert!(!unmount_secrets(tmp.path(), "t").unwrap());
        assert!(mounted_at(tmp.path()).unwrap().is_none());
    }
}
