//! `myelin-bench startup`: how fast a Myelin binary answers after it is
//! started on an existing SQLite database, and how much memory it then holds.
//!
//! 1. `myelin generate-config` into a fresh temp dir (loopback, a free port,
//!    a shared secret, rate limits off).
//! 2. One start that creates the database, a few accounts through
//!    shared-secret registration, SIGTERM.
//! 3. `--runs` starts on that database, each timed from spawn to the first
//!    200 from `GET /_matrix/client/versions` (polled every millisecond), each
//!    stopped with SIGTERM.
//! 4. After the last start: `--idle-secs` without requests, then VmRSS and
//!    VmHWM from /proc/PID/status (and /proc/PID/smaps_rollup). The same
//!    figures are read from the setup start after its registrations, for
//!    what password hashing leaves behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::Client;
use crate::local::{self, Server};
use crate::procstat;
use crate::report::{Summary, samples_ms, table, write_json};

/// The targets.
pub const STARTUP_TARGET_MS: f64 = 200.0;
pub const IDLE_RSS_TARGET_MIB: f64 = 20.0;

#[derive(clap::Args)]
pub struct Args {
    /// The myelin binary to measure.
    #[arg(long, default_value = "target/release/myelin")]
    binary: PathBuf,
    /// Timed starts on the existing database.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Accounts registered (shared secret) before the timed starts.
    #[arg(long, default_value_t = 5)]
    users: usize,
    /// Seconds without requests after the last start before memory is read.
    #[arg(long, default_value_t = 2)]
    idle_secs: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Extra environment for the server, e.g. `--env MALLOC_ARENA_MAX=2
    /// --env TOKIO_WORKER_THREADS=1` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Give up on a start (or a stop) after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// Keep the temp dir (config, database, server logs) and print its path.
    #[arg(long)]
    keep_dir: bool,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let binary = std::fs::canonicalize(&args.binary).with_context(|| {
        format!(
            "no binary at {} (build it: cargo build --release -p myelin)",
            args.binary.display()
        )
    })?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let dir = tempfile::Builder::new()
        .prefix("myelin-bench-startup-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let port = local::free_port()?;
    let secret = local::random_hex(16)?;
    let config = local::generate_config(&binary, dir.path(), port, &secret, None)?;
    let base = format!("http://127.0.0.1:{port}");
    eprintln!(
        "startup: {} on {base}, {} timed starts, temp dir {}",
        binary.display(),
        args.runs,
        dir.path().display()
    );

    // The first start creates the database; then a few accounts.
    let mut server = Server::spawn(&binary, &config, &dir.path().join("setup.log"), &args.env)?;
    let client = Client::new(&base)?;
    let first_start = server.wait_ready(&client, Instant::now(), timeout).await?;
    for i in 0..args.users {
        client
            .register_shared_secret(&secret, &format!("bench{i}"), "bench password 1", i == 0)
            .await?;
    }
    drop(client);
    // The same reading after the registrations: argon2id hashing (19 MiB per
    // hash by default) is what a server that has seen logins keeps or frees.
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let after_registrations = procstat::status(server.pid())?;
    server.stop(timeout)?;
    let db = dir.path().join("data").join("myelin.db");
    if !db.exists() {
        bail!("the setup start left no database at {}", db.display());
    }

    let bar = ProgressBar::new(args.runs as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message("timed starts");
    let mut startups = Vec::with_capacity(args.runs);
    let mut shutdowns = Vec::with_capacity(args.runs);
    let mut idle = None;
    for run in 0..args.runs {
        let log = dir.path().join(format!("run-{run:02}.log"));
        // Built before the clock starts; a fresh one each run, so no pooled
        // connection to a previous process is reused.
        let client = Client::new(&base)?;
        let started = Instant::now();
        let mut server = Server::spawn(&binary, &config, &log, &args.env)?;
        startups.push(server.wait_ready(&client, started, timeout).await?);
        if run + 1 == args.runs {
            drop(client);
            bar.set_message(format!("idle {} s", args.idle_secs));
            tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
            let pid = server.pid();
            idle = Some((
                pid,
                procstat::status(pid)?,
                procstat::smaps_rollup(pid).ok(),
            ));
        } else {
            drop(client);
        }
        shutdowns.push(server.stop(timeout)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (pid, status, rollup) = idle.expect("the last run reads memory");

    let start = Summary::of(&startups).expect("runs >= 1");
    let stop = Summary::of(&shutdowns).expect("runs >= 1");
    let f = |x: f64| format!("{x:.1}");
    let timing_row = |name: &str, s: &Summary| {
        vec![
            name.to_owned(),
            f(s.min),
            f(s.p50),
            f(s.p95),
            f(s.max),
            f(s.mean),
        ]
    };
    println!();
    println!(
        "start-up on an existing SQLite database, {} runs ({} accounts)",
        args.runs, args.users
    );
    print!(
        "{}",
        table(
            &["ms", "min", "p50", "p95", "max", "mean"],
            &[
                timing_row("spawn → first 200 /versions", &start),
                timing_row("SIGTERM → exit", &stop),
            ]
        )
    );
    println!(
        "(first start, creating the database: {:.1} ms)",
        first_start.as_secs_f64() * 1e3
    );

    let mib = |kib: u64| format!("{:.1}", procstat::mib(kib));
    let rollup_kib = |k: &str| rollup.as_ref().and_then(|r| r.get(k)).copied();
    let reg = &after_registrations;
    let mut mem_rows = vec![
        vec!["VmRSS".into(), mib(status.vm_rss_kib), mib(reg.vm_rss_kib)],
        vec!["VmHWM".into(), mib(status.vm_hwm_kib), mib(reg.vm_hwm_kib)],
        vec![
            "RssAnon".into(),
            mib(status.rss_anon_kib),
            mib(reg.rss_anon_kib),
        ],
        vec![
            "RssFile".into(),
            mib(status.rss_file_kib),
            mib(reg.rss_file_kib),
        ],
    ];
    if let Some(pss) = rollup_kib("Pss") {
        mem_rows.push(vec!["Pss".into(), mib(pss), "".into()]);
    }
    mem_rows.push(vec![
        "threads".into(),
        status.threads.to_string(),
        reg.threads.to_string(),
    ]);
    println!();
    println!(
        "memory (MiB), {} s idle: after the last timed start; after the setup start's {} registrations",
        args.idle_secs, args.users
    );
    print!(
        "{}",
        table(&["MiB", "after start", "after registrations"], &mem_rows)
    );

    let rss_mib = procstat::mib(status.vm_rss_kib);
    let startup_pass = start.p95 < STARTUP_TARGET_MS;
    let rss_pass = rss_mib < IDLE_RSS_TARGET_MIB;
    let verdict = |ok: bool| if ok { "pass" } else { "FAIL" }.to_owned();
    println!();
    print!(
        "{}",
        table(
            &["target", "measured", ""],
            &[
                vec![
                    format!("start-up p95 < {STARTUP_TARGET_MS} ms"),
                    format!("{:.1} ms", start.p95),
                    verdict(startup_pass),
                ],
                vec![
                    format!("idle VmRSS < {IDLE_RSS_TARGET_MIB} MiB"),
                    format!("{rss_mib:.1} MiB"),
                    verdict(rss_pass),
                ],
            ]
        )
    );

    if let Some(path) = &args.json {
        let env: serde_json::Map<String, Value> = args
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        write_json(
            path,
            &json!({
                "scenario": "startup",
                "binary": binary,
                "runs": args.runs,
                "users": args.users,
                "server_env": env,
                "first_start_ms": crate::report::round3(first_start.as_secs_f64() * 1e3),
                "startup": { "summary": start.to_json(), "samples_ms": samples_ms(&startups) },
                "shutdown": { "summary": stop.to_json(), "samples_ms": samples_ms(&shutdowns) },
                "idle": {
                    "after_secs": args.idle_secs,
                    "pid": pid,
                    "status": status.to_json(),
                    "smaps_rollup_kib": rollup,
                },
                "after_registrations": {
                    "after_secs": args.idle_secs,
                    "registrations": args.users,
                    "status": after_registrations.to_json(),
                },
                "targets": {
                    "startup_p95_ms": { "limit": STARTUP_TARGET_MS, "measured": start.p95, "pass": startup_pass },
                    "idle_vm_rss_mib": { "limit": IDLE_RSS_TARGET_MIB, "measured": rss_mib, "pass": rss_pass },
                },
            }),
        )?;
        eprintln!("wrote {}", path.display());
    }
    if args.keep_dir {
        let kept = dir.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_env;

    #[test]
    fn env_pairs() {
        assert_eq!(
            parse_env("MALLOC_ARENA_MAX=2"),
            Ok(("MALLOC_ARENA_MAX".into(), "2".into()))
        );
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=1").is_err());
        assert!(parse_env("NOEQUALS").is_err());
    }
}
