//! Feature evaluation: plan + overrides, gated on the tenant's schema.
//!
//! For every catalogue feature a tenant gets `{feature, enabled, reason,
//! phase}`; a feature whose migration the tenant's schema lacks is never on.
//! Evaluation reads an in-memory [`Snapshot`] of the control database that a
//! background thread reloads when the change counter moves (see `changes.rs`),
//! so answering never waits on the database. Staleness bound: the refresh
//! interval (250 ms) plus one reload.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use tenantplane_migrations::catalogue::{self, FEATURES};

pub use tenantplane_api_types::flags::{FeatureState, Reason, TenantFeatures};
use tenantplane_control_db::changes;
use tenantplane_control_db::db::{ControlConnection, ControlDb};
use tenantplane_control_db::error::Result;
use tenantplane_control_db::schema::{
    api_tokens, feature_overrides, plan_features, plans, tenants,
};

#[derive(Debug, Clone)]
pub struct PlanInfo {
    pub id: String,
    pub slug: String,
    pub active: bool,
    pub features: HashSet<String>,
    pub fallback: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TenantInfo {
    pub id: String,
    pub slug: String,
    pub status: String,
    pub plan_id: Option<String>,
    pub trial_ends_at: Option<NaiveDateTime>,
    pub schema_version: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OverrideInfo {
    pub feature: String,
    pub enabled: bool,
    pub expires_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: String,
    pub tenant_id: String,
}

/// id, slug, status, plan, trial end, schema version.
type TenantRowTuple = (
    String,
    String,
    String,
    Option<String>,
    Option<NaiveDateTime>,
    Option<String>,
);

/// Everything evaluation needs, read in one go.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub counter: i64,
    pub plans: HashMap<String, PlanInfo>,
    pub plan_by_slug: HashMap<String, String>,
    pub tenants: HashMap<String, TenantInfo>,
    pub tenant_by_slug: HashMap<String, String>,
    pub overrides: HashMap<String, Vec<OverrideInfo>>,
    /// Tenant keys by token hash (revoked keys and deleted tenants excluded).
    pub keys: HashMap<String, KeyInfo>,
}

impl Snapshot {
    pub fn load(conn: &mut ControlConnection) -> Result<Snapshot> {
        // Read the counter first: a change that lands while we read makes the
        // next poll reload again, never the other way round.
        let counter = changes::current(conn)?;
        let mut snap = Snapshot {
            counter,
            ..Snapshot::default()
        };
        let plan_rows: Vec<(String, String, bool, Option<String>)> = plans::table
            .select((
                plans::id,
                plans::slug,
                plans::active,
                plans::fallback_plan_id,
            ))
            .load(conn)?;
        for (id, slug, active, fallback) in plan_rows {
            snap.plan_by_slug.insert(slug.clone(), id.clone());
            snap.plans.insert(
                id.clone(),
                PlanInfo {
                    id,
                    slug,
                    active,
                    features: HashSet::new(),
                    fallback,
                },
            );
        }
        let pf: Vec<(String, String)> = plan_features::table
            .select((plan_features::plan_id, plan_features::feature))
            .load(conn)?;
        for (plan, feature) in pf {
            if let Some(p) = snap.plans.get_mut(&plan) {
                p.features.insert(feature);
            }
        }
        let rows: Vec<TenantRowTuple> = tenants::table
            .filter(tenants::deleted_at.is_null())
            .select((
                tenants::id,
                tenants::slug,
                tenants::status,
                tenants::plan_id,
                tenants::trial_ends_at,
                tenants::schema_version,
            ))
            .load(conn)?;
        for (id, slug, status, plan_id, trial_ends_at, schema_version) in rows {
            snap.tenant_by_slug.insert(slug.clone(), id.clone());
            snap.tenants.insert(
                id.clone(),
                TenantInfo {
                    id,
                    slug,
                    status,
                    plan_id,
                    trial_ends_at,
                    schema_version,
                },
            );
        }
        let ovs: Vec<(String, String, bool, Option<NaiveDateTime>)> = feature_overrides::table
            .select((
                feature_overrides::tenant_id,
                feature_overrides::feature,
                feature_overrides::enabled,
                feature_overrides::expires_at,
            ))
            .load(conn)?;
        for (tenant, feature, enabled, expires_at) in ovs {
            snap.overrides
                .entry(tenant)
                .or_default()
                .push(OverrideInfo {
                    feature,
                    enabled,
                    expires_at,
                });
        }
        let keys: Vec<(String, Option<String>, String)> = api_tokens::table
            .filter(api_tokens::kind.eq("tenant"))
            .filter(api_tokens::revoked_at.is_null())
            .select((
                api_tokens::id,
                api_tokens::tenant_id,
                api_tokens::token_hash,
            ))
            .load(conn)?;
        for (id, tenant, hash) in keys {
            if let Some(tenant_id) = tenant.filter(|t| snap.tenants.contains_key(t)) {
                snap.keys.insert(hash, KeyInfo { id, tenant_id });
            }
        }
        Ok(snap)
    }

