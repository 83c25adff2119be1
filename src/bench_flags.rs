//! `tenantplane bench-flags`: `GET /v1/tenant/features` under wrk, against the
//! same answer built by reading the control database on every request.
//!
//! 1. A SQLite control database in a scratch directory with the default
//!    server and plans, N active tenants (a mix of plans, schema versions,
//!    trials and overrides) and one tenant key each, inserted in bulk. Tenant
//!    databases are not created: evaluation never touches them.
//! 2. The real API (`tenantplane_api::server`) on 127.0.0.1:0 with the flag
//!    refresher running, and next to it a second server with the same routes
//!    and middleware plus `/bench/features-from-db`, which answers the same
//!    JSON from the control database (diesel on a blocking thread) on every
//!    request: the baseline.
//! 3. wrk with a Lua script that sends a random tenant key per request, on
//!    `/healthz` (the server's ceiling), `/v1/tenant/features` (in memory) and
//!    the baseline, with the same settings; any non-2xx answer or socket error
//!    fails the bench.
//!
//! See `docs/benchmark-flags.md` for what the figures mean and the measured ones.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{middleware, web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::{anyhow, bail, ensure, Context, Result};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use tenantplane_access::tokens;
use tenantplane_api::error::{blocking, ApiError};
use tenantplane_api::AppState;
use tenantplane_control_db::schema::{
    api_tokens, database_servers, feature_overrides, plan_features, plans, tenants,
};
use tenantplane_control_db::{ControlConnection, ControlDb};
use tenantplane_flags::plans as plan_defaults;
use tenantplane_flags::snapshot::{
    FlagCache, OverrideInfo, PlanInfo, Snapshot, TenantFeatures, TenantInfo,
};
use tenantplane_fleet::servers;
use tenantplane_migrations::catalogue::{self, FEATURES};
use uuid::Uuid;

/// Rows per multi-row INSERT.
const CHUNK: usize = 1000;
/// Each measured run is preceded by a warm-up of this many seconds.
const WARMUP_S: u64 = 1;
/// Tenants whose in-memory and per-request-DB answers are compared first.
const SAMPLE: usize = 20;
/// The target of the issue.
const TARGET_RPS: f64 = 30_000.0;
const TARGET_P99_MS: f64 = 5.0;
const FEATURES_PATH: &str = "/v1/tenant/features";
const DB_PATH: &str = "/bench/features-from-db";
const HEALTH_PATH: &str = "/healthz";

/// Options of `tenantplane bench-flags`.
#[derive(Debug, clap::Args)]
pub struct BenchFlagsArgs {
    /// Tenants (each with one key).
    #[arg(long, default_value_t = 10_000)]
    tenants: usize,
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    wrk_threads: u32,
    /// actix workers of the API.
    #[arg(long, default_value_t = 2)]
    server_workers: usize,
    /// The wrk binary.
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// Scratch directory (default: a new directory under the temp dir,
    /// removed at the end; a directory given here is kept).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Entry point of the subcommand.
pub fn run(args: BenchFlagsArgs) -> Result<()> {
    init_logging();
    ensure!(args.tenants >= 1, "--tenants must be at least 1");
    ensure!(args.duration >= 1, "--duration must be at least 1 second");
    ensure!(args.wrk_threads >= 1, "--wrk-threads must be at least 1");
    ensure!(
        args.connections >= args.wrk_threads,
        "--connections must be at least --wrk-threads"
    );
    ensure!(
        args.server_workers >= 1,
        "--server-workers must be at least 1"
    );
    let wrk_version = wrk_version(&args.wrk)?;
    let mut scratch = Scratch::create(args.dir.as_deref())?;
    let result = bench(&args, &scratch.dir, &wrk_version);
    let cleaned = scratch.cleanup();
    result?;
    cleaned
}

fn init_logging() {
    // Per-request log lines are `info`: off by default here, or they would
    // flood stderr and measure the terminal.
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENANTPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `wrk --version`'s first line, without the copyright (wrk exits 1 there).
fn wrk_version(wrk: &Path) -> Result<String> {
    let out = Command::new(wrk)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running {} (install it with `apt-get install -y wrk`, or pass --wrk PATH)",
                wrk.display()
            )
        })?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let first = text.lines().next().unwrap_or_default();
    ensure!(
        first.starts_with("wrk"),
        "{} does not look like wrk: {first:?}",
        wrk.display()
    );
    Ok(first
        .split(" Copyright")
        .next()
        .unwrap_or(first)
        .trim()
        .to_string())
}

