//! One attempt of one delivery: an e-mail over SMTP (lettre) or a signed
//! webhook POST (ureq), and what came of it.

use std::io::Read;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};
use sha2::Digest;
use tenantplane_api_types::notify::WebhookPayload;
use tenantplane_control_db::outbox::EventKind;

use crate::config::{NotifyConfig, SmtpSettings, SmtpTls};
use crate::netcheck::{self, CheckedResolver, UrlError};
use crate::rows::EndpointRow;
use crate::signing;
use crate::templates;

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        status: Option<i32>,
        excerpt: Option<String>,
    },
    /// Worth another attempt (4xx from SMTP, no connection, a timeout, a
    /// non-2xx webhook answer); `after` is the receiver's `Retry-After`.
    Retry {
        status: Option<i32>,
        error: String,
        excerpt: Option<String>,
        after: Option<Duration>,
    },
    /// No attempt can succeed (5xx from SMTP, a refused address); `gone`:
    /// the endpoint answered 410 and is disabled.
    Failed {
        status: Option<i32>,
        error: String,
        excerpt: Option<String>,
        gone: bool,
    },
    /// Nothing to send with (no SMTP, the endpoint disabled or deleted).
    Skipped(String),
}

/// At most this much of an answer is kept per attempt.
pub const EXCERPT_MAX: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The same `Message-ID` for every attempt of one (event, recipient), so a
/// retry after a lost answer is recognisably the same mail.
pub fn message_id(event_id: &str, recipient: &str, from: &str) -> String {
    let digest = sha2::Sha256::digest(recipient.trim().to_lowercase().as_bytes());
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>'))
        .filter(|d| !d.is_empty())
        .unwrap_or("tenantplane.invalid");
    format!(
        "<{event_id}.{}@{domain}>",
        &hex::encode(digest.as_slice())[..16]
    )
}

fn transport(s: &SmtpSettings, timeout: Duration) -> Result<SmtpTransport, String> {
    let builder = match s.tls {
        SmtpTls::None => SmtpTransport::builder_dangerous(&s.host),
        SmtpTls::StartTls => SmtpTransport::starttls_relay(&s.host).map_err(|e| e.to_string())?,
        SmtpTls::Required => SmtpTransport::relay(&s.host).map_err(|e| e.to_string())?,
    };
    let mut builder = builder.port(s.port).timeout(Some(timeout));
    if let Some(user) = &s.user {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            s.password.clone().unwrap_or_default(),
        ));
    }
    Ok(builder.build())
}

/// The three-digit reply code of an SMTP answer.
fn code(c: lettre::transport::smtp::response::Code) -> Option<i32> {
    c.to_string().parse().ok()
}

/// Sends the mail of `event` to `to`.
pub fn email(
    config: &NotifyConfig,
    kind: EventKind,
    event_id: &str,
    body: &serde_json::Value,
    to: &str,
) -> Outcome {
    let Some(smtp) = &config.smtp else {
        return Outcome::Skipped("no SMTP server configured (TENANTPLANE_SMTP_URL)".into());
    };
    let failed = |error: String| Outcome::Failed {
        status: None,
        error,
        excerpt: None,
        gone: false,
    };
    let mail = match templates::render(kind, event_id, body) {
        Ok(Some(m)) => m,
        Ok(None) => return Outcome::Skipped(format!("no e-mail for {kind}")),
        Err(e) => return failed(tenantplane_control_db::error::report(&e)),
    };
    let from: Mailbox = match config.from.parse() {
        Ok(m) => m,
        Err(e) => return failed(format!("TENANTPLANE_SMTP_FROM {:?}: {e}", config.from)),
    };
    let rcpt: Mailbox = match to.parse() {
        Ok(m) => m,
        Err(e) => return failed(format!("recipient {to:?}: {e}")),
    };
    let message = Message::builder()
        .message_id(Some(message_id(event_id, to, &config.from)))
        .from(from)
        .to(rcpt)
        .subject(mail.subject)
        .multipart(MultiPart::alternative_plain_html(mail.text, mail.html));
    let message = match message {
        Ok(m) => m,
        Err(e) => return failed(format!("building the message: {e}")),
    };
    let transport = match transport(smtp, config.timeout) {
        Ok(t) => t,
        Err(e) => {
            return Outcome::Retry {
                status: None,
                error: e,
                excerpt: None,
                after: None,
            }
        }
    };
    match transport.send(&message) {
        Ok(resp) => Outcome::Delivered {
            status: code(resp.code()),
            excerpt: Some(clip(
                &resp.message().collect::<Vec<_>>().join(" "),
                EXCERPT_MAX,
            )),
        },
        Err(e) => {
            let status = e.status().and_then(code);
            let error = clip(&tenantplane_control_db::error::report(&e), EXCERPT_MAX);
            if e.is_permanent() {
                Outcome::Failed {
                    status,
                    error,
                    excerpt: None,
                    gone: false,
                }
            } else {
                // 4xx, no connection, a timeout, TLS: the server may
                // answer later.
                Outcome::Retry {
                    status,
                    error,
                    excerpt: None,
                    after: None,
                }
            }
        }
    }
}

