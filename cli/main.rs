//! The `gsync` binary: parses the command line, talks to the local daemon
//! (or runs it), and prints GlusterFS-shaped text or `--json`.
//!
//! Every failure is one line on stderr and a non-zero exit status.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod args;
mod bench;
mod ctl;
mod daemon;
mod demo;
mod docs_cmd;
mod events_cmd;
mod guard_cmd;
mod heal_cmd;
mod history_cmd;
mod json_ids;
mod logging;
mod metrics;
mod monitor;
mod mount_cmd;
mod pool_cmd;
mod service;
mod timefmt;
mod trash_cmd;
mod volume_cmd;
mod wait_cmd;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Outcome of a command: printed by `main`.
pub enum Outcome {
    /// Success; the text (or JSON) was already printed.
    Done,
    /// Refused: print `prefix: failed: reason` (or the reason alone).
    Failed(String),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            // Help and version go to stdout; a usage error is clap's whole
            // message (what is wrong, the subcommand's usage, where to find
            // more) on stderr.
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    print_usage_error(&e);
                    ExitCode::from(2)
                }
            };
        }
    };
    if !cli.command.keeps_sigpipe_ignored() {
        restore_sigpipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gsync: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Dropping a runtime waits for every blocking task without bound: one
    // stuck in a system call (a hung disk, a stalled watcher) would keep a
    // daemon that was told to stop alive forever. What is durable is
    // durable by now (a crash here is a kill -9, which the stores survive).
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Failed(line)) => {
            eprintln!("{line}");
            ExitCode::FAILURE
        }
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("gsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let state = ctl::state_dir(cli.state_dir.as_deref());
    let json = cli.json;
    match cli.command {
        Command::Daemon(a) => daemon::run(a, state).await,
        Command::Peer(c) => pool_cmd::peer(c, &state, json).await,
        Command::Pool(c) => pool_cmd::pool(c, &state, json).await,
        Command::Volume(c) => volume_cmd::run(c, &state, json).await,
        Command::Mount(a) => mount_cmd::mount(a, &state, json).await,
        Command::Umount { dir } => mount_cmd::umount(&dir, &state, json).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Bench(a) => bench::run(a, json).await,
        Command::Debug(c) => pool_cmd::debug(c, &state, json).await,
        Command::Wait(a) => wait_cmd::run(a, &state, json).await,
        Command::AcceptDeletes { dir } => {
            guard_cmd::run(guard_cmd::Way::Accept, &dir, &state, json).await
        }
        Command::RevertDeletes { dir } => {
            guard_cmd::run(guard_cmd::Way::Revert, &dir, &state, json).await
        }
        Command::Events(a) => events_cmd::run(a, &state, json).await,
        Command::Completions { shell } => docs_cmd::completions(shell),
        Command::Man => docs_cmd::man(),
    }
}

/// Prints a usage error as one line (scripts and logs read errors line by
/// line): clap's whole message, its details joined in, and the usage of
/// the subcommand the user was typing, e.g.
/// `gsync: unrecognized subcommand 'statu' (tip: some similar subcommands
/// exist: 'start', 'status'). Usage: gsync volume [OPTIONS] <COMMAND>`.
fn print_usage_error(e: &clap::Error) {
    let msg = e.render().to_string();
    let mut details = Vec::new();
    let mut usage = None;
    for line in msg.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("For more information") {
            continue;
        }
        if let Some(u) = line.strip_prefix("Usage:") {
            usage = Some(u.trim().to_string());
        } else if usage.is_some() {
            // A second usage line.
            usage = usage.map(|u| format!("{u} | {line}"));
        } else {
            details.push(line.trim_start_matches("error: ").to_string());
        }
    }
    let usage = usage.unwrap_or_else(|| {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        cmd.build();
        for word in std::env::args().skip(1) {
            match cmd.find_subcommand(&word) {
                Some(sub) => cmd = sub.clone(),
                None if word.starts_with('-') => continue,
                None => break,
            }
        }
        let u = cmd.render_usage().to_string();
        u.trim_start_matches("Usage:").trim().to_string()
    });
    let mut text = details.first().cloned().unwrap_or_default();
    if details.len() > 1 {
        let rest = &details[1..];
        text = if text.ends_with(':') {
            format!("{text} {}", rest.join(", "))
        } else {
            format!("{text} ({})", rest.join("; "))
        };
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let usage = usage.split_whitespace().collect::<Vec<_>>().join(" ");
    let stop = if text.ends_with('.') { "" } else { "." };
    eprintln!("gsync: {text}{stop} Usage: {usage}");
}

/// Lets a command that only prints end quietly when its reader goes away
/// (`gsync volume heal v info | head -1`), as `cat` or `ls` do: the Rust
/// runtime ignores SIGPIPE, which turns a closed pipe into a panic in
/// `println!`. Long-running commands keep it ignored and see EPIPE as an
/// error instead.
fn restore_sigpipe() {
    // SAFETY: signal(2) with a valid signal number and SIG_DFL, before any
    // thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(value)?;
    json_ids::stringify_ids(&mut v);
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
