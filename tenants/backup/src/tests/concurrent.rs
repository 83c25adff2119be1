//! A backup taken while another connection keeps inserting sales restores
//! to a consistent state: no torn invoice sequence, derived tables equal to
//! what they derive from, foreign keys holding.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tenantplane_control_db::states::BackupState;

use super::support::{actor, exec, int, strings, Env};
use crate::manifest::ServerKind;
use crate::rows::Reason;
use crate::{create, restore_new_tenant, verify};

fn while_writing(kind: ServerKind) {
    let Some(env) = Env::new(kind) else {
        return;
    };
    let t = env.tenant("busy-shop", 2, 20);
    let location = env.location(&t.id);
    let stop = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(AtomicU32::new(0));
    let writer = {
        let stop = stop.clone();
        let inserted = inserted.clone();
        std::thread::spawn(move || {
            let mut c = location.connect().unwrap();
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let shop = 1 + n % 2;
                exec(
                    &mut c,
                    &format!(
                        "INSERT INTO sales (shop_id, customer_phone, subtotal_minor, tax_minor, total_minor, item_count, currency, sold_at) \
                         VALUES ({shop}, '+1555000{}', 100, 0, 100, 1, 'USD', '2026-05-01 09:00:00')",
                        n % 3
                    ),
                );
                n += 1;
                inserted.store(n, Ordering::SeqCst);
            }
            n
        })
    };
    // Rows written before the backup and after it, however slowly the
    // writer thread gets to run.
    let wait_past = |n: u32| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while inserted.load(Ordering::SeqCst) < n {
            assert!(std::time::Instant::now() < deadline, "the writer stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_past(10);
    let b = create(&env.db, &env.store, &t.id, Reason::Manual).unwrap();
    wait_past(inserted.load(Ordering::SeqCst) + 10);
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > 0);
    assert_eq!(b.state, BackupState::Completed.as_str());
    let in_backup = b.manifest.as_ref().unwrap().tables["sales"].rows as i64;
    let live = int(
        &mut env.conn(&t.id),
        "SELECT CAST(count(*) AS TEXT) AS v FROM sales",
    );
    assert!(in_backup > 40 && in_backup < live, "{in_backup} of {live}");

    let v = verify(&env.db, &env.store, &b.id).unwrap();
    assert_eq!(v.state, "verified", "{:?}", v.verify_error);
    let n = restore_new_tenant(&env.db, &env.store, &b.id, "busy-copy", None, &actor()).unwrap();
    env.track(&n.tenant.id);
    let mut c = env.conn(&n.tenant.id);
    assert_eq!(
        int(&mut c, "SELECT CAST(count(*) AS TEXT) AS v FROM sales"),
        in_backup
    );
    for shop in [1, 2] {
        let q = |what: &str| {
            format!("SELECT CAST({what} AS TEXT) AS v FROM sales WHERE shop_id = {shop}")
        };
        let count = int(&mut c, &q("count(*)"));
        assert_eq!(int(&mut c, &q("count(DISTINCT invoice_number)")), count);
        assert_eq!(int(&mut c, &q("min(invoice_number)")), 1);
        assert_eq!(
            int(&mut c, &q("max(invoice_number)")),
            count,
            "no gap in shop {shop}"
        );
        assert_eq!(
            int(
                &mut c,
                &format!("SELECT CAST(last_number AS TEXT) AS v FROM invoice_counters WHERE shop_id = {shop}")
            ),
            count
        );
    }
    let metrics = "SELECT shop_id || ':' || customer_phone || ':' || lifetime_value_minor || ':' || visit_count AS v FROM customer_metrics ORDER BY 1";
    let derived = "SELECT shop_id || ':' || customer_phone || ':' || sum(total_minor) || ':' || count(*) AS v FROM sales \
                   WHERE customer_phone IS NOT NULL AND customer_phone <> '' GROUP BY shop_id, customer_phone ORDER BY 1";
    assert_eq!(strings(&mut c, metrics), strings(&mut c, derived));
    let orphans = "SELECT CAST(count(*) AS TEXT) AS v FROM sales s LEFT JOIN shop_profile p ON p.id = s.shop_id WHERE p.id IS NULL";
    assert_eq!(int(&mut c, orphans), 0);
    if kind == ServerKind::Sqlite {
        assert!(strings(
            &mut c,
            "SELECT \"table\" AS v FROM pragma_foreign_key_check"
        )
        .is_empty());
    }
}

#[test]
fn backup_while_writing_sqlite() {
    while_writing(ServerKind::Sqlite);
}

#[test]
fn backup_while_writing_pg_schema() {
    while_writing(ServerKind::PgSchema);
}
