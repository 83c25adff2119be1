//! Verification findings, the sweep after a killed backup, and the row
//! operations (list, pin, delete).

use chrono::{Duration, Utc};
use diesel::prelude::*;
use tenantplane_control_db::audit;
use tenantplane_control_db::schema::backups;
use tenantplane_control_db::states::BackupState;
use tenantplane_control_db::Error;

use super::support::{actor, age, Env};
use crate::manifest::{Manifest, ServerKind};
use crate::rows::{BackupFilter, Reason};
use crate::store::ArtifactStore;
use crate::SweepAges;
use crate::{create, create_by, delete, get, list, pin, restore_in_place, sweep, unpin, verify};

fn flipped_byte(kind: ServerKind) {
    let Some(env) = Env::new(kind) else {
        return;
    };
    let t = env.tenant("flipped", 1, 10);
    let b = create(&env.db, &env.store, &t.id, Reason::Manual).unwrap();
    let path = env.store_path(&b.artifact);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let v = verify(&env.db, &env.store, &b.id).unwrap();
    assert_eq!(v.state, BackupState::Failed.as_str());
    let why = v.verify_error.unwrap();
    assert!(why.contains("SHA-256 mismatch"), "{why}");
    assert!(v.verified_at.is_none());
    // A failed backup is never restored.
    let err = restore_in_place(&env.db, &env.store, &b.id, &actor()).unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");

    // A manifest that promises other rows than the artifact holds: the
    // scratch restore finds it (and leaves no scratch schema behind).
    let b = create(&env.db, &env.store, &t.id, Reason::Manual).unwrap();
    let mut m = b.manifest.clone().unwrap();
    m.tables.get_mut("sales").unwrap().rows += 1;
    diesel::update(backups::table.find(&b.id))
        .set(backups::manifest.eq(m.to_json()))
        .execute(&mut *env.db.conn().unwrap())
        .unwrap();
    let v = verify(&env.db, &env.store, &b.id).unwrap();
    assert_eq!(v.state, BackupState::Failed.as_str());
    let why = v.verify_error.unwrap();
    assert!(
        why.contains("table sales: 10 rows, manifest says 11"),
        "{why}"
    );
    if let Some(pg) = &env.pg {
        use diesel::sql_types::BigInt;
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let left: N = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_namespace WHERE nspname LIKE 'tp_verify_%' OR nspname LIKE 'tp_restore_%'",
        )
        .get_result(&mut pg.connect())
        .unwrap();
        assert_eq!(left.n, 0);
    }
}

#[test]
fn flipped_byte_fails_verification_sqlite() {
    flipped_byte(ServerKind::Sqlite);
}

#[test]
fn flipped_byte_fails_verification_pg_schema() {
    flipped_byte(ServerKind::PgSchema);
}

