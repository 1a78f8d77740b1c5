//! [`Task::exec`]: a process started inside a running task (Nomad's
//! `ExecTaskStreaming`, `docker exec`).
//!
//! The supervisor starts it (it is the task's parent and the only process
//! that needs to enter the task's namespaces): the agent's process never
//! enters them, and a half-joined process can never exist. The caller's
//! stdio goes to the supervisor as `SCM_RIGHTS` with the request, so the
//! process reads and writes the caller's own descriptors, no relay; with a
//! tty the process opens a pseudo-terminal of the task's own `/dev/pts`,
//! and its master comes back ([`ExecSession::pty`]). The connection stays open until the supervisor
//! has reaped the process and written its exact exit ([`ExecSession::wait`]).
//! See docs/architecture.md, "exec".

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::fcntl::OFlag;

use super::Task;
use crate::error::{Error, Result};
use crate::protocol::{ErrorCode, ExecRequest, ExecUser, Reply, Request, MAX_LINE};

/// Where an exec'd process's stdin, stdout or stderr goes (without a tty).
///
/// ```
/// use nomad_shim::{ExecSpec, ExecStdio};
///
/// let mut spec = ExecSpec::new("wc");
/// spec.arg("-l").stdin(ExecStdio::Piped).stdout(ExecStdio::Piped);
/// ```
#[derive(Debug, Default)]
pub enum ExecStdio {
    /// The caller's own fd 0, 1 or 2 (the default for stdout and stderr).
    #[default]
    Inherit,
    /// `/dev/null` (the default for stdin).
    Null,
    /// This descriptor (the process gets the same open file).
    Fd(OwnedFd),
    /// A pipe: [`ExecSession::take_stdin`] (and `take_stdout`,
    /// `take_stderr`) hand out the other end.
    Piped,
}

/// What to run inside a task: [`Task::exec`]'s argument.
///
/// By default the process gets exactly what the task got: its user and
/// groups, capabilities, bounding set, `no_new_privs`, rlimits, cgroup,
/// namespaces, root, environment and working directory; the builder
/// changes the user, environment and working directory, and asks for a tty.
///
/// ```
/// use nomad_shim::{ExecSpec, ExecStdio};
///
/// let mut spec = ExecSpec::new("/bin/sh");
/// spec.args(["-c", "id -u"])
///     .env("LC_ALL", "C")
///     .cwd("/tmp")
///     .user("nobody")
///     .stdout(ExecStdio::Piped);
/// assert_eq!(spec.get_argv(), ["/bin/sh", "-c", "id -u"]);
/// ```
#[derive(Debug, Default)]
pub struct ExecSpec {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    user: Option<String>,
    tty: bool,
    winsize: Option<(u16, u16)>,
    stdin: Option<ExecStdio>,
    stdout: ExecStdio,
    stderr: ExecStdio,
}

impl ExecSpec {
    /// Runs `program` (looked up in `PATH` inside the task's root, like the
    /// task's own program).
    pub fn new(program: impl Into<String>) -> ExecSpec {
        ExecSpec {
            argv: vec![program.into()],
            ..ExecSpec::default()
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut ExecSpec {
        self.argv.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, args: I) -> &mut ExecSpec {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets a variable over the task's environment.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut ExecSpec {
        self.env.insert(key.into(), value.into());
        self
    }

    /// The working directory inside the task (default: the task's).
    pub fn cwd(&mut self, dir: impl Into<PathBuf>) -> &mut ExecSpec {
        self.cwd = Some(dir.into());
        self
    }

    /// Another user than the task's: `name`, `uid`, `name:group` or
    /// `uid:gid`, resolved here with NSS (the caller's `/etc/passwd`).
    pub fn user(&mut self, user: impl Into<String>) -> &mut ExecSpec {
        self.user = Some(user.into());
        self
    }

    /// A pseudo-terminal on stdin, stdout and stderr (its master is
    /// [`ExecSession::pty`]); the stdio choices are then ignored.
    pub fn tty(&mut self, tty: bool) -> &mut ExecSpec {
        self.tty = tty;
        self
    }

    /// The terminal's size at start, with [`ExecSpec::tty`].
    pub fn winsize(&mut self, rows: u16, cols: u16) -> &mut ExecSpec {
        self.winsize = Some((rows, cols));
        self
    }

    /// stdin (default [`ExecStdio::Null`]).
    pub fn stdin(&mut self, stdio: ExecStdio) -> &mut ExecSpec {
        self.stdin = Some(stdio);
        self
    }

    /// stdout (default [`ExecStdio::Inherit`]).
    pub fn stdout(&mut self, stdio: ExecStdio) -> &mut ExecSpec {
        self.stdout = stdio;
        self
    }

    /// stderr (default [`ExecStdio::Inherit`]).
    pub fn stderr(&mut self, stdio: ExecStdio) -> &mut ExecSpec {
        self.stderr = stdio;
        self
    }

    /// The program and its arguments.
    pub fn get_argv(&self) -> &[String] {
        &self.argv
    }
}

/// How an exec'd process ended, exactly.
///
/// ```
/// use nomad_shim::ExecExit;
///
/// let killed = ExecExit { code: None, signal: Some(9), core_dumped: false };
/// assert_eq!((killed.shell_code(), killed.success()), (137, false));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecExit {
    /// Its exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
}

impl ExecExit {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The code a shell would show: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => s.saturating_add(128),
            (None, None) => 255,
        }
    }
}

