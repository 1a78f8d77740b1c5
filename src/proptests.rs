//! Property tests (issue 9, point 4) of the library's readers of untrusted
//! input: the state-file reader and its validation, the id validator, the
//! `/proc/<pid>/stat` parser, the control-socket request parser, and the
//! small parsers of cgroup and mount files.
//!
//! `proptest` generates the cases (stable Rust, no fuzzing engine needed):
//! each property runs a bounded number of cases, by default the count set
//! below (`PROPTEST_CASES` raises it for a longer local run), and a failure
//! is shrunk to a minimal input and printed with the seed to replay it.
//! Properties: every parser returns (never panics) on any input; a state
//! written then read is the same state; an accepted id is one path
//! component that stays inside the root.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use crate::cgroup::{CgroupPaths, Limit, ResourceUpdate};
use crate::identity::Identity;
use crate::protocol::{parse_request, ErrorCode, Request, RequestLine, OPS};
use crate::state::{Event, ExitRecord, Root, Status, TaskId, TaskState, Timestamp};

/// Cases per property: cheap in-memory properties, and those that write
/// files.
pub(crate) fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        ..ProptestConfig::default()
    }
}

/// Any string, with the characters an id, a path or JSON cares about made
/// frequent.
fn nasty_string(max: usize) -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        4 => prop::sample::select(vec![
            'a', 'Z', '0', '9', '.', '-', '_', '/', '\0', '\n', ' ', '(', ')', '"', '\\', '{', '}',
        ]),
        1 => any::<char>(),
    ];
    prop::collection::vec(chars, 0..max).prop_map(|v| v.into_iter().collect())
}

fn valid_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,127}".prop_filter("no ..", |s| !s.contains(".."))
}

/// The documented rule, written again independently of `state::id`.
fn rule_accepts(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
        && !id.contains("..")
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn an_id_is_accepted_exactly_by_the_rule_and_stays_inside_the_root(
        id in prop_oneof![valid_id(), nasty_string(140)],
    ) {
        let root = Root::new("/run/nomad-shim-prop");
        match TaskId::new(id.clone()) {
            Ok(t) => {
                prop_assert!(rule_accepts(&id), "accepted {id:?}");
                prop_assert_eq!(t.as_str(), id.as_str());
                // One normal component: the task's directory is a child of
                // the root, whatever the id.
                let comps: Vec<_> = Path::new(t.as_str()).components().collect();
                prop_assert_eq!(comps.len(), 1);
                prop_assert!(matches!(comps[0], Component::Normal(_)));
                let p = root.task_path(&t);
                prop_assert_eq!(p.parent(), Some(root.path()));
                prop_assert!(p.starts_with(root.path()));
                // The same check on the way in from JSON (state.json's "id").
                let back: TaskId = serde_json::from_str(&serde_json::to_string(&id).unwrap()).unwrap();
                prop_assert_eq!(back, t);
            }
            Err(_) => {
                prop_assert!(!rule_accepts(&id), "refused {id:?}");
                prop_assert!(serde_json::from_str::<TaskId>(&serde_json::to_string(&id).unwrap()).is_err());
            }
        }
    }
}

// ---- /proc/<pid>/stat

/// A `/proc/<pid>/stat` line with `comm` as the command name and
/// `start_time` as field 22.
fn stat_line(pid: i32, comm: &[u8], state: char, start_time: u64) -> Vec<u8> {
    let mut line = format!("{pid} (").into_bytes();
    line.extend_from_slice(comm);
    line.extend_from_slice(format!(") {state} 1 {pid} {pid} 0 -1 4194560").as_bytes());
    // Fields 10-21, then 22 (starttime), then the rest.
    for f in 10..=21 {
        line.extend_from_slice(format!(" {f}").as_bytes());
    }
    line.extend_from_slice(format!(" {start_time} 9437184 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n").as_bytes());
    line
}

