//! Tenant API keys: issued by operators, shown once, stored as SHA-256, and
//! good only for `/v1/tenant/…` of their own tenant.

use chrono::Utc;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit::{self, Actor, Change};
use crate::changes;
use crate::db::{write_tx, ControlDb};
use crate::error::{Error, Result};
use crate::registry::find_row;
use crate::schema::api_tokens;
use crate::tokens;

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// A label for the key, e.g. `pos-terminal-1`.
    pub name: Option<String>,
}

/// The one time a key is shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedKey {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// Shown only now; stored as a hash.
    pub key: String,
}

pub fn issue(db: &ControlDb, actor: &Actor, tenant: &str, req: KeyRequest) -> Result<IssuedKey> {
    let name = req.name.unwrap_or_else(|| "api key".to_string());
    crate::validate::name(&name)?;
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let t = find_row(conn, tenant)?;
        let id = Uuid::new_v4().to_string();
        let key = tokens::generate("tp_tk_");
        diesel::insert_into(api_tokens::table)
            .values((
                api_tokens::id.eq(&id),
                api_tokens::kind.eq("tenant"),
                api_tokens::tenant_id.eq(Some(&t.id)),
                api_tokens::name.eq(&name),
                api_tokens::token_hash.eq(tokens::hash(&key)),
                api_tokens::created_at.eq(Utc::now().naive_utc()),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "key.issue",
                resource_type: "api_key",
                resource_id: Some(&id),
                tenant_id: Some(&t.id),
                before: None,
                // Never the key itself.
                after: Some(serde_json::json!({ "id": id, "name": name })),
            },
        )?;
        changes::bump(conn)?;
        Ok(IssuedKey {
            id,
            tenant: t.id,
            name,
            key,
        })
    })
}

pub fn revoke(db: &ControlDb, actor: &Actor, tenant: &str, key_id: &str) -> Result<()> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let t = find_row(conn, tenant)?;
        let n = diesel::update(
            api_tokens::table
                .filter(api_tokens::id.eq(key_id))
                .filter(api_tokens::tenant_id.eq(&t.id))
                .filter(api_tokens::revoked_at.is_null()),
        )
        .set(api_tokens::revoked_at.eq(Some(Utc::now().naive_utc())))
        .execute(conn)?;
        if n == 0 {
            return Err(Error::not_found("key", key_id));
        }
        audit::record(
            conn,
            actor,
            Change {
                action: "key.revoke",
                resource_type: "api_key",
                resource_id: Some(key_id),
                tenant_id: Some(&t.id),
                before: Some(serde_json::json!({ "id": key_id, "revoked": false })),
                after: Some(serde_json::json!({ "id": key_id, "revoked": true })),
            },
        )?;
        changes::bump(conn)
    })
}
