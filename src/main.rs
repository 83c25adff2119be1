//! tenantplane: the binary. Wiring only: configuration, logging, and the
//! subcommands that start the parts or call the API.

mod cli;
mod config;
mod demo;
mod serve;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use cli::client::Client;
use cli::output::Output;
use config::{Config, LogFormat};
use serve::Parts;

#[derive(Debug, Parser)]
#[command(
    name = "tenantplane",
    version,
    about = "Control plane for database-per-tenant SaaS"
)]
struct Cli {
    /// Configuration file (default: ./tenantplane.toml when it exists).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where operator commands send requests.
    #[arg(
        long = "api-url",
        global = true,
        env = "TENANTPLANE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api_url: String,
    /// Operator token for operator commands.
    #[arg(long, global = true, env = "TENANTPLANE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output of operator commands.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// API, worker and scheduler in one process.
    Serve {
        /// Create a demo fleet of shops on first start.
        #[arg(long)]
        demo: bool,
    },
    /// The HTTP API only.
    Api,
    /// The worker only.
    Worker {
        /// Serve the liveness (`/healthz`) and readiness (`/readyz`) probes
        /// on this address (overrides TENANTPLANE_WORKER_HEALTH_ADDR).
        #[arg(long)]
        health_addr: Option<String>,
    },
    /// Manage tenants (calls the API).
    #[command(subcommand)]
    Tenants(cli::TenantCmd),
    /// Manage database servers (calls the API).
    #[command(subcommand)]
    Servers(cli::ServerCmd),
    /// Fleet schema rollouts: plan, start, watch, control (calls the API).
    #[command(subcommand)]
    Rollout(cli::rollout::RolloutCmd),
    /// Plans (calls the API).
    #[command(subcommand)]
    Plans(cli::flags::PlanCmd),
    /// A tenant's effective features, or the catalogue.
    Features {
        tenant: Option<String>,
        /// The feature catalogue instead.
        #[arg(long)]
        catalogue: bool,
    },
    /// Override a feature for a tenant: on, off, or clear.
    Override {
        tenant: String,
        feature: String,
        #[arg(value_enum)]
        state: cli::flags::OverrideState,
        #[arg(long)]
        reason: Option<String>,
        /// RFC 3339 time the override stops applying.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Tenant API keys.
    #[command(subcommand)]
    Keys(cli::flags::KeyCmd),
    /// Cron schedules and their runs (calls the API).
    #[command(subcommand)]
    Schedules(cli::schedules::ScheduleCmd),
    /// Tenant backups: take, list, verify, pin, delete, restore (calls the
    /// API).
    #[command(subcommand)]
    Backups(cli::backups::BackupCmd),
    /// Webhook endpoints: register, change, rotate secrets, replay (calls
    /// the API).
    #[command(subcommand)]
    Webhooks(cli::notify::WebhookCmd),
    /// The outbox's e-mail and webhook deliveries: list, show, retry
    /// (calls the API).
    #[command(subcommand)]
    Outbox(cli::notify::OutboxCmd),
    /// Compare tenants' schemas with the reference schema of their
    /// recorded version and print the differences (calls the API); exits
    /// with status 1 when a tenant drifted.
    Drift(cli::drift::DriftArgs),
}

/// The default log filter. actix-http logs every request it cannot parse
/// (a malformed header, a broken chunk) as an ERROR from its dispatcher; the
/// client gets its 400, and an ERROR per garbage request would let anyone
/// flood the error log, so those lines are off.
const DEFAULT_LOG: &str = "info,actix_server=warn,actix_http::h1::dispatcher=off";

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("TENANTPLANE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    // Colour codes only on a terminal: `serve 2> file` gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let parts = match &cli.command {
        Command::Serve { demo } => Some(Parts {
            api: true,
            worker: true,
            demo: *demo,
        }),
        Command::Api => Some(Parts {
            api: true,
            worker: false,
            demo: false,
        }),
        Command::Worker { .. } => Some(Parts {
            api: false,
            worker: true,
            demo: false,
        }),
        _ => None,
    };
    if let Some(parts) = parts {
        let mut config = Config::load(cli.config.as_deref())?;
        if let Command::Worker {
            health_addr: Some(addr),
        } = &cli.command
        {
            config::check_addr("--health-addr", addr)?;
            config.worker_health_addr = Some(addr.clone());
        }
        init_logging(config.log_format);
        return serve::run(&config, parts);
    }
    let client = Client::new(&cli.api_url, cli.token.clone());
    match cli.command {
        Command::Tenants(cmd) => cli::tenants(&client, cli.output, cmd),
        Command::Servers(cmd) => cli::servers(&client, cli.output, cmd),
        Command::Rollout(cmd) => {
            cli::rollout::run(&client, &cli.api_url, cli.token.as_deref(), cli.output, cmd)
        }
        Command::Plans(cmd) => cli::flags::plans(&client, cli.output, cmd),
        Command::Features { tenant, catalogue } => {
            cli::flags::features(&client, cli.output, tenant, catalogue)
        }
        Command::Override {
            tenant,
            feature,
            state,
            reason,
            expires,
        } => cli::flags::override_(
            &client, cli.output, &tenant, &feature, state, reason, expires,
        ),
        Command::Keys(cmd) => cli::flags::keys(&client, cli.output, cmd),
        Command::Schedules(cmd) => cli::schedules::run(&client, cli.output, cmd),
        Command::Backups(cmd) => cli::backups::run(&client, cli.output, cmd),
        Command::Webhooks(cmd) => cli::notify::webhooks(&client, cli.output, cmd),
        Command::Outbox(cmd) => cli::notify::outbox(&client, cli.output, cmd),
        Command::Drift(args) => cli::drift::run(&client, cli.output, args),
        Command::Serve { .. } | Command::Api | Command::Worker { .. } => Ok(()),
    }
}
