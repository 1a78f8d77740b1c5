//! Reading and writing the task directory's files.
//!
//! Writes are atomic and durable: write a temporary file, `fsync` it,
//! `rename(2)` it over the old one, `fsync` the directory (without the last
//! step the rename itself may be lost in a crash; see `fsync(2)`).
//! Reads refuse anything that is not a small regular file: a symlink
//! (`O_NOFOLLOW`), a FIFO (opened `O_NONBLOCK`, then rejected by `fstat`),
//! or a file over the size limit.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StateError;

/// The largest state or spec file a reader accepts.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// Writes `value` as pretty JSON to `dir/name`, atomically; durably when
/// `durable` (file and directory fsynced).
pub fn write_json<T: Serialize>(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    value: &T,
    mode: u32,
    durable: bool,
) -> Result<(), StateError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Encode {
        path: dir_path.join(name),
        source: e,
    })?;
    bytes.push(b'\n');
    write_atomic(dir, dir_path, name, &bytes, mode, durable)
}

/// Replaces `dir/name` with `bytes` atomically (see the module docs).
pub fn write_atomic(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    durable: bool,
) -> Result<(), StateError> {
    let tmp = format!(".{name}.tmp");
    let io =
        |op: &'static str, file: &str, e: Errno| StateError::io(op, dir_path.join(file), e.into());
    // Not O_TRUNC: a temporary file reserved by `reserve` keeps its blocks
    // until the write is in, so that a full disk cannot refuse it; it is cut
    // to size after.
    let fd = openat(
        dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| io("create", &tmp, e))?;
    let mut file = File::from(fd);
    file.write_all(bytes)
        .map_err(|e| StateError::io("write", dir_path.join(&tmp), e))?;
    file.set_len(bytes.len() as u64)
        .map_err(|e| StateError::io("truncate", dir_path.join(&tmp), e))?;
    if durable {
        file.sync_all()
            .map_err(|e| StateError::io("fsync", dir_path.join(&tmp), e))?;
    }
    drop(file);
    crate::failpoint!("state-before-rename");
    renameat(dir, tmp.as_str(), dir, name).map_err(|e| io("rename into place", name, e))?;
    crate::failpoint!("state-after-rename");
    if durable {
        nix::unistd::fsync(dir)
            .map_err(|e| StateError::io("fsync directory", dir_path.to_path_buf(), e.into()))?;
    }
    Ok(())
}

/// Reserves `size` bytes of disk for the next [`write_atomic`] of `name`
/// (`fallocate(2)` on its temporary file): the write that records a task's
/// exit must not fail because the task's own output filled the disk.
pub fn reserve(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    size: u64,
    mode: u32,
) -> Result<(), StateError> {
    let tmp = format!(".{name}.tmp");
    let fd = openat(
        dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| StateError::io("create", dir_path.join(&tmp), e.into()))?;
    nix::fcntl::fallocate(
        &fd,
        nix::fcntl::FallocateFlags::empty(),
        0,
        size as libc::off_t,
    )
    .map_err(|e| StateError::io("fallocate", dir_path.join(&tmp), e.into()))?;
    Ok(())
}

/// Reads and parses `dir/name`, refusing symlinks, non-regular files and
/// files over [`MAX_FILE_SIZE`].
pub fn read_json<T: DeserializeOwned>(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
) -> Result<T, StateError> {
    let path = dir_path.join(name);
    let bytes = read_limited(dir, &path, name)?;
    serde_json::from_slice(&bytes).map_err(|e| StateError::Parse { path, source: e })
}

/// Reads `dir/name` whole, with the checks of [`read_json`].
pub fn read_limited(dir: BorrowedFd<'_>, path: &Path, name: &str) -> Result<Vec<u8>, StateError> {
    let fd = match openat(
        dir,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => {
            return Err(StateError::NotRegular {
                path: path.to_path_buf(),
                kind: "a symbolic link",
            })
        }
        Err(Errno::ENOENT) => {
            return Err(StateError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(StateError::io("open", path.to_path_buf(), e.into())),
    };
    let st = fstat(fd.as_fd()).map_err(|e| StateError::io("stat", path.to_path_buf(), e.into()))?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if kind != SFlag::S_IFREG {
        let kind = match kind {
            SFlag::S_IFIFO => "a FIFO",
            SFlag::S_IFDIR => "a directory",
            SFlag::S_IFSOCK => "a socket",
            SFlag::S_IFCHR | SFlag::S_IFBLK => "a device",
            _ => "not a regular file",
        };
        return Err(StateError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    if st.st_size as u64 > MAX_FILE_SIZE {
        return Err(StateError::TooLarge {
            path: path.to_path_buf(),
            size: st.st_size as u64,
            limit: MAX_FILE_SIZE,
        });
    }
    let mut bytes = Vec::with_capacity(st.st_size as usize);
    // Read one byte past the limit in case the file grew since fstat.
    File::from(fd)
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| StateError::io("read", path.to_path_buf(), e))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(StateError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: MAX_FILE_SIZE,
        });
    }
    Ok(bytes)
}
