//! `nomad-shim`: the operator's CLI and, as the hidden subcommand
//! `__supervise`, the per-task supervisor the library runs.

mod cli;
mod scratch;
mod supervisor;
mod sys;

/// The system allocator, but for the CLI up to the fork of `run`/`start` (scratch.rs).
#[global_allocator]
static ALLOC: scratch::ShimAlloc = scratch::ShimAlloc;

fn main() {
    // The supervisor path skips clap entirely: it is on every task's start
    // path, and its memory is paid once per task.
    let mut args = std::env::args_os();
    if args
        .nth(1)
        .is_some_and(|a| a == nomad_shim::executor::SUPERVISE_SUBCOMMAND)
    {
        let (Some(root), Some(id), None) = (args.next(), args.next(), args.next()) else {
            eprintln!("usage: nomad-shim __supervise ROOT ID (run by the library, not by hand)");
            std::process::exit(125);
        };
        supervisor::main(&root, &id);
    }
    std::process::exit(cli::main());
}
