//! An agent that waits on many tasks from one thread (docs/performance.md,
//! "Waiting on many tasks").
//!
//! ```text
//! many [--root DIR] [--cgroup-parent P] [--tokio] [N]
//! ```
//!
//! Starts N tasks (default 1000) that sleep — each `flock -s GATE true`,
//! blocked in `flock(2)` on a file this process holds locked — then
//! releases them all at one instant and waits for every exit from this one
//! thread: with `epoll(7)` over every task's wait fd (`impl AsFd for
//! Task`), or with `--tokio` (built with `--features tokio`) with
//! `Task::wait_async` on a current-thread tokio runtime. It prints one line
//! of JSON: how long the starts took, how long after the release the last
//! exit was collected, the waiting thread's CPU time over the wait, and how
//! long after the release each exit was seen (p50, p99, max).
//!
//! As root, in a process that must reap the supervisors itself (it makes
//! itself a subreaper for that: docs/architecture.md, "Who reaps the supervisor"). Each task holds two fds (its
//! state directory and the supervisor's pidfd): the soft `RLIMIT_NOFILE` is
//! raised to the hard one.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use nomad_shim::{Executor, Task, TaskExit, TaskSpec};

struct Args {
    root: Option<String>,
    cgroup_parent: Option<String>,
    tokio: bool,
    n: usize,
}

fn parse() -> Args {
    let mut a = Args {
        root: None,
        cgroup_parent: None,
        tokio: false,
        n: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--root" => a.root = it.next(),
            "--cgroup-parent" => a.cgroup_parent = it.next(),
            "--tokio" => a.tokio = true,
            n => a.n = n.parse().unwrap_or_else(|_| usage()),
        }
    }
    a
}

fn usage<T>() -> T {
    eprintln!("usage: many [--root DIR] [--cgroup-parent P] [--tokio] [N]");
    std::process::exit(2)
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("many: {what}: {e}");
    std::process::exit(1)
}

