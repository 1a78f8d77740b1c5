//! Waiting on many tasks from one thread: the descriptor behind
//! `impl AsFd for Task`, and (feature `tokio`) [`Task::wait_async`].
//!
//! For a handle that [`Executor::start`](crate::Executor::start) returned,
//! the descriptor is the library's end of the start's sync pipe, which the
//! supervisor closes as soon as the task's final state is durable (the
//! reply's `until_exit`, docs/protocol.md): EOF, which `poll` reports as
//! readable, before the supervisor has removed the cgroup and exited. A
//! supervisor that dies closes it too; then the exit may not be recorded,
//! and [`Task::try_wait`] waits the moment until the supervisor's exit is
//! complete (its files are closed before its pidfd wakes) and records the
//! task `lost`.
//!
//! Otherwise the descriptor is the supervisor's pidfd. `pidfd_open(2)`: "the file
//! descriptor becomes readable when the process terminates", and the
//! supervisor terminates only after the task's final state is durable
//! (`state.json` written, fsynced and renamed), or without writing it when
//! it was killed — and then the first reader (`reconcile`) records the task
//! `lost`, which its lock, released by that same exit before the pidfd
//! wakes (`exit_files` comes before `exit_notify` in the kernel's
//! `do_exit`), lets it do at once. Either way, once the fd is readable,
//! [`Task::try_wait`] returns the exit without waiting for anything.
//!
//! A handle made after the supervisor was gone (a task that ended before
//! `open`, or before `start` could open the pidfd) has no process to open:
//! it holds an eventfd whose counter is 1 instead, readable at once and
//! forever (`eventfd(2)`), so that one poll loop treats every task alike.
//!
//! `pidfd_open(2)` (and `poll` on a pidfd) came with Linux 5.3. The library
//! needs it anyway — every pid it acts on is checked through a pidfd — so a
//! kernel without it is not papered over with a polling fallback:
//! `start`/`open` fail with [`Error::Io`] whose `op` names `pidfd_open`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::Task;
use crate::error::{Error, Result};
use crate::identity::{Identity, Pidfd};
use crate::state::{names, Status, TaskDir};

/// The fds of a new handle: a pidfd on the live supervisor, or, when the
/// supervisor is already gone, an always-readable eventfd.
pub(super) fn wait_fds(
    dir: &TaskDir,
    supervisor: Option<Identity>,
    status: Status,
) -> Result<(Option<Pidfd>, Option<OwnedFd>)> {
    let ready = || {
        EventFd::from_value_and_flags(1, EfdFlags::EFD_CLOEXEC)
            .map(|e| (None, Some(OwnedFd::from(e))))
            .map_err(|e| Error::Io {
                op: "eventfd(2) for the wait fd of",
                what: dir.id().to_string(),
                source: e.into(),
            })
    };
    if matches!(status, Status::Exited | Status::Lost) {
        return ready();
    }
    let Some(sup) = supervisor else {
        // `starting` with no supervisor recorded, and the lock held
        // (reconcile made it `lost` otherwise): the holder is not a
        // supervisor this library can wait on.
        return Err(Error::LockHeldByOther {
            id: dir.id().clone(),
            path: dir.path().join(names::LOCK),
            supervisor_pid: 0,
        });
    };
    match sup.open() {
        Ok(Some(pidfd)) => Ok((Some(pidfd), None)),
        // Gone since the state was read: the next reader records the exit
        // (or the loss) at once.
        Ok(None) => ready(),
        Err(e) => Err(Error::Io {
            op: "pidfd_open(2) (Linux 5.3 and later) on the supervisor of",
            what: format!("{} (pid {})", dir.id(), sup.pid),
            source: e,
        }),
    }
}

