//! The e-mails: who gets which event, its subject, and its text and HTML
//! parts rendered from the askama templates in `templates/` (compiled in;
//! HTML escaped, text not).

use askama::Template;
use serde::de::DeserializeOwned;
use tenantplane_api_types::notify::{
    BackupFailedEvent, EndpointFailingEvent, ExportReadyEvent, PlanChangedEvent,
    RestoreCompletedEvent, RolloutEvent, TenantEvent, TrialEvent,
};
use tenantplane_control_db::outbox::EventKind;

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The event's body does not fit its kind, or a template failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("event body of {kind} does not fit its type")]
    Body {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("rendering the {kind} e-mail")]
    Template {
        kind: &'static str,
        #[source]
        source: askama::Error,
    },
}

/// Whose mail an event kind is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The tenant's `contact_email` (in the body).
    Tenant,
    /// `TENANTPLANE_OPERATOR_EMAILS`.
    Operators,
    /// Webhooks only.
    Nobody,
}

/// Which kinds concern people, and which people.
pub fn audience(kind: EventKind) -> Audience {
    match kind {
        EventKind::PlanChanged
        | EventKind::TrialEnding
        | EventKind::TrialExpired
        | EventKind::ExportReady
        | EventKind::TenantSuspended => Audience::Tenant,
        EventKind::RolloutFailed
        | EventKind::RolloutHalted
        | EventKind::BackupFailed
        | EventKind::RestoreCompleted
        | EventKind::EndpointFailing => Audience::Operators,
        EventKind::TenantCreated | EventKind::TenantDeleted | EventKind::RolloutSucceeded => {
            Audience::Nobody
        }
    }
}

macro_rules! mail {
    ($text:ident, $html:ident, $ty:ty, $txt:literal, $htm:literal) => {
        #[derive(Template)]
        #[template(path = $txt)]
        struct $text<'a> {
            e: &'a $ty,
            event_id: &'a str,
        }

        #[derive(Template)]
        #[template(path = $htm)]
        struct $html<'a> {
            e: &'a $ty,
            event_id: &'a str,
            subject: &'a str,
        }
    };
}

mail!(
    PlanChangedText,
    PlanChangedHtml,
    PlanChangedEvent,
    "plan_changed.txt",
    "plan_changed.html"
);
mail!(
    TrialEndingText,
    TrialEndingHtml,
    TrialEvent,
    "trial_ending.txt",
    "trial_ending.html"
);
mail!(
    TrialExpiredText,
    TrialExpiredHtml,
    TrialEvent,
    "trial_expired.txt",
    "trial_expired.html"
);
mail!(
    SuspendedText,
    SuspendedHtml,
    TenantEvent,
    "tenant_suspended.txt",
    "tenant_suspended.html"
);
mail!(
    ExportReadyText,
    ExportReadyHtml,
    ExportReadyEvent,
    "export_ready.txt",
    "export_ready.html"
);
mail!(
    RolloutText,
    RolloutHtml,
    RolloutEvent,
    "rollout.txt",
    "rollout.html"
);
mail!(
    BackupFailedText,
    BackupFailedHtml,
    BackupFailedEvent,
    "backup_failed.txt",
    "backup_failed.html"
);
mail!(
    RestoreText,
    RestoreHtml,
    RestoreCompletedEvent,
    "restore_completed.txt",
    "restore_completed.html"
);
mail!(
    FailingText,
    FailingHtml,
    EndpointFailingEvent,
    "endpoint_failing.txt",
    "endpoint_failing.html"
);

fn body<T: DeserializeOwned>(kind: EventKind, body: &serde_json::Value) -> Result<T, RenderError> {
    serde_json::from_value(body.clone()).map_err(|source| RenderError::Body {
        kind: kind.as_str(),
        source,
    })
}

