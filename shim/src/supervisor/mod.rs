//! The supervisor: `nomad-shim __supervise ROOT ID`, run by the library.
//!
//! ```text
//! library ──spawn──▶ intermediate ──fork──▶ supervisor ──fork──▶ task child ──exec──▶ program
//!    ◀── sync pipe (our fd 1): one StartReply line ──┘
//! ```
//!
//! The intermediate exits at once, so the supervisor is re-parented away
//! from the agent (to init, or to the agent's subreaper) and outlives it.
//! The supervisor is single-threaded (no runtime, no pools), which is what
//! makes forking the task child from it sound.

mod child;
mod event_loop;
mod logs;

use std::ffi::{CString, OsStr};
use std::fs::{File, TryLockError};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid};
use nomad_shim::protocol::StartReply;
use nomad_shim::spec::DEFAULT_PATH;
use nomad_shim::state::{names, now_rfc3339, read_json, Root, TaskDir, TaskId, TaskState};
use nomad_shim::{identity, Identity, Status, TaskSpec};

use child::{ChildPlan, ChildStdio, ExecError};

/// How long the supervisor retries its lock while a reader (`ps`) holds a
/// shared lock for a moment.
const LOCK_RETRIES: u32 = 2000;

/// A start that failed: reported on the sync pipe, then the supervisor exits.
struct Failure {
    step: &'static str,
    errno: Option<Errno>,
    message: String,
}

impl Failure {
    fn new(step: &'static str, errno: Option<Errno>, message: impl Into<String>) -> Failure {
        Failure {
            step,
            errno,
            message: message.into(),
        }
    }

    fn errno(step: &'static str, what: impl std::fmt::Display, e: Errno) -> Failure {
        Failure::new(step, Some(e), format!("{step} {what}: {}", e.desc()))
    }
}

/// Entry point of `__supervise`. Never returns.
pub fn main(root: &OsStr, id: &OsStr) -> ! {
    // Before anything opens a descriptor of its own: close every fd the
    // agent let us inherit (only 0-2 are ours).
    let _ = nomad_shim::sys::close_range(3, 0);

    // Fork once more and let the intermediate exit: the supervisor is then
    // no child of the agent, and never its problem to reap.
    match crate::sys::fork() {
        Ok(ForkResult::Parent { .. }) => crate::sys::exit_now(0),
        Ok(ForkResult::Child) => {}
        Err(e) => {
            report(&StartReply::Failed {
                step: "fork".into(),
                errno: Some(e as i32),
                message: format!("fork supervisor: {}", e.desc()),
            });
            std::process::exit(1);
        }
    }
    let code = match supervise(Path::new(root), id) {
        Ok(()) => 0,
        Err(f) => {
            report(&StartReply::Failed {
                step: f.step.into(),
                errno: f.errno.map(|e| e as i32),
                message: f.message,
            });
            1
        }
    };
    std::process::exit(code)
}

/// Writes the one reply line to the sync pipe (fd 1).
fn report(reply: &StartReply) {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    let _ = std::io::stdout().lock().write_all(&line);
}

fn supervise(root: &Path, id: &OsStr) -> Result<(), Failure> {
    // A session of our own: no terminal, no signals aimed at the agent's
    // process group.
    nix::unistd::setsid().map_err(|e| Failure::errno("setsid", "supervisor", e))?;
    // Subreaper: orphans of the task (a daemon that double-forked) are
    // re-parented to us, so we reap them and they never reach init.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Failure::errno("prctl", "PR_SET_CHILD_SUBREAPER", e))?;
    // Lower our own OOM score where permitted: killing the supervisor would
    // lose the task's exit. The child puts its own back to 0.
    let _ = std::fs::write("/proc/self/oom_score_adj", b"-999");
    nix::sys::stat::umask(Mode::from_bits_truncate(0o077));

    let id = id
        .to_str()
        .and_then(|s| TaskId::new(s).ok())
        .ok_or_else(|| Failure::new("spec", None, format!("invalid task id {id:?}")))?;
    let root = Root::new(root);
    let dir = root
        .open_task_dir(&id)
        .map_err(|e| Failure::new("open", None, e.to_string()))?;
    let lock = take_lock(&dir)?;

    // From here the directory is ours: a failed start removes it, so that
    // nothing half-made is left for `ps` (the error goes back to the caller).
    match prepare_and_start(&dir, lock) {
        Ok(()) => Ok(()),
        Err(f) => {
            let _ = std::fs::remove_dir_all(dir.path());
            Err(f)
        }
    }
}

