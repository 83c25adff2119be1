//! Webhook endpoints: registration (URL and event kinds checked, a fresh
//! `whsec_` secret shown once), changes, deletion, secret rotation with a
//! grace period, and replay of a time range. Every change is audited.
//!
//! The secret is stored as is in the control database: it must be at hand
//! to sign every delivery, like Svix keeps it. It is never logged and never
//! shown again after creation or rotation; the control database is already
//! the system's most sensitive store (it holds the tenant database URLs).

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use tenantplane_api_types::notify::{
    NewWebhook, ReplayResult, RotateSecret, Webhook, WebhookPatch, WebhookWithSecret,
};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::outbox::EventKind;
use tenantplane_control_db::schema::{deliveries, outbox, webhook_endpoints as ep};
use tenantplane_control_db::states::{Channel, DeliveryState};
use tenantplane_control_db::{write_tx, ControlDb, Error, Result};

use crate::netcheck;
use crate::relay::{insert_delivery, requeue};
use crate::rows::find;
pub use crate::rows::EndpointRow;
use crate::signing;

/// The secret before a rotation signs alongside the new one this long by
/// default.
pub const DEFAULT_GRACE_S: i64 = 24 * 3600;

/// Checks event kind names; returns them sorted and deduplicated.
pub fn check_kinds(kinds: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for k in kinds {
        let kind: EventKind = k.parse().map_err(|_| {
            Error::invalid(format!(
                "unknown event kind {k:?}: one of {:?}",
                EventKind::names()
            ))
        })?;
        out.push(kind.as_str().to_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn check_url(url: &str, allow_private: bool) -> Result<String> {
    netcheck::check(url.trim(), allow_private)
        .map(|u| u.to_string())
        .map_err(|e| Error::invalid(e.to_string()))
}

fn check_description(d: &Option<String>) -> Result<()> {
    if d.as_ref().is_some_and(|d| d.len() > 500) {
        return Err(Error::invalid("description: at most 500 bytes"));
    }
    Ok(())
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// Registers an endpoint. The URL must be `http(s)://` and, unless
/// `allow_private`, resolve to public addresses only.
pub fn create(
    db: &ControlDb,
    actor: &Actor,
    new: NewWebhook,
    allow_private: bool,
) -> Result<WebhookWithSecret> {
    let url = check_url(&new.url, allow_private)?;
    let kinds = check_kinds(&new.events)?;
    check_description(&new.description)?;
    let id = uuid::Uuid::new_v4().to_string();
    let secret = signing::new_secret();
    let now = now();
    let mut conn = db.conn()?;
    let row = write_tx(&mut conn, None, |conn| {
        diesel::insert_into(ep::table)
            .values((
                ep::id.eq(&id),
                ep::url.eq(&url),
                ep::description.eq(&new.description),
                ep::event_kinds.eq(serde_json::json!(kinds).to_string()),
                ep::enabled.eq(new.enabled.unwrap_or(true)),
                ep::secret.eq(&secret),
                ep::created_at.eq(now),
                ep::updated_at.eq(now),
            ))
            .execute(conn)?;
        let row = find(conn, &id)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "webhook.create",
                resource_type: "webhook",
                resource_id: Some(&id),
                tenant_id: None,
                before: None,
                after: audit::snapshot(&row.view()),
            },
        )?;
        Ok(row)
    })?;
    tracing::info!(webhook_id = %id, url = %row.url, "webhook endpoint registered");
    Ok(WebhookWithSecret {
        webhook: row.view(),
        secret,
    })
}

/// Every live endpoint, oldest first.
pub fn list(db: &ControlDb) -> Result<Vec<Webhook>> {
    let mut conn = db.conn()?;
    let rows: Vec<EndpointRow> = ep::table
        .filter(ep::deleted_at.is_null())
        .order((ep::created_at, ep::id))
        .select(EndpointRow::as_select())
        .load(&mut conn)?;
    Ok(rows.iter().map(EndpointRow::view).collect())
}

pub fn get(db: &ControlDb, id: &str) -> Result<Webhook> {
    let mut conn = db.conn()?;
    Ok(find(&mut conn, id)?.view())
}

/// Changes url, kinds, description or enabled. Enabling clears the failure
/// streak and the reason it was disabled.
pub fn update(
    db: &ControlDb,
    actor: &Actor,
    id: &str,
    patch: WebhookPatch,
    allow_private: bool,
) -> Result<Webhook> {
    let url = patch
        .url
        .as_deref()
        .map(|u| check_url(u, allow_private))
        .transpose()?;
    let kinds = patch.events.as_deref().map(check_kinds).transpose()?;
    check_description(&patch.description)?;
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let before = find(conn, id)?;
        let now = now();
        let enabling = patch.enabled == Some(true) && !before.enabled;
        diesel::update(ep::table.find(id))
            .set((
                ep::url.eq(url.as_deref().unwrap_or(&before.url)),
                ep::event_kinds.eq(kinds
                    .as_ref()
                    .map(|k| serde_json::json!(k).to_string())
                    .unwrap_or(before.event_kinds.clone())),
                ep::description.eq(patch.description.clone().or(before.description.clone())),
                ep::enabled.eq(patch.enabled.unwrap_or(before.enabled)),
                ep::updated_at.eq(now),
            ))
            .execute(conn)?;
        if enabling {
            diesel::update(ep::table.find(id))
                .set((
                    ep::disabled_reason.eq(None::<String>),
                    ep::failing_since.eq(None::<NaiveDateTime>),
                    ep::warned_at.eq(None::<NaiveDateTime>),
                ))
                .execute(conn)?;
        } else if patch.enabled == Some(false) && before.enabled {
            diesel::update(ep::table.find(id))
                .set(ep::disabled_reason.eq(Some(format!("disabled by {}", actor.id))))
                .execute(conn)?;
        }
        let after = find(conn, id)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "webhook.update",
                resource_type: "webhook",
                resource_id: Some(id),
                tenant_id: None,
                before: audit::snapshot(&before.view()),
                after: audit::snapshot(&after.view()),
            },
        )?;
        Ok(after.view())
    })
}

