use super::*;

fn sample(id: &str) -> TaskState {
    let mut s = TaskState::starting(
        TaskId::new(id).unwrap(),
        "3f0c0000-0000-0000-0000-000000000000",
    );
    s.status = Status::Exited;
    s.supervisor = Some(Identity {
        pid: 4100,
        start_time: 918273,
    });
    s.task = Some(Identity {
        pid: 4101,
        start_time: 918274,
    });
    s.exit = Some(ExitRecord {
        code: Some(3),
        signal: None,
        core_dumped: Some(false),
        oom_killed: Some(false),
        user_cpu_ns: Some(1),
        system_cpu_ns: Some(2),
        max_rss_kib: Some(3),
        error: None,
    });
    s
}

fn root() -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path().join("root"));
    (dir, root)
}

#[test]
fn state_round_trips_with_the_documented_field_names() {
    let (_t, root) = root();
    let id = TaskId::new("web.1").unwrap();
    let dir = root.create_task_dir(&id).unwrap();
    let s = sample("web.1");
    dir.write_state(&s, true).unwrap();
    assert_eq!(dir.read_state().unwrap(), s);
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    for key in [
        "version",
        "id",
        "status",
        "supervisor",
        "task",
        "boot_id",
        "cgroup",
        "created_at",
        "started_at",
        "finished_at",
        "exit",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["status"], "exited");
    assert_eq!(v["exit"]["code"], 3);
    assert_eq!(v["exit"]["signal"], serde_json::Value::Null);
    assert_eq!(v["supervisor"]["start_time"], 918273);
}

#[test]
fn lost_exit_has_null_code_and_signal_and_an_error() {
    let v = serde_json::to_value(ExitRecord::lost("supervisor died")).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"code": null, "signal": null, "error": "supervisor died"})
    );
    assert_eq!(ExitRecord::lost("x").shell_code(), None);
}

#[test]
fn an_existing_id_is_refused() {
    let (_t, root) = root();
    let id = TaskId::new("a").unwrap();
    root.create_task_dir(&id).unwrap();
    assert!(matches!(
        root.create_task_dir(&id),
        Err(StateError::Exists { .. })
    ));
}

fn write_raw(root: &Root, id: &str, bytes: &[u8]) -> TaskDir {
    let id = TaskId::new(id).unwrap();
    let dir = root.create_task_dir(&id).unwrap();
    fs::write(dir.path().join("state.json"), bytes).unwrap();
    dir
}

#[test]
fn malformed_state_files_are_typed_errors() {
    let (_t, root) = root();
    let good = serde_json::to_vec(&sample("t")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("nul", vec![0u8; 4096]),
    ];
    for (name, bytes) in cases {
        let mut s = sample(name);
        s.id = TaskId::new(name).unwrap();
        let dir = write_raw(&root, name, &bytes);
        let err = dir.read_state().unwrap_err();
        assert!(matches!(err, StateError::Parse { .. }), "{name}: {err}");
        assert!(err.to_string().contains("state.json"), "{err}");
    }
}

#[test]
fn a_huge_state_file_is_refused_without_reading_it() {
    let (_t, root) = root();
    let dir = write_raw(&root, "big", b"");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("state.json"))
        .unwrap();
    f.set_len(100 << 20).unwrap();
    assert!(
        matches!(dir.read_state(), Err(StateError::TooLarge { size, .. }) if size == 100 << 20)
    );
}

