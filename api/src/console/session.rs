//! The console session (a cookie naming a server-side session) and the CSRF
//! defence of unsafe requests.

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::http::{header, Method};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use tenantplane_access::sessions;
use tenantplane_control_db::Actor;

use super::page::ConsoleError;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// The cookie holding the session token.
pub const COOKIE: &str = "tp_console";

/// The header htmx sends the CSRF token in (from `hx-headers` on `<body>`).
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// A signed-in operator's request.
pub struct ConsoleSession {
    pub session: sessions::Session,
    /// Who, for the audit log: `console:<session id prefix>`.
    pub actor: Actor,
}

impl ConsoleSession {
    pub fn csrf(&self) -> &str {
        &self.session.csrf_token
    }

    /// The CSRF check of an unsafe request: the form field (or the htmx
    /// header) must carry this session's token.
    pub fn check_csrf(&self, req: &HttpRequest, field: Option<&str>) -> Result<(), ConsoleError> {
        let header = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        let presented = field.filter(|f| !f.is_empty()).or(header).unwrap_or("");
        let expected = &self.session.csrf_token;
        if tenantplane_access::tokens::hashes_equal(presented, expected) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "the form's CSRF token is missing or stale; reload the page and try again".into(),
            ))
        }
    }
}

/// An unsafe request must come from this origin: `Sec-Fetch-Site`, when the
/// browser sends it, must say `same-origin`, and `Origin`, when present, must
/// be this server's own scheme and host.
pub fn check_origin(req: &HttpRequest) -> Result<(), ConsoleError> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(ConsoleError::Forbidden(format!(
            "cross-site request refused: {why}"
        )))
    };
    if let Some(site) = req.headers().get("Sec-Fetch-Site") {
        if site.as_bytes() != b"same-origin" {
            return refuse("Sec-Fetch-Site is not same-origin");
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let info = req.connection_info();
        let own = format!("{}://{}", info.scheme(), info.host());
        if origin.as_bytes() != own.as_bytes() {
            return refuse("Origin is not this server");
        }
    }
    Ok(())
}

/// Whether the request came over TLS (directly, or per the proxy's
/// `X-Forwarded-Proto`/`Forwarded`), which makes the cookie `Secure`.
pub fn is_tls(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// The session cookie for a new session.
pub fn cookie(
    req: &HttpRequest,
    token: String,
    expires_at: chrono::NaiveDateTime,
) -> Cookie<'static> {
    let expires = time::OffsetDateTime::from_unix_timestamp(expires_at.and_utc().timestamp())
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    Cookie::build(COOKIE, token)
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(is_tls(req))
        .expires(expires)
        .finish()
}

/// The cookie that removes the session cookie.
pub fn removal(req: &HttpRequest) -> Cookie<'static> {
    let mut c = Cookie::build(COOKIE, "")
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(is_tls(req))
        .finish();
    c.make_removal();
    c
}

impl FromRequest for ConsoleSession {
    type Error = ConsoleError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ConsoleError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
            let token = req
                .cookie(COOKIE)
                .map(|c| c.value().to_string())
                .filter(|t| !t.is_empty())
                .ok_or(ConsoleError::SignIn)?;
            // Every unsafe request is checked before anything else happens.
            check_origin(&req)?;
            let db = state.db.clone();
            let session = blocking(move || {
                let found = sessions::find(&db, &token)?;
                if let Some(s) = &found {
                    // At most a write a minute per session.
                    sessions::touch(&db, s)?;
                }
                Ok(found)
            })
            .await?
            .ok_or(ConsoleError::SignIn)?;
            let actor = crate::auth::actor(&req, session.actor_id());
            Ok(ConsoleSession { session, actor })
        })
    }
}
