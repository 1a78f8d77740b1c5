//! The loop's side of `exec` (`supervisor/exec.rs` starts the process):
//! the reply with the pid (and the pty master), the session in
//! `state.json`, the final line when the helper is reaped.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nomad_shim::protocol::{ErrorCode, ExecExitWire, ExecRequest, ExecStarted, Reply};
use nomad_shim::state::{ExecEntry, Timestamp};
use nomad_shim::sys::Reaped;

use super::Supervisor;
use crate::supervisor::exec::{self, Session};

/// Most exec'd processes running at once in one task.
const MAX_EXECS: usize = 64;

/// How long the end of the supervisor waits for the helpers of exec'd
/// processes, which the whole-cgroup kill has ended, to report.
const HELPER_DEADLINE: Duration = Duration::from_secs(2);

/// One line to `stream`, with `fds` as SCM_RIGHTS; a caller that went away
/// does not get it (the process keeps running, as with docker exec).
fn send(stream: &UnixStream, reply: &Reply, fds: &[std::os::fd::BorrowedFd<'_>]) {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    if fds.is_empty() {
        let _ = (&*stream).write_all(&line);
    } else {
        let _ = nomad_shim::sys::send_with_fds(stream.as_fd(), &line, fds);
    }
}

impl Supervisor<'_> {
    /// Starts an exec'd process for the client on `stream`, which stays
    /// open until the process has ended.
    pub(super) fn exec(&mut self, stream: UnixStream, req: &ExecRequest, fds: Vec<OwnedFd>) {
        if self.exited() {
            let reply = Reply::fail(ErrorCode::NotRunning, "not running: the task has exited");
            return send(&stream, &reply, &[]);
        }
        // Each session holds a helper process and a connection.
        if self.execs.len() >= MAX_EXECS {
            let reply = Reply::fail(
                ErrorCode::Busy,
                format!("too many exec sessions ({MAX_EXECS} running)"),
            );
            return send(&stream, &reply, &[]);
        }
        let started = match exec::start(&self.spec, self.task, self.cgroup, req, fds) {
            Ok(s) => s,
            Err(reply) => return send(&stream, &reply, &[]),
        };
        // In the state before the caller hears of it: whoever it tells
        // finds the session listed.
        self.state.execs.push(ExecEntry {
            pid: started.pid,
            argv: req.argv.clone(),
            started_at: Timestamp::now(),
            tty: req.tty,
        });
        self.write_live_state();
        let reply = Reply {
            exec: Some(ExecStarted { pid: started.pid }),
            ..Reply::ok()
        };
        let master: Vec<_> = started.master.iter().map(|m| m.as_fd()).collect();
        send(&stream, &reply, &master);
        drop(started.master);
        self.execs.push(Session {
            helper: started.helper,
            pid: started.pid,
            status: started.status,
            stream,
        });
    }

    /// A child other than the task's main process was reaped: if it is the
    /// helper of an exec'd process, the process has ended.
    pub(super) fn exec_reaped(&mut self, r: Reaped) {
        let Some(i) = self.execs.iter().position(|s| s.helper.as_raw() == r.pid) else {
            return;
        };
        let session = self.execs.swap_remove(i);
        let status = session.wait_status(r.status);
        let reply = Reply {
            exit: Some(ExecExitWire::from_wait_status(status)),
            ..Reply::ok()
        };
        send(&session.stream, &reply, &[]);
        self.state.execs.retain(|e| e.pid != session.pid);
        self.write_live_state();
    }

    /// The task has ended and its cgroup was killed: the helpers of exec'd
    /// processes report their exits (SIGKILL) at once; wait a little for
    /// each, so that its caller gets the final line.
    pub(super) fn end_execs(&mut self) {
        while let Some(session) = self.execs.first() {
            let helper = session.helper;
            if let Ok(pidfd) = nomad_shim::sys::pidfd_open(helper.as_raw()) {
                let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
                let ms = HELPER_DEADLINE.as_millis() as u16;
                let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
            }
            match nomad_shim::sys::wait4_nohang(helper.as_raw()) {
                Ok(Some(r)) => self.exec_reaped(r),
                _ => {
                    // Still running past the deadline: its caller reads EOF.
                    self.execs.remove(0);
                }
            }
        }
        self.state.execs.clear();
    }

    /// A write of the state while the task runs (the exec sessions
    /// changed); not durable, and skipped once the exit is recorded (the
    /// final write follows).
    fn write_live_state(&mut self) {
        if !self.exited() {
            let _ = self.dir.write_state(&self.state, false);
        }
    }
}
