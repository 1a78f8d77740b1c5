//! The supervisor's life after the task started: one `poll(2)` over the
//! signalfd, the control socket and its clients, the log pipes and one
//! timer. Nothing here polls on a clock.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use nomad_shim::cgroup::TaskCgroup;
use nomad_shim::protocol::{parse_request, ErrorCode, Reply, ReplyError, Request, MAX_LINE};
use nomad_shim::state::events::kind;
use nomad_shim::state::{names, TaskDir, TaskState, Timestamp};
use nomad_shim::sys::{wait4_nohang, Reaped};
use nomad_shim::{ExitRecord, Status, TaskSpec};

use super::cpu_rate::CpuRate;
use super::logs::{Drained, LogSink};
use super::reap::{CgroupKill, Progress};

mod stdio;

mod exec_session;

/// Most control connections served at once; more wait in the backlog.
const MAX_CLIENTS: usize = 32;

/// After the task's main process has exited and its cgroup has been killed,
/// how long to wait for the log pipes to close. Nothing of the task can
/// hold them then; only a process outside the cgroup that was handed the
/// pipe (over a unix socket, say) could.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// Binds `control.sock` (0600 through the umask) in the task directory.
/// Through `/proc/self/fd/N/`: a `sun_path` holds 108 bytes, less than a
/// root plus a 128-byte id.
pub fn bind_control(dir: &TaskDir) -> nix::Result<UnixListener> {
    // A stale socket of an earlier supervisor goes; ENOENT is the rule, and
    // any other failure shows in the bind below.
    let _ = nix::unistd::unlinkat(
        dir.fd(),
        names::CONTROL,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    let path = format!("/proc/self/fd/{}/{}", dir.fd().as_raw_fd(), names::CONTROL);
    let listener = UnixListener::bind(&path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    // Only root (the owner) may connect: connect(2) needs write permission.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(listener)
}

/// The descriptors the loop polls, all made before the task was forked (a
/// failure to make one is a start error, not a supervisor dying later).
pub struct LoopFds {
    /// SIGCHLD, SIGTERM, SIGINT, SIGHUP.
    pub signals: SignalFd,
    /// The one timer (kill timeout, drain deadline).
    pub timer: TimerFd,
    /// `control.sock`.
    pub control: UnixListener,
    /// stdout and stderr of the task.
    pub logs: [LogSink; 2],
}

/// A non-blocking monotonic timerfd.
pub fn timer() -> nix::Result<TimerFd> {
    TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )
}

/// What the one timer is armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Idle,
    /// A graceful stop's grace period: then SIGKILL the whole task.
    KillTimeout,
    /// The main process is gone; stop waiting for the log pipes.
    DrainDeadline,
    /// The final state could not be written (a full disk): try again.
    StateRetry,
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Descriptors that came with the request (`SCM_RIGHTS`: an exec's stdio).
    fds: Vec<OwnedFd>,
}

/// The running supervisor.
pub struct Supervisor<'d> {
    dir: &'d TaskDir,
    /// Held for our whole life: the lock is what says "supervisor alive".
    _lock: File,
    /// The task's cgroup: every process of the task, and nothing else.
    cgroup: &'d TaskCgroup,
    spec: TaskSpec,
    state: TaskState,
    task: Pid,
    signals: SignalFd,
    control: Option<UnixListener>,
    clients: Vec<Client>,
    /// Followers of the output (`attach`): nudged after output is written,
    /// closed once the final state is durable.
    attached: Vec<UnixStream>,
    logs: [LogSink; 2],
    timer: TimerFd,
    timer_for: Timer,
    /// With an init: the read end of its status pipe (see `init.rs`).
    init_status: Option<OwnedFd>,
    /// The secrets tmpfs we mounted, unmounted through this at the end.
    secrets: Option<nomad_shim::isolate::SecretsMount>,
    /// The library's sync pipe, kept when it asked: closed as soon as the
    /// final state is durable, which wakes its `wait`.
    exit_notice: Option<OwnedFd>,
    /// Per stream: bytes of output dropped (the log file could not be
    /// written), and the error of the episode under way, if one is.
    dropped: [(u64, Option<String>); 2],
    /// The task's own terminal or stdin pipe, and its client (`stdio.rs`).
    stdio: Option<super::terminal::TaskStdio>,
    /// The whole-cgroup kill, when one is under way (`reap.rs`).
    kill: CgroupKill,
    /// The CPU samples `stats` measures its rate from (`cpu_rate.rs`).
    cpu_rate: CpuRate,
    /// Attempts at the final state write so far (0: not begun).
    final_attempts: u32,
    /// Processes started inside the task with `exec`, still running.
    execs: Vec<super::exec::Session>,
    /// The binary's code is still mapped as start-up left it: released
    /// (`sys::release_text`) the first time the loop has been idle for
    /// [`IDLE_RELEASE_MS`].
    text_mapped: bool,
    /// Part of the end's clean-up failed (the cgroup or `secrets/` is
    /// left): `rm` finishes it, and needs the task's directory to.
    cleanup_failed: bool,
}

