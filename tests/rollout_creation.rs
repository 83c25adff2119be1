//! Rollout creation reads the selection a page at a time: waves, order and
//! skipped tenants must come out the same across page boundaries, on both
//! control-database backends.

use chrono::Utc;
use diesel::prelude::*;
use tenantplane_control_db::schema::{database_servers, tasks, tenants};
use tenantplane_control_db::{Actor, ControlDb};
use tenantplane_fleet::servers::{self, DatabaseServer};
use tenantplane_migrations::catalogue;
use tenantplane_rollout::rollouts::{self, Created, RolloutRequest, Selector, WaveSpec};
use tenantplane_testkit::TestPg;
use uuid::Uuid;

/// More than two pages of tenants, one deleted and one still provisioning
/// (both never selected), every seventh already at head.
const TENANTS: usize = 1_234;

fn seed(db: &ControlDb) -> (Vec<String>, Vec<String>) {
    let mut conn = db.conn().expect("conn");
    let server: DatabaseServer = database_servers::table
        .select(DatabaseServer::as_select())
        .first(&mut conn)
        .expect("server");
    let head = catalogue::head().expect("head");
    let phase0 = catalogue::phase_version(0).expect("phase 0");
    let now = Utc::now().naive_utc();
    let mut selectable = Vec::new();
    let mut at_head = Vec::new();
    for i in 0..TENANTS + 2 {
        let id = Uuid::new_v4().to_string();
        let version = if i % 7 == 0 { head } else { phase0 };
        let status = if i == TENANTS + 1 {
            "provisioning"
        } else {
            "active"
        };
        diesel::insert_into(tenants::table)
            .values((
                tenants::id.eq(&id),
                tenants::slug.eq(format!("shop-{i}")),
                tenants::name.eq("Shop"),
                tenants::status.eq(status),
                tenants::server_id.eq(&server.id),
                tenants::schema_version.eq(version),
                tenants::created_at.eq(now),
                tenants::updated_at.eq(now),
                tenants::deleted_at.eq((i == TENANTS).then_some(now)),
            ))
            .execute(&mut conn)
            .expect("insert tenant");
        if i < TENANTS {
            selectable.push(id.clone());
            if version == head {
                at_head.push(id);
            }
        }
    }
    (selectable, at_head)
}

fn request(dry_run: bool) -> RolloutRequest {
    serde_json::from_value(serde_json::json!({
        "target": "head",
        "selector": {"all": true},
        "waves": [{"name": "canary", "count": 10}, {"percent": 40}],
        "dry_run": dry_run,
    }))
    .expect("request")
}