/// The scratch directory: a fresh one under the temp dir (removed at the end),
/// or the one given with `--dir` (kept).
struct Scratch {
    dir: PathBuf,
    remove: bool,
    done: bool,
}

impl Scratch {
    fn create(given: Option<&Path>) -> Result<Scratch> {
        let (dir, remove) = match given {
            Some(d) => (
                std::path::absolute(d)
                    .with_context(|| format!("resolving --dir {}", d.display()))?,
                false,
            ),
            None => {
                let tag = Uuid::new_v4().simple().to_string();
                (
                    std::env::temp_dir().join(format!("tp_bench_flags_{}", &tag[..12])),
                    true,
                )
            }
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating scratch directory {}", dir.display()))?;
        let scratch = Scratch {
            dir,
            remove,
            done: false,
        };
        ensure!(
            !scratch.dir.join("control.db").exists(),
            "{} already holds a control.db; give an empty --dir",
            scratch.dir.display()
        );
        Ok(scratch)
    }

    fn cleanup(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        if !self.remove {
            eprintln!("kept scratch directory {}", self.dir.display());
            return Ok(());
        }
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("{e:#}");
        }
    }
}

fn bench(args: &BenchFlagsArgs, dir: &Path, wrk_version: &str) -> Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!("scratch directory {}", dir.display());
    let url = format!("sqlite://{}", dir.join("control.db").display());
    let db = ControlDb::open(&url).context("opening the bench control database")?;
    servers::ensure_default(&db, dir).context("registering the default server")?;
    plan_defaults::ensure_defaults(&db).context("creating the default plans")?;

    let started = Instant::now();
    let keys = populate(&db, args.tenants)?;
    eprintln!(
        "inserted {} tenants and keys in {:.1} s",
        args.tenants,
        started.elapsed().as_secs_f64()
    );
    let keys_file = dir.join("keys.txt");
    write_keys(&keys_file, &keys)?;

    let flags = FlagCache::load(&db).context("loading the feature snapshot")?;
    let loaded = flags.snapshot().keys.len();
    ensure!(
        loaded == args.tenants,
        "the snapshot holds {loaded} tenant keys, expected {}",
        args.tenants
    );
    let stop_refresh = Arc::new(AtomicBool::new(false));
    let refresher = flags
        .start_refresher(stop_refresh.clone())
        .context("starting the flag refresher")?;
    // The operator token is configured, so nothing is stored.
    let (operator, _) = tokens::bootstrap_operator(&db, Some(&tokens::generate("tp_op_")))
        .context("setting up the operator token")?;
    let state = || AppState {
        db: db.clone(),
        operator: operator.clone(),
        flags: flags.clone(),
    };
    let measured = match Servers::start(state(), state(), args.server_workers) {
        Ok(srv) => {
            eprintln!(
                "API on http://{} (baseline server on http://{})",
                srv.real, srv.baseline
            );
            let measured = measure(args, dir, &keys, &keys_file, &srv);
            let stopped = srv.stop();
            measured.and_then(|m| stopped.map(|()| m))
        }
        Err(e) => Err(e),
    };
    stop_refresh.store(true, Ordering::SeqCst);
    if refresher.join().is_err() {
        bail!("the flag refresher panicked");
    }
    let m = measured?;

    println!(
        "bench-flags: {} tenants; {wrk_version}: -t{} -c{} -d{}s; {} server workers; {cores} cores",
        args.tenants, args.wrk_threads, args.connections, args.duration, args.server_workers
    );
    println!("{:<16}{}", "/healthz:", m.health.summary());
    println!("{:<16}{}", "in-memory:", m.memory.summary());
    println!("{:<16}{}", "per-request DB:", m.db.summary());
    let met = m.memory.rps >= TARGET_RPS && m.memory.p99_ms < TARGET_P99_MS;
    println!(
        "in-memory: {:.0} req/s, p99 {}; per-request DB: {:.0} req/s, p99 {}; ratio {:.1}x; \
         target >= {TARGET_RPS:.0} req/s and p99 < {TARGET_P99_MS} ms: {}",
        m.memory.rps,
        ms(m.memory.p99_ms),
        m.db.rps,
        ms(m.db.p99_ms),
        m.memory.rps / m.db.rps,
        if met { "met" } else { "missed" }
    );
    println!(
        "in-memory evaluation runs at {:.0}% of the /healthz rate on this machine",
        100.0 * m.memory.rps / m.health.rps
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The fleet

#[derive(Insertable)]
#[diesel(table_name = tenants, treat_none_as_default_value = false)]
struct TenantRow {
    id: String,
    slug: String,
    name: String,
    status: &'static str,
    server_id: String,
    schema_version: Option<&'static str>,
    plan_id: Option<String>,
    trial_ends_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = api_tokens, treat_none_as_default_value = false)]
