//! The HTTP API of tenantplane (actix-web): JSON, bearer auth, OpenAPI.
//!
//! Handlers never touch the database on the event loop: every call into the
//! domain crate goes through [`error::blocking`].

pub mod auth;
mod body_timeout;
pub mod console;
pub mod error;
mod idempotent;
mod json_body;
pub mod openapi;
pub mod rate_limit;
pub mod request_id;
pub mod routes;
mod text_guard;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpRequest, HttpServer};
use tenantplane_access::tokens::OperatorTokens;
use tenantplane_control_db::ControlDb;
use tenantplane_flags::snapshot::FlagCache;

use crate::error::ApiError;

/// The backup store's interface and opener, re-exported so code that builds
/// an [`AppState`] need not depend on the backup crate itself.
pub use tenantplane_backup::{store::open as open_backup_store, ArtifactStore};

/// Shared by every handler.
pub struct AppState {
    pub db: ControlDb,
    pub operator: OperatorTokens,
    /// Feature evaluation and tenant keys, in memory.
    pub flags: FlagCache,
    /// Where backup artifacts are stored (`backup_store` in the config).
    pub backups: Arc<dyn ArtifactStore>,
    /// Webhook URLs may point at private and loopback addresses
    /// (`TENANTPLANE_WEBHOOK_ALLOW_PRIVATE`).
    pub webhook_allow_private: bool,
    pub shutdown: Shutdown,
}

/// The process is stopping: long-lived responses (event streams) end with a
/// reconnect hint, and the server gives requests in flight `grace` to
/// finish.
#[derive(Clone, Debug)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    pub grace: Duration,
}

impl Shutdown {
    pub fn new(grace: Duration) -> Shutdown {
        Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
            grace,
        }
    }

    pub fn begin(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    pub fn is_begun(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Default for Shutdown {
    /// 30 s, below Kubernetes' default `terminationGracePeriodSeconds`.
    fn default() -> Self {
        Shutdown::new(Duration::from_secs(30))
    }
}

impl AppState {
    /// After this process changed something: reload the snapshot now, so its
    /// own next answer shows the change (other processes follow within the
    /// refresh interval).
    pub async fn changed(&self) -> Result<(), ApiError> {
        let flags = self.flags.clone();
        error::blocking(move || flags.reload()).await
    }
}

/// Registers every route and the JSON error handlers.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(256 * 1024)
            .error_handler(|err, _| {
                ApiError::BadRequest(format!("invalid JSON body: {err}")).into()
            }),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _| ApiError::BadRequest(format!("invalid path: {err}")).into()),
    )
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        ApiError::BadRequest(format!("invalid query string: {err}")).into()
    }))
    // actix tries routes in registration order: the tenant hot path
    // (fixed paths) goes first, before every route with a `{param}` regex.
    .service(routes::tenant::features)
    .service(routes::tenant::me)
    .service(routes::tenant::preview)
    .service(routes::tenant::change_plan)
    .service(routes::exports::tenant_request)
    .service(routes::exports::tenant_get)
    .service(routes::exports::download)
    .service(routes::health::healthz)
    .service(routes::health::readyz)
    .service(openapi::openapi_json)
    .service(routes::tenants::list)
    .service(routes::tenants::create)
    .service(routes::tenants::get)
    .service(routes::tenants::update)
    .service(routes::tenants::remove)
    .service(routes::servers::list)
    .service(routes::servers::create)
    .service(routes::servers::get)
    .service(routes::servers::update)
    .service(routes::servers::drain)
    .service(routes::servers::drain_status)
    .service(routes::moves::start)
    .service(routes::moves::status)
    .service(routes::rollouts::create)
    .service(routes::rollouts::list)
    .service(routes::rollouts::get)
    .service(routes::rollouts::tasks)
    .service(routes::rollouts::pause)
    .service(routes::rollouts::resume)
    .service(routes::rollouts::cancel)
    .service(routes::rollouts::retry)
    .service(routes::rollouts::promote)
    .service(routes::rollouts::events)
    .service(routes::metrics::prometheus)
    .service(routes::plans::list)
    .service(routes::plans::create)
    .service(routes::plans::get)
    .service(routes::plans::update)
    .service(routes::plans::feature_catalogue)
    .service(routes::features::tenant_features)
    .service(routes::features::set_override)
    .service(routes::features::clear_override)
    .service(routes::features::issue_key)
    .service(routes::features::revoke_key)
    .service(routes::audit::list)
    .service(routes::schedules::list)
    .service(routes::schedules::create)
    .service(routes::schedules::get)
    .service(routes::schedules::update)
    .service(routes::schedules::remove)
    .service(routes::schedules::runs)
    .service(routes::backups::retention)
    .service(routes::backups::create)
    .service(routes::backups::list)
    .service(routes::backups::get)
    .service(routes::backups::verify)
    .service(routes::backups::pin)
    .service(routes::backups::unpin)
    .service(routes::backups::remove)
    .service(routes::backups::restore)
    .service(routes::exports::create)
    .service(routes::exports::get)
    .service(routes::webhooks::list)
    .service(routes::webhooks::create)
    .service(routes::webhooks::get)
    .service(routes::webhooks::update)
    .service(routes::webhooks::remove)
    .service(routes::webhooks::rotate_secret)
    .service(routes::webhooks::replay)
    .service(routes::outbox::list)
    .service(routes::outbox::get)
    .service(routes::outbox::retry)
    .configure(console::configure);
}

