//! A task's own stdin and terminal from the CLI: `run -i/-t`, `attach`.
//!
//! * With a terminal: the caller's terminal in raw mode ([`RawMode`] of
//!   `term.rs`, restored by its drop guard on every way out: the task's
//!   end, a lost supervisor, an error, a detach, SIGTERM/SIGHUP; by its
//!   panic hook on a panic), its window size sent at the start and on every
//!   SIGWINCH, and one loop relaying bytes both ways between it and the
//!   task's `attach_stdio` connection. `Ctrl-P Ctrl-Q` typed in a row
//!   detaches (as Docker's default detach keys; `term::DetachKeys`).
//! * With a piped stdin only: [`StdinPump`] copies our stdin into the
//!   task's, and the output is followed in the log files as `run` does.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nomad_shim::{Error, Executor, Stdin, Task};

use super::exit_code;
use super::term::{our_window_size, DetachKeys, Keyboard, Keys, RawMode, CTRL_D, CTRL_P_CTRL_Q};

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Relay {
    /// The supervisor closed the connection: the task has ended.
    Ended,
    /// The operator detached (`Ctrl-P Ctrl-Q`, or a signal to `attach`).
    Detached,
}

/// What the relay does with a signal to this process.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnSignal {
    /// `run`: pass it on to the task (the task decides).
    Forward,
    /// `attach`: detach, leaving the task running.
    Detach,
}

/// Signal-hook self-pipes, one per signal (each writes a constant byte).
struct Signals {
    ids: Vec<signal_hook::SigId>,
    pipes: Vec<(Signal, UnixStream)>,
}

impl Signals {
    fn register(signals: &[Signal]) -> Result<Signals, Error> {
        let mut s = Signals {
            ids: Vec::new(),
            pipes: Vec::new(),
        };
        for &sig in signals {
            let (r, w) = UnixStream::pair().map_err(|e| io_err("create signal pipe", e))?;
            r.set_nonblocking(true)
                .map_err(|e| io_err("create signal pipe", e))?;
            s.ids.push(
                signal_hook::low_level::pipe::register(sig as i32, w)
                    .map_err(|e| io_err("register signal handler", e))?,
            );
            s.pipes.push((sig, r));
        }
        Ok(s)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Relays between our stdin/stdout and the task's terminal (`stream`, from
/// [`Task::attach_stdio`]) until the task ends or the operator detaches.
/// `input`: our stdin is read and sent (`-i`); `detach_keys`: watch it for
/// `Ctrl-P Ctrl-Q`.
pub fn relay_terminal(
    task: &Task,
    stream: &UnixStream,
    input: bool,
    detach_keys: bool,
    on_signal: OnSignal,
) -> Result<Relay, Error> {
    let signals = Signals::register(&[
        Signal::SIGWINCH,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
    ])?;
    // The size now: the terminal may have changed since the task was made
    // (or this is an attach to a task made elsewhere).
    send_window_size(task);
    let stdin = io::stdin();
    let mut stdin_open = input;
    let mut keyboard = Keyboard::new(
        64 * 1024,
        detach_keys.then(|| DetachKeys::new(CTRL_P_CTRL_Q)),
    );
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = vec![PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        let first_signal = fds.len();
        for (_, pipe) in &signals.pipes {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io_err("poll", e.into())),
        }
        let hit: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (k, (sig, pipe)) in signals.pipes.iter().enumerate() {
            if !hit[first_signal + k] {
                continue;
            }
            let mut b = [0u8; 16];
            while matches!((&*pipe).read(&mut b), Ok(n) if n > 0) {}
            match (sig, on_signal) {
                (Signal::SIGWINCH, _) => send_window_size(task),
                (_, OnSignal::Detach) => return Ok(Relay::Detached),
                (sig, OnSignal::Forward) => match task.signal(*sig) {
                    Ok(()) | Err(Error::NotRunning { .. }) => {}
                    Err(e) => eprint!("nomad-shim: forward {sig} to the task: {e}\r\n"),
                },
            }
        }
        if stdin_open && hit[1] {
            match keyboard.read() {
                Ok(Keys::Eof) => {
                    // End of our input (a pipe or file: a terminal in raw
                    // mode has none). A terminal says end of input with its
                    // VEOF key: ^D, which the task's line discipline turns
                    // into end-of-file for a reader at the start of a line
                    // (`printf 'echo hi\n' | run -it -- sh` ends).
                    stdin_open = false;
                    send(stream, &[CTRL_D])?;
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                }
                Ok(Keys::Typed(keys, detached)) => {
                    send(stream, keys)?;
                    if detached {
                        return Ok(Relay::Detached);
                    }
                }
                Err(e) => return Err(io_err("read stdin", e.into())),
            }
        }
        if hit[0] {
            match (&*stream).read(&mut buf) {
                Ok(0) => return Ok(Relay::Ended),
                Ok(n) => {
                    let mut out = io::stdout().lock();
                    out.write_all(&buf[..n])
                        .and_then(|()| out.flush())
                        .map_err(|e| io_err("write output", e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A supervisor killed (-9) resets the connection: the task
                // is over for us; its state says how (lost).
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Relay::Ended),
                Err(e) => return Err(io_err("read from the task's terminal", e)),
            }
        }
    }
}

/// Writes typed keys to the task; a supervisor gone (EPIPE, reset) shows
/// as the end of the connection in the next round.
fn send(stream: &UnixStream, bytes: &[u8]) -> Result<(), Error> {
    match (&*stream).write_all(bytes) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(io_err("write to the task's terminal", e)),
    }
}

fn send_window_size(task: &Task) {
    if let Some(size) = our_window_size() {
        match task.resize(size) {
            Ok(()) | Err(Error::NotRunning { .. }) => {}
            Err(e) => eprint!("nomad-shim: resize the task's terminal: {e}\r\n"),
        }
    }
}

/// Copies our stdin into the task's (`run -i`, `attach` to a task with a
/// piped stdin and no terminal); our end-of-file closes the task's stdin.
pub struct StdinPump {
    /// Kept open until the task ends, after our end-of-file too: closing
    /// it would only detach.
    stream: UnixStream,
    open: bool,
}

impl StdinPump {
    /// Pumps into `stream`, from [`Task::attach_stdio`].
    pub fn new(stream: UnixStream) -> StdinPump {
        StdinPump { stream, open: true }
    }

    /// There is more of our stdin to send: poll it.
    pub fn active(&self) -> bool {
        self.open
    }

    /// Our stdin is readable: one read, sent on (blocking: the supervisor
    /// takes it as fast as the task reads, queueing 64 KiB). At end-of-file
    /// (or when the task's side is gone) the pump stops.
    pub fn on_ready(&mut self) -> Result<(), Error> {
        if !self.open {
            return Ok(());
        }
        let mut buf = [0u8; 16 * 1024];
        let n = match nix::unistd::read(io::stdin().as_fd(), &mut buf) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(io_err("read stdin", e.into())),
        };
        if n == 0 {
            // ENOTCONN only: the supervisor is gone, which the follower sees.
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
            self.open = false;
            return Ok(());
        }
        if let Err(e) = (&self.stream).write_all(&buf[..n]) {
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                self.open = false;
                return Ok(());
            }
            return Err(io_err("write to the task's stdin", e));
        }
        Ok(())
    }
}

