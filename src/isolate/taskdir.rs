//! The task directory layout, created by the root supervisor inside a
//! directory that earlier tasks could write to.
//!
//! Every operation is relative to an fd of its parent and never follows a
//! symlink: `fstatat(AT_SYMLINK_NOFOLLOW)`, `mkdirat`, `openat(O_NOFOLLOW)`,
//! `unlinkat`, then `fchown`/`fchmod` on the opened fd. A symlink found where
//! a directory or mount point belongs (`local -> /etc` planted by a previous
//! task) is removed — unlinkat(2) removes the link, never its target — and
//! replaced by a fresh directory; any other wrong type is an error. So the
//! supervisor never creates, chowns, chmods or mounts over a host file.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, mkdir, unlinkat, Gid, Uid, UnlinkatFlags};

use super::error::IsolateError;

/// What a mount point must be: a bind of a directory needs a directory, a
/// bind of a file needs a file (mount(2)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
}

/// A mount point to create under the task dir.
#[derive(Debug, Clone)]
pub(crate) struct MountPoint {
    /// Relative to the task dir; normal components only.
    pub(crate) rel: PathBuf,
    /// Directory or file.
    pub(crate) kind: Kind,
}

/// Nomad's task directories: name, mode, and whether the task user owns it.
const TASK_DIRS: &[(&str, u32, bool)] = &[
    // The allocation's shared dir: a mount point when `alloc_dir` is given
    // (then root's), else the task's own.
    ("alloc", 0o755, true),
    // The task's private data.
    ("local", 0o755, true),
    // Secrets: a 0700 tmpfs owned by the task user is mounted over it in a
    // chroot; without one, this directory itself is 0700.
    ("secrets", 0o700, true),
    // Scratch space for everyone, sticky like /tmp.
    ("tmp", 0o1777, false),
];

/// Creates the task dir (its parent must exist), `alloc/ local/ secrets/
/// tmp/` with their modes and owners, and every mount point.
pub(crate) fn build(
    task_dir: &Path,
    owner: (Uid, Gid),
    alloc_is_mount: bool,
    mountpoints: &[MountPoint],
) -> Result<(), IsolateError> {
    let root = open_task_dir(task_dir)?;
    for (name, mode, task_owned) in TASK_DIRS {
        let dir = ensure_dir(&root, task_dir, OsStr::new(name))?;
        let path = task_dir.join(name);
        let (uid, gid) = if *task_owned && !(alloc_is_mount && *name == "alloc") {
            owner
        } else {
            (Uid::from_raw(0), Gid::from_raw(0))
        };
        // fchown/fchmod act on the directory we opened with O_NOFOLLOW,
        // never on whatever the name points to by now.
        fchown(&dir, Some(uid), Some(gid)).map_err(|source| IsolateError::Chown {
            path: path.clone(),
            source,
        })?;
        fchmod(&dir, Mode::from_bits_truncate(*mode))
            .map_err(|source| IsolateError::Chmod { path, source })?;
    }
    for mp in mountpoints {
        // The task's own dirs (`local`, `tmp`, `alloc` bound onto
        // themselves) were made just above: no second look at them.
        let made_above = mp.kind == Kind::Dir
            && TASK_DIRS
                .iter()
                .any(|(name, _, _)| mp.rel.as_os_str() == OsStr::new(name));
        if !made_above {
            ensure_path(&root, task_dir, mp)?;
        }
    }
    Ok(())
}

/// `mkdir` the task dir itself if missing (0755, root's), then open it with
/// `O_DIRECTORY|O_NOFOLLOW`: the task dir path is the agent's choice and
/// trusted, but its last component must not be a symlink.
fn open_task_dir(task_dir: &Path) -> Result<OwnedFd, IsolateError> {
    match mkdir(task_dir, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(source) => {
            return Err(IsolateError::CreateTaskDir {
                path: task_dir.to_path_buf(),
                source,
            })
        }
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    open(task_dir, flags, Mode::empty()).map_err(|source| IsolateError::OpenTaskDir {
        path: task_dir.to_path_buf(),
        source,
    })
}

/// Creates `mp.rel` under `root` one component at a time: intermediate
/// components are directories, the last one `mp.kind`.
fn ensure_path(root: &OwnedFd, task_dir: &Path, mp: &MountPoint) -> Result<(), IsolateError> {
    let names: Vec<&OsStr> = mp
        .rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((last, parents)) = names.split_last() else {
        return Ok(());
    };
    let mut dir_path = task_dir.to_path_buf();
    let mut dir: Option<OwnedFd> = None;
    for name in parents {
        let next = ensure_dir(dir.as_ref().unwrap_or(root), &dir_path, name)?;
        dir_path.push(name);
        dir = Some(next);
    }
    let parent = dir.as_ref().unwrap_or(root);
    match mp.kind {
        Kind::Dir => ensure_dir(parent, &dir_path, last).map(drop),
        Kind::File => ensure_file(parent, &dir_path, last),
    }
}

/// What is at `name` under `parent`, without following it: `None` if
/// nothing, after removing a symlink.
fn existing_type(
    parent: &OwnedFd,
    parent_path: &Path,
    name: &OsStr,
) -> Result<Option<SFlag>, IsolateError> {
    let path = parent_path.join(name);
    let st = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(None),
        Err(source) => return Err(IsolateError::StatEntry { path, source }),
    };
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if kind == SFlag::S_IFLNK {
        // A planted symlink: remove the link itself (unlinkat(2) does not
        // follow it), and create what belongs here instead.
        unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|source| IsolateError::RemoveSymlink { path, source })?;
        return Ok(None);
    }
    Ok(Some(kind))
}

