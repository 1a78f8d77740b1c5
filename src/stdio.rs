//! A task's own standard input and terminal: [`Stdin`] and [`WindowSize`],
//! the parts of [`TaskSpec`](crate::TaskSpec) that say what fd 0 is and
//! whether fds 0-2 are a pseudo-terminal (docs/architecture.md, "The task's
//! terminal and stdin").

use serde::{Deserialize, Serialize};

/// What the task reads on its standard input.
///
/// * [`Stdin::Null`] (the default): `/dev/null`. A task whose stdin nobody
///   holds reads end-of-file at once; it never blocks on it.
/// * [`Stdin::Piped`]: the supervisor holds the other end. A client that
///   attaches with [`Task::attach_stdio`](crate::Task::attach_stdio) writes
///   to it; shutting down its writing half (end-of-file) closes the task's
///   stdin. With [`TaskSpec::tty`](crate::TaskSpec::tty) the bytes go to
///   the terminal instead, as typed keys.
///
/// ```
/// use nomad_shim::{Stdin, TaskSpec};
///
/// let mut spec = TaskSpec::new("/usr/bin/wc");
/// spec.arg("-l").stdin(Stdin::Piped);
/// assert_eq!(spec.stdin, Stdin::Piped);
/// // In spec.json and state.json: "stdin": "piped" (absent when null).
/// assert_eq!(serde_json::to_string(&Stdin::Piped).unwrap(), r#""piped""#);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stdin {
    /// `/dev/null`: reads end-of-file.
    #[default]
    Null,
    /// A pipe (or, with a terminal, the terminal's input) whose writing end
    /// the supervisor holds for an attached client.
    Piped,
}

impl Stdin {
    /// True for [`Stdin::Null`] (serde skips the default).
    pub fn is_null(&self) -> bool {
        *self == Stdin::Null
    }
}

/// The size of a task's terminal, in characters: set when the terminal is
/// made ([`TaskSpec::tty_size`](crate::TaskSpec::tty_size)) and changed with
/// [`Task::resize`](crate::Task::resize), which makes the kernel send
/// `SIGWINCH` to the terminal's foreground process group (`TIOCSWINSZ`,
/// tty_ioctl(4)).
///
/// ```
/// use nomad_shim::{TaskSpec, WindowSize};
///
/// let mut spec = TaskSpec::new("/bin/sh");
/// spec.tty(true).tty_size(WindowSize { rows: 30, cols: 100 });
/// assert_eq!(spec.tty_size, Some(WindowSize { rows: 30, cols: 100 }));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WindowSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}
