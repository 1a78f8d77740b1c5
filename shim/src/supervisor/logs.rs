//! The task's output: the read end of a pipe, spliced into `stdout.log` /
//! `stderr.log` in the task's state directory, rotated at a size limit.
//!
//! `splice(2)` moves the bytes from the pipe to the file inside the kernel,
//! without a copy through this process. The task never waits for the agent:
//! the pipe is drained whenever it is readable, whoever is reading the logs.
//! Rotation keeps `max_files` files per stream: `stdout.log` is the live one,
//! `stdout.log.1` the newest rotated one, up to `stdout.log.<max_files-1>`.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, splice, OFlag, SpliceFFlags};
use nix::sys::stat::Mode;
use nomad_shim::LogPolicy;

/// Largest amount moved by one `splice` call (a pipe's default capacity).
const CHUNK: u64 = 64 * 1024;

/// One stream: a pipe's read end and the file it is written to.
pub struct LogSink {
    name: &'static str,
    pipe: Option<OwnedFd>,
    file: File,
    size: u64,
    policy: LogPolicy,
    /// Bytes moved in all, across rotations (followers are nudged when it
    /// grows).
    total: u64,
}

/// Whether a stream is still open after a drain.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Everything readable was moved; the writer may write more.
    Open,
    /// The last writer closed its end.
    Eof,
}

impl LogSink {
    /// Creates (truncating) `dir/name` for `pipe` (a non-blocking read end).
    pub fn new(
        dir: BorrowedFd<'_>,
        name: &'static str,
        pipe: OwnedFd,
        policy: LogPolicy,
    ) -> nix::Result<LogSink> {
        let file = open_log(dir, name)?;
        Ok(LogSink {
            name,
            pipe: Some(pipe),
            file,
            size: 0,
            policy,
            total: 0,
        })
    }

