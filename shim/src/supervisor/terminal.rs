//! The task's own stdin and terminal, on the supervisor's side
//! (docs/architecture.md, "The task's terminal and stdin").
//!
//! * With a terminal (`tty`): a pseudo-terminal made before the clone. The
//!   child takes the slave as fds 0-2 and as its controlling terminal; the
//!   supervisor keeps the master. What the task writes is read from the
//!   master whenever it is readable, written to `stdout.log` and queued
//!   for the attached client. What the client sends goes to the master
//!   (typed keys: the line discipline turns `^C` into SIGINT for the
//!   foreground process group).
//! * With a piped stdin and no terminal: a pipe; the child's fd 0 is its
//!   read end, the supervisor holds the write end. The client's bytes go
//!   to it, and the client's end-of-file closes it.
//!
//! Never block the task: the master is drained whatever the client does. A
//! client that reads slower than the task writes loses the oldest of what
//! it has not read beyond [`CLIENT_QUEUE`] bytes; the log has all of it.
//! While nobody is attached the last [`REPLAY`] bytes are kept and sent to
//! the next client first (the prompt a shell printed before `run -t` could
//! attach, the screen of a detached task).

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nomad_shim::{Stdin, TaskSpec, WindowSize};

/// Output kept for a client that reads slowly; older bytes are dropped.
pub const CLIENT_QUEUE: usize = 1 << 20;
/// Output kept while nobody is attached, for the next client.
pub const REPLAY: usize = 64 << 10;
/// Input queued for the task before the client is read no further.
const INPUT_QUEUE: usize = 64 << 10;
/// One read from the master or the client.
const CHUNK: usize = 64 << 10;
/// The size of a terminal made without one (the VT100's).
const DEFAULT_SIZE: WindowSize = WindowSize { rows: 24, cols: 80 };

/// The task child's ends, made before the clone: fd 0 and, with a
/// terminal, fds 1 and 2 too.
pub struct ChildEnds {
    /// The slave of the terminal, or the stdin pipe's read end.
    pub fd: OwnedFd,
    /// `fd` is a terminal: fds 0-2, and the controlling terminal.
    pub tty: bool,
}

/// With a chroot, the task's `/dev/pts` is a devpts instance of its own,
/// where the terminal (the host's) has no name: `ttyname(3)` and `tty(1)`
/// would find none. The terminal is bound onto the task's `/dev/console`,
/// as runc binds its console there, where glibc's `ttyname` finds it by
/// device and inode. The bind is one more passed device of the task's
/// `/dev` (the device cgroup allows every pty, 136:*, anyway). Not when
/// the spec passes a `/dev/console` of its own.
pub fn console_for_chroot(spec: &mut TaskSpec, ends: &ChildEnds) -> nix::Result<()> {
    let console = std::path::Path::new("/dev/console");
    let taken = spec
        .isolation
        .devices
        .iter()
        .any(|d| d.task_path.as_deref().unwrap_or(&d.host_path) == console);
    if !ends.tty || !spec.isolation.chroot || taken {
        return Ok(());
    }
    // The slave's name in the host's devpts (/dev/pts/N).
    let host = nix::fcntl::readlink(format!("/proc/self/fd/{}", ends.fd.as_raw_fd()).as_str())?;
    spec.isolation.devices.push(nomad_shim::DeviceSpec {
        host_path: host.into(),
        task_path: Some(console.into()),
        access: "rw".into(),
    });
    Ok(())
}

/// The supervisor's ends and the attached client.
pub struct TaskStdio {
    /// The terminal's master (non-blocking), while the task holds the slave.
    master: Option<OwnedFd>,
    /// The master once it is done (EIO, or the drain deadline), no longer
    /// polled but kept open until the task's final state is durable: closing
    /// it hangs the terminal up, and the kernel would SIGHUP a task that
    /// closed its stdio but has not exited yet (pty(7); conmon keeps it too).
    spent_master: Option<OwnedFd>,
    /// Without a terminal: the stdin pipe's write end (non-blocking).
    stdin: Option<OwnedFd>,
    /// The client's bytes reach the task (a piped stdin); else they are
    /// read and dropped.
    input: bool,
    /// The one attached client (`attach_stdio`).
    client: Option<UnixStream>,
    /// The client sent end-of-file.
    client_eof: bool,
    /// A client sent end-of-file on a piped stdin: it closes once the
    /// queued input has reached the task.
    stdin_eof: bool,
    /// Output for the client (or kept for the next one).
    to_client: Vec<u8>,
    /// Input not yet taken by the task.
    to_task: Vec<u8>,
}

