//! The job kinds and the scheduled fan-outs, run the way a worker runs them.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use tenantplane_api_types::rollouts::Selector;
use tenantplane_control_db::states::BackupState;
use tenantplane_jobs::schedules::Fire;
use tenantplane_jobs::{Job, JobContext, Registry};

use super::support::Env;
use crate::jobs::{
    enqueue_backups, enqueue_verifications, install_store, register, select_tenants, BackupJob,
    ScheduledBackup, ScheduledRetention, ScheduledVerify, VerifyJob,
};
use crate::manifest::ServerKind;
use crate::rows::{list, BackupFilter, Reason};

/// The only test that installs a store (it is process-wide).
#[test]
fn jobs_back_up_and_verify_the_selected_tenants() {
    let Some(env) = Env::new(ServerKind::Sqlite) else {
        return;
    };
    install_store(Arc::new(env.store.clone()));
    let gold = env.tenant_with(
        "gold-shop",
        1,
        3,
        BTreeMap::from([("tier".to_string(), "gold".to_string())]),
    );
    let plain = env.tenant("plain-shop", 1, 3);
    let ctx = JobContext::new(env.db.clone(), "test-worker", 1, 1);
    let mut r = Registry::new();
    register(&mut r);
    assert_eq!(
        r.kinds(),
        [
            "backup",
            "backup.tenant",
            "backup.verify",
            "export-cleanup",
            "export.tenant",
            "restore.guard",
            "retention",
            "server.drain",
            "tenant.move",
            "verify"
        ]
    );

    let gold_only = Selector {
        labels: Some(BTreeMap::from([("tier".to_string(), "gold".to_string())])),
        ..Selector::default()
    };
    let mut conn = env.db.conn().unwrap();
    assert_eq!(
        select_tenants(&mut conn, Some(&gold_only)).unwrap(),
        vec![gold.id.clone()]
    );
    assert_eq!(select_tenants(&mut conn, None).unwrap().len(), 2);
    let unknown = Selector {
        tenants: Some(vec!["no-such-shop".into()]),
        ..Selector::default()
    };
    assert!(select_tenants(&mut conn, Some(&unknown)).is_err());
    drop(conn);

    // One open backup job per tenant.
    assert_eq!(
        enqueue_backups(&env.db, Some(&gold_only), Reason::Scheduled).unwrap(),
        1
    );
    assert_eq!(
        enqueue_backups(&env.db, Some(&gold_only), Reason::Scheduled).unwrap(),
        0
    );
    let fire = Fire {
        schedule: "nightly-backups".into(),
        run_id: 7,
        fire_at: Utc::now().naive_utc(),
        selector: None,
        params: None,
    };
    // The fan-out's payload is the fire itself.
    let job = ScheduledBackup(fire.clone());
    let payload = serde_json::to_value(&job).unwrap();
    assert_eq!(payload, serde_json::to_value(&fire).unwrap());
    job.run(&ctx).unwrap();
    let queued: Vec<String> = tenantplane_jobs::list(&env.db, &Default::default())
        .unwrap()
        .into_iter()
        .filter(|j| j.kind == BackupJob::KIND)
        .map(|j| j.payload)
        .collect();
    assert_eq!(queued.len(), 2, "{queued:?}");

    for t in [&gold, &plain] {
        BackupJob {
            tenant_id: t.id.clone(),
            reason: Reason::Scheduled,
        }
        .run(&ctx)
        .unwrap();
    }
    let taken = list(&env.db, &BackupFilter::default()).unwrap().items;
    assert_eq!(taken.len(), 2);
    assert!(taken
        .iter()
        .all(|b| b.state == "completed" && b.reason == "scheduled"));

    // Verification of every completed backup.
    assert_eq!(enqueue_verifications(&env.db, Some(&gold_only)).unwrap(), 1);
    ScheduledVerify(Fire { run_id: 8, ..fire })
        .run(&ctx)
        .unwrap();
    for b in &taken {
        VerifyJob {
            backup_id: b.id.clone(),
        }
        .run(&ctx)
        .unwrap();
    }
    let after = list(&env.db, &BackupFilter::default()).unwrap().items;
    assert!(
        after
            .iter()
            .all(|b| b.state == BackupState::Verified.as_str()),
        "{after:?}"
    );
    // Verified backups need no verification; a deleted one is no failure.
    assert_eq!(enqueue_verifications(&env.db, None).unwrap(), 0);
    VerifyJob {
        backup_id: "gone".into(),
    }
    .run(&ctx)
    .unwrap();

    // Retention by the schedule's params, on the gold tenant: once a newer
    // backup is verified, keep-last 1 deletes the older one.
    let newer = crate::create(&env.db, &env.store, &gold.id, Reason::Scheduled).unwrap();
    crate::verify(&env.db, &env.store, &newer.id).unwrap();
    let retention = ScheduledRetention(Fire {
        schedule: "daily-retention".into(),
        run_id: 9,
        fire_at: Utc::now().naive_utc(),
        selector: Some(gold_only.clone()),
        params: Some(serde_json::json!({"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0})),
    });
    retention.run(&ctx).unwrap();
    let left = list(&env.db, &BackupFilter::default()).unwrap().items;
    let gold_left: Vec<&str> = left
        .iter()
        .filter(|b| b.tenant_id == gold.id)
        .map(|b| b.id.as_str())
        .collect();
    assert_eq!(gold_left, [newer.id.as_str()]);
    assert_eq!(left.iter().filter(|b| b.tenant_id == plain.id).count(), 1);
    // Idempotent: a second run finds nothing to delete.
    retention.run(&ctx).unwrap();
}
