//! A task's own stdin and terminal from the CLI: `run -i/-t`, `attach`.
//!
//! * With a terminal: the caller's terminal in raw mode (restored by a
//!   drop guard on every way out: the task's end, a lost supervisor, an
//!   error, a detach, SIGTERM/SIGHUP), its window size sent at the start and
//!   on every SIGWINCH, and one loop relaying bytes both ways between it
//!   and the task's `attach_stdio` connection. `Ctrl-P Ctrl-Q` typed in a
//!   row detaches (as Docker's default detach keys).
//! * With a piped stdin only: [`StdinPump`] copies our stdin into the
//!   task's, and the output is followed in the log files as `run` does.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::termios::{self, SetArg, Termios};
use nomad_shim::{Error, Executor, Stdin, Task, WindowSize};

use super::exit_code;

/// `Ctrl-P`, the first detach key.
const CTRL_P: u8 = 0x10;
/// `Ctrl-Q`, the second.
const CTRL_Q: u8 = 0x11;
/// `Ctrl-D`, a terminal's end of input (VEOF).
const CTRL_D: u8 = 0x04;

/// The caller's terminal in raw mode; the settings it had come back when
/// this is dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on our stdin, if it is a terminal (`None` if not):
    /// cfmakeraw(3), every byte passed on as typed, no echo, no signals
    /// made from keys (they are the task's terminal's to make).
    pub fn enter() -> Result<Option<RawMode>, Error> {
        let stdin = io::stdin();
        let saved = match termios::tcgetattr(stdin.as_fd()) {
            Ok(t) => t,
            Err(nix::errno::Errno::ENOTTY) => return Ok(None),
            Err(e) => return Err(io_err("read the terminal's settings", e.into())),
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // A panic does not unwind in a release build (panic = "abort"), so
        // no drop guard would run: a hook restores the terminal first.
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(saved.clone());
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let next = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                next(info);
            }));
        });
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| io_err("set the terminal to raw mode", e.into()))?;
        Ok(Some(RawMode { saved }))
    }
}

/// The settings to restore while a [`RawMode`] lives (for the panic hook).
static SAVED: std::sync::Mutex<Option<Termios>> = std::sync::Mutex::new(None);

/// Puts the saved settings back, if raw mode is on.
fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(saved) = saved {
        // Nothing is left to report a failure to: the terminal is gone.
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &saved);
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Nothing is left to report a failure to: the terminal is gone.
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The window size of our terminal (stdin, else stdout), if either is one.
pub fn our_window_size() -> Option<WindowSize> {
    nomad_shim::sys::get_winsize(io::stdin().as_fd())
        .or_else(|_| nomad_shim::sys::get_winsize(io::stdout().as_fd()))
        .ok()
        .filter(|&(rows, cols)| rows > 0 && cols > 0)
        .map(|(rows, cols)| WindowSize { rows, cols })
}

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
    let mut held_ctrl_p = false;
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
            let n = match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                Err(e) => return Err(io_err("read stdin", e.into())),
            };
            if n == 0 {
                // End of our input (a pipe or file: a terminal in raw mode
                // has none). A terminal says end of input with its VEOF
                // key: ^D, which the task's line discipline turns into
                // end-of-file for a reader at the start of a line
                // (`printf 'echo hi\n' | run -it -- sh` ends).
                stdin_open = false;
                send(stream, &[CTRL_D])?;
                let _ = stream.shutdown(std::net::Shutdown::Write);
            } else {
                let (keys, detach) = if detach_keys {
                    detach_filter(&buf[..n], &mut held_ctrl_p)
                } else {
                    (buf[..n].to_vec(), false)
                };
                send(stream, &keys)?;
                if detach {
                    return Ok(Relay::Detached);
                }
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

/// Passes `keys` on, but `Ctrl-P Ctrl-Q` in a row means "detach". A
/// `Ctrl-P` is held until the next key says which it is (it may arrive in
/// the next read); any other key after it sends both.
pub fn detach_filter(keys: &[u8], held_ctrl_p: &mut bool) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(keys.len() + 1);
    for &b in keys {
        if *held_ctrl_p {
            *held_ctrl_p = false;
            if b == CTRL_Q {
                return (out, true);
            }
            out.push(CTRL_P);
        }
        if b == CTRL_P {
            *held_ctrl_p = true;
        } else {
            out.push(b);
        }
    }
    (out, false)
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
    let raw = if input { RawMode::enter()? } else { None };
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
    let raw = if input { RawMode::enter()? } else { None };
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

fn io_err(op: &'static str, source: io::Error) -> Error {
    Error::Io {
        op,
        what: "terminal".into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_p_ctrl_q_detaches_and_a_lone_ctrl_p_is_passed_on() {
        let mut held = false;
        assert_eq!(detach_filter(b"ab", &mut held), (b"ab".to_vec(), false));
        assert_eq!(
            detach_filter(&[b'x', CTRL_P, CTRL_Q, b'y'], &mut held),
            (b"x".to_vec(), true)
        );
        held = false;
        // Split across two reads.
        assert_eq!(detach_filter(&[CTRL_P], &mut held), (vec![], false));
        assert!(held);
        assert_eq!(detach_filter(&[CTRL_Q], &mut held), (vec![], true));
        held = false;
        assert_eq!(
            detach_filter(&[CTRL_P, b'a', CTRL_P, CTRL_P, CTRL_Q], &mut held),
            (vec![CTRL_P, b'a', CTRL_P], true)
        );
    }
}
