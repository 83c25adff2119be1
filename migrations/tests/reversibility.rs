//! Every tenant migration reverses, on both backends, on a database holding
//! sample data: up, down, up gives the same schema and data after both ups,
//! and down gives back exactly the schema and data from before the up (the
//! role strings, the dropped columns, the untouched tables).

use crate::common::{assert_same, assert_same_data, baseline_head, versions, TenantDb};

fn prove_every_migration_reverses(mut db: TenantDb) {
    let backend = db.name();
    let all = versions();
    let baseline = baseline_head();
    let mut previous: Option<String> = None;
    for v in &all {
        let schema_before = db.schema_dump();
        let tables_before = db.tables();
        let data_before = db.data();

        db.migrate_to(Some(v))
            .unwrap_or_else(|e| panic!("{backend}: up {v}: {e}"));
        let schema_up = db.schema_dump();
        let new_tables: Vec<String> = db
            .tables()
            .into_iter()
            .filter(|t| !tables_before.contains(t))
            .collect();
        let data_up = db.data_masking(&new_tables);
        assert_ne!(schema_up, schema_before, "{backend}: {v} changes nothing");

        db.migrate_to(previous.as_deref())
            .unwrap_or_else(|e| panic!("{backend}: down {v}: {e}"));
        let schema_down = db.schema_dump();
        assert_same(
            &schema_before,
            &schema_down,
            &format!("{backend}: down of {v} does not restore the schema"),
        );
        assert_same_data(
            &data_before,
            &db.data(),
            &format!("{backend}: down of {v} does not restore the data"),
        );

        db.migrate_to(Some(v))
            .unwrap_or_else(|e| panic!("{backend}: up again {v}: {e}"));
        assert_same(
            &schema_up,
            &db.schema_dump(),
            &format!("{backend}: {v} up/down/up changes the schema"),
        );
        assert_same_data(
            &data_up,
            &db.data_masking(&new_tables),
            &format!("{backend}: {v} up/down/up changes the data"),
        );

        if *v == baseline {
            let f = db.load_fixture(3, 120);
            assert_eq!(
                db.int("SELECT count(*) AS v FROM sales"),
                i64::from(f.shops * f.sales_per_shop)
            );
        }
        previous = Some(v.clone());
    }
    // And all the way down to empty and back up.
    db.migrate_to(None)
        .unwrap_or_else(|e| panic!("{backend}: down to empty: {e}"));
    assert_eq!(
        db.tables(),
        Vec::<String>::new(),
        "{backend}: empty schema after full revert"
    );
    db.migrate_to(all.last().map(String::as_str))
        .unwrap_or_else(|e| panic!("{backend}: up to head: {e}"));
}

#[test]
fn every_migration_reverses_on_sqlite() {
    prove_every_migration_reverses(TenantDb::sqlite());
}

#[test]
fn every_migration_reverses_on_postgres() {
    if let Some(db) = TenantDb::postgres() {
        prove_every_migration_reverses(db);
    }
}
