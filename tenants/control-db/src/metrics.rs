//! Numbers for `/metrics`, read from the control database so every API
//! replica reports the same thing whichever worker did the work: rollouts
//! and their tasks, tenants, backups, schedules. It reads every domain's
//! tables, which is why it lives with the schema rather than in one domain.

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};

use crate::db::{ControlConnection, ControlDb};
use crate::error::Result;

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
    pub backups_by_state: Vec<(String, i64)>,
    /// Size of the artifacts of completed and verified backups.
    pub backup_bytes: i64,
    /// Per live tenant with one: the age of its newest verified backup,
    /// seconds; and how many live tenants have none.
    pub verified_ages_s: Vec<i64>,
    pub tenants_without_verified_backup: i64,
    /// Per schedule: how late its newest fire time was decided, seconds.
    pub schedule_lag_s: Vec<(String, f64)>,
    /// Notification deliveries by (channel, state).
    pub deliveries: Vec<(String, String, i64)>,
    /// Delivery attempts by (channel, outcome), ever.
    pub delivery_attempts: Vec<(String, String, i64)>,
    /// Outbox events not fanned out yet.
    pub outbox_undispatched: i64,
}

#[derive(QueryableByName)]
struct Triple {
    #[diesel(sql_type = Text)]
    a: String,
    #[diesel(sql_type = Text)]
    b: String,
    #[diesel(sql_type = BigInt)]
    v: i64,
}

fn triples(conn: &mut ControlConnection, sql: &str) -> Result<Vec<(String, String, i64)>> {
    let rows: Vec<Triple> = load(conn, sql)?;
    Ok(rows.into_iter().map(|r| (r.a, r.b, r.v)).collect())
}

/// Bounds (hours) of the verified-backup age buckets.
pub const VERIFIED_AGE_HOURS: &[i64] = &[24, 48, 24 * 7, 24 * 30];

#[derive(QueryableByName)]
struct KV {
    #[diesel(sql_type = Text)]
    k: String,
    #[diesel(sql_type = BigInt)]
    v: i64,
}

#[derive(QueryableByName)]
struct Verified {
    #[diesel(sql_type = Nullable<Timestamp>)]
    newest: Option<NaiveDateTime>,
}

#[derive(QueryableByName)]
struct Lag {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Timestamp)]
    fire_at: NaiveDateTime,
    #[diesel(sql_type = Timestamp)]
    decided_at: NaiveDateTime,
}

/// A raw query on whichever backend (the SQL here is in the shared subset).
fn load<T>(conn: &mut ControlConnection, sql: &str) -> Result<Vec<T>>
where
    T: QueryableByName<diesel::sqlite::Sqlite> + QueryableByName<diesel::pg::Pg> + 'static,
{
    Ok(match conn {
        ControlConnection::Sqlite(c) => diesel::sql_query(sql).load(c)?,
        ControlConnection::Postgres(c) => diesel::sql_query(sql).load(c)?,
    })
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = Nullable<BigInt>)]
    v: Option<i64>,
}

fn pairs(conn: &mut ControlConnection, sql: &str) -> Result<Vec<(String, i64)>> {
    let rows: Vec<KV> = load(conn, sql)?;
    Ok(rows.into_iter().map(|r| (r.k, r.v)).collect())
}

fn number(conn: &mut ControlConnection, sql: &str) -> Result<i64> {
    let rows: Vec<N> = load(conn, sql)?;
    Ok(rows.first().and_then(|r| r.v).unwrap_or(0))
}

