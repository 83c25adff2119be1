//! Fleet rollouts: a target schema for a selection of tenants, one task per
//! tenant in waves, claimed by workers with leases, with retries and a
//! failure budget. The decisions (wave sizes, the failure budget) are pure
//! functions in `waves`; everything else reads and writes the control DB.

pub mod rollouts;
mod selection;
pub mod tasks;
