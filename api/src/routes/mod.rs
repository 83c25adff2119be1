pub mod audit;
pub mod backups;
pub mod exports;
pub mod features;
pub mod health;
pub mod metrics;
pub mod moves;
pub mod outbox;
pub mod plans;
pub mod rollouts;
pub mod schedules;
pub mod servers;
pub mod tenant;
pub mod tenants;
pub mod webhooks;

/// A page size from the query: `default` when absent, else 1 to `max`
/// (422 outside).
pub(crate) fn limit(
    given: Option<i64>,
    default: i64,
    max: i64,
) -> Result<i64, crate::error::ApiError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(tenantplane_control_db::Error::invalid(format!(
            "limit must be 1 to {max}, not {n}"
        ))
        .into()),
    }
}
