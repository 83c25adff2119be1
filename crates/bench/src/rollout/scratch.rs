//! The scratch directory and the bench database, removed at the end.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use tenantplane_fleet::tenant_db::TenantDbLocation;
use tenantplane_fleet::urls;
use uuid::Uuid;

use super::Settings;

/// The scratch directory and database: removed at the end, also on error.
pub(super) struct Scratch {
    pub(super) dir: PathBuf,
    /// The bench database (PostgreSQL runs): created and dropped the way
    /// the fleet creates and drops a database-per-tenant database.
    pg: Option<TenantDbLocation>,
    keep: bool,
    done: bool,
}

impl Scratch {
    pub(super) fn create(s: &Settings) -> Result<Scratch> {
        let tag = Uuid::new_v4().simple().to_string()[..12].to_string();
        let dir = s.parent.join(format!("tp_bench_{tag}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating scratch directory {}", dir.display()))?;
        let mut scratch = Scratch {
            dir,
            pg: None,
            keep: s.keep,
            done: false,
        };
        if s.needs_pg() {
            let database = TenantDbLocation::PgDatabase {
                server_url: s.pg_url.clone(),
                database: format!("tp_bench_{tag}"),
            };
            database.create().with_context(|| {
                format!(
                    "creating the bench database on {}",
                    urls::redact_url(&s.pg_url)
                )
            })?;
            scratch.pg = Some(database);
        }
        Ok(scratch)
    }

    /// URL of the bench database.
    pub(super) fn pg_db_url(&self) -> Result<String> {
        let Some(TenantDbLocation::PgDatabase {
            server_url,
            database,
        }) = &self.pg
        else {
            bail!("no bench database");
        };
        urls::with_database(server_url, database).map_err(|e| anyhow!("--pg-url: {e}"))
    }

    pub(super) fn cleanup(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        if self.keep {
            eprintln!("kept scratch directory {}", self.dir.display());
            if let Some(TenantDbLocation::PgDatabase { database, .. }) = &self.pg {
                eprintln!("kept database {database}");
            }
            return Ok(());
        }
        let mut failures = Vec::new();
        if let Some(database) = &self.pg {
            if let Err(e) = database.drop_if_exists() {
                failures.push(format!("{:#}", anyhow!(e)));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            failures.push(format!("removing {}: {e}", self.dir.display()));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("cleanup failed: {}", failures.join("; "))
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("{e:#}");
        }
    }
}
