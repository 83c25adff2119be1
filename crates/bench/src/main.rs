//! tenantplane-bench: the benchmarks, each against a baseline measured in the
//! same run. See `docs/benchmarks.md` and `docs/benchmark-flags.md`.

mod backup;
mod control_rows;
mod cpu_meter;
mod drift;
mod flags;
mod fleet;
mod rollout;
mod scale_out;

use std::io::IsTerminal;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "tenantplane-bench",
    version,
    about = "Benchmarks of tenantplane, each against a baseline measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// An engine rollout against a loop of the stock diesel CLI.
    Rollout(rollout::RolloutArgs),
    /// GET /v1/tenant/features under wrk, in memory against a control-DB
    /// read per request.
    Flags(flags::FlagsArgs),
    /// Backups of every tenant with the backup engine against a loop of
    /// `pg_dump -Fc` / `sqlite3 .backup`, then the restore drill.
    Backup(backup::BackupArgs),
    /// One rollout run by 1, 2 and 4 worker processes on one PostgreSQL
    /// control database: tenants/s, speed-up, CPU, control-DB cost per
    /// tenant.
    ScaleOut(scale_out::ScaleOutArgs),
    /// A worker process of `scale-out` (started by it).
    #[command(hide = true)]
    ScaleOutWorker(scale_out::WorkerArgs),
    /// What a rollout costs the control DB at 1,000 and at 100,000 tenants:
    /// no-op rollout, creation, progress reads under load, peak RSS.
    Fleet(fleet::FleetArgs),
    /// What a drift check costs per tenant, against connecting and reading
    /// the applied versions.
    Drift(drift::DriftArgs),
}

/// Logs at `warn` unless `TENANTPLANE_LOG` says otherwise: the API's
/// per-request lines are `info`, and at that level they would flood stderr
/// and measure the terminal. Colours only on a terminal.
fn init_logging() {
    let filter =
        EnvFilter::try_from_env("TENANTPLANE_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Rollout(args) => rollout::run(args),
        Command::Flags(args) => flags::run(args),
        Command::Backup(args) => backup::run(args),
        Command::ScaleOut(args) => scale_out::run(args),
        Command::ScaleOutWorker(args) => scale_out::worker_main(args),
        Command::Fleet(args) => fleet::run(args),
        Command::Drift(args) => drift::run(args),
    }
}
