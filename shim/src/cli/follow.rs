//! `run` and `logs`: copying a task's log files to this process's stdout
//! and stderr, following them until the supervisor exits.
//!
//! Following sleeps in one `poll(2)` over the task's control socket, attached
//! (a nudge when the files grew; EOF at the end), and, for `run`, a
//! signal-hook self-pipe per signal (Ctrl-C, passed on to the task).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nomad_shim::state::names;
use nomad_shim::{Error, Executor, Task};

use super::attach::StdinPump;
use super::{exit_code, task_opts::TaskOpts};

/// `run`: start, copy the output while it runs, exit with the task's code.
/// With `rm`, the task is removed at its end: by this process once it has
/// read the exit, or by the supervisor if this process is gone by then
/// (launch.rs, `Release`).
pub fn run(executor: &Executor, opts: TaskOpts, rm: bool) -> Result<i32, Error> {
    let (mut task, mut release) = super::launch::start(executor, &opts.spec(), rm)?;
    super::print_warnings(&task);
    let id = task.id().to_string();
    if opts.tty {
        // The task's terminal, relayed (attach.rs); None: detached from,
        // and the task goes on (with `rm`, its supervisor removes it at its
        // end).
        let code = super::attach::run_terminal(&mut task, opts.interactive)?;
        if let (Some(_), Some(release)) = (code, release) {
            release.finish(executor, &id)?;
        }
        return Ok(code.unwrap_or(0));
    }
    let mut pump = match opts.interactive {
        true => match task.attach_stdio() {
            Ok(stream) => Some(StdinPump::new(stream)),
            // Over already: nothing to send it.
            Err(Error::NotRunning { .. }) => None,
            Err(e) => return Err(e),
        },
        false => None,
    };
    // Ctrl-C and friends go to the task, not to us: the task decides.
    // signal-hook's self-pipe writes one constant byte per signal, so each
    // signal gets its own socket pair.
    let mut ids = Vec::new();
    let mut pipes = Vec::new();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let (r, w) = UnixStream::pair().map_err(|e| io_err("create signal pipe", e))?;
        r.set_nonblocking(true)
            .map_err(|e| io_err("create signal pipe", e))?;
        ids.push(
            signal_hook::low_level::pipe::register(sig as i32, w)
                .map_err(|e| io_err("register signal handler", e))?,
        );
        pipes.push((sig, r));
    }
    let mut streams = vec![
        Stream::new(task.dir(), names::STDOUT, Sink::Stdout),
        Stream::new(task.dir(), names::STDERR, Sink::Stderr),
    ];
    follow(&task, &mut streams, &pipes, pump.as_mut())?;
    // The output has ended: the final state is durable, and this process
    // removes the task (with `rm`) once it has read it. Said now, while
    // the supervisor still removes the cgroup, so it need not wait for it.
    if let Some(release) = &mut release {
        release.commit();
    }
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    // The end of following means the final state is on disk: read it
    // rather than wait for the supervisor to remove the cgroup and exit.
    let exit = match task.try_wait()? {
        Some(exit) => exit,
        None => task.wait()?,
    };
    if let Some(release) = release {
        release.finish(executor, &id)?;
    }
    Ok(exit_code(&id, &exit))
}

/// `logs ID [--stderr] [--follow] [--tail N]`.
pub fn logs(
    executor: &Executor,
    id: &str,
    stderr: bool,
    follow_: bool,
    tail: Option<usize>,
) -> Result<i32, Error> {
    let task = executor.open(id)?;
    let name = if stderr { names::STDERR } else { names::STDOUT };
    let mut stream = Stream::new(task.dir(), name, Sink::Stdout);
    if let Some(n) = tail {
        stream.print_tail(n)?;
    }
    let mut streams = vec![stream];
    if follow_ {
        follow(&task, &mut streams, &[], None)?;
    } else {
        streams[0].copy_new()?;
    }
    Ok(0)
}

#[derive(Clone, Copy)]
enum Sink {
    Stdout,
    Stderr,
}

/// One log file being followed across rotations.
struct Stream {
    path: PathBuf,
    sink: Sink,
    file: Option<File>,
    /// The copy buffer, made at the first copy and kept: a fresh zeroed
    /// 64 KiB at every wake-up cost 16 page faults each time, on every
    /// `run`'s path.
    buf: Vec<u8>,
}

/// The size of a stream's copy buffer.
const COPY_BUF: usize = 16 * 1024;

impl Stream {
    fn new(dir: &Path, name: &str, sink: Sink) -> Stream {
        Stream {
            path: dir.join(name),
            sink,
            file: None,
            buf: Vec::new(),
        }
    }

    fn write(&self, bytes: &[u8]) -> Result<(), Error> {
        let r = match self.sink {
            Sink::Stdout => io::stdout()
                .lock()
                .write_all(bytes)
                .and_then(|()| io::stdout().flush()),
            Sink::Stderr => io::stderr().lock().write_all(bytes),
        };
        r.map_err(|e| io_err("write output", e))
    }

