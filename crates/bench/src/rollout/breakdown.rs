//! `--breakdown K`: where the time of one tenant run goes, single-threaded,
//! each part on its own fresh phase-0 databases.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tenantplane_fleet::servers::DatabaseServer;
use tenantplane_fleet::tenant_db::{self, TenantConnection, TenantDbLocation};
use tenantplane_fleet::tenant_run::{self, ProbeSet, RunOptions};
use tenantplane_migrations::catalogue;
use uuid::Uuid;

use super::provision;
use super::scratch::Scratch;
use super::{Backend, Settings};
use crate::cpu_meter::CpuMeter;

/// A fresh phase-0 database outside the fleet (for the breakdown).
fn fresh_phase0(
    s: &Settings,
    scratch: &Scratch,
    server: &DatabaseServer,
) -> Result<(Uuid, TenantDbLocation)> {
    let id = Uuid::new_v4();
    let location = match s.backend {
        Backend::Sqlite => {
            let dir = scratch.dir.join("breakdown");
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("{}.db", tenant_db::db_name(&id)));
            std::fs::copy(provision::template_path(scratch), &path)
                .with_context(|| format!("copying the template to {}", path.display()))?;
            TenantDbLocation::SqliteFile { path }
        }
        Backend::Postgres => provision::pg_schema(server, &id, s.phase0)?,
    };
    Ok((id, location))
}

/// Mean milliseconds per tenant of the parts of a tenant run, each timed on
/// its own fresh phase-0 databases, one at a time. Every part includes
/// connecting and closing.
pub(super) fn run(
    s: &Settings,
    scratch: &Scratch,
    server: &DatabaseServer,
) -> Result<Vec<BreakdownPart>> {
    type Part = fn(&mut TenantConnection, &Uuid, &'static str) -> Result<()>;
    fn nothing(_: &mut TenantConnection, _: &Uuid, _: &'static str) -> Result<()> {
        Ok(())
    }
    fn migrate_only(c: &mut TenantConnection, _: &Uuid, head: &'static str) -> Result<()> {
        c.migrate_to(Some(head)).map(drop).context("migrating")
    }
    fn engine_run(
        c: &mut TenantConnection,
        id: &Uuid,
        head: &'static str,
        probes: ProbeSet,
    ) -> Result<()> {
        let opts = RunOptions {
            target: Some(head.to_string()),
            probes,
            timeout: Duration::from_secs(300),
            lock_wait: Duration::from_secs(1),
            lock_key: tenant_run::lock_key(&id.to_string()),
            recorded: None,
        };
        match tenant_run::run_on(c, &opts).error {
            None => Ok(()),
            Some(e) => bail!("tenant run failed: {}", e.message),
        }
    }
    fn without_probes(c: &mut TenantConnection, id: &Uuid, head: &'static str) -> Result<()> {
        engine_run(c, id, head, ProbeSet::Off)
    }
    fn with_probes(c: &mut TenantConnection, id: &Uuid, head: &'static str) -> Result<()> {
        // Phase 0 → head changes every table: `Changed` picks every probe,
        // as `Full` would.
        engine_run(c, id, head, ProbeSet::Changed)
    }
    fn changed_probes(c: &mut TenantConnection, id: &Uuid, head: &'static str) -> Result<()> {
        engine_run(c, id, head, ProbeSet::Changed)
    }
    fn full_probes(c: &mut TenantConnection, id: &Uuid, head: &'static str) -> Result<()> {
        engine_run(c, id, head, ProbeSet::Full)
    }
    // (what, the part, whether it is the floor: the least any engine must
    // do per tenant — connect, run the migrations once in one transaction,
    // record their versions — and where the tenant starts: phase 0, or
    // migrated beforehand, untimed, to that phase).
    let parts: [(&str, Part, bool, Option<u8>); 6] = [
        ("connect + close", nothing, false, None),
        (
            "migrations, one transaction each (as the diesel CLI runs them), in-process",
            migrate_only,
            false,
            None,
        ),
        (
            "tenant_run::run_on without probes (one outer transaction, savepoints)",
            without_probes,
            true,
            None,
        ),
        (
            "tenant_run::run_on with probes (what a worker runs)",
            with_probes,
            false,
            None,
        ),
        (
            "phase 4 -> head: tenant_run::run_on, probes of what the run changed (default)",
            changed_probes,
            false,
            Some(4),
        ),
        (
            "phase 4 -> head: tenant_run::run_on, every probe (verify: full)",
            full_probes,
            false,
            Some(4),
        ),
    ];
    let mut out = Vec::new();
    for (what, part, floor, from) in parts {
        let mut wall = Duration::ZERO;
        let mut cpu_secs = 0.0;
        for _ in 0..s.breakdown {
            let (id, location) = fresh_phase0(s, scratch, server)?;
            if let Some(phase) = from {
                let mut c = location.connect().map_err(|e| anyhow!("connecting: {e}"))?;
                c.migrate_to(catalogue::phase_version(phase))
                    .with_context(|| format!("breakdown: migrating to phase {phase} first"))?;
            }
            let started = Instant::now();
            let cpu = CpuMeter::start()?;
            let mut conn = location.connect().map_err(|e| anyhow!("connecting: {e}"))?;
            part(&mut conn, &id, s.head).with_context(|| format!("breakdown: {what}"))?;
            drop(conn);
            cpu_secs += cpu.busy_secs()?;
            wall += started.elapsed();
        }
        out.push(BreakdownPart {
            what,
            wall_ms: wall.as_secs_f64() * 1000.0 / s.breakdown as f64,
            cpu_ms: cpu_secs * 1000.0 / s.breakdown as f64,
            floor,
        });
    }
    Ok(out)
}

/// Mean cost per tenant of one part of a tenant run.
pub(super) struct BreakdownPart {
    pub(super) what: &'static str,
    pub(super) wall_ms: f64,
    pub(super) cpu_ms: f64,
    /// The part that bounds any engine: see [`run`].
    pub(super) floor: bool,
}
