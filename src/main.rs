//! The `switchyard` binary: parses the command line, loads config, runs.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::config::Config;

/// Switchyard: one GraphQL API over the company's backend, CRM, process server and carrier.
#[derive(Parser)]
#[command(version, about)]
#[cfg_attr(
    feature = "sandbox",
    command(
        after_help = "With no upstream configured it starts the embedded sandbox (demo upstreams \
                      with seeded data) and the playground at http://127.0.0.1:4000/playground/."
    )
)]
#[cfg_attr(
    not(feature = "sandbox"),
    command(
        after_help = "The upstreams ([upstreams.backend], [upstreams.crm], [upstreams.process], \
                      [upstreams.carrier]) and the token issuer ([auth] issuer) must be configured."
    )
)]
struct Cli {
    /// Config file (TOML). `SWITCHYARD_*` environment variables override it, e.g.
    /// SWITCHYARD_SERVER__LISTEN=0.0.0.0:4000.
    #[arg(long, short, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the GraphQL server (the default).
    Serve,
    /// Run only the sandbox upstreams, and print their URLs and credentials, so that several
    /// replicas, a load generator or other tools can share one set of upstreams.
    #[cfg(feature = "sandbox")]
    Sandbox,
    /// Print the schema's SDL (Federation v2 subgraph) to stdout.
    Schema,
    /// Print the trusted documents (the apps' operations, `schema/operations/`) as a persisted
    /// query manifest in Apollo's format, as `schema/persisted-query-manifest.json` holds it.
    Manifest,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One crypto provider for every TLS connection (reqwest, redis), chosen before any is made.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    let command = cli.command.unwrap_or(Command::Serve);
    // Traces are the server's; the other commands only log.
    let telemetry = if matches!(command, Command::Serve) {
        Some(switchyard::telemetry::start(
            &config.log,
            &config.telemetry,
        )?)
    } else {
        switchyard::telemetry::init(&config.log);
        None
    };
    match command {
        Command::Serve => {
            switchyard::app::preflight(&config)?;
            let listener = tokio::net::TcpListener::bind(config.server.listen)
                .await
                .with_context(|| format!("binding {}", config.server.listen))?;
            let served = switchyard::run(listener, config, shutdown_signal()).await;
            // The spans of the last requests leave before the process does.
            if let Some(telemetry) = telemetry {
                telemetry.shutdown().await;
            }
            served
        }
        #[cfg(feature = "sandbox")]
        Command::Sandbox => {
            let sandbox = sandbox::Sandbox::start(config.sandbox.clone()).await?;
            println!("{}", switchyard::embedded::sandbox_summary(&sandbox)?);
            shutdown_signal().await;
            sandbox.shutdown().await;
            Ok(())
        }
        Command::Schema => {
            print!("{}", switchyard::app::schema_sdl());
            Ok(())
        }
        Command::Manifest => {
            print!("{}", switchyard::app::persisted_query_manifest());
            Ok(())
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}
