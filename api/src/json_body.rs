//! JSON request bodies as the schema means them, before any extractor: a
//! body must be a JSON object (serde would otherwise read `[null, null]`
//! into a struct field by field), and a number with a zero fraction is the
//! integer it equals (`4139.0` is an `integer` to JSON Schema and to every
//! client that only has doubles; serde refuses it for an integer field).
//! A body that is not JSON at all is passed on untouched: the extractor's
//! own 400 names what is wrong. `null` counts as no body.

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, HttpMessage};
use serde_json::Value;

use crate::error::ApiError;

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let has_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    let json = req.content_type().eq_ignore_ascii_case("application/json");
    // Without credentials the answer is 401 whatever the body: leave it to
    // the handler's authentication, which comes before its body.
    let credentials = req
        .headers()
        .contains_key(actix_web::http::header::AUTHORIZATION);
    if !(has_body && json && credentials) {
        return next.call(req).await;
    }
    let body = req.extract::<Bytes>().await?;
    let body = match serde_json::from_slice::<Value>(&body) {
        // Not JSON (or empty): the extractor's 400 says why.
        Err(_) => body,
        // `null` is no body (optional bodies are nullable in the schema).
        Ok(Value::Null) => Bytes::new(),
        Ok(mut v @ Value::Object(_)) => {
            if integral_floats_to_integers(&mut v) {
                Bytes::from(serde_json::to_vec(&v).map_err(|e| ApiError::Internal(e.to_string()))?)
            } else {
                body
            }
        }
        Ok(_) => {
            return Err(ApiError::BadRequest("the body must be a JSON object".into()).into());
        }
    };
    req.set_payload(bytes_payload(body));
    next.call(req).await
}

fn bytes_payload(body: Bytes) -> Payload {
    let stream =
        futures_util::stream::once(
            async move { Ok::<Bytes, actix_web::error::PayloadError>(body) },
        );
    let boxed: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<Bytes, actix_web::error::PayloadError>>>,
    > = Box::pin(stream);
    Payload::from(boxed)
}

/// Turns every number with a zero fraction that fits in an `i64` into that
/// integer; returns whether anything changed.
fn integral_floats_to_integers(v: &mut Value) -> bool {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => {
                *v = Value::from(f as i64);
                true
            }
            _ => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, i| integral_floats_to_integers(i) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, i| integral_floats_to_integers(i) | changed),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_become_integers_and_nothing_else_changes() {
        let mut v =
            serde_json::json!({"a": 4139.0, "b": [1.5, 2.0, -3.0], "c": {"d": 7}, "e": "8.0"});
        assert!(integral_floats_to_integers(&mut v));
        assert_eq!(
            v,
            serde_json::json!({"a": 4139, "b": [1.5, 2, -3], "c": {"d": 7}, "e": "8.0"})
        );
        let mut same = serde_json::json!({"a": 1, "b": 0.5});
        assert!(!integral_floats_to_integers(&mut same));
    }
}
