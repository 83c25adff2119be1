//! Provisioning (not timed): phase-0 tenants for the engine, with their
//! control rows, and phase-0 databases for the diesel CLI loop.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use diesel::connection::SimpleConnection;
use tenantplane_control_db::ControlDb;
use tenantplane_fleet::servers::DatabaseServer;
use tenantplane_fleet::tenant_db::{self, TenantConnection, TenantDbLocation};
use uuid::Uuid;

use super::progress::Progress;
use super::scratch::Scratch;
use super::Settings;
use crate::control_rows::insert_tenants;

/// Tenants provisioned per batch.
const CHUNK: usize = 500;

/// Provisions `total` databases in batches of [`CHUNK`]: `make` creates one
/// database on one of the `workers` (one thread each); `after` sees each
/// batch's ids once all of them exist.
fn provision_batches<W: Send>(
    label: &str,
    total: usize,
    workers: &mut [W],
    make: impl Fn(&mut W, &Uuid) -> Result<()> + Sync,
    mut after: impl FnMut(usize, &[Uuid]) -> Result<()>,
) -> Result<()> {
    let mut progress = Progress::new(label, total);
    let make = &make;
    let mut done = 0;
    while done < total {
        let ids: Vec<Uuid> = (0..CHUNK.min(total - done))
            .map(|_| Uuid::new_v4())
            .collect();
        let per = ids.len().div_ceil(workers.len().max(1));
        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = workers
                .iter_mut()
                .zip(ids.chunks(per))
                .map(|(w, part)| {
                    scope.spawn(move || -> Result<()> {
                        for id in part {
                            make(w, id)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow!("a provisioning thread panicked"))??;
            }
            Ok(())
        })?;
        after(done, &ids)?;
        done += ids.len();
        progress.update(done);
    }
    Ok(())
}

/// SQLite: one phase-0 template made the way `registry::create` makes a
/// tenant database (create with WAL, connect, migrate), copied per tenant.
/// `baseline_lists`: one set of M baseline databases per list (one for the
/// sequential diesel CLI loop, one for the parallel one), each listed in its
/// file, one path (SQLite) or schema (PostgreSQL) per line.
pub(super) fn sqlite(
    s: &Settings,
    scratch: &Scratch,
    db: &ControlDb,
    server: &DatabaseServer,
    baseline_lists: &[&Path],
) -> Result<()> {
    let template = template_path(scratch);
    if let Some(dir) = template.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let location = TenantDbLocation::SqliteFile {
        path: template.clone(),
    };
    location
        .create()
        .map_err(|e| anyhow!("creating the template database: {e}"))?;
    {
        let mut conn = location
            .connect()
            .map_err(|e| anyhow!("opening the template database: {e}"))?;
        conn.migrate_to(Some(s.phase0))
            .context("migrating the template database to phase 0")?;
        if let TenantConnection::Sqlite(c) = &mut conn {
            c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")
                .context("checkpointing the template database")?;
        }
    }
    let mut wal = template.clone().into_os_string();
    wal.push("-wal");
    ensure!(
        !Path::new(&wal).exists(),
        "the template database left a WAL file behind; copies would miss its content"
    );

    let copy_to = |path: &Path| -> Result<()> {
        std::fs::copy(&template, path)
            .map(drop)
            .with_context(|| format!("copying the template to {}", path.display()))
    };
    let mut workers = vec![(); 2];
    provision_batches(
        "provisioning engine tenants",
        s.tenants,
        &mut workers,
        |_, id| match TenantDbLocation::new(server, id) {
            TenantDbLocation::SqliteFile { path } => copy_to(&path),
            other => bail!("unexpected location {other:?} for a SQLite server"),
        },
        |first, ids| insert_tenants(db, server, s.phase0, first, ids),
    )?;

    for (n, baseline_list) in baseline_lists.iter().enumerate() {
        let baseline_dir = scratch.dir.join(format!("baseline-{n}"));
        std::fs::create_dir_all(&baseline_dir)?;
        let mut list = BufWriter::new(File::create(baseline_list)?);
        provision_batches(
            "provisioning baseline databases",
            s.baseline,
            &mut workers,
            |_, id| copy_to(&baseline_dir.join(format!("{}.db", tenant_db::db_name(id)))),
            |_, ids| {
                for id in ids {
                    let path = baseline_dir.join(format!("{}.db", tenant_db::db_name(id)));
                    writeln!(list, "{}", path.display())?;
                }
                Ok(())
            },
        )?;
        list.flush()?;
    }
    Ok(())
}

/// PostgreSQL: every schema made by [`pg_schema`] (no copies: PostgreSQL has
/// no schema clone).
pub(super) fn postgres(
    s: &Settings,
    db: &ControlDb,
    server: &DatabaseServer,
    baseline_lists: &[&Path],
) -> Result<()> {
    let mut workers = vec![(); 4];
    let make = |_: &mut (), id: &Uuid| pg_schema(server, id, s.phase0).map(drop);
    provision_batches(
        "provisioning engine tenants",
        s.tenants,
        &mut workers,
        make,
        |first, ids| insert_tenants(db, server, s.phase0, first, ids),
    )?;
    for baseline_list in baseline_lists {
        let mut list = BufWriter::new(File::create(baseline_list)?);
        provision_batches(
            "provisioning baseline schemas",
            s.baseline,
            &mut workers,
            make,
            |_, ids| {
                for id in ids {
                    writeln!(list, "{}", tenant_db::db_name(id))?;
                }
                Ok(())
            },
        )?;
        list.flush()?;
    }
    Ok(())
}

/// A tenant's PostgreSQL schema at phase 0, made the way `registry::create`
/// makes one (`TenantDbLocation::create`, `connect`, `migrate_to`).
pub(crate) fn pg_schema(
    server: &DatabaseServer,
    id: &Uuid,
    phase0: &'static str,
) -> Result<TenantDbLocation> {
    let location = TenantDbLocation::new(server, id);
    let schema = tenant_db::db_name(id);
    location
        .create()
        .with_context(|| format!("creating schema {schema}"))?;
    let mut conn = location
        .connect()
        .with_context(|| format!("connecting to schema {schema}"))?;
    if let TenantConnection::Postgres(pg) = &mut conn {
        // Provisioning only: no need to wait for each commit's flush.
        pg.batch_execute("SET synchronous_commit = off")
            .context("setting synchronous_commit")?;
    }
    conn.migrate_to(Some(phase0))
        .with_context(|| format!("migrating schema {schema} to phase 0"))?;
    Ok(location)
}

/// The phase-0 SQLite template that tenant databases are copied from.
pub(super) fn template_path(scratch: &Scratch) -> std::path::PathBuf {
    scratch.dir.join("template").join("t_template.db")
}
