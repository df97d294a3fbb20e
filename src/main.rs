use clap::Parser;
use myelin::cli::{
    Cli, Command, create_account, generate_config, init_logging, load_config, run_admin,
};

fn main() -> std::process::ExitCode {
    limit_retained_heap();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("myelin: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // What is still running (a shutdown cut short, a blocking task) is
    // not waited for.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("myelin: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let loaded = load_config(config.as_deref())?;
            let levels = init_logging(&loaded);
            #[cfg(unix)]
            if let (Some(levels), Some(path)) = (levels, config) {
                reload_log_levels_on_sighup(levels, path)?;
            }
            let config = loaded;
            let signals = myelin::server::shutdown_signals()?;
            let server = myelin::server::start(config).await?;
            server.run_until(signals).await
        }
        Command::GenerateConfig {
            server_name,
            listen,
            data_dir,
            database_url,
            registration_shared_secret,
            disable_rate_limits,
            ca_files,
            allow_private_addresses,
            federation_listen,
            tls_cert,
            tls_key,
            app_services,
        } => {
            let mut outbound = myelin::config::OutboundConfig {
                ca_files: ca_files.clone(),
                ..Default::default()
            };
            if allow_private_addresses {
                outbound.ip_range_blocklist.clear();
            }
            let federation = myelin::config::FederationConfig {
                listen: federation_listen,
                tls_certificate: tls_cert,
                tls_private_key: tls_key,
                ca_files,
                allow_private_addresses,
                ..Default::default()
            };
            let yaml = generate_config(
                server_name,
                listen,
                data_dir,
                database_url,
                registration_shared_secret,
                disable_rate_limits,
                outbound,
                federation,
                app_services,
            )?;
            print!("{yaml}");
            Ok(())
        }
        Command::Admin {
            url,
            token,
            config,
            action,
        } => {
            let base = match (url, config) {
                (Some(u), _) => u,
                (None, Some(c)) => format!("http://{}", load_config(Some(&c))?.listen),
                (None, None) => "http://localhost:8008".to_owned(),
            };
            let value = run_admin(&base, &token, action).await?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        command
        @ (Command::Backup { .. } | Command::Restore { .. } | Command::MigrateDb { .. }) => {
            run_data_command(command).await
        }
        Command::CreateAccount {
            config,
            username,
            password,
            admin,
        } => {
            let config = load_config(Some(&config))?;
            let user_id = create_account(&config, &username, &password, admin).await?;
            println!(
                "Created account {user_id}{}",
                if admin { " (admin)" } else { "" }
            );
            Ok(())
        }
    }
}

/// `backup`, `restore` and `migrate-db`: copies of the server's data.
async fn run_data_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Backup { config, to } => {
            let config = load_config(Some(&config))?;
            for line in myelin::backup::backup(&config, &to).await? {
                println!("{line}");
            }
            println!("Backed up to {}", to.display());
            Ok(())
        }
        Command::Restore {
            from,
            config,
            force,
        } => {
            let config = load_config(Some(&config))?;
            for line in myelin::backup::restore(&from, &config, force)? {
                println!("{line}");
            }
            println!("Restored from {}", from.display());
            Ok(())
        }
        Command::MigrateDb { config, to } => {
            let config = load_config(Some(&config))?;
            let copied =
                myelin::storage::copy::sqlite_to_postgres(&config.database_url(), &to, |t| {
                    println!("{}: {} rows", t.table, t.rows);
                })
                .await?;
            let rows: u64 = copied.iter().map(|t| t.rows).sum();
            println!(
                "Copied {} tables ({rows} rows). Set database.url to the PostgreSQL URL and start the server.",
                copied.len()
            );
            Ok(())
        }
        _ => anyhow::bail!("not a data command"),
    }
}

/// SIGHUP reads the config file again and applies its log levels.
#[cfg(unix)]
fn reload_log_levels_on_sighup(
    levels: myelin::cli::LogLevels,
    path: std::path::PathBuf,
) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("cannot install a SIGHUP handler: {e}"))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match load_config(Some(&path)) {
                Ok(config) => levels.reload(&config),
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP: could not read the config; log levels unchanged")
                }
            }
        }
    });
    Ok(())
}

/// Each password hash (argon2id) allocates its cost in memory (19 MiB by
/// default). glibc would serve those from the heap and keep the freed pages
/// resident, so a few logins would leave the idle server at hundreds of MiB.
/// Blocks of 128 KiB and more get their own mapping instead, returned to the
/// system when freed.
///
/// glibc also gives each thread that allocates an arena of its own, up to
/// eight per core; each keeps the pages its freed blocks leave behind
/// (partly used pages cannot be trimmed). Two arenas serve this server's
/// few busy threads as well and kept a quarter less memory after load
/// (docs/benchmarks-history.md, "Runs 9 and 10"). mimalloc was tried instead
/// and kept more.
fn limit_retained_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any threads exist.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
