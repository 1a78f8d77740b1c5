//! The loop's side of the task's own stdin and terminal (`terminal.rs`):
//! the `attach_stdio` and `resize` requests, the terminal's output into
//! `stdout.log`, and the end of it all when the task ends.

use std::os::unix::net::UnixStream;

use nix::poll::PollFlags;
use nomad_shim::protocol::{ErrorCode, Reply, Request};
use nomad_shim::state::events::kind;
use nomad_shim::WindowSize;

use super::Supervisor;
use crate::supervisor::terminal::TaskStdio;

impl Supervisor<'_> {
    /// The task has its own terminal or stdin pipe.
    pub fn set_stdio(&mut self, stdio: TaskStdio) {
        self.stdio = Some(stdio);
    }

    /// The terminal is still open: the loop must read it before it ends.
    pub(super) fn stdio_open(&self) -> bool {
        self.stdio.as_ref().is_some_and(TaskStdio::output_open)
    }

    /// Answers `attach_stdio` and `resize`.
    pub(super) fn handle_stdio(&mut self, req: &Request) -> Reply {
        let exited = self.exited();
        let Some(stdio) = &self.stdio else {
            return Reply::fail(
                ErrorCode::BadRequest,
                "the task has no terminal and no stdin to attach to (start it with -i or -t)",
            );
        };
        match req {
            Request::AttachStdio if exited => {
                Reply::fail(ErrorCode::NotRunning, "not running: the task has exited")
            }
            Request::AttachStdio if stdio.attached() => Reply::fail(
                ErrorCode::Busy,
                "another client is attached to the task's stdio",
            ),
            Request::AttachStdio => Reply::ok(),
            Request::Resize { rows, cols } => {
                match stdio.resize(WindowSize {
                    rows: *rows,
                    cols: *cols,
                }) {
                    Ok(()) => Reply::ok(),
                    Err(nix::errno::Errno::ENOTTY) if !self.spec.tty => {
                        Reply::fail(ErrorCode::BadRequest, "the task has no terminal")
                    }
                    Err(e) => Reply::error(format!("resize the task's terminal: {}", e.desc())),
                }
            }
            _ => Reply::fail(ErrorCode::BadRequest, "not a stdio request"),
        }
    }

    /// The client whose `attach_stdio` was accepted.
    pub(super) fn attach_stdio(&mut self, stream: UnixStream, early: &[u8]) {
        if let Some(stdio) = &mut self.stdio {
            stdio.attach(stream, early);
        }
    }

    /// The stdio descriptors' poll results (the master or stdin pipe, and
    /// the client).
    pub(super) fn on_stdio(&mut self, task: Option<PollFlags>, client: Option<PollFlags>) {
        let Some(stdio) = &mut self.stdio else { return };
        let out = stdio.on_ready(task, client);
        self.log_terminal_output(&out);
    }

    /// Reads what the terminal still holds (the task has exited).
    pub(super) fn drain_stdio(&mut self) {
        let Some(stdio) = &mut self.stdio else { return };
        let mut out = Vec::new();
        while stdio.output_open() {
            let got = stdio.read_output();
            if got.is_empty() {
                break;
            }
            out.extend_from_slice(&got);
        }
        stdio.write_client();
        self.log_terminal_output(&out);
    }

    /// The terminal's output is the task's stdout: written to `stdout.log`
    /// (the same rotation; on a write error dropped and said, as for the
    /// log pipes), then the followers are nudged.
    fn log_terminal_output(&mut self, out: &[u8]) {
        if out.is_empty() {
            return;
        }
        match self.logs[0].append(self.dir.fd(), out) {
            Ok(()) => self.drop_episode_ended(0),
            Err((op, e)) => {
                if self.dropped[0].1.is_none() {
                    let name = self.log_name(0);
                    let why = format!("{op} {name}: {}", e.desc());
                    self.event(
                        kind::LOG_DROPPED,
                        format!("{why}: the task's output is dropped until it can be written"),
                    );
                    self.dropped[0].1 = Some(why);
                }
                self.dropped[0].0 += out.len() as u64;
            }
        }
        self.nudge_followers();
    }

    /// The drain deadline passed: the terminal is read no more.
    pub(super) fn close_stdio_output(&mut self) {
        if let Some(stdio) = &mut self.stdio {
            stdio.close_output();
        }
    }

    /// The final state is durable: the client gets the rest and EOF.
    pub(super) fn finish_stdio(&mut self) {
        if let Some(stdio) = &mut self.stdio {
            stdio.finish();
        }
    }
}