/// A descriptor that becomes readable once the task's exit is known for
/// good; `poll(2)`, `epoll(7)` or an async reactor can wait on thousands of
/// them from one thread.
///
/// **Readable** means `poll(2)` reports `POLLIN` or `POLLHUP` (a handle
/// from `start`: its sync pipe's EOF; otherwise the supervisor's pidfd,
/// which also reports `POLLHUP` once reaped): the task's final state is on
/// disk, or — if the supervisor was killed before it wrote it — no process
/// can write it any more, and the next [`Task::try_wait`] records the task
/// `lost` and returns that. After
/// readiness, `try_wait()` returns `Ok(Some(exit))` without blocking (it
/// reads `state.json`, and in the `lost` case kills what is left of the
/// task's cgroup first). Before it, the fd is not readable while the
/// supervisor lives, even if the task itself has just exited: the exit may
/// not be durable yet (use `try_wait()` for "ended", this fd for "ended
/// and recorded").
///
/// The fd belongs to the `Task`: do not read from it or close it. Take it
/// anew (`as_fd()`) after a blocking [`Task::wait`]: the only case where it
/// changes is a handle opened while its task was starting, which `wait`
/// gives a pidfd. Readiness is a level: once readable, it stays readable.
/// Register it for `POLLIN` (epoll: `EPOLLIN`; `POLLHUP` and `EPOLLHUP`
/// are always reported).
///
/// ```no_run
/// # fn main() -> Result<(), nomad_shim::Error> {
/// use std::os::fd::AsFd;
/// use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
///
/// let executor = nomad_shim::Executor::new()?;
/// let mut tasks = vec![
///     executor.start(&nomad_shim::TaskSpec::new("/bin/true"))?,
///     executor.start(&nomad_shim::TaskSpec::new("/bin/false"))?,
/// ];
/// while !tasks.is_empty() {
///     let mut fds: Vec<_> = tasks
///         .iter()
///         .map(|t| PollFd::new(t.as_fd(), PollFlags::POLLIN))
///         .collect();
///     poll(&mut fds, PollTimeout::NONE).expect("poll");
///     let ready: Vec<bool> = fds.iter().map(|f| f.any() == Some(true)).collect();
///     drop(fds);
///     let mut i = 0;
///     tasks.retain_mut(|t| {
///         i += 1;
///         if !ready[i - 1] {
///             return true;
///         }
///         let exit = t.try_wait().expect("try_wait").expect("the exit is durable");
///         println!("{} ended: {exit:?}", t.id());
///         false
///     });
/// }
/// # Ok(())
/// # }
/// ```
impl AsFd for Task {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match (&self.exit_pipe, &self.pidfd, &self.ended) {
            (Some(pipe), _, _) => pipe.as_fd(),
            (None, Some(pidfd), _) => pidfd.as_fd(),
            (None, None, Some(ended)) => ended.as_fd(),
            // Every constructor sets one of the three (`started` the pipe
            // or wait_fds, `opened` wait_fds), and `wait` only ever
            // replaces a pidfd with another.
            (None, None, None) => unreachable!("a Task always has a wait fd"),
        }
    }
}

#[cfg(feature = "tokio")]
impl Task {
    /// Waits, without blocking the thread, until the task has ended and its
    /// exit is recorded: [`Task::wait`] for an async agent. It awaits the
    /// readiness of the task's wait fd (see `impl AsFd for Task`) on
    /// tokio's reactor, then returns what [`Task::try_wait`] reads. One
    /// current-thread runtime can wait on thousands of tasks at once.
    ///
    /// It must be awaited inside a tokio runtime with IO enabled
    /// (`enable_io()` or `enable_all()`); outside any runtime, or in one
    /// without IO, it returns [`Error::Io`] (`ErrorKind::Unsupported`).
    ///
    /// # Panics
    ///
    /// Never by itself. In a runtime without IO, tokio panics at the fd's
    /// registration; that panic is caught and returned as the error above,
    /// except in a program built with `panic = "abort"`, where tokio's panic
    /// aborts before anything can catch it. Cancel-safe: dropping the
    /// future loses nothing, and the exit is still returned by the next
    /// wait.
    ///
    /// Needs the crate feature `tokio`.
    ///
    /// ```no_run
    /// # async fn agent() -> Result<(), nomad_shim::Error> {
    /// let executor = nomad_shim::Executor::new()?;
    /// let mut task = executor.start(&nomad_shim::TaskSpec::new("/bin/true"))?;
    /// let exit = task.wait_async().await?;
    /// assert!(exit.success());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_async(&mut self) -> Result<super::TaskExit> {
        let io_err = |op: &'static str, id: String| {
            move |source: std::io::Error| Error::Io {
                op,
                what: id,
                source,
            }
        };
        loop {
            if let Some(exit) = self.try_wait()? {
                return Ok(exit);
            }
            // Registration panics outside a runtime: say so instead.
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(io_err(
                    "wait_async (outside a tokio runtime) on",
                    self.id().to_string(),
                )(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "Task::wait_async must be awaited inside a tokio runtime",
                )));
            }
            // A runtime built without IO (no `enable_io()`) makes tokio
            // panic at registration, with no way to ask first: that misuse
            // is turned into an error here (where panics unwind).
            let wait_fd = self.as_fd();
            let registered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::sys::register_readable(wait_fd)
            }))
            .map_err(|_| {
                io_err("wait_async (a tokio runtime without IO) on", self.id().to_string())(
                    std::io::Error::new(
                        std::io::ErrorKind::Unsupported,
                        "Task::wait_async needs a tokio runtime with IO enabled (enable_io or enable_all)",
                    ),
                )
            })?;
            let fd =
                registered.map_err(io_err("register the wait fd of", self.id().to_string()))?;
            // Level-triggered underneath, edge-triggered in tokio: a fd that
            // is already readable when registered is reported at once.
            let guard = fd
                .readable()
                .await
                .map_err(io_err("await the wait fd of", self.id().to_string()))?;
            drop(guard);
            drop(fd);
            // Readable: the exit is durable or the supervisor gone, so this
            // try_wait returns the exit (see the AsFd docs).
        }
    }
}
