//! `tenantplane webhooks …` and `tenantplane outbox …`: webhook endpoints
//! and the outbox's deliveries through the API (`/v1/webhooks`,
//! `/v1/outbox`).

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{encode, Client};
use super::output::{print, Output};

const WEBHOOK_COLUMNS: &[&str] = &[
    "id",
    "url",
    "enabled",
    "events",
    "failing_since",
    "disabled_reason",
];
const DELIVERY_COLUMNS: &[&str] = &[
    "id",
    "kind",
    "channel",
    "target",
    "state",
    "attempts",
    "next_attempt_at",
    "last_error",
];
const ATTEMPT_COLUMNS: &[&str] = &[
    "attempt",
    "started_at",
    "status",
    "latency_ms",
    "outcome",
    "error",
];

#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// List the endpoints.
    List,
    /// Show one endpoint.
    Show { id: String },
    /// Register an endpoint; prints its secret (shown once).
    Create {
        url: String,
        /// Event kind to deliver, repeatable (none: every kind).
        #[arg(long = "event", value_name = "KIND")]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Register it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Change an endpoint: only the options given change.
    Update {
        id: String,
        #[arg(long)]
        url: Option<String>,
        /// Replaces the event kinds (repeatable).
        #[arg(long = "event", value_name = "KIND")]
        events: Vec<String>,
        /// Deliver every kind.
        #[arg(long, conflicts_with = "events")]
        all_events: bool,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// Delete an endpoint.
    Delete { id: String },
    /// A new secret (printed once); the old one signs too for --grace-s.
    RotateSecret {
        id: String,
        #[arg(long)]
        grace_s: Option<i64>,
    },
    /// Send every event since a time again (RFC 3339).
    Replay {
        id: String,
        #[arg(long)]
        since: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCmd {
    /// Deliveries, newest first.
    List {
        /// pending, retrying, delivered, dead or skipped
        #[arg(long)]
        state: Option<String>,
        /// An event kind, e.g. plan.changed.
        #[arg(long)]
        kind: Option<String>,
        /// email or webhook
        #[arg(long)]
        channel: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One delivery with its attempts.
    Show { id: i64 },
    /// Queue a dead or skipped delivery again.
    Retry { id: i64 },
}

pub fn webhooks(client: &Client, output: Output, cmd: WebhookCmd) -> Result<()> {
    let show = |v: &Value| print(output, v, std::slice::from_ref(v), WEBHOOK_COLUMNS);
    let with_secret = |v: &Value| {
        show(v);
        if output == Output::Table {
            if let Some(s) = v["secret"].as_str() {
                println!("secret (shown once): {s}");
            }
        }
    };
    match cmd {
        WebhookCmd::List => {
            let v = client.call("GET", "/v1/webhooks", None)?;
            let rows = v.as_array().cloned().unwrap_or_default();
            print(output, &v, &rows, WEBHOOK_COLUMNS);
        }
        WebhookCmd::Show { id } => {
            show(&client.call("GET", &format!("/v1/webhooks/{}", encode(&id)), None)?)
        }
        WebhookCmd::Create {
            url,
            events,
            description,
            disabled,
        } => {
            let body = json!({
                "url": url, "events": events, "description": description, "enabled": !disabled,
            });
            with_secret(&client.call("POST", "/v1/webhooks", Some(&body))?);
        }
        WebhookCmd::Update {
            id,
            url,
            events,
            all_events,
            description,
            enable,
            disable,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(u) = url {
                body.insert("url".into(), json!(u));
            }
            if all_events {
                body.insert("events".into(), json!([]));
            } else if !events.is_empty() {
                body.insert("events".into(), json!(events));
            }
            if let Some(d) = description {
                body.insert("description".into(), json!(d));
            }
            if enable || disable {
                body.insert("enabled".into(), json!(enable));
            }
            let path = format!("/v1/webhooks/{}", encode(&id));
            show(&client.call("PATCH", &path, Some(&Value::Object(body)))?);
        }
        WebhookCmd::Delete { id } => {
            client.call("DELETE", &format!("/v1/webhooks/{}", encode(&id)), None)?;
            if output == Output::Table {
                println!("deleted {id}");
            }
        }
        WebhookCmd::RotateSecret { id, grace_s } => {
            let path = format!("/v1/webhooks/{}/rotate-secret", encode(&id));
            with_secret(&client.call("POST", &path, Some(&json!({ "grace_s": grace_s })))?);
        }
        WebhookCmd::Replay { id, since } => {
            let path = format!(
                "/v1/webhooks/{}/replay?since={}",
                encode(&id),
                encode(&since)
            );
            let v = client.call("POST", &path, None)?;
            if output == Output::Json {
                print(output, &v, &[], &[]);
            } else {
                println!("queued {}", v["queued"]);
            }
        }
    }
    Ok(())
}

pub fn outbox(client: &Client, output: Output, cmd: OutboxCmd) -> Result<()> {
    match cmd {
        OutboxCmd::List {
            state,
            kind,
            channel,
            limit,
        } => {
            let mut q = vec![format!("limit={limit}")];
            q.extend(state.map(|s| format!("state={}", encode(&s))));
            q.extend(kind.map(|k| format!("kind={}", encode(&k))));
            q.extend(channel.map(|c| format!("channel={}", encode(&c))));
            let v = client.call("GET", &format!("/v1/outbox?{}", q.join("&")), None)?;
            let rows = v["items"].as_array().cloned().unwrap_or_default();
            print(output, &v, &rows, DELIVERY_COLUMNS);
        }
        OutboxCmd::Show { id } => {
            let v = client.call("GET", &format!("/v1/outbox/{id}"), None)?;
            print(output, &v, std::slice::from_ref(&v), DELIVERY_COLUMNS);
            if output == Output::Table {
                let attempts = v["attempt_log"].as_array().cloned().unwrap_or_default();
                println!();
                print(output, &v, &attempts, ATTEMPT_COLUMNS);
            }
        }
        OutboxCmd::Retry { id } => {
            let v = client.call("POST", &format!("/v1/outbox/{id}/retry"), None)?;
            print(output, &v, std::slice::from_ref(&v), DELIVERY_COLUMNS);
        }
    }
    Ok(())
}
