//! Backfills on realistic data: several shops, hundreds of sales inserted
//! out of time order, messy role strings.

use crate::common::TenantDb;
use tenantplane_migrations::catalogue;
use tenantplane_testkit::fixture::ROLE_STRINGS;

const SHOPS: u32 = 4;
const SALES_PER_SHOP: u32 = 150;

fn fixture_db(mut db: TenantDb) -> TenantDb {
    db.migrate_to(catalogue::phase_version(0))
        .expect("baseline");
    db.load_fixture(SHOPS, SALES_PER_SHOP);
    db
}

#[test]
fn invoice_numbers_are_1_to_n_per_shop_in_sale_order() {
    for db in TenantDb::all() {
        let mut db = fixture_db(db);
        let backend = db.name();
        // The fixture inserts out of time order: ids and sold_at disagree.
        let in_order = db.ints("SELECT id AS v FROM sales WHERE shop_id = 1 ORDER BY id");
        let by_time = db.ints("SELECT id AS v FROM sales WHERE shop_id = 1 ORDER BY sold_at, id");
        assert_ne!(
            in_order, by_time,
            "the fixture must be out of order to prove anything"
        );

        db.migrate_to(catalogue::feature("invoice_numbering").and_then(|f| f.requires))
            .expect("phase 1");
        for shop in 1..=i64::from(SHOPS) {
            let numbers = db.ints(&format!(
                "SELECT invoice_number AS v FROM sales WHERE shop_id = {shop} ORDER BY sold_at, id"
            ));
            let want: Vec<i64> = (1..=i64::from(SALES_PER_SHOP)).collect();
            assert_eq!(
                numbers, want,
                "{backend}: shop {shop} numbers follow sale order, no gap, no duplicate"
            );
        }
        // New sales continue each shop's sequence.
        db.exec("INSERT INTO sales (shop_id, total_minor, currency, sold_at) VALUES (2, 10, 'USD', '2026-01-01 00:00:00')").expect("insert");
        db.exec("INSERT INTO sales (shop_id, total_minor, currency, sold_at) VALUES (2, 10, 'USD', '2026-01-01 00:00:00')").expect("insert");
        let newest = db.ints(
            "SELECT invoice_number AS v FROM sales WHERE shop_id = 2 ORDER BY id DESC LIMIT 2",
        );
        assert_eq!(
            newest,
            [i64::from(SALES_PER_SHOP) + 2, i64::from(SALES_PER_SHOP) + 1],
            "{backend}"
        );
        // A duplicate number in one shop is refused.
        assert!(
            db.exec("INSERT INTO sales (shop_id, total_minor, currency, sold_at, invoice_number) VALUES (3, 1, 'USD', '2026-01-01 00:00:00', 1)").is_err(),
            "{backend}: duplicate invoice number accepted"
        );
    }
}

#[test]
fn customer_metrics_equal_what_the_sales_say() {
    for db in TenantDb::all() {
        let mut db = fixture_db(db);
        let backend = db.name();
        let from_sales = "SELECT shop_id || '|' || customer_phone || '|' || CAST(SUM(total_minor) AS TEXT) || '|' || CAST(COUNT(*) AS TEXT) || '|' || CAST(MIN(sold_at) AS TEXT) || '|' || CAST(MAX(sold_at) AS TEXT) AS v \
             FROM sales WHERE customer_phone <> '' GROUP BY shop_id, customer_phone ORDER BY 1";
        let from_metrics = "SELECT shop_id || '|' || customer_phone || '|' || CAST(lifetime_value_minor AS TEXT) || '|' || CAST(visit_count AS TEXT) || '|' || CAST(first_purchase_at AS TEXT) || '|' || CAST(last_purchase_at AS TEXT) AS v \
             FROM customer_metrics ORDER BY 1";
        db.migrate_to(catalogue::feature("customer_metrics").and_then(|f| f.requires))
            .expect("phase 2");
        let want = db.strings(from_sales);
        assert!(
            want.len() >= 10,
            "{backend}: the fixture has repeat customers"
        );
        assert_eq!(db.strings(from_metrics), want, "{backend}: backfill");
        // Kept current by the triggers.
        db.exec("INSERT INTO sales (shop_id, customer_phone, total_minor, currency, sold_at) VALUES (1, '+15550001', 777, 'USD', '2026-12-31 23:00:00')").expect("insert");
        db.exec("DELETE FROM sales WHERE id = (SELECT min(id) FROM sales WHERE customer_phone = '+15550002')").expect("delete");
        db.exec("UPDATE sales SET total_minor = total_minor + 1 WHERE id = (SELECT min(id) FROM sales WHERE customer_phone = '+15550003')").expect("update");
        assert_eq!(
            db.strings(from_metrics),
            db.strings(from_sales),
            "{backend}: after insert, delete and update"
        );
    }
}

