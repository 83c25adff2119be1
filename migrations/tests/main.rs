//! The tenant schema's tests, in one test binary: both backends, every
//! migration reversible, backfills, probes, and the stock diesel CLI's view
//! of the migration folders.

mod common;

mod backfills;
mod diesel_cli;
mod probes;
mod reversibility;
mod version_lists;