/// A process running inside a task, started by [`Task::exec`]. Dropping it
/// leaves the process running (it is part of the task, and ends with it).
#[derive(Debug)]
pub struct ExecSession {
    id: crate::TaskId,
    stream: UnixStream,
    pid: i32,
    pty: Option<OwnedFd>,
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    exit: Option<ExecExit>,
}

impl ExecSession {
    /// The process's pid, as this host sees it.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pseudo-terminal's master, with [`ExecSpec::tty`]: read the
    /// process's output from it, write its input to it.
    pub fn pty(&self) -> Option<BorrowedFd<'_>> {
        self.pty.as_ref().map(|p| p.as_fd())
    }

    /// Sets the pseudo-terminal's size (`TIOCSWINSZ`; the process gets
    /// SIGWINCH). An error without a tty.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let io = |source| Error::Io {
            op: "resize the terminal of",
            what: format!("exec'd process {} in {}", self.pid, self.id),
            source,
        };
        let pty = self
            .pty
            .as_ref()
            .ok_or_else(|| io(std::io::Error::from_raw_os_error(libc::ENOTTY)))?;
        crate::sys::set_winsize(pty.as_fd(), rows, cols).map_err(|e| io(e.into()))
    }

    /// The write end of its stdin, with [`ExecStdio::Piped`] (drop it for
    /// EOF).
    pub fn take_stdin(&mut self) -> Option<File> {
        self.stdin.take()
    }

    /// The read end of its stdout, with [`ExecStdio::Piped`].
    pub fn take_stdout(&mut self) -> Option<File> {
        self.stdout.take()
    }

    /// The read end of its stderr, with [`ExecStdio::Piped`].
    pub fn take_stderr(&mut self) -> Option<File> {
        self.stderr.take()
    }

    /// Waits for the process to end and returns its exact exit. Its stdin
    /// pipe, if not taken, is closed first (EOF for the process).
    /// [`Error::ExecLost`] when the supervisor went away first (the task
    /// was killed with it; its exit is unknown).
    pub fn wait(&mut self) -> Result<ExecExit> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        self.stdin = None;
        let lost = || Error::ExecLost {
            id: self.id.clone(),
            pid: self.pid,
        };
        let _ = self.stream.set_read_timeout(None);
        let (line, _) = read_line(&self.stream).map_err(|_| lost())?;
        if line.is_empty() {
            return Err(lost());
        }
        let reply: Reply = serde_json::from_slice(&line).map_err(|_| lost())?;
        let exit = reply.exit.ok_or_else(lost)?;
        let exit = ExecExit {
            code: exit.code,
            signal: exit.signal,
            core_dumped: exit.core_dumped,
        };
        self.exit = Some(exit);
        Ok(exit)
    }

    /// The connection to the supervisor: readable once the final line has
    /// come (then [`ExecSession::wait`] does not block), for a poll loop.
    pub fn wait_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// Reads up to a newline, byte by byte (nothing after it is swallowed), with
/// the descriptors that came along.
fn read_line(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut line = Vec::with_capacity(128);
    let mut fds = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let (n, got) = match crate::sys::recv_with_fds(stream.as_fd(), &mut byte) {
            Ok(r) => r,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECONNRESET) => (0, Vec::new()),
            Err(e) => return Err(e.into()),
        };
        fds.extend(got);
        if n == 0 || byte[0] == b'\n' {
            return Ok((line, fds));
        }
        if line.len() >= MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "reply too long",
            ));
        }
        line.push(byte[0]);
    }
}

/// The process's end of one stdio stream, and ours (with `Piped`).
fn stdio_end(
    choice: &ExecStdio,
    fd: i32,
    null: &mut Option<OwnedFd>,
) -> std::io::Result<(OwnedFd, Option<File>)> {
    let dup = |b: BorrowedFd<'_>| b.try_clone_to_owned();
    Ok(match choice {
        ExecStdio::Inherit => (own_std_fd(fd)?, None),
        ExecStdio::Null => {
            if null.is_none() {
                *null = Some(nix::fcntl::open(
                    "/dev/null",
                    OFlag::O_RDWR | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )?);
            }
            match null {
                Some(n) => (dup(n.as_fd())?, None),
                None => unreachable!("opened above"),
            }
        }
        ExecStdio::Fd(f) => (dup(f.as_fd())?, None),
        ExecStdio::Piped => {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            if fd == 0 {
                (r, Some(File::from(w)))
            } else {
                (w, Some(File::from(r)))
            }
        }
    })
}

/// A copy of our own fd 0, 1 or 2.
fn own_std_fd(fd: i32) -> std::io::Result<OwnedFd> {
    match fd {
        0 => std::io::stdin().as_fd().try_clone_to_owned(),
        1 => std::io::stdout().as_fd().try_clone_to_owned(),
        _ => std::io::stderr().as_fd().try_clone_to_owned(),
    }
}

