//! Sign-in with the operator token, sign-out.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use tenantplane_access::{sessions, tokens};

use super::page::{html, see_other, ConsoleError, Layout};
use super::session::{self, ConsoleSession};
use crate::error::blocking;
use crate::AppState;

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    layout: Layout,
    error: Option<String>,
}

#[get("/login")]
pub async fn login_form() -> Result<HttpResponse, ConsoleError> {
    html(&LoginPage {
        layout: Layout::new("Sign in", None, ""),
        error: None,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// The token travels in the body only (never in a URL) and is never logged.
#[post("/login")]
pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, ConsoleError> {
    // Login CSRF: a foreign page may not sign a browser in.
    session::check_origin(&req)?;
    let token = form.into_inner().token;
    let token = token.trim();
    let refuse =
        |status: actix_web::http::StatusCode, why: &str| -> Result<HttpResponse, ConsoleError> {
            let page = LoginPage {
                layout: Layout::new("Sign in", None, ""),
                error: Some(why.to_string()),
            };
            Ok(HttpResponse::build(status)
                .content_type("text/html; charset=utf-8")
                .body(page.render()?))
        };
    if !state.operator.accepts(token) {
        if state
            .flags
            .snapshot()
            .keys
            .contains_key(&tokens::hash(token))
        {
            return refuse(
                actix_web::http::StatusCode::FORBIDDEN,
                "a tenant API key cannot sign in to the console; use the operator token",
            );
        }
        return refuse(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "that is not an operator token",
        );
    }
    let db = state.db.clone();
    let actor = crate::auth::actor(&req, "operator".to_string());
    let s = blocking(move || sessions::create(&db, &actor)).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, "/console"))
        .cookie(session::cookie(&req, s.token, s.expires_at))
        .finish())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

#[post("/logout")]
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    s.check_csrf(&req, Some(&form.csrf))?;
    let db = state.db.clone();
    let id = s.session.id.clone();
    let actor = s.actor.clone();
    blocking(move || sessions::revoke(&db, &actor, &id)).await?;
    let mut resp = see_other("/console/login");
    resp.add_removal_cookie(&session::removal(&req))
        .map_err(|e| crate::error::ApiError::Internal(format!("cookie: {e}")))?;
    Ok(resp)
}
