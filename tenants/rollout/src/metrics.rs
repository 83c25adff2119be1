//! Numbers for `/metrics`, read from the control database so every API
//! replica reports the same thing whichever worker did the work.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

use tenantplane_control_db::db::{ControlConnection, ControlDb};
use tenantplane_control_db::error::Result;

/// Upper bounds (milliseconds) of the migration duration histogram.
pub const BUCKETS_MS: &[i64] = &[
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub tasks_by_state: Vec<(String, i64)>,
    pub rollouts_by_state: Vec<(String, i64)>,
    pub tenants_by_status: Vec<(String, i64)>,
    /// Pending tasks of running rollouts.
    pub queue_depth: i64,
    /// Attempts beyond the first, over all tasks.
    pub retries: i64,
    /// Cumulative counts per bucket, then the +Inf count and the sum (ms).
    pub duration_buckets: Vec<i64>,
    pub duration_count: i64,
    pub duration_sum_ms: i64,
}

#[derive(QueryableByName)]
struct KV {
    #[diesel(sql_type = Text)]
    k: String,
    #[diesel(sql_type = BigInt)]
    v: i64,
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = Nullable<BigInt>)]
    v: Option<i64>,
}

fn pairs(conn: &mut ControlConnection, sql: &str) -> Result<Vec<(String, i64)>> {
    let rows: Vec<KV> = match conn {
        ControlConnection::Sqlite(c) => diesel::sql_query(sql).load(c)?,
        ControlConnection::Postgres(c) => diesel::sql_query(sql).load(c)?,
    };
    Ok(rows.into_iter().map(|r| (r.k, r.v)).collect())
}

fn number(conn: &mut ControlConnection, sql: &str) -> Result<i64> {
    let rows: Vec<N> = match conn {
        ControlConnection::Sqlite(c) => diesel::sql_query(sql).load(c)?,
        ControlConnection::Postgres(c) => diesel::sql_query(sql).load(c)?,
    };
    Ok(rows.first().and_then(|r| r.v).unwrap_or(0))
}

pub fn snapshot(db: &ControlDb) -> Result<Snapshot> {
    let mut conn = db.conn()?;
    let c = &mut *conn;
    let mut s = Snapshot {
        tasks_by_state: pairs(c, "SELECT state AS k, count(*) AS v FROM tasks GROUP BY state ORDER BY state")?,
        rollouts_by_state: pairs(c, "SELECT state AS k, count(*) AS v FROM rollouts GROUP BY state ORDER BY state")?,
        tenants_by_status: pairs(c, "SELECT status AS k, count(*) AS v FROM tenants WHERE deleted_at IS NULL GROUP BY status ORDER BY status")?,
        queue_depth: number(c, "SELECT count(*) AS v FROM tasks t JOIN rollouts r ON r.id = t.rollout_id WHERE t.state = 'pending' AND r.state = 'running'")?,
        retries: number(c, "SELECT CAST(COALESCE(sum(attempts - 1), 0) AS BIGINT) AS v FROM tasks WHERE attempts > 1")?,
        ..Snapshot::default()
    };
    for b in BUCKETS_MS {
        s.duration_buckets.push(number(
            c,
            &format!("SELECT CAST(count(*) AS BIGINT) AS v FROM tasks WHERE duration_ms IS NOT NULL AND state IN ('succeeded', 'failed') AND duration_ms <= {b}"),
        )?);
    }
    s.duration_count = number(c, "SELECT CAST(count(*) AS BIGINT) AS v FROM tasks WHERE duration_ms IS NOT NULL AND state IN ('succeeded', 'failed')")?;
    s.duration_sum_ms = number(c, "SELECT CAST(COALESCE(sum(duration_ms), 0) AS BIGINT) AS v FROM tasks WHERE duration_ms IS NOT NULL AND state IN ('succeeded', 'failed')")?;
    Ok(s)
}

/// Prometheus text exposition format.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, label: &str, rows: &[(String, i64)]| {
        out += &format!("# HELP {name} {help}\n# TYPE {name} gauge\n");
        for (k, v) in rows {
            out += &format!("{name}{{{label}=\"{k}\"}} {v}\n");
        }
    };
    gauge(
        "tenantplane_tasks",
        "Rollout tasks by state.",
        "state",
        &s.tasks_by_state,
    );
    gauge(
        "tenantplane_rollouts",
        "Rollouts by state.",
        "state",
        &s.rollouts_by_state,
    );
    gauge(
        "tenantplane_tenants",
        "Tenants by status (not deleted).",
        "status",
        &s.tenants_by_status,
    );
    out += &format!(
        "# HELP tenantplane_queue_depth Pending tasks of running rollouts.\n# TYPE tenantplane_queue_depth gauge\ntenantplane_queue_depth {}\n",
        s.queue_depth
    );
    out += &format!(
        "# HELP tenantplane_task_retries_total Attempts beyond the first, over all tasks.\n# TYPE tenantplane_task_retries_total counter\ntenantplane_task_retries_total {}\n",
        s.retries
    );
    let name = "tenantplane_migration_duration_seconds";
    out += &format!("# HELP {name} Time to migrate one tenant.\n# TYPE {name} histogram\n");
    for (b, n) in BUCKETS_MS.iter().zip(&s.duration_buckets) {
        out += &format!("{name}_bucket{{le=\"{}\"}} {n}\n", *b as f64 / 1000.0);
    }
    out += &format!("{name}_bucket{{le=\"+Inf\"}} {}\n", s.duration_count);
    out += &format!(
        "{name}_sum {}\n{name}_count {}\n",
        s.duration_sum_ms as f64 / 1000.0,
        s.duration_count
    );
    out
}
