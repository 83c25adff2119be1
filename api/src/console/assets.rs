//! Static assets compiled into the binary, with long cache lifetimes (their
//! names carry a version, so a new binary serves new names).

use actix_web::{get, web, HttpResponse};

use super::page::ConsoleError;

/// htmx, pinned; from the npm package `htmx.org` (`dist/htmx.min.js`).
pub const HTMX: &str = "htmx-2.0.11.min.js";
/// The SSE extension, pinned; from the npm package `htmx-ext-sse`.
pub const HTMX_SSE: &str = "htmx-ext-sse-2.2.4.min.js";
/// The stylesheet; bump the number when it changes.
pub const CSS: &str = "console-2.css";

const FILES: &[(&str, &str, &[u8])] = &[
    (
        HTMX,
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/htmx-2.0.11.min.js"),
    ),
    (
        HTMX_SSE,
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/htmx-ext-sse-2.2.4.min.js"),
    ),
    (
        CSS,
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console.css"),
    ),
];

#[get("/assets/{name}")]
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, ConsoleError> {
    let (_, content_type, body) = FILES
        .iter()
        .find(|(n, _, _)| *n == name.as_str())
        .ok_or(ConsoleError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header(("Cache-Control", "public, max-age=31536000, immutable"))
        .body(*body))
}
