//! Test harness: the real `tenantplane` binary on 127.0.0.1:0 with its own
//! temp data dir, and fresh PostgreSQL databases per test.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const TOKEN: &str = "test-operator-token-0123456789";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tenantplane"))
}

#[allow(unused_imports)]
pub use tenantplane_testkit::TestPg;

/// A running `tenantplane` process.
pub struct App {
    pub url: String,
    pub data_dir: PathBuf,
    pub child: Child,
    pub stdout_lines: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

pub struct AppOptions {
    pub command: Vec<String>,
    pub control_db: Option<String>,
    pub operator_token: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Extra environment, e.g. `TENANTPLANE_WORKER_LEASE_S`.
    pub env: Vec<(String, String)>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            command: vec!["serve".into()],
            control_db: None,
            operator_token: Some(TOKEN.into()),
            data_dir: None,
            env: Vec::new(),
        }
    }
}

/// The process's stderr (its log) goes to `<data dir>/tenantplane.log`.
fn log_file(data_dir: &std::path::Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("tenantplane.log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

impl App {
    pub fn start() -> App {
        App::start_with(AppOptions::default())
    }

    pub fn start_with_control(control_db: Option<String>) -> App {
        App::start_with(AppOptions {
            control_db,
            ..AppOptions::default()
        })
    }

    /// Starts the binary and waits for its "listening on" line.
    pub fn start_with(opts: AppOptions) -> App {
        let (tmp, data_dir) = match opts.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("temp dir");
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let mut cmd = Command::new(bin());
        cmd.args(&opts.command)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TENANTPLANE_DATA_DIR", &data_dir)
            .env("TENANTPLANE_LISTEN", "127.0.0.1:0")
            .env("TENANTPLANE_LOG", "info")
            .current_dir(&data_dir)
            .stdout(Stdio::piped())
            .stderr(log_file(&data_dir));
        if let Some(db) = &opts.control_db {
            cmd.env("TENANTPLANE_CONTROL_DB", db);
        }
        if let Some(t) = &opts.operator_token {
            cmd.env("TENANTPLANE_OPERATOR_TOKEN", t);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tenantplane");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    // An API prints its address; a worker-only process says it runs.
                    let url = line
                        .strip_prefix("tenantplane listening on ")
                        .map(str::to_string)
                        .or_else(|| (line == "tenantplane worker running").then(String::new));
                    lines.push(line);
                    if let Some(url) = url {
                        return App {
                            url,
                            data_dir,
                            child,
                            stdout_lines: lines,
                            _tmp: tmp,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(data_dir.join("tenantplane.log"))
                        .unwrap_or_default();
                    panic!("tenantplane did not start; stdout so far: {lines:?}; log:\n{log}");
                }
            }
        }
    }

    pub fn generated_token(&self) -> Option<String> {
        self.stdout_lines.iter().find_map(|l| {
            l.strip_prefix("operator token (shown once, stored hashed): ")
                .map(str::to_string)
        })
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call_as(&self.url, Some(TOKEN), method, path, body)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request; returns status and JSON body (`Null` when empty).
pub fn call_as(
    base: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = ureq::request(method, &format!("{base}{path}"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, json)
}

/// Sends a raw body (for malformed JSON).
pub fn call_raw(
    base: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let resp = match ureq::request(method, &format!("{base}{path}"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", content_type)
        .send_string(body)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    (status, resp.into_json().unwrap_or(Value::Null))
}

/// Asserts the JSON error shape and returns its code.
pub fn error_code(body: &Value) -> String {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"));
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {body}"
    );
    code.to_string()
}

/// The versions applied to a SQLite tenant database (`t_<id>.db` in `dir`),
/// oldest first.
pub fn sqlite_applied(dir: &std::path::Path, tenant_id: &str) -> Vec<String> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    let path = dir.join(format!("t_{}.db", tenant_id.replace('-', "")));
    let mut c =
        diesel::SqliteConnection::establish(&path.to_string_lossy()).expect("open tenant db");
    let mut v: Vec<String> = diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
        .load::<V>(&mut c)
        .map(|rows| rows.into_iter().map(|r| r.version).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Polls `f` until it returns `Some`, for at most `limit` (then panics with `what`).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A SQLite control database in `dir`, with the default SQLite server
/// (tenant files also go into `dir`), for tests that call the domain crates
/// directly instead of through the API.
pub fn sqlite_control_db(dir: &std::path::Path) -> tenantplane_control_db::ControlDb {
    let db = tenantplane_control_db::ControlDb::open(&format!(
        "sqlite://{}",
        dir.join("control.db").display()
    ))
    .expect("open the control database");
    tenantplane_fleet::servers::ensure_default(&db, dir).expect("default server");
    db
}

/// Creates a tenant through the API (`body`: the `POST /v1/tenants` body);
/// returns its id.
pub fn create_tenant(app: &App, body: Value) -> String {
    let (s, t) = app.call("POST", "/v1/tenants", Some(body));
    assert_eq!(s, 201, "{t}");
    t["id"].as_str().expect("id").to_string()
}

/// Issues a tenant API key; returns the key.
pub fn issue_key(app: &App, tenant: &str) -> String {
    let (s, k) = app.call(
        "POST",
        &format!("/v1/tenants/{tenant}/keys"),
        Some(serde_json::json!({"name": "test"})),
    );
    assert_eq!(s, 201, "{k}");
    k["key"].as_str().expect("key").to_string()
}
