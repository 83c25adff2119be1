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
        routes::servers::update,
        routes::servers::drain,
        routes::servers::drain_status,
        routes::moves::start,
        routes::moves::status,
        routes::rollouts::create,
        routes::rollouts::list,
        routes::rollouts::get,
        routes::rollouts::tasks,
        routes::rollouts::pause,
        routes::rollouts::resume,
        routes::rollouts::cancel,
        routes::rollouts::retry,
        routes::rollouts::promote,
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
    modifiers(&BearerAuth, &UniqueOperationIds, &CommonResponses, &ClosedVariants, &NoNulParameters)
)]
pub struct ApiDoc;

/// Every operation of a path.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
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
}

/// utoipa names an operation after its handler function, and handlers of
/// different resources share names (`list`, `get`, `create`): prefix the
/// tag, so every operationId is unique and says what it acts on
/// (`tenants_list`, `backups_get`). The tests check uniqueness.
struct UniqueOperationIds;

impl Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for op in operations(item) {
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

/// The statuses every operation of a kind can answer, documented on each
/// with the error body (one rule in one place instead of a list per
/// handler that drifts from what the middleware and extractors really do):
/// - `401` on every operation that needs a credential (none, unknown,
///   revoked); `403` where the credential is of the wrong kind (a tenant key
///   on an operator route) or its tenant is suspended (writes);
/// - `404` where the path names a resource;
/// - `400` (the request cannot be parsed: malformed JSON, a query value of
///   the wrong type, NUL bytes) and `422` (parsed but invalid: out of range,
///   unknown names) where the operation takes a body or query parameters;
///   `408` when a body does not arrive within the body timeout and `413`
///   when it is larger than the limit;
/// - `429` on the tenant routes (`/v1/tenant…`, per-key rate limit);
/// - `503` everywhere a database is read (the control DB or a tenant DB
///   cannot be reached).
struct CommonResponses;

impl CommonResponses {
    fn error(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
        utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
            .into()
    }
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let names_resource = path.contains('{');
            let tenant_route = path == "/v1/tenant" || path.starts_with("/v1/tenant/");
            let open = matches!(path.as_str(), "/healthz" | "/readyz" | "/v1/openapi.json");
            for op in operations(item) {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = op.request_body.is_some();
                let has_query = op.parameters.as_ref().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Query)
                });
                let mut add = |status: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| Self::error(description));
                };
                if secured {
                    add("401", "no credential, or an unknown or revoked one");
                    add(
                        "403",
                        "the credential may not do this (a tenant key on an operator route, a suspended tenant's write)",
                    );
                }
                if names_resource {
                    add("404", "no such resource");
                }
                if has_body || has_query || names_resource {
                    add("400", "the request cannot be parsed");
                    add("422", "the request is well-formed but invalid");
                }
                if has_body {
                    add("408", "the body did not arrive within the body timeout");
                    add("413", "the body is larger than the limit");
                }
                if tenant_route {
                    add(
                        "429",
                        "the tenant key's rate limit is spent; see Retry-After",
                    );
                }
                if !open {
                    add("503", "a database could not be reached");
                }
            }
        }
    }
}

/// Path and query values with a NUL character are refused (400, see
/// `text_guard`): every string parameter without a pattern of its own says
/// so with `^[^\u0000]*$`.
struct NoNulParameters;

impl Modify for NoNulParameters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{Schema, SchemaType, Type};
        use utoipa::openapi::RefOr;
        let is_string = |t: &SchemaType| match t {
            SchemaType::Type(t) => *t == Type::String,
            SchemaType::Array(ts) => ts.contains(&Type::String),
            SchemaType::AnyValue => false,
        };
        for item in openapi.paths.paths.values_mut() {
            for op in operations(item) {
                for p in op.parameters.iter_mut().flatten() {
                    if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
                        if is_string(&o.schema_type) && o.pattern.is_none() && o.format.is_none() {
                            o.pattern = Some("^[^\\u0000]*$".to_string());
                        }
                    }
                }
            }
        }
    }
}

/// Types that refuse unknown fields in ways utoipa cannot see say so:
/// tagged enums with `deny_unknown_fields` (utoipa closes plain structs
/// only) and types read through `try_from`.
struct ClosedVariants;

impl Modify for ClosedVariants {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{AdditionalProperties, Schema};
        use utoipa::openapi::RefOr;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let close = |object: &mut utoipa::openapi::schema::Object| {
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        };
        // `Policy` is read through a `try_from` type that refuses unknown
        // fields and defaults missing counts.
        for name in ["RestoreRequest", "Policy"] {
            match components.schemas.get_mut(name) {
                Some(RefOr::T(Schema::OneOf(one_of))) => {
                    for variant in one_of.items.iter_mut() {
                        if let RefOr::T(Schema::Object(object)) = variant {
                            close(object);
                        }
                    }
                }
                Some(RefOr::T(Schema::Object(object))) => {
                    close(object);
                    if name == "Policy" {
                        object.required.clear();
                    }
                }
                _ => {}
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
