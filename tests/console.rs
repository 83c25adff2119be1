//! The operator console (`/console`): sign-in, sessions and CSRF over plain
//! HTTP, and the whole operator flow in a real headless Chromium driven over
//! WebDriver (fantoccini + Debian's chromium-driver).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::common::{wait_for, App, AppOptions, TOKEN};

const LONG: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------- HTTP ---

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).build()
}

/// A response whatever its status: (status, headers we need, body).
struct Resp {
    status: u16,
    location: Option<String>,
    set_cookie: Vec<String>,
    csp: Option<String>,
    body: String,
}

fn send(req: ureq::Request, form: Option<&[(&str, &str)]>) -> Resp {
    let result = match form {
        Some(f) => req.send_form(f),
        None => req.call(),
    };
    let r = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    Resp {
        status: r.status(),
        location: r.header("Location").map(str::to_string),
        set_cookie: r
            .all("Set-Cookie")
            .into_iter()
            .map(str::to_string)
            .collect(),
        csp: r.header("Content-Security-Policy").map(str::to_string),
        body: r.into_string().unwrap_or_default(),
    }
}

/// Signs in over HTTP; returns the `tp_console=…` cookie pair and the
/// session's CSRF token (read from a page, as a browser would).
fn sign_in(app: &App) -> (String, String) {
    let r = send(
        agent()
            .post(&format!("{}/console/login", app.url))
            .set("Origin", &app.url),
        Some(&[("token", TOKEN)]),
    );
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some("/console")),
        "{}",
        r.body
    );
    let set = r
        .set_cookie
        .iter()
        .find(|c| c.starts_with("tp_console="))
        .expect("session cookie")
        .clone();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console", "Expires="] {
        assert!(set.contains(attr), "cookie lacks {attr}: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag: {set}");
    let cookie = set.split(';').next().expect("pair").to_string();
    let page = send(
        agent()
            .get(&format!("{}/console", app.url))
            .set("Cookie", &cookie),
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    (cookie, csrf_of(&page.body))
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with the CSRF token");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').expect("end quote")].to_string()
}

fn new_tenant(app: &App, slug: &str) -> String {
    let (s, t) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": slug, "name": slug, "schema": "head"})),
    );
    assert_eq!(s, 201, "{t}");
    t["id"].as_str().expect("id").to_string()
}