struct KeyRow {
    id: String,
    kind: &'static str,
    tenant_id: Option<String>,
    name: &'static str,
    token_hash: String,
    created_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = feature_overrides, treat_none_as_default_value = false)]
struct OverrideRow {
    tenant_id: String,
    feature: &'static str,
    enabled: bool,
    reason: Option<&'static str>,
    actor: &'static str,
    expires_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
}

/// Head, and the version after each phase that has migrations.
fn schema_versions() -> Result<Vec<&'static str>> {
    let mut v: Vec<&'static str> = (0..=catalogue::MAX_PHASE)
        .filter_map(catalogue::phase_version)
        .collect();
    v.dedup();
    let head = catalogue::head().context("the catalogue has no tenant migrations")?;
    v.retain(|x| *x != head);
    v.push(head);
    Ok(v)
}

/// Inserts the tenants, their keys and some overrides in bulk; returns the
/// keys in tenant order (plaintext, only for the wrk script).
fn populate(db: &ControlDb, n: usize) -> Result<Vec<String>> {
    let mut pooled = db.conn().context("connecting to the control database")?;
    let ControlConnection::Sqlite(conn) = &mut *pooled else {
        bail!("the bench's control database must be SQLite");
    };
    let server_id: String = database_servers::table
        .filter(database_servers::name.eq(servers::DEFAULT_SERVER))
        .select(database_servers::id)
        .first(conn)
        .context("reading the default server")?;
    let plan_rows: Vec<(String, String)> = plans::table
        .select((plans::slug, plans::id))
        .load(conn)
        .context("reading the plans")?;
    let plan = |slug: &str| {
        plan_rows
            .iter()
            .find(|(s, _)| s == slug)
            .map(|(_, id)| id.clone())
            .with_context(|| format!("default plan {slug} missing"))
    };
    let plan_ids = [plan("free")?, plan("standard")?, plan("pro")?];
    let versions = schema_versions()?;
    let head = versions[versions.len() - 1];
    let now = Utc::now().naive_utc();

    let mut tenant_rows = Vec::with_capacity(n);
    let mut key_rows = Vec::with_capacity(n);
    let mut override_rows = Vec::new();
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let id = Uuid::new_v4().to_string();
        // Most shops at head; the rest spread over the phase versions.
        let schema_version = if i % 2 == 0 {
            head
        } else {
            versions[(i / 2) % versions.len()]
        };
        let paid = i % 3 != 0;
        let trial_ends_at = match i % 50 {
            7 if paid => Some(now + chrono::Duration::days(30)),
            13 if paid => Some(now - chrono::Duration::days(1)),
            _ => None,
        };
        tenant_rows.push(TenantRow {
            id: id.clone(),
            slug: format!("bench-{:06}", i + 1),
            name: format!("Bench shop {}", i + 1),
            status: "active",
            server_id: server_id.clone(),
            schema_version: Some(schema_version),
            plan_id: Some(plan_ids[i % 3].clone()),
            trial_ends_at,
            created_at: now,
            updated_at: now,
        });
        let overrides: &[(&'static str, bool, Option<NaiveDateTime>)] = match i % 10 {
            0 => &[("webhooks", true, None), ("sales_heatmap", false, None)],
            5 => &[("ai_assistant", true, Some(now + chrono::Duration::days(7)))],
            _ => &[],
        };
        for &(feature, enabled, expires_at) in overrides {
            override_rows.push(OverrideRow {
                tenant_id: id.clone(),
                feature,
                enabled,
                reason: Some("bench"),
                actor: "system:bench",
                expires_at,
                created_at: now,
            });
        }
        let key = tokens::generate("tp_tk_");
        key_rows.push(KeyRow {
            id: Uuid::new_v4().to_string(),
            kind: "tenant",
            tenant_id: Some(id),
            name: "bench key",
            token_hash: tokens::hash(&key),
            created_at: now,
        });
        keys.push(key);
    }
    for o in &override_rows {
        ensure!(
            catalogue::feature(o.feature).is_some(),
            "feature {} is not in the catalogue",
            o.feature
        );
    }
    conn.immediate_transaction(|c| {
        for chunk in tenant_rows.chunks(CHUNK) {
            diesel::insert_into(tenants::table)
                .values(chunk)
                .execute(c)?;
        }
        diesel::QueryResult::Ok(())
    })
    .context("inserting tenants")?;
    conn.immediate_transaction(|c| {
        for chunk in key_rows.chunks(CHUNK) {
            diesel::insert_into(api_tokens::table)
                .values(chunk)
                .execute(c)?;
        }
        for chunk in override_rows.chunks(CHUNK) {
            diesel::insert_into(feature_overrides::table)
                .values(chunk)
                .execute(c)?;
        }
        diesel::QueryResult::Ok(())
    })
    .context("inserting tenant keys and overrides")?;
    Ok(keys)
}

