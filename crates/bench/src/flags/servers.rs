//! The real API and the baseline server, side by side on one actix system.

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::{middleware, web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;
use tenantplane_access::tokens;
use tenantplane_api::auth::bearer;
use tenantplane_api::error::{blocking, ApiError};
use tenantplane_api::AppState;
use tenantplane_control_db::ControlDb;
use tenantplane_flags::snapshot::{Snapshot, TenantFeatures};

use super::DB_PATH;

/// The real API, and the baseline server (the same app plus the baseline
/// route), on one actix system in a background thread.
pub(super) struct Servers {
    pub(super) real: SocketAddr,
    pub(super) baseline: SocketAddr,
    handles: [ServerHandle; 2],
    thread: JoinHandle<std::io::Result<()>>,
}

impl Servers {
    pub(super) fn start(
        real_state: AppState,
        baseline_state: AppState,
        workers: usize,
    ) -> Result<Servers> {
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

    pub(super) fn stop(self) -> Result<()> {
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
// The baseline: the same answer from the control database, every request

/// The API's own bearer parsing and key hashing, then [`evaluate_from_db`]
/// on a blocking thread, as a handler that skipped the snapshot would do.
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

/// Key → tenant → plan (and its fallback) → plan features → overrides, read
/// now by `Snapshot::load_for_key` (the row reads `Snapshot::load` makes,
/// narrowed to one key), then the same `Snapshot::evaluate` as the API.
/// `None`: unknown or revoked key.
fn evaluate_from_db(
    db: &ControlDb,
    hash: &str,
) -> tenantplane_control_db::Result<Option<TenantFeatures>> {
    let loaded = Snapshot::load_for_key(&mut *db.conn()?, hash)?;
    Ok(loaded.map(|(snap, tenant)| snap.evaluate(&tenant, Utc::now().naive_utc())))
}
