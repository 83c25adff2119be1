//! Test support shared by the workspace's test suites (a dev-dependency only).
//!
//! - [`TestPg`]: a fresh PostgreSQL database per test, dropped afterwards.
//! - [`fixture`]: realistic phase-0 shop data, the same on every run.

// Test support: a failed set-up step is the test's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fixture;

use std::sync::Mutex;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// The PostgreSQL server tests use: `TENANTPLANE_TEST_PG`, default
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn admin_url() -> String {
    std::env::var("TENANTPLANE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A fresh PostgreSQL database, dropped (with any extra databases the test
/// registered) when the value goes away.
pub struct TestPg {
    pub admin_url: String,
    pub name: String,
    extra: Mutex<Vec<String>>,
}

impl TestPg {
    /// `None` (the test skips) when PostgreSQL is unreachable, unless `CI` is
    /// set: then a missing PostgreSQL fails the run.
    pub fn new() -> Option<TestPg> {
        let admin = admin_url();
        let mut conn = match PgConnection::establish(&admin) {
            Ok(c) => c,
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("PostgreSQL is required when CI is set ({admin}): {e}");
                }
                eprintln!("SKIPPED: PostgreSQL unreachable at {admin}: {e}");
                return None;
            }
        };
        let name = format!(
            "tp_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create test database");
        Some(TestPg {
            admin_url: admin,
            name,
            extra: Mutex::new(Vec::new()),
        })
    }

    pub fn url(&self) -> String {
        self.url_of(&self.name)
    }

    /// The URL of another database on the same server.
    pub fn url_of(&self, db: &str) -> String {
        let (base, _) = self
            .admin_url
            .rsplit_once('/')
            .expect("admin url names a database");
        format!("{base}/{db}")
    }

    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url()).expect("connect to test database")
    }

    pub fn connect_admin(&self) -> PgConnection {
        PgConnection::establish(&self.admin_url).expect("connect to admin database")
    }

    /// Drop this database too at the end (e.g. a tenant's own database).
    pub fn also_drop(&self, database: &str) {
        self.extra.lock().expect("lock").push(database.to_string());
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.admin_url) {
            let extra = self.extra.lock().map(|v| v.clone()).unwrap_or_default();
            for db in extra.iter().chain([&self.name]) {
                let _ =
                    conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
            }
        }
    }
}
