//! `nomad-shim`: the operator's CLI and, as the hidden subcommand
//! `__supervise`, the per-task supervisor the library runs.
// The C `main` below is the entry point, not std's (see `main`); the test
// harness brings its own.
#![cfg_attr(not(test), no_main)]

mod cli;
mod scratch;
mod supervisor;
mod sys;

/// The system allocator, but for the CLI up to the fork of `run`/`start` (scratch.rs).
#[global_allocator]
static ALLOC: scratch::ShimAlloc = scratch::ShimAlloc;

/// The process's entry point, called by glibc's start-up code: std's own
/// runtime set-up is skipped. It read `/proc/self/maps` (through
/// `pthread_getattr_np`) to find the main thread's stack guard, and mapped
/// an alternate signal stack with a SIGSEGV/SIGBUS handler that prints
/// "stack overflow" (and unmapped it again at exit): about 30 µs of every
/// exec of this binary here (a static no_main program against the same with
/// std's `main`, 1,000 execs each), which every task pays once, in the
/// library's exec of the supervisor or in the CLI's own start. What of it
/// this binary relies on, `runtime_init` does; the arguments and the
/// environment are std's as ever (glibc hands them to std's `.init_array`
/// hook). A stack overflow now ends the process with a plain SIGSEGV.
#[cfg(not(test))]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    sys::runtime_init();
    real_main()
}

#[cfg_attr(test, allow(dead_code))]
fn real_main() -> i32 {
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
