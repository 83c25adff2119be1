//! What every page shares: the layout data, rendering, and the console's
//! errors as HTML pages (or a redirect to sign-in).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use tenantplane_control_db::Error as DomainError;

use super::assets;
use crate::error::ApiError;

/// The layout's data: the title, the session's CSRF token (sent by htmx as
/// a header and by every form as a hidden field), the asset names.
pub struct Layout {
    pub title: String,
    pub csrf: Option<String>,
    pub htmx: &'static str,
    pub htmx_sse: &'static str,
    pub css: &'static str,
    /// The nav entry to mark current.
    pub section: &'static str,
}

impl Layout {
    pub fn new(title: impl Into<String>, csrf: Option<&str>, section: &'static str) -> Layout {
        Layout {
            title: title.into(),
            csrf: csrf.map(str::to_string),
            htmx: assets::HTMX,
            htmx_sse: assets::HTMX_SSE,
            css: assets::CSS,
            section,
        }
    }

    /// The JSON of `hx-headers` on `<body>`.
    pub fn hx_headers(&self) -> String {
        match &self.csrf {
            Some(t) => serde_json::json!({ "X-CSRF-Token": t }).to_string(),
            None => "{}".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No (live) session: go sign in.
    #[error("sign in first")]
    SignIn,
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("rendering the page failed: {0}")]
    Render(#[from] askama::Error),
}

impl From<DomainError> for ConsoleError {
    fn from(e: DomainError) -> Self {
        ConsoleError::Api(ApiError::Domain(e))
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    message: String,
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::SignIn => StatusCode::SEE_OTHER,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound => StatusCode::NOT_FOUND,
            ConsoleError::Api(e) => e.status_code(),
            ConsoleError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ConsoleError::SignIn = self {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/console/login"))
                .finish();
        }
        let message = match self {
            ConsoleError::Api(e) if status.is_server_error() => {
                // Logs the chain; the page gets our own words only.
                let _ = e.error_response();
                "the server could not do that; see its log".to_string()
            }
            ConsoleError::Render(e) => {
                tracing::error!(error = %e, "console page failed to render");
                "the page could not be rendered".to_string()
            }
            other => other.to_string(),
        };
        let page = ErrorPage {
            layout: Layout::new(format!("Error {}", status.as_u16()), None, ""),
            status: status.as_u16(),
            message,
        };
        let body = page
            .render()
            .unwrap_or_else(|_| format!("error {}", status.as_u16()));
        HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(body)
    }
}

/// Renders a template as a 200 HTML page.
pub fn html<T: Template>(t: &T) -> Result<HttpResponse, ConsoleError> {
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(t.render()?))
}

/// POST-redirect-GET.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

pub async fn not_found() -> Result<HttpResponse, ConsoleError> {
    Err(ConsoleError::NotFound)
}

/// Splits a comma- or newline-separated form field into its non-empty parts.
pub fn list_field(s: &str) -> Vec<String> {
    s.split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// `12.3 s`, `4 min`, `1.2 h`.
pub fn duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}
