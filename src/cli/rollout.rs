//! `tenantplane rollout …`: plan, start, watch and control fleet migrations
//! through the API (`/v1/rollouts`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Map, Value};

use super::client::{encode, Client};
use super::output::{print, Output};

const ROLLOUT_COLUMNS: &[&str] = &["id", "target", "state", "wave", "total", "counts"];
const PLAN_COLUMNS: &[&str] = &["slug", "wave", "action", "from", "to", "steps"];
const FAILED_COLUMNS: &[&str] = &["slug", "error_version", "last_error"];
/// States in which the API ends the event stream with `done`.
const FINISHED: &[&str] = &["succeeded", "failed", "cancelled"];
/// States that stop a rollout without finishing it (no `done` follows).
const STOPPED: &[&str] = &["halted", "paused"];
/// Reconnects in a row without a single event before `watch` gives up.
const RECONNECTS: u32 = 5;

#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Show what a rollout would do, tenant by tenant (a dry run: nothing changes).
    Plan(Spec),
    /// Start a rollout.
    Start {
        #[command(flatten)]
        spec: Spec,
        /// Follow its progress until it ends (see `watch`).
        #[arg(long)]
        watch: bool,
    },
    /// Show one rollout.
    Status { id: String },
    /// Follow a rollout live until it ends; exits 0 only when it succeeded.
    Watch { id: String },
    /// Stop claiming new tenants (running ones finish).
    Pause { id: String },
    /// Continue a paused or halted rollout.
    Resume {
        id: String,
        /// Follow its progress until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Cancel the pending tenants (running ones finish).
    Cancel { id: String },
    /// Queue the failed tenants again.
    Retry {
        id: String,
        /// Follow its progress until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Open the next wave now (ends a finished wave's hold).
    Promote {
        id: String,
        /// Follow its progress until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Recent rollouts, newest first.
    List {
        /// running, paused, halted, succeeded, failed or cancelled
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// What a rollout migrates, and how: shared by `plan` and `start`.
#[derive(Debug, Clone, Args)]
pub struct Spec {
    /// head, phase:N or version:V (older than a tenant's version = rollback)
    #[arg(long)]
    target: String,
    /// Every tenant (the other selectors still narrow it).
    #[arg(long)]
    all: bool,
    /// Tenant id or slug, repeatable.
    #[arg(long = "tenant", value_name = "ID|SLUG")]
    tenants: Vec<String>,
    /// Plan, repeatable.
    #[arg(long = "plan", value_name = "PLAN")]
    plans: Vec<String>,
    /// key=value, repeatable (all must match).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Database server id or name, repeatable.
    #[arg(long = "server", value_name = "SERVER")]
    servers: Vec<String>,
    /// A wave, repeatable, in order: `canary=10` (10 tenants), `5%`, `name=5%`
    /// or `10`. Tenants left over form a last wave `rest`. `:hold=300` after
    /// it keeps the next wave closed for 300 s after it finished; `:manual`
    /// until `rollout promote`.
    #[arg(long = "wave", value_name = "[NAME=]COUNT|[NAME=]PERCENT%[:hold=S|:manual]", value_parser = parse_wave)]
    waves: Vec<WaveArg>,
    /// Tenants migrated at once across all workers (API default 8).
    #[arg(long)]
    concurrency: Option<u32>,
    /// Tenants migrated at once per database server (API default: --concurrency).
    #[arg(long)]
    per_server_concurrency: Option<u32>,
    /// Attempts per tenant for transient errors (API default 5).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// First retry delay in ms (default 500).
    #[arg(long)]
    backoff_base_ms: Option<u64>,
    /// Longest retry delay in ms (default 30000, at least --backoff-base-ms).
    #[arg(long)]
    backoff_max_ms: Option<u64>,
    /// Statement timeout per tenant, seconds (API default 300).
    #[arg(long)]
    timeout_s: Option<u32>,
    /// Halt once more than this many tenants failed. Giving this or
    /// --max-failed-percent replaces the default budget (halt above 10 %).
    #[arg(long)]
    max_failed: Option<u32>,
    /// Halt once more than this percentage of the finished tenants failed.
    #[arg(long)]
    max_failed_percent: Option<u32>,
    /// Every tenant, migrated or already at the target, runs every probe of
    /// the target (without it: each migrated tenant runs the probes of what
    /// its run changed).
    #[arg(long)]
    verify: bool,
    /// Higher runs first (-1000 to 1000, API default 0).
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Back each tenant up (reason pre_migration) just before migrating it;
    /// a tenant whose backup fails is not migrated.
    #[arg(long)]
    backup: bool,
    /// Restore a tenant whose migration failed for good from that backup
    /// (needs --backup; the API refuses it alone).
    #[arg(long)]
    restore_on_failure: bool,
    /// Migrate tenants whose schema drifted from their version's reference
    /// (by default their tasks fail with the differences).
    #[arg(long)]
    allow_drift: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WaveArg {
    name: Option<String>,
    size: WaveSize,
    /// `:hold=SECONDS` or `:manual` after the size.
    hold: Option<WaveHoldArg>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveHoldArg {
    Seconds(u32),
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveSize {
    Count(u32),
    Percent(f64),
}

/// `key=value`.
fn parse_label(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// `canary=10`, `5%`, `name=5%` or `10`, optionally followed by
/// `:hold=SECONDS` or `:manual`.
fn parse_wave(s: &str) -> std::result::Result<WaveArg, String> {
    let (spec, hold) = match s.split_once(':') {
        None => (s, None),
        Some((spec, "manual")) => (spec, Some(WaveHoldArg::Manual)),
        Some((spec, h)) => {
            let secs = h
                .strip_prefix("hold=")
                .and_then(|v| v.trim_end_matches('s').parse::<u32>().ok())
                .ok_or_else(|| {
                    format!("wave {s:?}: after ':' give hold=SECONDS (e.g. hold=300) or manual")
                })?;
            (spec, Some(WaveHoldArg::Seconds(secs)))
        }
    };
    let mut wave = parse_wave_size(spec)?;
    wave.hold = hold;
    Ok(wave)
}

fn parse_wave_size(s: &str) -> std::result::Result<WaveArg, String> {
    let (name, size) = match s.split_once('=') {
        Some((n, size)) => {
            if n.trim().is_empty() {
                return Err(format!("wave {s:?}: the name before '=' is empty"));
            }
            (Some(n.to_string()), size.trim())
        }
        None => (None, s.trim()),
    };
    let usage = "use NAME=COUNT, COUNT, NAME=PERCENT% or PERCENT% (e.g. canary=10, 5%)";
    let size = if let Some(p) = size.strip_suffix('%') {
        let p: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("wave {s:?}: {p:?} is not a percentage; {usage}"))?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(format!(
                "wave {s:?}: the percentage must be more than 0 and at most 100"
            ));
        }
        WaveSize::Percent(p)
    } else {
        let n: u32 = size
            .parse()
            .map_err(|_| format!("wave {s:?}: {size:?} is not a number of tenants; {usage}"))?;
        if n == 0 {
            return Err(format!("wave {s:?}: a wave needs at least 1 tenant"));
        }
        WaveSize::Count(n)
    };
    Ok(WaveArg {
        name,
        size,
        hold: None,
    })
}

impl Spec {
    /// The `POST /v1/rollouts` body.
    fn body(&self, dry_run: bool) -> Result<Value> {
        if !self.all
            && self.tenants.is_empty()
            && self.plans.is_empty()
            && self.labels.is_empty()
            && self.servers.is_empty()
        {
            bail!("say which tenants: --all, --tenant, --plan, --label or --server");
        }
        let mut selector = Map::new();
        if self.all {
            selector.insert("all".into(), json!(true));
        }
        if !self.tenants.is_empty() {
            selector.insert("tenants".into(), json!(self.tenants));
        }
        if !self.plans.is_empty() {
            selector.insert("plans".into(), json!(self.plans));
        }
        if !self.labels.is_empty() {
            let labels: BTreeMap<&str, &str> = self
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            selector.insert("labels".into(), json!(labels));
        }
        if !self.servers.is_empty() {
            selector.insert("servers".into(), json!(self.servers));
        }
        let mut body = Map::new();
        body.insert("target".into(), json!(self.target));
        body.insert("selector".into(), Value::Object(selector));
        if !self.waves.is_empty() {
            let waves: Vec<Value> = self
                .waves
                .iter()
                .map(|w| {
                    let mut o = Map::new();
                    if let Some(n) = &w.name {
                        o.insert("name".into(), json!(n));
                    }
                    match w.size {
                        WaveSize::Count(c) => o.insert("count".into(), json!(c)),
                        WaveSize::Percent(p) => o.insert("percent".into(), json!(p)),
                    };
                    match w.hold {
                        Some(WaveHoldArg::Seconds(h)) => o.insert("hold_s".into(), json!(h)),
                        Some(WaveHoldArg::Manual) => o.insert("manual".into(), json!(true)),
                        None => None,
                    };
                    Value::Object(o)
                })
                .collect();
            body.insert("waves".into(), Value::Array(waves));
        }
        let mut opt = |key: &str, v: Option<Value>| {
            if let Some(v) = v {
                body.insert(key.into(), v);
            }
        };
        opt("concurrency", self.concurrency.map(|v| json!(v)));
        opt(
            "per_server_concurrency",
            self.per_server_concurrency.map(|v| json!(v)),
        );
        opt("max_attempts", self.max_attempts.map(|v| json!(v)));
        opt("timeout_s", self.timeout_s.map(|v| json!(v)));
        opt("priority", self.priority.map(|v| json!(v)));
        if self.backoff_base_ms.is_some() || self.backoff_max_ms.is_some() {
            let base = self.backoff_base_ms.unwrap_or(500);
            let max = self.backoff_max_ms.unwrap_or(base.max(30_000));
            opt("backoff", Some(json!({ "base_ms": base, "max_ms": max })));
        }
        if self.max_failed.is_some() || self.max_failed_percent.is_some() {
            opt(
                "failure_budget",
                Some(json!({
                    "max_failed": self.max_failed,
                    "max_failed_percent": self.max_failed_percent,
                })),
            );
        }
        if self.verify {
            opt("verify", Some(json!(true)));
        }
        if self.backup {
            opt("backup", Some(json!(true)));
        }
        if self.restore_on_failure {
            opt("restore_on_failure", Some(json!(true)));
        }
        if self.allow_drift {
            opt("allow_drift", Some(json!(true)));
        }
        if dry_run {
            opt("dry_run", Some(json!(true)));
        }
        Ok(Value::Object(body))
    }
}

/// Where the commands send requests: the shared JSON client, plus the base
/// URL and token for the event stream (a long-lived request of its own).
pub struct Api<'a> {
    pub client: &'a Client,
    pub base: &'a str,
    pub token: Option<&'a str>,
}

pub fn run(
    client: &Client,
    base: &str,
    token: Option<&str>,
    output: Output,
    cmd: RolloutCmd,
) -> Result<()> {
    let api = Api {
        client,
        base: base.trim_end_matches('/'),
        token,
    };
    match cmd {
        RolloutCmd::Plan(spec) => {
            let plan = client.call("POST", "/v1/rollouts", Some(&spec.body(true)?))?;
            print_plan(output, &plan);
            Ok(())
        }
        RolloutCmd::Start { spec, watch } => {
            let r = client.call("POST", "/v1/rollouts", Some(&spec.body(false)?))?;
            let Some(id) = r["id"].as_str() else {
                bail!("the API answered without a rollout id: {r}");
            };
            then_watch(&api, output, &r, id, watch)
        }
        RolloutCmd::Status { id } => {
            let r = client.call("GET", &rollout_path(&id, ""), None)?;
            show(output, &r);
            if output == Output::Table {
                println!("{}", progress_line(&r));
                if let Some(why) = r["halt_reason"].as_str() {
                    println!("halt reason: {why}");
                }
            }
            Ok(())
        }
        RolloutCmd::Watch { id } => watch(&api, output, &id),
        RolloutCmd::Pause { id } => control(&api, output, &id, "pause", false),
        RolloutCmd::Resume { id, watch } => control(&api, output, &id, "resume", watch),
        RolloutCmd::Cancel { id } => control(&api, output, &id, "cancel", false),
        RolloutCmd::Retry { id, watch } => control(&api, output, &id, "retry", watch),
        RolloutCmd::Promote { id, watch } => control(&api, output, &id, "promote", watch),
        RolloutCmd::List { state, limit } => {
            let mut query = vec![format!("limit={limit}")];
            query.extend(state.map(|s| format!("state={}", encode(&s))));
            let v = client.call("GET", &format!("/v1/rollouts?{}", query.join("&")), None)?;
            let rows: Vec<Value> = v
                .as_array()
                .map(|a| a.iter().map(display_row).collect())
                .unwrap_or_default();
            print(output, &v, &rows, ROLLOUT_COLUMNS);
            Ok(())
        }
    }
}

fn rollout_path(id: &str, what: &str) -> String {
    format!("/v1/rollouts/{}{what}", encode(id))
}

/// `pause`, `resume`, `cancel` or `retry`; a refusal (409) is an error
/// carrying the API's message.
fn control(api: &Api, output: Output, id: &str, what: &str, follow: bool) -> Result<()> {
    let r = api
        .client
        .call("POST", &rollout_path(id, &format!("/{what}")), None)?;
    then_watch(api, output, &r, id, follow)
}

/// Prints the rollout, or with `follow` watches it (in JSON mode only the
/// watch summary is printed, so stdout stays one JSON document).
fn then_watch(api: &Api, output: Output, r: &Value, id: &str, follow: bool) -> Result<()> {
    if !follow {
        show(output, r);
        return Ok(());
    }
    if output == Output::Table {
        show(output, r);
        println!();
    }
    watch(api, output, id)
}

fn show(output: Output, r: &Value) {
    print(output, r, &[display_row(r)], ROLLOUT_COLUMNS);
}

/// The rollout with a readable `wave` column added.
fn display_row(r: &Value) -> Value {
    let mut row = r.clone();
    if let Value::Object(map) = &mut row {
        map.insert("wave".into(), json!(wave_label(r)));
    }
    row
}

/// `2/3 main`: the current wave, 1-based, of all waves.
fn wave_label(r: &Value) -> String {
    let waves = r["waves"].as_array().map(Vec::as_slice).unwrap_or_default();
    let current = r["current_wave"].as_u64().unwrap_or(0) as usize;
    match waves.get(current) {
        Some(w) => format!("{}/{} {}", current + 1, waves.len(), str_of(&w["name"])),
        None => format!("{}/{}", current + 1, waves.len()),
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn print_plan(output: Output, plan: &Value) {
    let waves = plan["waves"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let wave_name = |i: &Value| {
        i.as_u64()
            .and_then(|i| waves.get(i as usize))
            .map(|w| w["name"].clone())
            .unwrap_or_else(|| i.clone())
    };
    let rows: Vec<Value> = plan["tasks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            json!({
                "slug": t["slug"], "wave": wave_name(&t["wave"]), "action": t["action"],
                "from": t["from"], "to": t["to"],
                "steps": t["steps"].as_array().map_or(0, Vec::len),
            })
        })
        .collect();
    print(output, plan, &rows, PLAN_COLUMNS);
    if output == Output::Table {
        let waves: Vec<String> = waves
            .iter()
            .map(|w| format!("{} {}", str_of(&w["name"]), int(&w["size"])))
            .collect();
        let version = plan["target_version"]
            .as_str()
            .map(|v| format!(" = {v}"))
            .unwrap_or_default();
        println!(
            "{} tenants, {} to migrate, target {}{version}; waves: {} (dry run: nothing changed)",
            int(&plan["total"]),
            int(&plan["to_migrate"]),
            str_of(&plan["target"]),
            waves.join(", "),
        );
    }
}

fn finished_count(r: &Value) -> u64 {
    let c = &r["counts"];
    ["succeeded", "failed", "skipped", "cancelled"]
        .iter()
        .map(|k| c[*k].as_u64().unwrap_or(0))
        .sum()
}

fn counts_text(r: &Value) -> String {
    let c = &r["counts"];
    format!(
        "succeeded {}, failed {}, skipped {}, cancelled {}; running {}, pending {}",
        int(&c["succeeded"]),
        int(&c["failed"]),
        int(&c["skipped"]),
        int(&c["cancelled"]),
        int(&c["running"]),
        int(&c["pending"]),
    )
}

fn rate_text(r: &Value) -> String {
    let rate = r["tenants_per_second"]
        .as_f64()
        .map_or("- tenants/s".to_string(), |v| format!("{v:.1} tenants/s"));
    match r["eta_seconds"].as_f64() {
        Some(eta) => format!("{rate}, ETA {}", duration_text(eta)),
        None => rate,
    }
}

fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let s = s.round() as u64;
    if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// One plain line: state, wave, done/total, counts, rate and ETA.
fn progress_line(r: &Value) -> String {
    format!(
        "{} wave {} | {}/{} done | {} | {}",
        str_of(&r["state"]),
        wave_label(r),
        finished_count(r),
        int(&r["total"]),
        counts_text(r),
        rate_text(r),
    )
}

/// Live progress: an indicatif bar on a terminal, otherwise one plain line
/// per change (on stderr in JSON mode, so stdout stays one JSON document).
enum Progress {
    /// Drawn from the first event on (its length comes from that event).
    Bar(Option<ProgressBar>),
    Lines {
        to_stderr: bool,
        started: Instant,
        last: Option<Value>,
    },
}

impl Progress {
    fn new(output: Output) -> Progress {
        if output == Output::Table && std::io::stdout().is_terminal() {
            Progress::Bar(None)
        } else {
            Progress::Lines {
                to_stderr: output == Output::Json,
                started: Instant::now(),
                last: None,
            }
        }
    }

    fn update(&mut self, r: &Value) {
        match self {
            Progress::Bar(slot) => {
                let bar = slot.get_or_insert_with(|| {
                    let style = ProgressStyle::with_template(
                        "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
                    )
                    .map(|s| s.progress_chars("=> "))
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    let bar = ProgressBar::with_draw_target(
                        r["total"].as_u64(),
                        ProgressDrawTarget::stdout(),
                    )
                    .with_style(style);
                    bar.enable_steady_tick(Duration::from_millis(200));
                    bar
                });
                bar.set_length(r["total"].as_u64().unwrap_or(0));
                bar.set_position(finished_count(r));
                let c = &r["counts"];
                bar.set_message(format!(
                    "{} | wave {} | ok {} failed {} skipped {} cancelled {} | running {} pending {} | {}",
                    str_of(&r["state"]),
                    wave_label(r),
                    int(&c["succeeded"]),
                    int(&c["failed"]),
                    int(&c["skipped"]),
                    int(&c["cancelled"]),
                    int(&c["running"]),
                    int(&c["pending"]),
                    rate_text(r),
                ));
            }
            Progress::Lines {
                to_stderr,
                started,
                last,
            } => {
                // A reconnect repeats the last state: print changes only.
                if last.as_ref() == Some(r) {
                    return;
                }
                *last = Some(r.clone());
                let line = format!(
                    "[{:>7}] {}",
                    duration_text(started.elapsed().as_secs_f64()),
                    progress_line(r)
                );
                if *to_stderr {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
        }
    }

    /// A note that is not progress (reconnects): always stderr.
    fn note(&self, msg: &str) {
        match self {
            Progress::Bar(Some(bar)) => bar.suspend(|| eprintln!("{msg}")),
            Progress::Bar(None) | Progress::Lines { .. } => eprintln!("{msg}"),
        }
    }

    fn finish(&self) {
        if let Progress::Bar(Some(bar)) = self {
            // Leaves the final bar on screen above the summary.
            bar.abandon();
        }
    }
}

/// How one connection to the event stream ended.
enum Segment {
    /// `done`: the rollout finished.
    Done(Value),
    /// A progress event showed the rollout halted or paused: no `done` follows.
    Stopped(Value),
    /// The connection ended early; `events` says whether it delivered any.
    Dropped {
        reason: String,
        events: usize,
        quiet: bool,
    },
}

/// Follows a rollout's events until it finishes or stops, reconnecting when
/// the connection drops; then prints the summary. Errors (exit non-zero)
/// unless the rollout succeeded.
fn watch(api: &Api, output: Output, id: &str) -> Result<()> {
    let started = Instant::now();
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        // The server writes only when something changes; a long-running
        // tenant can keep it quiet for a while. A quiet connection is
        // reopened, which also notices a server that vanished.
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("tenantplane-cli/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut progress = Progress::new(output);
    let mut failures = 0u32;
    let end = loop {
        match stream_once(api, &agent, id, &mut progress) {
            Ok(Segment::Done(r)) | Ok(Segment::Stopped(r)) => break r,
            Ok(Segment::Dropped {
                reason,
                events,
                quiet,
            }) => {
                if events > 0 {
                    failures = 0;
                }
                if quiet {
                    continue;
                }
                failures += 1;
                if failures > RECONNECTS {
                    progress.finish();
                    bail!(
                        "lost the event stream of rollout {id} and gave up after {RECONNECTS} \
                         reconnects ({reason}); the rollout itself goes on: \
                         `tenantplane rollout status {id}`"
                    );
                }
                progress.note(&format!(
                    "event stream of rollout {id} interrupted ({reason}); reconnecting ({failures}/{RECONNECTS})"
                ));
                std::thread::sleep(Duration::from_secs(u64::from(failures)));
            }
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        }
    };
    progress.finish();
    let elapsed = started.elapsed();
    let failed = if int(&end["counts"]["failed"]) > 0 {
        match failed_tasks(api.client, id) {
            Ok(tasks) => tasks,
            Err(e) => {
                eprintln!("could not list the failed tenants: {e:#}");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    summary(output, &end, &failed, elapsed);
    outcome(id, &end)
}

/// One connection to `GET /v1/rollouts/{id}/events`. Errors are final (a 4xx
/// such as 404 or 401); everything else is a `Segment`.
fn stream_once(
    api: &Api,
    agent: &ureq::Agent,
    id: &str,
    progress: &mut Progress,
) -> Result<Segment> {
    let path = rollout_path(id, "/events");
    let mut req = agent
        .get(&format!("{}{path}", api.base))
        .set("Accept", "text/event-stream");
    if let Some(t) = api.token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let dropped = |reason: String, events: usize| Segment::Dropped {
        reason,
        events,
        quiet: false,
    };
    let resp = match req.call() {
        Ok(resp) => resp,
        Err(ureq::Error::Status(code, resp)) => {
            let body: Value = resp.into_json().unwrap_or(Value::Null);
            let message = body["error"]["message"].as_str().unwrap_or("(no message)");
            if code >= 500 {
                return Ok(dropped(format!("HTTP {code}: {message}"), 0));
            }
            let hint = if code == 401 {
                " (set TENANTPLANE_TOKEN or --token)"
            } else {
                ""
            };
            bail!("GET {path}: HTTP {code}: {message}{hint}");
        }
        Err(e) => {
            return Ok(dropped(
                format!("{e} (is tenantplane running? TENANTPLANE_URL)"),
                0,
            ))
        }
    };
    Ok(read_events(BufReader::new(resp.into_reader()), progress))
}

/// Reads server-sent events (`event:`/`data:` lines, a blank line ends an
/// event) until the rollout finishes or stops, or the stream ends.
fn read_events(reader: impl BufRead, progress: &mut Progress) -> Segment {
    let dropped = |reason: String, events: usize| Segment::Dropped {
        reason,
        events,
        quiet: false,
    };
    let mut events = 0;
    let mut kind = String::new();
    let mut data = String::new();
    for line in reader.lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                // A quiet stream after a first event: reopen without alarm.
                let quiet = events > 0
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    );
                return Segment::Dropped {
                    reason: e.to_string(),
                    events,
                    quiet,
                };
            }
        };
        if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim().to_string();
            continue;
        }
        if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
            continue;
        }
        if !line.is_empty() {
            continue; // comments (":") and fields we do not use
        }
        let (k, d) = (std::mem::take(&mut kind), std::mem::take(&mut data));
        if d.is_empty() {
            continue;
        }
        events += 1;
        let value: Value = match serde_json::from_str(&d) {
            Ok(v) => v,
            Err(e) => {
                progress.note(&format!("ignoring an unreadable {k:?} event: {e}"));
                continue;
            }
        };
        match k.as_str() {
            "error" => {
                let message = value["message"].as_str().unwrap_or("(no message)");
                return dropped(format!("server error: {message}"), events);
            }
            "done" => {
                progress.update(&value);
                return Segment::Done(value);
            }
            // The server is stopping (a restart, a rolling deploy): come
            // back without counting it as a failure.
            "shutdown" => {
                return Segment::Dropped {
                    reason: "the server is stopping".into(),
                    events,
                    quiet: true,
                }
            }
            _ => {
                progress.update(&value);
                let state = str_of(&value["state"]);
                if FINISHED.contains(&state) {
                    return Segment::Done(value);
                }
                if STOPPED.contains(&state) {
                    return Segment::Stopped(value);
                }
            }
        }
    }
    dropped("the server closed the stream".into(), events)
}

/// Every failed task of the rollout, all pages.
fn failed_tasks(client: &Client, id: &str) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = rollout_path(id, "/tasks?state=failed&limit=1000");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = client.call("GET", &path, None)?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(items),
        }
    }
}

/// One line of an error for a table cell.
fn one_line(s: &str, max: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn summary(output: Output, r: &Value, failed: &[Value], elapsed: Duration) {
    if output == Output::Json {
        let doc = json!({
            "rollout": r,
            "elapsed_s": elapsed.as_secs_f64(),
            "failed_tasks": failed,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return;
    }
    let version = r["target_version"]
        .as_str()
        .map(|v| format!(" = {v}"))
        .unwrap_or_default();
    println!();
    println!("rollout {} {}", str_of(&r["id"]), str_of(&r["state"]));
    println!("  target   {}{version}", str_of(&r["target"]));
    println!(
        "  tenants  {}/{} done: {}",
        finished_count(r),
        int(&r["total"]),
        counts_text(r)
    );
    println!("  elapsed  {}", duration_text(elapsed.as_secs_f64()));
    if let Some(why) = r["halt_reason"].as_str() {
        println!("  halted   {why}");
    }
    if !failed.is_empty() {
        println!();
        println!("failed tenants:");
        let rows: Vec<Value> = failed
            .iter()
            .map(|t| {
                json!({
                    "slug": t["slug"],
                    "error_version": t["error_version"],
                    "last_error": t["last_error"].as_str().map(|e| one_line(e, 600)),
                })
            })
            .collect();
        print(Output::Table, &Value::Null, &rows, FAILED_COLUMNS);
    }
}

/// Ok only for a succeeded rollout; otherwise an error saying what to do.
fn outcome(id: &str, r: &Value) -> Result<()> {
    let failed = int(&r["counts"]["failed"]);
    match str_of(&r["state"]) {
        "succeeded" => Ok(()),
        "failed" => Err(anyhow!(
            "rollout {id} failed: {failed} tenant(s) failed; queue them again with `tenantplane rollout retry {id}`"
        )),
        "cancelled" => Err(anyhow!(
            "rollout {id} was cancelled before every tenant was migrated"
        )),
        "halted" => Err(anyhow!(
            "rollout {id} is halted ({}); fix the failed tenants, then continue with \
             `tenantplane rollout resume {id}` (or `retry {id}` to queue the failed ones again, \
             `cancel {id}` to stop)",
            r["halt_reason"].as_str().unwrap_or("failure budget exceeded")
        )),
        "paused" => Err(anyhow!(
            "rollout {id} is paused; continue with `tenantplane rollout resume {id}`"
        )),
        other => Err(anyhow!("rollout {id} ended in unexpected state {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_parse() {
        let w = parse_wave;
        assert_eq!(
            w("canary=10"),
            Ok(WaveArg {
                name: Some("canary".into()),
                size: WaveSize::Count(10),
                hold: None,
            })
        );
        assert_eq!(
            w("5%"),
            Ok(WaveArg {
                name: None,
                size: WaveSize::Percent(5.0),
                hold: None,
            })
        );
        assert_eq!(
            w("early=2.5%"),
            Ok(WaveArg {
                name: Some("early".into()),
                size: WaveSize::Percent(2.5),
                hold: None,
            })
        );
        assert_eq!(
            w("canary=5:hold=300").map(|w| w.hold),
            Ok(Some(WaveHoldArg::Seconds(300)))
        );
        assert_eq!(
            w("canary=5:manual").map(|w| w.hold),
            Ok(Some(WaveHoldArg::Manual))
        );
        for bad in [
            "0%",
            "101%",
            "0",
            "x",
            "=5",
            "canary=",
            "nan%",
            "-3",
            "5%%",
            "5:hold=",
            "5:wait",
            "5:hold=-1",
        ] {
            assert!(w(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_parse() {
        assert_eq!(parse_label("a=b"), Ok(("a".into(), "b".into())));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=v").is_err());
    }

    fn parse(text: &str) -> Segment {
        let mut progress = Progress::Lines {
            to_stderr: true,
            started: Instant::now(),
            last: None,
        };
        read_events(text.as_bytes(), &mut progress)
    }

    #[test]
    fn events_parse() {
        let running = r#"{"id":"r1","state":"running","total":2,"counts":{"succeeded":1}}"#;
        let halted = r#"{"id":"r1","state":"halted","total":2,"counts":{"failed":1}}"#;
        let done = r#"{"id":"r1","state":"succeeded","total":2,"counts":{"succeeded":2}}"#;
        let text =
            format!(": comment\nevent: progress\ndata: {running}\n\nevent: done\ndata: {done}\n\n");
        assert!(matches!(parse(&text), Segment::Done(r) if r["state"] == "succeeded"));
        let text =
            format!("event: progress\ndata: {running}\n\nevent: progress\ndata: {halted}\n\n");
        assert!(matches!(parse(&text), Segment::Stopped(r) if r["state"] == "halted"));
        // Cut off mid-event: the partial event is dropped, one was delivered.
        let text = format!("event: progress\ndata: {running}\n\nevent: done\ndata: {done}");
        assert!(matches!(
            parse(&text),
            Segment::Dropped {
                events: 1,
                quiet: false,
                ..
            }
        ));
        let text = "event: error\ndata: {\"message\":\"db gone\"}\n\n";
        assert!(
            matches!(parse(text), Segment::Dropped { reason, .. } if reason.contains("db gone"))
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration_text(4.31), "4.3s");
        assert_eq!(duration_text(65.0), "1m05s");
        assert_eq!(duration_text(7260.0), "2h01m");
    }
}
