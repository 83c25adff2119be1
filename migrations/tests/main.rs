//! The tenant schema's tests, in one test binary: both backends, every
//! migration reversible, backfills, probes, and the stock diesel CLI's view
//! of the migration folders.

// A failed step is the test's report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod backfills;
mod diesel_cli;
mod probes;
mod reversibility;
mod version_lists;
