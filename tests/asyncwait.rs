//! Waiting without a thread per task: `impl AsFd for Task` is readable
//! exactly when the exit is durable, `Task::wait_async` (feature `tokio`)
//! waits on many tasks from one current-thread runtime, and the example
//! agent examples/many.rs waits on a batch of tasks from one thread.

#[cfg(feature = "tokio")]
use std::future::Future;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nomad_shim::{Status, TaskExit};

use crate::common::{self, eventually, proc_state, root_or_skip, scaled, TestRoot};

/// Whether `fd` is readable now (a zero-timeout poll).
fn readable(fd: impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, PollTimeout::ZERO).expect("poll") == 1
}

/// Blocks in poll(2) until `fd` is readable, up to `timeout` (scaled).
fn readable_within(fd: impl AsFd, timeout: Duration) -> bool {
    let ms = scaled(timeout).as_millis().min(i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, PollTimeout::try_from(ms).unwrap()).expect("poll") == 1
}

/// state.json as it is on disk (no reconcile).
fn status_on_disk(root: &TestRoot, id: &str) -> String {
    let raw = std::fs::read(root.path().join(id).join("state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    v["status"].as_str().unwrap().to_owned()
}

/// Resumes a stopped supervisor even when an assertion fails first.
struct Cont(i32);
impl Drop for Cont {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn wait_fd_is_readable_only_once_the_exit_is_durable() {
    if !root_or_skip("wait_fd_is_readable_only_once_the_exit_is_durable") {
        return;
    }
    let root = TestRoot::new();
    let mut task = root.sh("exec sleep 60");
    let id = task.id().to_string();
    let sup = task.supervisor_pid().unwrap();
    let task_pid = task.pid().unwrap();
    // Running: not readable, and try_wait says so.
    assert!(!readable(&task));
    assert_eq!(task.try_wait().unwrap(), None);

    // Freeze the supervisor, then end the task: the task is dead (a zombie
    // the supervisor has not reaped), but nothing is recorded yet, and the
    // fd must not claim otherwise.
    kill(Pid::from_raw(sup), Signal::SIGSTOP).unwrap();
    let cont = Cont(sup);
    assert!(eventually(Duration::from_secs(5), || proc_state(sup) == Some('T')));
    kill(Pid::from_raw(task_pid), Signal::SIGKILL).unwrap();
    assert!(eventually(Duration::from_secs(5), || proc_state(task_pid) == Some('Z')));
    assert!(!readable(&task), "readable before the exit was recorded");
    assert_eq!(status_on_disk(&root, &id), "running");

    // Let it finish: the fd becomes readable, and by then the final state
    // is on disk, so try_wait answers without blocking.
    drop(cont);
    assert!(readable_within(&task, Duration::from_secs(10)));
    assert_eq!(status_on_disk(&root, &id), "exited");
    let exit = task.try_wait().unwrap().expect("the exit is durable");
    assert_eq!(exit.signal(), Some(libc::SIGKILL));
    // Level-triggered, and the same after a blocking wait.
    assert!(readable(&task));
    assert_eq!(task.wait().unwrap(), exit);
    assert!(readable(&task));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn wait_fd_of_a_task_reopened_while_it_runs() {
    if !root_or_skip("wait_fd_of_a_task_reopened_while_it_runs") {
        return;
    }
    let root = TestRoot::new();
    let task = root.sh("exec sleep 60");
    let id = task.id().to_string();
    let task_pid = task.pid().unwrap();
    drop(task);
    // The agent restarted: the reopened handle waits on the same supervisor.
    let mut task = root.exec.open(&id).unwrap();
    assert!(!readable(&task));
    assert_eq!(task.try_wait().unwrap(), None);
    kill(Pid::from_raw(task_pid), Signal::SIGTERM).unwrap();
    assert!(readable_within(&task, Duration::from_secs(10)));
    assert_eq!(status_on_disk(&root, &id), "exited");
    let exit = task.try_wait().unwrap().expect("the exit is durable");
    assert_eq!(exit.signal(), Some(libc::SIGTERM));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn wait_fd_after_the_supervisor_is_killed_says_lost() {
    if !root_or_skip("wait_fd_after_the_supervisor_is_killed_says_lost") {
        return;
    }
    let root = TestRoot::new();
    let mut task = root.sh("exec sleep 60");
    let id = task.id().to_string();
    let sup = task.supervisor_pid().unwrap();
    let task_pid = task.pid().unwrap();
    assert!(!readable(&task));
    kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
    // The supervisor's death makes the fd readable; nothing is recorded
    // yet (nobody could), and try_wait records and returns the loss at once.
    assert!(readable_within(&task, Duration::from_secs(10)));
    assert_eq!(status_on_disk(&root, &id), "running");
    match task.try_wait().unwrap() {
        Some(TaskExit::Lost { reason }) => assert!(reason.contains("supervisor"), "{reason}"),
        other => panic!("expected lost, got {other:?}"),
    }
    assert_eq!(status_on_disk(&root, &id), "lost");
    // Reconcile killed what was left of the task.
    assert!(eventually(Duration::from_secs(5), || !common::alive(
        task_pid
    )));

    // A handle opened after the reconcile: readable at once, and wait says
    // lost without blocking.
    let mut again = root.exec.open(&id).unwrap();
    assert!(readable(&again));
    assert!(matches!(again.wait().unwrap(), TaskExit::Lost { .. }));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn wait_fd_of_a_task_opened_after_a_kill_9_of_its_supervisor() {
    if !root_or_skip("wait_fd_of_a_task_opened_after_a_kill_9_of_its_supervisor") {
        return;
    }
    let root = TestRoot::new();
    let task = root.sh("exec sleep 60");
    let id = task.id().to_string();
    let sup = task.supervisor_pid().unwrap();
    drop(task);
    kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
    assert!(eventually(Duration::from_secs(5), || !common::alive(sup)));
    // open reconciles (lost), and the handle's fd is ready at once.
    let mut task = root.exec.open(&id).unwrap();
    assert_eq!(task.state().unwrap().status, Status::Lost);
    assert!(readable(&task));
    assert!(matches!(
        task.try_wait().unwrap(),
        Some(TaskExit::Lost { .. })
    ));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn wait_fd_of_a_task_that_ended_before_open_is_ready_at_once() {
    if !root_or_skip("wait_fd_of_a_task_that_ended_before_open_is_ready_at_once") {
        return;
    }
    let root = TestRoot::new();
    let mut task = root.sh("exit 7");
    let id = task.id().to_string();
    assert_eq!(task.wait().unwrap().code(), Some(7));
    // The supervisor is gone (and reaped, by the tests' reaper): the new
    // handle has no process to open, and its fd is readable at once.
    let sup = task.supervisor_pid().unwrap();
    assert!(eventually(Duration::from_secs(5), || proc_state(sup).is_none()));
    let mut opened = root.exec.open(&id).unwrap();
    assert!(readable(&opened));
    assert_eq!(opened.try_wait().unwrap().unwrap().code(), Some(7));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn many_waits_from_one_thread_with_epoll() {
    if !root_or_skip("many_waits_from_one_thread_with_epoll") {
        return;
    }
    let root = TestRoot::new();
    let out = common::output(
        std::process::Command::new(common::target_dir().join("examples").join("many"))
            .env("NOMAD_SHIM", common::shim())
            .arg("--root")
            .arg(root.path())
            .arg("--cgroup-parent")
            .arg(&root.cgroup_parent)
            .arg("50"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "many 50: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["mode"], "epoll");
    assert_eq!(report["tasks"], 50);
    assert_eq!(report["failed"], 0);
    // It removed what it started.
    assert_eq!(root.exec.list().unwrap().len(), 0);
}

#[cfg(feature = "tokio")]
mod tokio_feature {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    #[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
    fn wait_async_on_many_tasks_from_one_current_thread_runtime() {
        if !root_or_skip("wait_async_on_many_tasks_from_one_current_thread_runtime") {
            return;
        }
        let root = TestRoot::new();
        // Distinct codes, ending in reverse start order, some at once.
        let n = 30;
        let tasks: Vec<_> = (0..n)
            .map(|i| root.sh(&format!("sleep 0.{:02}; exit {i}", (n - i) * 3)))
            .collect();
        let main_thread = std::thread::current().id();
        let exits = runtime().block_on(async {
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let handles: Vec<_> = tasks
                        .into_iter()
                        .map(|mut t| {
                            tokio::task::spawn_local(async move {
                                assert_eq!(std::thread::current().id(), main_thread);
                                t.wait_async().await
                            })
                        })
                        .collect();
                    let mut exits = Vec::new();
                    for h in handles {
                        exits.push(h.await.unwrap().unwrap());
                    }
                    exits
                })
                .await
        });
        let codes: Vec<_> = exits.iter().map(|e| e.code()).collect();
        assert_eq!(codes, (0..n).map(Some).collect::<Vec<_>>());
    }

    #[test]
    #[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
    fn wait_async_is_pending_while_the_task_runs_and_lost_after_kill_9() {
        if !root_or_skip("wait_async_is_pending_while_the_task_runs_and_lost_after_kill_9") {
            return;
        }
        let root = TestRoot::new();
        let mut task = root.sh("exec sleep 60");
        let sup = task.supervisor_pid().unwrap();
        let rt = runtime();
        // Not ready while it runs (the future is still pending after a while).
        let pending = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(200), task.wait_async())
                .await
                .is_err()
        });
        assert!(pending);
        kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
        let exit = rt
            .block_on(async {
                tokio::time::timeout(scaled(Duration::from_secs(10)), task.wait_async()).await
            })
            .expect("wait_async returned after the supervisor died")
            .unwrap();
        assert!(matches!(exit, TaskExit::Lost { .. }), "{exit:?}");
    }

    #[test]
    #[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
    fn wait_async_outside_a_runtime_is_an_error_not_a_panic() {
        if !root_or_skip("wait_async_outside_a_runtime_is_an_error_not_a_panic") {
            return;
        }
        let root = TestRoot::new();
        let mut task = root.sh("exec sleep 60");
        let mut fut = std::pin::pin!(task.wait_async());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Err(e)) => {
                assert!(e.to_string().contains("tokio runtime"), "{e}")
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Regression (issue 10 verification): in a runtime built without IO,
    /// tokio panicked inside wait_async.
    #[test]
    #[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
    fn wait_async_in_a_runtime_without_io_is_an_error_not_a_panic() {
        if !root_or_skip("wait_async_in_a_runtime_without_io_is_an_error_not_a_panic") {
            return;
        }
        let root = TestRoot::new();
        let mut task = root.sh("exec sleep 60");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt.block_on(task.wait_async()).unwrap_err();
        assert!(e.to_string().contains("IO enabled"), "{e}");
    }

    #[test]
    #[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
    fn many_waits_from_one_thread_with_tokio() {
        if !root_or_skip("many_waits_from_one_thread_with_tokio") {
            return;
        }
        let root = TestRoot::new();
        let out = common::output(
            std::process::Command::new(common::target_dir().join("examples").join("many"))
                .env("NOMAD_SHIM", common::shim())
                .arg("--root")
                .arg(root.path())
                .arg("--cgroup-parent")
                .arg(&root.cgroup_parent)
                .arg("--tokio")
                .arg("50"),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "many --tokio 50: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(report["mode"], "tokio");
        assert_eq!(report["tasks"], 50);
        assert_eq!(report["failed"], 0);
    }
}
