//! Starting a task from the CLI without exec'ing a second copy of ourselves.
//!
//! The library starts a supervisor by running `nomad-shim __supervise`: an
//! agent may be multi-threaded, and only a fresh process may run Rust code
//! after its fork. The CLI *is* `nomad-shim` and is still single-threaded
//! when it starts a task (signal-hook registers handlers later, and no
//! thread is ever made), so it forks and the child enters the supervisor's
//! entry point directly, as the intermediate process. That spares one exec
//! and one program start-up per `run` or `start` (about a millisecond on
//! these machines, where glibc's start-up CPU probing traps to the
//! hypervisor). The process model is the same: the child forks the
//! supervisor and exits at once; we reap it and read the reply.

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::unistd::ForkResult;
use nomad_shim::{Error, Executor, Task, TaskSpec};

/// Starts `spec` like [`Executor::start`], forking instead of exec'ing.
pub fn start(executor: &Executor, spec: &TaskSpec) -> Result<Task, Error> {
    let prepared = executor.prepare_start(spec);
    // What the supervisor needs from here (its root and id) is allocated
    // outside the scratch region, which the forked child drops.
    crate::scratch::end();
    let mut pending = prepared?;
    let write_end = match pending.take_write_end() {
        Ok(fd) => fd,
        Err(e) => {
            pending.abandon();
            return Err(e);
        }
    };
    let root = executor.root().to_path_buf();
    let id = pending.id().to_string();
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
            // The intermediate: stdout becomes the sync pipe, stdin and
            // stderr /dev/null, as the library arranges for the exec'd shim.
            // dup2 of valid fds does not fail; were it to, the reply would
            // not arrive and the start reports the supervisor vanished.
            let _ = nix::unistd::dup2_stdout(write_end.as_fd());
            if let Ok(null) = nix::fcntl::open(
                c"/dev/null",
                nix::fcntl::OFlag::O_RDWR,
                nix::sys::stat::Mode::empty(),
            ) {
                let _ = nix::unistd::dup2_stdin(null.as_fd());
                let _ = nix::unistd::dup2_stderr(null.as_fd());
            }
            crate::supervisor::main(root.as_os_str(), std::ffi::OsStr::new(&id))
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            executor.finish_start(pending, move || loop {
                match nix::sys::wait::waitpid(child, None) {
                    Ok(status) => break format!("intermediate process {status:?}"),
                    Err(Errno::EINTR) => continue,
                    Err(e) => break format!("intermediate process: {e}"),
                }
            })
        }
    }
}
