//! Starting a task from the CLI without exec'ing a second copy of ourselves.
//!
//! The library starts a supervisor by running `nomad-shim __supervise`: an
//! agent may be multi-threaded, and only a fresh process may run Rust code
//! after its fork. The CLI *is* `nomad-shim` and is still single-threaded
//! when it starts a task (signal-hook registers handlers later, and no
//! thread is ever made), so it forks and the child enters the supervisor's
//! entry point directly. That spares one exec and one program start-up per
//! `run` or `start` (about a millisecond on these machines, where glibc's
//! start-up CPU probing traps to the hypervisor). And the child is the
//! supervisor itself, not an intermediate: the CLI is its
//! intermediate (it lives only until the start is reported, or, for `run`,
//! until the task has ended), which spares the intermediate's fork too.
//! Once the CLI exits, the supervisor is re-parented as after an
//! intermediate's exit; while it lives, the CLI reaps a supervisor that
//! ended (after a failed start, or at the end of `run`: cli::main).

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};
use nomad_shim::{Error, Executor, Task, TaskSpec};

/// `run --rm`'s hold on its task (supervisor/mod.rs, `Caller`): the write
/// end of a pipe whose read end the supervisor keeps. Once the task's
/// output has ended, this process says on the pipe that it removes the task
/// itself ([`Release::commit`]), then reads the exit and removes the task
/// as `rm` does ([`Release::finish`]); if it goes before its word (killed,
/// its output closed, detached from), the pipe ends unsaid and the
/// supervisor removes the task when it ends, so that nothing is left
/// behind either way (Docker's `--rm` moved into its daemon for the same
/// reason).
pub struct Release {
    hold: OwnedFd,
    supervisor: Pid,
    committed: bool,
}

impl Release {
    /// Tells the supervisor this process will remove the task: once the
    /// task's output has ended, with its exit about to be read. Once.
    pub fn commit(&mut self) {
        if !self.committed {
            self.committed = true;
            // A pipe with room: the one byte is written at once. Should it
            // not be (EPIPE: the supervisor is gone), `finish` removes the
            // task as ever.
            let _ = nix::unistd::write(&self.hold, b"r");
        }
    }

    /// After the task's exit has been read: waits for the supervisor to
    /// exit (it is our child), and removes the task as `rm` does.
    pub fn finish(mut self, executor: &Executor, id: &str) -> Result<(), Error> {
        self.commit();
        drop(self.hold);
        // Ended, or reaped already (ECHILD): either way it is gone.
        while let Err(Errno::EINTR) = nix::sys::wait::waitpid(self.supervisor, None) {}
        executor.remove(id, false)
    }
}

/// Starts `spec` like [`Executor::start`], forking instead of exec'ing;
/// with `remove_on_exit` (`run --rm`), also the task's [`Release`].
pub fn start(
    executor: &Executor,
    spec: &TaskSpec,
    remove_on_exit: bool,
) -> Result<(Task, Option<Release>), Error> {
    let prepared = executor.prepare_start(spec);
    // What the supervisor needs from here (its root and id) is allocated
    // outside the scratch region, which the forked child drops.
    crate::scratch::end();
    let mut pending = prepared?;
    let (write_end, lock) = match pending
        .take_write_end()
        .and_then(|w| Ok((w, pending.take_lock()?)))
    {
        Ok(fds) => fds,
        Err(e) => {
            pending.abandon();
            return Err(e);
        }
    };
    let root = executor.root().to_path_buf();
    let id = pending.id().to_string();
    // Close-on-exec both: neither end may reach the task.
    let hold = match remove_on_exit {
        true => match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(pair) => Some(pair),
            Err(e) => {
                pending.abandon();
                return Err(Error::Io {
                    op: "create the removal pipe",
                    what: format!("the supervisor of {id}"),
                    source: e.into(),
                });
            }
        },
        false => None,
    };
    match crate::sys::fork() {
        Err(e) => {
            pending.abandon();
            Err(Error::Io {
                op: "fork",
                what: format!("the supervisor of {id}"),
                source: e.into(),
            })
        }
        Ok(ForkResult::Child) => {
            // What the CLI allocated to prepare the start is its own, not
            // ours: its pages go (scratch.rs).
            crate::scratch::drop_in_child();
            // Its failpoints are a supervisor's (a test build's only).
            #[cfg(feature = "failpoints")]
            nomad_shim::failpoint::become_supervisor();
            // The supervisor: stdout becomes the sync pipe, stdin the task's
            // lock (held since its directory was made) and stderr /dev/null,
            // as the library arranges for the exec'd shim. dup2 of valid fds
            // does not fail; were it to, the reply would not arrive and the
            // start reports the supervisor vanished.
            let _ = nix::unistd::dup2_stdout(write_end.as_fd());
            let _ = nix::unistd::dup2_stdin(lock.as_fd());
            if let Ok(null) = nix::fcntl::open(
                c"/dev/null",
                nix::fcntl::OFlag::O_RDWR,
                nix::sys::stat::Mode::empty(),
            ) {
                let _ = nix::unistd::dup2_stderr(null.as_fd());
            }
            // The read end only (main_forked closes every other descriptor).
            let hold = hold.map(|(read, _)| read);
            crate::supervisor::main_forked(root.as_os_str(), std::ffi::OsStr::new(&id), hold)
        }
        Ok(ForkResult::Parent { child }) => {
            // The supervisor holds the lock now; should it vanish, the lock
            // must be free for finish_start's clean-up.
            drop(write_end);
            drop(lock);
            // Reaped here only if the start failed (it exits right after
            // its reply, or died before one); a running one is left alone.
            // The write end only: the supervisor watches for its writers.
            let release = hold.map(|(_, write)| Release {
                hold: write,
                supervisor: child,
                committed: false,
            });
            let task = executor.finish_start(pending, move |started| {
                if started {
                    return String::new();
                }
                loop {
                    match nix::sys::wait::waitpid(child, None) {
                        Ok(status) => break format!("supervisor process {status:?}"),
                        Err(Errno::EINTR) => continue,
                        Err(e) => break format!("supervisor process: {e}"),
                    }
                }
            })?;
            Ok((task, release))
        }
    }
}