proptest! {
    #![proptest_config(config(2000))]

    /// The kernel cuts `comm` to 15 bytes but puts anything in it: spaces,
    /// `(`, `)`, digits, bytes that are not UTF-8.
    #[test]
    fn the_stat_parser_finds_field_22_whatever_the_command_name(
        comm in prop::collection::vec(
            prop_oneof![3 => prop::sample::select(b" ()0123456789 S".to_vec()), 1 => any::<u8>()],
            0..16,
        ),
        pid in 2..4_194_304i32,
        state in prop::sample::select(vec!['R', 'S', 'D', 'Z', 'T', 'X']),
        start_time in any::<u64>(),
    ) {
        // A newline in comm is shown as is; the parser reads one line only
        // in the sense that the fields follow the last ')'.
        let line = stat_line(pid, &comm, state, start_time);
        prop_assert_eq!(crate::identity::parse_start_time(&line), Some(start_time));
    }

    #[test]
    fn the_stat_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = crate::identity::parse_start_time(&bytes);
    }
}

// ---- state.json

fn timestamp() -> impl Strategy<Value = Timestamp> {
    // 0001..=9999 is what RFC 3339 can write; the epoch to 9999 here.
    (0u64..253_402_300_799_999_999)
        .prop_map(|us| Timestamp::from(UNIX_EPOCH + Duration::from_micros(us)))
}

fn identity() -> impl Strategy<Value = Identity> {
    // pid 0, 1 and our own are refused by the reader (tested below).
    let me = std::process::id() as i32;
    (2..=i32::MAX, any::<u64>())
        .prop_filter("not our pid", move |(p, _)| *p != me)
        .prop_map(|(pid, start_time)| Identity { pid, start_time })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", nasty_string(40)]
}

fn path() -> impl Strategy<Value = PathBuf> {
    "(/[a-z0-9 ._-]{1,12}){1,5}".prop_map(PathBuf::from)
}

fn cgroup_paths() -> impl Strategy<Value = CgroupPaths> {
    prop_oneof![
        path().prop_map(CgroupPaths::V2),
        prop::collection::btree_map("[a-z_,]{1,16}", path(), 1..6).prop_map(CgroupPaths::V1),
    ]
}

fn exit_record() -> impl Strategy<Value = ExitRecord> {
    (
        prop_oneof![
            any::<i32>().prop_map(|c| (Some(c), None)),
            (1..65i32).prop_map(|s| (None, Some(s))),
            Just((None, None)),
        ],
        (any::<Option<bool>>(), any::<Option<bool>>()),
        (
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
        ),
        prop::option::of(text()),
    )
        .prop_map(
            |((code, signal), (core_dumped, oom_killed), (u, s, rss), error)| ExitRecord {
                code,
                signal,
                core_dumped,
                oom_killed,
                user_cpu_ns: u,
                system_cpu_ns: s,
                max_rss_kib: rss,
                error,
            },
        )
}

prop_compose! {
    fn event()(time in timestamp(), kind in "[a-z_]{1,24}", message in text()) -> Event {
        Event { time, kind, message }
    }
}

