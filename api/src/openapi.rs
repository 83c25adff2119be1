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
        routes::drift::check,
        routes::drift::queue,
        routes::drift::list,
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
    modifiers(&BearerAuth, &UniqueOperationIds)
)]
pub struct ApiDoc;

/// utoipa names an operation after its handler function, and handlers of
/// different resources share names (`list`, `get`, `create`): prefix the
/// tag, so every operationId is unique and says what it acts on
/// (`tenants_list`, `backups_get`). The tests check uniqueness.
struct UniqueOperationIds;

impl Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                let tag = op
                    .tags
                    .as_ref()
                    .and_then(|t| t.first())
                    .cloned()
                    .unwrap_or_default();
                if let Some(id) = op.operation_id.as_mut() {
                    if !tag.is_empty() && !id.starts_with(&format!("{tag}_")) {
                        *id = format!("{tag}_{id}");
                    }
                }
            }
        }
    }
}

/// Each documented path template with the methods it answers, for the
/// `405 Method Not Allowed` answer and its `Allow` header.
pub fn methods_by_path() -> Vec<(String, Vec<&'static str>)> {
    let doc = ApiDoc::openapi();
    doc.paths
        .paths
        .iter()
        .map(|(path, item)| {
            let methods = [
                ("GET", item.get.is_some()),
                ("PUT", item.put.is_some()),
                ("POST", item.post.is_some()),
                ("DELETE", item.delete.is_some()),
                ("PATCH", item.patch.is_some()),
            ]
            .into_iter()
            .filter_map(|(m, has)| has.then_some(m))
            .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// Whether `path` matches the template `pattern` (`{name}` = one segment).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let (p, a): (Vec<&str>, Vec<&str>) = (
        pattern.trim_end_matches('/').split('/').collect(),
        path.trim_end_matches('/').split('/').collect(),
    );
    p.len() == a.len()
        && p.iter()
            .zip(&a)
            .all(|(p, a)| (p.starts_with('{') && p.ends_with('}') && !a.is_empty()) || p == a)
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
#[get("/v1/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn doc() -> serde_json::Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    /// `docs/openapi.json` is the document as generated, so an API change
    /// shows in review as a diff of that file (CI validates it with
    /// `openapi-spec-validator`). To update: `UPDATE_OPENAPI=1 cargo test
    /// -p tenantplane-api snapshot`, then review and commit the diff.
    #[test]
    fn the_committed_snapshot_is_the_document() {
        let generated = serde_json::to_string_pretty(&ApiDoc::openapi()).unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is not the document the code generates; run \
             UPDATE_OPENAPI=1 cargo test -p tenantplane-api snapshot, review the diff, commit it"
        );
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut seen: HashMap<String, String> = HashMap::new();
        let doc = doc();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_string();
                let at = format!("{method} {path}");
                if let Some(first) = seen.insert(id.clone(), at.clone()) {
                    panic!("operationId {id} used by {first} and {at}");
                }
            }
        }
        assert!(seen.contains_key("tenants_list"), "{seen:?}");
    }

    /// Path parameters are exactly the template's `{names}`; everything
    /// else is a query parameter.
    #[test]
    fn parameters_are_where_they_are_sent() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let names: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            for (method, op) in item.as_object().unwrap() {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                let in_path: Vec<&str> = params
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                let mut want = names.clone();
                let mut got = in_path.clone();
                want.sort_unstable();
                got.sort_unstable();
                assert_eq!(got, want, "{method} {path}: path parameters");
            }
        }
    }

    #[test]
    fn templates_match_one_segment_per_parameter() {
        assert!(path_matches("/v1/tenants/{id}", "/v1/tenants/shop-1"));
        assert!(path_matches("/v1/tenants/{id}/", "/v1/tenants/shop-1"));
        assert!(!path_matches("/v1/tenants/{id}", "/v1/tenants/a/b"));
        assert!(!path_matches("/v1/tenants/{id}", "/v1/tenants/"));
        assert!(!path_matches("/v1/tenants", "/v1/plans"));
    }
}
