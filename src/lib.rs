//! # nomad-shim
//!
//! Runs each task of a node agent as a supervised, isolated Linux process
//! that outlives the agent — the role of Nomad's task executor, containerd's
//! shim and conmon.
//!
//! For every task, [`Executor::start`] runs the `nomad-shim` binary, which
//! detaches (a new session, re-parented away from the agent), takes a lock in
//! the task's state directory, executes the task's program, and records its
//! pid, a `state.json` and, when it ends, the exact exit. When the agent
//! restarts, [`Executor::open`] reattaches by id and [`Task::wait`] still
//! returns that exit. If the supervisor itself is killed, the task is killed
//! too and its exit is reported as [`TaskExit::Lost`] — never as a made-up
//! code.
//!
//! ```
//! # fn main() -> Result<(), nomad_shim::Error> {
//! # if !nix::unistd::geteuid().is_root() || nomad_shim::find_shim(None).is_err() {
//! #     eprintln!("skipped: the crate example needs root and NOMAD_SHIM (the test script sets both)");
//! #     return Ok(());
//! # }
//! # // A process that starts tasks must reap supervisors that end while it
//! # // is their nearest subreaper (DESIGN §8); an agent under a reaping init
//! # // needs nothing of this.
//! # nix::sys::prctl::set_child_subreaper(true).unwrap();
//! use nomad_shim::{Executor, TaskSpec, TaskExit};
//!
//! let executor = Executor::new()?; // /run/nomad-shim as root
//! # // Tests use a cgroup parent of their own, removed at the end.
//! # let executor = executor.cgroup_parent(format!("nomad-shim-doctest-{}", std::process::id()));
//! let mut spec = TaskSpec::new("/bin/sh");
//! spec.args(["-c", "echo hello; exit 3"]);
//! let mut task = executor.start(&spec)?;
//! let id = task.id().clone();          // persist this to reattach later
//!
//! // ... the agent may restart here ...
//! let mut task = executor.open(id.as_str())?;
//! let exit = task.wait()?;
//! assert_eq!(exit.code(), Some(3));
//! assert!(matches!(exit, TaskExit::Exited(_)));
//! # let cgroup = task.state()?.cgroup.expect("every task has a cgroup");
//! executor.remove(id.as_str(), false)?;
//! # let cgroup: nomad_shim::cgroup::CgroupPaths = serde_json::from_value(cgroup).unwrap();
//! # let cg_root = nomad_shim::cgroup::CgroupRoot::detect()?;
//! # nomad_shim::cgroup::TaskCgroup::from_paths(&cg_root, &cgroup)?.remove_parents_if_empty()?;
//! # while nix::sys::wait::waitpid(None, None).is_ok() {}
//! # Ok(())
//! # }
//! ```
//!
//! To wait on many tasks from one thread, poll their fds: [`Task`]
//! implements [`AsFd`](std::os::fd::AsFd), readable once the exit is durable
//! (then [`Task::try_wait`] returns it at once); with the crate feature
//! `tokio`, `Task::wait_async` awaits the same fd on tokio's reactor.
//!
//! The map from Nomad's 2015 `Executor` interface to this crate is in the
//! README; the process model in `docs/architecture.md`; the state files in
//! `docs/state-format.md`.
#![deny(missing_docs)]

pub mod cgroup;
pub mod error;
pub mod executor;
pub mod identity;
pub mod isolate;
pub mod protocol;
pub mod spec;
pub mod state;
pub mod sys;
pub mod task;

pub use error::{Error, Result};
pub use executor::{find_shim, Executor};
pub use identity::Identity;
pub use spec::{LogPolicy, TaskSpec};
pub use state::{ExitRecord, Status, TaskId, TaskState};
pub use task::{Task, TaskExit};
