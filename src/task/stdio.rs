//! A task's own stdin and terminal, from the client's side:
//! [`Task::attach_stdio`] and [`Task::resize`] (docs/protocol.md,
//! `attach_stdio` and `resize`).

use std::os::unix::net::UnixStream;

use crate::error::{Error, Result};
use crate::protocol::Request;
use crate::stdio::WindowSize;

use super::Task;

impl Task {
    /// Attaches to the task's own stdin and terminal (a task started with
    /// [`Stdin::Piped`](crate::Stdin::Piped) or [`TaskSpec::tty`](crate::TaskSpec::tty)).
    ///
    /// The returned stream (blocking, no timeouts) carries raw bytes: what
    /// is written to it is the task's input (its stdin pipe, or keys typed
    /// into its terminal); with a terminal, what is read from it is the
    /// terminal's output, beginning with what it wrote while nobody was
    /// attached (the last 64 KiB). Without a terminal nothing is read but
    /// end-of-file: the output is in the log files, followed with
    /// [`Task::attach`]. `shutdown(Write)` on the stream closes the task's
    /// stdin pipe (with a terminal: only detaches, send `^D` to end input).
    /// Dropping the stream detaches; the task runs on. The stream reaches
    /// end-of-file once the task has ended and its final state is durable.
    ///
    /// One client at a time: while one is attached another gets
    /// [`Error::Refused`] with [`ErrorCode::Busy`](crate::ErrorCode::Busy);
    /// a task with neither gets [`ErrorCode::BadRequest`](crate::ErrorCode::BadRequest);
    /// an ended task [`Error::NotRunning`].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), nomad_shim::Error> {
    /// use std::io::{Read, Write};
    /// use nomad_shim::{Executor, Stdin, TaskSpec};
    ///
    /// let mut spec = TaskSpec::new("/usr/bin/wc");
    /// spec.arg("-l").stdin(Stdin::Piped);
    /// let mut task = Executor::new()?.start(&spec)?;
    /// let mut stdin = task.attach_stdio()?;
    /// stdin.write_all(b"a\nb\n").unwrap();
    /// stdin.shutdown(std::net::Shutdown::Write).unwrap(); // EOF for wc
    /// assert_eq!(task.wait()?.code(), Some(0)); // "2" is in stdout.log
    /// # Ok(())
    /// # }
    /// ```
    pub fn attach_stdio(&self) -> Result<UnixStream> {
        let (_, stream) = self.exchange(&Request::AttachStdio, "attach_stdio")?;
        let io = |source| Error::Io {
            op: "attach to the stdio of",
            what: self.id().to_string(),
            source,
        };
        stream.set_read_timeout(None).map_err(io)?;
        stream.set_write_timeout(None).map_err(io)?;
        Ok(stream)
    }

    /// Sets the size of the task's terminal; the kernel sends `SIGWINCH` to
    /// its foreground process group. [`ErrorCode::BadRequest`](crate::ErrorCode::BadRequest)
    /// for a task without a terminal.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), nomad_shim::Error> {
    /// use nomad_shim::{Executor, WindowSize};
    ///
    /// let task = Executor::new()?.open("shell")?;
    /// task.resize(WindowSize { rows: 50, cols: 132 })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn resize(&self, size: WindowSize) -> Result<()> {
        self.request(
            &Request::Resize {
                rows: size.rows,
                cols: size.cols,
            },
            "resize",
        )
        .map(drop)
    }
}
