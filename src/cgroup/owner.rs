//! Owner marks: which state root a task cgroup was made for, and what a start
//! does when `<parent>/<id>` is already there.
//!
//! Several roots (agents, test runs) may share one cgroup parent, and task ids
//! are only unique within a root. So each task cgroup directory (every
//! hierarchy on v1) gets, right after its `mkdir`, the extended attribute
//! [`OWNER_XATTR`] holding the canonical path of the state root of its task.
//! `trusted.*` attributes are kept by kernfs for cgroupfs v1 and v2 alike
//! (xattr(7): settable by `CAP_SYS_ADMIN` only, so no task without it can forge
//! or erase one; kernel 6.18 checked, and the VM's 6.1).
//!
//! A start that finds the task cgroup there already ([`TaskCgroup::create_owned`]):
//!
//! | what is there | what happens |
//! |---|---|
//! | marked with this root | a leftover of this root (a supervisor killed before its first state write, an earlier run of the same id): every process of its subtree is killed, the subtree removed, the cgroup made anew |
//! | marked with another root | refused, [`Error::ForeignCgroup`] naming the cgroup and the root; nothing touched |
//! | unmarked, empty (no process and no sub-cgroup in any hierarchy) | a start that died between `mkdir` and the mark: removed and made anew |
//! | unmarked, not empty | refused, [`Error::UnmarkedCgroup`]: not made by nomad-shim, or by a version before marks |
//!
//! Reconcile and `rm` ([`TaskCgroup::marked_by_other`]) leave a cgroup marked by
//! another root alone: the path recorded in this root's state was taken over.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::detect::{CgroupRoot, Layout};
use super::error::{Error, Result};
use super::resources::Resources;
use super::{paths, tree, v1, v2, Backend, TaskCgroup};

/// The extended attribute of a task cgroup that names its state root.
pub const OWNER_XATTR: &str = "trusted.nomad-shim.root";

/// The same mark on a fixture root (a plain directory of a test, possibly
/// without root): `user.*` attributes need no privilege.
const FIXTURE_XATTR: &str = "user.nomad-shim.root";

/// Who a task cgroup is made for: the state root of the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(PathBuf);

impl Owner {
    /// The owner for state root `path`: its canonical path (as given if it
    /// cannot be resolved), so that two spellings of one root are one owner.
    pub fn root(path: &Path) -> Owner {
        Owner(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    }

    /// The state root.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// What a cgroup directory's mark says.
#[derive(Debug, PartialEq, Eq)]
enum Mark {
    /// The directory does not exist.
    Gone,
    /// It exists without a mark.
    Unmarked,
    /// It names this state root.
    Root(PathBuf),
}

fn xattr_name(root: &CgroupRoot) -> &'static str {
    if root.fixture {
        FIXTURE_XATTR
    } else {
        OWNER_XATTR
    }
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidName {
        name: path.display().to_string(),
        reason: "contains a NUL byte",
    })
}

/// Set the mark of `dir` (lsetxattr(2); cgroupfs has no symlinks).
fn set_mark(root: &CgroupRoot, dir: &Path, owner: &Owner) -> Result<()> {
    let name = xattr_name(root);
    let c_name = CString::new(name).expect("no NUL in a constant");
    crate::sys::lsetxattr(&c_path(dir)?, &c_name, owner.0.as_os_str().as_bytes()).map_err(|e| {
        Error::Xattr {
            op: "set",
            name,
            path: dir.to_path_buf(),
            cause: io::Error::from(e),
        }
    })
}

/// Read the mark of `dir`.
fn get_mark(root: &CgroupRoot, dir: &Path) -> Result<Mark> {
    let name = xattr_name(root);
    let c_name = CString::new(name).expect("no NUL in a constant");
    // PATH_MAX: a root path longer than that could not have been marked.
    let mut buf = [0u8; libc::PATH_MAX as usize];
    match crate::sys::lgetxattr(&c_path(dir)?, &c_name, &mut buf) {
        Ok(n) => Ok(Mark::Root(PathBuf::from(std::ffi::OsStr::from_bytes(
            &buf[..n],
        )))),
        Err(Errno::ENODATA) => Ok(Mark::Unmarked),
        Err(Errno::ENOENT | Errno::ENODEV) => Ok(Mark::Gone),
        Err(e) => Err(Error::Xattr {
            op: "get",
            name,
            path: dir.to_path_buf(),
            cause: io::Error::from(e),
        }),
    }
}

