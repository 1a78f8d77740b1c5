//! The caller's terminal while attached to a pseudo-terminal of the shim's
//! (`exec -t`; `run -t` and `attach` in `attach.rs`): raw mode with a guard
//! that restores it on every way out, the window size, the detach keys and
//! the typed keys read from stdin; and, for `exec -t`, the relay between
//! the terminal and the pty master. `attach.rs` keeps its own loop: it
//! relays the task's `attach_stdio` connection, not a master; a resize is a
//! request to the supervisor there, not an ioctl; signals come through
//! signal-hook self-pipes, as for `run` (`follow.rs`), and `run -t` passes
//! them on to the task where `exec -t` ends on them.
//!
//! * **Raw mode** (`cfmakeraw`, termios(3)): every key, Ctrl-C and Ctrl-Z
//!   included, is a byte for the program's terminal, whose line discipline
//!   turns it into SIGINT or SIGTSTP for the program's foreground job. The
//!   saved settings come back when [`RawMode`] drops (a normal return, an
//!   error, the unwinding of a panic), from the panic hook (the release
//!   build aborts on panic, without unwinding), and when a signal ends the
//!   relay (SIGTERM, SIGHUP, SIGINT, SIGQUIT are read from a signalfd, so
//!   they end the loop instead of the process).
//! * **Window size**: the terminal's at start, and again on every SIGWINCH
//!   (`TIOCGWINSZ` on ours, `TIOCSWINSZ` on the master: the kernel then
//!   sends SIGWINCH to the program, tty_ioctl(4)).
//! * **Relay**: one `poll(2)` over stdin, the master, the signalfd and the
//!   session's wait fd; no threads. The program's end shows as `EIO` on the
//!   master (every slave fd closed) or as the wait fd becoming readable
//!   (the final line came, a background job may still hold the slave).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nomad_shim::WindowSize;

/// The settings to restore from the panic hook (the guard's copy).
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// The caller's terminal in raw mode; restored on drop.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode; `Ok(None)` when stdin is not a
    /// terminal (nothing to change or restore).
    pub fn enable() -> nix::Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
            return Ok(None);
        }
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if let Ok(mut s) = SAVED.lock() {
            *s = Some(saved.clone());
        }
        install_panic_hook();
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw)?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // TCSADRAIN: what the program wrote reaches the terminal first. A
        // failure (the terminal is gone) leaves nothing to restore.
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
        if let Ok(mut s) = SAVED.lock() {
            *s = None;
        }
    }
}

/// Restores the saved settings before the default hook prints the panic.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(s) = SAVED.lock() {
                if let Some(saved) = s.as_ref() {
                    let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
                }
            }
            previous(info);
        }));
    });
}

/// The window size of our terminal (stdin, else stdout), if either is one
/// with a size (a pty nobody sized reads 0x0).
pub fn our_window_size() -> Option<WindowSize> {
    let size = |fd: BorrowedFd<'_>| {
        nomad_shim::sys::get_winsize(fd)
            .ok()
            .filter(|&(rows, cols)| rows > 0 && cols > 0)
    };
    size(std::io::stdin().as_fd())
        .or_else(|| size(std::io::stdout().as_fd()))
        .map(|(rows, cols)| WindowSize { rows, cols })
}

/// Copies our terminal's size to the pty master.
pub fn copy_winsize(master: BorrowedFd<'_>) {
    if let Some(size) = our_window_size() {
        // A master that is gone: the relay sees it next.
        let _ = nomad_shim::sys::set_winsize(master, size.rows, size.cols);
    }
}

/// The signals the relay reads (blocked while it runs, so that they end
/// the loop, with the terminal restored, rather than the process).
pub fn relay_signals() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGWINCH,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
    ] {
        mask.add(s);
    }
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

/// Why the relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// The program's side closed (EIO on the master) or the session ended.
    Ended,
    /// The detach keys were typed.
    Detached,
    /// A signal to us ended it (its number).
    Signal(i32),
}

/// The terminal's end-of-file key (VEOF, termios(3)'s default `^D`).
pub const CTRL_D: u8 = 0x04;

/// Docker's default detach keys: `Ctrl-P Ctrl-Q`.
pub const CTRL_P_CTRL_Q: &[u8] = &[0x10, 0x11];

/// A key sequence that detaches (docker's Ctrl-P Ctrl-Q is `[0x10, 0x11]`).
/// Bytes that start the sequence are held back until it completes or
/// breaks (it may complete in a later read); then they go through.
pub struct DetachKeys<'k> {
    keys: &'k [u8],
    matched: usize,
}

impl<'k> DetachKeys<'k> {
    /// Detach on `keys` (not empty).
    pub fn new(keys: &'k [u8]) -> DetachKeys<'k> {
        DetachKeys { keys, matched: 0 }
    }

    /// Filters `input` into `out` (appended: the keys before the sequence);
    /// true when the sequence completed (what follows it is dropped).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return true;
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
        }
        false
    }
}

/// Our stdin read as typed keys: one read, through the detach keys if any.
pub struct Keyboard<'k> {
    buf: Vec<u8>,
    out: Vec<u8>,
    detach: Option<DetachKeys<'k>>,
}

/// What one read of [`Keyboard`] gave.
pub enum Keys<'a> {
    /// Keys to pass on (maybe none: EINTR, EAGAIN, a held prefix), and
    /// whether the detach keys completed after them.
    Typed(&'a [u8], bool),
    /// End of our input (a pipe or file: a terminal in raw mode has none).
    Eof,
}

