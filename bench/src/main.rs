//! `myelin-bench`: Myelin's own benchmark and load tool.
//!
//! Scenarios live in [`scenarios`], one module each. Some start a Myelin
//! binary themselves ([`local`]); the load scenarios (`send`, `wakeup`,
//! `initial-sync`, `join`, `idle-syncers`, `admin`, `keys-query`,
//! `keys-claim`, `to-device`, `sliding-sync`, `sliding-sync-wakeup`,
//! `push-fanout`, `appservice`, `media`) drive any homeserver by URL
//! through [`client`], with what they share in [`load`]. Every scenario
//! prints a table and can write JSON ([`report`]); [`procstat`] reads a
//! process's memory and CPU from /proc. A load scenario exits with status 1
//! when its correctness checks fail (lost, duplicated or out-of-order
//! messages, failed requests), 2 when it cannot run.
#![allow(
    clippy::too_many_lines,
    reason = "a benchmark scenario reads best as one script, top to bottom"
)]

mod client;
mod fake_http;
mod load;
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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// K senders into one room (or --rooms rooms) for T seconds: messages/s,
    /// send latency, and a follower's check that every acknowledged message
    /// arrives once and in order.
    Send(scenarios::send::Args),
    /// One user long-polls /sync while another sends: send-to-delivery latency.
    Wakeup(scenarios::wakeup::Args),
    /// A user in R rooms with M messages each: initial /sync time and size.
    InitialSync(scenarios::initial_sync::Args),
    /// Users join one room: join latency as it grows, and into a full room.
    Join(scenarios::join::Args),
    /// C clients hold long-polling /syncs while one room sees traffic:
    /// server memory and wake-up latency.
    IdleSyncers(scenarios::idle_syncers::Args),
    /// `POST /keys/query` naming U users (issue 19: 500): requests/s and
    /// latency; every answer checked for each user's device keys.
    KeysQuery(scenarios::e2e::QueryArgs),
    /// `POST /keys/claim` naming D devices (issue 19: 100), each with enough
    /// one-time keys: claims/s and latency; no key handed out twice.
    KeysClaim(scenarios::e2e::ClaimArgs),
    /// `PUT /sendToDevice` to U users × P devices (issue 19: 1,000): sends/s
    /// and latency; every device's /sync then checked for each message once.
    ToDevice(scenarios::e2e::ToDeviceArgs),
    /// Simplified sliding sync (MSC4186): a user in R rooms (issue 21: 500)
    /// asks for a new connection's first response, a W-room window (20),
    /// `timeline_limit` 1: its time and size.
    SlidingSync(scenarios::sliding_sync::FirstArgs),
    /// One user long-polls simplified sliding sync while another sends:
    /// send-to-answer latency.
    SlidingSyncWakeup(scenarios::wakeup::Args),
    /// One message into a room of M members (issue 21: 1,000), each with an
    /// http pusher to a fake gateway this command runs: time until every
    /// notification arrived.
    PushFanout(scenarios::push_fanout::Args),
    /// Messages into rooms with an application service's user (issue 23)
    /// at a rate (1,000/s) or as fast as the server takes them; a fake
    /// service this command runs receives the transactions: delivered
    /// events/s, send-to-arrival delay, none lost or duplicated.
    Appservice(scenarios::appservice::Args),
    /// The admin API's long operations: full-text reindex throughput,
    /// purgeRoom of a big room, evacuateRoom of a crowded one (by URL, or a
    /// Myelin it starts with --binary).
    Admin(scenarios::admin::Args),
    /// A large server written in bulk (10,000 users, 2,000 rooms, 1,000,000
    /// events, 200,000 receipts) against a small one: a user's initial and
    /// incremental /sync, send, /messages, /search, a join, and RSS.
    LargeFixture(scenarios::large::Args),
    /// Uploads and downloads of a 10 MiB file, the first 96×96 thumbnail of
    /// a 4000×3000 JPEG, and server RSS during 20 downloads of 100 MiB at once.
    Media(scenarios::media::Args),
    /// Every load scenario at a tiny size against a Myelin it starts (CI).
    Smoke(scenarios::smoke::Args),
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
            Command::Startup(args) => scenarios::startup::run(args).await.map(|()| true),
            Command::Rss { pid, json } => scenarios::rss::run(pid, json.as_deref()).map(|()| true),
            Command::Send(args) => scenarios::send::run(args).await,
            Command::Wakeup(args) => scenarios::wakeup::run(args).await,
            Command::InitialSync(args) => scenarios::initial_sync::run(args).await,
            Command::Join(args) => scenarios::join::run(args).await,
            Command::IdleSyncers(args) => scenarios::idle_syncers::run(args).await,
            Command::Admin(args) => scenarios::admin::run(args).await,
            Command::KeysQuery(args) => scenarios::e2e::run_query(args).await,
            Command::KeysClaim(args) => scenarios::e2e::run_claim(args).await,
            Command::ToDevice(args) => scenarios::e2e::run_to_device(args).await,
            Command::SlidingSync(args) => scenarios::sliding_sync::run_first(args).await,
            Command::SlidingSyncWakeup(args) => scenarios::sliding_sync::run_wakeup(args).await,
            Command::PushFanout(args) => scenarios::push_fanout::run(args).await,
            Command::Appservice(args) => scenarios::appservice::run(args).await,
            Command::LargeFixture(args) => scenarios::large::run(args).await,
            Command::Media(args) => scenarios::media::run(args).await,
            Command::Smoke(args) => scenarios::smoke::run(args).await,
        }
    });
    // Long-polls of idle clients may still be open; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("myelin-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
