//! Users and groups as NSS `files` reads them: `/etc/passwd` and
//! `/etc/group`, never glibc's `getpwnam(3)` and kin.
//!
//! A statically linked glibc program that calls `getpwnam`, `getpwuid`,
//! `getgrnam`, `getgrouplist` or `initgroups` still loads the NSS modules
//! `nsswitch.conf(5)` names (`libnss_systemd.so.2`, `libnss_sss.so.2`, ...)
//! with `dlopen` at run time, built against another libc than the one linked
//! in, and crashes in them. So a build with `crt-static` (the shipped
//! `nomad-shim`) reads the two files itself, as `nss_files` does
//! (`passwd(5)`, `group(5)`): the first entry that matches wins, malformed
//! lines and comments are skipped, and a user's supplementary groups are the
//! groups that list the user as a member. Names known only to LDAP, SSSD or
//! systemd are resolved by the library in a dynamically linked agent, which
//! keeps full NSS; to this binary they are an error that says to pass ids.

use std::io;
use std::path::{Path, PathBuf};

use super::error::IsolateError;

/// A line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PwEntry {
    /// Field 1.
    pub(crate) name: String,
    /// Field 3.
    pub(crate) uid: u32,
    /// Field 4.
    pub(crate) gid: u32,
    /// Field 6.
    pub(crate) home: String,
}

/// A line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GrEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The two files, under a root (`/` but in tests).
#[derive(Debug, Clone)]
pub(crate) struct UserDb {
    passwd: PathBuf,
    group: PathBuf,
}

impl UserDb {
    /// `/etc/passwd` and `/etc/group` of this host.
    pub(crate) fn host() -> UserDb {
        UserDb::under(Path::new("/"))
    }

    /// `<root>/etc/passwd` and `<root>/etc/group`.
    pub(crate) fn under(root: &Path) -> UserDb {
        UserDb {
            passwd: root.join("etc/passwd"),
            group: root.join("etc/group"),
        }
    }

    /// The first passwd entry named `name`.
    pub(crate) fn user_by_name(&self, name: &str) -> Result<Option<PwEntry>, IsolateError> {
        Ok(self.passwd_entries()?.into_iter().find(|e| e.name == name))
    }

    /// The first passwd entry with uid `uid`.
    pub(crate) fn user_by_uid(&self, uid: u32) -> Result<Option<PwEntry>, IsolateError> {
        Ok(self.passwd_entries()?.into_iter().find(|e| e.uid == uid))
    }

    /// The gid of the first group named `name`.
    pub(crate) fn gid_by_name(&self, name: &str) -> Result<Option<u32>, IsolateError> {
        Ok(self
            .group_entries()?
            .into_iter()
            .find(|g| g.name == name)
            .map(|g| g.gid))
    }

