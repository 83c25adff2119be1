//! The stock diesel CLI works on each migrations folder (outside engineers
//! check them that way), and `src/tenant_schema.rs` is exactly what
//! `diesel print-schema` says of a PostgreSQL schema at head.
//!
//! Needs the `diesel` binary (`.ci/run` installs it). Without it the tests
//! print SKIPPED, unless `CI` is set: then they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use tenantplane_testkit::TestPg;

fn diesel() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TENANTPLANE_DIESEL").map(PathBuf::from),
        Some(PathBuf::from("diesel")),
        std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin/diesel")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/diesel")),
    ];
    for c in candidates.into_iter().flatten() {
        if Command::new(&c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("the diesel CLI is required when CI is set (cargo install diesel_cli)");
    }
    eprintln!("SKIPPED: no diesel CLI on PATH");
    None
}

fn run(diesel: &Path, args: &[&str]) -> String {
    let out = Command::new(diesel)
        .args(args)
        .output()
        .expect("run diesel");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "diesel {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn folder(backend: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tenant")
        .join(backend)
        .to_string_lossy()
        .into_owned()
}

fn run_redo_revert(diesel: &Path, dir: &str, url: &str) {
    let n = tenantplane_migrations::catalogue::versions().len();
    let applied = run(
        diesel,
        &[
            "migration",
            "run",
            "--migration-dir",
            dir,
            "--database-url",
            url,
        ],
    );
    assert_eq!(applied.matches("Running migration").count(), n, "{applied}");
    run(
        diesel,
        &[
            "migration",
            "redo",
            "--all",
            "--migration-dir",
            dir,
            "--database-url",
            url,
        ],
    );
    let reverted = run(
        diesel,
        &[
            "migration",
            "revert",
            "--all",
            "--migration-dir",
            dir,
            "--database-url",
            url,
        ],
    );
    assert_eq!(
        reverted.matches("Rolling back migration").count(),
        n,
        "{reverted}"
    );
    let again = run(
        diesel,
        &[
            "migration",
            "run",
            "--migration-dir",
            dir,
            "--database-url",
            url,
        ],
    );
    assert_eq!(again.matches("Running migration").count(), n);
}

#[test]
fn stock_diesel_cli_runs_redoes_and_reverts_the_sqlite_folder() {
    let Some(diesel) = diesel() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let url = dir.path().join("tenant.db").to_string_lossy().into_owned();
    run_redo_revert(&diesel, &folder("sqlite"), &url);
}

#[test]
fn stock_diesel_cli_runs_redoes_and_reverts_the_postgres_folder() {
    let Some(diesel) = diesel() else { return };
    let Some(pg) = TestPg::new() else { return };
    run_redo_revert(&diesel, &folder("postgres"), &pg.url());
}

const SCHEMA_FILE: &str = "src/tenant_schema.rs";
const HEADER: &str =
    "//! diesel's view of the tenant schema at head (PostgreSQL), generated with\n\
//! `diesel print-schema` from `tenant/postgres`. Do not edit: regenerate with\n\
//! `TENANTPLANE_UPDATE_SCHEMA=1 cargo test -p tenantplane-migrations --test schema diesel_cli`.\n\n";

#[test]
fn tenant_schema_rs_matches_the_migrations() {
    let Some(diesel) = diesel() else { return };
    let Some(pg) = TestPg::new() else { return };
    let url = pg.url();
    run(
        &diesel,
        &[
            "migration",
            "run",
            "--migration-dir",
            &folder("postgres"),
            "--database-url",
            &url,
        ],
    );
    let printed = run(&diesel, &["print-schema", "--database-url", &url]);
    let generated = format!("{HEADER}{printed}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCHEMA_FILE);
    if std::env::var_os("TENANTPLANE_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{SCHEMA_FILE} has drifted from the migrations; regenerate it with \
         TENANTPLANE_UPDATE_SCHEMA=1 cargo test -p tenantplane-migrations --test schema diesel_cli\n--- diesel print-schema says:\n{printed}"
    );
}
