//! The operator console: server-rendered HTML at `/console` (askama
//! templates compiled in, a vendored htmx and its SSE extension served from
//! the binary). Every page works as plain forms with POST-redirect-GET;
//! htmx only enhances (live rollout progress over SSE). The pages call the
//! same domain functions as the JSON API, never the API over HTTP.
//!
//! Security: a session cookie (`session`), a CSRF check on every unsafe
//! request (same origin by `Origin`/`Sec-Fetch-Site`, and the session's
//! CSRF token), and `Content-Security-Policy: default-src 'self'` on every
//! response under `/console`.

mod assets;
mod audit;
mod backups;
mod login;
mod outbox;
mod overview;
mod page;
mod plans;
mod rollouts;
mod schedules;
mod servers;
mod session;
mod tenants;

use actix_web::{middleware::DefaultHeaders, web};

pub use session::COOKIE;

/// The policy on every console response: nothing but this origin, no inline
/// script or style.
pub const CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Registers the `/console` routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/console")
            .wrap(
                DefaultHeaders::new()
                    .add(("Content-Security-Policy", CSP))
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("Referrer-Policy", "same-origin"))
                    .add(("X-Frame-Options", "DENY")),
            )
            .service(assets::asset)
            .service(login::login_form)
            .service(login::submit)
            .service(login::logout)
            .service(overview::overview)
            .service(rollouts::list)
            .service(rollouts::new_form)
            .service(rollouts::submit)
            .service(rollouts::show)
            .service(rollouts::events)
            .service(rollouts::control)
            .service(rollouts::retry_group)
            .service(tenants::list)
            .service(tenants::show)
            .service(tenants::set_override)
            .service(tenants::clear_override)
            .service(tenants::change_plan)
            .service(tenants::issue_key)
            .service(tenants::revoke_key)
            .service(backups::take)
            .service(backups::verify)
            .service(backups::confirm)
            .service(backups::restore)
            .service(plans::list)
            .service(plans::set_features)
            .service(servers::list)
            .service(schedules::page)
            .service(outbox::page)
            .service(outbox::show)
            .service(outbox::retry)
            .service(audit::page)
            .default_service(web::to(page::not_found)),
    );
}
