//! Reading, writing, creating and removing cgroup files, each failure a named
//! [`Error`] carrying the path. Both backends go through here.

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::detect::CgroupRoot;
use super::error::{Error, Result};

/// The whole content of a cgroup file.
pub(crate) fn read(path: &Path) -> Result<String> {
    crate::sys::read_small_string(path).map_err(|cause| Error::Read {
        path: path.to_path_buf(),
        cause,
    })
}

/// Like [`read`], but a missing file is `None` (a feature this kernel lacks).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match read(path) {
        Ok(s) => Ok(Some(s)),
        Err(Error::Read { cause, .. }) if cause.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A file holding one number ("max" is `u64::MAX`).
pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let s = read(path)?;
    parse_u64(path, s.trim())
}

/// Like [`read_u64`], but a missing file is `None`.
pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>> {
    match read_opt(path)? {
        Some(s) => parse_u64(path, s.trim()).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn parse_u64(path: &Path, s: &str) -> Result<u64> {
    if s == "max" {
        return Ok(u64::MAX);
    }
    s.parse().map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        content: s.to_string(),
    })
}

/// Write `value` to a cgroup file in a single `write(2)`, as cgroupfs requires
/// (each write is parsed on its own). The file is never created: a missing
/// control file is an error naming it.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let err = |cause| Error::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        cause,
    };
    // O_TRUNC is accepted (and ignored) by cgroupfs, and keeps test fixtures,
    // which are plain files, holding exactly the last value written.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    let n = f.write(value.as_bytes()).map_err(err)?;
    if n != value.len() {
        return Err(err(io::Error::new(ErrorKind::WriteZero, "short write")));
    }
    Ok(())
}

/// Write each of `values` to one cgroup file, each in a single `write(2)`
/// on one open descriptor (cgroupfs parses every write on its own, whatever
/// the file offset). Errors name the file and the value that failed.
pub(crate) fn write_each(path: &Path, values: &[&str]) -> Result<()> {
    let err = |value: &str| {
        let value = value.to_string();
        move |cause| Error::Write {
            path: path.to_path_buf(),
            value,
            cause,
        }
    };
    let Some(first) = values.first() else {
        return Ok(());
    };
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err(first))?;
    for value in values {
        let n = f.write(value.as_bytes()).map_err(err(value))?;
        if n != value.len() {
            return Err(err(value)(io::Error::new(
                ErrorKind::WriteZero,
                "short write",
            )));
        }
    }
    Ok(())
}

/// The pids listed in a `cgroup.procs` file.
pub(crate) fn read_pids(procs: &Path) -> Result<Vec<i32>> {
    let s = read(procs)?;
    s.split_whitespace()
        .map(|t| {
            t.parse().map_err(|_| Error::Parse {
                path: procs.to_path_buf(),
                content: t.to_string(),
            })
        })
        .collect()
}

/// SIGKILL every pid; a process that is already gone is fine.
pub(crate) fn kill_pids(pids: &[i32], cgroup: &Path) -> Result<()> {
    for &pid in pids {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                return Err(Error::Kill {
                    pid,
                    path: cgroup.to_path_buf(),
                    cause: e.into(),
                })
            }
        }
    }
    Ok(())
}

/// A `cgroup.procs` file opened write-only and close-on-exec (std always sets
/// `O_CLOEXEC`), for a child to join with [`join_with_fds`](super::join_with_fds).
pub(crate) fn open_procs(procs: &Path) -> Result<OwnedFd> {
    OpenOptions::new()
        .write(true)
        .open(procs)
        .map(OwnedFd::from)
        .map_err(|cause| Error::Open {
            path: procs.to_path_buf(),
            cause,
        })
}

/// An `O_PATH | O_DIRECTORY | O_CLOEXEC` descriptor of `dir` (for
/// `clone3(CLONE_INTO_CGROUP)`, which takes such a descriptor).
pub(crate) fn open_dir_path(dir: &Path) -> Result<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)
        .map(OwnedFd::from)
        .map_err(|cause| Error::Open {
            path: dir.to_path_buf(),
            cause,
        })
}

/// `mkdir` of a parent level: another supervisor may be making the same
/// parent at the same moment, so one that exists already is fine. Returns
/// whether this call made it.
pub(crate) fn mkdir_parent(root: &CgroupRoot, path: &Path) -> Result<bool> {
    match mkdir(root, path) {
        Ok(()) => Ok(true),
        Err(Error::Mkdir { cause, .. }) if cause.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// `mkdir` of a cgroup. With a fixture root, copy the parent's regular files into
/// the new directory, as cgroupfs gives a new cgroup its control files.
pub(crate) fn mkdir(root: &CgroupRoot, path: &Path) -> Result<()> {
    let err = |cause| Error::Mkdir {
        path: path.to_path_buf(),
        cause,
    };
    fs::create_dir(path).map_err(err)?;
    if root.fixture {
        if let Some(parent) = path.parent() {
            for entry in fs::read_dir(parent).map_err(err)? {
                let entry = entry.map_err(err)?;
                if entry.file_type().map_err(err)?.is_file() {
                    let to = path.join(entry.file_name());
                    fs::copy(entry.path(), &to).map_err(err)?;
                    // The kernel starts a new cpuset with empty sets (v1 and v2).
                    if matches!(
                        entry.file_name().to_str(),
                        Some("cpuset.cpus" | "cpuset.mems")
                    ) {
                        fs::write(&to, "\n").map_err(err)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// `rmdir` of a cgroup, retrying for a moment on `EBUSY` (the kernel may still be
/// tearing down the tasks that just exited). A missing directory is `Ok(false)`.
pub(crate) fn rmdir(root: &CgroupRoot, path: &Path) -> Result<bool> {
    let err = |cause| Error::Rmdir {
        path: path.to_path_buf(),
        cause,
    };
    if root.fixture && path.is_dir() {
        for entry in fs::read_dir(path).map_err(err)? {
            let entry = entry.map_err(err)?;
            if entry.file_type().map_err(err)?.is_file() {
                fs::remove_file(entry.path()).map_err(err)?;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(err(e)),
        }
    }
}

/// `rmdir` of a cgroup only if it has no child cgroup and no process; `Ok(false)`
/// when it has (the kernel refuses with `EBUSY`). A missing directory counts as
/// removed. With a fixture root, only sub-directories make it "not empty".
pub(crate) fn rmdir_if_empty(root: &CgroupRoot, path: &Path) -> Result<bool> {
    if root.fixture {
        let has_children = fs::read_dir(path)
            .map(|rd| rd.flatten().any(|e| e.path().is_dir()))
            .unwrap_or(false);
        return if has_children {
            Ok(false)
        } else {
            rmdir(root, path).map(|_| true)
        };
    }
    match fs::remove_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => Ok(false),
        Err(cause) => Err(Error::Rmdir {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

/// Poll `cond` every few milliseconds until it is true or `deadline` passes;
/// returns its last value.
pub(crate) fn wait_until(
    deadline: Instant,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let mut pause = Duration::from_millis(1);
    loop {
        if cond()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The value of `key` in a flat-keyed file ("key value" per line), if present.
pub(crate) fn keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The whitespace-separated words of a controller list file
/// (`cgroup.controllers`, `cgroup.subtree_control`).
pub(crate) fn words(content: &str) -> Vec<String> {
    content.split_whitespace().map(str::to_string).collect()
}

/// Whether `dir/name` exists (a file the kernel provides only with some feature).
pub(crate) fn has(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}