fn write_keys(path: &Path, keys: &[String]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    for k in keys {
        writeln!(w, "{k}")?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------
// The baseline: the same answer from the control database, every request

fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("expected Authorization: Bearer <token>".into()))
}

async fn features_from_db(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let hash = tokens::hash(bearer(&req)?);
    let db = state.db.clone();
    match blocking(move || evaluate_from_db(&db, &hash)).await? {
        Some(f) => Ok(HttpResponse::Ok().json(f)),
        None => Err(ApiError::Unauthorized("invalid or revoked key".into())),
    }
}

type PlanRow = (String, String, bool, Option<String>);
/// id, slug, status, plan, trial end, schema version.
type TenantTuple = (
    String,
    String,
    String,
    Option<String>,
    Option<NaiveDateTime>,
    Option<String>,
);

/// Key → tenant → plan (and its fallback) → plan features → overrides, then
/// the same evaluation on a one-tenant snapshot. `None`: unknown key.
fn evaluate_from_db(
    db: &ControlDb,
    hash: &str,
) -> tenantplane_control_db::Result<Option<TenantFeatures>> {
    let mut pooled = db.conn()?;
    let conn = &mut *pooled;
    let tenant_id: Option<Option<String>> = api_tokens::table
        .filter(api_tokens::token_hash.eq(hash))
        .filter(api_tokens::kind.eq("tenant"))
        .filter(api_tokens::revoked_at.is_null())
        .select(api_tokens::tenant_id)
        .first(conn)
        .optional()?;
    let Some(Some(tenant_id)) = tenant_id else {
        return Ok(None);
    };
    let row: Option<TenantTuple> = tenants::table
        .filter(tenants::id.eq(&tenant_id))
        .filter(tenants::deleted_at.is_null())
        .select((
            tenants::id,
            tenants::slug,
            tenants::status,
            tenants::plan_id,
            tenants::trial_ends_at,
            tenants::schema_version,
        ))
        .first(conn)
        .optional()?;
    let Some((id, slug, status, plan_id, trial_ends_at, schema_version)) = row else {
        return Ok(None);
    };
    let mut snap = Snapshot::default();
    let mut next = plan_id.clone();
    // The plan, then its fallback (what applies once a trial ended).
    for _ in 0..2 {
        let Some(pid) = next.take() else { break };
        let p: Option<PlanRow> = plans::table
            .filter(plans::id.eq(&pid))
            .select((
                plans::id,
                plans::slug,
                plans::active,
                plans::fallback_plan_id,
            ))
            .first(conn)
            .optional()?;
        let Some((id, slug, active, fallback)) = p else {
            break;
        };
        let features = plan_features::table
            .filter(plan_features::plan_id.eq(&id))
            .select(plan_features::feature)
            .load::<String>(conn)?
            .into_iter()
            .collect();
        next = fallback.clone().filter(|f| !snap.plans.contains_key(f));
        snap.plan_by_slug.insert(slug.clone(), id.clone());
        snap.plans.insert(
            id.clone(),
            PlanInfo {
                id,
                slug,
                active,
                features,
                fallback,
            },
        );
    }
    let overrides: Vec<(String, bool, Option<NaiveDateTime>)> = feature_overrides::table
        .filter(feature_overrides::tenant_id.eq(&id))
        .select((
            feature_overrides::feature,
            feature_overrides::enabled,
            feature_overrides::expires_at,
        ))
        .load(conn)?;
    snap.overrides.insert(
        id.clone(),
        overrides
            .into_iter()
            .map(|(feature, enabled, expires_at)| OverrideInfo {
                feature,
                enabled,
                expires_at,
            })
            .collect(),
    );
    let tenant = TenantInfo {
        id,
        slug,
        status,
        plan_id,
        trial_ends_at,
        schema_version,
    };
    Ok(Some(snap.evaluate(&tenant, Utc::now().naive_utc())))
}

