//! The verification probes pass on both backends at every phase, see only
//! the features the schema has, and leave no data behind.

use crate::common::TenantDb;
use tenantplane_migrations::catalogue::{self, MAX_PHASE};
use tenantplane_migrations::probes::{self, ProbeConn};

fn run(db: &mut TenantDb, version: Option<&str>) -> Result<Vec<&'static str>, probes::ProbeError> {
    match db {
        TenantDb::Sqlite { conn, .. } => probes::run(ProbeConn::Sqlite(conn), version),
        TenantDb::Postgres { conn, .. } => probes::run(ProbeConn::Postgres(conn), version),
    }
}

#[test]
fn probes_pass_at_every_phase_and_leave_nothing_behind() {
    for mut db in TenantDb::all() {
        let backend = db.name();
        db.migrate_to(catalogue::phase_version(0))
            .expect("baseline");
        db.load_fixture(2, 30);
        for phase in 0..=MAX_PHASE {
            let version = catalogue::phase_version(phase);
            db.migrate_to(version)
                .unwrap_or_else(|e| panic!("{backend}: phase {phase}: {e}"));
            let before = db.data();
            let passed =
                run(&mut db, version).unwrap_or_else(|e| panic!("{backend}: phase {phase}: {e}"));
            let expected: Vec<&str> = probes::probes_for(version).iter().map(|p| p.name).collect();
            assert_eq!(passed, expected, "{backend}: phase {phase}");
            assert!(passed.iter().all(|p| probes::PROBES
                .iter()
                .any(|q| q.name == *p && q.phase() <= phase)));
            assert_eq!(
                db.data(),
                before,
                "{backend}: probes at phase {phase} left data behind"
            );
        }
        assert_eq!(
            run(&mut db, catalogue::head()).map(|p| p.len()).ok(),
            Some(probes::PROBES.len())
        );
    }
}

#[test]
fn a_probe_fails_when_its_columns_are_missing() {
    for mut db in TenantDb::all() {
        let backend = db.name();
        db.migrate_to(catalogue::phase_version(1)).expect("phase 1");
        // Lie about the version: the phase-2 probes must fail, not pass.
        let err = run(&mut db, catalogue::phase_version(2))
            .expect_err("phase-2 probes on a phase-1 schema");
        assert!(
            err.to_string().contains("expense_categories"),
            "{backend}: {err}"
        );
        // The connection is usable afterwards (the transaction was rolled back).
        assert_eq!(
            run(&mut db, catalogue::phase_version(1))
                .map(|p| p.len())
                .ok(),
            Some(5),
            "{backend}"
        );
    }
}

#[test]
fn a_probe_fails_when_a_check_reads_the_wrong_value() {
    for mut db in TenantDb::all() {
        let backend = db.name();
        db.migrate_to(catalogue::phase_version(1)).expect("phase 1");
        // Without the trigger that numbers invoices, the sales the probe
        // inserts get no number: the check must see NULL, not "1".
        let drop = if db.is_pg() {
            "DROP TRIGGER sales_invoice_number_assign ON sales; \
             ALTER TABLE sales ALTER COLUMN invoice_number DROP NOT NULL"
        } else {
            "DROP TRIGGER sales_invoice_number_assign"
        };
        db.exec(drop).expect("drop the trigger");
        let before = db.data();
        let err = run(&mut db, catalogue::phase_version(1)).expect_err("no invoice numbers");
        let probes::ProbeError::Failed { probe, message } = &err;
        assert_eq!(*probe, "invoice_numbering", "{backend}: {err}");
        assert!(
            message.starts_with("expected '1', got NULL from: SELECT"),
            "{backend}: {message}"
        );
        assert_eq!(
            db.data(),
            before,
            "{backend}: a failed probe left data behind"
        );
    }
}
