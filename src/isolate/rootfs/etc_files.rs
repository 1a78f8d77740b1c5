//! `/etc/resolv.conf` and `/etc/hosts` in the task's root: the host's,
//! read-only, or, with a `dns` block, a task-private resolv.conf written in
//! the task's state directory (`<root>/<id>/`, 0700, removed with the task)
//! and bound read-only over `/etc/resolv.conf` (as Nomad's
//! `GenerateDNSMount` does). Not in the task dir: that is the task's `/`,
//! where the file would show as `/resolv.conf` and outlive `run --rm`.
//!
//! The host's files usually arrive with the read-only `/etc` bind. Two host
//! layouts need more, because that bind is not recursive and keeps symlinks:
//! * the file is itself a mount point (container hosts bind it): the bind of
//!   `/etc` shows the file under it, so the host's file is bound over it;
//! * the file is a symlink out of `/etc` (systemd-resolved's
//!   `/run/systemd/resolve/stub-resolv.conf`, resolvconf's
//!   `/run/resolvconf/resolv.conf`): the host directory of its target is
//!   bound read-only where the link leads inside the root (resolved by name
//!   from the root's `/etc`), unless a chroot env bind already covers that
//!   path, so that the link resolves inside the root.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::{Builder, Kind, Source};
use crate::isolate::cstring;
use crate::isolate::error::IsolateError;
use crate::isolate::fsview_spec::DnsSpec;
use crate::isolate::spec::{relative_dst, BindSpec, IsolationSpec, RESERVED};

/// The task-private resolv.conf, in the task's state directory (root's,
/// 0700, never inside the task's root; only the bind source needs to be
/// reachable, by the child before it drops its credentials).
pub(crate) const PRIVATE_RESOLV_CONF: &str = "resolv.conf";

/// The files handled here.
const FILES: &[&str] = &["resolv.conf", "hosts"];

/// Where a file goes.
enum Target {
    /// Nothing to bind: the chroot env already shows the host's file.
    Done,
    /// Bind onto `rel`; `mountpoint`: create it in the task dir first.
    At { rel: PathBuf, mountpoint: bool },
}

