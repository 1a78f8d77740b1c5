//! `completions` and `man`: a shell completion script (clap_complete) and a
//! roff manual page (clap_mangen), both generated from the same clap
//! definitions as the parser, so they cannot drift from it.

use std::io::Write;

use clap::CommandFactory;

use super::{Cli, EXIT_ERROR};

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh (compsys).
    Zsh,
    /// fish.
    Fish,
}

/// `completions SHELL`: the script on stdout.
pub fn completions(shell: Shell) -> i32 {
    let mut cmd = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Into a buffer first: clap_complete panics on a write error, and a
    // closed pipe (`| head`) is an error to report, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "nomad-shim", &mut script);
    if matches!(shell, clap_complete::Shell::Bash) {
        script = fix_bash_hyphen(&script);
    }
    match std::io::stdout().write_all(&script) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("nomad-shim: write the completion script to stdout: {e}");
            EXIT_ERROR
        }
    }
}

/// clap_complete's bash script for a hyphenated binary name computes the
/// command as `nomad__shim__subcmd__run` but names its `case` arms
/// `nomad__subcmd__shim__subcmd__run` (clap-rs/clap#6421), so no verb's
/// options ever complete. One spelling for both.
fn fix_bash_hyphen(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace("nomad__subcmd__shim", "nomad__shim")
        .into_bytes()
}

/// `man`: nomad-shim(1) and a section per verb, as one roff page on stdout.
pub fn man() -> i32 {
    let cmd = Cli::command();
    let mut out = Vec::new();
    let written = clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .and_then(|()| {
            // One page: the verbs follow as sections, each with its options
            // and examples (clap_mangen renders one command per page).
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let name = sub.get_name();
                writeln!(out, ".SH \"NOMAD-SHIM {}\"", name.to_uppercase())?;
                // A verb's own `--root` (cli::GlobalOpts) is the global
                // option of nomad-shim(1) above, not repeated per verb.
                let mut sub = sub.clone();
                sub.build();
                let sub = sub.mut_arg("root", |a| a.hide(true));
                let page =
                    clap_mangen::Man::new(sub.clone().bin_name(format!("nomad-shim {name}")));
                let mut section = Vec::new();
                page.render_synopsis_section(&mut section)?;
                page.render_description_section(&mut section)?;
                page.render_options_section(&mut section)?;
                if sub.get_after_help().is_some() {
                    page.render_extra_section(&mut section)?;
                }
                // The verb's own sections become subsections of its section.
                for line in String::from_utf8_lossy(&section).lines() {
                    match line.strip_prefix(".SH ") {
                        Some(title) => writeln!(out, ".SS {title}")?,
                        None => writeln!(out, "{line}")?,
                    }
                }
            }
            std::io::stdout().write_all(&out)
        });
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("nomad-shim: write the manual page to stdout: {e}");
            EXIT_ERROR
        }
    }
}