/// Deletes an endpoint (kept as a row for its delivery history); its open
/// deliveries end `skipped`.
pub fn delete(db: &ControlDb, actor: &Actor, id: &str) -> Result<()> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let before = find(conn, id)?;
        let now = now();
        diesel::update(ep::table.find(id))
            .set((
                ep::deleted_at.eq(Some(now)),
                ep::enabled.eq(false),
                ep::updated_at.eq(now),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "webhook.delete",
                resource_type: "webhook",
                resource_id: Some(id),
                tenant_id: None,
                before: audit::snapshot(&before.view()),
                after: None,
            },
        )
    })
}

/// A new secret; the old one keeps signing (a second signature in
/// `webhook-signature`) for `grace_s` seconds so receivers can switch.
pub fn rotate_secret(
    db: &ControlDb,
    actor: &Actor,
    id: &str,
    req: RotateSecret,
) -> Result<WebhookWithSecret> {
    let grace = req.grace_s.unwrap_or(DEFAULT_GRACE_S);
    if !(0..=7 * 24 * 3600).contains(&grace) {
        return Err(Error::invalid("grace_s: 0 to 604800 seconds"));
    }
    let secret = signing::new_secret();
    let mut conn = db.conn()?;
    let row = write_tx(&mut conn, None, |conn| {
        let before = find(conn, id)?;
        let now = now();
        diesel::update(ep::table.find(id))
            .set((
                ep::secret.eq(&secret),
                ep::previous_secret.eq(Some(&before.secret)),
                ep::previous_expires_at.eq(Some(now + chrono::Duration::seconds(grace))),
                ep::updated_at.eq(now),
            ))
            .execute(conn)?;
        let after = find(conn, id)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "webhook.rotate_secret",
                resource_type: "webhook",
                resource_id: Some(id),
                tenant_id: None,
                before: None,
                after: Some(serde_json::json!({ "grace_s": grace })),
            },
        )?;
        Ok(after)
    })?;
    tracing::info!(webhook_id = %id, grace_s = grace, "webhook secret rotated");
    Ok(WebhookWithSecret {
        webhook: row.view(),
        secret,
    })
}

/// Queues again every event since `since` of a kind the endpoint wants:
/// deliveries that finished (delivered, dead, skipped) are reset to
/// `pending` with a fresh set of attempts, events it has none of get one;
/// open ones are left alone. The same event id goes out, so receivers that
/// already have an event deduplicate it.
pub fn replay(
    db: &ControlDb,
    actor: &Actor,
    id: &str,
    since: NaiveDateTime,
) -> Result<ReplayResult> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let endpoint = find(conn, id)?;
        if !endpoint.enabled {
            return Err(Error::Conflict(format!(
                "webhook {id} is disabled: enable it first"
            )));
        }
        let events: Vec<(String, String)> = outbox::table
            .filter(outbox::created_at.ge(since))
            .filter(outbox::dispatched_at.is_not_null())
            .order(outbox::created_at)
            .select((outbox::id, outbox::kind))
            .load(conn)?;
        let mut queued = 0i64;
        for (event_id, kind) in events {
            let Ok(kind) = kind.parse::<EventKind>() else {
                continue;
            };
            if !endpoint.wants(kind) {
                continue;
            }
            let existing: Option<(i64, String)> = deliveries::table
                .filter(deliveries::event_id.eq(&event_id))
                .filter(deliveries::channel.eq(Channel::Webhook.as_str()))
                .filter(deliveries::target.eq(id))
                .select((deliveries::id, deliveries::state))
                .first(conn)
                .optional()?;
            match existing {
                None => {
                    if insert_delivery(
                        conn,
                        &event_id,
                        Channel::Webhook,
                        id,
                        DeliveryState::Pending,
                    )?
                    .is_some()
                    {
                        queued += 1;
                    }
                }
                Some((did, state)) => {
                    let open = state == DeliveryState::Pending.as_str()
                        || state == DeliveryState::Retrying.as_str();
                    if !open {
                        requeue(conn, did)?;
                        queued += 1;
                    }
                }
            }
        }
        audit::record(
            conn,
            actor,
            Change {
                action: "webhook.replay",
                resource_type: "webhook",
                resource_id: Some(id),
                tenant_id: None,
                before: None,
                after: Some(serde_json::json!({
                    "since": since.and_utc().to_rfc3339(),
                    "queued": queued
                })),
            },
        )?;
        tracing::info!(webhook_id = %id, queued, "webhook replay queued");
        Ok(ReplayResult { queued })
    })
}
