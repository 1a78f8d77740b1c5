//! Host mounts (Nomad's volume mounts): `--mount src=HOST,dst=TASK[,ro]`.
//!
//! The destination is a path inside the new root. Its mount point is made by
//! `taskdir::build`, which replaces a symlink found on the way by a fresh
//! directory; the child then opens it with `openat2(RESOLVE_BENEATH|
//! RESOLVE_NO_SYMLINKS)` under the new root and mounts through the fd's
//! `/proc/self/fd/N`. `..` is refused by validation (and would be refused by
//! `RESOLVE_BENEATH`), so a destination can never name a host path.

use nix::mount::MsFlags;

use super::{keep_noexec, source_kind, Builder, Source};
use crate::isolate::cstring;
use crate::isolate::error::IsolateError;
use crate::isolate::spec::{relative_dst, IsolationSpec};

impl Builder<'_> {
    /// One bind per mount, in the spec's order, read-write unless
    /// `readonly`; always `nosuid,nodev` (and `noexec` where the source's
    /// own mount has it).
    pub(super) fn volumes(&mut self, spec: &IsolationSpec) -> Result<(), IsolateError> {
        for m in &spec.mounts {
            let kind = source_kind(&m.src)?;
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | keep_noexec(&m.src);
            if m.readonly {
                flags |= MsFlags::MS_RDONLY;
            }
            let src = Source::Host(cstring(&m.src)?);
            self.bind(src, &relative_dst(&m.dst), kind, flags, Some(&m.src))?;
        }
        Ok(())
    }
}
