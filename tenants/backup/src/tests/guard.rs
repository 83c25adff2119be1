//! The restore guard: a restore that did not finish (simulated: the
//! tenant's database and the control DB left disagreeing, a staging schema
//! left behind) is settled by the guard job; a restore that finished leaves
//! no guard behind.

use diesel::prelude::*;
use tenantplane_control_db::audit;
use tenantplane_control_db::schema::jobs;
use tenantplane_control_db::Error;
use tenantplane_fleet::registry::{self, NewTenant};

use super::support::{actor, exec, int, Env};
use crate::manifest::ServerKind;
use crate::restore_guard::{recover, Mode, RestoreGuard};
use crate::rows::Reason;
use crate::{create, restore_in_place};

fn guard_jobs(env: &Env) -> i64 {
    jobs::table
        .filter(jobs::kind.eq("restore.guard"))
        .count()
        .get_result(&mut *env.db.conn().unwrap())
        .unwrap()
}

fn recovered_entries(env: &Env, tenant_id: &str) -> usize {
    audit::list(&mut env.db.conn().unwrap(), Some(tenant_id), 1000)
        .unwrap()
        .iter()
        .filter(|e| e.action == "tenant.restore.recovered")
        .count()
}

fn settles(kind: ServerKind) {
    let Some(env) = Env::new(kind) else {
        return;
    };
    let t = env.tenant("guarded", 1, 5);

    // A finished restore withdraws its guard with its record.
    let b = create(&env.db, &env.store, &t.id, Reason::Manual).unwrap();
    restore_in_place(&env.db, &env.store, &b.id, &actor()).unwrap();
    assert_eq!(guard_jobs(&env), 0, "a finished restore leaves no guard");

    // Killed after the swap: the tenant is at an older version than the
    // control DB says, and (PostgreSQL) the staging schema is still there.
    let mut c = env.conn(&t.id);
    let applied = c.applied_versions().unwrap();
    let older = applied[applied.len() - 3].clone();
    c.migrate_to(Some(&older)).unwrap();
    if kind != ServerKind::Sqlite {
        exec(
            &mut c,
            "CREATE SCHEMA tp_restore_guardtest; CREATE TABLE tp_restore_guardtest.sales (id int)",
        );
    }
    let guard = RestoreGuard {
        tenant_id: t.id.clone(),
        backup_id: b.id.clone(),
        mode: Mode::InPlace,
        target_version: Some(older.clone()),
        staging: (kind != ServerKind::Sqlite).then(|| "tp_restore_guardtest".to_string()),
    };
    recover(&env.db, &guard).unwrap();
    let now = registry::get(&env.db, &t.id).unwrap();
    assert_eq!(now.schema_version.as_deref(), Some(older.as_str()));
    assert_eq!(recovered_entries(&env, &t.id), 1);
    if kind != ServerKind::Sqlite {
        let left = int(
            &mut c,
            "SELECT count(*)::text AS v FROM pg_namespace WHERE nspname = 'tp_restore_guardtest'",
        );
        assert_eq!(left, 0, "the staging schema is dropped");
    }
    // Again: nothing left to do, nothing recorded twice.
    recover(&env.db, &guard).unwrap();
    assert_eq!(recovered_entries(&env, &t.id), 1);

    // Killed while filling a new tenant: the copy is removed.
    let copy = registry::create(
        &env.db,
        &actor(),
        NewTenant {
            slug: "half-copy".into(),
            name: "Half copy".into(),
            plan: None,
            labels: Default::default(),
            contact_email: None,
            server: Some(env.server.clone()),
            schema: Some("none".into()),
        },
    )
    .unwrap();
    env.track(&copy.id);
    let location = env.location(&copy.id);
    recover(
        &env.db,
        &RestoreGuard {
            tenant_id: copy.id.clone(),
            backup_id: b.id.clone(),
            mode: Mode::NewTenant,
            target_version: b.schema_version.clone(),
            staging: None,
        },
    )
    .unwrap();
    assert!(matches!(
        registry::get(&env.db, &copy.id),
        Err(Error::NotFound { .. })
    ));
    assert!(!location.exists().unwrap(), "its database is dropped");
}

#[test]
fn the_guard_settles_an_interrupted_restore_on_sqlite() {
    settles(ServerKind::Sqlite);
}

#[test]
fn the_guard_settles_an_interrupted_restore_on_a_postgres_schema() {
    settles(ServerKind::PgSchema);
}

#[test]
fn the_guard_settles_an_interrupted_restore_on_a_postgres_database() {
    settles(ServerKind::PgDatabase);
}
