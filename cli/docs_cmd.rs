//! `gsync completions SHELL` and `gsync man`: shell completions and the man
//! page generated from the clap definitions the parser uses, so they never
//! drift from what the binary accepts.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;

use crate::args::{Cli, Shell};
use crate::Outcome;

/// Prints the completion script for `shell`.
pub fn completions(shell: Shell) -> Result<Outcome> {
    let mut cmd = Cli::command();
    let gen = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(gen, &mut cmd, "gsync", &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(Outcome::Done)
}

/// Prints the man page of `gsync` (roff), with one section per command.
pub fn man() -> Result<Outcome> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    std::io::stdout().write_all(&out)?;
    Ok(Outcome::Done)
}
