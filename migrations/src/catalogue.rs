//! The phase catalogue: the seed's seven phases, the tenant migrations each
//! one brings, and the features each one turns on, with the migration version
//! a feature needs before it may be enabled for a tenant.
//!
//! Migration versions encode their phase: folder `2026-11-25-PPNN00_name`
//! gives version `20261125PPNN00`, where `PP` is the phase (00 = baseline).

use std::sync::OnceLock;

use diesel::migration::MigrationSource;
use diesel::sqlite::Sqlite;

use crate::TENANT_SQLITE;

/// The highest phase of the seed plan.
pub const MAX_PHASE: u8 = 7;

/// One tenant migration, as the catalogue knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantMigration {
    /// diesel's version: the folder name before the first `_`, dashes removed.
    pub version: String,
    /// The folder name after the version (e.g. `invoice_numbers`).
    pub name: String,
    /// The seed phase this migration belongs to.
    pub phase: u8,
}

/// A seed phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    pub number: u8,
    pub title: &'static str,
}

/// A feature that a phase turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// snake_case, stable: used in plans, overrides and the API.
    pub name: &'static str,
    pub phase: u8,
    /// The migration version the tenant schema must have reached; `None` for
    /// features that need no schema (phases 5 and 6).
    pub requires: Option<&'static str>,
    pub description: &'static str,
}

pub const PHASES: &[Phase] = &[
    Phase {
        number: 0,
        title: "Baseline",
    },
    Phase {
        number: 1,
        title: "Professional Trust Layer",
    },
    Phase {
        number: 2,
        title: "Money & Insight Layer",
    },
    Phase {
        number: 3,
        title: "Automation & Assistant Layer",
    },
    Phase {
        number: 4,
        title: "Smart Connect Layer",
    },
    Phase {
        number: 5,
        title: "Premium UI/UX & Business Model",
    },
    Phase {
        number: 6,
        title: "Social Proof & Authority",
    },
    Phase {
        number: 7,
        title: "Audit & Security Enhancements",
    },
];

pub const FEATURES: &[Feature] = &[
    // phase 1
    Feature {
        name: "invoice_numbering",
        phase: 1,
        requires: Some("20261125010100"),
        description: "Per-shop invoice number sequence on sales",
    },
    Feature {
        name: "branding",
        phase: 1,
        requires: Some("20261125010200"),
        description: "Logo, colours, invoice prefix, signature and watermark",
    },
    Feature {
        name: "audit_diff",
        phase: 1,
        requires: Some("20261125010300"),
        description: "Before/after diff view of the audit log",
    },
    Feature {
        name: "day_end_lock",
        phase: 1,
        requires: Some("20261125010400"),
        description: "End-of-day lock of the books",
    },
    // phase 2
    Feature {
        name: "expense_categories",
        phase: 2,
        requires: Some("20261125020100"),
        description: "Expense categories with rules",
    },
    Feature {
        name: "sales_heatmap",
        phase: 2,
        requires: Some("20261125020200"),
        description: "Sales by weekday and hour",
    },
    Feature {
        name: "customer_metrics",
        phase: 2,
        requires: Some("20261125020300"),
        description: "Lifetime value, visits, last purchase per customer",
    },
    Feature {
        name: "recommendations",
        phase: 2,
        requires: Some("20261125020400"),
        description: "Cached heuristic recommendations",
    },
    // phase 3
    Feature {
        name: "ai_assistant",
        phase: 3,
        requires: Some("20261125030100"),
        description: "Assistant sessions and messages",
    },
    Feature {
        name: "credit_reminders",
        phase: 3,
        requires: Some("20261125030300"),
        description: "Customer credit reminders with a send log",
    },
    // phase 4
    Feature {
        name: "staff_roles",
        phase: 4,
        requires: Some("20261125040200"),
        description: "Role enum and last login for staff",
    },
    Feature {
        name: "user_invites",
        phase: 4,
        requires: Some("20261125040300"),
        description: "Invitations for new staff",
    },
    Feature {
        name: "webhooks",
        phase: 4,
        requires: Some("20261125040400"),
        description: "Outgoing webhooks with delivery retries",
    },
    // phase 5 and 6: no schema
    Feature {
        name: "premium_ui",
        phase: 5,
        requires: None,
        description: "Premium themes and layouts",
    },
    Feature {
        name: "social_proof",
        phase: 6,
        requires: None,
        description: "Testimonials and trust badges",
    },
    // phase 7
    Feature {
        name: "audit_exports",
        phase: 7,
        requires: Some("20261125070100"),
        description: "Expiring audit exports",
    },
    Feature {
        name: "sale_locks",
        phase: 7,
        requires: Some("20261125070200"),
        description: "Locks on reported sales",
    },
];

