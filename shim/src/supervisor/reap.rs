//! The whole-cgroup kill as a state of the poll loop, so that the loop
//! never blocks while a task's tree dies: `state`, `stats` and signals are
//! answered, and orphans reaped, between the steps.
//!
//! A kill is rounds of [`TaskCgroup::kill_round_begin`] (v2 `cgroup.kill`,
//! or freeze → SIGKILL each → thaw), repeated every [`ROUND`] until the
//! cgroup lists no process, for [`DEFAULT_KILL_TIMEOUT`] at most. What wakes
//! the loop for the next step:
//! * v2: an inotify watch on `cgroup.events`, which the kernel marks
//!   modified when `populated` (or `frozen`) changes (cgroup-v2.rst, "Core
//!   Interface Files"); the timer only for the next round;
//! * v1 (no such file): a timerfd, 1 ms after the step, doubling to 20 ms —
//!   the pauses the blocking kill slept.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{Expiration, TimerFd, TimerSetTimeFlags};
use nomad_shim::cgroup::{KillRound, TaskCgroup, DEFAULT_KILL_TIMEOUT};

/// How long a freeze may take to settle before the listed pids are killed
/// anyway (a process in an uninterruptible sleep never freezes).
const FREEZE_WAIT: Duration = Duration::from_secs(1);
/// How long a round waits for the cgroup to empty before the next round.
const ROUND: Duration = Duration::from_millis(250);
/// The first pause of the v1 timer; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// Where a kill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    /// A freeze asked at `since`; the kill follows once frozen.
    Freezing {
        since: Instant,
    },
    /// SIGKILL sent at `since`; waiting for the cgroup to empty.
    Settling {
        since: Instant,
    },
}

/// What a step of the kill came to.
#[derive(Debug)]
pub enum Progress {
    /// Still at it: the loop polls [`CgroupKill::fds`].
    Pending,
    /// No process is left (or none was there).
    Done,
    /// Given up (a deadline, or a cgroup file that cannot be read or
    /// written): what to record. The kill is idle again.
    Failed(String),
}

/// The kill's timer and watch, and where it stands.
pub struct CgroupKill {
    /// Made on the first kill: most tasks never need one before they exit.
    timer: Option<TimerFd>,
    /// v2: IN_MODIFY on `cgroup.events`, while a kill is pending.
    watch: Option<Inotify>,
    phase: Phase,
    began: Instant,
    pause: Duration,
}

impl CgroupKill {
    pub fn new() -> CgroupKill {
        CgroupKill {
            timer: None,
            watch: None,
            phase: Phase::Idle,
            began: Instant::now(),
            pause: FIRST_PAUSE,
        }
    }

    /// Whether a kill is under way (the loop must not end before it does).
    pub fn pending(&self) -> bool {
        self.phase != Phase::Idle
    }

    /// The descriptors to poll for `POLLIN` while [`pending`](Self::pending).
    pub fn fds(&self) -> [Option<BorrowedFd<'_>>; 2] {
        if !self.pending() {
            return [None, None];
        }
        [
            self.timer.as_ref().map(|t| t.as_fd()),
            self.watch.as_ref().map(|w| w.as_fd()),
        ]
    }

    /// Starts killing every process of `cgroup`; a kill already under way
    /// goes on as it is.
    pub fn start(&mut self, cgroup: &TaskCgroup) -> Progress {
        if self.pending() {
            return Progress::Pending;
        }
        // The common case at a task's exit: nothing left, no round needed
        // (and no timer, no watch), as kill_all's first look.
        match cgroup.pids() {
            Ok(pids) if pids.is_empty() => return Progress::Done,
            Ok(_) => {}
            Err(e) => return Progress::Failed(e.to_string()),
        }
        if self.timer.is_none() {
            match super::event_loop::timer() {
                Ok(t) => self.timer = Some(t),
                Err(e) => return Progress::Failed(format!("timerfd_create: {}", e.desc())),
            }
        }
        // The watch goes in before the first look at the cgroup, so that no
        // change between the two is missed. Without one (inotify refused),
        // the timer paces the steps as on v1.
        self.watch = cgroup.events_file().and_then(|events| {
            let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
            watch.add_watch(&events, AddWatchFlags::IN_MODIFY).ok()?;
            Some(watch)
        });
        self.began = Instant::now();
        self.round(cgroup)
    }

