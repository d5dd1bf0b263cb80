//! The `switchyard` binary: parses the command line, loads config, runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::config::Config;

/// mimalloc instead of glibc's malloc: a request allocates and frees thousands of small
/// objects on two or more threads, which glibc's arenas serve slower and give back to the
/// system late (see the README's benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Check the apps' persisted query manifests against this build's schema: what would break.
    ///
    /// Each manifest is in Apollo's format or a `{hash: document}` map (Relay, GraphQL
    /// Codegen). Lists each operation that would break (removed fields, changed types, new
    /// required arguments, an id that is not its body's SHA-256), then a summary. Exits 0 when
    /// none would, 1 when some would, 2 when a manifest cannot be read or is not one.
    CheckOperations {
        /// The manifests of the app versions still in use.
        #[arg(required = true, value_name = "MANIFEST")]
        manifests: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    // One crypto provider for every TLS connection (reqwest, redis), chosen before any is made.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let load_config = || -> anyhow::Result<Config> {
        let config = Config::load(cli.config.as_deref())?;
        switchyard::telemetry::init(&config.log);
        Ok(config)
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            // Traces are the server's; the other commands only log.
            let config = Config::load(cli.config.as_deref())?;
            let telemetry = switchyard::telemetry::start(&config.log, &config.telemetry)?;
            switchyard::app::preflight(&config)?;
            let listener = tokio::net::TcpListener::bind(config.server.listen)
                .await
                .with_context(|| format!("binding {}", config.server.listen))?;
            let served = switchyard::run(listener, config, shutdown_signal()).await;
            // The spans of the last requests leave before the process does.
            telemetry.shutdown().await;
            served?;
        }
        #[cfg(feature = "sandbox")]
        Command::Sandbox => {
            let config = load_config()?;
            let sandbox = sandbox::Sandbox::start(config.sandbox.clone()).await?;
            println!("{}", switchyard::embedded::sandbox_summary(&sandbox)?);
            shutdown_signal().await;
            sandbox.shutdown().await;
        }
        Command::Schema => {
            load_config()?;
            print!("{}", switchyard::app::schema_sdl());
        }
        Command::Manifest => {
            load_config()?;
            print!("{}", switchyard::app::persisted_query_manifest());
        }
        // No config: it checks against the schema every build has.
        Command::CheckOperations { manifests } => return Ok(check_operations(&manifests).await),
    }
    Ok(ExitCode::SUCCESS)
}

/// `check-operations`: the report on stdout; exit 1 if an operation would break, 2 (and why
/// on stderr) if a manifest is unusable.
async fn check_operations(paths: &[PathBuf]) -> ExitCode {
    use switchyard::check_operations::{Manifest, check};
    let mut manifests = Vec::new();
    let mut unusable = false;
    for path in paths {
        match Manifest::read(path) {
            Ok(manifest) => manifests.push(manifest),
            Err(e) => {
                eprintln!("error: {e}");
                unusable = true;
            }
        }
    }
    if unusable {
        return ExitCode::from(2);
    }
    let report = match check(&manifests).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{report}");
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
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
