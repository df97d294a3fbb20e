//! `myelin-bench smoke`: every load scenario at a tiny size against a Myelin
//! this command starts itself (a temp dir, SQLite, a free loopback port,
//! rate limits off, cheap password hashing). For CI: it checks that the tool
//! works and that every correctness counter is zero; it asserts no timing.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

use crate::local::Local;
use crate::report::table;
use crate::{Cli, Command, scenarios};

#[derive(clap::Args)]
pub struct Args {
    /// The myelin binary to start.
    #[arg(long, default_value = "target/debug/myelin")]
    binary: PathBuf,
    /// Write each scenario's JSON into this directory.
    #[arg(long)]
    json_dir: Option<PathBuf>,
    /// Keep the temp dir (config, database, server log) and print its path.
    #[arg(long)]
    keep_dir: bool,
}

/// The scenarios and their extra flags, in the order they run.
const RUNS: &[(&str, &[&str])] = &[
    ("send", &[]),
    ("send", &["--senders", "2", "--rooms", "2"]),
    ("wakeup", &[]),
    ("initial-sync", &[]),
    ("join", &[]),
    ("idle-syncers", &["--in-room", "5"]),
    ("admin", &["--require-job-status"]),
    ("keys-query", &[]),
    ("keys-claim", &["--concurrency", "2"]),
    ("to-device", &[]),
    ("to-device", &["--devices-per-user", "2"]),
    ("sliding-sync", &[]),
    ("sliding-sync-wakeup", &[]),
    ("push-fanout", &[]),
    ("appservice", &[]),
    ("media", &[]),
];

pub async fn run(args: Args) -> anyhow::Result<bool> {
    // The application service of `appservice`: this tool listens on a
    // free port that the registration names.
    let as_dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let service = scenarios::appservice::Registration::new(crate::local::free_port()?)?;
    let registration = as_dir.path().join("appservice.yaml");
    std::fs::write(&registration, service.yaml())
        .with_context(|| format!("cannot write {}", registration.display()))?;
    let local = Local::start(
        &args.binary,
        "myelin-bench-smoke-",
        None,
        Some(&registration),
    )
    .await?;
    let (base, secret) = (local.base.clone(), local.secret.clone());
    let pid = local.server.pid().to_string();
    if let Some(d) = &args.json_dir {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }

    let started = Instant::now();
    let mut rows = Vec::new();
    let mut all_ok = true;
    for (i, (name, extra)) in RUNS.iter().enumerate() {
        let mut argv: Vec<String> = ["myelin-bench", name, "--url", &base]
            .iter()
            .map(|s| s.to_string())
            .collect();
        argv.extend(
            [
                "--shared-secret",
                &secret,
                "--pid",
                &pid,
                "--label",
                "myelin (smoke)",
                "--smoke",
                "--quiet",
                "--settle-secs",
                "0",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        argv.extend(extra.iter().map(|s| s.to_string()));
        if *name == "appservice" {
            argv.extend(service.args());
        }
        if let Some(d) = &args.json_dir {
            argv.push("--json".into());
            argv.push(d.join(format!("{i}-{name}.json")).display().to_string());
        }
        let cli = Cli::try_parse_from(&argv).context("smoke arguments")?;
        let t0 = Instant::now();
        let result = match cli.command {
            Command::Send(a) => scenarios::send::run(a).await,
            Command::Wakeup(a) => scenarios::wakeup::run(a).await,
            Command::InitialSync(a) => scenarios::initial_sync::run(a).await,
            Command::Join(a) => scenarios::join::run(a).await,
            Command::IdleSyncers(a) => scenarios::idle_syncers::run(a).await,
            Command::Admin(a) => scenarios::admin::run(a).await,
            Command::KeysQuery(a) => scenarios::e2e::run_query(a).await,
            Command::KeysClaim(a) => scenarios::e2e::run_claim(a).await,
            Command::ToDevice(a) => scenarios::e2e::run_to_device(a).await,
            Command::SlidingSync(a) => scenarios::sliding_sync::run_first(a).await,
            Command::SlidingSyncWakeup(a) => scenarios::sliding_sync::run_wakeup(a).await,
            Command::PushFanout(a) => scenarios::push_fanout::run(a).await,
            Command::Appservice(a) => scenarios::appservice::run(a).await,
            Command::Media(a) => scenarios::media::run(a).await,
            _ => unreachable!("RUNS lists load scenarios only"),
        };
        let verdict = match result {
            Ok(true) => "pass".to_owned(),
            Ok(false) => {
                all_ok = false;
                "FAIL (correctness)".to_owned()
            }
            Err(e) => {
                all_ok = false;
                format!("FAIL (error: {e:#})")
            }
        };
        rows.push(vec![
            format!("{name} {}", extra.join(" ")).trim().to_owned(),
            format!("{:.1}", t0.elapsed().as_secs_f64()),
            verdict,
        ]);
    }
    local.stop(args.keep_dir)?;
    // The large-fixture scenario at a tiny size: it starts Myelins of its own.
    let t0 = Instant::now();
    let large = scenarios::large::run(scenarios::large::Args {
        binary: args.binary.clone(),
        smoke: true,
        json: args.json_dir.as_ref().map(|d| d.join("large-fixture.json")),
        keep_dir: args.keep_dir,
        ..scenarios::large::Args::defaults()
    })
    .await;
    let verdict = match large {
        Ok(true) => "pass".to_owned(),
        Ok(false) => "FAIL (correctness)".to_owned(),
        Err(e) => format!("FAIL (error: {e:#})"),
    };
    all_ok &= verdict == "pass";
    rows.push(vec![
        "large-fixture --smoke".into(),
        format!("{:.1}", t0.elapsed().as_secs_f64()),
        verdict,
    ]);
    println!();
    println!(
        "== smoke: every load scenario at a tiny size against {} ({:.1} s)",
        args.binary.display(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", table(&["scenario", "s", "result"], &rows));
    let passed = rows.iter().filter(|r| r[2] == "pass").count();
    println!("smoke: {passed} passed, {} failed", rows.len() - passed);
    Ok(all_ok)
}