/// `Retry-After`: seconds or an HTTP date.
fn retry_after(value: Option<&str>) -> Option<Duration> {
    let v = value?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    (at - Utc::now()).to_std().ok()
}

fn excerpt(resp: ureq::Response) -> Option<String> {
    let mut buf = Vec::new();
    resp.into_reader()
        .take(EXCERPT_MAX as u64)
        .read_to_end(&mut buf)
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    (!text.is_empty()).then(|| clip(&text, EXCERPT_MAX))
}

/// POSTs `event` to `endpoint`, signed (Standard Webhooks).
pub fn webhook(
    config: &NotifyConfig,
    endpoint: &EndpointRow,
    payload: &WebhookPayload,
    now: chrono::NaiveDateTime,
) -> Outcome {
    let failed = |error: String| Outcome::Failed {
        status: None,
        error,
        excerpt: None,
        gone: false,
    };
    // Checked here for a clear, permanent failure; the resolver checks the
    // address actually connected to again.
    match netcheck::check(&endpoint.url, config.allow_private) {
        Ok(_) => {}
        Err(e @ (UrlError::Private { .. } | UrlError::Scheme(_) | UrlError::Parse(..))) => {
            return failed(e.to_string())
        }
        Err(e) => {
            return Outcome::Retry {
                status: None,
                error: e.to_string(),
                excerpt: None,
                after: None,
            }
        }
    }
    let body = match serde_json::to_vec(payload) {
        Ok(b) => b,
        Err(e) => return failed(format!("payload: {e}")),
    };
    let timestamp = Utc::now().timestamp();
    let signature = match signing::header(
        &endpoint.signing_secrets(now),
        &payload.id,
        timestamp,
        &body,
    ) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    let agent = ureq::AgentBuilder::new()
        .timeout(config.timeout)
        .redirects(0)
        .resolver(CheckedResolver {
            allow_private: config.allow_private,
        })
        .user_agent(concat!("tenantplane-webhooks/", env!("CARGO_PKG_VERSION")))
        .build();
    let sent = agent
        .post(&endpoint.url)
        .set("content-type", "application/json")
        .set("webhook-id", &payload.id)
        .set("webhook-timestamp", &timestamp.to_string())
        .set("webhook-signature", &signature)
        .send_bytes(&body);
    match sent {
        Ok(resp) => {
            let status = i32::from(resp.status());
            if (200..300).contains(&status) {
                Outcome::Delivered {
                    status: Some(status),
                    excerpt: excerpt(resp),
                }
            } else {
                // 1xx/3xx: redirects are not followed; a failure.
                Outcome::Retry {
                    status: Some(status),
                    error: format!("answered {status}, not 2xx (redirects are not followed)"),
                    excerpt: excerpt(resp),
                    after: None,
                }
            }
        }
        Err(ureq::Error::Status(code, resp)) => {
            let after = if code == 429 || code == 503 {
                retry_after(resp.header("retry-after"))
            } else {
                None
            };
            let status = Some(i32::from(code));
            let excerpt = excerpt(resp);
            if code == 410 {
                Outcome::Failed {
                    status,
                    error: "410 Gone: the endpoint is disabled".into(),
                    excerpt,
                    gone: true,
                }
            } else {
                Outcome::Retry {
                    status,
                    error: format!("answered {code}"),
                    excerpt,
                    after,
                }
            }
        }
        Err(e) => Outcome::Retry {
            status: None,
            error: clip(&tenantplane_control_db::error::report(&e), EXCERPT_MAX),
            excerpt: None,
            after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_per_event_and_recipient() {
        let a = message_id("ev1", "Bob@Example.com", "tp <noreply@tp.example>");
        assert_eq!(
            a,
            message_id("ev1", "bob@example.com", "tp <noreply@tp.example>")
        );
        assert_ne!(
            a,
            message_id("ev1", "alice@example.com", "noreply@tp.example")
        );
        assert!(a.starts_with("<ev1.") && a.ends_with("@tp.example>"), "{a}");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(Some("7")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some("soon")), None);
        let later = (Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let d = retry_after(Some(&later)).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        assert_eq!(clip("ééé", 3), "é");
    }
}
