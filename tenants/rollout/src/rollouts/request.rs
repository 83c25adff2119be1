//! Checking a rollout request and turning it into the settings a rollout
//! runs with (defaults filled in, ranges enforced).

use tenantplane_control_db::{validate, Error, Result};
use tenantplane_migrations::SchemaTarget;

use super::{Backoff, FailureBudget, RolloutRequest, WaveSpec};
use crate::selection::Candidate;

/// Waves of one rollout: a canary, a few rings, the rest — not thousands.
pub const MAX_WAVES: usize = 100;
/// A wave's name, shown in lists and logs.
pub const MAX_WAVE_NAME: usize = 64;
/// The longest hold after a wave: a week.
pub const MAX_HOLD_S: u32 = 604_800;

pub(super) struct Settings {
    pub(super) target: SchemaTarget,
    pub(super) concurrency: i32,
    pub(super) per_server: i32,
    pub(super) max_attempts: i32,
    pub(super) backoff: Backoff,
    pub(super) timeout_s: i32,
    pub(super) budget: FailureBudget,
    pub(super) verify: bool,
    pub(super) priority: i32,
    pub(super) waves: Vec<WaveSpec>,
    /// Back each tenant up just before migrating it.
    pub(super) backup: bool,
    /// Restore a tenant whose migration failed for good from that backup.
    pub(super) restore_on_failure: bool,
    /// Migrate tenants whose schema drifted (else their task fails).
    pub(super) allow_drift: bool,
}

impl Settings {
    /// A tenant already at the target is skipped, unless the rollout verifies.
    pub(super) fn skips(&self, c: &Candidate) -> bool {
        self.skips_version(c.schema_version.as_deref())
    }

    /// The same, from the tenant's recorded schema version.
    pub(super) fn skips_version(&self, schema_version: Option<&str>) -> bool {
        !self.verify && schema_version == self.target.version()
    }
}

pub(super) fn validate(req: &RolloutRequest) -> Result<Settings> {
    let target: SchemaTarget = req
        .target
        .parse()
        .map_err(|e: tenantplane_migrations::TargetError| Error::invalid(e.to_string()))?;
    if target == SchemaTarget::None {
        return Err(Error::invalid(
            "target 'none' would drop every table; roll back to phase:0 at most",
        ));
    }
    validate::selector(&req.selector)?;
    let range = |name: &str, v: Option<u32>, default: u32, max: u32| -> Result<i32> {
        let v = v.unwrap_or(default);
        if v == 0 || v > max {
            return Err(Error::invalid(format!(
                "{name} must be 1 to {max}, not {v}"
            )));
        }
        Ok(v as i32)
    };
    let concurrency = range("concurrency", req.concurrency, 8, 1024)?;
    let per_server = range(
        "per_server_concurrency",
        req.per_server_concurrency,
        concurrency as u32,
        1024,
    )?;
    let max_attempts = range("max_attempts", req.max_attempts, 5, 100)?;
    let timeout_s = range("timeout_s", req.timeout_s, 300, 86_400)?;
    let backoff = req.backoff.clone().unwrap_or(Backoff {
        base_ms: 500,
        max_ms: 30_000,
    });
    if backoff.base_ms == 0 || backoff.max_ms < backoff.base_ms || backoff.max_ms > 3_600_000 {
        return Err(Error::invalid(
            "backoff needs 0 < base_ms <= max_ms <= 3600000",
        ));
    }
    let budget = req.failure_budget.clone().unwrap_or(FailureBudget {
        max_failed: None,
        max_failed_percent: Some(10),
    });
    if budget.max_failed_percent.is_some_and(|p| p > 100) {
        return Err(Error::invalid(
            "failure_budget.max_failed_percent must be 0 to 100",
        ));
    }
    let waves = req.waves.clone().unwrap_or_default();
    if waves.len() > MAX_WAVES {
        return Err(Error::invalid(format!(
            "{} waves: at most {MAX_WAVES}",
            waves.len()
        )));
    }
    for (i, w) in waves.iter().enumerate() {
        if w.name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_WAVE_NAME || n.chars().any(char::is_control))
        {
            return Err(Error::invalid(format!(
                "wave {i}: a name is at most {MAX_WAVE_NAME} printable characters"
            )));
        }
        if w.hold_s.is_some_and(|h| h > MAX_HOLD_S) {
            return Err(Error::invalid(format!(
                "wave {i}: hold_s is at most {MAX_HOLD_S} (a week)"
            )));
        }
        if w.hold_s.is_some() && w.manual == Some(true) {
            return Err(Error::invalid(format!(
                "wave {i}: give either hold_s or manual, not both"
            )));
        }
        match (w.count, w.percent) {
            (Some(c), None) if c > 0 => {}
            (None, Some(p)) if p > 0.0 && p <= 100.0 => {}
            _ => {
                return Err(Error::invalid(format!(
                    "wave {i}: give either count > 0 or percent in (0, 100]"
                )))
            }
        }
    }
    let priority = req.priority.unwrap_or(0);
    if !(-1000..=1000).contains(&priority) {
        return Err(Error::invalid("priority must be -1000 to 1000"));
    }
    let backup = req.backup.unwrap_or(false);
    let restore_on_failure = req.restore_on_failure.unwrap_or(false);
    if restore_on_failure && !backup {
        return Err(Error::invalid(
            "restore_on_failure needs backup: true (it restores the backup taken just before the migration)",
        ));
    }
    Ok(Settings {
        target,
        concurrency,
        per_server,
        max_attempts,
        backoff,
        timeout_s,
        budget,
        verify: req.verify.is_some_and(|v| v.is_full()),
        priority,
        waves,
        backup,
        restore_on_failure,
        allow_drift: req.allow_drift.unwrap_or(false),
    })
}
