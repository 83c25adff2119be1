//! Plans: each plan with its features, and editing a plan's features (the
//! same `plans::update` as `PUT /v1/plans/{slug}`, audited with the
//! session as actor).

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use askama::Template;
use tenantplane_control_db::Error;
use tenantplane_flags::plans;
use tenantplane_migrations::catalogue;

use super::page::{html, see_other, ConsoleError, Layout};
use super::session::ConsoleSession;
use crate::error::blocking;
use crate::AppState;

pub struct FeatureBox {
    name: &'static str,
    phase: u8,
    description: &'static str,
    on: bool,
}

pub struct PlanCard {
    slug: String,
    name: String,
    price: String,
    active: bool,
    fallback: String,
    features: Vec<FeatureBox>,
    count: usize,
}

#[derive(Template)]
#[template(path = "console/plans.html")]
struct PlansPage {
    layout: Layout,
    plans: Vec<PlanCard>,
}

#[get("/plans")]
pub async fn list(
    state: web::Data<AppState>,
    s: ConsoleSession,
) -> Result<HttpResponse, ConsoleError> {
    let db = state.db.clone();
    let all = blocking(move || plans::list(&db)).await?;
    html(&PlansPage {
        layout: Layout::new("Plans", Some(s.csrf()), "plans"),
        plans: all
            .into_iter()
            .map(|p| PlanCard {
                features: catalogue::FEATURES
                    .iter()
                    .map(|f| FeatureBox {
                        name: f.name,
                        phase: f.phase,
                        description: f.description,
                        on: p.features.iter().any(|x| x == f.name),
                    })
                    .collect(),
                count: p.features.len(),
                price: format!(
                    "{}.{:02} {}",
                    p.price_cents / 100,
                    p.price_cents % 100,
                    p.currency
                ),
                fallback: p.fallback.unwrap_or_else(|| "-".into()),
                active: p.active,
                slug: p.slug,
                name: p.name,
            })
            .collect(),
    })
}

/// Sets a plan's features to the boxes ticked (`feature` repeated; no box
/// ticked: no features). Name, price and the rest stay as they are.
#[post("/plans/{slug}/features")]
pub async fn set_features(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    slug: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, ConsoleError> {
    let fields = form.into_inner();
    let csrf = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    s.check_csrf(&req, csrf)?;
    let mut features = Vec::new();
    for (k, v) in &fields {
        match k.as_str() {
            "csrf" => {}
            "feature" => {
                if !features.contains(v) {
                    features.push(v.clone());
                }
            }
            other => return Err(Error::invalid(format!("unknown form field {other:?}")).into()),
        }
    }
    let db = state.db.clone();
    let actor = s.actor.clone();
    let slug = slug.into_inner();
    let at = slug.clone();
    blocking(move || {
        let mut plan = plans::get(&db, &slug)?;
        plan.features = features;
        plans::update(&db, &actor, &slug, plan)
    })
    .await?;
    state.changed().await?;
    Ok(see_other(&format!("/console/plans#plan-{at}")))
}
