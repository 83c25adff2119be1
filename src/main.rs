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
    Worker,
    /// Manage tenants (calls the API).
    #[command(subcommand)]
    Tenants(cli::TenantCmd),
    /// Manage database servers (calls the API).
    #[command(subcommand)]
    Servers(cli::ServerCmd),
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("TENANTPLANE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
        Command::Worker => Some(Parts {
            api: false,
            worker: true,
            demo: false,
        }),
        _ => None,
    };
    if let Some(parts) = parts {
        let config = Config::load(cli.config.as_deref())?;
        init_logging(config.log_format);
        return serve::run(&config, parts);
    }
    let client = Client::new(&cli.api_url, cli.token.clone());
    match cli.command {
        Command::Tenants(cmd) => cli::tenants(&client, cli.output, cmd),
        Command::Servers(cmd) => cli::servers(&client, cli.output, cmd),
        Command::Serve { .. } | Command::Api | Command::Worker => Ok(()),
    }
}
