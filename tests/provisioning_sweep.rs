//! A process killed while provisioning leaves a `provisioning` row and maybe a
//! database; the sweeper removes both once they are older than the grace time.
//! Workers run the sweep as a durable job, once per period across all of them.

use chrono::{Duration, Utc};
use diesel::prelude::*;
use tenantplane_control_db::schema::{database_servers, tenants};
use tenantplane_control_db::Actor;
use tenantplane_fleet::registry::{self, sweep_abandoned, NewTenant};
use tenantplane_fleet::servers::DatabaseServer;
use tenantplane_fleet::tenant_db::TenantDbLocation;
use uuid::Uuid;

#[test]
fn sweeper_removes_abandoned_provisioning() {
    let dir = tempfile::tempdir().expect("dir");
    let db = crate::common::sqlite_control_db(dir.path());
    let mut conn = db.conn().expect("conn");
    let server: DatabaseServer = database_servers::table
        .select(DatabaseServer::as_select())
        .first(&mut conn)
        .expect("server");

    // What a crash between "row written" and "row active" leaves behind.
    let abandoned = |age: Duration, conn: &mut tenantplane_control_db::ControlConnection| {
        let id = Uuid::new_v4();
        let when = Utc::now().naive_utc() - age;
        diesel::insert_into(tenants::table)
            .values((
                tenants::id.eq(id.to_string()),
                tenants::slug.eq(format!("crashed-{}", &id.simple().to_string()[..8])),
                tenants::name.eq("Crashed"),
                tenants::status.eq("provisioning"),
                tenants::server_id.eq(&server.id),
                tenants::created_at.eq(when),
                tenants::updated_at.eq(when),
            ))
            .execute(conn)
            .expect("insert");
        let location = TenantDbLocation::new(&server, &id);
        location.create().expect("create the half-made database");
        (id, location)
    };
    let (old_id, old_db) = abandoned(Duration::hours(1), &mut conn);
    let (young_id, young_db) = abandoned(Duration::seconds(1), &mut conn);
    let live = registry::create(
        &db,
        &Actor::system("test"),
        NewTenant {
            slug: "alive".into(),
            name: "Alive".into(),
            plan: None,
            labels: Default::default(),
            contact_email: None,
            server: None,
            schema: Some("none".into()),
        },
    )
    .expect("create");

    assert_eq!(
        sweep_abandoned(&db, registry::PROVISIONING_GRACE).expect("sweep"),
        1
    );
    let ids: Vec<String> = tenants::table
        .select(tenants::id)
        .load(&mut conn)
        .expect("ids");
    assert!(
        !ids.contains(&old_id.to_string()),
        "the old abandoned row is gone"
    );
    assert_eq!(old_db.exists().ok(), Some(false), "and so is its database");
    assert!(
        ids.contains(&young_id.to_string()),
        "a young one may still be in progress"
    );
    assert_eq!(young_db.exists().ok(), Some(true));
    assert!(ids.contains(&live.id), "live tenants are untouched");
    assert_eq!(
        sweep_abandoned(&db, registry::PROVISIONING_GRACE).expect("sweep"),
        0
    );
}

#[test]
fn workers_run_the_sweep_as_a_job_once_per_period() {
    let dir = tempfile::tempdir().expect("dir");
    let db = crate::common::sqlite_control_db(dir.path());
    let mut conn = db.conn().expect("conn");
    let server: DatabaseServer = database_servers::table
        .select(DatabaseServer::as_select())
        .first(&mut conn)
        .expect("server");
    let id = Uuid::new_v4();
    let when = Utc::now().naive_utc() - Duration::hours(1);
    diesel::insert_into(tenants::table)
        .values((
            tenants::id.eq(id.to_string()),
            tenants::slug.eq("crashed"),
            tenants::name.eq("Crashed"),
            tenants::status.eq("provisioning"),
            tenants::server_id.eq(&server.id),
            tenants::created_at.eq(when),
            tenants::updated_at.eq(when),
        ))
        .execute(&mut conn)
        .expect("insert");
    let location = TenantDbLocation::new(&server, &id);
    location.create().expect("create the half-made database");

    // Two worker processes' worth of workers on one control DB (separate
    // pools, separate ids), sweeping every second (the maintenance thread
    // wakes every third of the lease). The lease is long enough that a
    // loaded machine does not starve a heartbeat into a takeover.
    let config = tenantplane_worker::WorkerConfig {
        threads: 1,
        lease: std::time::Duration::from_secs(3),
        sweep_every: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let second = tenantplane_control_db::ControlDb::open(&format!(
        "sqlite://{}",
        dir.path().join("control.db").display()
    ))
    .expect("second pool");
    let a = tenantplane_worker::start(db.clone(), config.clone()).expect("worker a");
    let b = tenantplane_worker::start(second, config).expect("worker b");
    crate::common::wait_for(
        "the sweep job to remove the row",
        std::time::Duration::from_secs(30),
        || {
            let left: i64 = tenants::table
                .filter(tenants::id.eq(id.to_string()))
                .count()
                .get_result(&mut conn)
                .ok()?;
            (left == 0).then_some(())
        },
    );
    // Let more periods pass with both workers queueing: two sweeps or more.
    let sweeps = || {
        tenantplane_jobs::list(
            &db,
            &tenantplane_jobs::JobFilter {
                kind: Some("sweep.provisioning".into()),
                limit: 1000,
                ..Default::default()
            },
        )
        .expect("jobs")
    };
    let succeeded = |runs: &[tenantplane_jobs::JobRecord]| {
        runs.iter()
            .filter(|j| j.state == tenantplane_control_db::states::JobState::Succeeded)
            .count()
    };
    crate::common::wait_for("a second sweep", std::time::Duration::from_secs(60), || {
        (succeeded(&sweeps()) >= 2).then_some(())
    });
    a.stop();
    b.stop();
    assert_eq!(location.exists().ok(), Some(false), "its database is gone");
    let runs = sweeps();
    assert!(
        succeeded(&runs) >= 2,
        "a sweep ran in each period: {runs:?}"
    );
    let mut periods: Vec<_> = runs.iter().map(|j| j.dedup_key.clone()).collect();
    let all = periods.len();
    periods.sort();
    periods.dedup();
    assert_eq!(
        periods.len(),
        all,
        "one job per period, whichever worker queued it: {runs:?}"
    );
    assert!(runs.iter().all(|j| j.attempts <= 1), "{runs:?}");
}
