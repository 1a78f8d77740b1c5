//! Issue 11 point 1: the nomad-shim that cargo builds is statically linked
//! (.cargo/config.toml), and so never asks glibc's NSS for a user: a static
//! glibc program that does loads `libnss_systemd.so.2` & co. at run time and
//! crashes in them (it did: `run --user postgres`, `--user 101` and
//! `--user nosuchuser` all segfaulted with `passwd: files systemd`).

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{self, root_or_skip, shim, TestRoot};

/// PT_INTERP, the program header naming the dynamic loader (elf(5)).
const PT_INTERP: u32 = 3;

/// The `p_type` of every program header of a 64-bit little-endian ELF file.
fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELFCLASS64");
    assert_eq!(elf[5], 1, "not little-endian");
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(elf[o..o + 4].try_into().unwrap())
        })
        .collect()
}

/// glibc's user and group lookups, each of which goes through NSS.
const NSS_LOOKUPS: [&str; 12] = [
    "getpwnam",
    "getpwnam_r",
    "getpwuid",
    "getpwuid_r",
    "getpwent",
    "getgrnam",
    "getgrnam_r",
    "getgrgid",
    "getgrgid_r",
    "getgrouplist",
    "initgroups",
    "getspnam",
];

/// The functions defined in `bin`, by `nm` (binutils, which links Rust).
fn defined_functions(bin: &Path) -> Vec<String> {
    let out = Command::new("nm").arg(bin).output().expect("run nm");
    assert!(out.status.success(), "nm {}: {out:?}", bin.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_addr, kind, name) = (f.next()?, f.next()?, f.next()?);
            matches!(kind, "T" | "t" | "W" | "w" | "i").then(|| name.to_string())
        })
        .collect()
}

#[test]
fn the_built_binary_is_static_and_links_no_nss_lookup() {
    let bin = shim();
    let elf = std::fs::read(&bin).unwrap();
    let types = program_header_types(&elf);
    assert!(!types.is_empty(), "no program headers in {}", bin.display());
    assert!(
        !types.contains(&PT_INTERP),
        "{} has a PT_INTERP header: it is dynamically linked (see .cargo/config.toml)",
        bin.display()
    );
    // The debug build keeps its symbol table; the linker dropped every
    // function nothing reaches (--gc-sections), so a lookup still listed is
    // one the binary can call.
    let functions = defined_functions(&bin);
    assert!(
        functions.iter().any(|f| f == "main"),
        "{}: no symbol table to check",
        bin.display()
    );
    let linked: Vec<&str> = NSS_LOOKUPS
        .into_iter()
        .filter(|l| functions.iter().any(|f| f == l))
        .collect();
    assert!(
        linked.is_empty(),
        "{} links glibc's NSS lookups {linked:?}",
        bin.display()
    );
    // A canary for the check itself: glibc's NSS machinery is there (fork
    // reaches it), only the lookups are not.
    assert!(functions.iter().any(|f| f.starts_with("__nss_")));
}

/// A user database and an nsswitch.conf of the test's own, bound over the
/// host's in a mount namespace of its own (`unshare -m`, private
/// propagation: nothing reaches the host's mounts), where `cmd` runs.
struct FakeEtc {
    dir: tempfile::TempDir,
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    # a comment, and a NIS compat line nss_files skips\n\
    +@netgroup::::::\n\
    shimuser:x:4711:4712:a test user:/home/shimuser:/bin/sh\n\
    shimuser:x:5000:5000:a later duplicate, never used:/nowhere:/bin/sh\n";
const GROUP: &str = "root:x:0:\n\
    shimuser:x:4712:\n\
    extra1:x:4713:someone,shimuser\n\
    extra2:x:4714:shimuser\n\
    other:x:4715:someone\n";
/// Every source glibc knows besides files: a static build that consulted
/// NSS would dlopen these (systemd is installed on Debian 12, where it
/// crashed the static binary).
const NSSWITCH: &str = "passwd: files systemd sss ldap\n\
    group: files systemd sss ldap\n\
    shadow: files systemd\n\
    initgroups: files systemd sss\n";

impl FakeEtc {
    fn new() -> FakeEtc {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("passwd", PASSWD),
            ("group", GROUP),
            ("nsswitch.conf", NSSWITCH),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        FakeEtc { dir }
    }

    /// `cli ARGS` in the private mount namespace.
    fn run(&self, cli: Command, args: &[&str]) -> Output {
        let d = self.dir.path().display();
        let script = format!(
            "mount --bind {d}/passwd /etc/passwd && mount --bind {d}/group /etc/group && \
             mount --bind {d}/nsswitch.conf /etc/nsswitch.conf && exec \"$@\""
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(script)
            .arg("sh")
            .arg(cli.get_program())
            .args(cli.get_args())
            .args(args);
        common::output(&mut cmd)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The Uid, Gid and Groups lines of the task's /proc/self/status.
const SHOW_IDS: [&str; 4] = ["/bin/grep", "-E", "^(Uid|Gid|Groups):", "/proc/self/status"];

fn assert_ids(out: &Output, uid: u32, gid: u32, groups: &str) {
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let want = format!(
        "Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{gid}\t{gid}\t{gid}\t{gid}\nGroups:\t{groups} \n"
    );
    assert_eq!(stdout, want, "{out:?}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --ignored)"]
fn user_names_resolve_from_etc_files_whatever_nsswitch_conf_says() {
    if !root_or_skip("user_names_resolve_from_etc_files_whatever_nsswitch_conf_says") {
        return;
    }
    let root = TestRoot::new();
    let etc = FakeEtc::new();
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        all.push("--");
        all.extend_from_slice(&SHOW_IDS);
        etc.run(root.cli(), &all)
    };

    // By name: the first entry, its primary group, and every group that
    // lists it, as getgrouplist(3) orders them (the primary one first).
    assert_ids(&run(&["--user", "shimuser"]), 4711, 4712, "4712 4713 4714");
    // By number: the same entry, found by uid.
    assert_ids(&run(&["--user", "4711"]), 4711, 4712, "4712 4713 4714");
    // A group by name replaces the primary group.
    assert_ids(
        &run(&["--user", "shimuser", "--group", "other"]),
        4711,
        4715,
        "4713 4714 4715",
    );
    // A uid with no entry: as is, no supplementary groups.
    assert_ids(&run(&["--user", "4800", "--group", "4801"]), 4800, 4801, "");

    // A name only another NSS source could know: a clear error naming the
    // option and how to pass ids, exit 125 — not a crash.
    for (args, option) in [
        (&["--user", "nosuchuser"][..], "--user nosuchuser"),
        (
            &["--user", "shimuser", "--group", "nosuchgroup"][..],
            "--group nosuchgroup",
        ),
    ] {
        let out = run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {out:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        for part in [option, "/etc/", "--user UID --group GID"] {
            assert!(err.contains(part), "{part:?} missing from: {err}");
        }
    }
    // The namespace kept its binds to itself.
    let host = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(!host.contains("shimuser:x:4711"), "the fake passwd leaked");
}
