//! Retention on real backups: a dry run changes nothing, a real run
//! deletes the right rows and artifacts (audited) and nothing else, the
//! API's entry point checks its request, and the scheduled job refuses a
//! bad policy for good.

use std::collections::BTreeMap;

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use tenantplane_api_types::rollouts::Selector;
use tenantplane_control_db::audit;
use tenantplane_control_db::schema::backups;
use tenantplane_control_db::Error;
use tenantplane_jobs::schedules::Fire;
use tenantplane_jobs::{Job, JobContext};

use super::support::{actor, Env};
use crate::jobs::ScheduledRetention;
use crate::manifest::{Manifest, ServerKind};
use crate::retention::{apply, run_retention, Action, Policy, Report, RetentionRequest, Scope};
use crate::rows::{Backup, Reason};
use crate::store::ArtifactStore;
use crate::{create, get, pin, verify};

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

/// `n` backups of a tenant, one a night at 02:00 from 2026-11-01, oldest
/// first.
fn nightly(env: &Env, tenant: &str, n: u32) -> Vec<Backup> {
    (1..=n)
        .map(|day| {
            let b = create(&env.db, &env.store, tenant, Reason::Scheduled).unwrap();
            let when = at(&format!("2026-11-{day:02} 02:00:00"));
            diesel::update(backups::table.find(&b.id))
                .set(backups::created_at.eq(when))
                .execute(&mut *env.db.conn().unwrap())
                .unwrap();
            get(&env.db, &b.id).unwrap()
        })
        .collect()
}

/// The row, the artifact and its manifest: all there, or all gone.
fn present(env: &Env, b: &Backup) -> bool {
    let row = get(&env.db, &b.id).is_ok();
    let artifact = env.store.exists(&b.artifact).unwrap();
    let manifest = env.store.exists(&Manifest::key_for(&b.artifact)).unwrap();
    assert_eq!(
        artifact, manifest,
        "{}: artifact and manifest go together",
        b.id
    );
    assert_eq!(row, artifact, "{}: row and artifact go together", b.id);
    row
}