#[test]
fn symlink_and_fifo_state_files_are_refused() {
    let (t, root) = root();
    let target = t.path().join("elsewhere.json");
    fs::write(&target, serde_json::to_vec(&sample("link")).unwrap()).unwrap();
    let dir = root.create_task_dir(&TaskId::new("link").unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("state.json")).unwrap();
    assert!(matches!(
        dir.read_state(),
        Err(StateError::NotRegular {
            kind: "a symbolic link",
            ..
        })
    ));

    let dir = root.create_task_dir(&TaskId::new("fifo").unwrap()).unwrap();
    nix::unistd::mkfifo(
        &dir.path().join("state.json"),
        Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // Must not block on the FIFO.
    assert!(matches!(
        dir.read_state(),
        Err(StateError::NotRegular { kind: "a FIFO", .. })
    ));
}

#[test]
fn unknown_version_and_impossible_pids_are_refused() {
    let (_t, root) = root();
    let mut v = serde_json::to_value(sample("v2")).unwrap();
    v["version"] = 2.into();
    let dir = write_raw(&root, "v2", &serde_json::to_vec(&v).unwrap());
    assert!(matches!(
        dir.read_state(),
        Err(StateError::UnknownVersion { version: 2, .. })
    ));

    for (name, pid) in [("p0", 0), ("p1", 1), ("pself", std::process::id() as i32)] {
        let mut s = sample(name);
        s.supervisor = Some(Identity { pid, start_time: 1 });
        let dir = write_raw(&root, name, &serde_json::to_vec(&s).unwrap());
        let err = dir.read_state().unwrap_err();
        assert!(matches!(err, StateError::Invalid { .. }), "{name}: {err}");
    }

    let dir = write_raw(
        &root,
        "other",
        &serde_json::to_vec(&sample("not-other")).unwrap(),
    );
    assert!(matches!(dir.read_state(), Err(StateError::Invalid { .. })));
}

#[test]
fn task_ids_skips_junk_and_missing_root_is_empty() {
    let (_t, root) = root();
    assert!(root.task_ids().unwrap().is_empty());
    root.create_task_dir(&TaskId::new("b").unwrap()).unwrap();
    root.create_task_dir(&TaskId::new("a").unwrap()).unwrap();
    fs::create_dir(root.path().join(".junk")).unwrap();
    let ids: Vec<String> = root
        .task_ids()
        .unwrap()
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(ids, ["a", "b"]);
}

#[test]
fn lock_probe_sees_a_held_lock() {
    let (_t, root) = root();
    let dir = root.create_task_dir(&TaskId::new("l").unwrap()).unwrap();
    assert!(!dir.lock_is_held().unwrap());
    let lock = dir.open_lock().unwrap();
    lock.lock().unwrap();
    assert!(dir.lock_is_held().unwrap());
    drop(lock);
    assert!(!dir.lock_is_held().unwrap());
}

/// Regression (issue 10): `128 + signal` overflowed (a debug-build panic)
/// for a signal number out of range in a hand-edited state.json.
#[test]
fn shell_code_of_an_absurd_signal_does_not_overflow() {
    let r: ExitRecord = serde_json::from_str(r#"{"code":null,"signal":2147483647}"#).unwrap();
    assert_eq!(r.shell_code(), Some(i32::MAX));
    let r: ExitRecord = serde_json::from_str(r#"{"code":null,"signal":9}"#).unwrap();
    assert_eq!(r.shell_code(), Some(137));
}

/// A `state.json` written by the binary before the fields were typed
/// (commit 2377948, cgroup v1 host), byte for byte.
const RECORDED_V1_EXITED: &str = r#"{
  "version": 1,
  "id": "done",
  "status": "exited",
  "supervisor": {
    "pid": 28050,
    "start_time": 257816
  },
  "task": {
    "pid": 28051,
    "start_time": 257816
  },
  "boot_id": "807876b2-216e-4833-b118-4d91338302da",
  "cgroup": {
    "cpu": "/sys/fs/cgroup/cpu/contracts-rec-b/done",
    "cpuacct": "/sys/fs/cgroup/cpuacct/contracts-rec-b/done",
    "devices": "/sys/fs/cgroup/devices/contracts-rec-b/done",
    "freezer": "/sys/fs/cgroup/freezer/contracts-rec-b/done",
    "memory": "/sys/fs/cgroup/memory/contracts-rec-b/done",
    "pids": "/sys/fs/cgroup/pids/contracts-rec-b/done"
  },
  "created_at": "2026-12-05T17:27:43.076131Z",
  "started_at": "2026-12-05T17:27:43.088252Z",
  "finished_at": "2026-12-05T17:27:43.089899Z",
  "exit": {
    "code": 3,
    "signal": null,
    "core_dumped": false,
    "oom_killed": false,
    "user_cpu_ns": 890000,
    "system_cpu_ns": 0,
    "max_rss_kib": 4688
  }
}
"#;

#[test]
fn a_state_file_of_the_untyped_binary_loads_typed_and_writes_back_the_same() {
    let (_t, root) = root();
    let id = TaskId::new("done").unwrap();
    let dir = root.create_task_dir(&id).unwrap();
    fs::write(dir.path().join("state.json"), RECORDED_V1_EXITED).unwrap();
    let s = dir.read_state().unwrap();
    let crate::cgroup::CgroupPaths::V1(map) = s.cgroup.as_ref().unwrap() else {
        panic!("v1 paths expected: {:?}", s.cgroup)
    };
    assert_eq!(
        map["memory"],
        std::path::Path::new("/sys/fs/cgroup/memory/contracts-rec-b/done")
    );
    assert_eq!(s.created_at.to_string(), "2026-12-05T17:27:43.076131Z");
    assert!(s.created_at < s.started_at.unwrap() && s.started_at < s.finished_at);
    // Written again, the file is the same JSON, timestamps to the character.
    dir.write_state(&s, false).unwrap();
    let again = fs::read_to_string(dir.path().join("state.json")).unwrap();
    let v = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
    assert_eq!(v(&again), v(RECORDED_V1_EXITED));

    // The v2 form (a plain path, as docs/state-format.md shows), a running task.
    let v2 = RECORDED_V1_EXITED
        .replace(
            &RECORDED_V1_EXITED[RECORDED_V1_EXITED.find("\"cgroup\"").unwrap()
                ..RECORDED_V1_EXITED.find("\"created_at\"").unwrap()],
            "\"cgroup\": \"/sys/fs/cgroup/nomad-shim/done\",\n  ",
        )
        .replace("\"exited\"", "\"running\"");
    let v2 = {
        let mut j = v(&v2);
        j["exit"] = serde_json::Value::Null;
        j["finished_at"] = serde_json::Value::Null;
        j.to_string()
    };
    fs::write(dir.path().join("state.json"), &v2).unwrap();
    let s = dir.read_state().unwrap();
    assert_eq!(
        s.cgroup,
        Some(crate::cgroup::CgroupPaths::V2(
            "/sys/fs/cgroup/nomad-shim/done".into()
        ))
    );
    assert_eq!(s.finished_at, None);
    dir.write_state(&s, false).unwrap();
    assert_eq!(
        v(&fs::read_to_string(dir.path().join("state.json")).unwrap()),
        v(&v2)
    );
}

#[test]
fn a_malformed_timestamp_or_cgroup_is_a_parse_error_naming_the_file() {
    let (_t, root) = root();
    let id = TaskId::new("bad").unwrap();
    let dir = root.create_task_dir(&id).unwrap();
    let good = RECORDED_V1_EXITED.replace("\"done\"", "\"bad\"");
    for (from, to) in [
        ("\"2026-12-05T17:27:43.076131Z\"", "\"yesterday\""),
        ("\"/sys/fs/cgroup/pids/contracts-rec-b/done\"", "7"),
    ] {
        fs::write(dir.path().join("state.json"), good.replace(from, to)).unwrap();
        let e = dir.read_state().unwrap_err();
        assert!(matches!(e, StateError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("state.json"), "{e}");
    }
}

#[test]
fn a_relative_root_is_made_absolute_against_the_cwd() {
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(Root::new("some/rel").path(), cwd.join("some/rel"));
    assert_eq!(Root::new("/abs/x").path(), Path::new("/abs/x"));
}

#[test]
fn an_empty_root_fails_when_a_task_is_created_naming_it() {
    let root = Root::new("");
    let id = TaskId::new("t1").unwrap();
    let err = root.create_task_dir(&id).unwrap_err();
    assert!(matches!(err, StateError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("empty path"), "{err}");
    assert!(root.open_task_dir(&id).is_err());
    assert!(root.task_ids().is_err());
}
