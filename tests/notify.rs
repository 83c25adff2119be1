//! Notifications end to end: the real binary, a real SMTP server (aiosmtpd,
//! `tests/support/smtp_sink.py`) and a real webhook receiver that verifies
//! the Standard Webhooks signatures itself (`tests/support/webhook_receiver.py`).
//! Retries run on the real schedule scaled down
//! (`TENANTPLANE_NOTIFY_RETRY_SCALE`); no assertion is about timing.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{wait_for, App, AppOptions, TestPg, TOKEN};

const WAIT: Duration = Duration::from_secs(90);

fn support(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, child: &mut Child, what: &str) {
    wait_for(what, Duration::from_secs(30), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited: {status}");
        }
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

/// Is aiosmtpd installed? Without it the SMTP tests print SKIPPED, unless
/// `CI` is set: then they fail (`.ci/run` installs it).
fn have_aiosmtpd() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("aiosmtpd is required when CI is set: python3 -m pip install aiosmtpd");
        }
        eprintln!("SKIPPED: aiosmtpd is not installed (python3 -m pip install aiosmtpd)");
    }
    ok
}

/// The SMTP server process; every accepted mail is a JSON file in `dir`.
struct SmtpSink {
    child: Child,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    fn start(port: u16) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        SmtpSink::start_in(port, dir)
    }

    fn start_in(port: u16, dir: tempfile::TempDir) -> SmtpSink {
        let mut child = Command::new("python3")
            .arg(support("smtp_sink.py"))
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_port(port, &mut child, "the SMTP server");
        SmtpSink { child, dir }
    }

    /// Mails received, oldest first.
    fn mails(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("mail-"))
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    fn mails_to(&self, rcpt: &str) -> Vec<Value> {
        self.mails()
            .into_iter()
            .filter(|m| m["rcpt_tos"].as_array().unwrap().iter().any(|r| r == rcpt))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The webhook receiver process.
struct Receiver {
    child: Child,
    base: String,
}

impl Receiver {
    fn start() -> Receiver {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(support("webhook_receiver.py"))
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_port(port, &mut child, "the webhook receiver");
        Receiver {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn secrets(&self, name: &str, secrets: &[&str]) {
        ureq::put(&self.url(&format!("/_secrets/{name}")))
            .send_json(json!(secrets))
            .unwrap();
    }

    fn log(&self, name: &str) -> Value {
        ureq::get(&self.url(&format!("/_log/{name}")))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Notification settings for a test process: fast retries, loopback
/// receivers allowed, and a 15 s webhook and SMTP timeout: a loaded machine
/// can keep a receiver from answering for a second or more, and a timed-out
/// attempt that the receiver still takes would add a request (and an
/// attempt) that the tests count. The slow-receiver test sets its own.
fn notify_env(smtp_port: Option<u16>) -> Vec<(String, String)> {
    let mut env = vec![
        ("TENANTPLANE_NOTIFY_RETRY_SCALE".into(), "0.001".into()),
        ("TENANTPLANE_WEBHOOK_TIMEOUT_S".into(), "15".into()),
        ("TENANTPLANE_WEBHOOK_ALLOW_PRIVATE".into(), "true".into()),
        (
            "TENANTPLANE_SMTP_FROM".into(),
            "tenantplane <noreply@tp.test>".into(),
        ),
        ("TENANTPLANE_OPERATOR_EMAILS".into(), "ops@tp.test".into()),
    ];
    if let Some(p) = smtp_port {
        env.push((
            "TENANTPLANE_SMTP_URL".into(),
            format!("smtp://127.0.0.1:{p}?tls=none"),
        ));
    }
    env
}

fn app(control_db: Option<String>, smtp_port: Option<u16>) -> App {
    App::start_with(AppOptions {
        control_db,
        env: notify_env(smtp_port),
        ..AppOptions::default()
    })
}

fn create_tenant(app: &App, slug: &str, email: &str) -> String {
    let (s, t) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": slug, "name": format!("Shop {slug}"), "plan": "free", "contact_email": email})),
    );
    assert_eq!(s, 201, "{t}");
    t["id"].as_str().unwrap().to_string()
}

fn change_plan(app: &App, tenant: &str, plan: &str) {
    let (s, t) = app.call(
        "PATCH",
        &format!("/v1/tenants/{tenant}"),
        Some(json!({ "plan": plan })),
    );
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["plan"], plan);
}

fn deliveries(app: &App, query: &str) -> Vec<Value> {
    let (s, page) = app.call("GET", &format!("/v1/outbox?{query}"), None);
    assert_eq!(s, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// Waits for exactly one delivery matching `query` in one of `states`.
fn wait_delivery(app: &App, query: &str, states: &[&str]) -> Value {
    wait_for(&format!("a delivery {query} in {states:?}"), WAIT, || {
        let d = deliveries(app, query);
        (d.len() == 1 && states.iter().any(|s| d[0]["state"] == *s)).then(|| d[0].clone())
    })
}

fn delivery(app: &App, id: &Value) -> Value {
    let (s, d) = app.call("GET", &format!("/v1/outbox/{id}"), None);
    assert_eq!(s, 200, "{d}");
    d
}

fn statuses(d: &Value) -> Vec<Value> {
    d["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect()
}

// ---------------------------------------------------------------- e-mail

fn plan_change_mails_the_contact(control_db: Option<String>) {
    if !have_aiosmtpd() {
        return;
    }
    let port = free_port();
    let smtp = SmtpSink::start(port);
    let app = app(control_db, Some(port));
    let id = create_tenant(&app, "mailed", "owner@shop.test");
    change_plan(&app, &id, "pro");
    let d = wait_delivery(&app, "channel=email&kind=plan.changed", &["delivered"]);
    assert_eq!(d["target"], "owner@shop.test");
    assert_eq!(d["attempts"], 1);
    let mails = smtp.mails_to("owner@shop.test");
    assert_eq!(mails.len(), 1, "exactly one mail: {mails:?}");
    let m = &mails[0];
    assert_eq!(m["subject"], "[Shop mailed] Your plan changed to pro");
    assert_eq!(m["content_type"], "multipart/alternative");
    assert!(
        m["text"].as_str().unwrap().contains("from free to pro"),
        "{m}"
    );
    assert!(m["html"].as_str().unwrap().contains("<b>pro</b>"), "{m}");
    let mid = m["message_id"].as_str().unwrap();
    assert!(
        mid.starts_with(&format!("<{}.", d["event_id"].as_str().unwrap()))
            && mid.ends_with("@tp.test>"),
        "the Message-ID derives from the event: {mid}"
    );
    // Creating the tenant mailed no one; no other mail went out.
    assert_eq!(smtp.mails().len(), 1);
    // Counted in /metrics by channel and state.
    let metrics = ureq::get(&format!("{}/metrics", app.url))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("tenantplane_notify_deliveries{channel=\"email\",state=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(metrics
        .contains("tenantplane_notify_attempts_total{channel=\"email\",outcome=\"delivered\"} 1"));
}

#[test]
fn plan_change_mails_the_contact_once_with_both_parts() {
    plan_change_mails_the_contact(None);
}

#[test]
fn plan_change_mails_the_contact_postgres_control_db() {
    let Some(pg) = TestPg::new() else { return };
    plan_change_mails_the_contact(Some(pg.url()));
}

#[test]
fn smtp_down_then_up_delivers_once() {
    if !have_aiosmtpd() {
        return;
    }
    let port = free_port();
    let app = app(None, Some(port));
    let id = create_tenant(&app, "patient", "patient@shop.test");
    change_plan(&app, &id, "pro");
    // Nothing listens: attempts fail and are retried.
    let d = wait_for("two failed attempts", WAIT, || {
        let d = deliveries(&app, "channel=email");
        (d.len() == 1 && d[0]["attempts"].as_i64().unwrap_or(0) >= 2).then(|| d[0].clone())
    });
    assert_eq!(d["state"], "retrying", "{d}");
    assert!(d["last_error"].is_string());
    let smtp = SmtpSink::start(port);
    let d = wait_delivery(&app, "channel=email", &["delivered"]);
    assert_eq!(smtp.mails_to("patient@shop.test").len(), 1);
    let log = delivery(&app, &d["id"]);
    let outcomes: Vec<&str> = log["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert!(outcomes.len() >= 3, "{outcomes:?}");
    assert_eq!(outcomes.last(), Some(&"delivered"));
    assert!(outcomes[..outcomes.len() - 1].iter().all(|o| *o == "retry"));
}

#[test]
fn smtp_451_then_250_delivers_once() {
    if !have_aiosmtpd() {
        return;
    }
    let port = free_port();
    let smtp = SmtpSink::start(port);
    let app = app(None, Some(port));
    let id = create_tenant(&app, "greylisted", "tempfail-owner@shop.test");
    change_plan(&app, &id, "standard");
    let d = wait_delivery(&app, "channel=email", &["delivered"]);
    assert_eq!(d["attempts"], 2);
    assert_eq!(
        statuses(&delivery(&app, &d["id"])),
        [json!(451), json!(250)]
    );
    assert_eq!(smtp.mails_to("tempfail-owner@shop.test").len(), 1);
}

#[test]
fn smtp_550_is_dead_after_one_attempt_and_can_be_retried() {
    if !have_aiosmtpd() {
        return;
    }
    let port = free_port();
    let smtp = SmtpSink::start(port);
    let app = app(None, Some(port));
    let id = create_tenant(&app, "bouncer", "reject-owner@shop.test");
    change_plan(&app, &id, "pro");
    let d = wait_delivery(&app, "channel=email", &["dead"]);
    assert_eq!(d["attempts"], 1);
    assert_eq!(statuses(&delivery(&app, &d["id"])), [json!(550)]);
    assert!(smtp.mails().is_empty());
    assert_eq!(deliveries(&app, "state=dead").len(), 1);
    // A dead delivery can be queued again (and dies again: still 550).
    let (s, r) = app.call("POST", &format!("/v1/outbox/{}/retry", d["id"]), None);
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["state"], "pending");
    let again = wait_for("the retried delivery to die again", WAIT, || {
        let x = delivery(&app, &d["id"]);
        (x["state"] == "dead" && x["attempt_log"].as_array().unwrap().len() == 2).then_some(x)
    });
    assert_eq!(again["attempts"], 1, "a fresh set of attempts");
    // Only dead or skipped deliveries can be retried.
    let id2 = create_tenant(&app, "fine", "fine@shop.test");
    change_plan(&app, &id2, "pro");
    let ok = wait_delivery(&app, "channel=email&state=delivered", &["delivered"]);
    let (s, e) = app.call("POST", &format!("/v1/outbox/{}/retry", ok["id"]), None);
    assert_eq!(s, 409, "{e}");
    let (s, _) = app.call("POST", "/v1/outbox/999999/retry", None);
    assert_eq!(s, 404);
}

#[test]
fn without_smtp_mail_is_recorded_skipped() {
    let app = app(None, None);
    let id = create_tenant(&app, "quiet", "quiet@shop.test");
    change_plan(&app, &id, "pro");
    let d = wait_delivery(&app, "channel=email", &["skipped"]);
    assert_eq!(d["target"], "quiet@shop.test");
    assert_eq!(d["kind"], "plan.changed");
    assert!(d["last_error"].as_str().unwrap().contains("SMTP"), "{d}");
    assert_eq!(d["attempts"], 0);
}

#[test]
fn a_malformed_smtp_url_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("TENANTPLANE_SMTP_URL", "smtp://mail.test?tls=sometimes"),
        ("TENANTPLANE_SMTP_URL", "http://mail.test"),
        ("TENANTPLANE_OPERATOR_EMAILS", "ops@tp.test, not-an-address"),
        ("TENANTPLANE_NOTIFY_RETRY_SCALE", "0"),
    ] {
        let out = Command::new(crate::common::bin())
            .arg("serve")
            .env_clear()
            .env("TENANTPLANE_DATA_DIR", dir.path())
            .env("TENANTPLANE_LISTEN", "127.0.0.1:0")
            .env("TENANTPLANE_OPERATOR_TOKEN", TOKEN)
            .env(key, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{key}={value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key}={value}: {err}");
        assert!(
            !dir.path().join("control.db").exists(),
            "nothing was created before the configuration was checked"
        );
    }
}

// ---------------------------------------------------------------- webhooks

/// Registers an endpoint for `path` on the receiver and tells the receiver
/// its secret. Returns (endpoint id, secret).
fn endpoint(app: &App, rx: &Receiver, path: &str, events: &[&str]) -> (String, String) {
    let (s, w) = app.call(
        "POST",
        "/v1/webhooks",
        Some(json!({"url": rx.url(path), "events": events})),
    );
    assert_eq!(s, 201, "{w}");
    let secret = w["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let name = path.rsplit('/').next().unwrap();
    rx.secrets(name, &[&secret]);
    (w["id"].as_str().unwrap().to_string(), secret)
}

fn webhook_retries_until_200(control_db: Option<String>) {
    let rx = Receiver::start();
    let app = app(control_db, None);
    let (ep, _) = endpoint(&app, &rx, "/fail/2/flaky", &["tenant.created"]);
    create_tenant(&app, "flaky", "flaky@shop.test");
    let d = wait_delivery(&app, "channel=webhook", &["delivered"]);
    assert_eq!(d["target"], ep.as_str());
    assert_eq!(d["attempts"], 3);
    let full = delivery(&app, &d["id"]);
    assert_eq!(statuses(&full), [json!(500), json!(500), json!(200)]);
    // Each attempt keeps the start of the answer.
    assert_eq!(
        full["attempt_log"][0]["response_excerpt"],
        r#"{"error": "no"}"#
    );
    assert_eq!(
        full["attempt_log"][2]["response_excerpt"],
        r#"{"ok": true}"#
    );
    assert_eq!(full["attempt_log"][0]["outcome"], "retry");
    let latency: Vec<i64> = full["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["latency_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(latency.len(), 3);
    let log = rx.log("flaky");
    let reqs = log["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 3);
    let event_id = d["event_id"].as_str().unwrap();
    for r in reqs {
        assert_eq!(
            r["webhook_id"], event_id,
            "one webhook-id for every attempt"
        );
        assert_eq!(r["verified_by"], json!([0]), "signature verified: {r}");
        assert_eq!(r["body"]["type"], "tenant.created");
        assert_eq!(r["body"]["id"], event_id);
        assert_eq!(r["body"]["data"]["slug"], "flaky");
    }
    assert_eq!(log["delivered"], json!([event_id]), "delivered once");
}

#[test]
fn webhook_500_500_200_is_delivered_once_on_the_third_attempt() {
    webhook_retries_until_200(None);
}

#[test]
fn webhook_500_500_200_postgres_control_db() {
    let Some(pg) = TestPg::new() else { return };
    webhook_retries_until_200(Some(pg.url()));
}

#[test]
fn webhook_signatures_verify_during_a_secret_rotation() {
    let rx = Receiver::start();
    let app = app(None, None);
    let (ep, first) = endpoint(
        &app,
        &rx,
        "/ok/rot",
        &["tenant.created", "tenant.suspended", "plan.changed"],
    );
    let id = create_tenant(&app, "rotating", "r@shop.test");
    wait_for("the first delivery", WAIT, || {
        (rx.log("rot")["delivered"].as_array().unwrap().len() == 1).then_some(())
    });
    // Rotate with a grace period: deliveries carry two signatures, one per
    // secret; a receiver knowing either one accepts them.
    let (s, w) = app.call(
        "POST",
        &format!("/v1/webhooks/{ep}/rotate-secret"),
        Some(json!({"grace_s": 3600})),
    );
    assert_eq!(s, 200, "{w}");
    let second = w["secret"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert!(w["previous_secret_expires_at"].is_string());
    rx.secrets("rot", &[&first, &second]);
    let (s, _) = app.call(
        "PATCH",
        &format!("/v1/tenants/{id}"),
        Some(json!({"status": "suspended"})),
    );
    assert_eq!(s, 200);
    let log = wait_for("the delivery after the rotation", WAIT, || {
        let l = rx.log("rot");
        (l["delivered"].as_array().unwrap().len() == 2).then_some(l)
    });
    let last = log["requests"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["body"]["type"], "tenant.suspended");
    assert_eq!(
        last["verified_by"],
        json!([0, 1]),
        "both secrets sign: {last}"
    );
    assert_eq!(last["signature"].as_str().unwrap().split(' ').count(), 2);
    // Rotating again without grace: only the newest secret signs.
    let (s, w) = app.call(
        "POST",
        &format!("/v1/webhooks/{ep}/rotate-secret"),
        Some(json!({"grace_s": 0})),
    );
    assert_eq!(s, 200);
    let third = w["secret"].as_str().unwrap().to_string();
    rx.secrets("rot", &[&first, &second, &third]);
    change_plan(&app, &id, "pro");
    let log = wait_for("the delivery after the second rotation", WAIT, || {
        let l = rx.log("rot");
        (l["delivered"].as_array().unwrap().len() == 3).then_some(l)
    });
    let last = log["requests"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["verified_by"], json!([2]), "{last}");
    assert!(log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == 200 && r["fresh"] == true));
    // The secret is never shown again.
    let (_, shown) = app.call("GET", &format!("/v1/webhooks/{ep}"), None);
    assert!(shown.get("secret").is_none(), "{shown}");
    let (_, audit) = app.call("GET", "/v1/audit?limit=100", None);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(actions.contains(&"webhook.create") && actions.contains(&"webhook.rotate_secret"));
    assert!(
        !audit.to_string().contains(&second[6..]),
        "a secret in the audit log"
    );
}

#[test]
fn webhook_410_disables_the_endpoint() {
    let rx = Receiver::start();
    let app = app(None, None);
    let (ep, _) = endpoint(&app, &rx, "/gone/gone", &[]);
    create_tenant(&app, "gone", "g@shop.test");
    let d = wait_delivery(&app, "channel=webhook&kind=tenant.created", &["dead"]);
    assert_eq!(d["attempts"], 1);
    assert_eq!(statuses(&delivery(&app, &d["id"])), [json!(410)]);
    let (_, w) = app.call("GET", &format!("/v1/webhooks/{ep}"), None);
    assert_eq!(w["enabled"], false, "{w}");
    assert!(w["disabled_reason"].as_str().unwrap().contains("410"));
    // Later events do not go to it.
    create_tenant(&app, "gone-too", "g2@shop.test");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(deliveries(&app, "channel=webhook").len(), 1);
    assert_eq!(rx.log("gone")["requests"].as_array().unwrap().len(), 1);
    // Replaying a disabled endpoint is refused; enabled again, the replay
    // sends what it missed.
    let since = "2000-01-01T00:00:00Z";
    let (s, _) = app.call(
        "POST",
        &format!("/v1/webhooks/{ep}/replay?since={since}"),
        None,
    );
    assert_eq!(s, 409);
    let (s, _) = app.call(
        "PATCH",
        &format!("/v1/webhooks/{ep}"),
        Some(json!({"enabled": true, "url": rx.url("/ok/gone")})),
    );
    assert_eq!(s, 200);
    let (s, r) = app.call(
        "POST",
        &format!("/v1/webhooks/{ep}/replay?since={since}"),
        None,
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["queued"], 2, "the dead delivery and the missed event");
    wait_for("the replay", WAIT, || {
        (rx.log("gone")["delivered"].as_array().unwrap().len() == 2).then_some(())
    });
    let (s, _) = app.call(
        "POST",
        &format!("/v1/webhooks/{ep}/replay?since=yesterday"),
        None,
    );
    assert_eq!(s, 400);
}

#[test]
fn a_slow_webhook_receiver_is_retried() {
    let rx = Receiver::start();
    let mut env = notify_env(None);
    env.push(("TENANTPLANE_WEBHOOK_TIMEOUT_S".into(), "3".into()));
    let app = App::start_with(AppOptions {
        env,
        ..AppOptions::default()
    });
    // The first request sleeps far past the 3 s timeout.
    endpoint(&app, &rx, "/slow/30/slow", &["tenant.created"]);
    create_tenant(&app, "slowpoke", "s@shop.test");
    let d = wait_delivery(&app, "channel=webhook", &["delivered"]);
    assert_eq!(d["attempts"], 2);
    let full = delivery(&app, &d["id"]);
    let first = &full["attempt_log"][0];
    assert_eq!(first["outcome"], "retry");
    assert!(
        first["status"].is_null(),
        "no answer within the timeout: {first}"
    );
    assert_eq!(full["attempt_log"][1]["status"], 200);
    // The receiver saw the event twice (it processed the first copy after
    // the sender gave up) and keeps it once.
    let log = rx.log("slow");
    assert_eq!(log["requests"].as_array().unwrap().len(), 2);
    assert_eq!(log["delivered"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_webhook_input_is_refused_and_changes_nothing() {
    // Private addresses are refused here: no allow flag.
    let app = App::start();
    let cases = [
        json!({"url": "ftp://hooks.example.com/x"}),
        json!({"url": "not a url"}),
        json!({"url": "http://127.0.0.1:9/hook"}),
        json!({"url": "http://10.0.0.8/hook"}),
        json!({"url": "http://[::1]:9/hook"}),
        json!({"url": "https://hooks.example.com/x", "events": ["tenant.created", "tenant.exploded"]}),
    ];
    for body in cases {
        let (s, e) = app.call("POST", "/v1/webhooks", Some(body.clone()));
        assert_eq!(s, 422, "{body} → {e}");
        crate::common::error_code(&e);
    }
    let (s, e) = app.call(
        "POST",
        "/v1/webhooks",
        Some(json!({"url": "http://x", "bogus": 1})),
    );
    assert_eq!(s, 400, "{e}");
    let (_, list) = app.call("GET", "/v1/webhooks", None);
    assert_eq!(list, json!([]));
    let (_, audit) = app.call("GET", "/v1/audit?limit=100", None);
    assert!(!audit.to_string().contains("webhook."), "{audit}");
    let (s, e) = app.call("GET", "/v1/outbox?state=lost", None);
    assert_eq!(s, 422, "{e}");
    let (s, e) = app.call("GET", "/v1/outbox?kind=tenant.exploded", None);
    assert_eq!(s, 422, "{e}");
    let (s, _) = app.call("GET", "/v1/webhooks/nope", None);
    assert_eq!(s, 404);
}

// ------------------------------------------------- crash safety, atomicity

/// How many rows the outbox of a SQLite control DB holds.
fn outbox_rows(data_dir: &Path) -> i64 {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = diesel::SqliteConnection::establish(&data_dir.join("control.db").to_string_lossy())
        .unwrap();
    diesel::sql_query("SELECT count(*) AS n FROM outbox")
        .get_result::<N>(&mut c)
        .unwrap()
        .n
}

#[test]
fn an_event_is_written_iff_its_change_commits() {
    let app = app(None, None);
    let before = outbox_rows(&app.data_dir);
    assert_eq!(before, 0);
    // Refused changes: no event.
    let (s, _) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "Bad Slug!", "name": "x"})),
    );
    assert_eq!(s, 422);
    let id = create_tenant(&app, "atomic", "a@shop.test");
    assert_eq!(outbox_rows(&app.data_dir), 1, "tenant.created");
    let (s, _) = app.call(
        "PATCH",
        &format!("/v1/tenants/{id}"),
        Some(json!({"plan": "platinum"})),
    );
    assert_eq!(s, 422);
    let (s, _) = app.call(
        "PATCH",
        &format!("/v1/tenants/{id}"),
        Some(json!({"contact_email": "nope"})),
    );
    assert_eq!(s, 422);
    let (s, _) = app.call("DELETE", "/v1/tenants/nobody", None);
    assert_eq!(s, 404);
    assert_eq!(
        outbox_rows(&app.data_dir),
        1,
        "refused changes wrote no event"
    );
    change_plan(&app, &id, "pro");
    let (s, _) = app.call("DELETE", &format!("/v1/tenants/{id}"), None);
    assert_eq!(s, 204);
    assert_eq!(
        outbox_rows(&app.data_dir),
        3,
        "plan.changed, tenant.deleted"
    );

    // A transaction that records an event and then fails leaves nothing.
    let db = tenantplane_control_db::ControlDb::open(&format!(
        "sqlite://{}",
        app.data_dir.join("control.db").display()
    ))
    .unwrap();
    let mut conn = db.conn().unwrap();
    let r: tenantplane_control_db::Result<()> =
        tenantplane_control_db::write_tx(&mut conn, None, |c| {
            tenantplane_control_db::outbox::record(
                c,
                tenantplane_control_db::outbox::EventKind::TenantSuspended,
                Some(&id),
                &json!({"tenant_id": id}),
            )?;
            Err(tenantplane_control_db::Error::Conflict(
                "changed my mind".into(),
            ))
        });
    assert!(r.is_err());
    assert_eq!(
        outbox_rows(&app.data_dir),
        3,
        "the rolled-back event is gone"
    );
}

#[test]
fn sigkill_with_deliveries_in_flight_loses_none_and_delivers_none_twice() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut env = notify_env(None);
    // The receiver sleeps 0.5 s per request: deliveries are in flight when
    // the worker dies. A dead worker's leases expire after 2 s.
    env.push(("TENANTPLANE_WEBHOOK_TIMEOUT_S".into(), "5".into()));
    env.push(("TENANTPLANE_WORKER_LEASE_S".into(), "2".into()));
    let opts = |command: &str| AppOptions {
        command: vec![command.into()],
        data_dir: Some(dir.path().to_path_buf()),
        env: env.clone(),
        ..AppOptions::default()
    };
    let api = App::start_with(opts("api"));
    let mut worker = App::start_with(opts("worker"));
    endpoint(&api, &rx, "/sleepy/0.5/kill", &["plan.changed"]);
    let id = create_tenant(&api, "crashy", "c@shop.test");
    let plans = ["pro", "standard"];
    let events = 12;
    for n in 0..events {
        change_plan(&api, &id, plans[n % 2]);
    }
    wait_for("some deliveries under way", WAIT, || {
        (rx.log("kill")["requests"].as_array().unwrap().len() >= 3).then_some(())
    });
    worker.child.kill().unwrap(); // SIGKILL
    worker.child.wait().unwrap();
    let seen_at_kill = rx.log("kill")["requests"].as_array().unwrap().len();
    assert!(
        seen_at_kill < events,
        "the worker died with work left ({seen_at_kill})"
    );
    drop(worker);
    let _restarted = App::start_with(opts("worker"));
    let delivered = wait_for("every delivery", Duration::from_secs(120), || {
        let d = deliveries(&api, "channel=webhook&state=delivered&limit=1000");
        (d.len() == events).then_some(d)
    });
    let mut event_ids: Vec<String> = delivered
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_string())
        .collect();
    event_ids.sort();
    event_ids.dedup();
    assert_eq!(event_ids.len(), events, "one delivery per event");
    let log = rx.log("kill");
    let got: Vec<String> = log["delivered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got, event_ids,
        "every event reached the receiver, none lost"
    );
    // Copies sent again after the crash carry the same id and the same body,
    // so the receiver kept each event once.
    let reqs = log["requests"].as_array().unwrap();
    assert!(reqs.len() >= events);
    for r in reqs {
        assert_eq!(r["verified_by"], json!([0]), "{r}");
        let same: Vec<&Value> = reqs
            .iter()
            .filter(|o| o["webhook_id"] == r["webhook_id"])
            .collect();
        assert!(same.iter().all(|o| o["body"] == r["body"]));
    }
    // No delivery is stuck or dead.
    assert!(deliveries(&api, "state=dead").is_empty());
}

#[test]
fn cli_webhooks_and_outbox() {
    let rx = Receiver::start();
    let app = app(None, None);
    let cli = |args: &[&str]| {
        let out = Command::new(crate::common::bin())
            .args(args)
            .env("TENANTPLANE_URL", &app.url)
            .env("TENANTPLANE_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let url = rx.url("/ok/cli");
    let (ok, out, err) = cli(&["webhooks", "create", &url, "--event", "tenant.created"]);
    assert!(ok, "{err}");
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret (shown once): "))
        .expect("the secret is printed")
        .to_string();
    rx.secrets("cli", &[&secret]);
    let (ok, out, _) = cli(&["webhooks", "list", "-o", "json"]);
    assert!(ok);
    let list: Value = serde_json::from_str(&out).unwrap();
    let ep = list[0]["id"].as_str().unwrap().to_string();
    let (ok, _, err) = cli(&["webhooks", "update", &ep, "--event", "bogus.kind"]);
    assert!(!ok && err.contains("422"), "{err}");
    create_tenant(&app, "clied", "cli@shop.test");
    wait_delivery(&app, "channel=webhook", &["delivered"]);
    let (ok, out, _) = cli(&["outbox", "list", "--channel", "webhook"]);
    assert!(ok);
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.contains("tenant.created") && l.contains("delivered")),
        "{out}"
    );
    let (ok, _, err) = cli(&["outbox", "list", "--state", "lost"]);
    assert!(!ok && err.contains("422"), "{err}");
    let (ok, out, _) = cli(&["webhooks", "replay", &ep, "--since", "2000-01-01T00:00:00Z"]);
    assert!(ok);
    assert_eq!(out.trim(), "queued 1");
    let (ok, _, _) = cli(&["webhooks", "delete", &ep]);
    assert!(ok);
    let (ok, out, _) = cli(&["webhooks", "list", "-o", "json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
}

#[test]
fn domain_events_reach_a_webhook_subscribed_to_every_kind() {
    let rx = Receiver::start();
    let app = app(None, None);
    endpoint(&app, &rx, "/ok/all", &[]);
    let (s, t) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "evented", "name": "Evented", "plan": "free",
            "contact_email": "ev@shop.test", "schema": "phase:0"})),
    );
    assert_eq!(s, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    // A rollout that migrates it: rollout.succeeded.
    let (s, r) = app.call(
        "POST",
        "/v1/rollouts",
        Some(json!({"target": "head", "selector": {"tenants": [id]}})),
    );
    assert_eq!(s, 201, "{r}");
    let rollout = r["id"].as_str().unwrap().to_string();
    wait_for("the rollout", WAIT, || {
        let (_, r) = app.call("GET", &format!("/v1/rollouts/{rollout}"), None);
        (r["state"] == "succeeded").then_some(())
    });
    // A self-serve trial: plan.changed; the trial sweep's notice: trial.ending, once.
    let (s, k) = app.call(
        "POST",
        &format!("/v1/tenants/{id}/keys"),
        Some(json!({"name": "till"})),
    );
    assert_eq!(s, 201, "{k}");
    let key = k["key"].as_str().unwrap();
    let (s, c) = crate::common::call_as(
        &app.url,
        Some(key),
        "POST",
        "/v1/tenant/plan",
        Some(json!({"plan": "pro", "trial_days": 2})),
    );
    assert_eq!(s, 200, "{c}");
    let db = tenantplane_control_db::ControlDb::open(&format!(
        "sqlite://{}",
        app.data_dir.join("control.db").display()
    ))
    .unwrap();
    let notice = tenantplane_flags::plans::TRIAL_ENDING_NOTICE;
    // The serving worker runs the same sweep every 30 s and may have sent
    // the notice first; the event list below proves it went out once.
    let sent = tenantplane_flags::plans::notify_trials_ending(&db, notice).unwrap();
    assert!(sent <= 1, "{sent}");
    assert_eq!(
        tenantplane_flags::plans::notify_trials_ending(&db, notice).unwrap(),
        0,
        "once per trial"
    );
    // An export: export.ready.
    let (s, e) = app.call(
        "POST",
        &format!("/v1/tenants/{id}/exports"),
        Some(json!({"format": "json"})),
    );
    assert_eq!(s, 202, "{e}");
    let export = e["id"].as_str().unwrap().to_string();
    wait_for("the export", WAIT, || {
        let (_, e) = app.call("GET", &format!("/v1/tenants/{id}/exports/{export}"), None);
        (e["state"] == "ready").then_some(())
    });
    let (s, _) = app.call(
        "PATCH",
        &format!("/v1/tenants/{id}"),
        Some(json!({"status": "suspended"})),
    );
    assert_eq!(s, 200);
    let (s, _) = app.call("DELETE", &format!("/v1/tenants/{id}"), None);
    assert_eq!(s, 204);
    let kinds = [
        "tenant.created",
        "rollout.succeeded",
        "plan.changed",
        "trial.ending",
        "export.ready",
        "tenant.suspended",
        "tenant.deleted",
    ];
    let log = wait_for("every event at the receiver", WAIT, || {
        let l = rx.log("all");
        (l["delivered"].as_array().unwrap().len() == kinds.len()).then_some(l)
    });
    let reqs = log["requests"].as_array().unwrap();
    let got: Vec<&str> = reqs
        .iter()
        .map(|r| r["body"]["type"].as_str().unwrap())
        .collect();
    let mut sorted_got = got.clone();
    sorted_got.sort();
    let mut want = kinds.to_vec();
    want.sort();
    assert_eq!(sorted_got, want, "{got:?}");
    let data = |kind: &str| {
        reqs.iter()
            .find(|r| r["body"]["type"] == kind)
            .map(|r| r["body"]["data"].clone())
            .unwrap()
    };
    assert_eq!(data("rollout.succeeded")["rollout_id"], rollout.as_str());
    assert_eq!(data("rollout.succeeded")["succeeded"], 1);
    assert_eq!(data("plan.changed")["from_plan"], "free");
    assert_eq!(data("plan.changed")["to_plan"], "pro");
    assert!(data("plan.changed")["trial_ends_at"].is_string());
    assert_eq!(data("trial.ending")["plan"], "pro");
    assert_eq!(data("export.ready")["export_id"], export.as_str());
    assert_eq!(data("tenant.suspended")["status"], "suspended");
    assert_eq!(data("tenant.deleted")["slug"], "evented");
    // The kinds that concern the tenant were mailed (here: recorded skipped,
    // no SMTP), to its contact.
    let mails = deliveries(&app, "channel=email");
    let mut mailed: Vec<&str> = mails.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    mailed.sort();
    assert_eq!(
        mailed,
        [
            "export.ready",
            "plan.changed",
            "tenant.suspended",
            "trial.ending"
        ]
    );
    assert!(mails
        .iter()
        .all(|d| d["state"] == "skipped" && d["target"] == "ev@shop.test"));
}

#[test]
fn an_endpoint_failing_for_days_warns_the_operators_then_is_disabled() {
    if !have_aiosmtpd() {
        return;
    }
    let port = free_port();
    let smtp = SmtpSink::start(port);
    let rx = Receiver::start();
    // "Days" scaled down: warned after 3 days × 0.00002 ≈ 5 s of failures,
    // disabled after 5 days × 0.00002 ≈ 9 s.
    let mut env: Vec<(String, String)> = notify_env(Some(port))
        .into_iter()
        .filter(|(k, _)| k != "TENANTPLANE_NOTIFY_RETRY_SCALE")
        .collect();
    env.push(("TENANTPLANE_NOTIFY_RETRY_SCALE".into(), "0.00002".into()));
    let app = App::start_with(AppOptions {
        env,
        ..AppOptions::default()
    });
    let (ep, _) = endpoint(&app, &rx, "/fail/1000000/down", &["plan.changed"]);
    let id = create_tenant(&app, "downstream", "d@shop.test");
    let mut n = 0;
    let disabled = wait_for("the endpoint to be disabled", WAIT, || {
        change_plan(&app, &id, ["pro", "standard"][n % 2]);
        n += 1;
        std::thread::sleep(Duration::from_millis(500));
        let (_, w) = app.call("GET", &format!("/v1/webhooks/{ep}"), None);
        (w["enabled"] == false).then_some(w)
    });
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("every delivery failed since"),
        "{disabled}"
    );
    let warning = wait_for("the operators' warning", WAIT, || {
        let m = smtp.mails_to("ops@tp.test");
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(warning.len(), 1, "warned once: {warning:?}");
    assert_eq!(
        warning[0]["subject"],
        format!(
            "Webhook endpoint {} is failing",
            rx.url("/fail/1000000/down")
        )
    );
    assert!(warning[0]["text"].as_str().unwrap().contains(&ep));
    // The receiver never accepted anything and nothing more goes to it.
    assert!(rx.log("down")["delivered"].as_array().unwrap().is_empty());
    let (_, events) = app.call("GET", "/v1/outbox?kind=webhook.endpoint_failing", None);
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one warning, by e-mail only: {items:?}");
    assert_eq!(items[0]["channel"], "email");
}

#[test]
fn private_addresses_are_refused_at_delivery_too() {
    // The API allows loopback URLs, the worker does not (as if a public
    // name had been re-pointed at a private address after registration).
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let opts = |command: &str, allow: &str| {
        let mut env: Vec<(String, String)> = notify_env(None)
            .into_iter()
            .filter(|(k, _)| k != "TENANTPLANE_WEBHOOK_ALLOW_PRIVATE")
            .collect();
        env.push(("TENANTPLANE_WEBHOOK_ALLOW_PRIVATE".into(), allow.into()));
        AppOptions {
            command: vec![command.into()],
            data_dir: Some(dir.path().to_path_buf()),
            env,
            ..AppOptions::default()
        }
    };
    let api = App::start_with(opts("api", "true"));
    let _worker = App::start_with(opts("worker", "false"));
    endpoint(&api, &rx, "/ok/private", &["tenant.created"]);
    create_tenant(&api, "private", "p@shop.test");
    let d = wait_delivery(&api, "channel=webhook", &["dead"]);
    assert_eq!(d["attempts"], 1);
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("private or loopback"),
        "{d}"
    );
    assert!(rx.log("private")["requests"].as_array().unwrap().is_empty());
}

#[test]
fn redirects_fail_and_retry_after_is_honoured() {
    let rx = Receiver::start();
    let app = app(None, None);
    // 302: an attempt that failed, not a delivery (redirects are not followed).
    let (moved, _) = endpoint(&app, &rx, "/moved/moved", &["tenant.created"]);
    // 503 with Retry-After: 2 — the next attempt waits for it, not for the
    // (scaled) schedule's 5 ms.
    let (busy, _) = endpoint(&app, &rx, "/busy/2/busy", &["tenant.created"]);
    create_tenant(&app, "redirected", "x@shop.test");
    let all = |ep: &str| -> Vec<Value> {
        deliveries(&app, "channel=webhook")
            .into_iter()
            .filter(|d| d["target"] == ep)
            .collect()
    };
    let d = wait_for("the 302 to be retried", WAIT, || {
        let d = all(&moved);
        (d.len() == 1 && d[0]["attempts"].as_i64().unwrap_or(0) >= 2).then(|| d[0].clone())
    });
    let full = delivery(&app, &d["id"]);
    assert_eq!(full["attempt_log"][0]["status"], 302);
    assert_eq!(full["attempt_log"][0]["outcome"], "retry");
    assert_ne!(full["state"], "delivered");
    assert!(
        rx.log("moved")["delivered"].as_array().unwrap().is_empty(),
        "the redirect was not followed"
    );
    let (s, _) = app.call("DELETE", &format!("/v1/webhooks/{moved}"), None);
    assert_eq!(s, 204);

    let d = wait_for("the 503 to be delivered after Retry-After", WAIT, || {
        let d = all(&busy);
        (d.len() == 1 && d[0]["state"] == "delivered").then(|| d[0].clone())
    });
    let full = delivery(&app, &d["id"]);
    let log = full["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["status"], 503);
    let at = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(log[i]["started_at"].as_str().unwrap()).unwrap()
    };
    assert!(
        at(1) - at(0) >= chrono::Duration::seconds(2),
        "the retry came before Retry-After: {log:?}"
    );
    // The deleted endpoint's delivery ends skipped, not retried for days.
    wait_for(
        "the deleted endpoint's delivery to be skipped",
        WAIT,
        || {
            let d = all(&moved);
            (d[0]["state"] == "skipped").then_some(())
        },
    );
}

#[test]
fn pruning_keeps_dead_deliveries_and_recent_history() {
    let rx = Receiver::start();
    let app = app(None, None);
    endpoint(&app, &rx, "/gone/pruned", &["plan.changed"]);
    let id = create_tenant(&app, "pruned", "p@shop.test");
    change_plan(&app, &id, "pro");
    wait_delivery(&app, "channel=webhook", &["dead"]);
    wait_delivery(&app, "channel=email", &["skipped"]);
    assert_eq!(outbox_rows(&app.data_dir), 2);
    let db = tenantplane_control_db::ControlDb::open(&format!(
        "sqlite://{}",
        app.data_dir.join("control.db").display()
    ))
    .unwrap();
    let now = chrono::Utc::now().naive_utc();
    let none = tenantplane_notify::deliveries::prune(&db, now - chrono::Duration::days(1)).unwrap();
    assert_eq!(none, Default::default(), "nothing old enough");
    let pruned =
        tenantplane_notify::deliveries::prune(&db, now + chrono::Duration::minutes(1)).unwrap();
    assert_eq!(
        (pruned.deliveries, pruned.events),
        (1, 1),
        "the skipped mail, and tenant.created (no deliveries): {pruned:?}"
    );
    let left = deliveries(&app, "");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["state"], "dead", "dead letters stay: {left:?}");
    assert_eq!(
        outbox_rows(&app.data_dir),
        1,
        "the dead delivery's event stays"
    );
    assert_eq!(
        delivery(&app, &left[0]["id"])["attempt_log"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
