//! The OpenAPI document, generated from the handlers' annotations.

use actix_web::{get, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "tenantplane", description = "Control plane for database-per-tenant SaaS"),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        openapi_json,
        routes::tenants::list,
        routes::tenants::create,
        routes::tenants::get,
        routes::tenants::update,
        routes::tenants::remove,
        routes::servers::list,
        routes::servers::create,
        routes::servers::get,
        routes::rollouts::create,
        routes::rollouts::list,
        routes::rollouts::get,
        routes::rollouts::tasks,
        routes::rollouts::pause,
        routes::rollouts::resume,
        routes::rollouts::cancel,
        routes::rollouts::retry,
        routes::rollouts::events,
        routes::metrics::prometheus,
        routes::plans::list,
        routes::plans::create,
        routes::plans::get,
        routes::plans::update,
        routes::plans::feature_catalogue,
        routes::features::tenant_features,
        routes::features::set_override,
        routes::features::clear_override,
        routes::features::issue_key,
        routes::features::revoke_key,
        routes::tenant::me,
        routes::tenant::features,
        routes::tenant::preview,
        routes::tenant::change_plan,
        routes::audit::list,
        routes::schedules::list,
        routes::schedules::create,
        routes::schedules::get,
        routes::schedules::update,
        routes::schedules::remove,
        routes::schedules::runs,
        routes::backups::create,
        routes::backups::list,
        routes::backups::get,
        routes::backups::verify,
        routes::backups::pin,
        routes::backups::unpin,
        routes::backups::remove,
        routes::backups::restore,
        routes::backups::retention,
        routes::exports::tenant_request,
        routes::exports::tenant_get,
        routes::exports::download,
        routes::exports::create,
        routes::exports::get,
        routes::webhooks::list,
        routes::webhooks::create,
        routes::webhooks::get,
        routes::webhooks::update,
        routes::webhooks::remove,
        routes::webhooks::rotate_secret,
        routes::webhooks::replay,
        routes::outbox::list,
        routes::outbox::get,
        routes::outbox::retry,
    ),
    // The outbox events' bodies: each is the `data` of a webhook delivery
    // of its kind (`WebhookPayload`).
    components(schemas(
        tenantplane_api_types::notify::WebhookPayload,
        tenantplane_api_types::notify::TenantEvent,
        tenantplane_api_types::notify::PlanChangedEvent,
        tenantplane_api_types::notify::TrialEvent,
        tenantplane_api_types::notify::RolloutEvent,
        tenantplane_api_types::notify::BackupFailedEvent,
        tenantplane_api_types::notify::RestoreCompletedEvent,
        tenantplane_api_types::notify::ExportReadyEvent,
        tenantplane_api_types::notify::EndpointFailingEvent,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
#[get("/v1/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
