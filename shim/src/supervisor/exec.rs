//! `exec`: a process started inside the running task, by the supervisor.
//!
//! ```text
//! supervisor ──fork──▶ helper ──setns(pidfd of the task: mnt, pid, ipc, uts, net)
//!                        └──clone3(CLONE_INTO_CGROUP) / fork──▶ process: chroot into the
//!                              task's root, session, tty, rlimits, credentials,
//!                              capabilities, no_new_privs, cwd ──execve
//!    ◀── error pipe: a failed step (8 bytes, as the task child's) or EOF at exec
//!    ◀── status pipe: the process's host pid, then its raw wait status
//! ```
//!
//! Why this shape:
//!
//! * **The supervisor never changes namespaces.** `setns(2)` with a mount
//!   namespace needs a single-threaded caller, and a pid namespace is only
//!   entered by the caller's children (setns(2): "the calling process ...
//!   subsequently created children will be placed in" it). So a forked
//!   helper joins every namespace of the task at once, atomically, through
//!   a pidfd (setns(2) with a pidfd, Linux 5.8), and then forks the process,
//!   which is born inside the task's pid namespace.
//! * **Only namespaces the task has of its own are joined**: the inode of
//!   `/proc/<task>/ns/<ns>` compared with ours; a task without a pid
//!   namespace shares ours, and joining it would change nothing.
//! * **The cgroup before the first instruction**: v2 `clone3` with
//!   `CLONE_INTO_CGROUP`; v1 the process writes itself into every
//!   hierarchy (devices included) before anything else, as the task child.
//! * **The root is the task's**, from `/proc/<task>/root` opened before the
//!   `setns`: `fchdir` + `chroot(".")`. With `pivot_root` that is also the
//!   mount namespace's root; should the task's root be a plain `chroot`, it
//!   is still the task's (the namespace root would be the host's).
//! * **The helper stays the process's parent** and hands its exact wait
//!   status (code, signal, core) to the supervisor, which reaps the helper
//!   in its loop like any child: the loop never blocks on the process.
//! * **A caller that goes away** (its connection closed) leaves the process
//!   running, as `docker exec` does: it is part of the task and ends with it.

// A failed exec is answered once, with the reply built where it failed:
// the size of a `Reply` on the error path costs nothing that matters.
#![allow(clippy::result_large_err)]

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid};
use nomad_shim::cgroup::TaskCgroup;
use nomad_shim::isolate::{self, ExecCreds, ExecPlan};
use nomad_shim::protocol::{ErrorCode, ExecFailed, ExecRequest, Reply};
use nomad_shim::spec::DEFAULT_PATH;
use nomad_shim::step::{Step, StepError};
use nomad_shim::TaskSpec;

/// Bytes of one record on the status pipe (a pid, then a wait status).
const RECORD: usize = 4;

/// A running exec'd process, as the supervisor's loop keeps it.
pub struct Session {
    /// The helper: our child, the process's parent.
    pub helper: Pid,
    /// The process (host pid).
    pub pid: i32,
    /// The read end of the status pipe (non-blocking).
    pub status: OwnedFd,
    /// The caller's connection, for the final line.
    pub stream: UnixStream,
}

impl Session {
    /// The process's wait status: the helper's record, or (a helper killed
    /// before it could write one) the helper's own.
    pub fn wait_status(&self, helper_status: libc::c_int) -> libc::c_int {
        let mut b = [0u8; RECORD];
        match nix::unistd::read(self.status.as_fd(), &mut b) {
            Ok(RECORD) => libc::c_int::from_le_bytes(b),
            _ => helper_status,
        }
    }
}

/// A started process: its helper, pid, status pipe, and (with a tty) the
/// pty master to send back with the reply.
pub struct Started {
    pub helper: Pid,
    pub pid: i32,
    pub status: OwnedFd,
    pub master: Option<OwnedFd>,
}

/// Everything the process needs, made before the helper is forked.
struct Plan {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    isolation: ExecPlan,
    /// setns(2) flags: the task's namespaces that are not ours.
    ns_flags: CloneFlags,
    pidfd: OwnedFd,
    root: OwnedFd,
    /// v2: the cgroup directory for CLONE_INTO_CGROUP.
    cgroup_dir: Option<OwnedFd>,
    /// v1 (and the v2 fallback): `cgroup.procs` of each hierarchy.
    cgroup_procs: Vec<OwnedFd>,
}

/// The process's fds 0, 1, 2.
enum Stdio {
    /// A pty of the task's own devpts, opened by the process inside the
    /// task's root: its slave on all three, as controlling terminal; its
    /// master sent back on this socket.
    Tty(OwnedFd),
    /// The caller's three fds.
    Fds([OwnedFd; 3]),
}

