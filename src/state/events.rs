//! Notable events of a task's life, kept in `state.json` (`events`) for an
//! operator: the OOM killer, clean-up that failed, state writes retried,
//! output dropped, a leftover cgroup killed, a task found lost.
//!
//! Why in `state.json` and not a file beside it: the state file is already
//! written atomically and durably at the moments that matter (start, exit,
//! lost), already read by `inspect` and `jq`, already size-checked and
//! symlink-safe on read; a second file would need its own rotation, its own
//! fsync discipline and its own reader, and could disagree with the state.
//! The list is bounded ([`MAX_EVENTS`], each message at most
//! [`MAX_MESSAGE`] bytes, about 40 KiB in all) so the state file stays far
//! below [`super::MAX_FILE_SIZE`] and within the 64 KiB the supervisor
//! reserves for its final write.

use serde::{Deserialize, Serialize};

/// Most events kept; when full, the oldest is dropped.
pub const MAX_EVENTS: usize = 32;

/// Longest message kept, in bytes (cut at a character boundary).
pub const MAX_MESSAGE: usize = 1024;

/// The `kind`s this library and its supervisor record. A reader must accept
/// kinds it does not know: newer versions may add some.
pub mod kind {
    /// The kernel's OOM killer killed a process of the task.
    pub const OOM_KILL: &str = "oom_kill";
    /// The task's cgroup could not be killed or removed.
    pub const CGROUP_CLEANUP_FAILED: &str = "cgroup_cleanup_failed";
    /// A cgroup left at the task's path by an earlier task of this root
    /// was killed and removed before the task's own was made.
    pub const LEFTOVER_CGROUP_KILLED: &str = "leftover_cgroup_killed";
    /// Writing `state.json` failed and is being retried.
    pub const STATE_WRITE_RETRY: &str = "state_write_retry";
    /// Writing `state.json` failed for good (recorded by a later write that
    /// succeeded, when there is one).
    pub const STATE_WRITE_FAILED: &str = "state_write_failed";
    /// Output of the task could not be written to its log and was dropped.
    pub const LOG_DROPPED: &str = "log_dropped";
    /// The task's `secrets/` tmpfs could not be unmounted.
    pub const SECRETS_UNMOUNT_FAILED: &str = "secrets_unmount_failed";
    /// The supervisor died before recording the exit: the task is `lost`.
    pub const LOST: &str = "lost";
    /// Any other warning.
    pub const WARNING: &str = "warning";
}

/// One entry of `events` in `state.json`.
///
/// ```
/// use nomad_shim::Event;
///
/// let e: Event = serde_json::from_str(
///     r#"{"time":"2026-11-27T21:00:01.000000Z","kind":"oom_kill","message":"the OOM killer killed 1 process"}"#,
/// )
/// .unwrap();
/// assert_eq!(e.kind, "oom_kill");
/// assert_eq!(e.time.to_string(), "2026-11-27T21:00:01.000000Z");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened (RFC 3339, UTC, microseconds on disk).
    pub time: super::Timestamp,
    /// What happened: one of [`kind`] (or a kind a newer version added).
    pub kind: String,
    /// What an operator should read: what failed, where, and the error.
    pub message: String,
}

impl Event {
    /// An event of `kind` now, its message cut to [`MAX_MESSAGE`] bytes.
    pub fn now(kind: &str, message: impl Into<String>) -> Event {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Event {
            time: super::Timestamp::now(),
            kind: kind.to_owned(),
            message,
        }
    }
}

/// Appends `event` to `events`, dropping the oldest beyond [`MAX_EVENTS`].
pub fn push(events: &mut Vec<Event>, event: Event) {
    events.push(event);
    if events.len() > MAX_EVENTS {
        let extra = events.len() - MAX_EVENTS;
        events.drain(..extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_oldest_dropped() {
        let mut events = Vec::new();
        for i in 0..MAX_EVENTS + 5 {
            push(&mut events, Event::now(kind::WARNING, format!("{i}")));
        }
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(events[0].message, "5");
        assert_eq!(
            events[MAX_EVENTS - 1].message,
            format!("{}", MAX_EVENTS + 4)
        );
    }

    /// A file of a version before `events` parses (empty list, and the
    /// field is not written back); a kind this version does not know parses
    /// too, and round-trips unchanged.
    #[test]
    fn state_files_with_and_without_events_parse() {
        let id = crate::state::TaskId::new("web.1").unwrap();
        let path = std::path::Path::new("state.json");
        let old = br#"{"version":1,"id":"web.1","status":"starting","supervisor":null,
            "task":null,"boot_id":"b","cgroup":null,"created_at":"2026-11-27T21:00:00.123456Z",
            "started_at":null,"finished_at":null,"exit":null}"#;
        let state = crate::state::TaskState::parse(old, path, &id).unwrap();
        assert!(state.events.is_empty());
        assert!(!serde_json::to_string(&state).unwrap().contains("events"));

        let newer = String::from_utf8_lossy(old).replace(
            r#""exit":null}"#,
            r#""exit":null,"events":[{"time":"2026-11-27T21:00:01Z","kind":"from_the_future","message":"m"}]}"#,
        );
        let state = crate::state::TaskState::parse(newer.as_bytes(), path, &id).unwrap();
        assert_eq!(state.events[0].kind, "from_the_future");
        let again = serde_json::to_string(&state).unwrap();
        assert!(again.contains(r#""kind":"from_the_future""#), "{again}");
    }

    #[test]
    fn long_message_cut_at_a_char_boundary() {
        let e = Event::now(kind::WARNING, "é".repeat(MAX_MESSAGE));
        assert!(e.message.len() <= MAX_MESSAGE);
        assert!(e.message.len() >= MAX_MESSAGE - 1);
        assert!(e.time.to_string().ends_with('Z'));
    }
}