impl<'k> Keyboard<'k> {
    /// Reads with `bufsize` bytes at a time; watches for `detach`.
    pub fn new(bufsize: usize, detach: Option<DetachKeys<'k>>) -> Keyboard<'k> {
        Keyboard {
            buf: vec![0; bufsize],
            out: Vec::with_capacity(64),
            detach,
        }
    }

    /// One read of stdin (readable: it does not block).
    pub fn read(&mut self) -> nix::Result<Keys<'_>> {
        let n = match nix::unistd::read(std::io::stdin().as_fd(), &mut self.buf) {
            Ok(0) => return Ok(Keys::Eof),
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN) => return Ok(Keys::Typed(&[], false)),
            Err(e) => return Err(e),
        };
        Ok(match self.detach.as_mut() {
            Some(keys) => {
                self.out.clear();
                let detached = keys.feed(&self.buf[..n], &mut self.out);
                Keys::Typed(&self.out, detached)
            }
            None => Keys::Typed(&self.buf[..n], false),
        })
    }
}

/// Writes all of `buf` to `fd` (blocking fds; EINTR retried).
fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut p = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut p, PollTimeout::NONE);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Relays stdin → `master` (with `input`) and `master` → stdout until the
/// program's side closes, `done` becomes readable (and the master is
/// drained), a signal of `signals` other than SIGWINCH arrives, or
/// `detach` completes.
pub fn relay(
    master: BorrowedFd<'_>,
    signals: &SignalFd,
    done: BorrowedFd<'_>,
    input: bool,
    detach: Option<DetachKeys<'_>>,
) -> RelayEnd {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdin_open = input;
    let mut buf = [0u8; 16 * 1024];
    let mut keyboard = Keyboard::new(buf.len(), detach);
    loop {
        let mut fds = [
            PollFd::new(master, PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(done, PollFlags::POLLIN),
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
        ];
        // Our stdin only while it is read: poll(2) reports POLLHUP of a
        // pipe whose writer is gone even when asked for nothing, which
        // would spin this loop (stdin not read, or read to its end).
        let polled = if stdin_open { 4 } else { 3 };
        match nix::poll::poll(&mut fds[..polled], PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return RelayEnd::Ended,
        }
        let hit = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
        let [m, s, d, i] = fds.map(|f| hit(&f));
        let i = i && stdin_open;
        if m {
            match nix::unistd::read(master, &mut buf) {
                Ok(0) | Err(Errno::EIO) => return RelayEnd::Ended,
                Ok(n) => {
                    if write_all(stdout.as_fd(), &buf[..n]).is_err() {
                        return RelayEnd::Ended;
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => return RelayEnd::Ended,
            }
        }
        if s {
            while let Ok(Some(info)) = signals.read_signal() {
                match info.ssi_signo as i32 {
                    libc::SIGWINCH => copy_winsize(master),
                    n => return RelayEnd::Signal(n),
                }
            }
        }
        if i {
            match keyboard.read() {
                Ok(Keys::Eof) => {
                    // A pipe or file at its end: the program's terminal
                    // gets its end-of-file key (^D, VEOF), as `run -it`
                    // and `attach` do, so that `wc` or `sh` reading it
                    // ends.
                    stdin_open = false;
                    if write_all(master, &[CTRL_D]).is_err() {
                        return RelayEnd::Ended;
                    }
                }
                Err(_) => stdin_open = false,
                Ok(Keys::Typed(keys, detached)) => {
                    if write_all(master, keys).is_err() {
                        return RelayEnd::Ended;
                    }
                    if detached {
                        return RelayEnd::Detached;
                    }
                }
            }
        }
        if d && !m {
            // The session ended and the master had nothing this round: what
            // is left is read without waiting, then the relay ends.
            drain(master, stdout.as_fd(), &mut buf);
            return RelayEnd::Ended;
        }
    }
}

/// Copies what the master holds now, without blocking.
fn drain(master: BorrowedFd<'_>, out: BorrowedFd<'_>, buf: &mut [u8]) {
    loop {
        let mut p = [PollFd::new(master, PollFlags::POLLIN)];
        match nix::poll::poll(&mut p, PollTimeout::ZERO) {
            Ok(1) => {}
            _ => return,
        }
        match nix::unistd::read(master, buf) {
            Ok(n) if n > 0 => {
                if write_all(out, &buf[..n]).is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DetachKeys;

    #[test]
    fn ctrl_p_ctrl_q_detaches_and_a_lone_ctrl_p_is_passed_on() {
        let mut k = DetachKeys::new(super::CTRL_P_CTRL_Q);
        let mut out = Vec::new();
        assert!(!k.feed(b"ab", &mut out));
        assert_eq!(out, b"ab");
        out.clear();
        // The keys before the sequence are kept; what follows is dropped.
        assert!(k.feed(b"x\x10\x11y", &mut out));
        assert_eq!(out, b"x");
        out.clear();
        let mut k = DetachKeys::new(super::CTRL_P_CTRL_Q);
        assert!(!k.feed(b"\x10a\x10\x10", &mut out));
        assert_eq!(out, b"\x10a\x10");
        assert!(k.feed(b"\x11", &mut out));
        assert_eq!(out, b"\x10a\x10");
    }

    #[test]
    fn detach_keys_hold_back_a_prefix_and_complete() {
        let mut k = DetachKeys::new(&[0x10, 0x11]);
        let mut out = Vec::new();
        assert!(!k.feed(b"ab\x10", &mut out));
        assert_eq!(out, b"ab");
        assert!(!k.feed(b"c", &mut out));
        assert_eq!(out, b"ab\x10c");
        out.clear();
        assert!(!k.feed(b"\x10\x10", &mut out));
        assert_eq!(out, b"\x10");
        assert!(k.feed(b"\x11", &mut out));
    }
}
