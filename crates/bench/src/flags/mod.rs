//! `tenantplane-bench flags`: `GET /v1/tenant/features` under wrk, against
//! the same answer built by reading the control database on every request.
//!
//! 1. A SQLite control database in a scratch directory with the default
//!    server and plans, N active tenants (a mix of plans, schema versions,
//!    trials and overrides) and one tenant key each, inserted in bulk. Tenant
//!    databases are not created: evaluation never touches them (`fleet`).
//! 2. The real API (`tenantplane_api::server`) on 127.0.0.1:0 with the flag
//!    refresher running, and next to it a second server with the same routes
//!    and middleware plus `/bench/features-from-db`, which answers the same
//!    JSON from the control database (diesel on a blocking thread) on every
//!    request: the baseline (`servers`).
//! 3. wrk with a Lua script that sends a random tenant key per request, on
//!    `/healthz` (the server's ceiling), `/v1/tenant/features` (in memory) and
//!    the baseline, with the same settings; any non-2xx answer or socket error
//!    fails the bench (`wrk`).
//!
//! See `docs/benchmark-flags.md` for what the figures mean and the measured ones.

mod fleet;
mod servers;
mod wrk;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tenantplane_access::tokens;
use tenantplane_api::AppState;
use tenantplane_control_db::ControlDb;
use tenantplane_flags::plans as plan_defaults;
use tenantplane_flags::snapshot::FlagCache;
use tenantplane_migrations::catalogue::FEATURES;
use uuid::Uuid;

use servers::Servers;
use wrk::{ms, WrkResult};

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

/// Options of `tenantplane-bench flags`.
#[derive(Debug, clap::Args)]
pub struct FlagsArgs {
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
pub fn run(args: FlagsArgs) -> Result<()> {
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
    let wrk_version = wrk::version(&args.wrk)?;
    let mut scratch = Scratch::create(args.dir.as_deref())?;
    let result = bench(&args, &scratch.dir, &wrk_version);
    let cleaned = scratch.cleanup();
    result?;
    cleaned
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

fn bench(args: &FlagsArgs, dir: &Path, wrk_version: &str) -> Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!("scratch directory {}", dir.display());
    let url = format!("sqlite://{}", dir.join("control.db").display());
    let db = ControlDb::open(&url).context("opening the bench control database")?;
    tenantplane_fleet::servers::ensure_default(&db, dir)
        .context("registering the default server")?;
    plan_defaults::ensure_defaults(&db).context("creating the default plans")?;

    let started = Instant::now();
    let keys = fleet::populate(&db, args.tenants)?;
    eprintln!(
        "inserted {} tenants and keys in {:.1} s",
        args.tenants,
        started.elapsed().as_secs_f64()
    );
    let keys_file = dir.join("keys.txt");
    fleet::write_keys(&keys_file, &keys)?;

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
    let backups = tenantplane_api::open_backup_store(&dir.join("backups").display().to_string())
        .context("opening the backup store")?;
    let state = || AppState {
        db: db.clone(),
        operator: operator.clone(),
        flags: flags.clone(),
        backups: backups.clone(),
        webhook_allow_private: false,
        shutdown: Default::default(),
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
        "tenantplane-bench flags: {} tenants; {wrk_version}: -t{} -c{} -d{}s; {} server workers; {cores} cores",
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

struct Measured {
    health: WrkResult,
    memory: WrkResult,
    db: WrkResult,
}

fn measure(
    args: &FlagsArgs,
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
        wrk::write_script(&script, path, keys_file)?;
        let url = format!("{base}{path}");
        eprintln!(
            "{label}: warm-up {WARMUP_S} s, then {} s: {url}",
            args.duration
        );
        wrk::run(args, &script, &url, WARMUP_S).with_context(|| format!("warming up {label}"))?;
        let r = wrk::run(args, &script, &url, args.duration).with_context(|| label.to_string())?;
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
