//! Exit detection latency: how long after a task's `_exit` its exit is recorded.

use super::*;

// exit detection latency

/// The task: sleep (so the supervisor is in its poll loop), then print
/// CLOCK_REALTIME in ns and `_exit(0)` at once.
pub(crate) fn exit_stamp_helper(sleep_ms: Option<&str>) -> ! {
    let ms = sleep_ms.and_then(|s| s.parse().ok()).unwrap_or(20);
    std::thread::sleep(Duration::from_millis(ms));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let _ = std::io::stdout().write_all(format!("{now}\n").as_bytes());
    let _ = std::io::stdout().flush();
    exit_now(0)
}

#[allow(unsafe_code)]
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) has no preconditions; it ends the process at once,
    // without atexit handlers or destructors, which is what is measured.
    unsafe { libc::_exit(code) }
}

pub(crate) struct ExitLatency {
    /// Per root ("tmpfs"/"disk"): measure name → latencies in ms.
    pub(crate) series: BTreeMap<&'static str, BTreeMap<&'static str, Vec<f64>>>,
    pub(crate) errors: Vec<String>,
    pub(crate) samples: usize,
}

pub(crate) const M_FINISHED: &str = "`finished_at` − exit (µs clock)";
pub(crate) const M_MTIME: &str = "`state.json` mtime − exit";
pub(crate) const M_WAIT: &str = "`Task::wait()` returns − exit";

pub(crate) fn exit_latency(
    env: &Environment,
    tmpfs: &Path,
    disk: &Path,
    samples: usize,
) -> ExitLatency {
    let mut out = ExitLatency {
        series: BTreeMap::new(),
        errors: Vec::new(),
        samples,
    };
    let Some((shim, _)) = &env.shim_static else {
        out.errors.push("no static shim".into());
        return out;
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            out.errors.push(format!("current_exe: {e}"));
            return out;
        }
    };
    let roots = [
        (
            "tmpfs",
            Executor::with_root(tmpfs.join("root-exit"))
                .shim_path(shim)
                .cgroup_parent(CGROUP_PARENT),
        ),
        (
            "disk",
            Executor::with_root(disk.join("root-exit"))
                .shim_path(shim)
                .cgroup_parent(CGROUP_PARENT),
        ),
    ];
    let mut spec = TaskSpec::new(exe.to_string_lossy());
    spec.args([HELPER_ARG, "20"]);
    for i in 0..samples {
        // Alternate which root goes first.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for (fs, exec) in order.map(|k| &roots[k]) {
            match one_exit_sample(exec, &spec) {
                Ok(m) => {
                    let per = out.series.entry(fs).or_default();
                    for (name, val) in m {
                        per.entry(name).or_default().push(val);
                    }
                }
                Err(e) => {
                    if out.errors.len() < 3 {
                        eprintln!("exit latency ({fs}): {e}");
                    }
                    out.errors.push(e);
                }
            }
            reap_zombies();
        }
        if out.errors.len() > samples / 2 {
            break;
        }
    }
    out
}

pub(crate) fn one_exit_sample(exec: &Executor, spec: &TaskSpec) -> Res<Vec<(&'static str, f64)>> {
    let mut task = exec.start(spec).map_err(|e| format!("start: {e}"))?;
    let exit = task.wait().map_err(|e| format!("wait: {e}"));
    let waited = unix_ns(SystemTime::now());
    let dir = task.dir().to_path_buf();
    let id = task.id().to_string();
    drop(task);
    let result = (|| -> Res<Vec<(&'static str, f64)>> {
        expect_success(&exit?)?;
        let stdout = std::fs::read_to_string(dir.join(names::STDOUT))
            .map_err(|e| format!("read {}: {e}", names::STDOUT))?;
        let stamp: i128 = stdout
            .trim()
            .parse()
            .map_err(|_| format!("bad stamp {stdout:?}"))?;
        let state_path = dir.join(names::STATE);
        let meta = std::fs::metadata(&state_path).map_err(|e| format!("stat state.json: {e}"))?;
        let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let state: Value = serde_json::from_slice(
            &std::fs::read(&state_path).map_err(|e| format!("read state.json: {e}"))?,
        )
        .map_err(|e| format!("parse state.json: {e}"))?;
        let finished = state["finished_at"].as_str().ok_or("no finished_at")?;
        let finished = unix_ns(
            humantime::parse_rfc3339(finished)
                .map_err(|e| format!("finished_at {finished:?}: {e}"))?,
        );
        let d = |t: i128| (t - stamp) as f64 / 1e6;
        Ok(vec![
            (M_FINISHED, d(finished)),
            (M_MTIME, d(mtime)),
            (M_WAIT, d(waited)),
        ])
    })();
    let removed = exec
        .remove(&id, false)
        .map_err(|e| format!("remove {id}: {e}"));
    let m = result?;
    removed?;
    Ok(m)
}