/// A directory at `name` under `parent`, created (0755) if missing, opened
/// with `O_DIRECTORY|O_NOFOLLOW`.
fn ensure_dir(parent: &OwnedFd, parent_path: &Path, name: &OsStr) -> Result<OwnedFd, IsolateError> {
    let path = parent_path.join(name);
    match existing_type(parent, parent_path, name)? {
        None => mkdirat(parent, name, Mode::from_bits_truncate(0o755)).map_err(|source| {
            IsolateError::CreateDir {
                path: path.clone(),
                source,
            }
        })?,
        Some(SFlag::S_IFDIR) => {}
        Some(_) => {
            return Err(IsolateError::WrongFileType {
                path,
                expected: "directory",
            })
        }
    }
    // O_NOFOLLOW: if a symlink was swapped in since, this fails (ELOOP)
    // instead of opening its target.
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(parent, name, flags, Mode::empty())
        .map_err(|source| IsolateError::OpenDir { path, source })
}

/// An empty regular file at `name` under `parent` (a mount point for a file
/// bind), created with `O_CREAT|O_EXCL|O_NOFOLLOW` if missing.
fn ensure_file(parent: &OwnedFd, parent_path: &Path, name: &OsStr) -> Result<(), IsolateError> {
    let path = parent_path.join(name);
    match existing_type(parent, parent_path, name)? {
        None => {
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            openat(parent, name, flags, Mode::from_bits_truncate(0o644))
                .map(drop)
                .map_err(|source| IsolateError::CreateFile { path, source })
        }
        Some(SFlag::S_IFREG) => Ok(()),
        Some(_) => Err(IsolateError::WrongFileType {
            path,
            expected: "regular file",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn mp(rel: &str, kind: Kind) -> MountPoint {
        MountPoint {
            rel: rel.into(),
            kind,
        }
    }

    #[test]
    fn planted_symlinks_are_replaced_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let decoy = tmp.path().join("decoy");
        std::fs::create_dir(&decoy).unwrap();
        std::fs::set_permissions(&decoy, std::fs::Permissions::from_mode(0o751)).unwrap();
        let task = tmp.path().join("task");
        std::fs::create_dir(&task).unwrap();
        for name in ["local", "secrets", "tmp", "usr", "run"] {
            symlink(&decoy, task.join(name)).unwrap();
        }
        symlink(decoy.join("file"), task.join("resolv.conf")).unwrap();
        let me = (nix::unistd::getuid(), nix::unistd::getgid());
        let mps = [
            mp("usr", Kind::Dir),
            mp("run/resolvconf", Kind::Dir),
            mp("resolv.conf", Kind::File),
        ];
        build(&task, me, false, &mps).unwrap();
        for name in ["local", "secrets", "tmp", "usr", "run", "run/resolvconf"] {
            let md = std::fs::symlink_metadata(task.join(name)).unwrap();
            assert!(md.is_dir(), "{name}");
        }
        assert!(std::fs::symlink_metadata(task.join("resolv.conf"))
            .unwrap()
            .is_file());
        assert_eq!(
            std::fs::read_dir(&decoy).unwrap().count(),
            0,
            "nothing created in the decoy"
        );
        assert_eq!(std::fs::metadata(&decoy).unwrap().mode() & 0o7777, 0o751);
        assert_eq!(
            std::fs::metadata(task.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        assert_eq!(
            std::fs::metadata(task.join("secrets")).unwrap().mode() & 0o7777,
            0o700
        );
    }

    #[test]
    fn wrong_type_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("local"), b"x").unwrap();
        let me = (nix::unistd::getuid(), nix::unistd::getgid());
        let err = build(tmp.path(), me, false, &[]).unwrap_err();
        assert!(matches!(err, IsolateError::WrongFileType { .. }), "{err}");
    }

    #[test]
    fn task_dir_itself_must_not_be_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("task");
        symlink(tmp.path(), &link).unwrap();
        let me = (nix::unistd::getuid(), nix::unistd::getgid());
        let err = build(&link, me, false, &[]).unwrap_err();
        assert!(matches!(err, IsolateError::OpenTaskDir { .. }), "{err}");
    }
}