    /// A tenant by id or slug.
    pub fn tenant(&self, id_or_slug: &str) -> Option<&TenantInfo> {
        self.tenants.get(id_or_slug).or_else(|| {
            self.tenant_by_slug
                .get(id_or_slug)
                .and_then(|id| self.tenants.get(id))
        })
    }

    pub fn plan_slug(&self, plan_id: Option<&str>) -> Option<String> {
        plan_id
            .and_then(|id| self.plans.get(id))
            .map(|p| p.slug.clone())
    }

    pub fn plan_by_slug(&self, slug: &str) -> Option<&PlanInfo> {
        self.plan_by_slug
            .get(slug)
            .and_then(|id| self.plans.get(id))
    }

    /// The plan whose features apply now: the fallback once a trial expired.
    pub fn effective_plan(&self, t: &TenantInfo, now: NaiveDateTime) -> Option<&PlanInfo> {
        let plan = t.plan_id.as_deref().and_then(|id| self.plans.get(id))?;
        if t.trial_ends_at.is_some_and(|end| end <= now) {
            plan.fallback.as_deref().and_then(|f| self.plans.get(f))
        } else {
            Some(plan)
        }
    }

    pub fn evaluate(&self, t: &TenantInfo, now: NaiveDateTime) -> TenantFeatures {
        let plan = t.plan_id.as_deref().and_then(|id| self.plans.get(id));
        let effective = self.effective_plan(t, now);
        let trial_expired = t.trial_ends_at.is_some_and(|end| end <= now);
        let overrides = self.overrides.get(&t.id).map(Vec::as_slice).unwrap_or(&[]);
        let features = FEATURES
            .iter()
            .map(|f| {
                let override_ = overrides
                    .iter()
                    .find(|o| o.feature == f.name && o.expires_at.is_none_or(|e| e > now))
                    .map(|o| o.enabled);
                let has_schema = f
                    .requires
                    .is_none_or(|v| t.schema_version.as_deref().is_some_and(|s| s >= v));
                let in_plan = |p: Option<&PlanInfo>| p.is_some_and(|p| p.features.contains(f.name));
                let (enabled, reason) = if t.status == "suspended" {
                    (false, Reason::TenantSuspended)
                } else if override_ == Some(false) {
                    (false, Reason::OverrideOff)
                } else {
                    let wanted = if override_ == Some(true) {
                        Some(Reason::OverrideOn)
                    } else if in_plan(effective) {
                        Some(Reason::Plan)
                    } else {
                        None
                    };
                    match wanted {
                        Some(r) if has_schema => (true, r),
                        Some(_) => (false, Reason::PendingMigration),
                        None if trial_expired && in_plan(plan) => (false, Reason::TrialExpired),
                        None => (false, Reason::NotInPlan),
                    }
                };
                FeatureState {
                    feature: f.name,
                    enabled,
                    reason,
                    phase: f.phase,
                }
            })
            .collect();
        TenantFeatures {
            tenant: t.id.clone(),
            slug: t.slug.clone(),
            plan: plan.map(|p| p.slug.clone()),
            effective_plan: effective.map(|p| p.slug.clone()),
            trial_ends_at: t.trial_ends_at,
            schema_version: t.schema_version.clone(),
            features,
        }
    }
}

/// The newest version a set of features needs.
pub fn required_version<'a>(features: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    features
        .into_iter()
        .filter_map(|f| catalogue::feature(f).and_then(|f| f.requires))
        .max()
}

/// The shared, refreshed snapshot. Cheap to clone.
#[derive(Clone)]
pub struct FlagCache {
    db: ControlDb,
    current: Arc<RwLock<Arc<Snapshot>>>,
}

pub const REFRESH_EVERY: Duration = Duration::from_millis(250);