    /// What `getgrouplist(3)` returns: `gid` first, then the gid of every
    /// group that lists `user` as a member, in file order, each once.
    pub(crate) fn group_list(&self, user: &str, gid: u32) -> Result<Vec<u32>, IsolateError> {
        let mut groups = vec![gid];
        for g in self.group_entries()? {
            if g.members.iter().any(|m| m == user) && !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
        Ok(groups)
    }

    /// The "not in the files" error for a user or group name.
    pub(crate) fn unknown(&self, what: &'static str, name: &str) -> IsolateError {
        let file = if what == "group" {
            &self.group
        } else {
            &self.passwd
        };
        IsolateError::NotInUserFiles {
            what,
            name: name.to_string(),
            file: file.clone(),
        }
    }

    fn passwd_entries(&self) -> Result<Vec<PwEntry>, IsolateError> {
        Ok(lines(&read(&self.passwd)?)
            .filter_map(|f| {
                // name:password:uid:gid:gecos:home:shell
                (f.len() >= 7).then_some(())?;
                Some(PwEntry {
                    name: f[0].to_string(),
                    uid: parse_id(f[2])?,
                    gid: parse_id(f[3])?,
                    home: f[5].to_string(),
                })
            })
            .collect())
    }

    fn group_entries(&self) -> Result<Vec<GrEntry>, IsolateError> {
        Ok(lines(&read(&self.group)?)
            .filter_map(|f| {
                // name:password:gid:member,member,...
                (f.len() >= 4).then_some(())?;
                Some(GrEntry {
                    name: f[0].to_string(),
                    gid: parse_id(f[2])?,
                    members: f[3]
                        .split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            })
            .collect())
    }
}

/// The file's text; a missing file is an empty database, as for nss_files.
fn read(path: &Path) -> Result<String, IsolateError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(IsolateError::ReadUserFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The colon-separated fields of each entry: blank lines, `#` comments and
/// the `+`/`-` lines of the old NIS compat syntax are no entries.
fn lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| !f[0].is_empty())
}

/// A decimal id; `(uid_t)-1` is none (setresuid(2) reads it as "unchanged").
fn parse_id(s: &str) -> Option<u32> {
    s.parse::<u32>().ok().filter(|&id| id != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(passwd: &str, group: &str) -> (tempfile::TempDir, UserDb) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.path().join("etc/group"), group).unwrap();
        let db = UserDb::under(dir.path());
        (dir, db)
    }

    const PASSWD: &str = "# comment\n\
        root:x:0:0:root:/root:/bin/bash\n\
        \n\
        +nisuser::::::\n\
        broken:x:notanumber:1:::\n\
        short:x:5\n\
        postgres:x:101:104:PostgreSQL:/var/lib/postgresql:/bin/bash\n\
        postgres:x:999:999:shadowed:/nowhere:/bin/sh\n\
        alias:x:101:7::/home/alias:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        adm:x:4:syslog,postgres\n\
        postgres:x:104:\n\
        ssl-cert:x:108:postgres , other\n\
        again:x:104:postgres\n\
        bad:x:-1:postgres\n";

    #[test]
    fn first_match_wins_and_bad_lines_are_skipped() {
        let (_d, db) = db(PASSWD, GROUP);
        let pg = db.user_by_name("postgres").unwrap().unwrap();
        assert_eq!(
            (pg.uid, pg.gid, pg.home.as_str()),
            (101, 104, "/var/lib/postgresql")
        );
        assert_eq!(db.user_by_uid(101).unwrap().unwrap().name, "postgres");
        assert_eq!(db.user_by_uid(0).unwrap().unwrap().home, "/root");
        for absent in ["broken", "short", "nisuser", "+nisuser", "# comment"] {
            assert_eq!(db.user_by_name(absent).unwrap(), None, "{absent}");
        }
        assert_eq!(db.user_by_uid(5).unwrap(), None);
        assert_eq!(db.gid_by_name("ssl-cert").unwrap(), Some(108));
        assert_eq!(db.gid_by_name("nope").unwrap(), None);
    }

    #[test]
    fn group_list_is_the_primary_gid_then_memberships_once_each() {
        let (_d, db) = db(PASSWD, GROUP);
        assert_eq!(db.group_list("postgres", 104).unwrap(), vec![104, 4, 108]);
        assert_eq!(
            db.group_list("postgres", 50).unwrap(),
            vec![50, 4, 108, 104]
        );
        assert_eq!(db.group_list("root", 0).unwrap(), vec![0]);
        assert_eq!(db.group_list("other", 9).unwrap(), vec![9, 108]);
    }

    #[test]
    fn missing_files_are_empty_and_unknown_names_say_how_to_pass_ids() {
        let dir = tempfile::tempdir().unwrap();
        let db = UserDb::under(dir.path());
        assert_eq!(db.user_by_name("root").unwrap(), None);
        assert_eq!(db.group_list("root", 3).unwrap(), vec![3]);
        let msg = db.unknown("user", "ldapuser").to_string();
        assert!(msg.contains("\"ldapuser\""), "{msg}");
        assert!(msg.contains("etc/passwd"), "{msg}");
        assert!(msg.contains("--user UID --group GID"), "{msg}");
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: read(2) fails with EISDIR.
        std::fs::create_dir_all(dir.path().join("etc/passwd")).unwrap();
        let err = UserDb::under(dir.path()).user_by_name("x").unwrap_err();
        assert!(
            matches!(&err, IsolateError::ReadUserFile { path, .. } if path.ends_with("etc/passwd")),
            "{err}"
        );
    }

    #[test]
    fn the_hosts_root_is_there() {
        let root = UserDb::host().user_by_name("root").unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
    }
}