fn actions(env: &Env) -> Vec<String> {
    audit::list(&mut env.db.conn().unwrap(), None, 1000)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// (id, reason) of a tenant's kept and deleted backups.
type Listed = (Vec<(String, String)>, Vec<(String, String)>);

fn listed(report: &Report, tenant_id: &str) -> Listed {
    let t = report
        .tenants
        .iter()
        .find(|t| t.tenant_id == tenant_id)
        .unwrap();
    let pairs = |ds: &[crate::retention::Decision]| {
        ds.iter()
            .map(|d| (d.id.clone(), d.reason.clone()))
            .collect::<Vec<_>>()
    };
    assert!(t.kept.iter().all(|d| d.action == Action::Keep));
    assert!(t.deleted.iter().all(|d| d.action == Action::Delete));
    (pairs(&t.kept), pairs(&t.deleted))
}

fn ids(bs: &[(&Backup, &str)]) -> Vec<(String, String)> {
    bs.iter()
        .map(|(b, r)| (b.id.clone(), r.to_string()))
        .collect()
}

#[test]
fn retention_deletes_the_right_backups_and_artifacts() {
    let Some(env) = Env::new(ServerKind::Sqlite) else {
        return;
    };
    let t = env.tenant("pruned", 1, 3);
    let b = nightly(&env, &t.id, 8);
    // 11-03 and 11-06 verified for real, 11-04 pinned, 11-02 failed.
    for i in [2, 5] {
        assert_eq!(
            verify(&env.db, &env.store, &b[i].id).unwrap().state,
            "verified"
        );
    }
    pin(&env.db, &actor(), &b[3].id).unwrap();
    diesel::update(backups::table.find(&b[1].id))
        .set((
            backups::state.eq("failed"),
            backups::error.eq(Some("disk full")),
        ))
        .execute(&mut *env.db.conn().unwrap())
        .unwrap();
    // The case on another tenant: only the oldest is verified, so
    // nothing of it goes.
    let old = env.tenant("only-old-verified", 1, 3);
    let o = nightly(&env, &old.id, 4);
    verify(&env.db, &env.store, &o[0].id).unwrap();
    // A tenant without backups is checked and not listed.
    env.tenant("no-backups", 1, 1);

    let policy = Policy {
        keep_last: 1,
        daily: 2,
        weekly: 0,
        monthly: 0,
    };
    let audit_before = actions(&env);
    let dry = apply(
        &env.db,
        &env.store,
        &Scope::Selector(None),
        &policy,
        true,
        &actor(),
    )
    .unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.tenants_checked, 3);
    assert_eq!(dry.tenants.len(), 2, "{dry:#?}");
    assert_eq!((dry.kept, dry.deleted, dry.errors), (8, 4, 0));
    let want_kept = ids(&[
        (&b[7], "keep-last"),
        (&b[6], "daily 2026-11-07"),
        (&b[5], "newest verified"),
        (&b[3], "pinned"),
    ]);
    let want_deleted = ids(&[
        (&b[4], "not kept by the policy"),
        (&b[2], "not kept by the policy"),
        (&b[1], "failed"),
        (&b[0], "not kept by the policy"),
    ]);
    assert_eq!(
        listed(&dry, &t.id),
        (want_kept.clone(), want_deleted.clone())
    );
    let (kept, deleted) = listed(&dry, &old.id);
    assert!(deleted.is_empty());
    assert_eq!(kept.len(), 4);
    assert_eq!(kept[0], (o[3].id.clone(), "keep-last".to_string()));
    assert_eq!(kept[3], (o[0].id.clone(), "newest verified".to_string()));
    // A dry run changes nothing, not even the audit log.
    for x in b.iter().chain(&o) {
        assert!(present(&env, x), "{}", x.id);
    }
    assert_eq!(actions(&env), audit_before);
    // The report serializes for the API.
    let json = serde_json::to_value(&dry).unwrap();
    assert_eq!(json["policy"]["daily"], 2);
    // (tenants are listed in id order, which is random here: pick ours)
    let ours = json["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tenant_id"] == t.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(ours["deleted"][0]["action"], "delete");
    assert!(ours["kept"][0]["created_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let real = apply(
        &env.db,
        &env.store,
        &Scope::Selector(None),
        &policy,
        false,
        &actor(),
    )
    .unwrap();
    // The same report, done.
    assert_eq!(
        Report {
            dry_run: true,
            ..real.clone()
        },
        dry
    );
    for x in [&b[0], &b[1], &b[2], &b[4]] {
        assert!(!present(&env, x), "{} should be gone", x.id);
    }
    for x in [&b[3], &b[5], &b[6], &b[7]].into_iter().chain(&o) {
        assert!(present(&env, x), "{} should stay", x.id);
    }
    let log = actions(&env);
    let new = &log[..log.len() - audit_before.len()];
    assert_eq!(
        new.iter().filter(|a| *a == "backup.delete").count(),
        4,
        "{new:?}"
    );
    assert_eq!(new[0], "backup.retention", "the run is audited last");
    assert_eq!(new.len(), 5, "{new:?}");

    // Nothing left to do the second time.
    let again = apply(
        &env.db,
        &env.store,
        &Scope::Selector(None),
        &policy,
        false,
        &actor(),
    )
    .unwrap();
    assert_eq!((again.kept, again.deleted, again.errors), (8, 0, 0));

    // Once the newest is verified, the older unpinned ones go.
    verify(&env.db, &env.store, &b[7].id).unwrap();
    let r = apply(
        &env.db,
        &env.store,
        &Scope::Tenant("pruned".into()),
        &Policy {
            keep_last: 1,
            daily: 0,
            weekly: 0,
            monthly: 0,
        },
        false,
        &actor(),
    )
    .unwrap();
    assert_eq!(r.tenants_checked, 1);
    assert_eq!(
        listed(&r, &t.id),
        (
            ids(&[(&b[7], "newest verified"), (&b[3], "pinned")]),
            ids(&[
                (&b[6], "not kept by the policy"),
                (&b[5], "not kept by the policy"),
            ])
        )
    );
    assert!(!present(&env, &b[5]) && !present(&env, &b[6]));
    assert!(present(&env, &b[3]) && present(&env, &b[7]));
    for x in &o {
        assert!(present(&env, x), "another tenant's backup stays");
    }
}

#[test]
fn run_retention_checks_the_request() {
    let Some(env) = Env::new(ServerKind::Sqlite) else {
        return;
    };
    let gold = env.tenant_with(
        "gold",
        1,
        3,
        BTreeMap::from([("tier".to_string(), "gold".to_string())]),
    );
    let plain = env.tenant("plain", 1, 3);
    for t in [&gold, &plain] {
        let bs = nightly(&env, &t.id, 3);
        verify(&env.db, &env.store, &bs[2].id).unwrap();
    }

    // As the HTTP layer would read it.
    let request: RetentionRequest = serde_json::from_value(serde_json::json!({
        "selector": {"labels": {"tier": "gold"}},
        "policy": {"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0},
        "dry_run": true,
    }))
    .unwrap();
    let r = run_retention(&env.db, &env.store, request.clone(), &actor()).unwrap();
    assert!(r.dry_run);
    assert_eq!(r.tenants.len(), 1);
    assert_eq!(r.tenants[0].slug, "gold");
    assert_eq!(r.deleted, 2);
    // Nothing went.
    assert_eq!(
        crate::list(&env.db, &Default::default())
            .unwrap()
            .items
            .len(),
        6
    );

    let real = run_retention(
        &env.db,
        &env.store,
        RetentionRequest {
            dry_run: false,
            ..request
        },
        &actor(),
    )
    .unwrap();
    assert_eq!(real.deleted, 2);
    let left = crate::list(&env.db, &Default::default()).unwrap().items;
    assert_eq!(left.iter().filter(|b| b.tenant_id == gold.id).count(), 1);
    assert_eq!(left.iter().filter(|b| b.tenant_id == plain.id).count(), 3);
    let run = audit::list(&mut env.db.conn().unwrap(), None, 10)
        .unwrap()
        .into_iter()
        .find(|e| e.action == "backup.retention")
        .unwrap();
    assert_eq!(run.actor, "operator:test");
    let after: serde_json::Value =
        serde_json::from_str(run.after_state.as_deref().unwrap()).unwrap();
    assert_eq!(after["deleted"], 2);
    assert_eq!(after["scope"]["selector"]["labels"]["tier"], "gold");

    // The defaults when no policy is given: nothing more to delete.
    let r = run_retention(
        &env.db,
        &env.store,
        RetentionRequest {
            tenant: Some("plain".into()),
            dry_run: true,
            ..Default::default()
        },
        &actor(),
    )
    .unwrap();
    assert_eq!(r.policy, Policy::default());
    assert_eq!((r.kept, r.deleted), (3, 0));

    // Refused before anything happens.
    let both = RetentionRequest {
        selector: Some(Selector::default()),
        tenant: Some("plain".into()),
        ..Default::default()
    };
    let err = run_retention(&env.db, &env.store, both, &actor()).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    let nothing = RetentionRequest {
        policy: Some(Policy {
            keep_last: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
        }),
        ..Default::default()
    };
    let err = run_retention(&env.db, &env.store, nothing, &actor()).unwrap_err();
    assert!(err.to_string().contains("keeps nothing"), "{err}");
    let err = run_retention(
        &env.db,
        &env.store,
        RetentionRequest {
            tenant: Some("no-such-shop".into()),
            ..Default::default()
        },
        &actor(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = run_retention(
        &env.db,
        &env.store,
        RetentionRequest {
            selector: Some(Selector {
                tenants: Some(vec!["no-such-shop".into()]),
                ..Selector::default()
            }),
            ..Default::default()
        },
        &actor(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    // A negative count cannot even be read, and says why.
    let err = serde_json::from_value::<RetentionRequest>(serde_json::json!({
        "policy": {"keep_last": -1},
    }))
    .unwrap_err();
    assert!(err.to_string().contains("cannot be negative"), "{err}");
    assert!(
        serde_json::from_value::<RetentionRequest>(serde_json::json!({"dryrun": true})).is_err()
    );
}

/// Runs without a store: a bad policy is refused before the job looks for
/// one (the only test that installs a store is in `jobs`).
#[test]
fn the_job_refuses_a_bad_policy_for_good() {
    let Some(env) = Env::new(ServerKind::Sqlite) else {
        return;
    };
    let ctx = JobContext::new(env.db.clone(), "test-worker", 1, 1);
    let fire = Fire {
        schedule: "daily-retention".into(),
        run_id: 3,
        fire_at: Utc::now().naive_utc(),
        selector: None,
        params: Some(serde_json::json!({"keep_last": -1})),
    };
    let job = ScheduledRetention(fire.clone());
    // The payload is the fire itself.
    assert_eq!(
        serde_json::to_value(&job).unwrap(),
        serde_json::to_value(&fire).unwrap()
    );
    assert_eq!(ScheduledRetention::KIND, "retention");
    assert_eq!(job.dedup_key().as_deref(), Some("daily-retention:3"));
    let err = job.run(&ctx).unwrap_err();
    assert!(err.is_permanent());
    let msg = err.to_string();
    assert!(
        msg.contains("schedule daily-retention: invalid retention params: retention keep_last is -1: a count cannot be negative"),
        "{msg}"
    );
    for params in [
        serde_json::json!({"keep_daily": 7}),
        serde_json::json!({"keep_last": 0, "daily": 0, "weekly": 0, "monthly": 0}),
        serde_json::json!("weekly"),
    ] {
        let err = ScheduledRetention(Fire {
            params: Some(params.clone()),
            ..fire.clone()
        })
        .run(&ctx)
        .unwrap_err();
        assert!(err.is_permanent(), "{params}: {err}");
    }
}
