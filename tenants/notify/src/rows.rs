//! The `webhook_endpoints` row as the relay, the delivery job and the
//! endpoint operations read it (the bottom of the crate's module graph).

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use tenantplane_api_types::notify::Webhook;
use tenantplane_control_db::outbox::EventKind;
use tenantplane_control_db::schema::webhook_endpoints as ep;
use tenantplane_control_db::{ControlConnection, Error, Result};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ep)]
pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    pub event_kinds: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_expires_at: Option<NaiveDateTime>,
    pub failing_since: Option<NaiveDateTime>,
    pub warned_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub deleted_at: Option<NaiveDateTime>,
}

impl EndpointRow {
    /// The kinds it subscribed to; empty = every kind but the operators'
    /// own warnings.
    pub fn kinds(&self) -> Vec<String> {
        serde_json::from_str(&self.event_kinds).unwrap_or_default()
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        let kinds = self.kinds();
        if kinds.is_empty() {
            kind != EventKind::EndpointFailing
        } else {
            kinds.iter().any(|k| k == kind.as_str())
        }
    }

    /// The secrets that sign a delivery now: the current one, and the one
    /// before the last rotation during its grace period.
    pub fn signing_secrets(&self, now: NaiveDateTime) -> Vec<&str> {
        let mut s = vec![self.secret.as_str()];
        if let (Some(prev), Some(until)) = (&self.previous_secret, self.previous_expires_at) {
            if until > now {
                s.push(prev);
            }
        }
        s
    }

    pub fn view(&self) -> Webhook {
        let now = Utc::now().naive_utc();
        Webhook {
            id: self.id.clone(),
            url: self.url.clone(),
            events: self.kinds(),
            description: self.description.clone(),
            enabled: self.enabled,
            disabled_reason: self.disabled_reason.clone(),
            failing_since: self.failing_since.map(|t| t.and_utc()),
            previous_secret_expires_at: self
                .previous_expires_at
                .filter(|t| *t > now)
                .map(|t| t.and_utc()),
            created_at: self.created_at.and_utc(),
            updated_at: self.updated_at.and_utc(),
        }
    }
}

pub(crate) fn find(conn: &mut ControlConnection, id: &str) -> Result<EndpointRow> {
    ep::table
        .find(id)
        .filter(ep::deleted_at.is_null())
        .select(EndpointRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::not_found("webhook", id))
}