/// Starts `req` inside the task whose main process is `task`. The reply
/// on failure is the error for the caller.
pub fn start(
    spec: &TaskSpec,
    task: Pid,
    cgroup: &TaskCgroup,
    req: &ExecRequest,
    fds: Vec<OwnedFd>,
) -> Result<Started, Reply> {
    let bad = |m: String| Reply::fail(ErrorCode::BadRequest, m);
    if req.argv.is_empty() {
        return Err(bad("exec: no program given (argv is empty)".into()));
    }
    if let Some(cwd) = req.cwd.as_ref().filter(|c| !c.is_absolute()) {
        return Err(bad(format!(
            "exec: cwd {}: must be an absolute path inside the task",
            cwd.display()
        )));
    }
    let stdio_fds = match (req.tty, <[OwnedFd; 3]>::try_from(fds)) {
        (true, Err(fds)) if fds.is_empty() => None,
        (false, Ok(three)) => Some(three),
        (tty, Ok(_) | Err(_)) => {
            return Err(bad(format!(
                "exec: {} descriptors (stdin, stdout, stderr) must come with the request as SCM_RIGHTS{}",
                if tty { "no" } else { "three" },
                if tty { " when a tty is asked for" } else { "" }
            )))
        }
    };
    let plan = plan(spec, task, cgroup, req)?;
    let failed = |what: &str, e: Errno| Reply::error(format!("exec: {what}: {}", e.desc()));

    let (stdio, master_r) = match stdio_fds {
        Some(fds) => (Stdio::Fds(fds), None),
        None => {
            let (r, w) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| failed("socketpair for the pty", e))?;
            (Stdio::Tty(w), Some(r))
        }
    };
    let (error_r, error_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| failed("error pipe", e))?;
    let (status_r, status_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| failed("status pipe", e))?;

    let helper = match crate::sys::fork().map_err(|e| failed("fork", e))? {
        ForkResult::Child => helper(&plan, &stdio, &error_w, &status_w),
        ForkResult::Parent { child } => child,
    };
    // Our copies of the helper's ends: the pipes must see EOF when it and
    // the process are done with them (at exec for the error pipe).
    drop((error_w, status_w, stdio));

    if let Some(e) = read_error(&error_r) {
        // The helper exits right after (it reports the process's exit 127,
        // or its own failure): reaped by the loop like any child.
        let what = match e.step {
            Step::Exec => req.argv[0].clone(),
            _ if e.step.is_isolation() => return Err(exec_failed(plan.isolation.describe(&e), e)),
            _ => "process".into(),
        };
        return Err(exec_failed(
            format!("{} {what}: {}", e.step, e.errno.desc()),
            e,
        ));
    }
    // The program runs: the helper wrote its pid right after the fork.
    let mut b = [0u8; RECORD];
    let pid = match read_full(&status_r, &mut b) {
        Ok(()) => i32::from_le_bytes(b),
        Err(e) => return Err(failed("read the process's pid", e)),
    };
    nix::fcntl::fcntl(
        status_r.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    )
    .map_err(|e| failed("status pipe", e))?;
    // With a tty: the master, which the process sent before its exec.
    let master = match &master_r {
        Some(r) => {
            let mut b = [0u8; 1];
            let master = match nomad_shim::sys::recv_with_fds(r.as_fd(), &mut b) {
                Ok((1, mut fds)) if fds.len() == 1 => fds.pop(),
                Ok(_) => return Err(failed("receive the pty", Errno::EBADMSG)),
                Err(e) => return Err(failed("receive the pty", e)),
            };
            if let (Some(m), Some((rows, cols))) = (&master, req.winsize) {
                nomad_shim::sys::set_winsize(m.as_fd(), rows, cols)
                    .map_err(|e| failed("set the pty's window size", e))?;
            }
            master
        }
        None => None,
    };
    Ok(Started {
        helper,
        pid,
        status: status_r,
        master,
    })
}

fn exec_failed(message: String, e: StepError) -> Reply {
    Reply {
        exec_failed: Some(ExecFailed {
            step: e.step,
            errno: Some(e.errno as i32),
        }),
        ..Reply::error(message)
    }
}

