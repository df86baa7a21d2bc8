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
mod guard_cmd;
mod heal_cmd;
mod mount_cmd;
mod pool_cmd;
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
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // One line: clap's first line, without the usage block.
            let msg = e.render().to_string();
            let first = msg
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("gsync: {first} (see gsync --help)");
            return ExitCode::from(2);
        }
    };
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
    match runtime.block_on(run(cli)) {
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
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
