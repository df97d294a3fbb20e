//! `myelin-bench`: Myelin's own benchmark and load tool.
//!
//! Scenarios live in [`scenarios`], one module each. Some start a Myelin
//! binary themselves ([`local`]); the load scenarios to come (`send`,
//! `wakeup`, `initial-sync`, `join`, `idle-syncers`) drive any homeserver by
//! URL through [`client`]. Every scenario prints a table and can write JSON
//! ([`report`]); [`procstat`] reads a process's memory from /proc.

mod client;
mod local;
mod procstat;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "myelin-bench",
    version,
    about = "Benchmarks for Myelin (and other homeservers)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start time on an existing SQLite database (spawn to the first 200 from
    /// /_matrix/client/versions) and idle memory, of a local Myelin binary.
    Startup(scenarios::startup::Args),
    /// Print the memory of a running process (VmRSS, VmHWM, threads, smaps_rollup).
    Rss {
        /// The process to read.
        #[arg(long)]
        pid: u32,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the bench should take as little CPU as it can from the
    // server it measures (this machine has two cores).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("myelin-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Startup(args) => scenarios::startup::run(args).await,
            Command::Rss { pid, json } => scenarios::rss::run(pid, json.as_deref()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("myelin-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
