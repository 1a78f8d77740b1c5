//! `exec` (issue 8), side by side: start-to-exit of `nomad-shim exec ID --
//! /bin/true` against the task's own CLI start-to-exit of `/bin/true`
//! (`nomad-shim run --rm` with the same isolation), in the same rounds; and
//! keystroke echo through `exec -t`, from a pty pair driven by this program.
//!
//! ```text
//! cargo build --release -p nomad-shim-bin
//! NOMAD_SHIM=target/$(rustc --print host-tuple)/release/nomad-shim cargo bench -p nomad-shim --bench exec
//! ```
//!
//! * Isolation of both: `--task-dir --chroot --user nobody --ns pid,ipc,uts`
//!   (the task of the issue's tests), cgroup v1 or v2 as the host has.
//! * Each round runs `exec` and `run` once, alternating which goes first;
//!   medians and the ratio are printed, with p10/p90. The machine is shared
//!   and noisy: a report, never a pass/fail test.
//! * Keystroke echo: the CLI runs `exec -it ID -- /bin/cat` on the slave of
//!   a pty pair of ours (so its terminal goes raw); one byte written to our
//!   master travels to the CLI, to the exec's pty master, is echoed by that
//!   terminal's line discipline, and comes back through the CLI to our
//!   master: the time from the write to the byte read back is one sample.
//!
//! Knobs: `BENCH_ROUNDS` (100), `BENCH_KEYS` (300), `NOMAD_SHIM`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

const CGROUP_PARENT: &str = "nomad-shim-bench-exec";
const ISOLATION: &[&str] = &["--chroot", "--user", "nobody", "--ns", "pid,ipc,uts"];

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("exec bench: not run without --bench (cargo bench -p nomad-shim --bench exec)");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("exec bench: SKIPPED: needs root");
        return;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("exec bench: PR_SET_CHILD_SUBREAPER: {e}");
        std::process::exit(1);
    }
    let code = match bench() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("exec bench: {e}");
            1
        }
    };
    reap_all();
    std::process::exit(code);
}

fn num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn shim() -> PathBuf {
    std::env::var_os("NOMAD_SHIM")
        .map(PathBuf::from)
        .or_else(|| nomad_shim::find_shim(None).ok())
        .unwrap_or_else(|| PathBuf::from("target/release/nomad-shim"))
}

struct Cli {
    shim: PathBuf,
    root: PathBuf,
}

impl Cli {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.shim);
        c.arg("--root")
            .arg(&self.root)
            .arg("--cgroup-parent")
            .arg(CGROUP_PARENT)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// Runs the command to its end; its duration.
    fn time(&self, c: &mut Command) -> Res<Duration> {
        let t0 = Instant::now();
        let out = c.output().map_err(|e| format!("spawn: {e}"))?;
        let took = t0.elapsed();
        if !out.status.success() {
            return Err(format!(
                "{c:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(took)
    }
}

fn bench() -> Res<()> {
    let tmp = tempfile::Builder::new()
        .prefix("nomad-shim-bench-exec.")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let cli = Cli {
        shim: shim(),
        root: tmp.path().join("root"),
    };
    let result = measure(&cli, tmp.path());
    // The long-running task goes whatever happened.
    let _ = cli
        .cmd()
        .args(["stop", "target", "--timeout", "1s"])
        .output();
    let _ = cli.cmd().args(["rm", "--force", "target"]).output();
    remove_cgroup_parent();
    result
}

fn measure(cli: &Cli, tmp: &Path) -> Res<()> {
    let rounds = num("BENCH_ROUNDS", 100);
    let keys = num("BENCH_KEYS", 300);
    let task_dir = tmp.join("target-dir");
    let mut start = cli.cmd();
    start
        .args(["start", "--id", "target", "--task-dir"])
        .arg(&task_dir)
        .args(ISOLATION)
        .args(["--", "/bin/sleep", "100000"]);
    cli.time(&mut start)?;

    let mut exec_t = Vec::with_capacity(rounds);
    let mut run_t = Vec::with_capacity(rounds);
    for round in 0..rounds + 5 {
        let mut exec = cli.cmd();
        exec.args(["exec", "target", "--", "/bin/true"]);
        let dir = tmp.join(format!("run-{round}"));
        let mut run = cli.cmd();
        run.args(["run", "--rm", "--task-dir"])
            .arg(&dir)
            .args(ISOLATION)
            .args(["--", "/bin/true"]);
        let (e, r) = if round % 2 == 0 {
            let e = cli.time(&mut exec)?;
            (e, cli.time(&mut run)?)
        } else {
            let r = cli.time(&mut run)?;
            (cli.time(&mut exec)?, r)
        };
        let _ = std::fs::remove_dir_all(&dir);
        // The first rounds warm the page cache and the cgroup code paths.
        if round >= 5 {
            exec_t.push(e);
            run_t.push(r);
        }
    }
    let (e, r) = (stats(&mut exec_t), stats(&mut run_t));
    println!(
        "start-to-exit of /bin/true, {rounds} rounds, isolation: {}",
        ISOLATION.join(" ")
    );
    println!("| variant | median | p10 | p90 |");
    println!("|---|---:|---:|---:|");
    println!(
        "| `nomad-shim exec target -- /bin/true` | {} | {} | {} |",
        ms(e.1),
        ms(e.0),
        ms(e.2)
    );
    println!(
        "| `nomad-shim run --rm … -- /bin/true` | {} | {} | {} |",
        ms(r.1),
        ms(r.0),
        ms(r.2)
    );
    println!(
        "ratio exec / run (medians): {:.2}",
        e.1.as_secs_f64() / r.1.as_secs_f64()
    );

    let mut echo = keystrokes(cli, keys)?;
    let k = stats(&mut echo);
    println!(
        "keystroke echo through `exec -t`, {keys} keys: median {} p10 {} p90 {} max {}",
        ms(k.1),
        ms(k.0),
        ms(k.2),
        ms(*echo.last().unwrap())
    );
    Ok(())
}

/// p10, median, p90 (sorts `v`).
fn stats(v: &mut [Duration]) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.1), at(0.5), at(0.9))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Reads from `master` until `want` has been seen `times` times (or 5 s
/// pass).
fn read_until(master: &OwnedFd, want: &[u8], times: usize) -> Res<()> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while seen.windows(want.len()).filter(|w| *w == want).count() < times {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no {:?} from the terminal after 5 s (got {:?})",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(&seen)
            ));
        }
        let mut p = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut p, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll the pty: {e}")),
        }
        match nix::unistd::read(master.as_fd(), &mut buf) {
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("read the pty: {e}")),
        }
    }
    Ok(())
}

