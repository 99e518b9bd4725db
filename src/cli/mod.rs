//! `corralctl`, the command-line client of corrald: parses arguments,
//! runs one command against the agent over D-Bus (only through the `api`
//! proxies) and turns the outcome into output and an exit code: 0 success,
//! 1 failure (the agent's error, or the agent not running), 2 usage error.
//! It links nothing of the daemon.

mod args;
mod attach;
mod commands;
mod error;
mod format;
mod linger;
mod live;
mod project;
mod remote;
mod render;
mod spec;
mod stats;
mod top;

use std::io::Write;

use clap::Parser;

use error::CliError;
/// The keys `corralctl list` asks `List` for (the benchmark times them).
pub use render::LIST_TABLE_KEYS;

/// The `corralctl` command line as clap builds it, for the man page and
/// completion generator (`corral-gen`).
pub fn command() -> clap::Command {
    <args::Cli as clap::CommandFactory>::command()
}

/// Runs `corralctl` with the process's arguments; returns the exit code.
pub fn run() -> i32 {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version land here too, with exit code 0.
            let _ = e.print();
            return e.exit_code();
        }
    };
    // One request at a time: a current-thread runtime is all zbus needs.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "corralctl: cannot start the async runtime: {e}"
            );
            return 1;
        }
    };
    match rt.block_on(commands::dispatch(cli)) {
        Ok(()) => 0,
        // The reader went away (`corralctl logs -f x | head`): not an error.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        // Each failure was already reported on its own line.
        Err(e @ CliError::Partial(_)) => e.exit_code(),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "corralctl: {e}");
            e.exit_code()
        }
    }
}
