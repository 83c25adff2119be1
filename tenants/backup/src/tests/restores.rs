//! Round trips on each server kind: back up, change and delete rows (and
//! move the schema down), restore in place → exactly the moment of the
//! backup, schema version included; restore as a new tenant → the same.

use tenantplane_control_db::audit;
use tenantplane_control_db::states::BackupState;
use tenantplane_migrations::catalogue;

use super::support::{actor, assert_same, exec, int, state, strings, Env};
use crate::manifest::ServerKind;
use crate::rows::Reason;
use crate::store::ArtifactStore;
use crate::{create, restore_in_place, restore_new_tenant, verify, Manifest};

fn round_trip(kind: ServerKind) {
    let Some(env) = Env::new(kind) else {
        return;
    };
    let t = env.tenant("corner-shop", 3, 30);
    let head = catalogue::head().map(str::to_string);
    assert_eq!(t.schema_version, head);
    let before = state(&mut env.conn(&t.id));
    let sales_before = before
        .data
        .iter()
        .find(|(name, _)| name == "sales")
        .map(|(_, rows)| rows.len())
        .unwrap();
    assert_eq!(sales_before, 90);

    let b = create(&env.db, &env.store, &t.slug, Reason::Manual).unwrap();
    assert_eq!(b.state, BackupState::Completed.as_str());
    assert_eq!(b.server_kind, kind.as_str());
    assert_eq!(b.schema_version, head);
    let m = b.manifest.clone().unwrap();
    assert_eq!(m.tables["sales"].rows, 90);
    assert_eq!(m.tables["users"].rows, 13);
    assert_eq!(m.artifact.size_bytes as i64, b.size_bytes.unwrap());
    assert_eq!(m.tenant_slug, "corner-shop");
    assert!(env.store.exists(&b.artifact).unwrap());
    let stored = std::fs::read_to_string(env.store_path(&Manifest::key_for(&b.artifact))).unwrap();
    assert_eq!(Manifest::from_json(&stored).unwrap(), m);
    if kind != ServerKind::Sqlite {
        assert!(
            m.sequences.contains_key("sales_id_seq"),
            "{:?}",
            m.sequences.keys()
        );
    }

    let v = verify(&env.db, &env.store, &b.id).unwrap();
    assert_eq!(
        v.state,
        BackupState::Verified.as_str(),
        "{:?}",
        v.verify_error
    );
    assert!(v.verified_at.is_some());

    // Change everything: rows deleted, changed, added, and the schema moved
    // two phases down.
    let mut c = env.conn(&t.id);
    exec(
        &mut c,
        "DELETE FROM reminder_log; DELETE FROM credits WHERE id % 2 = 0; \
         UPDATE users SET full_name = 'changed'; \
         DELETE FROM sales WHERE id > 70 AND id NOT IN (SELECT sale_id FROM credits WHERE sale_id IS NOT NULL); \
         INSERT INTO sales (shop_id, subtotal_minor, tax_minor, total_minor, item_count, currency, sold_at) \
           VALUES (1, 5, 0, 5, 1, 'USD', '2026-04-01 10:00:00');",
    );
    let phase4 = catalogue::phase_version(4);
    c.migrate_to(phase4).unwrap();
    env.set_version(&t.id, phase4);
    drop(c);
    assert_ne!(state(&mut env.conn(&t.id)), before);

    let r = restore_in_place(&env.db, &env.store, &b.id, &actor()).unwrap();
    let safety = r.safety_backup.clone().unwrap();
    assert_eq!(safety.reason, Reason::PreRestore.as_str());
    assert_eq!(safety.state, BackupState::Completed.as_str());
    assert_eq!(safety.schema_version.as_deref(), phase4);
    assert_eq!(r.tenant.schema_version, head);
    assert_eq!(r.backup.id, b.id);

    let mut c = env.conn(&t.id);
    let after = state(&mut c);
    assert_same(&before, &after, "restored in place");
    let applied = c.applied_versions().unwrap();
    assert_eq!(applied.last().cloned(), head);

    // New rows continue exactly where the source did: ids after the
    // source's counters, invoice numbers after the shop's counter.
    let last_id = int(&mut c, "SELECT CAST(max(id) AS TEXT) AS v FROM sales");
    let last_number = int(
        &mut c,
        "SELECT CAST(last_number AS TEXT) AS v FROM invoice_counters WHERE shop_id = 1",
    );
    exec(
        &mut c,
        "INSERT INTO sales (shop_id, subtotal_minor, tax_minor, total_minor, item_count, currency, sold_at) \
         VALUES (1, 7, 0, 7, 1, 'USD', '2026-04-02 10:00:00')",
    );
    let (id, number) = (
        int(&mut c, "SELECT CAST(max(id) AS TEXT) AS v FROM sales"),
        int(
            &mut c,
            "SELECT CAST(invoice_number AS TEXT) AS v FROM sales WHERE id = (SELECT max(id) FROM sales)",
        ),
    );
    assert_eq!(id, last_id + 1);
    assert_eq!(number, last_number + 1);
    // The customer-metrics trigger runs again too.
    assert_eq!(
        strings(&mut c, "SELECT CAST(count(*) AS TEXT) AS v FROM customer_metrics"),
        strings(
            &mut c,
            "SELECT CAST(count(DISTINCT shop_id || ':' || customer_phone) AS TEXT) AS v FROM sales WHERE customer_phone IS NOT NULL AND customer_phone <> ''"
        )
    );
    drop(c);

    let log = audit::list(&mut env.db.conn().unwrap(), Some(&t.id), 50).unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"tenant.restore"), "{actions:?}");
    assert!(actions.contains(&"backup.create"), "{actions:?}");

    // As a new tenant: the same data and schema, on a server of the kind.
    let n = restore_new_tenant(
        &env.db,
        &env.store,
        &b.id,
        "corner-shop-copy",
        None,
        &actor(),
    )
    .unwrap();
    env.track(&n.tenant.id);
    assert_eq!(n.tenant.slug, "corner-shop-copy");
    assert_eq!(n.tenant.name, t.name);
    assert_eq!(n.tenant.schema_version, head);
    assert_eq!(n.tenant.status, "active");
    assert!(n.safety_backup.is_none());
    let copy = state(&mut env.conn(&n.tenant.id));
    assert_same(&before, &copy, "restored as a new tenant");

    // Each restore recorded restore.completed with its change.
    let done = env.events("restore.completed");
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(done[0]["backup_id"], b.id.as_str());
    assert_eq!(done[0]["mode"], "in_place");
    assert_eq!(done[0]["restored_tenant_id"], t.id.as_str());
    assert_eq!(done[1]["mode"], "new_tenant");
    assert_eq!(done[1]["tenant_id"], t.id.as_str());
    assert_eq!(done[1]["restored_tenant_id"], n.tenant.id.as_str());

    // The new tenant is a tenant like any other: it backs up and verifies.
    let b2 = create(&env.db, &env.store, &n.tenant.id, Reason::Manual).unwrap();
    assert_eq!(b2.manifest.unwrap().tables, m.tables);
}