fn check(db: &ControlDb) {
    let (selectable, at_head) = seed(db);
    let actor = Actor::system("test");

    let Created::Plan(plan) = rollouts::create(db, &actor, request(true)).expect("dry run") else {
        panic!("a dry run returns a plan");
    };
    assert_eq!(plan.total, TENANTS);
    assert_eq!(plan.to_migrate, TENANTS - at_head.len());
    let sizes: Vec<i64> = plan.waves.iter().map(|w| w.size).collect();
    // Waves are cut among the tenants that migrate: 40 % of them rounded
    // up; the rest is the last wave. Skipped tenants are in no wave's size.
    let work = (TENANTS - at_head.len()) as i64;
    let ring = (work * 40 + 99) / 100;
    assert_eq!(sizes, vec![10, ring, work - 10 - ring]);
    for (wave, size) in sizes.iter().enumerate() {
        let planned = plan
            .tasks
            .iter()
            .filter(|t| t.wave == wave as i32 && t.action != "skip")
            .count();
        assert_eq!(planned as i64, *size, "wave {wave} of the plan");
    }
    let mut conn = db.conn().expect("conn");
    let none: i64 = tasks::table.count().get_result(&mut conn).expect("count");
    assert_eq!(none, 0, "a dry run writes no task");

    let Created::Rollout(rollout) = rollouts::create(db, &actor, request(false)).expect("create")
    else {
        panic!("a rollout");
    };
    assert_eq!(rollout.total as usize, TENANTS);
    assert_eq!(
        rollout.waves.iter().map(|w| w.size).collect::<Vec<_>>(),
        sizes
    );
    assert_eq!(rollout.counts.skipped as usize, at_head.len());
    assert_eq!(rollout.counts.pending as usize, TENANTS - at_head.len());

    let rows: Vec<(String, i32, String)> = tasks::table
        .filter(tasks::rollout_id.eq(&rollout.id))
        .order(tasks::id)
        .select((tasks::tenant_id, tasks::wave, tasks::state))
        .load(&mut conn)
        .expect("tasks");
    let mut got: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    got.sort();
    let mut want = selectable.clone();
    want.sort();
    assert_eq!(got, want, "every selectable tenant exactly once");
    // Claims follow insert order: the waves of the work must be in order.
    let work_rows: Vec<&(String, i32, String)> = rows.iter().filter(|r| r.2 != "skipped").collect();
    assert!(
        work_rows.windows(2).all(|w| w[0].1 <= w[1].1),
        "tasks are written wave by wave"
    );
    for (wave, size) in sizes.iter().enumerate() {
        let n = work_rows.iter().filter(|r| r.1 == wave as i32).count();
        assert_eq!(n as i64, *size, "wave {wave}");
    }
    assert!(
        rows.iter().filter(|r| r.2 == "skipped").all(|r| r.1 == 0),
        "skipped tenants sit in wave 0, finished"
    );
    for (id, _, state) in &rows {
        let want = if at_head.contains(id) {
            "skipped"
        } else {
            "pending"
        };
        assert_eq!(state, want, "tenant {id}");
    }
    // Every column of every task as the tenant has it (PostgreSQL writes
    // them as arrays, one per column: a swapped column would show here).
    type Written = (
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        bool,
    );
    let written: Vec<Written> = tasks::table
        .inner_join(tenants::table)
        .filter(tasks::rollout_id.eq(&rollout.id))
        .select((
            tasks::state,
            tasks::server_id,
            tasks::from_version,
            tasks::to_version,
            tasks::reached_version,
            tasks::finished_at.is_not_null(),
        ))
        .order(tasks::id)
        .load(&mut conn)
        .expect("written");
    let tenant_servers: Vec<(String, Option<String>)> = tasks::table
        .inner_join(tenants::table)
        .filter(tasks::rollout_id.eq(&rollout.id))
        .select((tenants::server_id, tenants::schema_version))
        .order(tasks::id)
        .load(&mut conn)
        .expect("tenants");
    let head = catalogue::head().map(str::to_string);
    for ((state, server, from, to, reached, finished), (tenant_server, version)) in
        written.iter().zip(&tenant_servers)
    {
        assert_eq!(server, tenant_server);
        assert_eq!((from, to), (version, &head));
        let skipped = state == "skipped";
        assert_eq!(reached, if skipped { &head } else { &None }, "{state}");
        assert_eq!(*finished, skipped, "{state}");
    }
    assert_eq!(written.len(), TENANTS);
    // A stable shuffle, not the order of the ids.
    let canary: Vec<&String> = work_rows.iter().take(10).map(|r| &r.0).collect();
    assert!(
        canary.iter().all(|id| !at_head.contains(id)),
        "the canary migrates"
    );
    let mut sorted = canary.clone();
    sorted.sort();
    assert_ne!(canary, sorted, "the canaries are a spread of the fleet");

    // Only tenants that match count: a selector matching none is refused.
    let nobody = RolloutRequest {
        selector: Selector {
            labels: Some([("nobody".to_string(), "here".to_string())].into()),
            ..Selector::default()
        },
        waves: Some(vec![WaveSpec {
            count: Some(1),
            ..WaveSpec::default()
        }]),
        ..request(false)
    };
    let err = rollouts::create(db, &actor, nobody).err().expect("refused");
    assert!(err.to_string().contains("matches no tenant"), "{err}");
}

#[test]
fn creation_pages_through_the_selection_on_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let db = crate::common::sqlite_control_db(dir.path());
    check(&db);
}

#[test]
fn creation_pages_through_the_selection_on_postgres() {
    let Some(pg) = TestPg::new() else {
        return;
    };
    let db = ControlDb::open(&pg.url()).expect("open");
    let dir = tempfile::tempdir().expect("dir");
    servers::ensure_default(&db, dir.path()).expect("default server");
    check(&db);
}

