//! How notifications are sent: the SMTP server (`TENANTPLANE_SMTP_URL`),
//! the sender and the operators' addresses, the webhook rules, and the
//! retry schedule with its scale.

use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The e-mail settings from `smtp://user:pass@host:port?tls=none|starttls|required`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub user: Option<String>,
    /// Never logged (`Debug` hides it).
    pub password: Option<String>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (a relay on localhost, a test server).
    None,
    /// Plain connect, then STARTTLS, which must succeed (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Required,
}

/// A settings value that cannot be used, with what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl SmtpSettings {
    /// Parses `smtp://[user[:pass]@]host[:port][?tls=none|starttls|required]`
    /// (`smtps://` = `tls=required`). Default port: 25 with `none`, 587 with
    /// `starttls`, 465 with `required`; default `tls`: `starttls`.
    pub fn parse(text: &str) -> Result<SmtpSettings, ConfigError> {
        let bad = |why: &str| ConfigError(format!("TENANTPLANE_SMTP_URL: {why}"));
        let url = url::Url::parse(text).map_err(|e| bad(&format!("not a URL ({e})")))?;
        let mut tls = match url.scheme() {
            "smtp" => SmtpTls::StartTls,
            "smtps" => SmtpTls::Required,
            other => return Err(bad(&format!("scheme {other:?}: smtp:// or smtps://"))),
        };
        for (k, v) in url.query_pairs() {
            match (k.as_ref(), v.as_ref()) {
                ("tls", "none") => tls = SmtpTls::None,
                ("tls", "starttls") => tls = SmtpTls::StartTls,
                ("tls", "required") => tls = SmtpTls::Required,
                ("tls", other) => {
                    return Err(bad(&format!(
                        "tls={other:?}: one of none, starttls, required"
                    )))
                }
                (other, _) => return Err(bad(&format!("unknown parameter {other:?}"))),
            }
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port().unwrap_or(match tls {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Required => 465,
        });
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let user = (!url.username().is_empty()).then(|| decode(url.username()));
        let password = url.password().map(decode);
        if password.is_some() && user.is_none() {
            return Err(bad("a password without a user"));
        }
        Ok(SmtpSettings {
            host,
            port,
            tls,
            user,
            password,
        })
    }
}

/// Standard Webhooks' schedule (after the first attempt): 5 s, 5 min,
/// 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h — about three days, ten
/// attempts in all. Each delay gets ±20 % jitter.
pub const RETRY_SCHEDULE_S: [u64; 9] = [
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    24 * 3600,
];

/// Everything the notification code needs to know about its environment.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// `None`: e-mail deliveries are recorded `skipped`.
    pub smtp: Option<SmtpSettings>,
    /// The `From:` address (`TENANTPLANE_SMTP_FROM`).
    pub from: String,
    /// Who gets the operators' mails (`TENANTPLANE_OPERATOR_EMAILS`).
    pub operator_emails: Vec<String>,
    /// Deliver to (and accept) private, loopback and link-local addresses
    /// (`TENANTPLANE_WEBHOOK_ALLOW_PRIVATE`).
    pub allow_private: bool,
    /// Multiplies every delay of the retry schedule and the failing-endpoint
    /// thresholds (`TENANTPLANE_NOTIFY_RETRY_SCALE`; tests use e.g. 0.0002).
    pub retry_scale: f64,
    /// One webhook attempt may take this long (`TENANTPLANE_WEBHOOK_TIMEOUT_S`),
    /// also the SMTP timeout.
    pub timeout: Duration,
    /// After this long of failing deliveries an endpoint's operators are
    /// warned; after `disable_after`, it is disabled (both scaled).
    pub warn_after: Duration,
    pub disable_after: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            smtp: None,
            from: "tenantplane@localhost".into(),
            operator_emails: Vec::new(),
            allow_private: false,
            retry_scale: 1.0,
            timeout: Duration::from_secs(15),
            warn_after: Duration::from_secs(3 * 24 * 3600),
            disable_after: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

impl NotifyConfig {
    /// The delay before attempt `next` (2 = the first retry), jittered;
    /// `None` when the schedule is spent and the delivery is dead.
    pub fn retry_delay(&self, next: i32) -> Option<Duration> {
        let idx = usize::try_from(next - 2).ok()?;
        let base = *RETRY_SCHEDULE_S.get(idx)? as f64 * self.retry_scale;
        let jitter: f64 = rand::Rng::gen_range(&mut rand::thread_rng(), 0.8..1.2);
        Some(Duration::from_secs_f64((base * jitter).max(0.0)))
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> i32 {
        RETRY_SCHEDULE_S.len() as i32 + 1
    }

    pub fn scaled(&self, d: Duration) -> Duration {
        Duration::from_secs_f64(d.as_secs_f64() * self.retry_scale)
    }
}

static INSTALLED: RwLock<Option<Arc<NotifyConfig>>> = RwLock::new(None);

/// Sets the configuration the delivery jobs and the relay of this process
/// use (the worker calls it at start).
pub fn install(config: NotifyConfig) {
    if let Ok(mut c) = INSTALLED.write() {
        *c = Some(Arc::new(config));
    }
}

/// The installed configuration (the defaults when none was installed: no
/// SMTP, no private addresses).
pub fn installed() -> Arc<NotifyConfig> {
    INSTALLED
        .read()
        .ok()
        .and_then(|c| c.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_parse_with_defaults_and_refuse_nonsense() {
        let s = SmtpSettings::parse("smtp://bob:p%40ss@mail.example:2525?tls=none").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("mail.example", 2525, SmtpTls::None)
        );
        assert_eq!(s.user.as_deref(), Some("bob"));
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert!(
            !format!("{s:?}").contains("p@ss"),
            "the password is never printed"
        );
        let s = SmtpSettings::parse("smtp://mail.example").unwrap();
        assert_eq!((s.port, s.tls), (587, SmtpTls::StartTls));
        let s = SmtpSettings::parse("smtps://mail.example").unwrap();
        assert_eq!((s.port, s.tls), (465, SmtpTls::Required));
        for bad in [
            "mail.example",
            "http://mail.example",
            "smtp://mail.example?tls=maybe",
            "smtp://mail.example?foo=1",
            "smtp://:pw@mail.example",
            "smtp://",
        ] {
            assert!(SmtpSettings::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_schedule_has_ten_attempts_and_scales() {
        let c = NotifyConfig::default();
        assert_eq!(c.max_attempts(), 10);
        let first = c.retry_delay(2).unwrap().as_secs_f64();
        assert!((4.0..=6.0).contains(&first), "{first}");
        let last = c.retry_delay(10).unwrap().as_secs_f64();
        assert!((0.8 * 86400.0..=1.2 * 86400.0).contains(&last));
        assert!(c.retry_delay(11).is_none(), "the schedule is spent");
        assert!(c.retry_delay(1).is_none());
        let fast = NotifyConfig {
            retry_scale: 0.001,
            ..NotifyConfig::default()
        };
        assert!(fast.retry_delay(3).unwrap() <= Duration::from_millis(360));
    }
}
