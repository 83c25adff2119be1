//! `serve`, `api` and `worker`: opening the control database and starting the
//! parts in one process.

use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tenantplane_api::{AppState, Shutdown};

use tenantplane_access::tokens;
use tenantplane_control_db::ControlDb;
use tenantplane_flags::plans;
use tenantplane_flags::snapshot::FlagCache;
use tenantplane_fleet::servers;

use crate::config::Config;
use crate::demo;

#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub api: bool,
    pub worker: bool,
    pub demo: bool,
}

/// Opens (and migrates) the control database and registers the default
/// SQLite server, plans and schedules on first start.
pub fn open_control(config: &Config) -> Result<ControlDb> {
    let db = ControlDb::open_with(&config.control_db, config.control_db_pool_size)
        .context("opening the control database")?;
    servers::ensure_default_in(&db, &config.data_dir).context("registering the default server")?;
    plans::ensure_defaults(&db).context("creating the default plans")?;
    // Here and not only in the scheduler thread: once the process says it
    // is listening, the default schedules exist (a client reading
    // `nightly-backup` right after start raced the scheduler's first tick).
    tenantplane_jobs::schedules::ensure_defaults(&db).context("creating the default schedules")?;
    Ok(db)
}

pub fn run(config: &Config, parts: Parts) -> Result<()> {
    let db = open_control(config)?;
    tracing::info!(config = ?config, "control database ready");
    if parts.demo {
        demo::ensure_demo_fleet(&db)?;
    }
    let grace = Duration::from_secs(config.shutdown_grace_s);
    let worker = if parts.worker {
        let mut wc = tenantplane_worker::WorkerConfig::default();
        if let Some(n) = config.worker_threads {
            wc.threads = n;
        }
        wc.lease = std::time::Duration::from_secs(config.worker_lease_s);
        wc.backup_store = Some(config.backup_store.clone());
        wc.notify = config.notify.clone();
        wc.tenant_db_per_server = config.tenant_db_pool_size;
        wc.health_addr = config.worker_health_addr.clone();
        let w = tenantplane_worker::start(db.clone(), wc)?;
        if let Some(addr) = w.health_addr() {
            // Before "worker running": whoever waits for that line can
            // probe at once (the tests read the address from here).
            println!("tenantplane worker health on http://{addr}");
        }
        Some(w)
    } else {
        None
    };
    // On SIGTERM/SIGINT the API drains and the worker hands back what it
    // cannot finish, side by side within the one grace period.
    let (signalled, on_signal) = mpsc::channel::<()>();
    let stopper = worker.map(|w| {
        std::thread::spawn(move || {
            // A message, or the sender gone (the API ended on its own).
            let _ = on_signal.recv();
            w.stop_within(grace)
        })
    });
    let result = if parts.api {
        run_api(config, db, grace, signalled)
    } else {
        let waited = wait_for_signal();
        drop(signalled);
        waited
    };
    if let Some(t) = stopper {
        match t.join() {
            Ok(stopped) => tracing::info!(?stopped, "worker stopped"),
            Err(_) => tracing::error!("the worker stopper panicked"),
        }
    }
    result
}

fn run_api(
    config: &Config,
    db: ControlDb,
    grace: Duration,
    signalled: mpsc::Sender<()>,
) -> Result<()> {
    let (operator, generated) = tokens::bootstrap_operator(&db, config.operator_token.as_deref())
        .context("setting up the operator token")?;
    if let Some(token) = generated {
        // Printed once, on purpose, to stdout and never to the log.
        println!("operator token (shown once, stored hashed): {token}");
    }
    tenantplane_api::rate_limit::configure(
        u32::try_from(config.tenant_rate_per_s).unwrap_or(u32::MAX),
    );
    let listener =
        TcpListener::bind(&config.listen).with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let flags = FlagCache::load(&db).context("loading plans, overrides and keys")?;
    let backups = tenantplane_backup::store::open(&config.backup_store).with_context(|| {
        format!(
            "opening the backup store {}",
            tenantplane_fleet::urls::redact_url(&config.backup_store)
        )
    })?;
    let stop_refresh = Arc::new(AtomicBool::new(false));
    let refresher = flags.start_refresher(stop_refresh.clone())?;
    let served = actix_web::rt::System::new().block_on(async move {
        let shutdown = Shutdown::new(grace);
        let state = AppState {
            db,
            operator,
            flags,
            backups,
            webhook_allow_private: config.notify.allow_private,
            shutdown: shutdown.clone(),
        };
        let server = tenantplane_api::server(listener, state, workers)?;
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            if let Err(e) = signal().await {
                tracing::error!(error = %e, "cannot wait for signals; stop with SIGKILL");
                return;
            }
            tracing::info!(
                grace_s = grace.as_secs(),
                "signal received, stopping: no new connections, requests in flight finish"
            );
            shutdown.begin();
            let _ = signalled.send(());
            handle.stop(true).await;
        });
        println!("tenantplane listening on http://{addr}");
        tracing::info!(%addr, "API listening");
        server.await
    });
    stop_refresh.store(true, Ordering::SeqCst);
    if refresher.join().is_err() {
        tracing::error!("the feature refresher panicked");
    }
    served?;
    tracing::info!("API stopped");
    Ok(())
}

/// The first SIGINT or SIGTERM.
async fn signal() -> std::io::Result<()> {
    let mut term =
        actix_web::rt::signal::unix::signal(actix_web::rt::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = actix_web::rt::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

/// `worker` alone: run until SIGINT/SIGTERM.
fn wait_for_signal() -> Result<()> {
    println!("tenantplane worker running");
    actix_web::rt::System::new().block_on(signal())?;
    tracing::info!("signal received, stopping");
    Ok(())
}
