//! The one typed configuration: defaults, then `tenantplane.toml`, then
//! `TENANTPLANE_*` environment variables.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Keys of `tenantplane.toml` (same names as the env variables, lower-case,
/// without the prefix).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    control_db: Option<String>,
    listen: Option<String>,
    operator_token: Option<String>,
    log_format: Option<String>,
    worker_threads: Option<usize>,
    worker_lease_s: Option<u64>,
    backup_store: Option<String>,
    smtp_url: Option<String>,
    smtp_from: Option<String>,
    operator_emails: Option<Vec<String>>,
    webhook_allow_private: Option<bool>,
    webhook_timeout_s: Option<u64>,
    notify_retry_scale: Option<f64>,
    shutdown_grace_s: Option<u64>,
    tenant_rate_per_s: Option<u64>,
    control_db_pool_size: Option<u64>,
    tenant_db_pool_size: Option<u64>,
    worker_health_addr: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub control_db: String,
    pub listen: String,
    /// Never printed: `Debug` shows only whether it is set.
    pub operator_token: Option<String>,
    pub log_format: LogFormat,
    /// Tenants one worker process migrates at once (default: 4 per core).
    pub worker_threads: Option<usize>,
    /// Seconds a claimed task stays with a worker that stopped heartbeating.
    pub worker_lease_s: u64,
    /// Where backup artifacts go: `file:///dir` or `s3://bucket/prefix` (default
    /// `<data dir>/backups`). Shown redacted.
    pub backup_store: String,
    /// E-mail and webhooks (`TENANTPLANE_SMTP_URL`, `TENANTPLANE_SMTP_FROM`,
    /// `TENANTPLANE_OPERATOR_EMAILS`, `TENANTPLANE_WEBHOOK_ALLOW_PRIVATE`,
    /// `TENANTPLANE_WEBHOOK_TIMEOUT_S`, `TENANTPLANE_NOTIFY_RETRY_SCALE`).
    /// The SMTP password never shows in `Debug`.
    pub notify: tenantplane_notify::NotifyConfig,
    /// Seconds a stopping process (SIGTERM) gives requests, tenant runs and
    /// jobs in flight before it hands the unfinished ones back; keep it below
    /// Kubernetes' `terminationGracePeriodSeconds`.
    pub shutdown_grace_s: u64,
    /// Requests per second one tenant key may make to one API process
    /// (bursts of twice that); over it, 429 with `Retry-After`.
    pub tenant_rate_per_s: u64,
    /// Connections this process's control-DB pool opens at most (default:
    /// 16 on PostgreSQL, 8 on SQLite). docs/operations.md, "Connection
    /// budget".
    pub control_db_pool_size: Option<u32>,
    /// Tenant runs (one tenant connection each) a worker process has open
    /// at once against one database server (default: its thread count).
    pub tenant_db_pool_size: Option<usize>,
    /// Where `worker` serves `/healthz` and `/readyz` (default: nowhere).
    pub worker_health_addr: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field(
                "control_db",
                &tenantplane_fleet::urls::redact_url(&self.control_db),
            )
            .field("listen", &self.listen)
            .field(
                "operator_token",
                &self.operator_token.as_ref().map(|_| "<set>"),
            )
            .field("log_format", &self.log_format)
            .field("worker_threads", &self.worker_threads)
            .field("worker_lease_s", &self.worker_lease_s)
            .field("shutdown_grace_s", &self.shutdown_grace_s)
            .field("tenant_rate_per_s", &self.tenant_rate_per_s)
            .field("control_db_pool_size", &self.control_db_pool_size)
            .field("tenant_db_pool_size", &self.tenant_db_pool_size)
            .field("worker_health_addr", &self.worker_health_addr)
            .field(
                "backup_store",
                &tenantplane_fleet::urls::redact_url(&self.backup_store),
            )
            .field("notify", &self.notify)
            .finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Config {
    /// Loads `explicit` (which must exist) or `./tenantplane.toml` (if it
    /// exists), then applies the environment.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let path = explicit.map(Path::to_path_buf).or_else(|| {
            let p = PathBuf::from("tenantplane.toml");
            p.exists().then_some(p)
        });
        let file: FileConfig = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let notify = notify(&file)?;
        let data_dir = env("TENANTPLANE_DATA_DIR")
            .map(PathBuf::from)
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let control_db = env("TENANTPLANE_CONTROL_DB")
            .or(file.control_db)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("control.db").display()));
        let listen = env("TENANTPLANE_LISTEN")
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let operator_token = env("TENANTPLANE_OPERATOR_TOKEN").or(file.operator_token);
        if let Some(t) = &operator_token {
            if t.len() < 16 {
                bail!("the operator token must be at least 16 characters");
            }
        }
        let log_format = match env("TENANTPLANE_LOG_FORMAT").or(file.log_format).as_deref() {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("log_format must be 'human' or 'json', not {other:?}"),
        };
        let number = |name: &str, file: Option<u64>, default: u64| -> Result<u64> {
            let v = match env(name) {
                Some(v) => v
                    .parse()
                    .with_context(|| format!("{name} must be a number, not {v:?}"))?,
                None => file.unwrap_or(default),
            };
            if v < 1 {
                bail!("{name} must be at least 1");
            }
            Ok(v)
        };
        // A number only when set (env or file), else the part's default.
        let optional = |name: &str, file: Option<u64>| -> Result<Option<u64>> {
            if env(name).is_some() || file.is_some() {
                Ok(Some(number(name, file, 1)?))
            } else {
                Ok(None)
            }
        };
        let worker_threads = optional(
            "TENANTPLANE_WORKER_THREADS",
            file.worker_threads.map(|n| n as u64),
        )?
        .map(|n| n as usize);
        let control_db_pool_size = optional(
            "TENANTPLANE_CONTROL_DB_POOL_SIZE",
            file.control_db_pool_size,
        )?
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        if let Some(n) = control_db_pool_size {
            if n > 1000 {
                bail!("TENANTPLANE_CONTROL_DB_POOL_SIZE must be at most 1000, not {n}");
            }
        }
        let tenant_db_pool_size =
            optional("TENANTPLANE_TENANT_DB_POOL_SIZE", file.tenant_db_pool_size)?
                .map(|n| n as usize);
        let worker_health_addr = env("TENANTPLANE_WORKER_HEALTH_ADDR").or(file.worker_health_addr);
        if let Some(a) = &worker_health_addr {
            check_addr("TENANTPLANE_WORKER_HEALTH_ADDR", a)?;
        }
        let worker_lease_s = number("TENANTPLANE_WORKER_LEASE_S", file.worker_lease_s, 15)?;
        let shutdown_grace_s = number("TENANTPLANE_SHUTDOWN_GRACE_S", file.shutdown_grace_s, 30)?;
        let tenant_rate_per_s = number(
            "TENANTPLANE_TENANT_RATE_PER_S",
            file.tenant_rate_per_s,
            u64::from(tenantplane_api::rate_limit::DEFAULT_PER_S),
        )?;
        let backup_store = env("TENANTPLANE_BACKUP_STORE")
            .or(file.backup_store)
            .unwrap_or_else(|| tenantplane_backup::store::default_url(&data_dir));
        Ok(Config {
            notify,
            data_dir,
            control_db,
            listen,
            operator_token,
            log_format,
            worker_threads,
            worker_lease_s,
            backup_store,
            shutdown_grace_s,
            tenant_rate_per_s,
            control_db_pool_size,
            tenant_db_pool_size,
            worker_health_addr,
        })
    }
}

