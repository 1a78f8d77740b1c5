//! Pids as identities.
//!
//! A pid alone names a process only until it exits; afterwards the kernel
//! may hand the number to anyone. Here a process is named by its pid *and* its
//! start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot),
//! within one boot (`/proc/sys/kernel/random/boot_id`). Before anything is
//! done to a process named in a file, [`Identity::open`] opens a pidfd and
//! then checks the start time, so the descriptor is known to refer to the
//! process the file meant — see `pidfd_open(2)`.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::sys;

/// A process named by pid and start time, as written in `state.json`.
///
/// # Examples
///
/// ```
/// use nomad_shim::Identity;
///
/// let me = Identity::of(std::process::id() as i32).unwrap();
/// assert_eq!(me.pid, std::process::id() as i32);
/// // The start time tells this process from a later one given the same pid.
/// assert_eq!(Identity::of(me.pid).unwrap(), me);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The process id.
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: start time in clock ticks after boot.
    pub start_time: u64,
}

impl Identity {
    /// The identity of the live process `pid`.
    pub fn of(pid: i32) -> io::Result<Identity> {
        Ok(Identity {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// Opens a pidfd on this process if it is still the same process.
    ///
    /// `Ok(None)` means the process is gone: it exited, or its pid now names
    /// another process.
    #[doc(hidden)]
    pub fn open(&self) -> io::Result<Option<Pidfd>> {
        if self.pid <= 0 {
            return Ok(None);
        }
        let fd = match sys::pidfd_open(self.pid) {
            Ok(fd) => fd,
            // ESRCH: no such pid. EINVAL (Linux 6.1 in the v2 VM) or ENOENT
            // (6.18 on the hosts), for a pid > 0: the pid names no process,
            // only a thread that is not its process's leader (the number
            // went to a thread of someone else), or one being reaped. Either
            // way the process we named is gone.
            Err(Errno::ESRCH | Errno::EINVAL | Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(io::Error::from(e)),
        };
        // The pidfd was opened first, so if the start time still matches now,
        // the descriptor refers to the process the identity names.
        match start_time(self.pid) {
            Ok(t) if t == self.start_time => Ok(Some(Pidfd { fd, pid: self.pid })),
            Ok(_) => Ok(None),
            // Gone between the pidfd_open and the read: ENOENT when the
            // /proc entry went first, ESRCH when the process was reaped
            // while its stat was being read (seen by tests/races.rs: 1 in
            // 3000 `run --rm`).
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A pidfd on a process whose identity was checked.
#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    pid: i32,
}

impl Pidfd {
    /// The pid the descriptor was opened on.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` to exactly this process (never to a reuse of its pid).
    pub fn signal(&self, signal: i32) -> nix::Result<()> {
        sys::pidfd_send_signal(&self.fd, signal)
    }

    /// Blocks until the process exits, or `timeout` passes (`None`: no limit).
    /// Returns whether it exited. This sleeps in `poll(2)`; it never polls on
    /// a clock.
    pub fn wait_exit(&self, timeout: Option<Duration>) -> io::Result<bool> {
        Ok(sys::poll_readable(self.fd.as_fd(), timeout)?)
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`.
pub fn start_time(pid: i32) -> io::Result<u64> {
    let stat = crate::sys::read_small(format!("/proc/{pid}/stat").as_ref())?;
    parse_start_time(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed /proc/{pid}/stat"),
        )
    })
}

/// The fields of a `/proc/<pid>/stat` line from field 3 (state) on. The
/// command name (field 2) is in parentheses and may itself contain spaces
/// and `)`, so fields are counted from the *last* `)`.
fn fields_after_comm(stat: &[u8]) -> Option<std::str::SplitAsciiWhitespace<'_>> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    Some(
        std::str::from_utf8(&stat[close + 1..])
            .ok()?
            .split_ascii_whitespace(),
    )
}

/// Parses the start time (field 22) out of a `/proc/<pid>/stat` line.
pub(crate) fn parse_start_time(stat: &[u8]) -> Option<u64> {
    fields_after_comm(stat)?.nth(22 - 3)?.parse().ok()
}

/// The one-letter state of process `pid` (field 3 of `/proc/<pid>/stat`:
/// `R`, `S`, `Z`, ...), or `None` when there is no such process.
pub fn state(pid: i32) -> Option<char> {
    let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
    fields_after_comm(&stat)?.next()?.chars().next()
}

/// The direct children of this process, of all its threads
/// (`/proc/self/task/*/children`): what a subreaper has to reap.
pub fn children() -> Vec<i32> {
    let mut out = Vec::new();
    for t in fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(s) = fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once.
pub fn boot_id() -> io::Result<&'static str> {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    if let Some(id) = BOOT_ID.get() {
        return Ok(id);
    }
    let id = crate::sys::read_small_string("/proc/sys/kernel/random/boot_id".as_ref())?
        .trim()
        .to_owned();
    Ok(BOOT_ID.get_or_init(|| id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let line = b"4101 (a) b (c) S 1 4101 4101 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 918274 1000 10 ...";
        assert_eq!(parse_start_time(line), Some(918274));
        assert_eq!(parse_start_time(b"garbage"), None);
        assert_eq!(parse_start_time(b"1 (x) S 1"), None);
    }

    #[test]
    fn own_identity_opens_and_a_wrong_start_time_does_not() {
        let me = Identity::of(std::process::id() as i32).unwrap();
        assert!(me.open().unwrap().is_some());
        let other = Identity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(other.open().unwrap().is_none());
        assert!(Identity {
            pid: 0,
            start_time: 0
        }
        .open()
        .unwrap()
        .is_none());
    }

    /// A supervisor's pid reused by a thread of another process (seen in
    /// the cgroup v2 VM: pidfd_open failed with EINVAL, and reconcile
    /// with it) names a process that is gone.
    #[test]
    fn a_pid_that_names_a_thread_is_a_gone_process() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, std::process::id() as i32);
        let gone = Identity {
            pid: tid,
            start_time: 1,
        }
        .open();
        done_tx.send(()).unwrap();
        thread.join().unwrap();
        assert!(gone.unwrap().is_none());
    }

    #[test]
    fn state_and_children_of_this_process() {
        assert!(matches!(state(std::process::id() as i32), Some('R' | 'S')));
        assert_eq!(state(0), None);
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(children().contains(&(child.id() as i32)));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn boot_id_is_a_uuid() {
        assert_eq!(boot_id().unwrap().len(), 36);
    }
}