/// How long the loop waits, once, with nothing to do before it releases
/// the code start-up mapped: longer than a short task's whole life (its
/// exit then finds the code still mapped), short enough that an idle
/// supervisor is small soon after its start.
const IDLE_RELEASE_MS: u8 = 10;

impl<'d> Supervisor<'d> {
    /// Takes over the resources the start-up made.
    pub fn new(
        dir: &'d TaskDir,
        lock: File,
        spec: TaskSpec,
        state: TaskState,
        task: Pid,
        cgroup: &'d TaskCgroup,
        io: LoopFds,
    ) -> Supervisor<'d> {
        let LoopFds {
            signals,
            timer,
            control,
            logs,
        } = io;
        Supervisor {
            dir,
            _lock: lock,
            spec,
            state,
            task,
            cgroup,
            signals,
            control: Some(control),
            clients: Vec::new(),
            attached: Vec::new(),
            logs,
            timer,
            timer_for: Timer::Idle,
            init_status: None,
            secrets: None,
            exit_notice: None,
            dropped: [(0, None), (0, None)],
            stdio: None,
            kill: CgroupKill::new(),
            cpu_rate: CpuRate::new(std::time::Instant::now()),
            final_attempts: 0,
            execs: Vec::new(),
            text_mapped: true,
            cleanup_failed: false,
        }
    }

    /// The task's main process is the shim's init: its status pipe carries
    /// the program's exact wait status, and signals go through it.
    pub fn set_init_status(&mut self, fd: OwnedFd) {
        self.init_status = Some(fd);
    }

    /// The sync pipe to close once the exit is durable (the library's
    /// wake-up: docs/protocol.md, "The sync pipe").
    pub fn set_exit_notice(&mut self, fd: OwnedFd) {
        self.exit_notice = Some(fd);
    }

    /// The secrets tmpfs mounted for the task (`isolate::mount_secrets`).
    pub fn set_secrets(&mut self, mount: nomad_shim::isolate::SecretsMount) {
        self.secrets = Some(mount);
    }

    /// The wait status to record: with an init, the program's own, which
    /// the init wrote just before it exited (so it is in the pipe by the
    /// time we see the init's exit); else, or when the init died without
    /// writing it (SIGKILLed by the whole-cgroup kill), what `wait4` saw.
    fn program_status(&self, seen: libc::c_int) -> libc::c_int {
        let Some(fd) = &self.init_status else {
            return seen;
        };
        let mut b = [0u8; super::init::STATUS_SIZE];
        match nix::unistd::read(fd.as_fd(), &mut b) {
            Ok(n) if n == b.len() => libc::c_int::from_le_bytes(b),
            _ => seen,
        }
    }

    /// `kill(2)` of the task's main process. An init forwards every signal
    /// it can catch to the program, once; SIGSTOP it cannot catch, so that
    /// one goes to the process group (init, program and the program's
    /// children stop together). SIGCONT must then go to the same group:
    /// forwarded by the init to the program alone, it would leave the
    /// program's children stopped (a shell's `sleep` in state T). The init
    /// does not forward the SIGCONT it gets this way (`init.rs`).
    fn signal_task(&self, sig: Signal) -> nix::Result<()> {
        if self.init_status.is_some() && matches!(sig, Signal::SIGSTOP | Signal::SIGCONT) {
            killpg(self.task, sig)
        } else {
            kill(self.task, sig)
        }
    }

    fn exited(&self) -> bool {
        self.state.exit.is_some()
    }

    /// Runs until the task has ended, its output is drained and the final
    /// state is durable.
    pub fn run(&mut self) {
        // A task that exited before the loop started: its SIGCHLD is pending
        // on the signalfd and is read in the first round.
        loop {
            // Ended, killed and drained: the exit is recorded, or kept (and
            // the loop goes on serving clients) until it can be.
            if self.exited()
                && self.logs.iter().all(|l| l.pipe().is_none())
                && !self.stdio_open()
                && !self.kill.pending()
                && self.record_final_state()
            {
                break;
            }
            let mut ready = Ready::default();
            {
                let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(7 + self.clients.len());
                // The PollFds borrow the fds for this block only. Slots keep
                // fixed places (an idle one polls for nothing).
                let signals = self.signals.as_fd();
                let timer = self.timer.as_fd();
                fds.push(PollFd::new(signals, PollFlags::POLLIN));
                fds.push(PollFd::new(timer, PollFlags::POLLIN));
                let control = self
                    .control
                    .as_ref()
                    .filter(|_| self.clients.len() < MAX_CLIENTS);
                fds.push(PollFd::new(
                    control.map_or(signals, |c| c.as_fd()),
                    if control.is_some() {
                        PollFlags::POLLIN
                    } else {
                        PollFlags::empty()
                    },
                ));
                for l in &self.logs {
                    fds.push(PollFd::new(
                        l.pipe().unwrap_or(signals),
                        if l.pipe().is_some() {
                            PollFlags::POLLIN
                        } else {
                            PollFlags::empty()
                        },
                    ));
                }
                for fd in self.kill.fds() {
                    fds.push(match fd {
                        Some(fd) => PollFd::new(fd, PollFlags::POLLIN),
                        None => PollFd::new(signals, PollFlags::empty()),
                    });
                }
                for c in &self.clients {
                    fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
                }
                let n_clients = self.clients.len();
                if let Some(stdio) = &self.stdio {
                    for (fd, flags) in stdio.poll_fds() {
                        fds.push(match fd {
                            Some(fd) => PollFd::new(fd, flags),
                            None => PollFd::new(signals, PollFlags::empty()),
                        });
                    }
                }
                // One timeout in the supervisor's life: the first idle
                // moment (nothing polls on a clock after it).
                let timeout = if self.text_mapped {
                    PollTimeout::from(IDLE_RELEASE_MS)
                } else {
                    PollTimeout::NONE
                };
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(0) if self.text_mapped => {
                        crate::sys::release_text();
                        self.text_mapped = false;
                    }
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
                let hit = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                ready.signals = hit(&fds[0]);
                ready.timer = hit(&fds[1]);
                ready.control = control.is_some() && hit(&fds[2]);
                ready.logs = [hit(&fds[3]), hit(&fds[4])];
                ready.kill = hit(&fds[5]) || hit(&fds[6]);
                ready.clients = fds[7..7 + n_clients].iter().map(hit).collect();
                ready.stdio = fds[7 + n_clients..].iter().map(|f| f.revents()).collect();
            }
            if ready.signals {
                self.on_signals();
            }
            for i in 0..2 {
                if ready.logs[i] {
                    self.drain(i);
                }
            }
            if ready.stdio.len() == 2 {
                self.on_stdio(ready.stdio[0], ready.stdio[1]);
            }
            if ready.timer {
                self.on_timer();
            }
            if ready.kill {
                let progress = self.kill.on_ready(self.cgroup);
                self.kill_progress(progress);
            }
            for (i, hit) in ready.clients.iter().enumerate().rev() {
                if *hit {
                    self.on_client(i);
                }
            }
            if ready.control {
                self.accept();
            }
        }
        self.finish();
    }

    fn on_signals(&mut self) {
        let mut stop = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => stop = true,
                // SIGCHLD is handled below by reaping until nothing is left;
                // SIGHUP means nothing to us (no terminal).
                _ => {}
            }
        }
        self.reap();
        if stop && !self.exited() {
            self.shutdown(None, None);
        }
    }

    /// Reaps every exited child. The task's main process is looked at
    /// first without being reaped: while it is a zombie its pid still pins
    /// its process group, so killing the group cannot hit a stranger.
    fn reap(&mut self) {
        if !self.exited() {
            match waitid(
                Id::Pid(self.task),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            ) {
                Ok(WaitStatus::StillAlive) | Err(_) => {}
                Ok(_) => {
                    // Kill whatever is left of the task's process group.
                    self.kill_all();
                    if let Ok(Some(r)) = wait4_nohang(self.task.as_raw()) {
                        nomad_shim::failpoint!("supervisor-after-reap");
                        self.record(r);
                    }
                }
            }
        }
        // Everyone else: the task's orphans, re-parented to us.
        loop {
            match wait4_nohang(-1) {
                Ok(Some(r)) if r.pid == self.task.as_raw() && !self.exited() => {
                    // It exited between the look above and this reap: its
                    // pid no longer pins the group, so only the cgroup is
                    // killed (it holds nothing but the task's processes).
                    self.kill_cgroup();
                    nomad_shim::failpoint!("supervisor-after-reap");
                    self.record(r);
                }
                Ok(Some(r)) => self.exec_reaped(r),
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// SIGKILL to every process of the task: the whole cgroup (v2
    /// `cgroup.kill`, v1 freeze-kill-thaw), which catches daemons that left
    /// the task's session; the process group too, in case the cgroup cannot
    /// be written.
    fn kill_all(&mut self) {
        // ESRCH: the group is empty already. The cgroup kill below is the
        // one that must work; its failure is recorded.
        let _ = killpg(self.task, Signal::SIGKILL);
        self.kill_cgroup();
    }

    /// Starts killing every process of the cgroup, without waiting: the
    /// loop takes the next steps (`reap.rs`) and answers clients meanwhile.
    fn kill_cgroup(&mut self) {
        let progress = self.kill.start(self.cgroup);
        self.kill_progress(progress);
    }

    /// A failure of the kill (a survivor, a cgroup file that cannot be
    /// written) is an event. Once it is over, the log pipes get their
    /// deadline: nothing of the task holds them any more.
    fn kill_progress(&mut self, progress: Progress) {
        if let Progress::Failed(e) = progress {
            self.event(
                kind::CGROUP_CLEANUP_FAILED,
                format!("killing the task's cgroup: {e}"),
            );
        }
        if !self.kill.pending()
            && self.exited()
            && self.timer_for != Timer::DrainDeadline
            && (self.logs.iter().any(|l| l.pipe().is_some()) || self.stdio_open())
        {
            self.arm(Timer::DrainDeadline, DRAIN_DEADLINE);
        }
    }

    /// Records an event in the state. While the task runs it is written at
    /// once (not durably), when the disk has room to spare: the 64 KiB
    /// reserved for the final write are used by this write and taken again
    /// after, which a nearly full disk could refuse. Otherwise, and after
    /// the exit, it goes with the next (final) write.
    fn event(&mut self, kind: &str, message: String) {
        super::events::flush_into(&mut self.state);
        self.state.record_event(kind, message);
        if self.exited() {
            return;
        }
        let room = nix::sys::statvfs::fstatvfs(self.dir.fd())
            .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
            .unwrap_or(0);
        if room >= 1 << 20
            && self.dir.write_state(&self.state, false).is_ok()
            && self.dir.reserve_state_write().is_err()
        {
            self.state.record_event(
                kind::WARNING,
                "space for the final state.json not reserved again",
            );
        }
    }

    fn record(&mut self, r: Reaped) {
        let status = self.program_status(r.status);
        let (code, signal, core) = if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None, false)
        } else {
            (None, Some(libc::WTERMSIG(status)), libc::WCOREDUMP(status))
        };
        let oom_kills = self.cgroup.oom_kills().unwrap_or(0);
        let oom_event = (oom_kills > 0).then(|| {
            let limit = self
                .spec
                .resources
                .memory_max
                .map_or_else(String::new, |m| {
                    format!(" (started with memory limit {m} bytes)")
                });
            format!(
                "the OOM killer killed {oom_kills} process(es) of the task{limit}; \
                     the task ended with {}",
                match (code, signal) {
                    (Some(c), _) => format!("code {c}"),
                    (_, Some(s)) => format!("signal {s}"),
                    _ => "an unknown status".into(),
                }
            )
        });
        self.state.exit = Some(ExitRecord {
            code,
            signal,
            core_dumped: Some(core),
            oom_killed: Some(oom_kills > 0),
            user_cpu_ns: Some(r.user_cpu_ns),
            system_cpu_ns: Some(r.system_cpu_ns),
            max_rss_kib: Some(r.max_rss_kib),
            error: None,
        });
        self.state.finished_at = Some(Timestamp::now());
        // Recorded now that the exit is: it goes with the final write.
        if let Some(message) = oom_event {
            self.event(kind::OOM_KILL, message);
        }
        // Whatever the pipes still hold is read now; a writer that left the
        // task's process group gets DRAIN_DEADLINE to close them.
        for i in 0..2 {
            self.drain(i);
        }
        self.drain_stdio();
        if self.logs.iter().any(|l| l.pipe().is_some()) || self.stdio_open() {
            // While the cgroup is being killed, the deadline waits for it
            // (kill_progress).
            if !self.kill.pending() {
                self.arm(Timer::DrainDeadline, DRAIN_DEADLINE);
            }
        } else {
            self.disarm();
        }
    }

    fn drain(&mut self, i: usize) {
        let before = self.logs[i].total();
        match self.logs[i].drain(self.dir.fd()) {
            Ok(Drained::Open) | Ok(Drained::Eof) => self.drop_episode_ended(i),
            // The disk is full or the file is gone: keep the task running and
            // its pipe drained, dropping output rather than blocking it.
            Err((op, e)) => {
                if self.dropped[i].1.is_none() {
                    let name = self.log_name(i);
                    let why = format!("{op} {name}: {}", e.desc());
                    self.event(
                        kind::LOG_DROPPED,
                        format!("{why}: the task's output is dropped until it can be written"),
                    );
                    self.dropped[i].1 = Some(why);
                }
                let n = self.discard(i);
                self.dropped[i].0 += n;
                self.state.log_bytes_dropped += n;
            }
        }
        if self.logs[i].total() != before {
            self.nudge_followers();
        }
    }

    /// One `\n` to every follower: "the log files have grown". A follower
    /// whose socket is full has a nudge pending already; one that is gone
    /// is dropped.
    fn nudge_followers(&mut self) {
        self.attached.retain(|s| match (&*s).write(b"\n") {
            Ok(_) => true,
            Err(e) => e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted,
        });
    }

    fn log_name(&self, i: usize) -> &'static str {
        if i == 0 {
            names::STDOUT
        } else {
            names::STDERR
        }
    }

    /// Output could be written again (or the stream ended): the bytes
    /// dropped in the episode become one event.
    fn drop_episode_ended(&mut self, i: usize) {
        if let (n, Some(why)) = std::mem::take(&mut self.dropped[i]) {
            let name = self.log_name(i);
            self.event(
                kind::LOG_DROPPED,
                format!("{n} bytes of output dropped from {name} ({why})"),
            );
        }
    }

    /// Reads and throws away what the pipe holds; returns how many bytes.
    fn discard(&mut self, i: usize) -> u64 {
        let Some(pipe) = self.logs[i].pipe() else {
            return 0;
        };
        let mut sink = [0u8; 4096];
        let mut n = 0;
        loop {
            match nix::unistd::read(pipe, &mut sink) {
                Ok(0) => {
                    self.logs[i].close();
                    return n;
                }
                Ok(got) => n += got as u64,
                Err(Errno::EINTR) => {}
                Err(_) => return n,
            }
        }
    }

    fn on_timer(&mut self) {
        // Reads the expiry count, which is not needed (EAGAIN: a spurious
        // wake-up, then timer_for says what to do, possibly nothing).
        let _ = self.timer.wait();
        match std::mem::replace(&mut self.timer_for, Timer::Idle) {
            Timer::KillTimeout if !self.exited() => {
                self.kill_all();
            }
            Timer::DrainDeadline => {
                for i in 0..2 {
                    self.drain(i);
                    self.logs[i].close();
                }
                self.drain_stdio();
                self.close_stdio_output();
            }
            _ => {}
        }
    }

    fn arm(&mut self, what: Timer, after: Duration) {
        let after = after.max(Duration::from_nanos(1));
        match self.timer.set(
            Expiration::OneShot(TimeSpec::from_duration(after)),
            TimerSetTimeFlags::empty(),
        ) {
            Ok(()) => self.timer_for = what,
            // A time past what a timespec holds (a `Duration::MAX` grace
            // period) never expires: nothing to arm, and nothing to say.
            Err(_) if after.as_secs() > i64::MAX as u64 / 2 => {}
            // Otherwise an operator must know that this wait has no end.
            Err(e) => self.event(
                kind::WARNING,
                format!(
                    "timerfd_settime for the {what:?} ({after:?}): {}: that wait will not end by itself",
                    e.desc()
                ),
            ),
        }
    }

    fn disarm(&mut self) {
        // Disarming a valid timerfd cannot fail; a stray expiry is harmless
        // (timer_for is Idle).
        let _ = self.timer.unset();
        self.timer_for = Timer::Idle;
    }

    /// A graceful stop: the kill signal to the main process, then SIGKILL
    /// to its whole process group after the timeout. A second request
    /// shortens a running grace period, never lengthens it.
    fn shutdown(&mut self, signal: Option<Signal>, timeout: Option<Duration>) {
        let signal = signal.unwrap_or(self.spec.kill_signal);
        let timeout = timeout.unwrap_or(self.spec.kill_timeout_duration());
        if signal == Signal::SIGKILL || timeout.is_zero() {
            self.kill_all();
            return;
        }
        // ESRCH only: the task is exiting, and its exit is being reaped.
        let _ = self.signal_task(signal);
        nomad_shim::failpoint!("supervisor-shutdown-signalled");
        let remaining = self.timer.get().ok().flatten().and_then(|e| match e {
            Expiration::OneShot(t) => Some(Duration::from(t)),
            _ => None,
        });
        if self.timer_for != Timer::KillTimeout || remaining.is_none_or(|r| timeout < r) {
            self.arm(Timer::KillTimeout, timeout);
        }
    }

    fn accept(&mut self) {
        let Some(listener) = &self.control else {
            return;
        };
        while self.clients.len() < MAX_CLIENTS {
            match listener.accept() {
                Ok((stream, _)) => {
                    // fcntl(F_SETFL) on a fresh socket cannot fail.
                    let _ = stream.set_nonblocking(true);
                    self.clients.push(Client {
                        stream,
                        buf: Vec::new(),
                        fds: Vec::new(),
                    });
                }
                Err(_) => return,
            }
        }
    }

    fn on_client(&mut self, i: usize) {
        let mut chunk = [0u8; 1024];
        let client = &mut self.clients[i];
        let request = loop {
            // recvmsg rather than read: an exec's stdio comes along.
            match nomad_shim::sys::recv_with_fds(client.stream.as_fd(), &mut chunk)
                .map_err(std::io::Error::from)
            {
                Ok((0, _)) => break None,
                Ok((n, fds)) => {
                    // An exec takes three; a fourth already makes the
                    // request bad: no more are kept (or held open).
                    client
                        .fds
                        .extend(fds.into_iter().take(4 - client.fds.len().min(4)));
                    client.buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = client.buf.iter().position(|&b| b == b'\n') {
                        break Some(parse_request(&client.buf[..end]).map(|line| line.request));
                    }
                    if client.buf.len() > MAX_LINE {
                        break Some(Err(ReplyError::new(
                            ErrorCode::BadRequest,
                            "request too long",
                        )));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break None,
            }
        };
        let mut client = self.clients.swap_remove(i);
        let Some(request) = request else { return };
        if let Ok(Request::Exec { spec }) = request {
            let fds = std::mem::take(&mut client.fds);
            return self.exec(client.stream, &spec, fds);
        }
        let attach = matches!(request, Ok(Request::Attach));
        let attach_stdio = matches!(request, Ok(Request::AttachStdio));
        let reply = match request {
            Ok(req) => self.handle(req),
            Err(e) => Reply::from(e),
        };
        let mut line = serde_json::to_vec(&reply).unwrap_or_default();
        line.push(b'\n');
        // A reply is a few hundred bytes into an empty socket buffer. A
        // client that went away does not get it: its loss, not the task's,
        // and nothing an operator of the task needs to know.
        let _ = client.stream.set_nonblocking(false);
        let _ = client
            .stream
            .set_write_timeout(Some(Duration::from_secs(1)));
        let _ = client.stream.write_all(&line);
        if attach_stdio && reply.ok {
            // Bytes the client sent after its request line are input.
            let start = client
                .buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            self.attach_stdio(client.stream, &client.buf[start..]);
        } else if attach && reply.ok {
            let _ = client.stream.set_nonblocking(true);
            self.attached.push(client.stream);
        }
    }

    fn handle(&mut self, req: Request) -> Reply {
        match req {
            Request::Attach if self.attached.len() >= MAX_CLIENTS => {
                Reply::fail(ErrorCode::Busy, "too many followers")
            }
            Request::Attach => Reply::ok(),
            Request::AttachStdio | Request::Resize { .. } => self.handle_stdio(&req),
            // Served by `exec` (on_client), with the request's descriptors.
            Request::Exec { .. } => Reply::fail(ErrorCode::BadRequest, "exec: served elsewhere"),
            Request::Stats => match self.cgroup.stats() {
                Ok(stats) => {
                    let now = std::time::Instant::now();
                    let rate = stats
                        .cpu
                        .and_then(|c| self.cpu_rate.measure(now, c.usage_ns));
                    Reply {
                        stats: Some(stats),
                        cpu_percent: rate.map(|(p, _)| p),
                        cpu_window_ms: rate.map(|(_, w)| w.as_millis() as u64),
                        ..Reply::ok()
                    }
                }
                Err(e) => Reply::error(e.to_string()),
            },
            Request::Update { resources } if !self.exited() => match self.cgroup.update(&resources)
            {
                Ok(()) => Reply::ok(),
                // A value no kernel takes is the request's fault.
                Err(e @ nomad_shim::cgroup::Error::InvalidResources { .. }) => {
                    Reply::fail(ErrorCode::BadRequest, e.to_string())
                }
                Err(e) => Reply::error(e.to_string()),
            },
            Request::Update { .. } => {
                Reply::fail(ErrorCode::NotRunning, "not running: the task has exited")
            }
            Request::State => Reply {
                state: Some(self.state.clone()),
                ..Reply::ok()
            },
            Request::Signal { .. } | Request::Shutdown { .. } if self.exited() => match req {
                Request::Shutdown { .. } => Reply::ok(),
                _ => Reply::fail(ErrorCode::NotRunning, "not running: the task has exited"),
            },
            Request::Signal { signal } => match Signal::try_from(signal) {
                Ok(sig) => match self.signal_task(sig) {
                    Ok(()) => Reply::ok(),
                    Err(e) => Reply::error(format!("kill {} {}: {}", self.task, sig, e.desc())),
                },
                Err(_) => Reply::fail(ErrorCode::BadRequest, format!("unknown signal {signal}")),
            },
            Request::Shutdown { signal, timeout_ms } => {
                let signal = match signal.map(Signal::try_from) {
                    None => None,
                    Some(Ok(s)) => Some(s),
                    Some(Err(_)) => {
                        return Reply::fail(
                            ErrorCode::BadRequest,
                            format!("unknown signal {}", signal.unwrap_or_default()),
                        )
                    }
                };
                self.shutdown(signal, timeout_ms.map(Duration::from_millis));
                Reply::ok()
            }
        }
    }

    /// Writes the final state durably; `false` while it cannot be (a full
    /// disk): the exit is kept, the timer retries (100 ms, doubling up to
    /// 5 s), and the loop goes on, so the supervisor never exits before its
    /// task's exit is on disk (a `wait` from another agent, on our pidfd,
    /// returns when it is). The first failure is an event (written by the
    /// write that works) and a line in the kernel log.
    fn record_final_state(&mut self) -> bool {
        if self.timer_for == Timer::StateRetry {
            return false;
        }
        if self.final_attempts == 0 {
            self.before_final_state();
            nomad_shim::failpoint!("supervisor-before-state-exited");
        }
        self.final_attempts += 1;
        super::events::flush_into(&mut self.state);
        match self.dir.write_state(&self.state, true) {
            Ok(()) => {
                nomad_shim::failpoint!("supervisor-after-state-exited");
                true
            }
            Err(e) => {
                if self.final_attempts == 1 {
                    let message =
                        format!("{e}; the exit is kept and the write retried until it succeeds");
                    super::events::to_kernel_log(
                        self.dir.id().as_str(),
                        &format!("{}: {message}", kind::STATE_WRITE_RETRY),
                    );
                    self.event(kind::STATE_WRITE_RETRY, message);
                }
                let shift = self.final_attempts.min(6) - 1;
                let delay = (Duration::from_millis(100) * (1 << shift)).min(Duration::from_secs(5));
                self.arm(Timer::StateRetry, delay);
                false
            }
        }
    }

    /// What goes before the final state write, once.
    fn before_final_state(&mut self) {
        // The exec'd processes died with the task's cgroup: their callers
        // get their exits before the state says `exited`.
        self.end_execs();
        // The task's processes are dead: secrets/ goes before the exit is
        // recorded, so whoever sees `exited` sees it unmounted. A failure is
        // kept as a warning; `open`/`rm` retry it (reconcile).
        if let Some(task_dir) = &self.spec.isolation.task_dir {
            let id = self.dir.id().as_str();
            let unmounted = match self.secrets.take() {
                Some(mount) => nomad_shim::isolate::unmount_secrets_kept(mount, task_dir, id),
                None => nomad_shim::isolate::unmount_secrets(task_dir, id),
            };
            if let Err(e) = unmounted {
                self.cleanup_failed = true;
                self.state
                    .warnings
                    .push(format!("secrets not unmounted: {e}"));
                self.event(kind::SECRETS_UNMOUNT_FAILED, e.to_string());
            }
        }
        for i in 0..2 {
            self.drop_episode_ended(i);
        }
        self.state.status = Status::Exited;
    }

    /// After the final state is durable: closes the control socket and the
    /// followers, removes the cgroup; then the process exits (which
    /// releases the lock and makes the pidfd of waiters readable).
    fn finish(&mut self) {
        // The exit is durable: the library's `wait` may return now, while
        // the cgroup goes (its `remove` waits for our exit).
        self.exit_notice = None;
        // Only now does the socket go: a client refused from here on (or
        // reset, from the backlog) reads a final state.
        self.control = None;
        // Best effort: a socket left behind only refuses connections, which
        // readers take as "not running" (reconcile unlinks it too).
        let _ = nix::unistd::unlinkat(
            self.dir.fd(),
            names::CONTROL,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        self.clients.clear();
        // Followers see EOF now: the final state is durable.
        self.attached.clear();
        self.finish_stdio();
        // The exit is durable; now the cgroup goes. Should that fail, the
        // state names the cgroup, and `rm` removes it; the failure is an
        // event, written at once (the exit is already durable: a failed
        // write here loses only the event).
        nomad_shim::failpoint!("supervisor-before-cgroup-remove");
        if let Err(e) = self.cgroup.remove() {
            self.cleanup_failed = true;
            self.event(
                kind::CGROUP_CLEANUP_FAILED,
                format!("the task's cgroup was not removed (nomad-shim rm removes it): {e}"),
            );
            self.write_final_state(1);
        }
    }

    /// `run --rm` (supervisor/mod.rs, `Caller`): after the loop, waits
    /// for the CLI's word on `hold`. One byte: it reads the exit and
    /// removes the task itself once we are gone, as `rm` does (so a `wait`
    /// elsewhere still reads the exit when our exit wakes it). End of file
    /// with no byte: the CLI is gone (killed, its output closed, detached
    /// from), and the task's directory goes now, unless part of the
    /// clean-up failed, which `rm` must finish. The loop is over and the
    /// control socket closed: there is nothing else to serve meanwhile.
    pub fn remove_if_abandoned(&mut self, hold: OwnedFd) {
        let mut byte = [0u8; 1];
        let said = loop {
            match nix::unistd::read(&hold, &mut byte) {
                Err(Errno::EINTR) => continue,
                // A read error (none is expected of a pipe) is taken as the
                // CLI's silence: the task is not left behind.
                r => break r == Ok(1),
            }
        };
        if said || self.cleanup_failed {
            return;
        }
        match nomad_shim::state::remove_task_path(self.dir.path()) {
            // Gone already: an `rm --force` was faster.
            Err(e) if e.kind() != ErrorKind::NotFound => {
                // No one is left to tell but the kernel log.
                super::events::to_kernel_log(
                    self.dir.id().as_str(),
                    &format!("run --rm: {} not removed: {e}", self.dir.path().display()),
                );
            }
            _ => {}
        }
    }

    /// Writes the state durably, up to `attempts` times a second apart; the
    /// first failure and a final give-up are events.
    fn write_final_state(&mut self, attempts: u32) {
        super::events::flush_into(&mut self.state);
        for attempt in 1..=attempts {
            match self.dir.write_state(&self.state, true) {
                Ok(()) => return,
                Err(e) if attempt < attempts => {
                    if attempt == 1 {
                        self.event(
                            kind::STATE_WRITE_RETRY,
                            format!("{e}; retrying every second, {attempts} times at most"),
                        );
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                // The state on disk is the one before (`running`, which
                // readers then report `lost`): the kernel log is the one
                // place left to say why.
                Err(e) => {
                    let message = format!("{e}; gave up after {attempts} attempts");
                    super::events::to_kernel_log(
                        self.dir.id().as_str(),
                        &format!("{}: {message}", kind::STATE_WRITE_FAILED),
                    );
                    self.event(kind::STATE_WRITE_FAILED, message);
                }
            }
        }
    }
}

#[derive(Default)]
struct Ready {
    signals: bool,
    timer: bool,
    control: bool,
    logs: [bool; 2],
    kill: bool,
    clients: Vec<bool>,
    /// The task's stdio (`stdio.rs`): the master or stdin pipe, the client.
    stdio: Vec<Option<PollFlags>>,
}
