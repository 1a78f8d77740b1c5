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
            let kind = source_kind(&m.src).map_err(super::for_option("--mount src="))?;
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

#[cfg(test)]
mod tests {
    use super::super::source_kind;
    use crate::isolate::error::IsolateError;
    use std::path::Path;

    /// Item 13: a path the user names (chroot env or mount source) that
    /// does not exist is an error naming it, never skipped.
    #[test]
    fn a_missing_source_named_by_the_user_is_an_error_naming_it() {
        let missing = Path::new("/nonexistent/nomad-shim-test");
        match source_kind(missing) {
            Err(e @ IsolateError::StatSource { .. }) => {
                assert!(
                    e.to_string().contains("/nonexistent/nomad-shim-test"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        let tmp = tempfile::tempdir().unwrap();
        let dangling = tmp.path().join("lib32");
        std::os::unix::fs::symlink("usr/lib32", &dangling).unwrap();
        assert!(matches!(
            source_kind(&dangling),
            Err(IsolateError::StatSource { .. })
        ));
    }
}