/// The `log` target of the warning that a leftover cgroup was killed: the
/// supervisor turns it into a `leftover_cgroup_killed` event.
pub const LEFTOVER_TARGET: &str = "nomad_shim::cgroup::leftover_cgroup_killed";

impl TaskCgroup {
    /// [`TaskCgroup::create`] for a task of state root `owner`, which marks
    /// every directory of the task cgroup with it (module docs), after dealing
    /// with a cgroup already at `<parent>/<id>`: this root's leftover is
    /// killed (its whole subtree) and removed, then made anew; another root's
    /// is [`Error::ForeignCgroup`]; an unmarked one that is not empty is
    /// [`Error::UnmarkedCgroup`]. Only `<parent>/<id>` itself and its subtree
    /// are ever touched.
    pub fn create_owned(
        root: &CgroupRoot,
        parent: &str,
        id: &str,
        res: &Resources,
        best_effort: bool,
        owner: &Owner,
    ) -> Result<(TaskCgroup, Vec<Error>)> {
        res.validate()?;
        let rel = paths::parent_name(parent)?.join(paths::task_name(id)?);
        // The common case first: nothing at <parent>/<id>, so nothing to
        // look at. A leftover, live or not, always has a freezer and (v1) a
        // devices directory, which every task joins: its `mkdir` answers
        // EEXIST, and only then are the marks of every hierarchy read.
        let (cg, warnings) = match TaskCgroup::create(root, parent, id, res, best_effort) {
            Err(Error::Mkdir { cause, .. })
                if cause.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                let leftover = TaskCgroup::everywhere(root, &rel)?;
                if leftover.claim_leftover(owner, &rel)? {
                    // The supervisor records this as an event (target = its kind).
                    log::warn!(
                        target: LEFTOVER_TARGET,
                        "a leftover cgroup {} of this root was killed and removed before the task's own was made",
                        rel.display()
                    );
                    leftover.remove()?;
                }
                TaskCgroup::create(root, parent, id, res, best_effort)?
            }
            other => other?,
        };
        crate::failpoint!("cgroup-before-mark");
        if let Err(e) = cg.mark(owner) {
            if let Err(rm) = cg.remove() {
                log::warn!("cgroup {} not marked, and not removed: {rm}", rel.display());
            }
            return Err(e);
        }
        Ok((cg, warnings))
    }

    /// Mark every directory of the task cgroup as made for `owner`.
    pub fn mark(&self, owner: &Owner) -> Result<()> {
        let root = self.root();
        for d in self.dirs() {
            set_mark(root, &d, owner)?;
        }
        Ok(())
    }

    /// The root named by the mark of one of the task cgroup's directories, if
    /// that is another than `owner`: the recorded path now belongs to a task of
    /// that root, and must not be killed or removed for this one. Unmarked or
    /// missing directories are not another's.
    pub fn marked_by_other(&self, owner: &Owner) -> Result<Option<PathBuf>> {
        let root = self.root();
        for d in self.dirs() {
            if let Mark::Root(r) = get_mark(root, &d)? {
                if r != owner.0 {
                    return Ok(Some(r));
                }
            }
        }
        Ok(None)
    }

    /// Whether this cgroup is there for a clean-up of `owner`'s to remove:
    /// some directory of it exists, and none is marked by another root.
    /// `Ok(false)` when all are gone already (the supervisor removed them,
    /// the common case), sparing a removal that would find nothing.
    pub fn ours_to_remove(&self, owner: &Owner) -> Result<bool> {
        let root = self.root();
        let mut found = false;
        for d in self.dirs() {
            match get_mark(root, &d)? {
                Mark::Gone => {}
                Mark::Root(r) if r != owner.0 => return Ok(false),
                Mark::Root(_) | Mark::Unmarked => found = true,
            }
        }
        Ok(found)
    }

    /// Whether there is a leftover to clean up: `Ok(false)` if no directory of
    /// it exists; `Ok(true)` if every one that exists is marked by `owner` or,
    /// unmarked, the whole leftover is empty; else the refusal.
    fn claim_leftover(&self, owner: &Owner, rel: &Path) -> Result<bool> {
        let root = self.root();
        let mut found = false;
        let mut unmarked = None;
        for d in self.dirs() {
            match get_mark(root, &d)? {
                Mark::Gone => {}
                Mark::Root(r) if r == owner.0 => found = true,
                Mark::Root(r) => return Err(foreign(d, rel, &r)),
                Mark::Unmarked => {
                    found = true;
                    unmarked.get_or_insert(d);
                }
            }
        }
        if let Some(path) = unmarked {
            let has_children = self.dirs().iter().any(|d| tree::subtree(d).len() > 1);
            if has_children || !self.is_empty()? {
                return Err(Error::UnmarkedCgroup {
                    path,
                    name: xattr_name(root),
                });
            }
        }
        Ok(found)
    }

    /// The library's clean-up after a start whose supervisor died before its
    /// first state write: the cgroup at exactly `<parent>/<id>` is killed and
    /// removed (`Ok(true)`) on the terms a start takes a leftover on
    /// (`claim_leftover`): every directory that exists marked by `owner`, or
    /// the whole cgroup empty where one is unmarked (the supervisor died
    /// between its `mkdir`s and the marks; found by the crash matrix,
    /// tests/crash.rs). Nothing there: `Ok(false)`. Otherwise the refusal,
    /// and nothing is touched.
    pub fn remove_unrecorded(
        root: &CgroupRoot,
        parent: &str,
        id: &str,
        owner: &Owner,
    ) -> Result<bool> {
        let rel = paths::parent_name(parent)?.join(paths::task_name(id)?);
        let cg = TaskCgroup::everywhere(root, &rel)?;
        let found = cg.claim_leftover(owner, &rel)?;
        if found {
            cg.remove()?;
        }
        Ok(found)
    }

    /// `rm --force ID` when this root has no task directory `ID` (removed by
    /// hand, or a supervisor killed before it wrote one): the cgroup at
    /// exactly `<parent>/<id>`, if every directory of it that exists is
    /// marked with `owner`, gets its whole subtree killed and removed, and
    /// `Ok(true)`. Nothing there: `Ok(false)`. Marked by another root, or
    /// unmarked: [`Error::ForeignCgroup`] or [`Error::UnmarkedCgroup`], and
    /// nothing is touched.
    pub fn remove_orphan(root: &CgroupRoot, parent: &str, id: &str, owner: &Owner) -> Result<bool> {
        let rel = paths::parent_name(parent)?.join(paths::task_name(id)?);
        let cg = TaskCgroup::everywhere(root, &rel)?;
        let mut found = false;
        for d in cg.dirs() {
            match get_mark(root, &d)? {
                Mark::Gone => {}
                Mark::Root(r) if r == owner.0 => found = true,
                Mark::Root(r) => return Err(foreign(d, &rel, &r)),
                Mark::Unmarked => {
                    return Err(Error::UnmarkedCgroup {
                        path: d,
                        name: xattr_name(root),
                    })
                }
            }
        }
        if found {
            cg.remove()?;
        }
        Ok(found)
    }

    /// The task cgroup `rel` wherever it may be: v2 its one directory; v1 in
    /// every hierarchy mounted (not only those a task with given limits uses).
    fn everywhere(root: &CgroupRoot, rel: &Path) -> Result<TaskCgroup> {
        let backend = match root.layout {
            Layout::V2 => Backend::V2(v2::Cgroup::from_path(root, &root.path.join(rel))?),
            Layout::V1 | Layout::Hybrid => Backend::V1(v1::Cgroup::everywhere(root, rel)?),
        };
        Ok(TaskCgroup { backend })
    }

    fn root(&self) -> &CgroupRoot {
        match &self.backend {
            Backend::V1(c) => c.root(),
            Backend::V2(c) => c.root(),
        }
    }
}

/// The refusal of `dir` (the task cgroup `rel`), marked by the root `owner`.
fn foreign(dir: PathBuf, rel: &Path, owner: &Path) -> Error {
    Error::ForeignCgroup {
        id: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        parent: rel
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        path: dir,
        owner: owner.display().to_string(),
    }
}