    /// The timer or the watch is readable: consume that, and take the next
    /// step.
    pub fn on_ready(&mut self, cgroup: &TaskCgroup) -> Progress {
        if let Some(t) = &self.timer {
            // EAGAIN: not this one (the watch woke us).
            let _ = t.wait();
        }
        if let Some(w) = &self.watch {
            // The events say only "changed"; the step reads what.
            let _ = w.read_events();
        }
        self.step(cgroup)
    }

    /// One round's first step, then its first look.
    fn round(&mut self, cgroup: &TaskCgroup) -> Progress {
        let now = Instant::now();
        self.pause = FIRST_PAUSE;
        self.phase = match cgroup.kill_round_begin() {
            Ok(KillRound::Sent) => Phase::Settling { since: now },
            Ok(KillRound::Freezing) => Phase::Freezing { since: now },
            Err(e) => return self.fail(e.to_string()),
        };
        self.step(cgroup)
    }

    fn step(&mut self, cgroup: &TaskCgroup) -> Progress {
        match self.phase {
            Phase::Idle => Progress::Done,
            Phase::Freezing { since } => match cgroup.kill_round_frozen() {
                Ok(false) if since.elapsed() < FREEZE_WAIT => {
                    self.wait(FREEZE_WAIT - since.elapsed())
                }
                // Frozen, or not settling: kill what is listed.
                Ok(_) => match cgroup.kill_round_finish() {
                    Ok(()) => {
                        self.phase = Phase::Settling {
                            since: Instant::now(),
                        };
                        self.pause = FIRST_PAUSE;
                        self.wait(ROUND)
                    }
                    Err(e) => self.fail(e.to_string()),
                },
                Err(e) => self.fail(e.to_string()),
            },
            Phase::Settling { since } => match cgroup.pids() {
                Ok(pids) if pids.is_empty() => {
                    self.stop();
                    Progress::Done
                }
                Ok(pids) if self.began.elapsed() >= DEFAULT_KILL_TIMEOUT => {
                    let e = cgroup.kill_timed_out(pids, self.began.elapsed());
                    self.fail(e.to_string())
                }
                Ok(_) if since.elapsed() >= ROUND => self.round(cgroup),
                Ok(_) => self.wait(ROUND - since.elapsed()),
                Err(e) => self.fail(e.to_string()),
            },
        }
    }

    /// Arms the timer for the next step: after the current pause (doubled
    /// for the next time) — or, when the watch reports the changes, only
    /// when `until_next_round` has passed.
    fn wait(&mut self, until_next_round: Duration) -> Progress {
        let settling = matches!(self.phase, Phase::Settling { .. });
        let after = if settling && self.watch.is_some() {
            until_next_round
        } else {
            let p = self.pause.min(until_next_round);
            self.pause = (self.pause * 2).min(MAX_PAUSE);
            p
        };
        // A zero it_value would disarm the timer (timerfd_settime(2)).
        let after = after.max(Duration::from_micros(1));
        let armed = self.timer.as_ref().map(|t| {
            t.set(
                Expiration::OneShot(TimeSpec::from_duration(after)),
                TimerSetTimeFlags::empty(),
            )
        });
        match armed {
            Some(Ok(())) => Progress::Pending,
            Some(Err(e)) => self.fail(format!("timerfd_settime: {}", e.desc())),
            None => self.fail("no timer".into()),
        }
    }

    fn fail(&mut self, why: String) -> Progress {
        self.stop();
        Progress::Failed(why)
    }

    fn stop(&mut self) {
        self.phase = Phase::Idle;
        self.watch = None;
        if let Some(t) = &self.timer {
            // Disarming a valid timerfd cannot fail; a stray expiry is
            // harmless (the kill is idle, and nothing polls the timer).
            let _ = t.unset();
        }
    }
}