/// Every tenant migration in order, read from the embedded SQLite folder (a
/// test keeps the PostgreSQL folder's version list identical).
pub fn versions() -> &'static [TenantMigration] {
    static VERSIONS: OnceLock<Vec<TenantMigration>> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        let migrations = MigrationSource::<Sqlite>::migrations(&TENANT_SQLITE).unwrap_or_default();
        let mut list: Vec<TenantMigration> = migrations
            .iter()
            .map(|m| {
                let version = m.name().version().to_string();
                let full = m.name().to_string();
                let name = full
                    .split_once('_')
                    .map(|(_, n)| n.to_string())
                    .unwrap_or_default();
                let phase = phase_digits(&version).unwrap_or(u8::MAX);
                TenantMigration {
                    version,
                    name,
                    phase,
                }
            })
            .collect();
        list.sort_by(|a, b| a.version.cmp(&b.version));
        list
    })
}

/// The phase encoded in a version string (`20261125PPNN00`).
fn phase_digits(version: &str) -> Option<u8> {
    version.get(8..10)?.parse().ok()
}

/// The newest tenant migration version.
pub fn head() -> Option<&'static str> {
    versions().last().map(|m| m.version.as_str())
}

/// The version a schema has after phase `n` is complete: the last migration
/// of phase `n` or of the nearest earlier phase that has migrations.
pub fn phase_version(n: u8) -> Option<&'static str> {
    versions()
        .iter()
        .rev()
        .find(|m| m.phase <= n)
        .map(|m| m.version.as_str())
}

/// The highest phase fully reached by a schema at `version` (`None` for an
/// empty schema or one that has not finished the baseline).
pub fn phase_of(version: Option<&str>) -> Option<u8> {
    let version = version?;
    (0..=MAX_PHASE)
        .rev()
        .find(|&n| phase_version(n).is_some_and(|v| v <= version))
}

/// The version a schema is at after reverting `version` (the one before it).
pub fn previous(version: &str) -> Option<&'static str> {
    let all = versions();
    let i = all.iter().position(|m| m.version == version)?;
    i.checked_sub(1).map(|j| all[j].version.as_str())
}

/// Looks a feature up by name.
pub fn feature(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// The tables each tenant migration changes (its up and its down, on either
/// backend): created, altered, dropped, rebuilt, indexed, given a trigger or
/// written by a backfill. A table it only references (a foreign key, a
/// view's `FROM`) is not changed by it. Read by the probes to pick what a
/// run must prove (`probes::select`); a test derives the same lists from
/// the SQL files, so a new migration without its line here fails it.
const CHANGES: &[(&str, &[&str])] = &[
    ("baseline_users", &["tenant_schema_bootstrap", "users"]),
    ("baseline_shop_profile", &["shop_profile"]),
    ("baseline_settings", &["settings"]),
    ("baseline_sales", &["sales"]),
    ("baseline_expenses", &["expenses"]),
    ("baseline_credits", &["credits"]),
    ("baseline_audit_log", &["audit_log"]),
    ("invoice_numbers", &["invoice_counters", "sales"]),
    ("shop_branding", &["shop_profile"]),
    ("audit_log_diff", &["audit_log"]),
    ("settings_day_end_lock", &["settings"]),
    ("expense_categories", &["expense_categories", "expenses"]),
    ("sales_heatmap", &["sales_heatmap"]),
    ("customer_metrics", &["customer_metrics", "sales"]),
    ("recommendations", &["recommendations"]),
    (
        "assistant_sessions",
        &["assistant_messages", "assistant_sessions"],
    ),
    ("credit_reminder_fields", &["credits"]),
    ("reminder_log", &["reminder_log"]),
    ("user_role_enum", &["users"]),
    ("user_last_login", &["users"]),
    ("user_invites", &["user_invites"]),
    ("webhooks", &["api_webhooks", "webhook_events"]),
    ("exports", &["exports"]),
    ("sale_locks", &["sales"]),
];

/// The tables the migration `version` changes (see `CHANGES`); every
/// tenant table when the version is unknown, so a caller that proves
/// "what changed" never proves too little.
pub fn tables_changed_by(version: &str) -> &'static [&'static str] {
    versions()
        .iter()
        .find(|m| m.version == version)
        .and_then(|m| CHANGES.iter().find(|(name, _)| *name == m.name))
        .map_or(all_tables(), |(_, tables)| tables)
}

