//! Bearer tokens: generated with the OS RNG, shown once, stored as SHA-256.
//! (The tokens carry 238 bits of entropy, so a fast hash is enough; a slow
//! password hash would only slow every request down.)

use chrono::Utc;
use diesel::prelude::*;
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use tenantplane_control_db::db::{locks, write_tx, ControlDb};
use tenantplane_control_db::error::Result;
use tenantplane_control_db::schema::api_tokens;

/// `tp_op_` or `tp_tk_` and 40 alphanumeric characters.
pub fn generate(prefix: &str) -> String {
    let body: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{prefix}{body}")
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two hashes in constant time.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The hashes that authenticate an operator.
#[derive(Debug, Clone)]
pub struct OperatorTokens {
    hashes: Vec<String>,
}

impl OperatorTokens {
    pub fn accepts(&self, presented: &str) -> bool {
        let h = hash(presented);
        // Check all without short-circuit, so timing does not tell which matched.
        self.hashes
            .iter()
            .fold(false, |ok, stored| hashes_equal(stored, &h) | ok)
    }
}

/// Works out the operator token at start. A configured token wins (and is
/// never stored). Otherwise the stored hashes are used; on the very first start
/// a token is generated, stored hashed and returned so the caller can print it
/// once.
pub fn bootstrap_operator(
    db: &ControlDb,
    configured: Option<&str>,
) -> Result<(OperatorTokens, Option<String>)> {
    if let Some(token) = configured {
        return Ok((
            OperatorTokens {
                hashes: vec![hash(token)],
            },
            None,
        ));
    }
    let mut conn = db.conn()?;
    write_tx(&mut conn, Some(locks::BOOTSTRAP), |conn| {
        let stored: Vec<String> = api_tokens::table
            .filter(api_tokens::kind.eq("operator"))
            .filter(api_tokens::revoked_at.is_null())
            .select(api_tokens::token_hash)
            .load(conn)?;
        if !stored.is_empty() {
            return Ok((OperatorTokens { hashes: stored }, None));
        }
        let token = generate("tp_op_");
        let h = hash(&token);
        diesel::insert_into(api_tokens::table)
            .values((
                api_tokens::id.eq(Uuid::new_v4().to_string()),
                api_tokens::kind.eq("operator"),
                api_tokens::name.eq("generated at first start"),
                api_tokens::token_hash.eq(&h),
                api_tokens::created_at.eq(Utc::now().naive_utc()),
            ))
            .execute(conn)?;
        Ok((OperatorTokens { hashes: vec![h] }, Some(token)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = generate("tp_op_");
        let b = generate("tp_op_");
        assert_ne!(a, b);
        assert_eq!(a.len(), 46);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        let ops = OperatorTokens {
            hashes: vec![hash(&a)],
        };
        assert!(ops.accepts(&a));
        assert!(!ops.accepts(&b));
        assert!(!ops.accepts(""));
    }
}
