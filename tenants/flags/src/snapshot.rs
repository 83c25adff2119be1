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

// The row reads behind a snapshot. Each takes an optional filter: `None`
// reads the whole table (`Snapshot::load`), `Some` the rows of one key,
// tenant or plan (`Snapshot::load_for_key`). Both arms are static queries,
// so diesel caches their prepared statements either way.

/// Plans (all, or the one with this id), without their features.
fn read_plans(conn: &mut ControlConnection, id: Option<&str>) -> Result<Vec<PlanInfo>> {
    let q = plans::table.select((
        plans::id,
        plans::slug,
        plans::active,
        plans::fallback_plan_id,
    ));
    let rows: Vec<(String, String, bool, Option<String>)> = match id {
        Some(id) => q.filter(plans::id.eq(id)).load(conn)?,
        None => q.load(conn)?,
    };
    Ok(rows
        .into_iter()
        .map(|(id, slug, active, fallback)| PlanInfo {
            id,
            slug,
            active,
            features: HashSet::new(),
            fallback,
        })
        .collect())
}

/// (plan id, feature) of every plan, or of one.
fn read_plan_features(
    conn: &mut ControlConnection,
    plan_id: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let q = plan_features::table.select((plan_features::plan_id, plan_features::feature));
    Ok(match plan_id {
        Some(id) => q.filter(plan_features::plan_id.eq(id)).load(conn)?,
        None => q.load(conn)?,
    })
}

/// Live (not deleted) tenants: all, or the one with this id.
fn read_tenants(conn: &mut ControlConnection, id: Option<&str>) -> Result<Vec<TenantInfo>> {
    let q = tenants::table
        .filter(tenants::deleted_at.is_null())
        .select((
            tenants::id,
            tenants::slug,
            tenants::status,
            tenants::plan_id,
            tenants::trial_ends_at,
            tenants::schema_version,
        ));
    let rows: Vec<TenantRowTuple> = match id {
        Some(id) => q.filter(tenants::id.eq(id)).load(conn)?,
        None => q.load(conn)?,
    };
    Ok(rows
        .into_iter()
        .map(
            |(id, slug, status, plan_id, trial_ends_at, schema_version)| TenantInfo {
                id,
                slug,
                status,
                plan_id,
                trial_ends_at,
                schema_version,
            },
        )
        .collect())
}

/// (tenant id, override) of every tenant, or of one.
fn read_overrides(
    conn: &mut ControlConnection,
    tenant_id: Option<&str>,
) -> Result<Vec<(String, OverrideInfo)>> {
    let q = feature_overrides::table.select((
        feature_overrides::tenant_id,
        feature_overrides::feature,
        feature_overrides::enabled,
        feature_overrides::expires_at,
    ));
    let rows: Vec<(String, String, bool, Option<NaiveDateTime>)> = match tenant_id {
        Some(id) => q.filter(feature_overrides::tenant_id.eq(id)).load(conn)?,
        None => q.load(conn)?,
    };
    Ok(rows
        .into_iter()
        .map(|(tenant, feature, enabled, expires_at)| {
            (
                tenant,
                OverrideInfo {
                    feature,
                    enabled,
                    expires_at,
                },
            )
        })
        .collect())
}

