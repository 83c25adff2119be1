//! Failures grouped by error: the failed tasks of a rollout that failed at
//! the same migration version with the same message once tenant-specific
//! parts (ids, numbers, quoted names) are masked; and a retry of one group.

use std::collections::BTreeMap;

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use tenantplane_control_db::audit::{self, Change};
use tenantplane_control_db::schema::{rollouts, tasks, tenants};
use tenantplane_control_db::states::{RolloutState, TaskState};
use tenantplane_control_db::{write_tx, Actor, ControlConnection, ControlDb, Error, Result};

use super::{find_row, get, set_state, Rollout};

/// One group of failed tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGroup {
    /// The migration version the tasks failed at (`-` when unknown).
    pub error_version: String,
    /// The normalised message.
    pub message: String,
    pub count: usize,
    /// Up to five tenant slugs of the group, for a drill-down.
    pub sample: Vec<String>,
}

/// Masks what differs between tenants: uuids and hex ids, numbers, and
/// quoted strings; collapses whitespace. `"tenant 1f0c… at 020100: table
/// \"t_abc\" exists"` and the same for another tenant normalise alike.
pub fn normalise(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.is_empty() {
            return;
        }
        let hexish = word.len() >= 8
            && word.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            && word.chars().any(|c| c.is_ascii_digit());
        let digits = word.chars().all(|c| c.is_ascii_digit());
        if hexish || digits {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    let mut quote: Option<char> = None;
    let mut last_space = false;
    for c in message.chars() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
                out.push('…');
                out.push(q);
            }
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            flush(&mut word, &mut out);
            quote = Some(c);
            out.push(c);
            last_space = false;
            continue;
        }
        if c.is_alphanumeric() || c == '-' || c == '_' {
            word.push(c);
            last_space = false;
            continue;
        }
        flush(&mut word, &mut out);
        if c.is_whitespace() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
        } else {
            out.push(c);
            last_space = false;
        }
    }
    flush(&mut word, &mut out);
    out.trim().to_string()
}

/// A failed task: id, tenant id, tenant slug, error version, error.
type Failed = (i64, String, String, Option<String>, Option<String>);

fn failed(conn: &mut ControlConnection, rollout_id: &str) -> Result<Vec<Failed>> {
    Ok(tasks::table
        .inner_join(tenants::table)
        .filter(tasks::rollout_id.eq(rollout_id))
        .filter(tasks::state.eq(TaskState::Failed.as_str()))
        .select((
            tasks::id,
            tasks::tenant_id,
            tenants::slug,
            tasks::error_version,
            tasks::last_error,
        ))
        .order(tasks::id.asc())
        .load(conn)?)
}

/// The group of a failed task: its tenant's id and slug are masked first.
fn key(t: &Failed) -> (String, String) {
    let (_, tenant_id, slug, version, error) = t;
    let error = error
        .as_deref()
        .unwrap_or("")
        .replace(tenant_id.as_str(), "<tenant>")
        .replace(slug.as_str(), "<tenant>");
    (
        version.clone().unwrap_or_else(|| "-".to_string()),
        normalise(&error),
    )
}

/// The failed tasks of a rollout grouped by (migration version, normalised
/// message), biggest group first.
pub fn failure_groups(db: &ControlDb, rollout_id: &str) -> Result<Vec<FailureGroup>> {
    let mut conn = db.conn()?;
    find_row(&mut conn, rollout_id)?;
    let mut groups: BTreeMap<(String, String), FailureGroup> = BTreeMap::new();
    for t in failed(&mut conn, rollout_id)? {
        let (v, m) = key(&t);
        let slug = t.2;
        let g = groups
            .entry((v.clone(), m.clone()))
            .or_insert_with(|| FailureGroup {
                error_version: v,
                message: m,
                count: 0,
                sample: Vec::new(),
            });
        g.count += 1;
        if g.sample.len() < 5 {
            g.sample.push(slug);
        }
    }
    let mut out: Vec<FailureGroup> = groups.into_values().collect();
    out.sort_by_key(|g| std::cmp::Reverse(g.count));
    Ok(out)
}

/// Queues again the failed tasks of one group (as `retry` does for all
/// failed tasks); audited as `rollout.retry_group`. Returns the rollout and
/// how many tasks were queued.
pub fn retry_group(
    db: &ControlDb,
    actor: &Actor,
    rollout_id: &str,
    error_version: &str,
    message: &str,
) -> Result<(Rollout, usize)> {
    let mut conn = db.conn()?;
    let n = write_tx(&mut conn, None, |conn| {
        let r = find_row(conn, rollout_id)?;
        if r.state == RolloutState::Cancelled.as_str() {
            return Err(Error::Conflict(format!(
                "cannot retry in rollout {rollout_id}: it is cancelled"
            )));
        }
        let ids: Vec<i64> = failed(conn, rollout_id)?
            .into_iter()
            .filter(|t| key(t) == (error_version.to_string(), message.to_string()))
            .map(|t| t.0)
            .collect();
        if ids.is_empty() {
            return Err(Error::Conflict(format!(
                "rollout {rollout_id} has no failed task in that group"
            )));
        }
        let now = Utc::now().naive_utc();
        let mut n = 0;
        for chunk in ids.chunks(500) {
            n += diesel::update(tasks::table.filter(tasks::id.eq_any(chunk)))
                .set((
                    tasks::state.eq(TaskState::Pending.as_str()),
                    tasks::attempts.eq(0),
                    tasks::next_attempt_at.eq(now),
                    tasks::finished_at.eq(None::<NaiveDateTime>),
                    tasks::backup_id.eq(None::<String>),
                    tasks::restored.eq(false),
                ))
                .execute(conn)?;
        }
        diesel::update(rollouts::table.find(rollout_id))
            .set((
                rollouts::finished_at.eq(None::<NaiveDateTime>),
                rollouts::failures_forgiven.eq(0),
            ))
            .execute(conn)?;
        set_state(conn, rollout_id, RolloutState::Running, None, now)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "rollout.retry_group",
                resource_type: "rollout",
                resource_id: Some(rollout_id),
                tenant_id: None,
                before: Some(serde_json::json!({ "state": r.state })),
                after: Some(serde_json::json!({
                    "state": "running",
                    "error_version": error_version,
                    "message": message,
                    "retried": n,
                })),
            },
        )?;
        super::advance(conn, rollout_id)?;
        Ok(n)
    })?;
    Ok((get(db, rollout_id)?, n))
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn tenant_specific_parts_are_masked() {
        let a = normalise("migration 2026-01-01-020100 on tenant 3f2a9c1e-1111-4444-8888-0123456789ab: table \"expense_categories\" already exists");
        let b = normalise("migration 2026-01-01-020100 on tenant 99aa9c1e-2222-4444-8888-0123456789ff: table \"expense_categories\"  already exists");
        assert_eq!(a, b);
        assert!(a.contains("already exists"), "{a}");
        assert_ne!(
            a,
            normalise("migration 2026-01-01-020100: permission denied")
        );
    }
}
