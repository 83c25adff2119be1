//! Durable background jobs in the control database, and the lease and
//! backoff rules that rollout tasks share with them.

pub mod backoff;
