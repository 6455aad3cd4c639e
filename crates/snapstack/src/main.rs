//! `snapstack`: the one binary. `serve` runs the API and the services on
//! this host with embedded defaults (one data directory: SQLite database,
//! `file` pool, logs, `clouds.yaml`); `db migrate` prepares a database.

mod client;
mod clouds_yaml;
mod config;
mod storage_config;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cloud::Cloud;
use store::Store;

use config::ServeArgs;

#[derive(Parser, Debug)]
#[command(
    name = "snapstack",
    version,
    about = "A small cloud built around VM snapshots"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the API and services on this host.
    Serve(Box<ServeArgs>),
    /// Restore points of a server (a client of the running API).
    RestorePoint {
        #[command(flatten)]
        credentials: client::Credentials,
        #[command(subcommand)]
        command: client::RestorePointCommand,
    },
    /// This host's virtual networks.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Database maintenance.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Subcommand, Debug)]
enum NetworkCommand {
    /// Remove every namespace, device, DHCP server and firewall rule the data plane of
    /// this data directory made (servers with NICs lose their network), then exit.
    Teardown {
        #[arg(long, env = "SNAPSTACK_DATA_DIR", default_value = "var")]
        data_dir: std::path::PathBuf,
        /// The namespace, if `serve` was given `--netns`.
        #[arg(long, env = "SNAPSTACK_NETNS")]
        netns: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum DbCommand {
    /// Create or upgrade the database schema, then exit.
    Migrate {
        /// Database URL (default: the SQLite file in the data directory).
        #[arg(long, env = "SNAPSTACK_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, env = "SNAPSTACK_DATA_DIR", default_value = "var")]
        data_dir: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::RestorePoint {
        credentials,
        command,
    } = cli.command
    {
        return client::run(&credentials, command);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::RestorePoint { .. } => unreachable!("handled before the runtime starts"),
            Command::Network {
                command: NetworkCommand::Teardown { data_dir, netns },
            } => {
                use netplane::NetworkPlane;
                let data_dir = data_dir.canonicalize().unwrap_or(data_dir);
                let netns = netns.unwrap_or_else(|| config::default_netns(&data_dir));
                netplane::LinuxPlane::new(&netns, config::network_state_dir(&data_dir))
                    .teardown()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("network namespace {netns} and its dependants removed");
                Ok(())
            }
            Command::Db {
                command:
                    DbCommand::Migrate {
                        database_url,
                        data_dir,
                    },
            } => {
                std::fs::create_dir_all(&data_dir)?;
                let url = database_url.unwrap_or_else(|| config::sqlite_url(&data_dir));
                Store::open(&url)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("database {url} is up to date");
                Ok(())
            }
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let paths = args.prepare_dirs()?;
    config::init_logging(&paths.log_file)?;
    let store = Store::open(&args.database_url(&paths))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pool =
        storage_config::open_pool(args.storage.storage_config.as_deref(), &paths.pool_dir).await?;
    std::fs::create_dir_all(&paths.instances_dir)?;
    let hypervisor = Arc::new(args.hypervisor(&paths));
    let netns = args.netns(&paths);
    tracing::info!(%netns, "virtual networks live in network namespace {netns}");
    let plane = Arc::new(netplane::LinuxPlane::new(
        netns,
        config::network_state_dir(&paths.data_dir),
    ));
    let cloud = Cloud::new(store, pool, hypervisor, args.cloud_config(&paths))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_network_plane(plane, "localhost");

    for line in cloud
        .reconcile()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        tracing::warn!("reconciled: {line}");
    }
    let (password, generated) = match &args.admin_password {
        Some(p) => (Some(p.clone()), false),
        None => (None, false),
    };
    let needs_admin = cloud
        .store()
        .user_by_name(&args.admin_user)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .is_none();
    let (password, generated) = match (password, needs_admin) {
        (Some(p), _) => (Some(p), generated),
        (None, true) => (Some(cloud::identity::generate_password()), true),
        (None, false) => (None, false),
    };
    if let Some(pw) = &password {
        cloud
            .bootstrap(&args.admin_user, &args.admin_project, pw, !generated)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let public_url = args.public_url();
    if let Some(pw) = &password {
        let written = clouds_yaml::write(
            &paths.data_dir,
            &public_url,
            &args.admin_user,
            &args.admin_project,
            pw,
        )?;
        for line in written {
            eprintln!("{line}");
        }
    }
    if generated {
        eprintln!(
            "Admin user '{}' created with password (shown once): {}",
            args.admin_user,
            password.as_deref().unwrap_or_default()
        );
    }

    spawn_power_sync(
        cloud.clone(),
        std::time::Duration::from_secs(args.power_sync_interval.max(1)),
    );
    spawn_token_purge(
        cloud.clone(),
        std::time::Duration::from_secs(args.token_purge_interval),
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let app = api::router(api::AppState::new(cloud, &public_url));
    tracing::info!(listen = %args.listen, url = %public_url, data_dir = %paths.data_dir.display(), "snapstack serving");
    eprintln!(
        "Snapstack is serving at {public_url} (data in {})",
        paths.data_dir.display()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("snapstack stopped");
    Ok(())
}

/// Notices servers whose QEMU died or whose guest powered off.
fn spawn_power_sync(cloud: Cloud, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = cloud.sync_power_states().await {
                tracing::warn!(error = %e, "power state sync failed");
            }
        }
    });
}

/// Forgets expired tokens every `every` (`--token-purge-interval`), so the
/// table does not grow with every login ever made.
fn spawn_token_purge(cloud: Cloud, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match cloud.purge_expired_tokens().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired tokens purged"),
                Err(e) => tracing::warn!(error = %e, "token purge failed"),
            }
        }
    });
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