/// Every table some tenant migration changes (sorted, unique).
pub fn all_tables() -> &'static [&'static str] {
    static ALL: OnceLock<Vec<&'static str>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<&'static str> = CHANGES
            .iter()
            .flat_map(|(_, t)| t.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_the_naming_convention_and_are_ordered() {
        let all = versions();
        assert!(!all.is_empty(), "no tenant migrations embedded");
        for m in all {
            assert_eq!(m.version.len(), 14, "{} is not YYYYMMDDPPNNxx", m.version);
            assert!(m.phase <= MAX_PHASE, "{} has phase {}", m.version, m.phase);
            assert!(!m.name.is_empty());
        }
        assert!(all.windows(2).all(|w| w[0].phase <= w[1].phase));
        assert_eq!(all[0].phase, 0, "the baseline comes first");
    }

    #[test]
    fn every_feature_needs_a_migration_of_its_own_phase() {
        for f in FEATURES {
            match f.requires {
                Some(v) => {
                    let m = versions()
                        .iter()
                        .find(|m| m.version == v)
                        .unwrap_or_else(|| panic!("{} needs unknown version {v}", f.name));
                    assert_eq!(
                        m.phase, f.phase,
                        "{} needs a migration of another phase",
                        f.name
                    );
                }
                None => assert!(f.phase == 5 || f.phase == 6, "{} has no migration", f.name),
            }
        }
        let mut names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FEATURES.len(), "feature names are unique");
    }

    #[test]
    fn phases_map_to_versions_and_back() {
        assert_eq!(phase_of(None), None);
        for n in 0..=MAX_PHASE {
            let v = phase_version(n).expect("every phase resolves");
            let reached = phase_of(Some(v)).expect("a phase version reaches a phase");
            assert!(
                reached >= n,
                "phase:{n} resolves to {v} which reaches only {reached}"
            );
        }
        assert_eq!(phase_of(head()), Some(MAX_PHASE));
        // Phases 5 and 6 bring no migration: they resolve to phase 4's last.
        assert_eq!(phase_version(5), phase_version(4));
        assert_eq!(phase_version(6), phase_version(4));
    }

    /// `CHANGES` says what the SQL files do: for each migration, the
    /// tables named after `TABLE`, `ON` (indexes, triggers), `INTO`,
    /// `UPDATE`, `VIEW`, `DELETE FROM` and `RENAME TO` in its up and down
    /// files of both backends, among the tables the migrations create.
    #[test]
    fn the_tables_each_migration_changes_match_its_sql() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tenant");
        let read = |backend: &str, m: &TenantMigration, file: &str| {
            let dir = format!("{}_{}", dashed(&m.version), m.name);
            std::fs::read_to_string(root.join(backend).join(dir).join(file))
                .unwrap_or_else(|e| panic!("{backend} {}: {file}: {e}", m.name))
        };
        let words = |sql: &str| -> Vec<String> {
            let sql: String = sql
                .lines()
                .map(|l| l.split("--").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty() && !w.starts_with(|c: char| c.is_ascii_digit()))
                .map(str::to_ascii_lowercase)
                .collect()
        };
        let mut sql = Vec::new();
        let mut created = std::collections::BTreeSet::new();
        for m in versions() {
            let mut w = Vec::new();
            for backend in ["sqlite", "postgres"] {
                for file in ["up.sql", "down.sql"] {
                    w.extend(words(&read(backend, m, file)));
                }
            }
            for (i, word) in w.iter().enumerate() {
                if word != "create" {
                    continue;
                }
                let mut rest = w[i + 1..].iter().map(String::as_str);
                let kind = match rest.next() {
                    Some("materialized") => rest.next(),
                    other => other,
                };
                if matches!(kind, Some("table" | "view")) {
                    if let Some(name) = rest.find(|x| !matches!(*x, "if" | "not" | "exists")) {
                        created.insert(name.to_string());
                    }
                }
            }
            sql.push((m, w));
        }
        for (m, w) in sql {
            let mut changed = std::collections::BTreeSet::new();
            for (i, word) in w.iter().enumerate() {
                let before = i.checked_sub(1).map(|j| w[j].as_str());
                let leads = matches!(word.as_str(), "table" | "on" | "into" | "update" | "view")
                    || (word == "from" && before == Some("delete"))
                    || (word == "to" && before == Some("rename"));
                if !leads {
                    continue;
                }
                let next = w[i + 1..]
                    .iter()
                    .find(|x| !matches!(x.as_str(), "if" | "not" | "exists" | "only"));
                if let Some(t) = next.filter(|t| created.contains(*t)) {
                    changed.insert(t.clone());
                }
            }
            let declared: std::collections::BTreeSet<String> = tables_changed_by(&m.version)
                .iter()
                .map(|t| t.to_string())
                .collect();
            assert_eq!(declared, changed, "CHANGES for {}", m.name);
        }
        let all: std::collections::BTreeSet<String> =
            all_tables().iter().map(|t| t.to_string()).collect();
        assert_eq!(all, created, "every created table and nothing else");
    }

    /// `20261125000100` → `2026-11-25-000100`, the folder's spelling.
    fn dashed(v: &str) -> String {
        format!("{}-{}-{}-{}", &v[0..4], &v[4..6], &v[6..8], &v[8..])
    }
}
