//! The whole-cgroup kill of [`TaskCgroup::kill_all`] cut into steps that
//! never wait, for a caller with an event loop of its own: the supervisor
//! starts a round, and comes back when a timer or `cgroup.events` says so,
//! answering its clients in between (shim/src/supervisor/reap.rs).
//!
//! A round is one of:
//! * v2 with `cgroup.kill` (Linux ≥ 5.14): one write SIGKILLs the subtree,
//!   atomically with respect to fork; then wait for `populated 0`.
//! * v1, and v2 before 5.14: freeze, wait until frozen (asynchronous: no
//!   process can fork or exit then, so no listed pid is reused before the
//!   kill), SIGKILL every listed pid, thaw (the kills are delivered on thaw).
//!
//! Rounds repeat until no process is listed ([`TaskCgroup::pids`]).

use std::path::PathBuf;
use std::time::Duration;

use super::error::{Error, Result};
use super::{Backend, TaskCgroup};

/// What [`TaskCgroup::kill_round_begin`] did.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillRound {
    /// Every process was sent SIGKILL: wait for the cgroup to empty.
    Sent,
    /// A freeze was asked: poll [`TaskCgroup::kill_round_frozen`], then call
    /// [`TaskCgroup::kill_round_finish`].
    Freezing,
}

impl TaskCgroup {
    /// Starts a kill round without waiting (see the module docs).
    #[doc(hidden)]
    pub fn kill_round_begin(&self) -> Result<KillRound> {
        match &self.backend {
            Backend::V2(c) if c.has_kill_file() => c.kill_write().map(|()| KillRound::Sent),
            Backend::V2(c) => c.freeze_begin().map(|()| KillRound::Freezing),
            Backend::V1(c) => c.freeze_begin().map(|()| KillRound::Freezing),
        }
    }

    /// Whether the freeze of a [`KillRound::Freezing`] round has settled.
    #[doc(hidden)]
    pub fn kill_round_frozen(&self) -> Result<bool> {
        match &self.backend {
            Backend::V1(c) => c.freeze_settled(),
            Backend::V2(c) => c.freeze_settled(),
        }
    }

    /// A freezing round's end: SIGKILL every listed pid, then thaw. Call it
    /// once frozen, or when the freeze does not settle (a process in an
    /// uninterruptible sleep): what is listed is killed anyway.
    #[doc(hidden)]
    pub fn kill_round_finish(&self) -> Result<()> {
        match &self.backend {
            Backend::V1(c) => c.kill_listed_and_thaw(),
            Backend::V2(c) => c.kill_listed_and_thaw(),
        }
    }

    /// v2: `cgroup.events`, which the kernel marks modified when `populated`
    /// changes (watch it with inotify `IN_MODIFY`). v1 has no such file.
    #[doc(hidden)]
    pub fn events_file(&self) -> Option<PathBuf> {
        match &self.backend {
            Backend::V1(_) => None,
            Backend::V2(c) => Some(c.events_file()),
        }
    }

    /// The error of a kill that gave up after `waited` with `pids` left.
    #[doc(hidden)]
    pub fn kill_timed_out(&self, pids: Vec<i32>, waited: Duration) -> Error {
        let path = match &self.backend {
            Backend::V1(c) => c.freezer_dir(),
            Backend::V2(c) => c.dir(),
        };
        Error::KillTimeout { path, pids, waited }
    }
}
