//! A process killed while provisioning leaves a `provisioning` row and maybe a
//! database; the sweeper removes both once they are older than the grace time.


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