/// What a round of [`TaskStdio::on_ready`] read from the terminal: to be
/// logged as stdout.
pub type Output = Vec<u8>;

impl TaskStdio {
    /// Makes the pseudo-terminal or the stdin pipe the spec asks for;
    /// `None` when it asks for neither (stdin is `/dev/null`).
    pub fn open(spec: &TaskSpec) -> nix::Result<Option<(TaskStdio, ChildEnds)>> {
        let input = spec.stdin == Stdin::Piped;
        let mut stdio = TaskStdio {
            master: None,
            spent_master: None,
            stdin: None,
            input,
            client: None,
            client_eof: false,
            stdin_eof: false,
            to_client: Vec::new(),
            to_task: Vec::new(),
        };
        if spec.tty {
            let size = spec.tty_size.unwrap_or(DEFAULT_SIZE);
            let ws = nix::pty::Winsize {
                ws_row: size.rows,
                ws_col: size.cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // openpty(3) opens both ends with O_NOCTTY: the supervisor, a
            // session leader, must not take the terminal as its own.
            let pty = nix::pty::openpty(&ws, None)?;
            for fd in [&pty.master, &pty.slave] {
                fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
            }
            fcntl(pty.master.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            // The terminal is the task's user's, as a login's is (and as
            // runc and Docker give it): `mesg`, `script`, a reopen of
            // /dev/console work as that user. Its mode stays the one the
            // host's devpts gave it (devpts(5) `mode=`).
            if let Some(uid) = spec.isolation.uid {
                let gid = spec.isolation.gid.map(nix::unistd::Gid::from_raw);
                nix::unistd::fchown(&pty.slave, Some(nix::unistd::Uid::from_raw(uid)), gid)?;
            }
            stdio.master = Some(pty.master);
            return Ok(Some((
                stdio,
                ChildEnds {
                    fd: pty.slave,
                    tty: true,
                },
            )));
        }
        if !input {
            return Ok(None);
        }
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        fcntl(w.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        stdio.stdin = Some(w);
        Ok(Some((stdio, ChildEnds { fd: r, tty: false })))
    }

    /// The terminal is still open (the task, or something it left, holds
    /// the slave): the loop reads it before it may end.
    pub fn output_open(&self) -> bool {
        self.master.is_some()
    }

    /// True while a client is attached.
    pub fn attached(&self) -> bool {
        self.client.is_some()
    }

    /// Takes `stream` (the request's reply sent) as the attached client,
    /// with `early` (bytes it sent right after its request) as input.
    pub fn attach(&mut self, stream: UnixStream, early: &[u8]) {
        // fcntl(F_SETFL) on a valid socket cannot fail.
        let _ = stream.set_nonblocking(true);
        self.client = Some(stream);
        self.client_eof = false;
        self.take_input(early);
    }

    /// Sets the terminal's size (ENOTTY: the task has none).
    pub fn resize(&self, size: WindowSize) -> nix::Result<()> {
        match &self.master {
            Some(m) => nomad_shim::sys::set_winsize(m.as_fd(), size.rows, size.cols),
            None => Err(Errno::ENOTTY),
        }
    }

    /// The two descriptors to poll and for what: the master or the stdin
    /// pipe, and the client.
    pub fn poll_fds(&self) -> [(Option<BorrowedFd<'_>>, nix::poll::PollFlags); 2] {
        use nix::poll::PollFlags as P;
        let task = match (&self.master, &self.stdin) {
            (Some(m), _) => {
                let mut f = P::POLLIN;
                if !self.to_task.is_empty() {
                    f |= P::POLLOUT;
                }
                (Some(m.as_fd()), f)
            }
            (None, Some(w)) if !self.to_task.is_empty() => (Some(w.as_fd()), P::POLLOUT),
            _ => (None, P::empty()),
        };
        let client = match &self.client {
            Some(c) => {
                let mut f = P::empty();
                if !self.client_eof && self.to_task.len() < INPUT_QUEUE {
                    f |= P::POLLIN;
                }
                if !self.to_client.is_empty() {
                    f |= P::POLLOUT;
                }
                // POLLHUP is reported whatever is asked: a client gone.
                (Some(c.as_fd()), f)
            }
            None => (None, P::empty()),
        };
        [task, client]
    }

    /// Moves what is ready: terminal output to the client's queue (and
    /// returned, for the log), client input to the task. Never blocks.
    pub fn on_ready(
        &mut self,
        task: Option<nix::poll::PollFlags>,
        client: Option<nix::poll::PollFlags>,
    ) -> Output {
        use nix::poll::PollFlags as P;
        let mut out = Vec::new();
        if task.is_some_and(|r| !r.is_empty()) {
            out = self.read_output();
            self.write_input();
        }
        if let Some(r) = client.filter(|r| !r.is_empty()) {
            if r.intersects(P::POLLIN | P::POLLHUP | P::POLLERR) && !self.client_eof {
                self.read_client();
            }
            if r.intersects(P::POLLHUP | P::POLLERR) && self.client_eof {
                // Gone both ways (a detach): nothing more to send it.
                self.detach();
            }
        }
        self.write_client();
        out
    }

    /// Reads everything the master holds now. EIO: no process holds the
    /// slave any more (pty(7)); the terminal is done.
    pub fn read_output(&mut self) -> Output {
        let mut out = Vec::new();
        let Some(master) = &self.master else {
            return out;
        };
        let mut buf = vec![0u8; CHUNK];
        // Bounded per round, so that the rest of the loop is served too;
        // the master stays readable for the next round.
        for _ in 0..16 {
            match nix::unistd::read(master.as_fd(), &mut buf) {
                Ok(0) | Err(Errno::EIO) => {
                    self.spent_master = self.master.take();
                    break;
                }
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        self.queue_output(&out);
        out
    }

    fn queue_output(&mut self, bytes: &[u8]) {
        self.to_client.extend_from_slice(bytes);
        let cap = if self.client.is_some() {
            CLIENT_QUEUE
        } else {
            REPLAY
        };
        if self.to_client.len() > cap {
            let excess = self.to_client.len() - cap;
            self.to_client.drain(..excess);
        }
    }

    fn take_input(&mut self, bytes: &[u8]) {
        if self.input && (self.master.is_some() || self.stdin.is_some()) {
            self.to_task.extend_from_slice(bytes);
            self.write_input();
        }
    }

    fn read_client(&mut self) {
        let Some(client) = &self.client else { return };
        let mut buf = vec![0u8; CHUNK];
        match (&*client).read(&mut buf) {
            Ok(0) => {
                self.client_eof = true;
                // End of input: without a terminal the task's stdin closes
                // once what is queued has reached it.
                if self.stdin.is_some() {
                    self.stdin_eof = true;
                    if self.to_task.is_empty() {
                        self.stdin = None;
                    }
                }
            }
            Ok(n) => self.take_input(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(_) => self.detach(),
        }
    }

    fn write_input(&mut self) {
        let fd = match (&self.master, &self.stdin) {
            (Some(m), _) => m.as_fd(),
            (None, Some(w)) => w.as_fd(),
            _ => {
                self.to_task.clear();
                return;
            }
        };
        while !self.to_task.is_empty() {
            match nix::unistd::write(fd, &self.to_task) {
                Ok(n) => {
                    self.to_task.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                // EPIPE: the task closed its stdin (or ended); EIO: the
                // terminal is gone. Its input is dropped from here on.
                Err(_) => {
                    self.to_task.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.stdin_eof {
            self.stdin = None;
        }
    }

    /// Sends what is queued for the client, as much as its socket takes.
    pub fn write_client(&mut self) {
        let Some(client) = &self.client else { return };
        while !self.to_client.is_empty() {
            match (&*client).write(&self.to_client) {
                Ok(n) => {
                    self.to_client.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.detach();
                    return;
                }
            }
        }
    }

    /// The client is gone: what it did not read is kept for the next one
    /// (the last [`REPLAY`] bytes).
    fn detach(&mut self) {
        self.client = None;
        self.client_eof = false;
        if self.to_client.len() > REPLAY {
            let excess = self.to_client.len() - REPLAY;
            self.to_client.drain(..excess);
        }
    }

    /// The terminal is closed without reading more (the drain deadline).
    pub fn close_output(&mut self) {
        if let Some(master) = self.master.take() {
            self.spent_master = Some(master);
        }
    }

    /// The task's final state is durable: the client gets what is queued
    /// (blocking, a second at most), then end-of-file.
    pub fn finish(&mut self) {
        self.stdin = None;
        self.spent_master = None;
        if let Some(client) = self.client.take() {
            let _ = client.set_nonblocking(false);
            let _ = client.set_write_timeout(Some(std::time::Duration::from_secs(1)));
            let _ = (&client).write_all(&self.to_client);
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::PollFlags;

    fn drain_fd(fd: BorrowedFd<'_>) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    #[test]
    fn nothing_asked_is_dev_null() {
        assert!(TaskStdio::open(&TaskSpec::new("x")).unwrap().is_none());
    }

    #[test]
    fn a_piped_stdin_gets_the_clients_bytes_and_closes_at_its_eof() {
        let mut spec = TaskSpec::new("x");
        spec.stdin(Stdin::Piped);
        let (mut stdio, ends) = TaskStdio::open(&spec).unwrap().unwrap();
        assert!(!ends.tty);
        let (ours, theirs) = UnixStream::pair().unwrap();
        stdio.attach(theirs, b"early ");
        (&ours).write_all(b"abc").unwrap();
        ours.shutdown(std::net::Shutdown::Write).unwrap();
        for _ in 0..3 {
            stdio.on_ready(None, Some(PollFlags::POLLIN));
        }
        // EOF: the supervisor's write end is closed.
        assert_eq!(drain_fd(ends.fd.as_fd()), b"early abc");
        assert!(stdio.attached(), "half-closed: still attached");
    }

    #[test]
    fn terminal_output_is_logged_replayed_to_the_next_client_and_ends_at_eio() {
        let mut spec = TaskSpec::new("x");
        spec.tty(true).tty_size(WindowSize { rows: 5, cols: 7 });
        let (mut stdio, ends) = TaskStdio::open(&spec).unwrap().unwrap();
        assert!(ends.tty);
        assert_eq!(
            nomad_shim::sys::get_winsize(ends.fd.as_fd()).unwrap(),
            (5, 7)
        );
        stdio
            .resize(WindowSize {
                rows: 40,
                cols: 120,
            })
            .unwrap();
        assert_eq!(
            nomad_shim::sys::get_winsize(ends.fd.as_fd()).unwrap(),
            (40, 120)
        );
        nix::unistd::write(&ends.fd, b"hello\n").unwrap();
        // The line discipline's ONLCR: \n becomes \r\n.
        assert_eq!(stdio.read_output(), b"hello\r\n");
        // Nobody attached: kept (bounded) for the next client.
        let big = vec![b'x'; REPLAY + 100];
        stdio.queue_output(&big);
        let (ours, theirs) = UnixStream::pair().unwrap();
        stdio.attach(theirs, b"");
        stdio.write_client();
        ours.set_nonblocking(true).unwrap();
        let mut got = vec![0u8; 2 * REPLAY];
        let n = (&ours).read(&mut got).unwrap();
        assert_eq!(n, REPLAY);
        // The slave closed (the task gone): EIO, the terminal is done.
        drop(ends);
        assert!(stdio.output_open());
        stdio.read_output();
        assert!(!stdio.output_open());
    }
}
