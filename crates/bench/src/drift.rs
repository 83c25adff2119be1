//! `tenantplane-bench drift`: what a drift check costs per tenant, against
//! the least a task pays to learn where a tenant is (connect and read its
//! applied versions), on the same tenant databases, in one run.
//!
//! 1. Provision N tenants at the target (SQLite files in a scratch
//!    directory, or PostgreSQL schemas in a scratch database). Not timed.
//! 2. The reference of the target, built cold (once per process).
//! 3. Per tenant, sequentially: baseline = connect + `SELECT version FROM
//!    __diesel_schema_migrations`; check = connect + the drift check (what
//!    the rollout's gate and `GET /v1/tenants/{id}/drift` do); the check
//!    alone on a just-opened connection, and again on that connection (warm
//!    catalogue caches, as a pooled connection would have). Every tenant
//!    must report no drift.
//!
//! See `docs/benchmarks.md` for the measured figures.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use diesel::prelude::*;
use tenantplane_drift::check::check_connection;
use tenantplane_fleet::tenant_db::{TenantConnection, TenantDbLocation};
use tenantplane_fleet::urls;
use tenantplane_migrations::snapshot::reference;
use tenantplane_migrations::SchemaTarget;
use uuid::Uuid;

use crate::rollout::Backend;

/// Options of `tenantplane-bench drift`.
#[derive(Debug, clap::Args)]
pub struct DriftArgs {
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Tenants checked.
    #[arg(long, default_value_t = 200)]
    tenants: usize,
    /// The version the tenants are at (`head`, `phase:N`, `version:V`).
    #[arg(long, default_value = "head")]
    target: String,
    /// PostgreSQL server; the bench creates and drops its own database there.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[allow(dead_code)]
    version: String,
}

const APPLIED: &str = "SELECT version FROM __diesel_schema_migrations";

/// Connect and read the applied versions: the baseline.
fn versions(location: &TenantDbLocation) -> Result<usize> {
    Ok(match location.connect()? {
        TenantConnection::Sqlite(mut c) => diesel::sql_query(APPLIED).load::<Version>(&mut c)?,
        TenantConnection::Postgres(mut c) => diesel::sql_query(APPLIED).load::<Version>(&mut c)?,
    }
    .len())
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

fn per_tenant(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1000.0 / n.max(1) as f64
}

pub fn run(args: DriftArgs) -> Result<()> {
    let target: SchemaTarget = args.target.parse().map_err(|e| anyhow!("--target: {e}"))?;
    let version = target.version().map(str::to_string);
    let tag = Uuid::new_v4().simple().to_string()[..12].to_string();
    let dir = std::env::temp_dir().join(format!("tp_bench_drift_{tag}"));
    std::fs::create_dir_all(&dir)?;
    let database = TenantDbLocation::PgDatabase {
        server_url: args.pg_url.clone(),
        database: format!("tp_bench_drift_{tag}"),
    };
    if args.backend == Backend::Postgres {
        database.create().with_context(|| {
            format!("creating a database on {}", urls::redact_url(&args.pg_url))
        })?;
    }
    let result = measure(&args, version.as_deref(), &dir, &database);
    let _ = std::fs::remove_dir_all(&dir);
    if args.backend == Backend::Postgres {
        let _ = database.drop_if_exists();
    }
    result
}

fn measure(
    args: &DriftArgs,
    version: Option<&str>,
    dir: &std::path::Path,
    database: &TenantDbLocation,
) -> Result<()> {
    let db_url = match database {
        TenantDbLocation::PgDatabase {
            server_url,
            database,
        } => urls::with_database(server_url, database).map_err(|e| anyhow!("--pg-url: {e}"))?,
        _ => String::new(),
    };
    let locations: Vec<TenantDbLocation> = (0..args.tenants)
        .map(|i| match args.backend {
            Backend::Sqlite => TenantDbLocation::SqliteFile {
                path: dir.join(format!("t_{i:06}.db")),
            },
            Backend::Postgres => TenantDbLocation::PgSchema {
                server_url: db_url.clone(),
                schema: format!("t_{}", Uuid::new_v4().simple()),
            },
        })
        .collect();
    eprintln!(
        "provisioning {} {} tenants at {}…",
        args.tenants,
        backend_name(args.backend),
        args.target
    );
    for l in &locations {
        l.create()?;
        l.connect()?.migrate_to(version)?;
    }

    // The reference, cold: built once per process and version.
    let started = Instant::now();
    match locations
        .first()
        .map(TenantDbLocation::connect)
        .transpose()?
    {
        Some(TenantConnection::Sqlite(_)) => {
            reference::sqlite(version)?;
        }
        Some(TenantConnection::Postgres(mut c)) => {
            let major = tenantplane_migrations::snapshot::postgres::snapshot(&mut c)?.server_major;
            reference::postgres(&mut c, major, version)?;
        }
        None => {}
    }
    let reference_ms = started.elapsed().as_secs_f64() * 1000.0;

    let started = Instant::now();
    for l in &locations {
        ensure!(versions(l)? > 0 || version.is_none(), "no versions read");
    }
    let baseline = started.elapsed();

    let started = Instant::now();
    for l in &locations {
        let d = check_connection(&mut l.connect()?, version)?;
        ensure!(d.is_empty(), "an untouched tenant drifted: {d:?}");
    }
    let check = started.elapsed();

    // The check alone, on a connection opened just before (its server
    // process's catalogue caches still cold), then again on the same
    // connection (warm: what a pooled connection pays).
    let (mut alone, mut warm) = (Duration::ZERO, Duration::ZERO);
    for l in &locations {
        let mut c = l.connect()?;
        for total in [&mut alone, &mut warm] {
            let started = Instant::now();
            let d = check_connection(&mut c, version)?;
            *total += started.elapsed();
            ensure!(d.is_empty(), "an untouched tenant drifted: {d:?}");
        }
    }

    let (b, c, a, w) = (
        per_tenant(baseline, args.tenants),
        per_tenant(check, args.tenants),
        per_tenant(alone, args.tenants),
        per_tenant(warm, args.tenants),
    );
    println!(
        "drift check, {} tenants on {} at {}",
        args.tenants,
        backend_name(args.backend),
        args.target
    );
    println!("  reference build (once per version, cold)   {reference_ms:8.1} ms");
    println!("  baseline: connect + read versions          {b:8.2} ms/tenant");
    println!(
        "  connect + drift check                      {c:8.2} ms/tenant   ({:.2}× the baseline)",
        c / b.max(f64::EPSILON)
    );
    println!(
        "  drift check on a just-opened connection    {a:8.2} ms/tenant   ({:.2}× the baseline)",
        a / b.max(f64::EPSILON)
    );
    println!(
        "  drift check again on that connection       {w:8.2} ms/tenant   ({:.2}× the baseline)",
        w / b.max(f64::EPSILON)
    );
    println!("  references built by this process: {}", reference::built());
    Ok(())
}
