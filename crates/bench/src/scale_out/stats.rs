//! What the control database did: PostgreSQL's per-database counters
//! (`pg_stat_database`: transactions and rows; `pg_stat_statements` would
//! need a server restart to load), and the CPU time of the backends serving
//! the workers (`/proc/<pid>/stat`, the server being on this machine).

use anyhow::{Context, Result};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};

/// `pg_stat_database` counters of one database.
#[derive(Debug, Clone, Copy, Default, QueryableByName)]
pub struct DbCounters {
    /// Committed plus rolled-back transactions (an autocommit statement is
    /// one).
    #[diesel(sql_type = BigInt)]
    pub xacts: i64,
    /// Rows fetched by index scans plus rows returned by sequential scans.
    #[diesel(sql_type = BigInt)]
    pub rows_read: i64,
    /// Rows inserted, updated or deleted.
    #[diesel(sql_type = BigInt)]
    pub rows_written: i64,
}

impl DbCounters {
    pub fn minus(self, o: DbCounters) -> DbCounters {
        DbCounters {
            xacts: self.xacts - o.xacts,
            rows_read: self.rows_read - o.rows_read,
            rows_written: self.rows_written - o.rows_written,
        }
    }
}

/// The counters now, as the statistics system has them (backends report
/// at most once a second, so read a moment after the work).
pub fn counters(admin: &mut PgConnection, database: &str) -> Result<DbCounters> {
    diesel::sql_query("SELECT pg_stat_clear_snapshot()")
        .execute(admin)
        .context("clearing the statistics snapshot")?;
    diesel::sql_query(
        "SELECT (xact_commit + xact_rollback)::bigint AS xacts,
                (tup_fetched + tup_returned)::bigint AS rows_read,
                (tup_inserted + tup_updated + tup_deleted)::bigint AS rows_written
           FROM pg_stat_database WHERE datname = $1",
    )
    .bind::<Text, _>(database)
    .get_result(admin)
    .with_context(|| format!("reading pg_stat_database for {database}"))
}

/// CPU seconds of the backends connected with `application_name`.
pub fn backends_cpu_secs(admin: &mut PgConnection, application_name: &str) -> Result<f64> {
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }
    let pids: Vec<Pid> =
        diesel::sql_query("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
            .bind::<Text, _>(application_name)
            .load(admin)
            .context("listing the workers' backends")?;
    // A backend that ended in between counts nothing.
    Ok(pids
        .iter()
        .filter_map(|p| proc_cpu_secs(p.pid as u32).ok())
        .sum())
}

/// User + system CPU seconds of a process (fields 14 and 15 of
/// `/proc/<pid>/stat`, in USER_HZ = 100 ticks a second).
pub fn proc_cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|t| t as f64 / 100.0)
        .with_context(|| format!("/proc/{pid}/stat has no CPU times"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime() {
        let stat = "1234 (postgres: x (y)) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 1 0 99";
        assert_eq!(parse_cpu_ticks(stat), Some(290));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert!(proc_cpu_secs(std::process::id()).is_ok());
    }
}