#[test]
fn sweep_fails_interrupted_backups_and_removes_orphans() {
    let Some(env) = Env::new(ServerKind::Sqlite) else {
        return;
    };
    let t = env.tenant("swept", 1, 5);
    let good = create(&env.db, &env.store, &t.id, Reason::Scheduled).unwrap();

    // A backup killed mid-way: its row still `running` since two hours,
    // half its artifact in place and a temporary file of the store's.
    let killed = uuid::Uuid::new_v4().to_string();
    let key = format!("tenants/{}/{killed}.sqlite.gz", t.id);
    let two_hours_ago = Utc::now().naive_utc() - Duration::hours(2);
    diesel::insert_into(backups::table)
        .values((
            backups::id.eq(&killed),
            backups::tenant_id.eq(&t.id),
            backups::server_kind.eq("sqlite"),
            backups::state.eq("running"),
            backups::reason.eq("scheduled"),
            backups::artifact.eq(&key),
            backups::pinned.eq(false),
            backups::created_at.eq(two_hours_ago),
            backups::started_at.eq(Some(two_hours_ago)),
        ))
        .execute(&mut *env.db.conn().unwrap())
        .unwrap();
    let dir = env.store_path(&key).parent().unwrap().to_path_buf();
    let half = env.store_path(&key);
    std::fs::write(&half, b"\x1f\x8b half an artifact").unwrap();
    let temp = dir.join(format!(".tp-tmp-0123-{killed}.sqlite.gz"));
    std::fs::write(&temp, b"half").unwrap();
    let orphan = env.store_path(&format!("tenants/{}/orphan.sqlite.gz", t.id));
    std::fs::write(&orphan, b"no row").unwrap();
    let young = env.store_path(&format!("tenants/{}/young.sqlite.gz", t.id));
    std::fs::write(&young, b"being written").unwrap();
    for p in [&half, &temp, &orphan] {
        age(p, 7200);
    }
    // A running backup inside its grace is left alone.
    let recent = uuid::Uuid::new_v4().to_string();
    diesel::insert_into(backups::table)
        .values((
            backups::id.eq(&recent),
            backups::tenant_id.eq(&t.id),
            backups::server_kind.eq("sqlite"),
            backups::state.eq("running"),
            backups::reason.eq("manual"),
            backups::artifact.eq(format!("tenants/{}/{recent}.sqlite.gz", t.id)),
            backups::pinned.eq(false),
            backups::created_at.eq(Utc::now().naive_utc()),
            backups::started_at.eq(Some(Utc::now().naive_utc())),
        ))
        .execute(&mut *env.db.conn().unwrap())
        .unwrap();

    // One that started long ago but whose process still beats is alive.
    let beating = uuid::Uuid::new_v4().to_string();
    diesel::insert_into(backups::table)
        .values((
            backups::id.eq(&beating),
            backups::tenant_id.eq(&t.id),
            backups::server_kind.eq("sqlite"),
            backups::state.eq("running"),
            backups::reason.eq("scheduled"),
            backups::artifact.eq(format!("tenants/{}/{beating}.sqlite.gz", t.id)),
            backups::pinned.eq(false),
            backups::created_at.eq(two_hours_ago),
            backups::started_at.eq(Some(two_hours_ago)),
            backups::heartbeat_at.eq(Some(Utc::now().naive_utc())),
        ))
        .execute(&mut *env.db.conn().unwrap())
        .unwrap();
    // The scratch directory of a process that is gone (no such pid) goes,
    // this process's own stays.
    let dead_scratch = std::env::temp_dir().join(format!("tp-backup-4000000000-{killed}"));
    std::fs::create_dir_all(dead_scratch.join("sub")).unwrap();
    let own_scratch = crate::backup::work_dir("sweep-test").unwrap();

    let ages = SweepAges {
        stale_after: Duration::minutes(30),
        incomplete_after: Duration::minutes(30),
    };
    let report = sweep(&env.db, &env.store, ages).unwrap();
    assert_eq!(report.interrupted, 1);
    assert!(report.scratch_removed >= 1, "{report:?}");
    assert!(!dead_scratch.exists());
    assert!(own_scratch.path().is_dir());
    assert_eq!(get(&env.db, &beating).unwrap().state, "running");
    assert_eq!(report.orphans_removed, 2, "{report:?}");
    assert_eq!(report.incomplete_removed, 1);

    let row = get(&env.db, &killed).unwrap();
    assert_eq!(row.state, BackupState::Failed.as_str());
    assert!(row.error.unwrap().starts_with("interrupted"));
    // Marked failed together with its backup.failed event.
    let failed = env.events("backup.failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["backup_id"], killed.as_str());
    assert_eq!(failed[0]["tenant_id"], t.id.as_str());
    assert_eq!(failed[0]["slug"], "swept");
    assert_eq!(failed[0]["reason"], "scheduled");
    assert_eq!(get(&env.db, &recent).unwrap().state, "running");
    assert!(!half.exists() && !temp.exists() && !orphan.exists());
    assert!(young.exists(), "objects younger than the grace stay");
    assert!(env.store.exists(&good.artifact).unwrap());
    assert!(env
        .store
        .exists(&Manifest::key_for(&good.artifact))
        .unwrap());
    // Nothing left to do the second time.
    let again = sweep(&env.db, &env.store, ages).unwrap();
    assert_eq!(again, Default::default());
}

#[test]
fn list_pin_and_delete() {
    let Some(env) = Env::new(ServerKind::Sqlite) else {
        return;
    };
    let t = env.tenant("kept", 1, 3);
    let other = env.tenant("other", 1, 3);
    let a = create_by(&env.db, &env.store, &t.id, Reason::Manual, &actor()).unwrap();
    let b = create(&env.db, &env.store, &t.slug, Reason::Scheduled).unwrap();
    create(&env.db, &env.store, &other.id, Reason::Manual).unwrap();

    let page = list(
        &env.db,
        &BackupFilter {
            tenant: Some("kept".into()),
            limit: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, b.id, "newest first");
    let next = list(
        &env.db,
        &BackupFilter {
            tenant: Some("kept".into()),
            limit: Some(1),
            cursor: page.next_cursor.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(next.items[0].id, a.id);
    assert!(next.next_cursor.is_none());
    assert_eq!(
        list(&env.db, &BackupFilter::default()).unwrap().items.len(),
        3
    );
    assert!(list(
        &env.db,
        &BackupFilter {
            state: Some("bogus".into()),
            ..Default::default()
        }
    )
    .is_err());

    assert!(pin(&env.db, &actor(), &a.id).unwrap().pinned);
    let err = delete(&env.db, &env.store, &actor(), &a.id).unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert!(env.store.exists(&a.artifact).unwrap());
    assert!(!unpin(&env.db, &actor(), &a.id).unwrap().pinned);
    delete(&env.db, &env.store, &actor(), &a.id).unwrap();
    assert!(!env.store.exists(&a.artifact).unwrap());
    assert!(!env.store.exists(&Manifest::key_for(&a.artifact)).unwrap());
    assert!(matches!(get(&env.db, &a.id), Err(Error::NotFound { .. })));

    let log = audit::list(&mut env.db.conn().unwrap(), Some(&t.id), 50).unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    for want in [
        "backup.pin",
        "backup.unpin",
        "backup.delete",
        "backup.create",
    ] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
}