impl FlagCache {
    pub fn load(db: &ControlDb) -> Result<FlagCache> {
        let snap = Snapshot::load(&mut *db.conn()?)?;
        Ok(FlagCache {
            db: db.clone(),
            current: Arc::new(RwLock::new(Arc::new(snap))),
        })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads now (after this process changed something, so its own next
    /// answer already shows the change).
    pub fn reload(&self) -> Result<()> {
        let snap = Arc::new(Snapshot::load(&mut *self.db.conn()?)?);
        match self.current.write() {
            Ok(mut g) => *g = snap,
            Err(poisoned) => *poisoned.into_inner() = snap,
        }
        Ok(())
    }

    /// Reloads when the change counter moved. Returns whether it reloaded.
    pub fn refresh(&self) -> Result<bool> {
        let counter = changes::current(&mut *self.db.conn()?)?;
        if counter == self.snapshot().counter {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Polls the change counter on a thread until `stop` is set.
    pub fn start_refresher(
        &self,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let cache = self.clone();
        std::thread::Builder::new().name("flag-refresh".into()).spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Err(e) = cache.refresh() {
                    tracing::warn!(error = %e, "refreshing the feature snapshot failed; serving the last one");
                }
                std::thread::sleep(REFRESH_EVERY);
            }
        })
    }

    pub fn evaluate(&self, id_or_slug: &str) -> Option<TenantFeatures> {
        let snap = self.snapshot();
        let t = snap.tenant(id_or_slug)?;
        Some(snap.evaluate(t, Utc::now().naive_utc()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(slug: &str, features: &[&str], fallback: Option<&str>) -> PlanInfo {
        PlanInfo {
            id: slug.into(),
            slug: slug.into(),
            active: true,
            features: features.iter().map(|f| f.to_string()).collect(),
            fallback: fallback.map(str::to_string),
        }
    }

    fn snap() -> Snapshot {
        let mut s = Snapshot::default();
        for p in [
            plan("free", &["invoice_numbering"], None),
            plan(
                "pro",
                &["invoice_numbering", "sales_heatmap", "premium_ui"],
                Some("free"),
            ),
        ] {
            s.plan_by_slug.insert(p.slug.clone(), p.id.clone());
            s.plans.insert(p.id.clone(), p);
        }
        s
    }

    fn tenant(plan: &str, version: Option<&str>) -> TenantInfo {
        TenantInfo {
            id: "t1".into(),
            slug: "t1".into(),
            status: "active".into(),
            plan_id: Some(plan.into()),
            trial_ends_at: None,
            schema_version: version.map(str::to_string),
        }
    }

    fn state(f: &TenantFeatures, name: &str) -> (bool, Reason) {
        let s = f
            .features
            .iter()
            .find(|s| s.feature == name)
            .expect("feature");
        (s.enabled, s.reason)
    }

    #[test]
    fn plan_schema_overrides_trials_and_suspension() {
        let now = Utc::now().naive_utc();
        let head = catalogue::head();
        let p0 = catalogue::phase_version(0);
        let s = snap();
        let at_head = s.evaluate(&tenant("pro", head), now);
        assert_eq!(state(&at_head, "sales_heatmap"), (true, Reason::Plan));
        assert_eq!(
            state(&at_head, "premium_ui"),
            (true, Reason::Plan),
            "no schema needed"
        );
        assert_eq!(state(&at_head, "webhooks"), (false, Reason::NotInPlan));

        let behind = s.evaluate(&tenant("pro", p0), now);
        assert_eq!(
            state(&behind, "sales_heatmap"),
            (false, Reason::PendingMigration)
        );

        let mut s2 = snap();
        s2.overrides.insert(
            "t1".into(),
            vec![
                OverrideInfo {
                    feature: "webhooks".into(),
                    enabled: true,
                    expires_at: None,
                },
                OverrideInfo {
                    feature: "sales_heatmap".into(),
                    enabled: false,
                    expires_at: None,
                },
                OverrideInfo {
                    feature: "invoice_numbering".into(),
                    enabled: false,
                    expires_at: Some(now - chrono::Duration::seconds(1)),
                },
                OverrideInfo {
                    feature: "ai_assistant".into(),
                    enabled: true,
                    expires_at: None,
                },
            ],
        );
        let o = s2.evaluate(&tenant("pro", head), now);
        assert_eq!(state(&o, "webhooks"), (true, Reason::OverrideOn));
        assert_eq!(state(&o, "sales_heatmap"), (false, Reason::OverrideOff));
        assert_eq!(
            state(&o, "invoice_numbering"),
            (true, Reason::Plan),
            "an expired override no longer applies"
        );
        let o_behind = s2.evaluate(&tenant("pro", p0), now);
        assert_eq!(
            state(&o_behind, "ai_assistant"),
            (false, Reason::PendingMigration),
            "never on without its migration"
        );

        let mut trial = tenant("pro", head);
        trial.trial_ends_at = Some(now - chrono::Duration::minutes(1));
        let t = s.evaluate(&trial, now);
        assert_eq!(t.effective_plan.as_deref(), Some("free"));
        assert_eq!(state(&t, "sales_heatmap"), (false, Reason::TrialExpired));
        assert_eq!(state(&t, "invoice_numbering"), (true, Reason::Plan));

        let mut suspended = tenant("pro", head);
        suspended.status = "suspended".into();
        assert!(s
            .evaluate(&suspended, now)
            .features
            .iter()
            .all(|f| !f.enabled && f.reason == Reason::TenantSuspended));
    }
}
