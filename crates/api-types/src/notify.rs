//! Notifications: the outbox events' bodies (each one is the `data` of a
//! webhook delivery and the input of an e-mail template), webhook endpoints
//! and the outbox's deliveries as the API shows them.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a webhook receiver gets as the request body (Standard Webhooks'
/// recommended envelope). The same `id` is sent as the `webhook-id` header
/// and stays the same on every retry and replay: receivers deduplicate by it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WebhookPayload {
    /// The event's id (uuid), also the `webhook-id` header.
    pub id: String,
    /// The event kind, e.g. `plan.changed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the change that caused the event committed.
    pub timestamp: DateTime<Utc>,
    /// The event body: one of the `*Event` schemas, by `type`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// `tenant.created`, `tenant.suspended`, `tenant.deleted`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TenantEvent {
    pub tenant_id: String,
    pub slug: String,
    pub name: String,
    /// `active` or `suspended`
    pub status: String,
    pub contact_email: Option<String>,
    pub plan: Option<String>,
}

/// `plan.changed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PlanChangedEvent {
    pub tenant_id: String,
    pub slug: String,
    pub name: String,
    pub contact_email: Option<String>,
    /// The plan's slug before the change (none: the tenant had no plan).
    pub from_plan: Option<String>,
    pub to_plan: String,
    /// Set when the new plan is a trial.
    pub trial_ends_at: Option<DateTime<Utc>>,
}

/// `trial.ending` (sent once, some days before the end) and `trial.expired`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TrialEvent {
    pub tenant_id: String,
    pub slug: String,
    pub name: String,
    pub contact_email: Option<String>,
    /// The trial plan's slug.
    pub plan: String,
    pub trial_ends_at: DateTime<Utc>,
    /// The plan the tenant falls back to when the trial ends.
    pub fallback_plan: Option<String>,
}

/// `rollout.succeeded`, `rollout.failed`, `rollout.halted`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RolloutEvent {
    pub rollout_id: String,
    /// `succeeded`, `failed` or `halted`
    pub state: String,
    /// The schema target, e.g. `latest` or `phase:3`.
    pub target: String,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub halt_reason: Option<String>,
}

/// `backup.failed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BackupFailedEvent {
    pub backup_id: String,
    pub tenant_id: String,
    pub slug: Option<String>,
    /// `manual`, `scheduled`, `pre_migration`, `pre_restore`
    pub reason: String,
    pub error: String,
}

/// `restore.completed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RestoreCompletedEvent {
    pub backup_id: String,
    /// The tenant the backup was taken of.
    pub tenant_id: String,
    /// The tenant restored into (the same one for a restore in place).
    pub restored_tenant_id: String,
    /// `in_place` or `new_tenant`
    pub mode: String,
}

/// `export.ready`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ExportReadyEvent {
    pub export_id: String,
    pub tenant_id: String,
    pub slug: Option<String>,
    pub contact_email: Option<String>,
    /// `json` or `csv`
    pub format: String,
    pub size_bytes: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// `webhook.endpoint_failing`: an endpoint has failed every delivery for a
/// while; it is disabled (e-mailed to the operators).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct EndpointFailingEvent {
    pub endpoint_id: String,
    pub url: String,
    pub failing_since: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// `http://` or `https://`; private and loopback addresses are refused
    /// unless `TENANTPLANE_WEBHOOK_ALLOW_PRIVATE=true`.
    pub url: String,
    /// Event kinds to deliver; absent or empty: every kind.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Body of `PATCH /v1/webhooks/{id}`: the fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    /// Enabling an endpoint clears its failure streak.
    pub enabled: Option<bool>,
}

/// A webhook endpoint (never with its secret, except right after creation
/// or rotation: [`WebhookWithSecret`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    /// Empty: every kind.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why it was disabled (`410 Gone`, failing for days, an operator).
    pub disabled_reason: Option<String>,
    /// Since when every delivery failed (none: the last one succeeded).
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the secret before the last rotation still signs too.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The answer of `POST /v1/webhooks` and `POST /v1/webhooks/{id}/rotate-secret`:
/// the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_<base64>`: verify `webhook-signature` with it (Standard
    /// Webhooks). Shown once.
    pub secret: String,
}

/// Body of `POST /v1/webhooks/{id}/rotate-secret` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the old secret keeps signing next to the new one, seconds
    /// (default 86400; 0 = stop at once).
    #[serde(default)]
    pub grace_s: Option<i64>,
}

/// The answer of `POST /v1/webhooks/{id}/replay`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ReplayResult {
    /// Deliveries queued (new ones, and finished ones queued again).
    pub queued: i64,
}

/// One delivery of an outbox event (`GET /v1/outbox`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    /// The event kind.
    pub kind: String,
    pub tenant_id: Option<String>,
    /// `email` or `webhook`
    pub channel: String,
    /// The recipient's address or the endpoint's id.
    pub target: String,
    /// `pending`, `retrying`, `delivered`, `dead`, `skipped`
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first (only in `GET /v1/outbox/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<DeliveryAttempt>>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    /// HTTP status or SMTP reply code (none: no answer).
    pub status: Option<i32>,
    pub latency_ms: i64,
    /// `delivered`, `retry`, `failed`
    pub outcome: String,
    pub error: Option<String>,
    /// At most 1 KiB of the answer.
    pub response_excerpt: Option<String>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
}

/// `NaiveDateTime` (stored, UTC) as a `DateTime<Utc>`.
pub fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}
