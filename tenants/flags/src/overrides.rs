//! Per-tenant feature overrides: on or off regardless of the plan, with a
//! reason, the actor, and an optional expiry. (Never on without the feature's
//! migration: evaluation still checks the schema.)

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use tenantplane_migrations::catalogue;

pub use tenantplane_api_types::features::{Override, OverrideRequest};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::changes;
use tenantplane_control_db::db::{write_tx, ControlDb};
use tenantplane_control_db::error::{Error, Result};
use tenantplane_control_db::schema::feature_overrides;
use tenantplane_fleet::registry::find_row;

fn known(feature: &str) -> Result<()> {
    catalogue::feature(feature)
        .map(|_| ())
        .ok_or_else(|| Error::not_found("feature", feature))
}

pub fn set(
    db: &ControlDb,
    actor: &Actor,
    tenant: &str,
    feature: &str,
    req: OverrideRequest,
) -> Result<Override> {
    known(feature)?;
    let now = Utc::now();
    let expires_at = req.expires_at.map(|e| e.naive_utc());
    if req.expires_at.is_some_and(|e| e <= now) {
        return Err(Error::invalid("expires_at must be in the future"));
    }
    // An override meant for ever is one without expiry; a date centuries
    // away is a typo.
    if req
        .expires_at
        .is_some_and(|e| e > now + chrono::Duration::days(366 * 10))
    {
        return Err(Error::invalid(
            "expires_at is at most 10 years ahead; leave it out for an override without expiry",
        ));
    }
    if req.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(Error::invalid("reason is at most 500 characters"));
    }
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let t = find_row(conn, tenant)?;
        let before: Option<(bool, Option<String>, Option<NaiveDateTime>)> =
            feature_overrides::table
                .find((&t.id, feature))
                .select((
                    feature_overrides::enabled,
                    feature_overrides::reason,
                    feature_overrides::expires_at,
                ))
                .first(conn)
                .optional()?;
        diesel::delete(feature_overrides::table.find((&t.id, feature))).execute(conn)?;
        diesel::insert_into(feature_overrides::table)
            .values((
                feature_overrides::tenant_id.eq(&t.id),
                feature_overrides::feature.eq(feature),
                feature_overrides::enabled.eq(req.enabled),
                feature_overrides::reason.eq(req.reason.as_deref()),
                feature_overrides::actor.eq(&actor.id),
                feature_overrides::expires_at.eq(expires_at),
                feature_overrides::created_at.eq(now.naive_utc()),
            ))
            .execute(conn)?;
        let out = Override {
            tenant: t.id.clone(),
            feature: feature.to_string(),
            enabled: req.enabled,
            reason: req.reason.clone(),
            actor: actor.id.clone(),
            expires_at,
        };
        audit::record(conn, actor, Change {
            action: "feature.override",
            resource_type: "feature_override",
            resource_id: Some(feature),
            tenant_id: Some(&t.id),
            before: before.map(|(enabled, reason, expires_at)| serde_json::json!({"enabled": enabled, "reason": reason, "expires_at": expires_at})),
            after: audit::snapshot(&out),
        })?;
        changes::bump(conn)?;
        Ok(out)
    })
}

pub fn clear(db: &ControlDb, actor: &Actor, tenant: &str, feature: &str) -> Result<()> {
    known(feature)?;
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let t = find_row(conn, tenant)?;
        let before: Option<(bool, Option<String>)> = feature_overrides::table
            .find((&t.id, feature))
            .select((feature_overrides::enabled, feature_overrides::reason))
            .first(conn)
            .optional()?;
        let Some((enabled, reason)) = before else {
            return Err(Error::not_found(
                "override",
                format!("{}/{feature}", t.slug),
            ));
        };
        diesel::delete(feature_overrides::table.find((&t.id, feature))).execute(conn)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "feature.override_clear",
                resource_type: "feature_override",
                resource_id: Some(feature),
                tenant_id: Some(&t.id),
                before: Some(serde_json::json!({"enabled": enabled, "reason": reason})),
                after: None,
            },
        )?;
        changes::bump(conn)
    })
}
