//! Reused PostgreSQL connections for tenant schemas: one idle list per server
//! (URL), shared by every tenant of that server in this process, so a worker
//! stops paying a connection set-up (~7 ms of CPU between libpq and the
//! backend) per PostgreSQL tenant.
//!
//! A connection serves one tenant at a time. Between tenants it is reset to
//! a fresh session — `RESET ALL` (settings, `search_path` included),
//! `DISCARD TEMP` (temporary tables), `DISCARD SEQUENCES`, `CLOSE ALL`
//! (cursors), `UNLISTEN *`, `pg_advisory_unlock_all()` — and the next tenant
//! sets its own `search_path`. (Not `DISCARD ALL`: it also deallocates the
//! prepared statements diesel keeps for the connection, which diesel would
//! then fail to find; PostgreSQL replans those when `search_path` changes, so
//! keeping them is safe.) A connection whose reset fails, or that is
//! returned inside a transaction, is closed instead of kept.
//!
//! No connection is opened ahead of need: a server has at most as many
//! connections from this process as tenants of it ran here at the same time
//! (bounded by the rollouts' per-server concurrency and the worker's
//! threads); at most [`MAX_IDLE`] idle ones are kept per server.
//!
//! Database-per-tenant servers are not pooled: a connection belongs to one
//! database.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, OnceLock};

use diesel::connection::{SimpleConnection, TransactionManager};
use diesel::prelude::*;

use crate::tenant_db::{TenantConnection, TenantDbError};

/// Idle connections kept per server, beyond which returned ones are closed.
pub const MAX_IDLE: usize = 32;

/// Back to a fresh session (see the module comment).
const RESET: &str = "RESET ALL; DISCARD TEMP; DISCARD SEQUENCES; CLOSE ALL; UNLISTEN *; \
                     SELECT pg_advisory_unlock_all();";

fn idle() -> &'static Mutex<HashMap<String, Vec<PgConnection>>> {
    static IDLE: OnceLock<Mutex<HashMap<String, Vec<PgConnection>>>> = OnceLock::new();
    IDLE.get_or_init(Default::default)
}

/// A connection to one tenant database. One to a tenant schema of a
/// PostgreSQL server goes back to that server's idle list when dropped;
/// others are closed.
pub struct PooledTenant {
    conn: Option<TenantConnection>,
    /// The server whose idle list takes the connection back.
    server_url: Option<String>,
}

impl PooledTenant {
    /// A connection that is closed when dropped (SQLite files, databases).
    pub fn unpooled(conn: TenantConnection) -> PooledTenant {
        PooledTenant {
            conn: Some(conn),
            server_url: None,
        }
    }

    /// A connection to `server_url` with `search_path` set to `schema`: an
    /// idle one if there is one, else a new one.
    pub fn checkout(server_url: &str, schema: &str) -> Result<PooledTenant, TenantDbError> {
        let reused = idle()
            .lock()
            .ok()
            .and_then(|mut m| m.get_mut(server_url).and_then(Vec::pop));
        let mut conn = match reused {
            Some(c) => c,
            None => PgConnection::establish(server_url)
                .map_err(|e| TenantDbError::new("cannot connect to PostgreSQL", e))?,
        };
        conn.batch_execute(&format!("SET search_path TO \"{schema}\""))
            .map_err(|e| TenantDbError::new(format!("cannot enter schema {schema}"), e))?;
        Ok(PooledTenant {
            conn: Some(TenantConnection::Postgres(conn)),
            server_url: Some(server_url.to_string()),
        })
    }

    /// How many idle connections this process keeps for `server_url`.
    pub fn idle_count(server_url: &str) -> usize {
        idle()
            .lock()
            .map(|m| m.get(server_url).map_or(0, Vec::len))
            .unwrap_or(0)
    }
}

impl Deref for PooledTenant {
    type Target = TenantConnection;
    fn deref(&self) -> &TenantConnection {
        // Only `drop` takes the connection out.
        match &self.conn {
            Some(c) => c,
            None => unreachable!("a pooled connection is used after it was returned"),
        }
    }
}

impl DerefMut for PooledTenant {
    fn deref_mut(&mut self) -> &mut TenantConnection {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable!("a pooled connection is used after it was returned"),
        }
    }
}

impl Drop for PooledTenant {
    fn drop(&mut self) {
        let (Some(TenantConnection::Postgres(mut conn)), Some(server_url)) =
            (self.conn.take(), self.server_url.take())
        else {
            return;
        };
        // Left inside a transaction (or broken): not reusable.
        let idle_session = matches!(
            diesel::connection::AnsiTransactionManager::transaction_manager_status_mut(&mut conn)
                .transaction_depth(),
            Ok(None)
        );
        if !idle_session {
            return;
        }
        if let Err(e) = conn.batch_execute(RESET) {
            tracing::debug!(error = %e, "closing a tenant connection whose reset failed");
            return;
        }
        if let Ok(mut m) = idle().lock() {
            let list = m.entry(server_url).or_default();
            if list.len() < MAX_IDLE {
                list.push(conn);
            }
        }
    }
}
