//! Drift: how a tenant's actual schema differs from the reference schema of
//! the version the control database records for it.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::rollouts::Selector;

/// How an object differs from the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// The tenant has it, the reference does not.
    Added,
    /// The reference has it, the tenant does not.
    Missing,
    /// Both have it; one aspect differs.
    Changed,
}

/// One difference between a tenant's schema and its reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Difference {
    /// The object: `table expenses`, `column sales.total`, `index
    /// sales_by_day_idx`, `foreign key expenses(category_id)`, `constraint
    /// sales.sales_currency_check`, `trigger …`, `view …`, `function …`,
    /// `type …`, `sequence …`, or `migrations` for the applied versions.
    pub object: String,
    pub change: Change,
    /// For `changed`: which aspect (`type`, `nullability`, `default`,
    /// `key`, `unique`, `columns`, `definition`, `references`, `version`…).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub aspect: Option<String>,
    /// For `changed`: the reference's value (`null` = none).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expected: Option<String>,
    /// For `changed`: the tenant's value (`null` = none).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub actual: Option<String>,
    /// The difference as one line, e.g. `index sales_by_day_idx: added`,
    /// `column expenses.note: missing`, `column sales.total default: '0' → '1'`.
    pub text: String,
}

impl Difference {
    pub fn added(object: impl Into<String>) -> Self {
        Self::whole(object.into(), Change::Added)
    }

    pub fn missing(object: impl Into<String>) -> Self {
        Self::whole(object.into(), Change::Missing)
    }

    fn whole(object: String, change: Change) -> Self {
        let word = if change == Change::Added {
            "added"
        } else {
            "missing"
        };
        Difference {
            text: format!("{object}: {word}"),
            object,
            change,
            aspect: None,
            expected: None,
            actual: None,
        }
    }

    pub fn changed(
        object: impl Into<String>,
        aspect: impl Into<String>,
        expected: Option<String>,
        actual: Option<String>,
    ) -> Self {
        let (object, aspect) = (object.into(), aspect.into());
        let show = |v: &Option<String>| match v {
            Some(v) => format!("'{v}'"),
            None => "none".to_string(),
        };
        Difference {
            text: format!("{object} {aspect}: {} → {}", show(&expected), show(&actual)),
            object,
            change: Change::Changed,
            aspect: Some(aspect),
            expected,
            actual,
        }
    }
}

/// The result of a drift check of one tenant.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftReport {
    pub tenant_id: String,
    pub slug: String,
    /// `sqlite` or `postgres`
    pub backend: String,
    /// The version the control database records: the reference compared
    /// against (`null` = empty schema).
    pub schema_version: Option<String>,
    /// Whether any difference was found.
    pub drifted: bool,
    pub differences: Vec<Difference>,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub checked_at: NaiveDateTime,
}

/// Body of `POST /v1/drift`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftRequest {
    /// Which tenants to check (as for rollouts).
    pub selector: Selector,
}

/// Answer to `POST /v1/drift`: the job that fans the checks out.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftQueued {
    /// The `drift` job (see `GET /v1/jobs`); it queues one `drift.tenant`
    /// job per selected tenant, whose results land in `GET /v1/drift`.
    pub job_id: i64,
    /// How many tenants the selector picks now.
    pub tenants: usize,
}

/// A tenant's last drift check, as the tenant JSON shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftStatus {
    pub drifted: bool,
    /// How many differences the last check found.
    pub differences: i32,
    /// The version that check compared against.
    pub schema_version: Option<String>,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub checked_at: NaiveDateTime,
}

/// `GET /v1/drift`: the last check of each tenant.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftPage {
    pub items: Vec<DriftReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_read_as_one_line() {
        assert_eq!(
            Difference::added("index sales_by_day_idx").text,
            "index sales_by_day_idx: added"
        );
        assert_eq!(
            Difference::missing("column expenses.note").text,
            "column expenses.note: missing"
        );
        assert_eq!(
            Difference::changed(
                "column sales.total",
                "default",
                Some("0".into()),
                Some("1".into())
            )
            .text,
            "column sales.total default: '0' → '1'"
        );
        assert_eq!(
            Difference::changed("column sales.total", "default", Some("0".into()), None).text,
            "column sales.total default: '0' → none"
        );
    }
}