    /// Bytes moved so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The pipe's read end, while open.
    pub fn pipe(&self) -> Option<BorrowedFd<'_>> {
        self.pipe.as_ref().map(|p| p.as_fd())
    }

    /// Moves everything readable now from the pipe into the file, rotating
    /// as needed. Never blocks.
    pub fn drain(&mut self, dir: BorrowedFd<'_>) -> Result<Drained, (&'static str, Errno)> {
        loop {
            if self.pipe.is_none() {
                return Ok(Drained::Eof);
            }
            if self.size >= self.policy.max_size {
                self.rotate(dir).map_err(|e| ("rotate", e))?;
            }
            let Some(pipe) = &self.pipe else {
                return Ok(Drained::Eof);
            };
            let room = (self.policy.max_size - self.size).min(CHUNK) as usize;
            match splice(
                pipe,
                None,
                &self.file,
                None,
                room,
                SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
            ) {
                Ok(0) => {
                    self.pipe = None;
                    return Ok(Drained::Eof);
                }
                Ok(n) => {
                    self.size += n as u64;
                    self.total += n as u64;
                }
                Err(Errno::EAGAIN) => return Ok(Drained::Open),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(("splice", e)),
            }
        }
    }

    /// Writes `bytes` (read by the supervisor itself: a terminal's output,
    /// which `splice(2)` cannot take) to the file, rotating as needed.
    pub fn append(
        &mut self,
        dir: BorrowedFd<'_>,
        mut bytes: &[u8],
    ) -> Result<(), (&'static str, Errno)> {
        while !bytes.is_empty() {
            if self.size >= self.policy.max_size {
                self.rotate(dir).map_err(|e| ("rotate", e))?;
            }
            let room = (self.policy.max_size - self.size).min(bytes.len() as u64) as usize;
            match nix::unistd::write(&self.file, &bytes[..room]) {
                Ok(n) => {
                    self.size += n as u64;
                    self.total += n as u64;
                    bytes = &bytes[n..];
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(("write", e)),
            }
        }
        Ok(())
    }

    /// Closes the pipe without reading more (a writer outside the task's
    /// reach still holds it).
    pub fn close(&mut self) {
        self.pipe = None;
    }

    fn rotate(&mut self, dir: BorrowedFd<'_>) -> nix::Result<()> {
        if self.policy.max_files <= 1 {
            // One file only: start it over.
            self.file
                .set_len(0)
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
            nix::unistd::lseek(self.file.as_fd(), 0, nix::unistd::Whence::SeekSet)?;
            self.size = 0;
            return Ok(());
        }
        // stdout.log.(N-2) -> .(N-1), ..., stdout.log -> .1; the oldest
        // is overwritten by the rename.
        for n in (1..self.policy.max_files - 1).rev() {
            let from = format!("{}.{n}", self.name);
            let to = format!("{}.{}", self.name, n + 1);
            match renameat(dir, from.as_str(), dir, to.as_str()) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        renameat(dir, self.name, dir, format!("{}.1", self.name).as_str())?;
        self.file = open_log(dir, self.name)?;
        self.size = 0;
        Ok(())
    }
}

fn open_log(dir: BorrowedFd<'_>, name: &str) -> nix::Result<File> {
    // Not O_APPEND: splice(2) refuses a target opened for appending. The
    // file is new and only this process writes it, so the offset is the end.
    let fd = openat(
        dir,
        Path::new(name),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o640),
    )?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sink(dir: &tempfile::TempDir, policy: LogPolicy) -> (LogSink, File, OwnedFd) {
        let dfd: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        (
            LogSink::new(dfd.as_fd(), "stdout.log", r, policy).unwrap(),
            File::from(w),
            dfd,
        )
    }

    #[test]
    fn drains_to_the_file_and_sees_eof() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, mut w, dfd) = sink(&dir, LogPolicy::default());
        w.write_all(b"hello\n").unwrap();
        assert_eq!(s.drain(dfd.as_fd()).unwrap(), Drained::Open);
        drop(w);
        assert_eq!(s.drain(dfd.as_fd()).unwrap(), Drained::Eof);
        assert_eq!(
            std::fs::read(dir.path().join("stdout.log")).unwrap(),
            b"hello\n"
        );
    }

    #[test]
    fn rotates_at_max_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, mut w, dfd) = sink(
            &dir,
            LogPolicy {
                max_files: 3,
                max_size: 10,
            },
        );
        for chunk in [b"0123456789", b"abcdefghij", b"ABCDEFGHIJ", b"klmnopqrst"] {
            w.write_all(chunk).unwrap();
            s.drain(dfd.as_fd()).unwrap();
        }
        w.write_all(b"xy").unwrap();
        s.drain(dfd.as_fd()).unwrap();
        let read = |n: &str| String::from_utf8(std::fs::read(dir.path().join(n)).unwrap()).unwrap();
        assert_eq!(read("stdout.log"), "xy");
        assert_eq!(read("stdout.log.1"), "klmnopqrst");
        assert_eq!(read("stdout.log.2"), "ABCDEFGHIJ");
        assert!(!dir.path().join("stdout.log.3").exists());
    }

    #[test]
    fn append_rotates_like_drain() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _w, dfd) = sink(
            &dir,
            LogPolicy {
                max_files: 2,
                max_size: 4,
            },
        );
        s.append(dfd.as_fd(), b"abcdef").unwrap();
        assert_eq!(s.total(), 6);
        assert_eq!(std::fs::read(dir.path().join("stdout.log")).unwrap(), b"ef");
        assert_eq!(
            std::fs::read(dir.path().join("stdout.log.1")).unwrap(),
            b"abcd"
        );
    }

    #[test]
    fn a_single_file_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, mut w, dfd) = sink(
            &dir,
            LogPolicy {
                max_files: 1,
                max_size: 4,
            },
        );
        w.write_all(b"abcdef").unwrap();
        s.drain(dfd.as_fd()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("stdout.log")).unwrap(), b"ef");
    }
}