/// Takes the exclusive lock that means "supervisor alive". A reader may
/// hold a shared lock for a moment (`lock_is_held`), so retry briefly.
fn take_lock(dir: &TaskDir) -> Result<File, Failure> {
    let lock = dir
        .open_lock()
        .map_err(|e| Failure::new("lock", None, e.to_string()))?;
    for _ in 0..LOCK_RETRIES {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_micros(500)),
            Err(TryLockError::Error(e)) => {
                return Err(Failure::new(
                    "lock",
                    Errno::from_raw(e.raw_os_error().unwrap_or(0)).into(),
                    format!("flock {}: {e}", dir.path().join(names::LOCK).display()),
                ))
            }
        }
    }
    Err(Failure::new(
        "lock",
        Some(Errno::EWOULDBLOCK),
        format!(
            "{} is held by another process",
            dir.path().join(names::LOCK).display()
        ),
    ))
}

fn prepare_and_start(dir: &TaskDir, lock: File) -> Result<(), Failure> {
    let spec: TaskSpec = read_json(dir.fd(), dir.path(), names::SPEC)
        .map_err(|e| Failure::new("spec", None, e.to_string()))?;
    let boot_id = identity::boot_id().map_err(|e| {
        Failure::new(
            "boot_id",
            None,
            format!("read /proc/sys/kernel/random/boot_id: {e}"),
        )
    })?;
    let me = Identity::of(std::process::id() as i32)
        .map_err(|e| Failure::new("identity", None, format!("read /proc/self/stat: {e}")))?;
    let mut state = TaskState::starting(dir.id().clone(), boot_id);
    state.supervisor = Some(me);
    // Not fsynced: a crash now loses a task that never ran.
    dir.write_state(&state, false)
        .map_err(|e| Failure::new("state", None, e.to_string()))?;

    // Block the signals the loop reads from a signalfd *before* the fork, so
    // that no exit of the child can be missed (signalfd(2)).
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| Failure::errno("sigprocmask", "supervisor", e))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Failure::errno("signalfd", "supervisor", e))?;

    let control = event_loop::bind_control(dir)
        .map_err(|e| Failure::errno("listen", dir.path().join(names::CONTROL).display(), e))?;

    // The task's stdio: /dev/null in, pipes out. Our read ends are
    // non-blocking (the loop drains them); the task's write ends block, as
    // a program expects.
    let devnull = open(
        c"/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Failure::errno("open", "/dev/null", e))?;
    let (out_r, out_w) = log_pipe()?;
    let (err_r, err_w) = log_pipe()?;
    let stdout = logs::LogSink::new(dir.fd(), names::STDOUT, out_r, spec.logs)
        .map_err(|e| Failure::errno("create", dir.path().join(names::STDOUT).display(), e))?;
    let stderr = logs::LogSink::new(dir.fd(), names::STDERR, err_r, spec.logs)
        .map_err(|e| Failure::errno("create", dir.path().join(names::STDERR).display(), e))?;
    let (error_r, error_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| Failure::errno("pipe", "error pipe", e))?;

    let plan = child_plan(&spec)?;
    let task_pid = match crate::sys::fork().map_err(|e| Failure::errno("fork", "task", e))? {
        ForkResult::Child => child::run(
            &plan,
            ChildStdio {
                stdin: devnull.as_fd(),
                stdout: out_w.as_fd(),
                stderr: err_w.as_fd(),
            },
            &error_w,
        ),
        ForkResult::Parent { child } => child,
    };
    // Our copies of the child's ends: the pipes must see EOF when the task
    // (and whatever inherited them) is gone.
    drop((error_w, out_w, err_w, plan));

    if let Some(e) = read_exec_error(&error_r) {
        let _ = nix::sys::wait::waitpid(task_pid, None);
        let what = match e.step {
            child::Step::Exec => spec.program.clone(),
            child::Step::Chdir => spec
                .cwd
                .as_ref()
                .map_or("/".into(), |c| c.display().to_string()),
            _ => "task".into(),
        };
        return Err(Failure::errno(e.step.name(), what, e.errno));
    }
    drop(error_r);

    let task = Identity::of(task_pid.as_raw())
        .map_err(|e| Failure::new("identity", None, format!("read /proc/{task_pid}/stat: {e}")))?;
    state.status = Status::Running;
    state.task = Some(task);
    state.started_at = Some(now_rfc3339());
    if let Err(e) = dir.write_state(&state, true) {
        let _ = nix::sys::signal::killpg(task_pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(task_pid, None);
        return Err(Failure::new("state", None, e.to_string()));
    }
    report(&StartReply::Started {
        supervisor: me,
        task,
    });
    // The reply is sent: fd 1 becomes /dev/null, so the caller's read ends.
    let _ = nix::unistd::dup2_stdout(devnull.as_fd());
    drop(devnull);
    crate::sys::trim_heap();

    let mut sup = event_loop::Supervisor::new(
        dir,
        lock,
        spec,
        state,
        Pid::from_raw(task.pid),
        signals,
        control,
        [stdout, stderr],
    );
    sup.run();
    Ok(())
}

fn log_pipe() -> Result<(OwnedFd, OwnedFd), Failure> {
    let (r, w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Failure::errno("pipe", "log pipe", e))?;
    fcntl(r.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map_err(|e| Failure::errno("fcntl", "log pipe", e))?;
    Ok((r, w))
}

/// Reads the child's error record; `None` when the pipe closed at exec.
fn read_exec_error(fd: &OwnedFd) -> Option<ExecError> {
    let mut buf = [0u8; ExecError::SIZE];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd.as_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    if got == 0 {
        None
    } else {
        ExecError::decode(&buf[..got]).or(Some(ExecError {
            step: child::Step::Exec,
            errno: Errno::EIO,
        }))
    }
}

/// Everything the child needs, built before fork.
fn child_plan(spec: &TaskSpec) -> Result<ChildPlan, Failure> {
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| {
            Failure::new(
                "spec",
                None,
                "a NUL byte in the program, arguments or environment",
            )
        })
    };
    let path_var = spec.env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    let candidates = if spec.program.contains('/') {
        vec![cstr(spec.program.as_bytes())?]
    } else {
        let mut c = Vec::new();
        for d in path_var.split(':').filter(|d| !d.is_empty()) {
            c.push(cstr(
                Path::new(d).join(&spec.program).as_os_str().as_bytes(),
            )?);
        }
        if c.is_empty() {
            c.push(cstr(spec.program.as_bytes())?);
        }
        c
    };
    let argv = spec
        .argv()
        .into_iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut envp = Vec::with_capacity(spec.env.len() + 1);
    if !spec.env.contains_key("PATH") {
        envp.push(cstr(format!("PATH={DEFAULT_PATH}").as_bytes())?);
    }
    for (k, v) in &spec.env {
        envp.push(cstr(format!("{k}={v}").as_bytes())?);
    }
    let cwd = cstr(
        spec.cwd
            .as_ref()
            .map_or(b"/".as_slice(), |c| c.as_os_str().as_bytes()),
    )?;
    Ok(ChildPlan {
        candidates,
        argv,
        envp,
        cwd,
    })
}
