//! Both backends carry the same migrations, each with a working down.sql.

use std::path::Path;

fn folders(backend: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tenant")
        .join(backend);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn sqlite_and_postgres_have_identical_version_lists() {
    let sqlite = folders("sqlite");
    let postgres = folders("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite, postgres,
        "migrations/tenant/sqlite and migrations/tenant/postgres differ"
    );
    let embedded: Vec<String> = tenantplane_migrations::catalogue::versions()
        .iter()
        .map(|m| format!("{}_{}", m.version, m.name))
        .collect();
    let on_disk: Vec<String> = sqlite
        .iter()
        .map(|f| {
            let (v, n) = f.split_once('_').expect("version_name");
            format!("{}_{n}", v.replace('-', ""))
        })
        .collect();
    assert_eq!(embedded, on_disk, "the catalogue reads every folder");
}

#[test]
fn every_migration_has_up_and_a_real_down() {
    for backend in ["sqlite", "postgres"] {
        for f in folders(backend) {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tenant")
                .join(backend)
                .join(&f);
            for file in ["up.sql", "down.sql"] {
                let text = std::fs::read_to_string(dir.join(file))
                    .unwrap_or_else(|e| panic!("{backend}/{f}/{file}: {e}"));
                let sql: String = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("--"))
                    .collect();
                assert!(!sql.trim().is_empty(), "{backend}/{f}/{file} is empty");
            }
        }
    }
}