fn feature(app: &App, tenant: &str, name: &str) -> Value {
    let (s, f) = app.call("GET", &format!("/v1/tenants/{tenant}/features"), None);
    assert_eq!(s, 200, "{f}");
    f["features"]
        .as_array()
        .expect("features")
        .iter()
        .find(|x| x["feature"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no feature {name}: {f}"))
}

#[test]
fn console_refuses_cross_site_posts_and_posts_without_the_csrf_token() {
    let app = App::start();
    let tenant = new_tenant(&app, "csrf-shop");
    let before = feature(&app, &tenant, "branding");
    let (cookie, csrf) = sign_in(&app);
    let url = format!("{}/console/tenants/{tenant}/overrides", app.url);
    let flip = if before["enabled"] == true {
        "off"
    } else {
        "on"
    };
    let form = [
        ("csrf", csrf.as_str()),
        ("feature", "branding"),
        ("enabled", flip),
        ("reason", "test"),
    ];

    // A foreign page posting the same form with the victim's cookie.
    let evil = send(
        agent()
            .post(&url)
            .set("Cookie", &cookie)
            .set("Origin", "http://evil.example"),
        Some(&form),
    );
    assert_eq!(evil.status, 403, "{}", evil.body);
    assert_eq!(
        evil.csp
            .as_deref()
            .map(|c| c.contains("default-src 'self'")),
        Some(true)
    );
    let cross = send(
        agent()
            .post(&url)
            .set("Cookie", &cookie)
            .set("Sec-Fetch-Site", "cross-site"),
        Some(&form),
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    // Same origin but without the session's token (or with another one).
    let no_token = send(
        agent()
            .post(&url)
            .set("Cookie", &cookie)
            .set("Origin", &app.url),
        Some(&form[1..]),
    );
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    let wrong = [("csrf", "not-the-token"), form[1], form[2], form[3]];
    let wrong_token = send(
        agent()
            .post(&url)
            .set("Cookie", &cookie)
            .set("Origin", &app.url),
        Some(&wrong),
    );
    assert_eq!(wrong_token.status, 403, "{}", wrong_token.body);
    assert_eq!(
        feature(&app, &tenant, "branding"),
        before,
        "nothing changed"
    );

    // The real form from the real page goes through.
    let ok = send(
        agent()
            .post(&url)
            .set("Cookie", &cookie)
            .set("Origin", &app.url)
            .set("Sec-Fetch-Site", "same-origin"),
        Some(&form),
    );
    assert_eq!(ok.status, 303, "{}", ok.body);
    let after = feature(&app, &tenant, "branding");
    assert_eq!(after["enabled"], flip == "on", "{after}");
    assert!(
        after["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("OVERRIDE")),
        "{after}"
    );
    // Audited with the console session as actor.
    let (s, audit) = app.call("GET", "/v1/audit?limit=20", None);
    assert_eq!(s, 200, "{audit}");
    let text = audit.to_string();
    assert!(
        text.contains("console:"),
        "console actor in the audit log: {text}"
    );
}

#[test]
fn console_needs_a_session_and_refuses_tenant_keys() {
    let app = App::start();
    // No session: every page sends the browser to sign-in.
    for path in ["/console", "/console/rollouts", "/console/tenants/x"] {
        let r = send(agent().get(&format!("{}{path}", app.url)), None);
        assert_eq!(
            (r.status, r.location.as_deref()),
            (303, Some("/console/login")),
            "{path}"
        );
    }
    let bogus = send(
        agent()
            .get(&format!("{}/console", app.url))
            .set("Cookie", "tp_console=tp_cs_made-up"),
        None,
    );
    assert_eq!(bogus.location.as_deref(), Some("/console/login"));
    // The sign-in page itself, and its policy.
    let login = send(agent().get(&format!("{}/console/login", app.url)), None);
    assert_eq!(login.status, 200);
    assert!(login.body.contains(r#"name="token""#), "{}", login.body);
    let csp = login.csp.expect("Content-Security-Policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(!login.body.contains("<script>"), "no inline script");

    // A tenant key is no operator token.
    let tenant = new_tenant(&app, "key-shop");
    let (s, key) = app.call(
        "POST",
        &format!("/v1/tenants/{tenant}/keys"),
        Some(json!({})),
    );
    assert_eq!(s, 201, "{key}");
    let key = key["key"].as_str().expect("key");
    let refused = send(
        agent()
            .post(&format!("{}/console/login", app.url))
            .set("Origin", &app.url),
        Some(&[("token", key)]),
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused
        .set_cookie
        .iter()
        .all(|c| !c.starts_with("tp_console=") || c.starts_with("tp_console=;")));
    let wrong = send(
        agent()
            .post(&format!("{}/console/login", app.url))
            .set("Origin", &app.url),
        Some(&[("token", "nope")]),
    );
    assert_eq!(wrong.status, 401);
    // Signing in from a foreign page is refused too (login CSRF).
    let foreign = send(
        agent()
            .post(&format!("{}/console/login", app.url))
            .set("Origin", "http://evil.example"),
        Some(&[("token", TOKEN)]),
    );
    assert_eq!(foreign.status, 403);

    // Sign out: the cookie is useless afterwards.
    let (cookie, csrf) = sign_in(&app);
    // A page with everything it loads weighs under 150 KB.
    let page = send(
        agent()
            .get(&format!("{}/console/tenants", app.url))
            .set("Cookie", &cookie),
        None,
    );
    let mut weight = page.body.len();
    for asset in [
        "htmx-2.0.11.min.js",
        "htmx-ext-sse-2.2.4.min.js",
        "console-2.css",
    ] {
        assert!(page.body.contains(asset), "{asset} linked");
        let r = send(
            agent().get(&format!("{}/console/assets/{asset}", app.url)),
            None,
        );
        assert_eq!(r.status, 200, "{asset}");
        weight += r.body.len();
    }
    assert!(weight < 150 * 1024, "{weight} bytes");
    let out = send(
        agent()
            .post(&format!("{}/console/logout", app.url))
            .set("Cookie", &cookie)
            .set("Origin", &app.url),
        Some(&[("csrf", csrf.as_str())]),
    );
    assert_eq!(
        (out.status, out.location.as_deref()),
        (303, Some("/console/login"))
    );
    let again = send(
        agent()
            .get(&format!("{}/console", app.url))
            .set("Cookie", &cookie),
        None,
    );
    assert_eq!(
        (again.status, again.location.as_deref()),
        (303, Some("/console/login"))
    );
    // The assets are served from the binary with long cache lifetimes.
    let r = agent()
        .get(&format!("{}/console/assets/htmx-2.0.11.min.js", app.url))
        .call()
        .expect("htmx");
    assert!(r
        .header("Cache-Control")
        .is_some_and(|c| c.contains("immutable")));
}

// ------------------------------------------------------------- browser ---

/// chromedriver and a session in headless Chromium.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

impl Browser {
    /// None (the test skips) when the browser is not installed, unless CI.
    fn start() -> Option<Browser> {
        let (Some(driver), Some(chromium)) = (on_path("chromedriver"), on_path("chromium")) else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("chromium and chromium-driver must be installed under CI (.ci/run installs them)");
            }
            eprintln!("skipping: chromium/chromedriver not installed (apt-get install chromium chromium-driver)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-gpu",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let client = wait_for("chromedriver to accept a session", LONG, || {
            rt.block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&webdriver),
            )
            .ok()
        });
        Some(Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
        })
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("client")
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).expect("goto");
    }

    fn url(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .expect("url")
            .to_string()
    }

    /// The text of the first element matching `css`, if there is one now.
    fn text(&self, css: &str) -> Option<String> {
        self.rt.block_on(async {
            let e = self.c().find(Locator::Css(css)).await.ok()?;
            e.text().await.ok()
        })
    }

    fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        wait_for(what, LONG, || self.text(css).filter(|t| ok(t)))
    }

    fn click(&self, css: &str) {
        wait_for(&format!("to click {css}"), LONG, || {
            self.rt
                .block_on(async {
                    let e = self.c().find(Locator::Css(css)).await?;
                    e.click().await
                })
                .ok()
        })
    }

    fn fill(&self, css: &str, value: &str) {
        self.rt
            .block_on(async {
                let e = self.c().find(Locator::Css(css)).await?;
                e.clear().await?;
                e.send_keys(value).await
            })
            .unwrap_or_else(|e| panic!("fill {css}: {e}"));
    }

    fn select(&self, css: &str, value: &str) {
        self.rt
            .block_on(async {
                let e = self.c().find(Locator::Css(css)).await?;
                e.select_by_value(value).await
            })
            .unwrap_or_else(|e| panic!("select {css}: {e}"));
    }

    fn exec(&self, script: &str) -> Value {
        self.rt
            .block_on(self.c().execute(script, vec![]))
            .expect("execute")
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.rt.block_on(self.c().screenshot()).expect("screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    fn cookie(&self, name: &str) -> String {
        self.rt
            .block_on(self.c().get_named_cookie(name))
            .expect("cookie")
            .value()
            .to_string()
    }

    /// Every resource the page loaded came from `origin`.
    fn assert_same_origin(&self, origin: &str) {
        let names = self.exec(
            "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href]);",
        );
        let names = names.as_array().expect("names");
        assert!(!names.is_empty());
        for n in names {
            let n = n.as_str().unwrap_or("");
            assert!(
                n.starts_with(origin),
                "a request left the app's origin: {n}"
            );
        }
    }
}

fn tenant_db(app: &App, id: &str) -> SqliteConnection {
    let path = app
        .data_dir
        .join("tenants")
        .join(format!("t_{}.db", id.replace('-', "")));
    SqliteConnection::establish(&path.to_string_lossy()).expect("open tenant db")
}

#[test]
fn operator_runs_a_rollout_from_the_console_in_chromium() {
    let Some(b) = Browser::start() else { return };
    let app = App::start_with(AppOptions {
        env: vec![("TENANTPLANE_WORKER_THREADS".into(), "1".into())],
        ..AppOptions::default()
    });
    const N: usize = 200;
    let mut ids = Vec::new();
    for i in 0..N {
        let (s, t) = app.call(
            "POST",
            "/v1/tenants",
            Some(json!({"slug": format!("shop-{i:03}"), "name": format!("Shop {i}"), "schema": "phase:0",
                "labels": {"region": if i % 2 == 0 { "eu" } else { "us" }}})),
        );
        assert_eq!(s, 201, "{t}");
        ids.push(t["id"].as_str().expect("id").to_string());
    }
    // One tenant has drifted: migration 020100's table already exists.
    let bad = ids[150].clone();
    tenant_db(&app, &bad)
        .batch_execute("CREATE TABLE expense_categories (id INTEGER PRIMARY KEY)")
        .expect("drift");

    // Sign in.
    b.goto(&format!("{}/console", app.url));
    wait_for("the sign-in page", LONG, || {
        b.url().ends_with("/console/login").then_some(())
    });
    b.fill("#token", TOKEN);
    b.click("#sign-in");
    let total = b.wait_text("#tenant-total", "the overview", |t| !t.is_empty());
    assert_eq!(total, N.to_string());
    let versions = b.text("#h-version + .bars").expect("version bars");
    assert!(versions.contains(&N.to_string()), "{versions}");
    b.assert_same_origin(&app.url);
    b.screenshot("overview.png");

    // New rollout: a canary wave of 5, then the rest; preview first.
    b.click("nav a[href='/console/rollouts']");
    b.click("#new-rollout");
    b.wait_text("h1", "the form", |t| t == "New rollout");
    b.fill("#waves", "canary:5");
    b.fill("#concurrency", "1");
    b.click("#preview");
    let to_migrate = b.wait_text("#to-migrate", "the dry run", |t| !t.is_empty());
    assert_eq!(to_migrate, N.to_string());
    assert!(b
        .text("#preview-result")
        .expect("preview")
        .contains("canary: 5 tenants"));
    let (_, none) = app.call("GET", "/v1/rollouts", None);
    assert_eq!(
        none.as_array().map(Vec::len),
        Some(0),
        "a preview starts nothing"
    );
    b.click("#start");
    wait_for("the rollout page", LONG, || b.text("#rollout-id"));
    let rollout = b.text("#rollout-id").expect("rollout id");

    // Pause from the page; it holds.
    b.click("#pause");
    b.wait_text("#rollout-state", "paused", |t| t == "paused");
    let (_, r) = app.call("GET", &format!("/v1/rollouts/{rollout}"), None);
    assert_eq!(r["state"], "paused", "{r}");

    // Resume; from here the page must update itself (no reload: the marker
    // set on this document survives).
    b.click("#resume");
    b.wait_text("#rollout-state", "running again", |t| t == "running");
    b.exec("window.__no_reload = 'still here'; return null;");
    // Every value the page shows, recorded by the page itself as the SSE
    // fragments land: WebDriver reads from a loaded CI machine can be
    // seconds apart and miss the values in between.
    b.exec(
        "window.__dones = [];
         new MutationObserver(() => {
             const d = document.getElementById('count-done');
             if (d) { window.__dones.push(d.textContent); }
         }).observe(document.body, {childList: true, subtree: true, characterData: true});
         return null;",
    );
    let mut seen = BTreeSet::new();
    let mut shot = false;
    let finished = wait_for("the rollout to finish on the page", LONG, || {
        let done = b.text("#count-done")?;
        seen.insert(done.clone());
        if !shot && !done.starts_with(&format!("{N}/")) && seen.len() > 1 {
            b.screenshot("rollout-running.png");
            shot = true;
        }
        let state = b.text("#rollout-state")?;
        ["succeeded", "failed", "halted"]
            .contains(&state.as_str())
            .then_some(state)
    });
    assert_eq!(
        b.exec("return window.__no_reload || null;"),
        json!("still here"),
        "the page was not reloaded"
    );
    let shown = b.exec("return window.__dones;");
    seen.extend(
        shown
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string)),
    );
    let between: Vec<&String> = seen
        .iter()
        .filter(|d| !d.starts_with("0/") && **d != format!("{N}/{N}"))
        .collect();
    assert!(
        !between.is_empty() && seen.contains(&format!("{N}/{N}")),
        "the counters changed while it ran and ended at {N}/{N}: {seen:?}"
    );
    assert_eq!(finished, "failed", "one drifted tenant fails");
    if !shot {
        b.screenshot("rollout-running.png");
    }
    assert_eq!(b.text("#count-failed").as_deref(), Some("1"));
    let waves = b.text("#waves").expect("wave counts");
    assert!(
        waves.contains("canary 5 5 0 0 0 0") && waves.contains("rest 195"),
        "{waves}"
    );

    // The failure shows under its error group: the rollout refused the
    // drifted tenant, naming the table it has and should not.
    b.goto(&format!("{}/console/rollouts/{rollout}", app.url));
    let groups = b.wait_text("#failure-groups", "the error groups", |t| !t.is_empty());
    assert!(groups.contains("schema drift"), "{groups}");
    assert!(
        groups.contains("table expense_categories: added"),
        "{groups}"
    );
    b.assert_same_origin(&app.url);
    // Fix the drift; retry the group.
    tenant_db(&app, &bad)
        .batch_execute("DROP TABLE expense_categories")
        .expect("fix");
    b.click(".retry-group");
    b.wait_text("#rollout-state", "the retried tenant to succeed", |t| {
        t == "succeeded"
    });
    let (_, r) = app.call("GET", &format!("/v1/rollouts/{rollout}"), None);
    assert_eq!(
        (r["state"].as_str(), r["counts"]["succeeded"].as_u64()),
        (Some("succeeded"), Some(N as u64)),
        "{r}"
    );

    // A feature override set on the tenant page is what the API evaluates.
    let tenant = &ids[7];
    let before = feature(&app, tenant, "credit_reminders");
    let turn = if before["enabled"] == true {
        "off"
    } else {
        "on"
    };
    b.goto(&format!("{}/console/tenants/{tenant}", app.url));
    b.wait_text("#phase", "the tenant page", |t| t == "7");
    b.select("#o-feature", "credit_reminders");
    b.select("#o-enabled", turn);
    b.fill("#o-reason", "browser test");
    b.click("#set-override");
    let row = b.wait_text("#feature-credit_reminders", "the override", |t| {
        t.contains("OVERRIDE")
    });
    let after = feature(&app, tenant, "credit_reminders");
    assert_eq!(after["enabled"], turn == "on", "{after}");
    assert_eq!(
        after["reason"],
        if turn == "on" {
            "OVERRIDE_ON"
        } else {
            "OVERRIDE_OFF"
        },
        "{after} / page: {row}"
    );

    let trail = b.text("#audit").expect("audit trail");
    assert!(
        trail.contains("console:"),
        "the session is the actor: {trail}"
    );

    // A phone-sized screen still shows the overview (screenshot for a look).
    b.goto(&format!("{}/console", app.url));
    b.wait_text("#tenant-total", "the overview", |t| !t.is_empty());
    let _ = b.rt.block_on(b.c().set_window_size(390, 844));
    b.screenshot("overview-390.png");
    // Every page fits a phone's width: wide tables scroll inside their own
    // box, the page itself never sideways; nothing is loaded from elsewhere.
    for (path, name) in [
        ("/console".to_string(), "overview"),
        (format!("/console/tenants/{tenant}"), "tenant"),
        ("/console/plans".to_string(), "plans"),
        ("/console/servers".to_string(), "servers"),
        ("/console/schedules".to_string(), "schedules"),
        ("/console/outbox".to_string(), "outbox"),
        ("/console/audit".to_string(), "audit"),
    ] {
        b.goto(&format!("{}{path}", app.url));
        b.wait_text("h1", "the page", |t| !t.is_empty());
        let overflow = b.exec(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        );
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 0),
            "{path} scrolls sideways at 390 px by {overflow}"
        );
        b.assert_same_origin(&app.url);
        b.screenshot(&format!("{name}-390.png"));
    }
    let _ = b.rt.block_on(b.c().set_window_size(1280, 800));

    // Sign out: the old cookie only leads to the sign-in page.
    let cookie = b.cookie("tp_console");
    b.click("#sign-out");
    wait_for("the sign-in page", LONG, || {
        b.url().ends_with("/console/login").then_some(())
    });
    let r = send(
        agent()
            .get(&format!("{}/console", app.url))
            .set("Cookie", &format!("tp_console={cookie}")),
        None,
    );
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some("/console/login"))
    );
}