fn main() {
    let args = parse();
    // Supervisors re-parent to the nearest subreaper: be it, and reap them
    // at the end (PID 1 of these machines never reaps: docs/architecture.md).
    nix::sys::prctl::set_child_subreaper(true).unwrap_or_else(|e| fail("subreaper", e));
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or_else(|e| fail("getrlimit", e));
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap_or_else(|e| fail("setrlimit", e));

    let mut exec = match &args.root {
        Some(r) => Executor::with_root(r),
        None => Executor::new().unwrap_or_else(|e| fail("executor", e)),
    };
    if let Some(p) = &args.cgroup_parent {
        exec = exec.cgroup_parent(p);
    }

    // The gate: every task blocks on a shared lock of this file until this
    // process drops its exclusive one.
    let gate_path = std::env::temp_dir().join(format!("nomad-shim-many.{}", std::process::id()));
    let gate = std::fs::File::create(&gate_path).unwrap_or_else(|e| fail("create gate", e));
    gate.lock().unwrap_or_else(|e| fail("flock gate", e));
    let t0 = Instant::now();
    let mut tasks: Vec<Task> = Vec::with_capacity(args.n);
    for _ in 0..args.n {
        let mut spec = TaskSpec::new("/usr/bin/flock");
        spec.args(["-s", &gate_path.to_string_lossy(), "true"]);
        let task = exec.start(&spec).unwrap_or_else(|e| fail("start", e));
        tasks.push(task);
    }
    let started = t0.elapsed();
    let ids: Vec<String> = tasks.iter().map(|t| t.id().to_string()).collect();
    let cpu0 = thread_cpu();
    let end = Instant::now();
    drop(gate);
    let (exits, late) = if args.tokio {
        wait_tokio(tasks, end)
    } else {
        wait_epoll(tasks, end)
    };
    let waited = end.elapsed();
    let cpu = thread_cpu() - cpu0;
    let _ = std::fs::remove_file(&gate_path);
    let failed = exits.iter().filter(|e| !e.success()).count();

    // Every supervisor has exited (its pidfd was readable): reap them.
    while nix::sys::wait::waitpid(None, None).is_ok() {}
    // Ended tasks' directories (and any cgroup left) go, as an agent would.
    for id in &ids {
        if let Err(e) = exec.remove(id, false) {
            eprintln!("many: remove {id}: {e}");
        }
    }
    for e in &exits {
        if let TaskExit::Exited(_) = e {
            continue;
        }
        eprintln!("many: a task was lost: {e:?}");
    }
    let mut late = late;
    late.sort();
    let pct = |p: f64| {
        late.get(((late.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{{\"mode\":\"{}\",\"tasks\":{},\"failed\":{failed},\"start_s\":{:.3},\"wait_s\":{:.3},\
         \"wait_cpu_ms\":{:.1},\"late_p50_ms\":{:.1},\
         \"late_p99_ms\":{:.1},\"late_max_ms\":{:.1}}}",
        if args.tokio { "tokio" } else { "epoll" },
        exits.len(),
        started.as_secs_f64(),
        waited.as_secs_f64(),
        cpu.as_secs_f64() * 1e3,
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
    if failed > 0 || exits.len() != args.n {
        std::process::exit(1);
    }
}

/// User + system CPU time of this thread so far.
fn thread_cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_THREAD).unwrap_or_else(|e| fail("getrusage", e));
    let t =
        |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(u.user_time()) + t(u.system_time())
}

/// One epoll set over every task's wait fd; a ready fd means the exit is
/// durable, and `try_wait` returns it without blocking.
fn wait_epoll(mut tasks: Vec<Task>, end: Instant) -> (Vec<TaskExit>, Vec<Duration>) {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap_or_else(|e| fail("epoll", e));
    for (i, t) in tasks.iter().enumerate() {
        epoll
            .add(t.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .unwrap_or_else(|e| fail("epoll_ctl", e));
    }
    let mut exits = Vec::with_capacity(tasks.len());
    let mut late = Vec::with_capacity(tasks.len());
    let mut events = vec![EpollEvent::empty(); 256];
    while exits.len() < tasks.len() {
        let n = epoll
            .wait(&mut events, EpollTimeout::NONE)
            .unwrap_or_else(|e| fail("epoll_wait", e));
        let now = Instant::now();
        for ev in &events[..n] {
            let task = &mut tasks[ev.data() as usize];
            // Level-triggered: stop watching it before anything else.
            epoll
                .delete(task.as_fd())
                .unwrap_or_else(|e| fail("epoll_ctl", e));
            match task.try_wait() {
                Ok(Some(exit)) => {
                    exits.push(exit);
                    late.push(now.saturating_duration_since(end));
                }
                Ok(None) => fail("try_wait", "readable, but no exit recorded"),
                Err(e) => fail("try_wait", e),
            }
        }
    }
    (exits, late)
}

/// `Task::wait_async` on a current-thread runtime: one future per task,
/// all on this thread.
#[cfg(feature = "tokio")]
fn wait_tokio(tasks: Vec<Task>, end: Instant) -> (Vec<TaskExit>, Vec<Duration>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| fail("tokio runtime", e));
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let handles: Vec<_> = tasks
            .into_iter()
            .map(|mut task| {
                tokio::task::spawn_local(async move {
                    let exit = task.wait_async().await;
                    (exit, Instant::now().saturating_duration_since(end))
                })
            })
            .collect();
        let mut exits = Vec::with_capacity(handles.len());
        let mut late = Vec::with_capacity(handles.len());
        for h in handles {
            let (exit, l) = h.await.unwrap_or_else(|e| fail("join", e));
            exits.push(exit.unwrap_or_else(|e| fail("wait_async", e)));
            late.push(l);
        }
        (exits, late)
    })
}

#[cfg(not(feature = "tokio"))]
fn wait_tokio(_: Vec<Task>, _: Instant) -> (Vec<TaskExit>, Vec<Duration>) {
    fail("--tokio", "this example was built without --features tokio")
}
