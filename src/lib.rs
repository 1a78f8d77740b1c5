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
//! # The API
//!
//! Everything an agent needs is at the crate root; nothing else is part of
//! the API. [`Executor`] starts ([`Executor::start`]) and reattaches to
//! ([`Executor::open`]) tasks described by a [`TaskSpec`] (with its
//! [`Resources`], [`IsolationSpec`] and [`LogPolicy`]); a [`Task`] is the
//! handle on one: [`Task::signal`] (with the re-exported [`Signal`], so no
//! `nix` version need be pinned), [`Task::stats`] ([`Stats`]),
//! [`Task::update_resources`], [`Task::wait`] ([`TaskExit`], [`ExitRecord`]),
//! and [`Task::state`] ([`TaskState`], [`Status`]). Every failure is an
//! [`Error`]. The modules behind these names are internals shared with the
//! `nomad-shim` binary, the tests and the benchmarks: they are hidden from
//! these docs and may change at any time.
//!
//! ```
//! # fn main() -> Result<(), nomad_shim::Error> {
//! # if !nix::unistd::geteuid().is_root() || nomad_shim::find_shim(None).is_err() {
//! #     eprintln!("skipped: the crate example needs root and NOMAD_SHIM (the test script sets both)");
//! #     return Ok(());
//! # }
//! # // A process that starts tasks must reap supervisors that end while it
//! # // is their nearest subreaper (docs/architecture.md, "Who reaps the supervisor"); an agent under a reaping init
//! # // needs nothing of this.
//! # nix::sys::prctl::set_child_subreaper(true).unwrap();
//! # // Tests use a cgroup parent of their own, removed at the end.
//! # let run = std::env::var("NOMAD_SHIM_TEST_RUN").map_or(String::new(), |r| format!("-{r}"));
//! # let parent = format!("nomad-shim-doctest-{}{run}", std::process::id());
//! use nomad_shim::{Executor, Resources, Signal, TaskExit, TaskSpec};
//!
//! let executor = Executor::new()?; // /run/nomad-shim as root
//! # // ... and a root of their own, not /run/nomad-shim (removed at the end,
//! # // so that the suite leaves nothing behind).
//! # let tmp = tempfile::tempdir().unwrap();
//! # let executor = Executor::with_root(tmp.path().join("root")).cgroup_parent(parent.as_str());
//!
//! // Start: returns once the program has been executed.
//! let mut spec = TaskSpec::new("/bin/sh");
//! spec.args(["-c", "trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done"]);
//! let task = executor.start(&spec)?;
//! let id = task.id().clone(); // persist this to reattach later
//! drop(task); // dropping the handle does nothing to the task
//!
//! // ... the agent may restart here: reattach by id ...
//! let mut task = executor.open(id.as_str())?;
//!
//! // Usage, read from the task's cgroup.
//! let stats = task.stats()?;
//! assert!(stats.pids.is_some_and(|p| p.current >= 1));
//!
//! // Change a limit of the running task.
//! task.update_resources(&Resources {
//!     pids_max: Some(64),
//!     ..Resources::default()
//! })?;
//!
//! // Signal it, then wait for the exact exit.
//! task.signal(Signal::SIGTERM)?;
//! let exit = task.wait()?;
//! assert_eq!(exit.code(), Some(3));
//! assert!(matches!(exit, TaskExit::Exited(_)));
//! executor.remove(id.as_str(), false)?;
//! # for hierarchy in std::iter::once("/sys/fs/cgroup".into()).chain(
//! #     std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|e| e.path()),
//! # ) {
//! #     let _ = std::fs::remove_dir(std::path::Path::new(&hierarchy).join(&parent));
//! # }
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

// Internals. The `nomad-shim` binary (a crate of its own), the integration
// tests and the benchmarks use them, so they stay `pub`, hidden from the
// docs: they are not API. See docs/architecture.md, "Module boundaries".
#[doc(hidden)]
pub mod cgroup;
mod error;
#[doc(hidden)]
pub mod executor;
#[doc(hidden)]
pub mod failpoint;
#[doc(hidden)]
pub mod identity;
#[doc(hidden)]
pub mod isolate;
#[cfg(test)]
mod proptests;
#[doc(hidden)]
pub mod protocol;
#[doc(hidden)]
pub mod spec;
#[doc(hidden)]
pub mod state;
mod stdio;
#[doc(hidden)]
pub mod step;
#[doc(hidden)]
pub mod sys;
mod task;

// The API: one item per line, sorted.
pub use cgroup::CgroupPaths;
pub use cgroup::CpuStats;
pub use cgroup::Error as CgroupError;
pub use cgroup::Limit;
pub use cgroup::MemoryStats;
pub use cgroup::PidsStats;
pub use cgroup::ResourceUpdate;
pub use cgroup::Resources;
pub use cgroup::Stats;
pub use error::Error;
pub use error::Result;
pub use executor::find_shim;
pub use executor::Executor;
pub use identity::Identity;
pub use isolate::BindSpec;
pub use isolate::DeviceSpec;
pub use isolate::DnsSpec;
pub use isolate::IsolateError;
pub use isolate::IsolationSpec;
pub use isolate::MountSpec;
pub use isolate::RlimitSpec;
/// A signal, for [`Task::signal`], [`Task::stop`] and
/// [`TaskSpec::kill_signal`]: `nix`'s `Signal`, re-exported so that an agent
/// needs no `nix` of its own, of the same version.
///
/// ```
/// use nomad_shim::{Signal, TaskSpec};
///
/// let signal: Signal = "SIGQUIT".parse().unwrap();
/// let mut spec = TaskSpec::new("/usr/sbin/nginx");
/// spec.kill_signal(signal);
/// assert_eq!(spec.kill_signal, Signal::SIGQUIT);
/// ```
pub use nix::sys::signal::Signal;
pub use protocol::ErrorCode;
pub use spec::LogPolicy;
pub use spec::SpecError;
pub use spec::TaskSpec;
pub use state::events::Event;
pub use state::ExecEntry;
pub use state::ExitRecord;
pub use state::StateError;
pub use state::Status;
pub use state::TaskId;
pub use state::TaskState;
pub use state::Timestamp;
pub use stdio::Stdin;
pub use stdio::WindowSize;
pub use step::Step;
pub use task::ExecExit;
pub use task::ExecSession;
pub use task::ExecSpec;
pub use task::ExecStdio;
pub use task::Task;
pub use task::TaskExit;