impl Builder<'_> {
    /// Plans the binds of `/etc/resolv.conf` and `/etc/hosts` (after the
    /// chroot env: they may land on files of its read-only `/etc`).
    pub(super) fn etc_files(
        &mut self,
        spec: &IsolationSpec,
        env: &[BindSpec],
        state_dir: &Path,
    ) -> Result<(), IsolateError> {
        for name in FILES {
            let private = *name == "resolv.conf" && spec.dns.is_some();
            // The host's file: from the chroot env's /etc, if it has one.
            let host = match env.iter().find(|b| b.dst == Path::new("/etc")) {
                Some(etc) => etc.src.join(name),
                None => Path::new("/etc").join(name),
            };
            let Target::At { rel, mountpoint } = self.etc_target(name, env, private)? else {
                continue;
            };
            let src = if private {
                state_dir.join(PRIVATE_RESOLV_CONF)
            } else {
                host
            };
            // Read-only with the root (ReadOnlyTree), noexec kept as the
            // chroot env's binds.
            let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            let n = self.mountpoints.len();
            self.bind(
                Source::Host(cstring(&src)?),
                &rel,
                Kind::File,
                flags,
                Some(&src),
            )?;
            if !mountpoint {
                // Onto a file of a chroot env bind: no mount point to make.
                self.mountpoints.truncate(n);
            }
        }
        Ok(())
    }

    /// Decides where `/etc/<name>` is bound, if anywhere.
    fn etc_target(
        &mut self,
        name: &str,
        env: &[BindSpec],
        private: bool,
    ) -> Result<Target, IsolateError> {
        let dst = Path::new("/etc").join(name);
        let rel = relative_dst(&dst);
        let unplaceable = |path: PathBuf| Err(IsolateError::ResolvConfUnplaceable { path });
        // A chroot env entry for the file itself: it is there already.
        if env.iter().any(|b| b.dst == dst) {
            return Ok(if private {
                Target::At {
                    rel,
                    mountpoint: false,
                }
            } else {
                Target::Done
            });
        }
        let Some(etc) = env.iter().find(|b| b.dst == Path::new("/etc")) else {
            // No /etc from the chroot env: an etc/ of the task dir's own.
            let exists = private || std::fs::metadata(&dst).is_ok_and(|m| m.is_file());
            return Ok(if exists {
                Target::At {
                    rel,
                    mountpoint: true,
                }
            } else {
                Target::Done
            });
        };
        let inside = etc.src.join(name);
        let Ok(md) = std::fs::symlink_metadata(&inside) else {
            return if private {
                unplaceable(inside)
            } else {
                Ok(Target::Done)
            };
        };
        if md.is_file() {
            // The bind of /etc is not recursive: a file that is a mount of
            // its own on the host must be bound itself (statx's mount-root
            // attribute; on a kernel without it, a device other than /etc's).
            let own_mount = match crate::sys::is_mount_root(&cstring(&inside)?) {
                Some(root) => root,
                None => std::fs::metadata(&etc.src).is_ok_and(|e| e.dev() != md.dev()),
            };
            return Ok(if private || own_mount {
                Target::At {
                    rel,
                    mountpoint: false,
                }
            } else {
                Target::Done
            });
        }
        let link = match std::fs::read_link(&inside) {
            Ok(link) if md.is_symlink() => link,
            _ => {
                return if private {
                    unplaceable(inside)
                } else {
                    Ok(Target::Done)
                }
            }
        };
        // A symlink. Where it leads inside the root (`lexical`: resolved
        // from the root's /etc, as the task's open will), and the host
        // directory of the file it leads to now (what the task must see
        // there; a dangling link has none).
        let lexical = lexical_join(&etc.dst, &link);
        let host_dir = std::fs::canonicalize(&inside)
            .ok()
            .and_then(|t| t.parent().map(Path::to_path_buf));
        let (Some(dir), Some(host_dir)) = (lexical.parent(), host_dir) else {
            return if private {
                unplaceable(inside)
            } else {
                Ok(Target::Done)
            };
        };
        // Already inside a chroot env bind: the link resolves there (or the
        // root cannot be changed there anyway).
        let visible = env.iter().any(|b| lexical.starts_with(&b.dst));
        if !visible {
            if !self.can_bind_dir(dir, env) {
                return if private {
                    unplaceable(inside)
                } else {
                    Ok(Target::Done)
                };
            }
            let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            let src = Source::Host(cstring(&host_dir)?);
            self.bind(src, &relative_dst(dir), Kind::Dir, flags, Some(&host_dir))?;
        }
        Ok(if private {
            Target::At {
                rel: relative_dst(&lexical),
                mountpoint: false,
            }
        } else {
            Target::Done
        })
    }

    /// A host directory can be bound at its own path in the root: not `/`,
    /// not in the task's own directories, not in or over a chroot env bind,
    /// not bound already.
    fn can_bind_dir(&self, dir: &Path, env: &[BindSpec]) -> bool {
        let rel = relative_dst(dir);
        let Some(first) = rel.components().next() else {
            return false;
        };
        let reserved = RESERVED.iter().any(|r| first.as_os_str() == *r);
        let overlaps = env.iter().any(|b| {
            let b = relative_dst(&b.dst);
            rel.starts_with(&b) || b.starts_with(&rel)
        });
        let planned = self.mountpoints.iter().any(|m| m.rel == rel);
        !reserved && !overlaps && !planned
    }
}

/// `base.join(link)` with `.` and `..` resolved by name only (no file
/// system access): where a symlink in `base` leads inside the root.
fn lexical_join(base: &Path, link: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in base.join(link).components() {
        match c {
            Component::RootDir => out = PathBuf::from("/"),
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Writes the task-private resolv.conf into the task's state directory
/// ([`DnsSpec::render`]): the directory is opened `O_NOFOLLOW`, whatever is
/// at the name is unlinked (a symlink: the link, never its target), and the
/// file is created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so no other file is
/// ever written.
pub(crate) fn write_resolv_conf(state_dir: &Path, dns: &DnsSpec) -> Result<(), IsolateError> {
    let path = state_dir.join(PRIVATE_RESOLV_CONF);
    let err = |source| IsolateError::WriteResolvConf {
        path: path.clone(),
        source,
    };
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir = open(state_dir, dir_flags, Mode::empty()).map_err(err)?;
    match unlinkat(&dir, PRIVATE_RESOLV_CONF, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(err(e)),
    }
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd: OwnedFd = openat(
        &dir,
        PRIVATE_RESOLV_CONF,
        flags,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(err)?;
    // What the spec leaves out comes from the host's file (following its
    // symlink: it is the host's own, trusted); none at all is fine.
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    std::fs::File::from(fd)
        .write_all(dns.render(&host).as_bytes())
        .map_err(|e| err(Errno::from_raw(e.raw_os_error().unwrap_or(libc_eio()))))
}

/// `EIO`, for a write error without an errno.
fn libc_eio() -> i32 {
    Errno::EIO as i32
}
