//! Tenant API keys: issued by operators, shown once, stored as SHA-256, and
//! good only for `/v1/tenant/…` of their own tenant.

use chrono::Utc;
use diesel::prelude::*;

use uuid::Uuid;

use crate::tokens;
pub use tenantplane_api_types::features::{IssuedKey, KeyRequest};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::changes;
use tenantplane_control_db::db::{write_tx, ControlDb};
use tenantplane_control_db::error::{Error, Result};
use tenantplane_control_db::schema::api_tokens;
use tenantplane_fleet::registry::find_row;

pub fn issue(db: &ControlDb, actor: &Actor, tenant: &str, req: KeyRequest) -> Result<IssuedKey> {
    let name = req.name.unwrap_or_else(|| "api key".to_string());
    tenantplane_control_db::validate::name(&name)?;
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

/// A tenant's live keys (never the key itself): id, name, issued at.
pub fn list(db: &ControlDb, tenant: &str) -> Result<Vec<(String, String, chrono::NaiveDateTime)>> {
    let mut conn = db.conn()?;
    let t = find_row(&mut conn, tenant)?;
    Ok(api_tokens::table
        .filter(api_tokens::kind.eq("tenant"))
        .filter(api_tokens::tenant_id.eq(&t.id))
        .filter(api_tokens::revoked_at.is_null())
        .select((api_tokens::id, api_tokens::name, api_tokens::created_at))
        .order(api_tokens::created_at.asc())
        .load(&mut conn)?)
}
