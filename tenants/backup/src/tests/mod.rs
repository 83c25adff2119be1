//! Tests on real databases: a SQLite control DB per test, tenants on
//! SQLite files, PostgreSQL schemas and PostgreSQL databases (a fresh
//! PostgreSQL database per test from `tenantplane_testkit`), filled with the
//! phase-0 fixture and migrated to head.

mod backups;
mod concurrent;
mod guard;
mod jobs;
mod moves;
mod restores;
mod retention;
mod s3;
mod support;