/// Selectors name plans by slug; tenants store the plan's id.
#[test]
fn a_plan_selector_selects_the_tenants_on_that_plan() {
    let dir = tempfile::tempdir().expect("dir");
    let db = crate::common::sqlite_control_db(dir.path());
    tenantplane_flags::plans::ensure_defaults(&db).expect("plans");
    let actor = Actor::system("test");
    for (slug, plan) in [("p-one", "pro"), ("p-two", "pro"), ("f-one", "free")] {
        tenantplane_fleet::registry::create(
            &db,
            &actor,
            tenantplane_fleet::registry::NewTenant {
                slug: slug.into(),
                name: slug.into(),
                plan: Some(plan.into()),
                labels: Default::default(),
                contact_email: None,
                server: None,
                schema: Some("none".into()),
            },
        )
        .expect("tenant");
    }
    let plan_of = |plans: serde_json::Value| {
        let req: RolloutRequest = serde_json::from_value(serde_json::json!({
            "target": "head", "selector": {"plans": plans}, "dry_run": true,
        }))
        .expect("request");
        rollouts::create(&db, &actor, req)
    };
    let Ok(Created::Plan(plan)) = plan_of(serde_json::json!(["pro"])) else {
        panic!("a dry run plans")
    };
    let mut slugs: Vec<_> = plan.tasks.iter().map(|t| t.slug.clone()).collect();
    slugs.sort();
    assert_eq!(slugs, vec!["p-one", "p-two"]);
    let err = plan_of(serde_json::json!(["gold"])).err().expect("refused");
    assert!(err.to_string().contains("unknown plans"), "{err}");
}

/// The bug of issue 15: a canary of 5 over a fleet mostly at the target
/// held 5 tenants that were already there and tested nothing.
#[test]
fn a_canary_is_cut_among_the_tenants_that_migrate() {
    let dir = tempfile::tempdir().expect("dir");
    let db = crate::common::sqlite_control_db(dir.path());
    let mut conn = db.conn().expect("conn");
    let server: DatabaseServer = database_servers::table
        .select(DatabaseServer::as_select())
        .first(&mut conn)
        .expect("server");
    let head = catalogue::head().expect("head");
    let phase0 = catalogue::phase_version(0).expect("phase 0");
    let now = Utc::now().naive_utc();
    let mut behind = Vec::new();
    for i in 0..50 {
        let id = Uuid::new_v4().to_string();
        let version = if i < 30 { head } else { phase0 };
        if i >= 30 {
            behind.push(id.clone());
        }
        diesel::insert_into(tenants::table)
            .values((
                tenants::id.eq(&id),
                tenants::slug.eq(format!("canary-{i:02}")),
                tenants::name.eq(format!("Shop {i}")),
                tenants::status.eq("active"),
                tenants::server_id.eq(&server.id),
                tenants::schema_version.eq(Some(version)),
                tenants::created_at.eq(now),
                tenants::updated_at.eq(now),
            ))
            .execute(&mut conn)
            .expect("tenant");
    }
    let actor = Actor::system("test");
    let req = |waves: serde_json::Value, target: &str| -> RolloutRequest {
        serde_json::from_value(serde_json::json!({
            "target": target, "selector": {"all": true}, "waves": waves,
        }))
        .expect("request")
    };
    let Created::Rollout(r) = rollouts::create(
        &db,
        &actor,
        req(serde_json::json!([{"name": "canary", "count": 5}]), "head"),
    )
    .expect("create") else {
        panic!("a rollout")
    };
    assert_eq!(
        r.waves
            .iter()
            .map(|w| (w.name.as_str(), w.size))
            .collect::<Vec<_>>(),
        vec![("canary", 5), ("rest", 15)]
    );
    let canary: Vec<(String, String)> = tasks::table
        .filter(tasks::rollout_id.eq(&r.id))
        .filter(tasks::wave.eq(0))
        .filter(tasks::state.ne("skipped"))
        .select((tasks::tenant_id, tasks::state))
        .load(&mut conn)
        .expect("tasks");
    assert_eq!(canary.len(), 5);
    assert!(canary.iter().all(|(id, _)| behind.contains(id)));
    assert_eq!(r.counts.skipped, 30);

    // Everyone already there: with a canary asked for, refused naming it;
    // without waves, the rollout finishes at creation.
    let ahead: Vec<String> = tenants::table
        .filter(tenants::schema_version.eq(head))
        .select(tenants::slug)
        .load(&mut conn)
        .expect("slugs");
    let only_ahead = |waves: Option<serde_json::Value>| -> RolloutRequest {
        let mut body = serde_json::json!({
            "target": "head", "selector": {"tenants": ahead},
        });
        if let Some(w) = waves {
            body["waves"] = w;
        }
        serde_json::from_value(body).expect("request")
    };
    let err = rollouts::create(
        &db,
        &actor,
        only_ahead(Some(serde_json::json!([{"name": "canary", "count": 5}]))),
    )
    .err()
    .expect("refused");
    assert!(
        err.to_string().contains("wave 'canary' would be empty"),
        "{err}"
    );
    let Created::Rollout(done) = rollouts::create(&db, &actor, only_ahead(None)).expect("create")
    else {
        panic!("a rollout")
    };
    assert_eq!(done.state, "succeeded", "finished at creation");
    assert_eq!(done.counts.skipped, 30);
}
