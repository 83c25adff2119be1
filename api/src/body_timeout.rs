//! A request body that stops arriving ends the request. actix limits how
//! long the request head may take to arrive, not the body: a client that
//! sends `Content-Length: 100` and 10 bytes would hold a connection and a
//! worker's attention for ever. Each chunk must come within
//! [`BODY_IDLE`] of the one before; otherwise reading the body fails, the
//! handler answers 400 and the connection is closed.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use futures_util::StreamExt;

/// The longest pause allowed between two chunks of a request body.
pub const BODY_IDLE: Duration = Duration::from_secs(10);

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let payload = req.take_payload();
    let guarded = futures_util::stream::unfold((payload, false), |(mut p, ended)| async move {
        if ended {
            return None;
        }
        match actix_web::rt::time::timeout(BODY_IDLE, p.next()).await {
            Ok(Some(chunk)) => Some((chunk, (p, false))),
            Ok(None) => None,
            Err(_) => Some((
                Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the request body stopped arriving for {} s",
                        BODY_IDLE.as_secs()
                    ),
                ))),
                (p, true),
            )),
        }
    });
    let boxed: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<actix_web::web::Bytes, PayloadError>>>,
    > = Box::pin(guarded);
    req.set_payload(Payload::from(boxed));
    next.call(req).await
}
