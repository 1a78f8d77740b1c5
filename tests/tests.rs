//! Integration tests: one binary, a module per area (ripgrep's layout).
//! They run as root against the real kernel, under a subreaper of their own
//! (see `common`).

mod common;

mod api;
mod asyncwait;
mod bad_input;
mod cgroup_tree;
mod cli;
mod cli_errors;
mod cli_errors7;
mod cli_update;
mod crash;
mod devices;
mod exec;
mod filesystem;
mod full_disk;
mod init;
mod isolation;
mod leftovers;
mod lifecycle;
mod limits;
mod nonblocking_kill;
mod observe;
mod perf;
mod protocol_compat;
mod races;
mod recovery;
mod scale;
mod static_build;
mod taskdir_misc;
mod tty;
