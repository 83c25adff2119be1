//! Moves on each server kind, at head with the fixture: the tenant lands
//! whole (schema, every row, sequences) on the target, the placement
//! switches, the source goes; and a run repeated after an interrupted one
//! cleans up whichever copy is not served.

use tenantplane_control_db::schema::tenants;
use tenantplane_fleet::servers::{self, NewServer};
use tenantplane_testkit::TestPg;

use super::support::{actor, assert_same, Env, State};
use crate::manifest::ServerKind;
use crate::moving::{move_tenant, Moved};
use diesel::prelude::*;

/// Registers a second server the kind's tenants can move to; returns its
/// id (and the PostgreSQL database behind it, kept alive by the caller).
fn second_server(env: &Env, dir: &std::path::Path) -> (String, Option<TestPg>) {
    let (url, isolation, pg) = match env.kind {
        ServerKind::Sqlite => (
            format!("sqlite://{}", dir.join("second").display()),
            "file",
            None,
        ),
        // Another database; database isolation is the source's other kind,
        // schema isolation reaches a tenant in its own database.
        _ => {
            let pg = TestPg::new().unwrap();
            (pg.url(), "schema", Some(pg))
        }
    };
    let s = servers::register(
        &env.db,
        &actor(),
        NewServer {
            name: Some("second".into()),
            kind: if env.kind == ServerKind::Sqlite {
                "sqlite"
            } else {
                "postgres"
            }
            .into(),
            url,
            isolation: Some(isolation.into()),
            capacity: None,
        },
    )
    .unwrap();
    (s.id, pg)
}

fn server_of(env: &Env, tenant: &str) -> String {
    tenants::table
        .find(tenant)
        .select(tenants::server_id)
        .first(&mut *env.db.conn().unwrap())
        .unwrap()
}

/// The tenant whole. Moving between isolations changes who owns the
/// schema (a database's `public` belongs to `pg_database_owner`, a schema
/// the server creates to its role, as for a tenant provisioned there):
/// that line belongs to the place, not the tenant.
fn state(env: &Env, tenant: &str) -> State {
    let mut s = super::support::state(&mut env.conn(tenant));
    if env.kind == ServerKind::PgDatabase {
        s.schema.retain(|l| !l.starts_with("schema owner="));
    }
    s
}

fn moves_whole(kind: ServerKind) {
    let Some(env) = Env::new(kind) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (second, _pg) = second_server(&env, dir.path());
    let t = env.tenant("traveller", 2, 30);
    let from = server_of(&env, &t.id);
    let source = env.location(&t.id);
    let before = state(&env, &t.id);

    let moved = move_tenant(&env.db, &env.store, &actor(), &t.id, &from, &second).unwrap();
    assert_eq!(moved, Moved::Moved);
    assert_eq!(server_of(&env, &t.id), second);
    let target = env.location(&t.id);
    assert_ne!(target, source);
    assert_same(&before, &state(&env, &t.id), "after the move");
    assert!(!source.exists().unwrap(), "the source is dropped");

    // And back: a PostgreSQL schema into a database of its own, or a file
    // into the default directory again.
    let moved = move_tenant(&env.db, &env.store, &actor(), &t.id, &second, &from).unwrap();
    assert_eq!(moved, Moved::Moved);
    assert_same(&before, &state(&env, &t.id), "after moving back");
    assert!(!target.exists().unwrap());
    assert!(source.exists().unwrap());
}

#[test]
fn a_sqlite_tenant_moves_whole() {
    moves_whole(ServerKind::Sqlite);
}

#[test]
fn a_pg_schema_tenant_moves_whole() {
    moves_whole(ServerKind::PgSchema);
}

#[test]
fn a_pg_database_tenant_moves_whole() {
    moves_whole(ServerKind::PgDatabase);
}

#[test]
fn a_repeated_run_drops_the_copy_that_is_not_served() {
    let Some(env) = Env::new(ServerKind::Sqlite) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (second, _) = second_server(&env, dir.path());
    let t = env.tenant("twice", 1, 10);
    let from = server_of(&env, &t.id);
    let source = env.location(&t.id);
    let tenantplane_fleet::tenant_db::TenantDbLocation::SqliteFile { path: src } = &source else {
        panic!("a file")
    };
    let before = state(&env, &t.id);

    // Interrupted before the switch: a half-written file on the target.
    let target_dir = dir.path().join("second");
    let half = target_dir.join(src.file_name().unwrap());
    std::fs::write(&half, b"not a database").unwrap();
    move_tenant(&env.db, &env.store, &actor(), &t.id, &from, &second).unwrap();
    assert_same(&before, &state(&env, &t.id), "the leftover was replaced");

    // Interrupted after the switch: the old source is still there.
    std::fs::copy(&half, src).unwrap();
    let again = move_tenant(&env.db, &env.store, &actor(), &t.id, &from, &second).unwrap();
    assert_eq!(again, Moved::Moved);
    assert!(!src.exists(), "the old source is dropped");
    assert_same(&before, &state(&env, &t.id), "the served copy is untouched");
    assert_eq!(server_of(&env, &t.id), second);
}