// ---------------------------------------------------------------------------
// The servers

/// The real API, and the baseline server (the same app plus the baseline
/// route), on one actix system in a background thread.
struct Servers {
    real: SocketAddr,
    baseline: SocketAddr,
    handles: [ServerHandle; 2],
    thread: JoinHandle<std::io::Result<()>>,
}

impl Servers {
    fn start(real_state: AppState, baseline_state: AppState, workers: usize) -> Result<Servers> {
        let bind = || TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0");
        let (real_l, baseline_l) = (bind()?, bind()?);
        let real = real_l.local_addr()?;
        let baseline = baseline_l.local_addr()?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bench-api".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let real_srv = tenantplane_api::server(real_l, real_state, workers)?;
                    let base_srv = baseline_server(baseline_l, baseline_state, workers)?;
                    // The receiver only goes away when start() gave up.
                    let _ = tx.send([real_srv.handle(), base_srv.handle()]);
                    tokio::try_join!(real_srv, base_srv).map(|_| ())
                })
            })
            .context("starting the server thread")?;
        match rx.recv() {
            Ok(handles) => Ok(Servers {
                real,
                baseline,
                handles,
                thread,
            }),
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(anyhow!(e).context("starting the API")),
                Ok(Ok(())) => bail!("the API stopped before it started"),
                Err(_) => bail!("the API thread panicked"),
            },
        }
    }

    fn stop(self) -> Result<()> {
        let handles = self.handles;
        actix_web::rt::System::new().block_on(async move {
            for h in &handles {
                h.stop(true).await;
            }
        });
        match self.thread.join() {
            Ok(r) => r.context("running the API"),
            Err(_) => bail!("the API thread panicked"),
        }
    }
}

fn baseline_server(
    listener: TcpListener,
    state: AppState,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(state);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::from_fn(tenantplane_api::request_id::middleware))
            .configure(tenantplane_api::configure)
            .route(DB_PATH, web::get().to(features_from_db))
    })
    .workers(workers)
    .disable_signals()
    .listen(listener)?
    .run())
}