impl Task {
    /// Starts a process inside the running task: its cgroup, namespaces
    /// (mount, pid, ipc, uts, net), root, user (unless
    /// [`ExecSpec::user`]), capability and bounding sets, `no_new_privs`,
    /// rlimits and device rules. Returns once its program was executed.
    ///
    /// Errors: [`Error::NotRunning`] for a task that has ended;
    /// [`Error::ExecFailed`] when the program cannot start
    /// ([`Error::is_not_found`], [`Error::is_not_executable`]); a bad user
    /// name as [`Error::Isolate`].
    ///
    /// ```no_run
    /// use nomad_shim::{Executor, ExecSpec, ExecStdio};
    /// use std::io::Read;
    ///
    /// # fn main() -> nomad_shim::Result<()> {
    /// let task = Executor::new()?.open("web.1")?;
    /// let mut spec = ExecSpec::new("cat");
    /// spec.arg("/proc/1/cmdline").stdout(ExecStdio::Piped);
    /// let mut session = task.exec(&spec)?;
    /// let mut out = String::new();
    /// session.take_stdout().unwrap().read_to_string(&mut out).unwrap();
    /// let exit = session.wait()?;
    /// println!("{out:?} exited {}", exit.shell_code());
    /// # Ok(())
    /// # }
    /// ```
    pub fn exec(&self, spec: &ExecSpec) -> Result<ExecSession> {
        let id = self.id().clone();
        let user = match &spec.user {
            Some(u) => {
                let (name, group) = match u.split_once(':') {
                    Some((n, g)) => (n, Some(g)),
                    None => (u.as_str(), None),
                };
                let r = crate::isolate::resolve_user(name, group)?;
                Some(ExecUser {
                    uid: r.uid,
                    gid: r.gid,
                    groups: r.groups,
                    name: r.name,
                    home: r.home,
                })
            }
            None => None,
        };
        let req = ExecRequest {
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            user,
            tty: spec.tty,
            winsize: spec.winsize.filter(|_| spec.tty),
        };
        let io = |op: &'static str| {
            let id = id.clone();
            move |source: std::io::Error| Error::Io {
                op,
                what: format!("exec into {id}"),
                source,
            }
        };
        // Our ends (pipes) and the process's, which go to the supervisor.
        let mut theirs = Vec::new();
        let mut ours: [Option<File>; 3] = [None, None, None];
        if !spec.tty {
            let mut null = None;
            let stdin = spec.stdin.as_ref().unwrap_or(&ExecStdio::Null);
            for (i, choice) in [stdin, &spec.stdout, &spec.stderr].into_iter().enumerate() {
                let (fd, mine) =
                    stdio_end(choice, i as i32, &mut null).map_err(io("set up the stdio of"))?;
                theirs.push(fd);
                ours[i] = mine;
            }
        }

        let ctl_err = |source: std::io::Error| self.control_error(source);
        let not_running = || self.not_running();
        let stream = self.connect_control()?;
        let line = super::request_line(Request::Exec { spec: req }).map_err(ctl_err)?;
        let borrowed: Vec<BorrowedFd<'_>> = theirs.iter().map(|f| f.as_fd()).collect();
        match crate::sys::send_with_fds(stream.as_fd(), &line, &borrowed) {
            Ok(()) => {}
            Err(nix::errno::Errno::ECONNRESET | nix::errno::Errno::EPIPE) => {
                return Err(not_running()?)
            }
            Err(e) => return Err(ctl_err(e.into())),
        }
        // The supervisor holds its copies now (or has refused): ours go.
        drop(theirs);
        let (reply, mut fds) = read_line(&stream).map_err(ctl_err)?;
        if reply.is_empty() {
            return Err(not_running()?);
        }
        let reply: Reply = serde_json::from_slice(&reply).map_err(|e| ctl_err(e.into()))?;
        if let Some(failure) = reply.failure() {
            if failure.code == ErrorCode::NotRunning {
                return Err(not_running()?);
            }
            if failure.code == ErrorCode::Unsupported {
                return Err(Error::Refused {
                    id,
                    request: "exec",
                    code: failure.code,
                    reason: format!(
                        "{} (the task's supervisor predates exec; restart the task)",
                        failure.message
                    ),
                });
            }
            if let Some(f) = reply.exec_failed {
                return Err(Error::ExecFailed {
                    id,
                    program: spec.argv[0].clone(),
                    step: f.step,
                    errno: f.errno,
                    message: failure.message,
                });
            }
            return Err(Error::Refused {
                id,
                request: "exec",
                code: failure.code,
                reason: failure.message,
            });
        }
        let pid = reply.exec.map(|e| e.pid).ok_or_else(|| {
            ctl_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "exec reply without a pid",
            ))
        })?;
        let pty = if spec.tty { fds.pop() } else { None };
        let [stdin, stdout, stderr] = ours;
        Ok(ExecSession {
            id,
            stream,
            pid,
            pty,
            stdin,
            stdout,
            stderr,
            exit: None,
        })
    }
}
