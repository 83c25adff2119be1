//! Moving one tenant schema to a target version, one migration at a time.
//!
//! Each step is one diesel migration run in its own transaction together with
//! its row in `__diesel_schema_migrations`, so a schema is always exactly at
//! one catalogue version, never between two.

use diesel::backend::Backend;
use diesel::migration::{Migration, MigrationSource};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use crate::catalogue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepDirection {
    Up,
    Down,
}

/// One migration to run (up) or revert (down).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub version: String,
    pub name: String,
    pub direction: StepDirection,
}

/// What it takes to move a schema from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationPlan {
    pub from: Option<String>,
    pub to: Option<String>,
    pub steps: Vec<Step>,
}

/// diesel_migrations reports failures boxed; the box usually holds a
/// `diesel::result::Error`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The schema holds versions the catalogue does not explain. Never guess.
    #[error("schema drift: {0}")]
    Drift(String),
    #[error("unknown target version {0}")]
    UnknownTarget(String),
    #[error("reading applied migrations failed")]
    Read(#[source] BoxError),
    /// The driver's error is the source: callers classify it (transient or
    /// not) by its kind.
    #[error("migration {version} ({direction:?}) failed")]
    Step {
        version: String,
        direction: StepDirection,
        #[source]
        source: BoxError,
    },
}

/// Plans the steps from the applied versions to `target` (`None` = empty
/// schema). Applied versions must be exactly a prefix of the catalogue.
pub fn plan(applied: &[String], target: Option<&str>) -> Result<MigrationPlan, MigrateError> {
    let all = catalogue::versions();
    let mut applied: Vec<&str> = applied.iter().map(String::as_str).collect();
    applied.sort_unstable();
    for (i, v) in applied.iter().enumerate() {
        match all.get(i) {
            Some(m) if m.version == *v => {}
            _ if all.iter().any(|m| m.version == *v) => {
                let missing = all.get(i).map(|m| m.version.as_str()).unwrap_or("?");
                return Err(MigrateError::Drift(format!(
                    "version {v} is applied but {missing} before it is not (a gap)"
                )));
            }
            _ => {
                return Err(MigrateError::Drift(format!(
                    "version {v} is applied but unknown to this build's catalogue"
                )))
            }
        }
    }
    let current = applied.len();
    let wanted = match target {
        None => 0,
        Some(t) => {
            all.iter()
                .position(|m| m.version == t)
                .ok_or_else(|| MigrateError::UnknownTarget(t.to_string()))?
                + 1
        }
    };
    let step = |m: &catalogue::TenantMigration, direction| Step {
        version: m.version.clone(),
        name: m.name.clone(),
        direction,
    };
    let steps = if wanted >= current {
        all[current..wanted]
            .iter()
            .map(|m| step(m, StepDirection::Up))
            .collect()
    } else {
        all[wanted..current]
            .iter()
            .rev()
            .map(|m| step(m, StepDirection::Down))
            .collect()
    };
    Ok(MigrationPlan {
        from: applied.last().map(|v| v.to_string()),
        to: target.map(str::to_string),
        steps,
    })
}

/// The versions recorded in the schema's `__diesel_schema_migrations`.
pub fn applied_versions<DB, C>(conn: &mut C) -> Result<Vec<String>, MigrateError>
where
    DB: Backend,
    C: MigrationHarness<DB>,
{
    conn.applied_migrations()
        .map(|vs| vs.iter().map(|v| v.to_string()).collect())
        .map_err(MigrateError::Read)
}

/// Moves the schema behind `conn` to `target`, calling `after_step` after each
/// committed step. On error the schema stays at the last committed step.
pub fn migrate<DB, C>(
    conn: &mut C,
    source: &EmbeddedMigrations,
    target: Option<&str>,
    mut after_step: impl FnMut(&Step),
) -> Result<MigrationPlan, MigrateError>
where
    DB: Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    let applied = applied_versions(conn)?;
    let plan = plan(&applied, target)?;
    if plan.steps.is_empty() {
        return Ok(plan);
    }
    let migrations = source.migrations().map_err(MigrateError::Read)?;
    for step in &plan.steps {
        let migration: &dyn Migration<DB> = migrations
            .iter()
            .find(|m| m.name().version().to_string() == step.version)
            .map(|m| m.as_ref())
            .ok_or_else(|| {
                MigrateError::Drift(format!(
                    "version {} is missing from this backend's migrations",
                    step.version
                ))
            })?;
        let result = match step.direction {
            StepDirection::Up => conn.run_migration(migration),
            StepDirection::Down => conn.revert_migration(migration),
        };
        result.map_err(|e| MigrateError::Step {
            version: step.version.clone(),
            direction: step.direction,
            source: e,
        })?;
        after_step(step);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        catalogue::versions()
            .iter()
            .map(|m| m.version.clone())
            .collect()
    }

    #[test]
    fn plans_up_down_and_nothing() {
        let all = all();
        let head = all.last().cloned();
        let up = plan(&[], head.as_deref()).expect("plan");
        assert_eq!(up.steps.len(), all.len());
        assert!(up.steps.iter().all(|s| s.direction == StepDirection::Up));

        let noop = plan(&all, head.as_deref()).expect("plan");
        assert!(noop.steps.is_empty());

        let down = plan(&all, Some(&all[0])).expect("plan");
        assert_eq!(down.steps.len(), all.len() - 1);
        assert_eq!(down.steps[0].version, *all.last().expect("non-empty"));
        assert!(down
            .steps
            .iter()
            .all(|s| s.direction == StepDirection::Down));

        let to_empty = plan(&all[..2], None).expect("plan");
        assert_eq!(to_empty.steps.len(), 2);
    }

    #[test]
    fn refuses_drift_and_unknown_targets() {
        let all = all();
        let gap = vec![all[0].clone(), all[2].clone()];
        assert!(matches!(plan(&gap, None), Err(MigrateError::Drift(m)) if m.contains("gap")));
        let unknown = vec![all[0].clone(), "20991231000000".to_string()];
        assert!(
            matches!(plan(&unknown, None), Err(MigrateError::Drift(m)) if m.contains("unknown"))
        );
        assert!(matches!(
            plan(&[], Some("1")),
            Err(MigrateError::UnknownTarget(_))
        ));
    }
}