/// Renders both parts of the mail of an event; `None` for kinds no one is
/// mailed about.
pub fn render(
    kind: EventKind,
    event_id: &str,
    json: &serde_json::Value,
) -> Result<Option<Rendered>, RenderError> {
    let tpl = |source| RenderError::Template {
        kind: kind.as_str(),
        source,
    };
    macro_rules! both {
        ($text:ident, $html:ident, $e:expr, $subject:expr) => {{
            let e = &$e;
            let subject: String = $subject;
            let text = $text { e, event_id }.render().map_err(tpl)?;
            let html = $html {
                e,
                event_id,
                subject: &subject,
            }
            .render()
            .map_err(tpl)?;
            Some(Rendered {
                subject,
                text,
                html,
            })
        }};
    }
    Ok(match kind {
        EventKind::PlanChanged => {
            let e: PlanChangedEvent = body(kind, json)?;
            both!(
                PlanChangedText,
                PlanChangedHtml,
                e,
                format!("[{}] Your plan changed to {}", e.name, e.to_plan)
            )
        }
        EventKind::TrialEnding => {
            let e: TrialEvent = body(kind, json)?;
            both!(
                TrialEndingText,
                TrialEndingHtml,
                e,
                format!(
                    "[{}] Your trial ends on {}",
                    e.name,
                    e.trial_ends_at.format("%Y-%m-%d")
                )
            )
        }
        EventKind::TrialExpired => {
            let e: TrialEvent = body(kind, json)?;
            both!(
                TrialExpiredText,
                TrialExpiredHtml,
                e,
                format!("[{}] Your trial has ended", e.name)
            )
        }
        EventKind::TenantSuspended => {
            let e: TenantEvent = body(kind, json)?;
            both!(
                SuspendedText,
                SuspendedHtml,
                e,
                format!("[{}] Your shop has been suspended", e.name)
            )
        }
        EventKind::ExportReady => {
            let e: ExportReadyEvent = body(kind, json)?;
            both!(
                ExportReadyText,
                ExportReadyHtml,
                e,
                format!(
                    "[{}] Your data export is ready",
                    e.slug.as_deref().unwrap_or(&e.tenant_id)
                )
            )
        }
        EventKind::RolloutFailed | EventKind::RolloutHalted => {
            let e: RolloutEvent = body(kind, json)?;
            both!(
                RolloutText,
                RolloutHtml,
                e,
                format!("Rollout {} to {} {}", e.rollout_id, e.target, e.state)
            )
        }
        EventKind::BackupFailed => {
            let e: BackupFailedEvent = body(kind, json)?;
            both!(
                BackupFailedText,
                BackupFailedHtml,
                e,
                format!(
                    "Backup of {} failed",
                    e.slug.as_deref().unwrap_or(&e.tenant_id)
                )
            )
        }
        EventKind::RestoreCompleted => {
            let e: RestoreCompletedEvent = body(kind, json)?;
            both!(
                RestoreText,
                RestoreHtml,
                e,
                format!("Restore of backup {} completed", e.backup_id)
            )
        }
        EventKind::EndpointFailing => {
            let e: EndpointFailingEvent = body(kind, json)?;
            both!(
                FailingText,
                FailingHtml,
                e,
                format!("Webhook endpoint {} is failing", e.url)
            )
        }
        EventKind::TenantCreated | EventKind::TenantDeleted | EventKind::RolloutSucceeded => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mailed_kind_renders_both_parts_and_html_is_escaped() {
        let e = PlanChangedEvent {
            tenant_id: "t1".into(),
            slug: "shop".into(),
            name: "Bob's <Shop>".into(),
            contact_email: Some("bob@example.com".into()),
            from_plan: Some("free".into()),
            to_plan: "pro".into(),
            trial_ends_at: None,
        };
        let r = render(
            EventKind::PlanChanged,
            "ev-1",
            &serde_json::to_value(&e).unwrap(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.subject, "[Bob's <Shop>] Your plan changed to pro");
        assert!(r.text.contains("Hello Bob's <Shop>,"), "{}", r.text);
        assert!(r.text.contains("from free to pro"), "{}", r.text);
        assert!(
            r.html.contains("Bob&#39;s &#60;Shop&#62;")
                || r.html.contains("Bob&#x27;s &lt;Shop&gt;"),
            "{}",
            r.html
        );
        assert!(r.html.contains("<b>pro</b>"), "{}", r.html);
        assert!(
            render(EventKind::TenantCreated, "x", &serde_json::json!({}))
                .unwrap()
                .is_none()
        );
        assert!(render(EventKind::PlanChanged, "x", &serde_json::json!({})).is_err());
    }
}
