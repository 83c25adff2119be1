//! A dead worker's tasks come back all at once when their leases expire,
//! not one per second (issue 15): after one claim every expired task is
//! `pending` and due, and the next claims take them without waiting.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text, Timestamp};
use tenantplane_api_types::rollouts::RolloutRequest;
use tenantplane_control_db::Actor;
use tenantplane_fleet::registry::{self, NewTenant};
use tenantplane_rollout::rollouts::{self, Created};
use tenantplane_rollout::tasks;

use crate::common::sqlite_control_db;

#[derive(QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    lease_owner: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Timestamp)]
    next_attempt_at: chrono::NaiveDateTime,
}

#[test]
fn expired_leases_are_reclaimed_all_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let db = sqlite_control_db(dir.path());
    let actor = Actor::system("test");
    let mut ids = Vec::new();
    for i in 0..8 {
        let t = registry::create(
            &db,
            &actor,
            NewTenant {
                slug: format!("orphan-{i}"),
                name: format!("Orphan {i}"),
                plan: None,
                labels: Default::default(),
                contact_email: None,
                server: None,
                schema: Some("phase:0".into()),
            },
        )
        .expect("tenant");
        ids.push(t.id);
    }
    let req: RolloutRequest = serde_json::from_value(serde_json::json!({
        "target": "head", "selector": {"all": true}, "concurrency": 16
    }))
    .expect("request");
    let Created::Rollout(r) = rollouts::create(&db, &actor, req).expect("rollout") else {
        panic!("a rollout, not a plan")
    };

    // A worker claims all 8 and dies: no heartbeat, no outcome. Its leases
    // run out by hand: with a lease of a millisecond, one of its own claims
    // could be the once-a-second look for expired leases and take back an
    // earlier task of its own.
    let control = dir.path().join("control.db");
    let control = control.to_string_lossy();
    for _ in 0..8 {
        tasks::claim(&db, "doomed", Duration::from_secs(30))
            .expect("claim")
            .expect("a task");
    }
    diesel::sql_query(
        "UPDATE tasks SET lease_expires_at = '2000-01-01 00:00:00' WHERE rollout_id = ?",
    )
    .bind::<Text, _>(&r.id)
    .execute(&mut SqliteConnection::establish(&control).expect("control"))
    .expect("expire the leases");
    std::thread::sleep(Duration::from_millis(1100));

    // The first claim that looks for expired leases hands every orphan
    // back at once. (It looks at most once a second per process, and other
    // tests in this process may have looked a moment ago: claims before
    // that find nothing pending.)
    let first = crate::common::wait_for("a claim that reclaims", Duration::from_secs(30), || {
        tasks::claim(&db, "rescuer", Duration::from_secs(30)).expect("claim")
    });
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT state, lease_owner, last_error, next_attempt_at FROM tasks WHERE rollout_id = ?",
    )
    .bind::<Text, _>(&r.id)
    .load(&mut SqliteConnection::establish(&control).expect("control"))
    .expect("tasks");
    assert_eq!(rows.len(), 8);
    let pending: Vec<&Row> = rows.iter().filter(|t| t.state == "pending").collect();
    assert_eq!(pending.len(), 7, "{rows:?}");
    assert!(pending.iter().all(|t| t.lease_owner.is_none()
        && t.last_error.as_deref() == Some("lease of worker doomed expired")));
    let now = chrono::Utc::now().naive_utc();
    assert!(pending.iter().all(|t| t.next_attempt_at <= now), "{rows:?}");
    assert_eq!(
        rows.iter()
            .filter(|t| t.lease_owner.as_deref() == Some("rescuer"))
            .count(),
        1
    );

    // The other seven are claimable right away, one claim each.
    let mut taken = vec![first.0.id];
    for _ in 0..7 {
        let (t, _) = tasks::claim(&db, "rescuer", Duration::from_secs(30))
            .expect("claim")
            .expect("claimable at once");
        taken.push(t.id);
    }
    taken.sort_unstable();
    taken.dedup();
    assert_eq!(taken.len(), 8);
}