/// `host:port` with a numeric port (a name such as `localhost:8081` is
/// resolved when binding).
pub fn check_addr(key: &str, addr: &str) -> Result<()> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => bail!("{key} must be host:port (e.g. 0.0.0.0:8081), not {addr:?}"),
    }
}

/// The notification settings: a malformed SMTP URL, sender or operator
/// address stops the start with the reason.
fn notify(file: &FileConfig) -> Result<tenantplane_notify::NotifyConfig> {
    use tenantplane_notify::{NotifyConfig, SmtpSettings};
    let mut n = NotifyConfig::default();
    if let Some(url) = env("TENANTPLANE_SMTP_URL").or(file.smtp_url.clone()) {
        n.smtp = Some(SmtpSettings::parse(&url).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    if let Some(from) = env("TENANTPLANE_SMTP_FROM").or(file.smtp_from.clone()) {
        n.from = from;
    }
    check_mailbox("TENANTPLANE_SMTP_FROM", &n.from)?;
    n.operator_emails = match env("TENANTPLANE_OPERATOR_EMAILS") {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => file.operator_emails.clone().unwrap_or_default(),
    };
    for e in &n.operator_emails {
        check_mailbox("TENANTPLANE_OPERATOR_EMAILS", e)?;
    }
    n.allow_private = match env("TENANTPLANE_WEBHOOK_ALLOW_PRIVATE").as_deref() {
        None => file.webhook_allow_private.unwrap_or(false),
        Some("true" | "1" | "yes") => true,
        Some("false" | "0" | "no") => false,
        Some(other) => {
            bail!("TENANTPLANE_WEBHOOK_ALLOW_PRIVATE must be true or false, not {other:?}")
        }
    };
    let timeout = match env("TENANTPLANE_WEBHOOK_TIMEOUT_S") {
        Some(v) => v.parse::<u64>().with_context(|| {
            format!("TENANTPLANE_WEBHOOK_TIMEOUT_S must be a number, not {v:?}")
        })?,
        None => file.webhook_timeout_s.unwrap_or(15),
    };
    if !(1..=300).contains(&timeout) {
        bail!("TENANTPLANE_WEBHOOK_TIMEOUT_S must be 1 to 300");
    }
    n.timeout = std::time::Duration::from_secs(timeout);
    n.retry_scale = match env("TENANTPLANE_NOTIFY_RETRY_SCALE") {
        Some(v) => v.parse::<f64>().with_context(|| {
            format!("TENANTPLANE_NOTIFY_RETRY_SCALE must be a number, not {v:?}")
        })?,
        None => file.notify_retry_scale.unwrap_or(1.0),
    };
    if !(n.retry_scale > 0.0 && n.retry_scale <= 1.0) {
        bail!("TENANTPLANE_NOTIFY_RETRY_SCALE must be above 0 and at most 1");
    }
    Ok(n)
}

/// An address the mailer will accept (`name <a@b>` or `a@b`).
fn check_mailbox(key: &str, text: &str) -> Result<()> {
    let addr = text
        .rsplit_once('<')
        .map(|(_, a)| a.trim_end_matches('>'))
        .unwrap_or(text)
        .trim();
    match addr.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !addr.contains(' ') => {
            Ok(())
        }
        _ => bail!("{key}: {text:?} is not an e-mail address"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example holds only keys this version reads.
    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../deploy/tenantplane.example.toml");
        let parsed: FileConfig = toml::from_str(text).unwrap();
        assert_eq!(parsed.shutdown_grace_s, Some(30));
        assert_eq!(parsed.worker_lease_s, Some(15));
    }

    #[test]
    fn addresses_need_a_port() {
        assert!(check_addr("K", "0.0.0.0:8081").is_ok());
        assert!(check_addr("K", "[::]:8081").is_ok());
        assert!(check_addr("K", "localhost:0").is_ok());
        assert!(check_addr("K", "8081").is_err());
        assert!(check_addr("K", ":8081").is_err());
        assert!(check_addr("K", "0.0.0.0:http").is_err());
    }
}
