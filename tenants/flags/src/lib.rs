//! Plans, feature overrides, and feature evaluation: what a tenant may use
//! (plan + overrides) gated on what its schema has, answered from an
//! in-memory snapshot that follows the control DB's change counter.

pub mod overrides;
pub mod plans;
pub mod snapshot;

pub use snapshot::FlagCache;