/// A state the supervisor could write: its status agrees with its exit
/// record and pids.
fn task_state() -> impl Strategy<Value = TaskState> {
    (
        valid_id(),
        prop::sample::select(vec![
            Status::Starting,
            Status::Running,
            Status::Exited,
            Status::Lost,
        ]),
        (prop::option::of(identity()), prop::option::of(identity())),
        text(),
        prop::option::of(cgroup_paths()),
        (
            timestamp(),
            prop::option::of(timestamp()),
            prop::option::of(timestamp()),
        ),
        exit_record(),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(event(), 0..4),
    )
        .prop_map(
            |(
                id,
                status,
                (sup, task),
                boot_id,
                cgroup,
                (created_at, started_at, finished_at),
                exit,
                warnings,
                events,
            )| {
                let (supervisor, task) = match status {
                    Status::Running => (
                        Some(sup.unwrap_or(Identity {
                            pid: 2,
                            start_time: 0,
                        })),
                        Some(task.unwrap_or(Identity {
                            pid: 3,
                            start_time: 0,
                        })),
                    ),
                    _ => (sup, task),
                };
                let n = id.len();
                TaskState {
                    version: 1,
                    id: TaskId::new(id).unwrap(),
                    status,
                    supervisor,
                    task,
                    boot_id,
                    cgroup,
                    created_at,
                    started_at,
                    finished_at,
                    exit: matches!(status, Status::Exited | Status::Lost).then_some(exit),
                    warnings,
                    events,
                    // Both ways of each, chosen by the (random) id.
                    stdin: if n % 2 == 0 {
                        crate::Stdin::Piped
                    } else {
                        crate::Stdin::Null
                    },
                    tty: n % 3 == 0,
                    log_bytes_dropped: (n as u64 % 4) * 4096,
                    execs: Vec::new(),
                }
            },
        )
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn a_state_parses_back_to_itself(state in task_state()) {
        let bytes = serde_json::to_vec_pretty(&state).unwrap();
        let back = TaskState::parse(&bytes, Path::new("state.json"), &state.id);
        prop_assert_eq!(back.as_ref().ok(), Some(&state), "{:?}", back.as_ref().err());
    }

    /// Any byte string, and any cut or flipped byte of a good file, is a
    /// typed error or a state that passed validation: never a panic.
    #[test]
    fn the_state_reader_never_panics_on_a_damaged_file(
        state in task_state(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        junk in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let good = serde_json::to_vec(&state).unwrap();
        let mut bad = good[..cut.index(good.len() + 1)].to_vec();
        for (at, b) in &flips {
            if !bad.is_empty() {
                let i = at.index(bad.len());
                bad[i] = *b;
            }
        }
        for bytes in [&bad, &junk] {
            if let Ok(s) = TaskState::parse(bytes, Path::new("state.json"), &state.id) {
                // What passes is consistent, as the reader promises.
                prop_assert_eq!(&s.id, &state.id);
                prop_assert_eq!(s.exit.is_some(), matches!(s.status, Status::Exited | Status::Lost));
                for ident in [s.supervisor, s.task].into_iter().flatten() {
                    prop_assert!(ident.pid > 1 && ident.pid != std::process::id() as i32);
                }
            }
        }
    }

    /// A state naming another id, pid 0 or 1, or this process, is refused.
    #[test]
    fn a_state_that_lies_is_refused(state in task_state(), other in valid_id(), pid in prop::sample::select(vec![0, 1, -5, std::process::id() as i32])) {
        let other = TaskId::new(other).unwrap();
        if other != state.id {
            let bytes = serde_json::to_vec(&state).unwrap();
            prop_assert!(TaskState::parse(&bytes, Path::new("state.json"), &other).is_err());
        }
        let mut bad = state.clone();
        bad.task = Some(Identity { pid, start_time: 1 });
        let bytes = serde_json::to_vec(&bad).unwrap();
        prop_assert!(TaskState::parse(&bytes, Path::new("state.json"), &state.id).is_err());
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Through the files: write_state (atomic, with and without fsync), then
    /// read_state of a freshly opened directory.
    #[test]
    fn a_state_written_to_its_directory_reads_back_the_same(state in task_state(), durable in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::new(tmp.path().join("root"));
        let dir = root.create_task_dir(&state.id).unwrap();
        dir.write_state(&state, durable).unwrap();
        let again = root.open_task_dir(&state.id).unwrap();
        prop_assert_eq!(again.read_state().unwrap(), state.clone());
        // Written twice (the old content replaced): still the new one.
        let mut next = state.clone();
        next.warnings.push("second write".into());
        again.write_state(&next, durable).unwrap();
        prop_assert_eq!(root.open_task_dir(&state.id).unwrap().read_state().unwrap(), next);
        prop_assert_eq!(root.task_ids().unwrap(), vec![state.id.clone()]);
    }
}

// ---- the control socket's request line

fn limit<T: std::fmt::Debug + Clone + 'static>(
    v: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Limit<T>> {
    prop_oneof![
        Just(Limit::Keep),
        Just(Limit::Remove),
        v.prop_map(Limit::Set)
    ]
    .boxed()
}

fn request() -> impl Strategy<Value = Request> {
    let update = (
        (
            limit(any::<u64>()),
            limit(any::<u64>()),
            limit(any::<u64>()),
            limit(any::<u64>()),
        ),
        (
            limit((1u32..100_000).prop_map(|c| f64::from(c) / 100.0)),
            limit("[0-9,-]{1,8}"),
            limit("[0-9,-]{1,8}"),
        ),
        (limit(any::<u64>()), limit(1u16..=10000)),
    )
        .prop_map(
            |(
                (memory_max, memory_reservation, memory_swap, cpu_shares),
                (cpus, cpuset_cpus, cpuset_mems),
                (pids_max, io_weight),
            )| {
                ResourceUpdate {
                    memory_max,
                    memory_reservation,
                    memory_swap,
                    cpu_shares,
                    cpus,
                    cpuset_cpus,
                    cpuset_mems,
                    pids_max,
                    io_weight,
                }
            },
        );
    prop_oneof![
        Just(Request::State),
        any::<i32>().prop_map(|signal| Request::Signal { signal }),
        (any::<Option<i32>>(), any::<Option<u64>>())
            .prop_map(|(signal, timeout_ms)| Request::Shutdown { signal, timeout_ms }),
        Just(Request::Stats),
        Just(Request::Attach),
        update.prop_map(|resources| Request::Update { resources }),
    ]
}

/// A JSON value of some depth, for objects the parser has never seen.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            prop::sample::select(OPS.to_vec()).prop_map(str::to_owned),
            text()
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "op",
                        "version",
                        "signal",
                        "timeout_ms",
                        "resources",
                        "memory_max",
                        "cpus"
                    ])
                    .prop_map(str::to_owned),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..6,
            )
            .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn a_request_line_parses_back_to_itself(req in request(), version in 1u32..5) {
        let line = RequestLine { version, request: req };
        let bytes = serde_json::to_vec(&line).unwrap();
        prop_assert_eq!(parse_request(&bytes).map_err(|e| e.message), Ok(line));
    }

    #[test]
    fn the_request_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_request(&bytes);
    }

    /// Any JSON object: a request, or `bad_request`, or `unsupported`
    /// exactly for an op that is a string not in [`OPS`] (with a valid
    /// `version`, or none).
    #[test]
    fn any_json_is_a_request_or_the_right_error_code(v in json(), op in prop::option::of(prop_oneof![prop::sample::select(OPS.to_vec()).prop_map(str::to_owned), text()])) {
        let mut v = v;
        if let (Some(op), serde_json::Value::Object(m)) = (&op, &mut v) {
            m.insert("op".into(), serde_json::Value::String(op.clone()));
        }
        let bytes = serde_json::to_vec(&v).unwrap();
        match parse_request(&bytes) {
            Ok(_) => {}
            Err(e) => {
                let unknown_op = matches!(v.get("op"), Some(serde_json::Value::String(op)) if !OPS.contains(&op.as_str()));
                // A version that is not a u32 makes the line malformed
                // before its op is looked at.
                let good_version = v.get("version").is_none_or(|n| n.as_u64().is_some_and(|n| n <= u32::MAX as u64));
                match e.code {
                    ErrorCode::Unsupported => prop_assert!(unknown_op, "{}", e.message),
                    ErrorCode::BadRequest => prop_assert!(!(unknown_op && good_version), "{}", e.message),
                    other => prop_assert!(false, "code {other:?}: {}", e.message),
                }
            }
        }
    }
}