#[test]
fn expense_categories_are_backfilled_from_the_free_text() {
    for db in TenantDb::all() {
        let mut db = fixture_db(db);
        let backend = db.name();
        db.migrate_to(catalogue::feature("expense_categories").and_then(|f| f.requires))
            .expect("phase 2");
        let mismatched = db.int(
            "SELECT count(*) AS v FROM expenses e LEFT JOIN expense_categories c ON c.id = e.category_id \
             WHERE (trim(COALESCE(e.category, '')) <> '' AND (c.id IS NULL OR c.name <> trim(e.category) OR c.shop_id <> e.shop_id)) \
                OR (trim(COALESCE(e.category, '')) = '' AND e.category_id IS NOT NULL)",
        );
        assert_eq!(mismatched, 0, "{backend}");
        assert!(
            db.int("SELECT count(*) AS v FROM expense_categories") > 0,
            "{backend}"
        );
    }
}

/// The documented mapping (docs/tenant-schema.md): trimmed, lower-cased;
/// owner/admin/administrator → owner; manager/supervisor → manager;
/// cashier/clerk → cashier; anything else, empty or NULL → staff.
fn expected_role(raw: Option<&str>) -> &'static str {
    match raw.map(|r| r.trim().to_lowercase()).as_deref() {
        Some("owner" | "admin" | "administrator") => "owner",
        Some("manager" | "supervisor") => "manager",
        Some("cashier" | "clerk") => "cashier",
        _ => "staff",
    }
}

#[test]
fn roles_map_as_documented_and_down_restores_every_string() {
    for db in TenantDb::all() {
        let mut db = fixture_db(db);
        let backend = db.name();
        let original = db.texts("SELECT role AS v FROM users ORDER BY id");
        assert_eq!(original.len(), ROLE_STRINGS.len());
        let role_version = catalogue::feature("staff_roles").and_then(|f| f.requires);
        db.migrate_to(role_version).expect("phase 4");
        let mapped = db.strings("SELECT CAST(role AS TEXT) AS v FROM users ORDER BY id");
        let want: Vec<String> = ROLE_STRINGS
            .iter()
            .map(|r| expected_role(*r).to_string())
            .collect();
        assert_eq!(mapped, want, "{backend}");
        // The enum refuses anything else.
        assert!(
            db.exec(
                "INSERT INTO users (username, password_hash, role) VALUES ('x1', 'x', 'superhero')"
            )
            .is_err(),
            "{backend}: role outside the enum accepted"
        );
        db.exec("INSERT INTO users (username, password_hash, role) VALUES ('new-manager', 'x', 'manager')").expect("insert");

        db.migrate_to(catalogue::phase_version(3))
            .expect("down to phase 3");
        let restored =
            db.texts("SELECT role AS v FROM users WHERE username <> 'new-manager' ORDER BY id");
        assert_eq!(
            restored, original,
            "{backend}: down restores every original role string exactly"
        );
        assert_eq!(
            db.texts("SELECT role AS v FROM users WHERE username = 'new-manager'"),
            [Some("manager".to_string())],
            "{backend}"
        );
        assert!(
            !db.columns("users")
                .iter()
                .any(|c| c.starts_with("role_legacy") || c == "last_login_at"),
            "{backend}"
        );
    }
}