fn write_all(fd: &OwnedFd, b: &[u8]) -> Res<()> {
    let n = nix::unistd::write(fd, b).map_err(|e| e.to_string())?;
    if n == b.len() {
        Ok(())
    } else {
        Err("short write to the pty".into())
    }
}

/// `exec -it target -- /bin/cat` on a pty of ours; one sample per key.
fn keystrokes(cli: &Cli, keys: usize) -> Res<Vec<Duration>> {
    let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
    let slave = |pty: &nix::pty::OpenptyResult| -> Res<Stdio> {
        Ok(Stdio::from(
            pty.slave.try_clone().map_err(|e| e.to_string())?,
        ))
    };
    let mut cmd = Command::new(&cli.shim);
    cmd.arg("--root")
        .arg(&cli.root)
        .args(["exec", "-it", "target", "--", "/bin/cat"])
        .stdin(slave(&pty)?)
        .stdout(slave(&pty)?)
        .stderr(slave(&pty)?);
    let mut child = cmd.spawn().map_err(|e| format!("spawn exec -it: {e}"))?;
    drop(pty.slave);
    let master = pty.master;
    // Our terminal goes raw (the CLI's doing): from then on we echo
    // nothing, so every byte read back was echoed by the exec's terminal,
    // through the relay. Ready when a first key comes back that way.
    let local = nix::sys::termios::LocalFlags::ECHO | nix::sys::termios::LocalFlags::ICANON;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ours = nix::sys::termios::tcgetattr(master.as_fd()).map_err(|e| e.to_string())?;
        if !ours.local_flags.intersects(local) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the CLI did not put its terminal in raw mode".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    write_all(&master, b"r")?;
    read_until(&master, b"r", 1)?;
    let mut samples = Vec::with_capacity(keys);
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    for i in 0..keys {
        let key = letters[i % letters.len()];
        let t0 = Instant::now();
        write_all(&master, &[key])?;
        read_until(&master, &[key], 1).map_err(|e| format!("key {i}: {e}"))?;
        samples.push(t0.elapsed());
        // A line now and then (the echo of the newline, then cat's copy
        // of the line: two newlines back).
        if i % 40 == 39 {
            write_all(&master, b"\r")?;
            read_until(&master, b"\n", 2)?;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Ctrl-D at the start of a line: cat reads EOF, the CLI exits 0.
    write_all(&master, b"\r\x04")?;
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("exec -it exited {status}"));
    }
    Ok(samples)
}

fn remove_cgroup_parent() {
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir(e.path().join(CGROUP_PARENT));
        }
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(CGROUP_PARENT));
}

/// Reaps the supervisors re-parented to us.
fn reap_all() {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
