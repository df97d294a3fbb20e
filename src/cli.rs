//! The `myelin` command line: `serve`, `generate-config`, `create-account`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::services::accounts::{Accounts, Registration};
use crate::services::passwords::PasswordHasherService;
use crate::storage::{AccountType, Storage};

#[derive(Parser)]
#[command(name = "myelin", version, about = "A fast, small Matrix homeserver")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the homeserver.
    Serve {
        /// YAML config file; without it: server name `localhost`, port 8008,
        /// SQLite in ./data.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a complete, commented config file to stdout.
    GenerateConfig {
        #[arg(long)]
        server_name: String,
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long)]
        registration_shared_secret: Option<String>,
        #[arg(long)]
        disable_rate_limits: bool,
    },
    /// Create an account directly in the database.
    CreateAccount {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        username: String,
        #[arg(long, short)]
        password: String,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
    },
}

pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // ruma's auth checks log every event at info; keep them for debugging.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{},ruma_state_res=warn", config.log_level))
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

pub fn generate_config(
    server_name: String,
    listen: Option<std::net::SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    shared_secret: Option<String>,
    disable_rate_limits: bool,
) -> anyhow::Result<String> {
    let mut c = Config {
        server_name,
        ..Config::default()
    };
    if let Some(l) = listen {
        c.listen = l;
    }
    if let Some(d) = data_dir {
        c.data_dir = d;
    }
    if let Some(u) = database_url {
        c.database.url = u;
    }
    c.registration.shared_secret = shared_secret;
    c.rate_limits.enabled = !disable_rate_limits;
    c.validate()?;
    Ok(c.to_commented_yaml())
}

/// Creates an account straight in the database (the server may be running).
pub async fn create_account(
    config: &Config,
    username: &str,
    password: &str,
    admin: bool,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display())
    })?;
    let storage = Storage::connect(&config.database_url(), 1).await?;
    let accounts = Accounts::new(
        storage.clone(),
        PasswordHasherService::new(&config.password_hashing),
        config.server_name.as_str().try_into()?,
    );
    let result = async {
        let localpart = accounts.validate_localpart(username)?;
        accounts
            .register(Registration {
                localpart: Some(&localpart),
                password: Some(password),
                account_type: if admin {
                    AccountType::Admin
                } else {
                    AccountType::User
                },
                displayname: None,
                user_type: None,
                registration_token: None,
            })
            .await
    }
    .await;
    storage.close().await;
    result
        .map(|u| u.to_string())
        .map_err(|e| anyhow::anyhow!("{} ({})", e.message(), e.errcode()))
}