pub fn snapshot(db: &ControlDb) -> Result<Snapshot> {
    let mut conn = db.conn()?;
    let c = &mut *conn;
    let mut s = Snapshot {
        tasks_by_state: pairs(c, "SELECT state AS k, CAST(sum(n) AS BIGINT) AS v FROM rollout_counters GROUP BY state ORDER BY state")?,
        rollouts_by_state: pairs(c, "SELECT state AS k, count(*) AS v FROM rollouts GROUP BY state ORDER BY state")?,
        tenants_by_status: pairs(c, "SELECT status AS k, count(*) AS v FROM tenants WHERE deleted_at IS NULL GROUP BY status ORDER BY status")?,
        queue_depth: number(c, "SELECT CAST(COALESCE(sum(t.n), 0) AS BIGINT) AS v FROM rollout_counters t JOIN rollouts r ON r.id = t.rollout_id WHERE t.state = 'pending' AND r.state = 'running'")?,
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
    s.backups_by_state = pairs(
        c,
        "SELECT state AS k, count(*) AS v FROM backups GROUP BY state ORDER BY state",
    )?;
    s.backup_bytes = number(c, "SELECT CAST(COALESCE(sum(size_bytes), 0) AS BIGINT) AS v FROM backups WHERE state IN ('completed', 'verified')")?;
    // Ages are computed here, not in SQL: date arithmetic is not in the
    // subset SQLite and PostgreSQL share.
    let newest: Vec<Verified> = load(c, "SELECT (SELECT max(b.verified_at) FROM backups b WHERE b.tenant_id = t.id AND b.state = 'verified') AS newest FROM tenants t WHERE t.deleted_at IS NULL AND t.status <> 'provisioning'")?;
    let now = Utc::now().naive_utc();
    let ages: Vec<i64> = newest
        .iter()
        .filter_map(|r| r.newest.map(|t| (now - t).num_seconds().max(0)))
        .collect();
    s.tenants_without_verified_backup = (newest.len() - ages.len()) as i64;
    s.verified_ages_s = ages;
    let lags: Vec<Lag> = load(c, "SELECT s.name AS name, r.fire_at AS fire_at, r.decided_at AS decided_at FROM schedules s JOIN schedule_runs r ON r.id = (SELECT max(x.id) FROM schedule_runs x WHERE x.schedule_id = s.id) WHERE s.enabled ORDER BY s.name")?;
    s.schedule_lag_s = lags
        .into_iter()
        .map(|l| {
            let lag = (l.decided_at - l.fire_at).num_milliseconds().max(0) as f64 / 1000.0;
            (l.name, lag)
        })
        .collect();
    s.deliveries = triples(c, "SELECT channel AS a, state AS b, count(*) AS v FROM deliveries GROUP BY channel, state ORDER BY channel, state")?;
    s.delivery_attempts = triples(c, "SELECT d.channel AS a, x.outcome AS b, count(*) AS v FROM delivery_attempts x JOIN deliveries d ON d.id = x.delivery_id GROUP BY d.channel, x.outcome ORDER BY d.channel, x.outcome")?;
    s.outbox_undispatched = number(
        c,
        "SELECT CAST(count(*) AS BIGINT) AS v FROM outbox WHERE dispatched_at IS NULL",
    )?;
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
    out += "# HELP tenantplane_backups Backups by state.\n# TYPE tenantplane_backups gauge\n";
    for (k, v) in &s.backups_by_state {
        out += &format!("tenantplane_backups{{state=\"{k}\"}} {v}\n");
    }
    out += &format!(
        "# HELP tenantplane_backup_bytes Bytes stored by completed and verified backups.\n# TYPE tenantplane_backup_bytes gauge\ntenantplane_backup_bytes {}\n",
        s.backup_bytes
    );
    let name = "tenantplane_tenant_verified_backup_age_seconds";
    out += &format!("# HELP {name} Age of each live tenant's newest verified backup (tenants with none: tenantplane_tenants_without_verified_backup).\n# TYPE {name} histogram\n");
    let ages = &s.verified_ages_s;
    for h in VERIFIED_AGE_HOURS {
        let n = ages.iter().filter(|a| **a <= h * 3600).count();
        out += &format!("{name}_bucket{{le=\"{}\"}} {n}\n", h * 3600);
    }
    out += &format!(
        "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}\n",
        ages.len(),
        ages.iter().sum::<i64>(),
        ages.len()
    );
    out += &format!(
        "# HELP tenantplane_tenants_without_verified_backup Live tenants with no verified backup.\n# TYPE tenantplane_tenants_without_verified_backup gauge\ntenantplane_tenants_without_verified_backup {}\n",
        s.tenants_without_verified_backup
    );
    out += "# HELP tenantplane_schedule_lag_seconds How late each enabled schedule's newest fire time was decided.\n# TYPE tenantplane_schedule_lag_seconds gauge\n";
    for (k, v) in &s.schedule_lag_s {
        out += &format!("tenantplane_schedule_lag_seconds{{schedule=\"{k}\"}} {v}\n");
    }
    out += "# HELP tenantplane_notify_deliveries Notification deliveries by channel and state.\n# TYPE tenantplane_notify_deliveries gauge\n";
    for (c, st, v) in &s.deliveries {
        out += &format!("tenantplane_notify_deliveries{{channel=\"{c}\",state=\"{st}\"}} {v}\n");
    }
    out += "# HELP tenantplane_notify_attempts_total Notification delivery attempts by channel and outcome.\n# TYPE tenantplane_notify_attempts_total counter\n";
    for (c, o, v) in &s.delivery_attempts {
        out +=
            &format!("tenantplane_notify_attempts_total{{channel=\"{c}\",outcome=\"{o}\"}} {v}\n");
    }
    out += &format!(
        "# HELP tenantplane_outbox_undispatched Outbox events not fanned out yet.\n# TYPE tenantplane_outbox_undispatched gauge\ntenantplane_outbox_undispatched {}\n",
        s.outbox_undispatched
    );
    out
}
