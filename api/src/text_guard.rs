//! Refuses request targets that carry a NUL character, before any handler
//! sees them: PostgreSQL cannot store or compare text with NUL in it and
//! answers with an error that is neither "not found" nor "invalid", so ids,
//! filters and cursors holding one would otherwise reach the database.
//! Other control characters are fine here: the rules of each field refuse
//! them where they matter (names, slugs, labels).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::Error;

use crate::error::ApiError;

/// `%00` in any case, or a raw NUL (which a client can send in a query).
fn has_nul(s: &str) -> bool {
    s.contains('\0') || s.as_bytes().windows(3).any(|w| w == b"%00")
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if has_nul(req.path()) || has_nul(req.query_string()) {
        return Err(ApiError::BadRequest(
            "the request path or query string contains a NUL character (%00)".into(),
        )
        .into());
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::has_nul;

    #[test]
    fn finds_encoded_and_raw_nul_only() {
        for s in ["/v1/tenants/%00", "tenant=a%00b", "cursor=\0", "%00"] {
            assert!(has_nul(s), "{s:?}");
        }
        for s in ["/v1/tenants/shop-100", "q=%01%20", "limit=100", "%0", ""] {
            assert!(!has_nul(s), "{s:?}");
        }
    }
}
