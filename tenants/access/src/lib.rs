//! Who may call tenantplane: operator tokens and tenant API keys, generated
//! with the OS RNG, shown once, stored as SHA-256.

pub mod keys;
pub mod sessions;
pub mod tokens;