/// argv, envp, lookup candidates, the privilege steps and the fds of the
/// task's namespaces, root and cgroup.
fn plan(spec: &TaskSpec, task: Pid, cgroup: &TaskCgroup, req: &ExecRequest) -> Result<Plan, Reply> {
    let bad = |m: String| Reply::fail(ErrorCode::BadRequest, m);
    let creds = req.user.as_ref().map(|u| ExecCreds {
        uid: u.uid,
        gid: u.gid,
        groups: u.groups.clone(),
        name: u.name.clone(),
        home: u.home.clone(),
    });
    let isolation = isolate::prepare_exec(
        &spec.isolation,
        spec.cwd.as_deref(),
        req.cwd.as_deref(),
        creds.as_ref(),
    )
    .map_err(|e| bad(format!("exec: {e}")))?;
    // The task's environment, the request's over it, then PATH and the
    // user's HOME, USER, LOGNAME where neither sets them.
    let mut env = spec.env.clone();
    env.extend(req.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    for (k, v) in isolation.env_defaults() {
        env.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let cstr = |s: &[u8]| {
        CString::new(s)
            .map_err(|_| bad("exec: a NUL byte in the program, arguments or environment".into()))
    };
    let candidates = super::lookup::exec_candidates(&req.argv[0], &env["PATH"], &spec.isolation)
        .iter()
        .map(|p| cstr(p.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let argv = req
        .argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;

    let failed = |what: String, e: Errno| Reply::error(format!("exec: {what}: {}", e.desc()));
    // The task's main process is our child and not reaped (the loop checks
    // that the task has not exited): its pid cannot name anyone else.
    let pidfd = nomad_shim::sys::pidfd_open(task.as_raw())
        .map_err(|e| failed(format!("pidfd_open {task}"), e))?;
    let ns_flags = namespaces(task).map_err(|e| failed(format!("read /proc/{task}/ns"), e))?;
    let root = open(
        format!("/proc/{task}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| failed(format!("open /proc/{task}/root"), e))?;
    let cgroup_dir = cgroup
        .dir_fd()
        .map_err(|e| Reply::error(format!("exec: {e}")))?;
    let cgroup_procs = cgroup
        .open_procs_files()
        .map_err(|e| Reply::error(format!("exec: {e}")))?;
    Ok(Plan {
        candidates,
        argv,
        envp,
        isolation,
        ns_flags,
        pidfd,
        root,
        cgroup_dir,
        cgroup_procs,
    })
}

/// The namespaces of `task` that differ from ours.
fn namespaces(task: Pid) -> nix::Result<CloneFlags> {
    let mut flags = CloneFlags::empty();
    for (name, flag) in [
        ("mnt", CloneFlags::CLONE_NEWNS),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ] {
        let ours = nix::sys::stat::stat(format!("/proc/self/ns/{name}").as_str())?;
        let theirs = nix::sys::stat::stat(format!("/proc/{task}/ns/{name}").as_str())?;
        if (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino) {
            flags |= flag;
        }
    }
    Ok(flags)
}

/// Reads the error record: `None` when the pipe closed at the exec.
fn read_error(fd: &OwnedFd) -> Option<StepError> {
    StepError::read_record(fd.as_fd())
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> nix::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd.as_fd(), &mut buf[got..]) {
            Ok(0) => return Err(Errno::EPIPE),
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The helper, after the fork from the supervisor: joins the task's
/// namespaces, forks the process into its cgroup, reports its pid, waits
/// for it and reports its wait status. Never returns.
fn helper(plan: &Plan, stdio: &Stdio, error_w: &OwnedFd, status_w: &OwnedFd) -> ! {
    let fail = |e: StepError| super::child::report_and_exit(error_w, e);
    // Every namespace of the task's at once, through its pidfd (setns(2):
    // "the caller is moved into all of the namespaces specified in
    // nstype"). The pid namespace applies to our children only.
    if !plan.ns_flags.is_empty() {
        if let Err(e) = nix::sched::setns(plan.pidfd.as_fd(), plan.ns_flags) {
            fail(StepError::new(Step::Setns, e));
        }
    }
    // Born in the task's cgroup (v2), else it joins first thing (v1).
    let cloned = match crate::sys::clone3(
        CloneFlags::empty(),
        plan.cgroup_dir.as_ref().map(|d| d.as_fd()),
    ) {
        Err(Errno::E2BIG | Errno::EINVAL) if plan.cgroup_dir.is_some() => {
            crate::sys::clone3(CloneFlags::empty(), None).map(|r| (r, true))
        }
        other => other.map(|r| (r, plan.cgroup_dir.is_none())),
    };
    let child = match cloned {
        Ok((ForkResult::Child, join)) => match process(plan, stdio, join) {
            Ok(never) => match never {},
            Err(e) => fail(e),
        },
        Ok((ForkResult::Parent { child }, _)) => child,
        Err(e) => fail(StepError::new(Step::Clone3, e)),
    };
    // Only the status pipe stays open: the error pipe must close with the
    // process's exec, and the supervisor's lock must not be held by us.
    crate::sys::write_raw(status_w.as_raw_fd(), &child.as_raw().to_le_bytes());
    crate::sys::close_all_but(status_w.as_raw_fd() as libc::c_uint);
    // The raw wait status, rebuilt from nix's parts (wait(2)'s encoding:
    // code << 8, or the signal with 0x80 for a core dump).
    let status: libc::c_int = loop {
        match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => break code << 8,
            Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, core)) => {
                break sig as libc::c_int | if core { 0x80 } else { 0 }
            }
            Ok(_) | Err(Errno::EINTR) => {}
            // ECHILD cannot happen (it is our child): report a SIGKILL.
            Err(_) => break libc::SIGKILL,
        }
    };
    crate::sys::write_raw(status_w.as_raw_fd(), &status.to_le_bytes());
    crate::sys::exit_now(0)
}

/// The exec'd process: the task child's steps, in its order, for a process
/// that joins instead of creating. Returns only on failure.
fn process(
    plan: &Plan,
    stdio: &Stdio,
    join_cgroup: bool,
) -> Result<std::convert::Infallible, StepError> {
    let fail = StepError::with;
    // Default dispositions and an empty mask (the supervisor's blocked set
    // survives fork and execve).
    crate::sys::reset_signal_dispositions();
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(fail(Step::Sigmask))?;
    // A session of its own: the task's signals to its process group do not
    // reach it by accident, and a tty can become its controlling terminal.
    nix::unistd::setsid().map_err(fail(Step::Setsid))?;
    let _ = nix::sys::prctl::set_dumpable(false);
    super::child::reset_oom_score(plan.isolation.oom_score_adj())
        .map_err(fail(Step::OomScoreAdj))?;
    if join_cgroup {
        nomad_shim::cgroup::join_with_fds(&plan.cgroup_procs).map_err(fail(Step::JoinCgroup))?;
    }
    super::child::reset_affinity().map_err(fail(Step::SchedSetaffinity))?;
    // The task's root (see the module docs).
    nix::unistd::fchdir(plan.root.as_fd()).map_err(fail(Step::Chroot))?;
    nix::unistd::chroot(".").map_err(fail(Step::Chroot))?;
    let slave: OwnedFd;
    let (stdin, stdout, stderr): (BorrowedFd<'_>, BorrowedFd<'_>, BorrowedFd<'_>) = match stdio {
        Stdio::Tty(sock) => {
            slave = open_pty(sock, plan.isolation.owner())?;
            nomad_shim::sys::set_controlling_terminal(slave.as_fd())
                .map_err(fail(Step::ControllingTerminal))?;
            (slave.as_fd(), slave.as_fd(), slave.as_fd())
        }
        Stdio::Fds([i, o, e]) => (i.as_fd(), o.as_fd(), e.as_fd()),
    };
    nix::unistd::dup2_stdin(stdin).map_err(fail(Step::Stdio))?;
    nix::unistd::dup2_stdout(stdout).map_err(fail(Step::Stdio))?;
    nix::unistd::dup2_stderr(stderr).map_err(fail(Step::Stdio))?;
    // rlimits, bounding set, credentials, capabilities, no_new_privs, cwd.
    plan.isolation.apply_in_child()?;
    // Only fds 0-2 reach the program.
    nomad_shim::sys::close_range(3, nomad_shim::sys::CLOSE_RANGE_CLOEXEC)
        .map_err(fail(Step::CloseRange))?;
    super::child::execve_first(&plan.candidates, &plan.argv, &plan.envp)
}

/// In the process, inside the task's root: a new pty of the task's own
/// devpts instance (`/dev/ptmx` is `pts/ptmx` there), as runc does for a
/// container's console, so that `tty` names a terminal of the task's
/// `/dev/pts`. The master goes to the supervisor on `sock` (it gives it to
/// the caller); the slave, opened through the master (`TIOCGPTPEER`: no
/// path to resolve, Linux 4.13), belongs to the process's user, mode 0620
/// (devpts' `mode=0620,gid=5`).
fn open_pty(sock: &OwnedFd, (uid, gid): (u32, u32)) -> Result<OwnedFd, StepError> {
    let fail = StepError::with(Step::Pty);
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(&fail)?;
    nix::pty::unlockpt(&master).map_err(&fail)?;
    let slave = nomad_shim::sys::open_pty_peer(master.as_fd()).map_err(&fail)?;
    nix::unistd::fchown(
        slave.as_fd(),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(&fail)?;
    nomad_shim::sys::send_with_fds(sock.as_fd(), b"m", &[master.as_fd()]).map_err(&fail)?;
    Ok(slave)
}