    /// Copies what is new since the last call: the rest of the file we had
    /// open, then (if it was rotated away) the new live file from its start.
    fn copy_new(&mut self) -> Result<(), Error> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(COPY_BUF, 0);
        let copied = self.copy_with(&mut buf);
        self.buf = buf;
        copied
    }

    fn copy_with(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        loop {
            if self.file.is_none() {
                match File::open(&self.path) {
                    Ok(f) => self.file = Some(f),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(io_err("open", e)),
                }
            }
            let mut file = self.file.take().expect("opened above");
            loop {
                let n = file.read(buf).map_err(|e| io_err("read log", e))?;
                if n == 0 {
                    break;
                }
                self.write(&buf[..n])?;
            }
            // Rotated: our file is now `.1`; the live one is a new inode.
            let ours = file.metadata().map(|m| m.ino()).ok();
            let live = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
            if live.is_some() && live != ours {
                continue;
            }
            self.file = Some(file);
            return Ok(());
        }
    }

    /// Prints the last `n` lines (of the live file and as many rotated ones
    /// as needed), leaving the live file open at its end.
    fn print_tail(&mut self, n: usize) -> Result<(), Error> {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut lines = 0;
        for k in 0.. {
            let path = if k == 0 {
                self.path.clone()
            } else {
                PathBuf::from(format!("{}.{k}", self.path.display()))
            };
            let Ok(mut f) = File::open(&path) else { break };
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)
                .map_err(|e| io_err("read log", e))?;
            lines += bytes.iter().filter(|&&b| b == b'\n').count();
            if k == 0 {
                self.file = Some(f);
            }
            chunks.push(bytes);
            if lines > n {
                break;
            }
        }
        let all: Vec<u8> = chunks.into_iter().rev().flatten().collect();
        let body = all.strip_suffix(b"\n").unwrap_or(&all);
        let start = if n == 0 {
            all.len()
        } else {
            body.iter()
                .enumerate()
                .rev()
                .filter(|(_, &b)| b == b'\n')
                .nth(n - 1)
                .map_or(0, |(i, _)| i + 1)
        };
        self.write(&all[start..])?;
        if self.file.is_none() {
            // No live file yet: follow from its start when it appears.
            return Ok(());
        }
        self.file
            .as_mut()
            .expect("set above")
            .seek(SeekFrom::End(0))
            .map_err(|e| io_err("seek log", e))?;
        Ok(())
    }
}

/// Copies new output until the task has ended; passes signals that arrive
/// on `signals` to the task.
///
/// The supervisor nudges an attached connection whenever the log files
/// grew, and closes it once the final state is durable; in between this
/// sleeps in `poll(2)`. (An inotify watch would do as well, but closing one
/// waits for an RCU grace period, some 12 ms here, on every `run`.)
/// `attach` to a task with a piped stdin and no terminal: its output from
/// now on, our stdin into its own.
pub fn follow_from_end(task: &Task, pump: &mut StdinPump) -> Result<(), Error> {
    let mut streams = vec![
        Stream::new(task.dir(), names::STDOUT, Sink::Stdout),
        Stream::new(task.dir(), names::STDERR, Sink::Stderr),
    ];
    for s in &mut streams {
        s.print_tail(0)?;
    }
    follow(task, &mut streams, &[], Some(pump))
}

fn follow(
    task: &Task,
    streams: &mut [Stream],
    signals: &[(Signal, UnixStream)],
    mut pump: Option<&mut StdinPump>,
) -> Result<(), Error> {
    let nudges = match task.attach() {
        Ok(s) => Some(s),
        // Already over: what the files hold is all there is.
        Err(Error::NotRunning { .. }) => None,
        Err(e) => return Err(e),
    };
    loop {
        for s in streams.iter_mut() {
            s.copy_new()?;
        }
        let Some(sock) = &nudges else { break };
        let mut fds = vec![PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        for (_, pipe) in signals {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
        }
        // Our stdin, last, while a pump (`-i`) has more of it to send.
        let stdin = io::stdin();
        if pump.as_ref().is_some_and(|p| p.active()) {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io_err("poll", e.into())),
        }
        let hit = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let nudged = hit(0);
        let signalled: Vec<bool> = (0..signals.len()).map(|i| hit(1 + i)).collect();
        let stdin_ready = hit(1 + signals.len());
        drop(fds);
        if stdin_ready {
            if let Some(p) = pump.as_mut() {
                p.on_ready()?;
            }
        }
        for ((sig, pipe), _) in signals.iter().zip(&signalled).filter(|(_, &hit)| hit) {
            let mut b = [0u8; 16];
            while matches!((&*pipe).read(&mut b), Ok(n) if n > 0) {}
            // Not running: the task has ended, which this loop sees next.
            // Anything else (a busy or broken supervisor) the operator who
            // pressed Ctrl-C must hear about.
            match task.signal(*sig) {
                Ok(()) | Err(nomad_shim::Error::NotRunning { .. }) => {}
                Err(e) => eprintln!("nomad-shim: forward {sig} to the task: {e}"),
            }
        }
        if nudged {
            let mut b = [0u8; 256];
            match (&*sock).read(&mut b) {
                // The task has ended and its output is drained: a last copy.
                Ok(0) => {
                    for s in streams.iter_mut() {
                        s.copy_new()?;
                    }
                    break;
                }
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_err("read from supervisor", e)),
            }
        }
    }
    Ok(())
}

fn io_err(op: &'static str, source: io::Error) -> Error {
    Error::Io {
        op,
        what: "output".into(),
        source,
    }
}