#[test]
fn a_failure_group_is_shown_and_retried_from_the_console_without_javascript() {
    let app = App::start();
    let mut ids = Vec::new();
    for i in 0..4 {
        let (s, t) = app.call(
            "POST",
            "/v1/tenants",
            Some(json!({"slug": format!("grp-{i}"), "name": "Shop", "schema": "phase:0"})),
        );
        assert_eq!(s, 201, "{t}");
        ids.push(t["id"].as_str().expect("id").to_string());
    }
    // Two tenants drift the same way: one group of two, whatever their ids.
    for bad in &ids[1..3] {
        tenant_db(&app, bad)
            .batch_execute("CREATE TABLE expense_categories (id INTEGER PRIMARY KEY)")
            .expect("drift");
    }
    let (s, r) = app.call(
        "POST",
        "/v1/rollouts",
        Some(json!({"target": "head", "selector": {"all": true}, "failure_budget": {"max_failed_percent": 100}, "backup": true, "allow_drift": true})),
    );
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().expect("id").to_string();
    let state = |app: &App| {
        let (_, r) = app.call("GET", &format!("/v1/rollouts/{id}"), None);
        r
    };
    let done = wait_for("the rollout to finish", LONG, || {
        let r = state(&app);
        ["succeeded", "failed", "halted"]
            .contains(&r["state"].as_str().unwrap_or(""))
            .then_some(r)
    });
    assert_eq!(done["counts"]["failed"], 2, "{done}");

    let (cookie, csrf) = sign_in(&app);
    let page = send(
        agent()
            .get(&format!("{}/console/rollouts/{id}", app.url))
            .set("Cookie", &cookie),
        None,
    );
    assert_eq!(page.status, 200);
    let groups = &page.body[page
        .body
        .find(r#"id="failure-groups""#)
        .expect("groups table")..];
    assert_eq!(
        groups.matches("retry-group").count(),
        1,
        "one group: {groups}"
    );
    assert!(
        groups.contains("20261125020100") && groups.contains("Retry these 2"),
        "{groups}"
    );
    let field = |name: &str| {
        let at = groups
            .find(&format!(r#"name="{name}" value=""#))
            .expect("group field");
        let rest = &groups[at + name.len() + 15..];
        unescape(&rest[..rest.find('"').expect("quote")])
    };
    let (version, message) = (field("error_version"), field("message"));
    // The tasks table filters by state, wave and error text.
    let tasks = |query: &str| {
        let page = send(
            agent()
                .get(&format!("{}/console/rollouts/{id}?{query}", app.url))
                .set("Cookie", &cookie),
            None,
        );
        assert_eq!(page.status, 200, "{query}: {}", page.body);
        let at = page.body.find(r#"id="tasks""#).expect("tasks table");
        let table = &page.body[at..];
        let table = &table[..table.find("</table>").expect("table end")];
        (0..4)
            .filter(|i| table.contains(&format!(">grp-{i}<")))
            .collect::<Vec<_>>()
    };
    assert_eq!(tasks("error=expense_categories"), vec![1, 2]);
    // A failed task links to restoring its tenant's pre-migration backup.
    let failed = send(
        agent()
            .get(&format!("{}/console/rollouts/{id}?state=failed", app.url))
            .set("Cookie", &cookie),
        None,
    );
    let links = table(&failed.body, "tasks")
        .matches("restore-task-backup")
        .count();
    assert_eq!(links, 2, "{}", failed.body);
    // Each failed task shows its attempts, with the failing version.
    let attempts = table(&failed.body, "tasks");
    assert_eq!(
        attempts.matches("class=\"attempts\"").count(),
        2,
        "{attempts}"
    );
    assert!(attempts.contains("#1 failed in"), "{attempts}");
    assert_eq!(tasks("state=succeeded&wave=1"), vec![0, 3]);
    assert_eq!(tasks("state=failed&wave=2"), Vec::<i32>::new());
    assert_eq!(tasks(""), vec![0, 1, 2, 3]);
    for bad in &ids[1..3] {
        tenant_db(&app, bad)
            .batch_execute("DROP TABLE expense_categories")
            .expect("fix");
    }
    let url = format!("{}/console/rollouts/{id}/groups/retry", app.url);
    let form = [
        ("csrf", csrf.as_str()),
        ("error_version", version.as_str()),
        ("message", message.as_str()),
    ];
    let r = send(
        agent()
            .post(&url)
            .set("Cookie", &cookie)
            .set("Origin", &app.url),
        Some(&form),
    );
    assert_eq!(
        (r.status, r.location),
        (303, Some(format!("/console/rollouts/{id}"))),
        "{}",
        r.body
    );
    let done = wait_for("the retried group to succeed", LONG, || {
        let r = state(&app);
        (r["state"] == "succeeded").then_some(r)
    });
    assert_eq!(done["counts"]["succeeded"], 4, "{done}");
    let (_, audit) = app.call("GET", "/v1/audit?limit=50", None);
    assert!(audit.to_string().contains("rollout.retry_group"), "{audit}");
}

/// Decodes the entities an HTML attribute value may hold (named and numeric).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.find(';').expect("entity end");
        let entity = &rest[1..end];
        let c = match entity {
            "quot" => '"',
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "apos" => '\'',
            e if e.starts_with("#x") => {
                char::from_u32(u32::from_str_radix(&e[2..], 16).expect("hex")).expect("char")
            }
            e if e.starts_with('#') => char::from_u32(e[1..].parse().expect("dec")).expect("char"),
            e => panic!("unknown entity {e}"),
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn console_sessions_work_with_a_postgres_control_db() {
    let Some(pg) = crate::common::TestPg::new() else {
        return;
    };
    let app = App::start_with_control(Some(pg.url()));
    let (cookie, csrf) = sign_in(&app);
    let overview = send(
        agent()
            .get(&format!("{}/console", app.url))
            .set("Cookie", &cookie),
        None,
    );
    assert!(
        overview.body.contains(r#"id="tenant-total""#),
        "{}",
        overview.body
    );
    // The other pages read PostgreSQL too (the audit filter's LIKE … ESCAPE
    // included).
    let get = |path: &str| {
        send(
            agent()
                .get(&format!("{}{path}", app.url))
                .set("Cookie", &cookie),
            None,
        )
    };
    for path in [
        "/console/plans",
        "/console/servers",
        "/console/schedules",
        "/console/outbox",
    ] {
        let r = get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let audit = get("/console/audit?action=console.");
    assert!(audit.body.contains("console.login"), "{}", audit.body);
    let none = get("/console/audit?action=console_");
    assert!(!none.body.contains("console.login"), "{}", none.body);
    let out = send(
        agent()
            .post(&format!("{}/console/logout", app.url))
            .set("Cookie", &cookie)
            .set("Origin", &app.url),
        Some(&[("csrf", csrf.as_str())]),
    );
    assert_eq!(out.status, 303);
    let again = send(
        agent()
            .get(&format!("{}/console", app.url))
            .set("Cookie", &cookie),
        None,
    );
    assert_eq!(again.location.as_deref(), Some("/console/login"));
}

#[test]
fn the_tenant_page_changes_the_plan_and_issues_and_revokes_keys() {
    let app = App::start();
    let tenant = new_tenant(&app, "keys-shop");
    let (cookie, csrf) = sign_in(&app);
    let post = |path: &str, form: &[(&str, &str)]| {
        send(
            agent()
                .post(&format!("{}{path}", app.url))
                .set("Cookie", &cookie)
                .set("Origin", &app.url),
            Some(form),
        )
    };
    let page = |path: &str| {
        send(
            agent()
                .get(&format!("{}{path}", app.url))
                .set("Cookie", &cookie),
            None,
        )
    };
    // The plan.
    let r = post(
        &format!("/console/tenants/{tenant}/plan"),
        &[("csrf", &csrf), ("plan", "pro")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let (_, t) = app.call("GET", &format!("/v1/tenants/{tenant}"), None);
    assert_eq!(t["plan"], "pro", "{t}");
    // A key, shown once on the answer page, works, then is revoked.
    let r = post(
        &format!("/console/tenants/{tenant}/keys"),
        &[("csrf", &csrf), ("name", "till-1")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let at = r.body.find("tp_tk_").expect("the key on the page");
    let key = &r.body[at..];
    let key = key[..key.find('"').expect("end")].to_string();
    let me = |k: &str| crate::common::call_as(&app.url, Some(k), "GET", "/v1/tenant", None).0;
    assert_eq!(me(&key), 200);
    let show = page(&format!("/console/tenants/{tenant}"));
    assert!(show.body.contains("till-1"), "listed");
    assert!(!show.body.contains(&key), "never shown again");
    let at = show.body.find("/keys/").expect("revoke form");
    let key_id = &show.body[at + 6..];
    let key_id = key_id[..key_id.find('/').expect("id end")].to_string();
    let r = post(
        &format!("/console/tenants/{tenant}/keys/{key_id}/revoke"),
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(me(&key), 401, "revoked");
}

// ------------------------------------------------- the other pages ---

/// A signed-in operator over plain HTTP (no JavaScript): pages and forms.
struct Operator<'a> {
    app: &'a App,
    cookie: String,
    csrf: String,
}

impl<'a> Operator<'a> {
    fn sign_in(app: &'a App) -> Operator<'a> {
        let (cookie, csrf) = sign_in(app);
        Operator { app, cookie, csrf }
    }

    fn get(&self, path: &str) -> Resp {
        send(
            agent()
                .get(&format!("{}{path}", self.app.url))
                .set("Cookie", &self.cookie),
            None,
        )
    }

    /// A same-origin form post carrying the session's CSRF token first.
    fn post(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let mut form = vec![("csrf", self.csrf.as_str())];
        form.extend_from_slice(fields);
        send(
            agent()
                .post(&format!("{}{path}", self.app.url))
                .set("Cookie", &self.cookie)
                .set("Origin", &self.app.url),
            Some(&form),
        )
    }

    /// The same post from a foreign page (the browser sends the cookie).
    fn post_cross_site(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let mut form = vec![("csrf", self.csrf.as_str())];
        form.extend_from_slice(fields);
        send(
            agent()
                .post(&format!("{}{path}", self.app.url))
                .set("Cookie", &self.cookie)
                .set("Origin", "http://evil.example"),
            Some(&form),
        )
    }
}

/// The part of `html` from the element with `id` to the end of its table.
fn table<'h>(html: &'h str, id: &str) -> &'h str {
    let at = html
        .find(&format!(r#"id="{id}""#))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let rest = &html[at..];
    &rest[..rest.find("</table>").unwrap_or(rest.len())]
}

/// The audit entries with `action`, newest first.
fn audited(app: &App, action: &str) -> Vec<Value> {
    let (s, audit) = app.call("GET", "/v1/audit?limit=1000", None);
    assert_eq!(s, 200, "{audit}");
    audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

fn backups_of(app: &App, tenant: &str) -> Vec<Value> {
    let (s, page) = app.call("GET", &format!("/v1/backups?tenant={tenant}"), None);
    assert_eq!(s, 200, "{page}");
    page["items"].as_array().expect("items").clone()
}

fn shop_names(app: &App, tenant: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    diesel::sql_query("SELECT name FROM shop_profile ORDER BY name")
        .load::<Name>(&mut tenant_db(app, tenant))
        .expect("names")
        .into_iter()
        .map(|n| n.name)
        .collect()
}

/// Makes a failed backup of `tenant`: taken, its artifact damaged, then
/// verified (verification marks it failed). Returns its id.
fn failed_backup(app: &App, tenant: &str) -> String {
    let (s, b) = app.call("POST", &format!("/v1/tenants/{tenant}/backups"), None);
    assert_eq!(s, 201, "{b}");
    let file = app
        .data_dir
        .join("backups")
        .join(b["artifact"].as_str().expect("artifact"));
    let mut bytes = std::fs::read(&file).expect("artifact");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).expect("damage the artifact");
    let id = b["id"].as_str().expect("id").to_string();
    let (s, v) = app.call("POST", &format!("/v1/backups/{id}/verify"), None);
    assert_eq!((s, &v["state"]), (200, &json!("failed")), "{v}");
    id
}

#[test]
fn the_tenant_page_takes_verifies_and_restores_backups_without_javascript() {
    let app = App::start();
    let tenant = new_tenant(&app, "backup-shop");
    tenant_db(&app, &tenant)
        .batch_execute("INSERT INTO shop_profile (name) VALUES ('kept')")
        .expect("insert");
    let op = Operator::sign_in(&app);
    let take = format!("/console/tenants/{tenant}/backups");
    // A foreign page cannot make the console take a backup.
    assert_eq!(op.post_cross_site(&take, &[]).status, 403);
    assert!(backups_of(&app, &tenant).is_empty());

    let r = op.post(&take, &[]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.location,
        Some(format!("/console/tenants/{tenant}#h-backups"))
    );
    let list = backups_of(&app, &tenant);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["state"], "completed");
    let id = list[0]["id"].as_str().expect("id").to_string();
    let page = op.get(&format!("/console/tenants/{tenant}"));
    let rows = table(&page.body, "backups");
    assert!(rows.contains(&format!(r#"id="backup-{id}""#)), "{rows}");
    assert!(rows.contains("completed") && rows.contains("KiB"), "{rows}");
    assert!(rows.contains(&format!("/console/backups/{id}/verify")));

    // Verify: the same verification as the API; the page shows when.
    let r = op.post(&format!("/console/backups/{id}/verify"), &[]);
    assert_eq!(r.status, 303, "{}", r.body);
    let (_, b) = app.call("GET", &format!("/v1/backups/{id}"), None);
    assert_eq!(b["state"], "verified", "{b}");
    let rows = op.get(&format!("/console/tenants/{tenant}")).body;
    assert!(table(&rows, "backups").contains("verified"), "{rows}");

    tenant_db(&app, &tenant)
        .batch_execute("INSERT INTO shop_profile (name) VALUES ('added later')")
        .expect("insert");
    // Restore asks first: the confirmation says what will happen and
    // changes nothing.
    let confirm = op.get(&format!("/console/backups/{id}/restore"));
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains("safety backup"), "{}", confirm.body);
    assert!(confirm.body.contains(r#"id="confirm-restore""#));
    assert_eq!(backups_of(&app, &tenant).len(), 1, "nothing taken yet");
    assert_eq!(shop_names(&app, &tenant), ["added later", "kept"]);
    // A post without a mode, or from elsewhere, changes nothing either.
    let restore = format!("/console/backups/{id}/restore");
    assert_eq!(op.post(&restore, &[("mode", "sideways")]).status, 422);
    assert_eq!(
        op.post_cross_site(&restore, &[("mode", "in_place")]).status,
        403
    );
    assert_eq!(backups_of(&app, &tenant).len(), 1);

    let r = op.post(&restore, &[("mode", "in_place")]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location, Some(format!("/console/tenants/{tenant}")));
    assert_eq!(shop_names(&app, &tenant), ["kept"], "the backup's data");
    let reasons: BTreeSet<String> = backups_of(&app, &tenant)
        .iter()
        .map(|b| b["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        reasons.contains("pre_restore"),
        "safety backup: {reasons:?}"
    );
    // Or as a new tenant: the original stays as it is.
    let r = op.post(&restore, &[("mode", "new_tenant"), ("slug", "Not A Slug")]);
    assert_eq!(r.status, 422, "{}", r.body);
    tenant_db(&app, &tenant)
        .batch_execute("INSERT INTO shop_profile (name) VALUES ('original only')")
        .expect("insert");
    let r = op.post(&restore, &[("mode", "new_tenant"), ("slug", "backup-copy")]);
    assert_eq!(r.status, 303, "{}", r.body);
    let (s, copy) = app.call("GET", "/v1/tenants/backup-copy", None);
    assert_eq!(s, 200, "{copy}");
    let copy = copy["id"].as_str().expect("id").to_string();
    assert_eq!(r.location, Some(format!("/console/tenants/{copy}")));
    assert_eq!(shop_names(&app, &copy), ["kept"]);
    assert_eq!(shop_names(&app, &tenant), ["kept", "original only"]);
    // Both audited with the console session as actor.
    let restored = audited(&app, "tenant.restore");
    let modes: BTreeSet<String> = restored
        .iter()
        .map(|e| {
            assert!(
                e["actor"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("console:")),
                "{e}"
            );
            let after: Value =
                serde_json::from_str(e["after_state"].as_str().expect("after")).expect("json");
            after["mode"].as_str().expect("mode").to_string()
        })
        .collect();
    assert_eq!(
        modes,
        BTreeSet::from(["in_place".into(), "new_tenant".into()])
    );
    // A backup that is not usable shows as failed, with no restore button,
    // and cannot be restored.
    let fid = failed_backup(&app, &tenant);
    let page = op.get(&format!("/console/tenants/{tenant}")).body;
    assert!(
        page.contains(&format!(r#"<tr id="backup-{fid}" class="bad">"#)),
        "{page}"
    );
    assert!(!page.contains(&format!("/console/backups/{fid}/restore")));
    let r = op.post(
        &format!("/console/backups/{fid}/restore"),
        &[("mode", "in_place")],
    );
    assert_eq!(r.status, 409, "{}", r.body);
    // The overview lists it under "needs attention".
    let overview = op.get("/console").body;
    assert!(overview.contains("Backup failed"), "{overview}");
}

#[test]
fn the_plans_page_edits_a_plans_features_audited_as_the_session() {
    let app = App::start();
    let op = Operator::sign_in(&app);
    let page = op.get("/console/plans");
    assert_eq!(page.status, 200, "{}", page.body);
    for slug in ["free", "standard", "pro"] {
        assert!(
            page.body.contains(&format!(r#"id="features-{slug}""#)),
            "{slug}"
        );
    }
    assert!(page.body.contains(r#"id="f-free-branding" checked"#));
    assert!(!page.body.contains(r#"id="f-free-audit_diff" checked"#));
    let plan = |slug: &str| {
        let (s, p) = app.call("GET", &format!("/v1/plans/{slug}"), None);
        assert_eq!(s, 200, "{p}");
        p
    };
    let before = plan("free");
    let path = "/console/plans/free/features";
    let wanted = [("feature", "branding"), ("feature", "audit_diff")];
    assert_eq!(op.post_cross_site(path, &wanted).status, 403);
    let r = op.post(path, &[("feature", "branding"), ("feature", "no_such")]);
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(plan("free"), before, "nothing changed");

    let r = op.post(path, &wanted);
    assert_eq!(r.status, 303, "{}", r.body);
    let after = plan("free");
    let features: BTreeSet<&str> = after["features"]
        .as_array()
        .expect("features")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(features, BTreeSet::from(["branding", "audit_diff"]));
    assert_eq!(
        after["price_cents"], before["price_cents"],
        "the rest stays"
    );
    let page = op.get("/console/plans");
    assert!(page.body.contains(r#"id="f-free-audit_diff" checked"#));
    assert!(!page.body.contains(r#"id="f-free-day_end_lock" checked"#));
    let updates = audited(&app, "plan.update");
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert!(updates[0]["actor"]
        .as_str()
        .is_some_and(|a| a.starts_with("console:")));
    // A tenant on the plan now evaluates the plan as edited.
    let tenant = create_plan_tenant(&app, "plan-shop", "free");
    assert_eq!(feature(&app, &tenant, "day_end_lock")["enabled"], false);
}

fn create_plan_tenant(app: &App, slug: &str, plan: &str) -> String {
    crate::common::create_tenant(
        app,
        json!({"slug": slug, "name": slug, "schema": "head", "plan": plan}),
    )
}

#[test]
fn the_read_only_pages_render_accessibly_and_light() {
    let app = App::start();
    let tenant = new_tenant(&app, "pages-shop");
    let op = Operator::sign_in(&app);
    // Every page, with its nav, weighs under 150 KB with its assets.
    let assets: usize = [
        "htmx-2.0.11.min.js",
        "htmx-ext-sse-2.2.4.min.js",
        "console-2.css",
    ]
    .iter()
    .map(|a| op.get(&format!("/console/assets/{a}")).body.len())
    .sum();
    let pages = [
        "/console",
        "/console/plans",
        "/console/servers",
        "/console/schedules",
        "/console/outbox",
        "/console/audit",
        &format!("/console/tenants/{tenant}"),
    ];
    for path in pages {
        let r = op.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.body.len() + assets < 150 * 1024, "{path}");
        for link in [
            "/console/plans",
            "/console/servers",
            "/console/schedules",
            "/console/outbox",
            "/console/audit",
        ] {
            assert!(r.body.contains(&format!(r#"href="{link}""#)), "{path} nav");
        }
        assert_eq!(r.body.matches("<h1>").count(), 1, "{path}: one h1");
        assert!(r.csp.is_some_and(|c| c.contains("default-src 'self'")));
        // Every input and select has a label naming it.
        for (at, _) in r.body.match_indices("<select id=\"") {
            let id = &r.body[at + 12..];
            let id = &id[..id.find('"').expect("id")];
            assert!(r.body.contains(&format!(r#"for="{id}""#)), "{path}: {id}");
        }
    }
    // Servers: the default server with its tenant.
    let servers = op.get("/console/servers").body;
    let rows = table(&servers, "servers");
    assert!(rows.contains("sqlite") && rows.contains("file"), "{rows}");
    assert!(
        rows.contains(r#"<span class="tenant-count">1</span>"#),
        "{rows}"
    );
    assert!(!servers.contains("<form method=\"post\" action=\"/console/servers"));
    // Schedules: each with its cron, job and next fire time.
    let (s, v) = app.call(
        "POST",
        "/v1/schedules",
        Some(json!({"name": "eu-backup", "cron": "0 2 * * *", "timezone": "Europe/Berlin", "job": "backup"})),
    );
    assert_eq!(s, 201, "{v}");
    let (_, scheds) = app.call("GET", "/v1/schedules", None);
    let page = op.get("/console/schedules").body;
    let rows = table(&page, "schedules");
    for s in scheds.as_array().expect("schedules") {
        let name = s["name"].as_str().expect("name");
        assert!(rows.contains(&format!(r#"id="schedule-{name}""#)), "{rows}");
    }
    let eu = &rows[rows.find(r#"id="schedule-eu-backup""#).expect("eu-backup")..];
    let eu = &eu[..eu.find("</tr>").expect("row end")];
    assert!(
        eu.contains("0 2 * * *") && eu.contains("Europe/Berlin"),
        "{eu}"
    );
    assert!(
        eu.contains("02:00 UTC") || eu.contains("01:00 UTC"),
        "next fire: {eu}"
    );
    assert!(eu.contains("never"), "never ran: {eu}");
    assert!(page.contains(r#"id="no-dead-jobs""#), "{page}");
    // A failed backup is marked in the fleet-wide list.
    failed_backup(&app, &tenant);
    let page = op.get("/console/schedules").body;
    assert!(page.contains(r#"id="failed-backups""#), "{page}");
    assert!(table(&page, "fleet-backups").contains(r#"class="bad""#));
    let only_failed = op.get("/console/schedules?state=failed").body;
    assert!(table(&only_failed, "fleet-backups").contains("pages-shop"));
    let bad = op.get("/console/schedules?state=lost");
    assert_eq!(bad.status, 422, "{}", bad.body);
}

#[test]
fn the_audit_page_filters_by_tenant_and_action_and_pages_by_cursor() {
    let app = App::start();
    let a = new_tenant(&app, "audit-a");
    let b = new_tenant(&app, "audit-b");
    // 60 changes of tenant a: more than a page.
    for i in 0..30 {
        for (method, body) in [
            ("PUT", Some(json!({"enabled": i % 2 == 0, "reason": "t"}))),
            ("DELETE", None),
        ] {
            let (s, r) = app.call(method, &format!("/v1/tenants/{a}/features/branding"), body);
            assert!(s < 300, "{s} {r}");
        }
    }
    let op = Operator::sign_in(&app);
    let ids = |html: &str| -> Vec<i64> {
        html.match_indices(r#"<tr id="entry-"#)
            .map(|(at, _)| {
                let rest = &html[at + 14..];
                rest[..rest.find('"').expect("quote")].parse().expect("id")
            })
            .collect()
    };
    let first = op.get("/console/audit?tenant=audit-a");
    assert_eq!(first.status, 200, "{}", first.body);
    let page1 = ids(&first.body);
    assert_eq!(page1.len(), 50);
    assert!(page1.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert!(!first.body.contains(&b), "only tenant a");
    let at = first.body.find(r#"rel="next""#).expect("a next page");
    let href = &first.body[..at];
    let href = &href[href.rfind("href=\"").expect("href") + 6..];
    let href = unescape(&href[..href.find('"').expect("quote")]);
    assert!(href.contains("tenant=audit-a"), "filters kept: {href}");
    let second = op.get(&href);
    let page2 = ids(&second.body);
    assert!(!page2.is_empty());
    assert!(page2[0] < *page1.last().expect("last"), "no overlap");
    assert!(!second.body.contains(r#"rel="next""#));
    // The two pages are exactly tenant a's log.
    let (_, all) = app.call("GET", &format!("/v1/audit?tenant={a}&limit=1000"), None);
    let all: Vec<i64> = all
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!([page1, page2].concat(), all);
    // By action (a prefix), across tenants.
    let created = op.get("/console/audit?action=tenant.create").body;
    let rows = table(&created, "audit-log");
    assert_eq!(ids(rows).len(), 2, "{rows}");
    assert!(rows.contains(&a) && rows.contains(&b));
    let mine = op
        .get(&format!("/console/audit?tenant={b}&action=override"))
        .body;
    assert!(ids(&mine).is_empty(), "{mine}");
    // Bad filters are refused and name the problem.
    assert_eq!(op.get("/console/audit?tenant=nobody").status, 404);
    assert_eq!(op.get("/console/audit?before=x").status, 422);
    // LIKE's wildcards in the filter match only themselves.
    for wild in ["%25", "tenant_", "_"] {
        let r = op.get(&format!("/console/audit?action={wild}"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(ids(&r.body).is_empty(), "{wild}: {}", r.body);
    }
}

/// A webhook receiver that answers `410 Gone` to the first request and
/// `204` to every later one.
fn gone_once_receiver() -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            // Read the head and the body (Content-Length) before answering.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(k) = stream.read(&mut chunk) {
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let answer = if n == 0 {
                "HTTP/1.1 410 Gone\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (url, handle)
}

#[test]
fn a_dead_delivery_shows_its_attempts_and_is_retried_from_the_console() {
    let (hook, _receiver) = gone_once_receiver();
    let app = App::start_with(AppOptions {
        env: vec![
            ("TENANTPLANE_NOTIFY_RETRY_SCALE".into(), "0.001".into()),
            ("TENANTPLANE_WEBHOOK_TIMEOUT_S".into(), "2".into()),
            ("TENANTPLANE_WEBHOOK_ALLOW_PRIVATE".into(), "true".into()),
        ],
        ..AppOptions::default()
    });
    let (s, w) = app.call(
        "POST",
        "/v1/webhooks",
        Some(json!({"url": hook, "events": ["tenant.created"]})),
    );
    assert_eq!(s, 201, "{w}");
    let endpoint = w["id"].as_str().expect("id").to_string();
    new_tenant(&app, "hooked-shop");
    let delivery = |id: i64| {
        let (s, d) = app.call("GET", &format!("/v1/outbox/{id}"), None);
        assert_eq!(s, 200, "{d}");
        d
    };
    let dead = wait_for("the delivery to die on 410", LONG, || {
        let (_, page) = app.call("GET", "/v1/outbox?state=dead", None);
        page["items"].as_array().and_then(|i| i.first().cloned())
    });
    let id = dead["id"].as_i64().expect("id");
    let op = Operator::sign_in(&app);
    let overview = op.get("/console").body;
    assert!(
        overview.contains(&format!("Delivery #{id} of tenant.created is dead")),
        "{overview}"
    );
    let outbox = op.get("/console/outbox").body;
    let rows = table(&outbox, "dead-deliveries");
    assert!(
        rows.contains(&format!("/console/outbox/{id}/retry")),
        "{rows}"
    );
    assert!(table(&outbox, "endpoints").contains("disabled"), "{outbox}");
    // Its job is dead too, listed on the schedules page (the job records
    // the delivery dead first, then ends dead itself a moment later).
    wait_for("the delivery's job among the dead jobs", LONG, || {
        let jobs = op.get("/console/schedules").body;
        table(&jobs, "dead-jobs")
            .contains("notify.deliver")
            .then_some(())
    });
    let detail = op.get(&format!("/console/outbox/{id}")).body;
    let attempts = table(&detail, "attempts");
    assert!(attempts.contains("<td>410</td>"), "{attempts}");
    assert_eq!(attempts.matches("<tr").count(), 2, "head + one attempt");

    // Retrying from another site is refused; a delivered or pending one
    // cannot be retried.
    let retry = format!("/console/outbox/{id}/retry");
    assert_eq!(op.post_cross_site(&retry, &[]).status, 403);
    assert_eq!(delivery(id)["state"], "dead");
    // The endpoint works again: the retry delivers.
    let (s, w) = app.call(
        "PATCH",
        &format!("/v1/webhooks/{endpoint}"),
        Some(json!({"enabled": true})),
    );
    assert_eq!(s, 200, "{w}");
    let r = op.post(&retry, &[]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location, Some(format!("/console/outbox/{id}")));
    let done = wait_for("the retried delivery", LONG, || {
        let d = delivery(id);
        (d["state"] == "delivered").then_some(d)
    });
    assert_eq!(done["attempt_log"].as_array().expect("log").len(), 2);
    let detail = op.get(&format!("/console/outbox/{id}")).body;
    assert!(
        table(&detail, "attempts").contains("<td>204</td>"),
        "{detail}"
    );
    assert_eq!(op.post(&retry, &[]).status, 409, "delivered: not again");
    let retried = audited(&app, "delivery.retry");
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert!(retried[0]["actor"]
        .as_str()
        .is_some_and(|a| a.starts_with("console:")));
    assert!(op.get("/console/outbox").body.contains(r#"id="no-dead""#));
}

#[test]
fn console_sessions_note_last_seen_once_a_minute_and_sweep_expired_ones() {
    use tenantplane_control_db::schema::console_sessions as cs;
    let app = App::start();
    let op = Operator::sign_in(&app);
    let other = Operator::sign_in(&app);
    let mut db = SqliteConnection::establish(&app.data_dir.join("control.db").to_string_lossy())
        .expect("control db");
    db.batch_execute("PRAGMA busy_timeout = 10000")
        .expect("busy timeout");
    let now = chrono::Utc::now().naive_utc();
    let seen = |db: &mut SqliteConnection| -> Vec<(String, chrono::NaiveDateTime)> {
        cs::table
            .select((cs::id, cs::last_seen_at))
            .order(cs::created_at)
            .load(db)
            .expect("sessions")
    };
    let sessions = seen(&mut db);
    assert_eq!(sessions.len(), 2);
    let (mine, theirs) = (sessions[0].0.clone(), sessions[1].0.clone());
    // Seen 10 s ago: a request does not write again.
    let recent = now - chrono::Duration::seconds(10);
    diesel::update(cs::table.find(&mine))
        .set(cs::last_seen_at.eq(recent))
        .execute(&mut db)
        .expect("set");
    assert_eq!(op.get("/console").status, 200);
    assert_eq!(seen(&mut db)[0].1, recent, "no write within a minute");
    // Seen two hours ago: the next request notes it, and sweeps the
    // other session, which expired an hour ago.
    diesel::update(cs::table.find(&mine))
        .set(cs::last_seen_at.eq(now - chrono::Duration::hours(2)))
        .execute(&mut db)
        .expect("set");
    diesel::update(cs::table.find(&theirs))
        .set(cs::expires_at.eq(now - chrono::Duration::hours(1)))
        .execute(&mut db)
        .expect("expire");
    assert_eq!(op.get("/console").status, 200);
    let after = seen(&mut db);
    assert_eq!(after.len(), 1, "the expired session is gone: {after:?}");
    assert_eq!(after[0].0, mine);
    assert!(after[0].1 >= now, "last seen noted: {after:?}");
    assert_eq!(
        other.get("/console").location.as_deref(),
        Some("/console/login")
    );
}

/// A tenant found drifted is on the overview's "needs attention" list with
/// its differences, and off it once it matches its version again.
#[test]
fn drifted_tenants_need_attention_on_the_overview() {
    let app = App::start();
    let id = new_tenant(&app, "drifty-shop");
    let (cookie, _) = sign_in(&app);
    let overview = || {
        send(
            agent()
                .get(&format!("{}/console", app.url))
                .set("Cookie", &cookie),
            None,
        )
        .body
    };
    let mut db = tenant_db(&app, &id);
    db.batch_execute("CREATE INDEX handmade_idx ON sales (id)")
        .expect("drift by hand");
    let (s, d) = app.call("GET", &format!("/v1/tenants/{id}/drift"), None);
    assert_eq!((s, d["drifted"].as_bool()), (200, Some(true)), "{d}");
    let page = overview();
    assert!(page.contains("Tenant drifty-shop drifted"), "{page}");
    assert!(page.contains("handmade_idx"), "{page}");

    db.batch_execute("DROP INDEX handmade_idx").expect("undo");
    let (s, d) = app.call("GET", &format!("/v1/tenants/{id}/drift"), None);
    assert_eq!((s, d["drifted"].as_bool()), (200, Some(false)), "{d}");
    assert!(!overview().contains("drifty-shop drifted"));
}
