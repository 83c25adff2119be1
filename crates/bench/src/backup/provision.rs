//! Provisioning (not timed): N tenants at head with phase-0 fixture data
//! (`tenantplane_testkit::fixture::phase0`), and their control rows.
//!
//! Each tenant database is made the way `registry::create` makes one
//! (`TenantDbLocation::create`, `connect`, `migrate_to`), except that the
//! fixture is loaded at phase 0 and the database then migrated to head, as a
//! tenant that has lived through the rollouts would be. SQLite: one template
//! made so, copied per tenant. PostgreSQL: every schema made so.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, ensure, Context, Result};
use diesel::connection::SimpleConnection;
use tenantplane_control_db::ControlDb;
use tenantplane_fleet::servers::DatabaseServer;
use tenantplane_fleet::tenant_db::{TenantConnection, TenantDbLocation};
use uuid::Uuid;

use super::Settings;
use crate::control_rows::insert_tenants;

/// Creates one tenant database at head with the fixture loaded at phase 0.
fn make_tenant(s: &Settings, location: &TenantDbLocation, fixture: &str) -> Result<()> {
    location
        .create()
        .map_err(|e| anyhow!("creating {location:?}: {e}"))?;
    let mut conn = location
        .connect()
        .map_err(|e| anyhow!("connecting to {location:?}: {e}"))?;
    conn.migrate_to(Some(s.phase0))
        .context("migrating to phase 0")?;
    match &mut conn {
        TenantConnection::Sqlite(c) => c.batch_execute(fixture),
        TenantConnection::Postgres(c) => c
            .batch_execute("SET synchronous_commit = off")
            .and_then(|()| c.batch_execute(&format!("BEGIN;\n{fixture}\nCOMMIT;"))),
    }
    .context("loading the fixture")?;
    conn.migrate_to(Some(s.head)).context("migrating to head")?;
    if let TenantConnection::Sqlite(c) = &mut conn {
        c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")
            .context("checkpointing")?;
    }
    Ok(())
}

/// Runs `make` for every id on `threads` threads.
fn parallel(threads: usize, ids: &[Uuid], make: impl Fn(&Uuid) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let (make, next, done) = (&make, &next, &done);
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(id) = ids.get(i) else { return Ok(()) };
                        make(id)?;
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if d % 250 == 0 {
                            eprintln!("provisioned {d}/{}", ids.len());
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow!("a provisioning thread panicked"))??;
        }
        Ok(())
    })
}

/// Provisions `s.tenants` tenants on `server`; returns their ids.
pub(super) fn tenants(
    s: &Settings,
    dir: &Path,
    db: &ControlDb,
    server: &DatabaseServer,
) -> Result<Vec<Uuid>> {
    let fixture = tenantplane_testkit::fixture::phase0(s.shops, s.sales).sql;
    let ids: Vec<Uuid> = (0..s.tenants).map(|_| Uuid::new_v4()).collect();
    match s.backend {
        crate::rollout::Backend::Sqlite => {
            let template = dir.join("template").join("t_template.db");
            std::fs::create_dir_all(dir.join("template"))?;
            make_tenant(
                s,
                &TenantDbLocation::SqliteFile {
                    path: template.clone(),
                },
                &fixture,
            )
            .context("the template database")?;
            let mut wal = template.clone().into_os_string();
            wal.push("-wal");
            ensure!(
                !Path::new(&wal).exists(),
                "the template database left a WAL file behind"
            );
            parallel(2, &ids, |id| match TenantDbLocation::new(server, id) {
                TenantDbLocation::SqliteFile { path } => std::fs::copy(&template, &path)
                    .map(drop)
                    .with_context(|| format!("copying the template to {}", path.display())),
                other => bail!("unexpected location {other:?} for a SQLite server"),
            })?;
        }
        crate::rollout::Backend::Postgres => {
            parallel(4, &ids, |id| {
                make_tenant(s, &TenantDbLocation::new(server, id), &fixture)
                    .with_context(|| format!("tenant {id}"))
            })?;
        }
    }
    insert_tenants(db, server, s.head, 0, &ids)?;
    Ok(ids)
}