/// No route took the request: 405 with `Allow` when the path exists with
/// other methods (OPTIONS and TRACE included), else 404.
async fn no_route(req: HttpRequest) -> actix_web::HttpResponse {
    static METHODS: std::sync::OnceLock<Vec<(String, Vec<&'static str>)>> =
        std::sync::OnceLock::new();
    let table = METHODS.get_or_init(openapi::methods_by_path);
    // The most specific templates only (most literal segments), as the
    // router prefers them: `/v1/backups/retention` answers POST only, even
    // though `/v1/backups/{id}` would match its shape.
    let matching: Vec<&(String, Vec<&'static str>)> = table
        .iter()
        .filter(|(pattern, _)| openapi::path_matches(pattern, req.path()))
        .collect();
    let literal = |p: &str| p.split('/').filter(|s| !s.starts_with('{')).count();
    let best = matching.iter().map(|(p, _)| literal(p)).max().unwrap_or(0);
    let allowed: Vec<&str> = matching
        .iter()
        .filter(|(p, _)| literal(p) == best)
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    let error = if allowed.is_empty() {
        ApiError::NoRoute(format!("{} {}", req.method(), req.path()))
    } else {
        ApiError::MethodNotAllowed(format!(
            "{} is not allowed on {}; allowed: {}",
            req.method(),
            req.path(),
            allowed.join(", ")
        ))
    };
    let mut resp = actix_web::ResponseError::error_response(&error);
    if !allowed.is_empty() {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allowed.join(", ")) {
            resp.headers_mut().insert(actix_web::http::header::ALLOW, v);
        }
    }
    resp
}

/// Serves the API on an already bound listener until the server is stopped.
pub fn server(
    listener: TcpListener,
    state: AppState,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let grace = state.shutdown.grace.as_secs().max(1);
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::from_fn(json_body::middleware))
            .wrap(middleware::from_fn(body_timeout::middleware))
            .wrap(middleware::from_fn(text_guard::middleware))
            .wrap(middleware::from_fn(request_id::middleware))
            .configure(configure)
            .default_service(web::to(no_route))
    })
    .workers(workers)
    // The binary handles SIGTERM itself (it also stops the worker) and
    // calls the server handle's graceful stop.
    .disable_signals()
    .shutdown_timeout(grace)
    .listen(listener)?
    .run();
    Ok(server)
}