/// `attach ID`: with a terminal, relay it until the task ends (exit with
/// its code) or `Ctrl-P Ctrl-Q` (exit 0, the task runs on); with a piped
/// stdin only, send ours and follow the output.
pub fn attach(executor: &Executor, id: &str) -> Result<i32, Error> {
    let mut task = executor.open(id)?;
    let state = task.state()?;
    if !state.tty && state.stdin != Stdin::Piped {
        eprintln!(
            "nomad-shim: task {id} has no terminal and no stdin (start it with -i or -t); \
             `nomad-shim logs -f {id}` follows its output"
        );
        return Ok(super::EXIT_ERROR);
    }
    let stream = task.attach_stdio()?;
    if !state.tty {
        let mut pump = StdinPump::new(stream);
        super::follow::follow_from_end(&task, &mut pump)?;
        return finish(&mut task, id);
    }
    let input = state.stdin == Stdin::Piped;
    let raw = if input { raw_mode()? } else { None };
    let relay = relay_terminal(&task, &stream, input, raw.is_some(), OnSignal::Detach);
    drop(raw);
    match relay? {
        Relay::Detached => {
            eprintln!("\nnomad-shim: detached from {id}; it runs on");
            Ok(0)
        }
        Relay::Ended => finish(&mut task, id),
    }
}

/// `run -t`: the task was started with a terminal; relay it.
pub fn run_terminal(task: &mut Task, input: bool) -> Result<Option<i32>, Error> {
    let id = task.id().to_string();
    let stream = match task.attach_stdio() {
        Ok(s) => s,
        // Over already: its output is in the log.
        Err(Error::NotRunning { .. }) => {
            let out = std::fs::read(task.dir().join(nomad_shim::state::names::STDOUT))
                .unwrap_or_default();
            let _ = io::stdout().write_all(&out);
            return finish(task, &id).map(Some);
        }
        Err(e) => return Err(e),
    };
    let raw = if input { raw_mode()? } else { None };
    let relay = relay_terminal(task, &stream, input, raw.is_some(), OnSignal::Forward);
    drop(raw);
    match relay? {
        Relay::Detached => {
            eprintln!("\nnomad-shim: detached from {id}; it runs on");
            Ok(None)
        }
        Relay::Ended => finish(task, &id).map(Some),
    }
}

/// The connection ended: the final state is durable; exit like `run`.
fn finish(task: &mut Task, id: &str) -> Result<i32, Error> {
    let exit = match task.try_wait()? {
        Some(exit) => exit,
        None => task.wait()?,
    };
    Ok(exit_code(id, &exit))
}

/// Our terminal in raw mode, if stdin is one.
fn raw_mode() -> Result<Option<RawMode>, Error> {
    RawMode::enable().map_err(|e| io_err("set the terminal to raw mode", e.into()))
}

fn io_err(op: &'static str, source: io::Error) -> Error {
    Error::Io {
        op,
        what: "terminal".into(),
        source,
    }
}
