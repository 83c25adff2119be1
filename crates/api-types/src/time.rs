//! Timestamps are stored as UTC `TIMESTAMP` (the type both backends share) and
//! shown as RFC 3339 with a `Z`, so clients never guess the zone.

use chrono::NaiveDateTime;
use serde::Serializer;

pub fn utc<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(
        &t.and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

pub fn utc_opt<S: Serializer>(t: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => utc(t, s),
        None => s.serialize_none(),
    }
}