// ---------------------------------------------------------------------------
// Measuring

struct Measured {
    health: WrkResult,
    memory: WrkResult,
    db: WrkResult,
}

fn measure(
    args: &BenchFlagsArgs,
    dir: &Path,
    keys: &[String],
    keys_file: &Path,
    srv: &Servers,
) -> Result<Measured> {
    let real = format!("http://{}", srv.real);
    let baseline = format!("http://{}", srv.baseline);
    check_answers(&real, &baseline, keys)?;
    let run = |label: &str, base: &str, path: &str| -> Result<WrkResult> {
        let script = dir.join(format!("{}.lua", label.replace([' ', '/', '-'], "_")));
        write_script(&script, path, keys_file)?;
        let url = format!("{base}{path}");
        eprintln!(
            "{label}: warm-up {WARMUP_S} s, then {} s: {url}",
            args.duration
        );
        run_wrk(args, &script, &url, WARMUP_S).with_context(|| format!("warming up {label}"))?;
        let r = run_wrk(args, &script, &url, args.duration).with_context(|| label.to_string())?;
        eprintln!("{label}: {}", r.summary());
        Ok(r)
    };
    Ok(Measured {
        health: run("healthz", &real, HEALTH_PATH)?,
        memory: run("in-memory", &real, FEATURES_PATH)?,
        db: run("per-request DB", &baseline, DB_PATH)?,
    })
}

/// Before loading: a sample of keys gets 200 and the same JSON from both
/// routes, with every catalogue feature; an unknown key gets 401 from both.
fn check_answers(real: &str, baseline: &str, keys: &[String]) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let get = |url: &str, key: &str| -> Result<serde_json::Value> {
        agent
            .get(url)
            .set("Authorization", &format!("Bearer {key}"))
            .call()
            .with_context(|| format!("GET {url}"))?
            .into_json()
            .with_context(|| format!("reading the answer of {url}"))
    };
    let step = (keys.len() / SAMPLE).max(1);
    for key in keys.iter().step_by(step).take(SAMPLE) {
        let memory = get(&format!("{real}{FEATURES_PATH}"), key)?;
        let db = get(&format!("{baseline}{DB_PATH}"), key)?;
        let count = memory
            .get("features")
            .and_then(|f| f.as_array())
            .map_or(0, Vec::len);
        ensure!(
            count == FEATURES.len(),
            "{FEATURES_PATH} answered {count} features, the catalogue has {}",
            FEATURES.len()
        );
        ensure!(
            memory == db,
            "the in-memory and per-request-DB answers differ:\n{memory}\n{db}"
        );
    }
    let bogus = tokens::generate("tp_tk_");
    for url in [
        format!("{real}{FEATURES_PATH}"),
        format!("{baseline}{DB_PATH}"),
    ] {
        match get(&url, &bogus) {
            Err(e)
                if matches!(
                    e.downcast_ref::<ureq::Error>(),
                    Some(ureq::Error::Status(401, _))
                ) => {}
            Err(e) => return Err(e.context("an unknown key should get 401")),
            Ok(_) => bail!("{url} accepted an unknown key"),
        }
    }
    eprintln!(
        "checked {} keys: same answers in memory and from the database",
        SAMPLE.min(keys.len())
    );
    Ok(())
}

/// A random tenant key per request; the requests are formatted once per wrk
/// thread so the client spends as little CPU as possible (it shares the
/// machine with the server).
fn write_script(path: &Path, request_path: &str, keys_file: &Path) -> Result<()> {
    let keys = keys_file.display().to_string();
    ensure!(
        !keys.contains("]==]"),
        "unusable path for a Lua string: {keys}"
    );
    let script = format!(
        r#"-- generated by `tenantplane bench-flags`
local path = "{request_path}"
local keyfile = [==[{keys}]==]
local requests = {{}}
local n = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
  for key in io.lines(keyfile) do
    n = n + 1
    requests[n] = wrk.format("GET", path, {{ ["Authorization"] = "Bearer " .. key }})
  end
  if n == 0 then error("no keys in " .. keyfile) end
end

function request()
  return requests[math.random(n)]
end
"#
    );
    std::fs::write(path, script).with_context(|| format!("writing {}", path.display()))
}