/// While a move holds the tenant, a migration of it cannot start: it fails
/// transiently (and its task is retried after the move).
fn migrations_wait(kind: ServerKind) {
    use std::time::Duration;
    use tenantplane_fleet::tenant_run::{self, lock_key, RunOptions};
    let Some(env) = Env::new(kind) else { return };
    let t = env.tenant("held", 1, 5);
    let location = env.location(&t.id);
    let phase6 = tenantplane_migrations::catalogue::phase_version(6).map(str::to_string);
    let opts = RunOptions {
        target: phase6,
        probes: tenantplane_fleet::tenant_run::ProbeSet::Off,
        timeout: Duration::from_secs(10),
        lock_wait: Duration::from_millis(300),
        lock_key: lock_key(&t.id),
        recorded: t.schema_version.clone(),
    };
    let held = crate::moving::hold_for_test(&location, &t.id);
    let outcome = tenant_run::run(&location, &opts);
    let err = outcome
        .error
        .expect("the migration must not run during a move");
    assert!(err.transient, "{}", err.message);
    assert!(outcome.applied.is_empty());
    drop(held);
    let outcome = tenant_run::run(&location, &opts);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
}

#[test]
fn a_sqlite_tenant_being_moved_is_not_migrated() {
    migrations_wait(ServerKind::Sqlite);
}

#[test]
fn a_pg_tenant_being_moved_is_not_migrated() {
    migrations_wait(ServerKind::PgSchema);
}

#[test]
fn a_target_that_stopped_taking_tenants_is_refused_at_run_time() {
    let Some(env) = Env::new(ServerKind::Sqlite) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (second, _) = second_server(&env, dir.path());
    let t = env.tenant("stays", 1, 5);
    let from = server_of(&env, &t.id);
    servers::patch(
        &env.db,
        &actor(),
        &second,
        servers::ServerPatch {
            capacity: None,
            status: Some("draining".into()),
        },
    )
    .unwrap();
    let err = move_tenant(&env.db, &env.store, &actor(), &t.id, &from, &second).unwrap_err();
    assert!(
        matches!(err, tenantplane_control_db::Error::Invalid(_)),
        "a permanent refusal: {err}"
    );
    assert_eq!(server_of(&env, &t.id), from);
    assert!(env.location(&t.id).exists().unwrap());
    assert_eq!(
        std::fs::read_dir(dir.path().join("second"))
            .unwrap()
            .count(),
        0
    );
}

/// One move of a tenant at a time: asking again for the same move returns
/// the open one, asking for another target while it is open is refused and
/// queues nothing, and a server being drained refuses moves of its tenants
/// (the drain moves them).
#[test]
fn a_tenant_has_one_move_at_a_time() {
    use crate::moving::start_move;
    use tenantplane_control_db::Error;
    let Some(env) = Env::new(ServerKind::Sqlite) else {
        return;
    };
    let t = env.tenant("mover", 1, 5);
    let other = env.tenant("drained", 1, 5);
    let from = server_of(&env, &t.id);
    assert_eq!(server_of(&env, &other.id), from);
    let dir = tempfile::tempdir().unwrap();
    let (second, _) = second_server(&env, dir.path());
    let third = servers::register(
        &env.db,
        &actor(),
        NewServer {
            name: Some("third".into()),
            kind: "sqlite".into(),
            url: format!("sqlite://{}", dir.path().join("third").display()),
            isolation: Some("file".into()),
            capacity: None,
        },
    )
    .unwrap()
    .id;
    let first = start_move(&env.db, &actor(), &t.id, &second).unwrap();
    let again = start_move(&env.db, &actor(), &t.id, &second).unwrap();
    assert_eq!(again.job_id, first.job_id, "the same move: the open job");
    let err = start_move(&env.db, &actor(), &t.id, &third).unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains(&format!("job {}", first.job_id))),
        "{err}"
    );
    let moves: i64 = tenantplane_control_db::schema::jobs::table
        .filter(tenantplane_control_db::schema::jobs::kind.eq("tenant.move"))
        .count()
        .get_result(&mut *env.db.conn().unwrap())
        .unwrap();
    assert_eq!(moves, 1, "nothing queued by the refused request");

    let drain = crate::drain::start_drain(&env.db, &actor(), &from).unwrap();
    assert_eq!(drain.state, "pending");
    let err = start_move(&env.db, &actor(), &other.id, &third).unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains("being drained")),
        "{err}"
    );
    assert_eq!(server_of(&env, &other.id), from);
}