#[test]
fn round_trip_sqlite_file() {
    round_trip(ServerKind::Sqlite);
}

#[test]
fn round_trip_pg_schema() {
    round_trip(ServerKind::PgSchema);
}

#[test]
fn round_trip_pg_database() {
    round_trip(ServerKind::PgDatabase);
}

#[test]
fn restores_refuse_unusable_backups_and_wrong_servers() {
    let Some(env) = Env::new(ServerKind::Sqlite) else {
        return;
    };
    let t = env.tenant("refusals", 1, 5);
    let b = create(&env.db, &env.store, &t.id, Reason::Manual).unwrap();
    // A slug that is taken: nothing is created, the backup stays usable.
    let err =
        restore_new_tenant(&env.db, &env.store, &b.id, "refusals", None, &actor()).unwrap_err();
    assert!(
        matches!(err, tenantplane_control_db::Error::Conflict(_)),
        "{err}"
    );
    // A server of another kind.
    let err = restore_new_tenant(&env.db, &env.store, &b.id, "x-copy", Some("nope"), &actor())
        .unwrap_err();
    assert!(
        matches!(err, tenantplane_control_db::Error::Invalid(_)),
        "{err}"
    );
    // A failed backup.
    let mut conn = env.db.conn().unwrap();
    use diesel::prelude::*;
    use tenantplane_control_db::schema::backups;
    diesel::update(backups::table.find(&b.id))
        .set(backups::state.eq("failed"))
        .execute(&mut *conn)
        .unwrap();
    let err = restore_in_place(&env.db, &env.store, &b.id, &actor()).unwrap_err();
    assert!(
        err.to_string().contains("only completed or verified"),
        "{err}"
    );
}