#[derive(Debug, Clone)]
struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
}

impl WrkResult {
    fn summary(&self) -> String {
        format!(
            "{:.0} req/s, p50 {}, p99 {} ({} requests)",
            self.rps,
            ms(self.p50_ms),
            ms(self.p99_ms),
            self.requests
        )
    }
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn run_wrk(args: &BenchFlagsArgs, script: &Path, url: &str, seconds: u64) -> Result<WrkResult> {
    let out = Command::new(&args.wrk)
        .arg("-t")
        .arg(args.wrk_threads.to_string())
        .arg("-c")
        .arg(args.connections.to_string())
        .arg("-d")
        .arg(format!("{seconds}s"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .with_context(|| format!("running {}", args.wrk.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "wrk failed ({}):\n{stdout}{stderr}",
        out.status
    );
    parse_wrk(&stdout).with_context(|| format!("wrk's output:\n{stdout}{stderr}"))
}

/// Requests/sec, the 50% and 99% latencies, the request count; an error when
/// wrk saw a non-2xx/3xx answer or a socket error.
fn parse_wrk(out: &str) -> Result<WrkResult> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().context("Requests/sec")?);
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = Some(latency_ms(v.trim())?);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = Some(latency_ms(v.trim())?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            bail!("{} answers were not 2xx", v.trim());
        } else if line.starts_with("Socket errors:") {
            bail!("wrk reported {line}");
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            requests = Some(count.trim().parse::<u64>().context("request count")?);
        }
    }
    let result = WrkResult {
        rps: rps.context("no Requests/sec line")?,
        p50_ms: p50.context("no 50% latency line")?,
        p99_ms: p99.context("no 99% latency line")?,
        requests: requests.context("no request count line")?,
    };
    ensure!(result.requests > 0, "no request completed");
    Ok(result)
}

/// wrk's latency (`812.00us`, `2.31ms`, `1.02s`, `1.50m`) in milliseconds.
fn latency_ms(v: &str) -> Result<f64> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .with_context(|| format!("latency without unit: {v:?}"))?;
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().with_context(|| format!("latency {v:?}"))?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => bail!("unknown latency unit in {v:?}"),
    };
    Ok(num * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_OUTPUT: &str = "Running 10s test @ http://127.0.0.1:1/v1/tenant/features
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.61ms    1.02ms  24.11ms   83.57%
    Req/Sec    20.59k     1.79k   25.06k    70.50%
  Latency Distribution
     50%  812.00us
     75%    1.93ms
     90%    2.88ms
     99%    4.96ms
  409828 requests in 10.00s, 393.85MB read
Requests/sec:  40978.21
Transfer/sec:     39.38MB
";

    #[test]
    fn parses_wrk_output() {
        let r = parse_wrk(SAMPLE_OUTPUT).expect("parses");
        assert_eq!(r.requests, 409_828);
        assert!((r.rps - 40_978.21).abs() < 1e-6);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p99_ms - 4.96).abs() < 1e-9);
        assert!((latency_ms("1.02s").expect("s") - 1020.0).abs() < 1e-9);
    }

    #[test]
    fn non_2xx_and_socket_errors_fail() {
        let bad = SAMPLE_OUTPUT.replace(
            "Requests/sec:",
            "  Non-2xx or 3xx responses: 12\nRequests/sec:",
        );
        assert!(parse_wrk(&bad).is_err());
        let bad = SAMPLE_OUTPUT.replace(
            "Requests/sec:",
            "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec:",
        );
        assert!(parse_wrk(&bad).is_err());
    }

    #[test]
    fn versions_end_at_head() {
        let v = schema_versions().expect("versions");
        assert_eq!(v.last().copied(), catalogue::head());
        assert!(v.len() > 1);
    }
}