/// (token hash, key) of the tenant keys that are not revoked: all, or the
/// one with this hash. Whether the tenant is live is the caller's check.
fn read_keys(conn: &mut ControlConnection, hash: Option<&str>) -> Result<Vec<(String, KeyInfo)>> {
    let q = api_tokens::table
        .filter(api_tokens::kind.eq("tenant"))
        .filter(api_tokens::revoked_at.is_null())
        .select((
            api_tokens::id,
            api_tokens::tenant_id,
            api_tokens::token_hash,
        ));
    let rows: Vec<(String, Option<String>, String)> = match hash {
        Some(h) => q.filter(api_tokens::token_hash.eq(h)).load(conn)?,
        None => q.load(conn)?,
    };
    Ok(rows
        .into_iter()
        .filter_map(|(id, tenant, hash)| tenant.map(|tenant_id| (hash, KeyInfo { id, tenant_id })))
        .collect())
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
        for plan in read_plans(conn, None)? {
            snap.add_plan(plan);
        }
        snap.add_plan_features(read_plan_features(conn, None)?);
        for tenant in read_tenants(conn, None)? {
            snap.add_tenant(tenant);
        }
        snap.add_overrides(read_overrides(conn, None)?);
        for (hash, key) in read_keys(conn, None)? {
            if snap.tenants.contains_key(&key.tenant_id) {
                snap.keys.insert(hash, key);
            }
        }
        Ok(snap)
    }

    /// What evaluating one tenant key needs, read from the database now with
    /// the same row reads as [`Snapshot::load`], narrowed: the key, its
    /// tenant, the tenant's plan and that plan's fallback with their
    /// features, and the tenant's overrides. `None` when the key is unknown
    /// or revoked or its tenant deleted, as in the full snapshot. `counter`
    /// stays 0: this snapshot is never refreshed.
    pub fn load_for_key(
        conn: &mut ControlConnection,
        key_hash: &str,
    ) -> Result<Option<(Snapshot, TenantInfo)>> {
        let Some((hash, key)) = read_keys(conn, Some(key_hash))?.into_iter().next() else {
            return Ok(None);
        };
        let Some(tenant) = read_tenants(conn, Some(&key.tenant_id))?.into_iter().next() else {
            return Ok(None);
        };
        let mut snap = Snapshot::default();
        // The plan, then its fallback (what applies once a trial ended).
        let mut next = tenant.plan_id.clone();
        for _ in 0..2 {
            let Some(plan_id) = next.take() else { break };
            let Some(plan) = read_plans(conn, Some(&plan_id))?.into_iter().next() else {
                break;
            };
            let fallback = plan.fallback.clone();
            snap.add_plan(plan);
            snap.add_plan_features(read_plan_features(conn, Some(&plan_id))?);
            next = fallback.filter(|f| !snap.plans.contains_key(f));
        }
        snap.add_overrides(read_overrides(conn, Some(&tenant.id))?);
        snap.keys.insert(hash, key);
        snap.add_tenant(tenant.clone());
        Ok(Some((snap, tenant)))
    }

    fn add_plan(&mut self, plan: PlanInfo) {
        self.plan_by_slug.insert(plan.slug.clone(), plan.id.clone());
        self.plans.insert(plan.id.clone(), plan);
    }

    /// Features of plans already added; rows of other plans are ignored.
    fn add_plan_features(&mut self, rows: Vec<(String, String)>) {
        for (plan, feature) in rows {
            if let Some(p) = self.plans.get_mut(&plan) {
                p.features.insert(feature);
            }
        }
    }

    fn add_tenant(&mut self, tenant: TenantInfo) {
        self.tenant_by_slug
            .insert(tenant.slug.clone(), tenant.id.clone());
        self.tenants.insert(tenant.id.clone(), tenant);
    }

    fn add_overrides(&mut self, rows: Vec<(String, OverrideInfo)>) {
        for (tenant, o) in rows {
            self.overrides.entry(tenant).or_default().push(o);
        }
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

    /// The one-key read answers exactly what the full snapshot answers, and
    /// refuses what the full snapshot leaves out.
    #[test]
    fn load_for_key_agrees_with_the_full_snapshot() {
        use tenantplane_control_db::audit::Actor;
        use tenantplane_fleet::registry::{self, NewTenant};

        let dir = std::env::temp_dir().join(format!("tp_flags_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = ControlDb::open(&format!("sqlite://{}", dir.join("control.db").display()))
            .expect("control db");
        tenantplane_fleet::servers::ensure_default(&db, &dir).expect("server");
        crate::plans::ensure_defaults(&db).expect("plans");
        let actor = Actor::system("test");
        let tenant = |slug: &str, plan: &str, schema: &str| {
            registry::create(
                &db,
                &actor,
                NewTenant {
                    slug: slug.into(),
                    name: slug.into(),
                    plan: Some(plan.into()),
                    labels: Default::default(),
                    contact_email: None,
                    server: None,
                    schema: Some(schema.into()),
                },
            )
            .expect("tenant")
            .id
        };
        let pro = tenant("shop-pro", "pro", "head");
        let trial = tenant("shop-trial", "pro", "phase:0");
        let free = tenant("shop-free", "free", "head");
        let gone = tenant("shop-gone", "standard", "head");
        let now = Utc::now().naive_utc();
        let mut conn = db.conn().expect("conn");
        diesel::update(tenants::table.find(&trial))
            .set(tenants::trial_ends_at.eq(Some(now - chrono::Duration::days(1))))
            .execute(&mut *conn)
            .expect("trial");
        drop(conn);
        crate::overrides::set(
            &db,
            &actor,
            &pro,
            "webhooks",
            crate::overrides::OverrideRequest {
                enabled: true,
                reason: None,
                expires_at: None,
            },
        )
        .expect("override");
        registry::delete(&db, &actor, &gone).expect("delete");
        let mut conn = db.conn().expect("conn");
        for (hash, tenant, revoked) in [
            ("h-pro", &pro, None),
            ("h-trial", &trial, None),
            ("h-free", &free, None),
            ("h-revoked", &free, Some(now)),
            ("h-gone", &gone, None),
        ] {
            diesel::insert_into(api_tokens::table)
                .values((
                    api_tokens::id.eq(format!("k-{hash}")),
                    api_tokens::kind.eq("tenant"),
                    api_tokens::tenant_id.eq(Some(tenant)),
                    api_tokens::name.eq("key"),
                    api_tokens::token_hash.eq(hash),
                    api_tokens::created_at.eq(now),
                    api_tokens::revoked_at.eq(revoked),
                ))
                .execute(&mut *conn)
                .expect("key");
        }

        let full = Snapshot::load(&mut conn).expect("snapshot");
        for hash in ["h-pro", "h-trial", "h-free"] {
            let (one, t) = Snapshot::load_for_key(&mut conn, hash)
                .expect("read")
                .expect("known key");
            let key = &full.keys[hash];
            assert_eq!(t.id, key.tenant_id);
            assert_eq!(
                serde_json::to_value(one.evaluate(&t, now)).expect("json"),
                serde_json::to_value(full.evaluate(&full.tenants[&t.id], now)).expect("json"),
                "{hash}"
            );
        }
        for hash in ["h-revoked", "h-gone", "h-unknown"] {
            assert!(!full.keys.contains_key(hash), "{hash}");
            assert!(
                Snapshot::load_for_key(&mut conn, hash)
                    .expect("read")
                    .is_none(),
                "{hash}"
            );
        }
        drop(conn);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
