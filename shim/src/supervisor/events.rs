//! What the supervisor records for an operator: the library's warnings
//! (through the `log` facade) and the supervisor's own notable events, kept
//! in `state.json`'s `events` (see `nomad_shim::state::events`).
//!
//! The supervisor has no terminal and no log file of its own: its stderr is
//! `/dev/null`. So it installs a `log::Log` that keeps every warning the
//! library emits in its process (a leftover cgroup killed, a rollback that
//! failed) in memory; the supervisor moves them into the state before each
//! write. The process is single-threaded: the mutex is never contended, and
//! never held across the fork of the task child.

use std::sync::Mutex;

use nomad_shim::state::events::{kind, Event, MAX_EVENTS};

/// Warnings logged by the library, not yet moved into the state.
static PENDING: Mutex<Vec<Event>> = Mutex::new(Vec::new());

struct EventLog;

impl log::Log for EventLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let kind = if record.target() == nomad_shim::cgroup::LEFTOVER_TARGET {
            kind::LEFTOVER_CGROUP_KILLED
        } else {
            kind::WARNING
        };
        let event = Event::now(kind, record.args().to_string());
        if let Ok(mut pending) = PENDING.lock() {
            nomad_shim::state::events::push(&mut pending, event);
            debug_assert!(pending.len() <= MAX_EVENTS);
        }
    }

    fn flush(&self) {}
}

static LOGGER: EventLog = EventLog;

/// Installs the recorder as the process's logger (warnings and errors only).
pub fn install() {
    // Fails only if a logger is already set, which in this process (a fresh
    // fork of the CLI or of `__supervise`) none is.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// Takes the warnings logged since the last call.
pub fn take() -> Vec<Event> {
    PENDING
        .lock()
        .map(|mut p| std::mem::take(&mut *p))
        .unwrap_or_default()
}

/// Moves the pending warnings into `state.events`.
pub fn flush_into(state: &mut nomad_shim::TaskState) {
    for e in take() {
        nomad_shim::state::events::push(&mut state.events, e);
    }
}

/// One line in the kernel log (`dmesg`, the journal), for what cannot be
/// recorded in the state because writing the state is what failed:
/// `nomad-shim[PID]: task ID: MESSAGE` at priority 4 (warning). Best effort:
/// without `/dev/kmsg` (a container) there is nowhere left.
pub fn to_kernel_log(id: &str, message: &str) {
    use std::io::Write;
    let line = format!(
        "<4>nomad-shim[{}]: task {id}: {message}\n",
        std::process::id()
    );
    if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        // A record is at most about 1 KiB; a longer one is cut by the kernel.
        let _ = kmsg.write_all(line.as_bytes());
    }
}
