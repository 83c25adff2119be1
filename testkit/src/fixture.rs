//! Realistic phase-0 shop data as plain SQL that runs on SQLite and
//! PostgreSQL alike: several shops, staff with messy role strings, hundreds of
//! sales inserted out of time order, expenses with free-text categories,
//! credits and audit entries. Deterministic (a fixed-seed generator).

/// The messy role strings a real phase-0 users table holds.
pub const ROLE_STRINGS: &[Option<&str>] = &[
    Some("owner"),
    Some("Admin"),
    Some(" cashier "),
    Some("CLERK"),
    Some("Manager "),
    Some("administrator"),
    Some("supervisor"),
    Some("staff"),
    Some("weird-role"),
    Some(""),
    None,
    Some("Owner"),
    Some("sales"),
];

pub struct Fixture {
    pub shops: u32,
    pub sales_per_shop: u32,
    pub sql: String,
}

/// A small fixed-seed generator (xorshift), so fixtures are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn quote(s: Option<&str>) -> String {
    match s {
        Some(s) => format!("'{}'", s.replace('\'', "''")),
        None => "NULL".to_string(),
    }
}

/// `shops` shops with `sales_per_shop` sales each (ids interleaved across
/// shops and `sold_at` shuffled, so sale order differs from insert order).
pub fn phase0(shops: u32, sales_per_shop: u32) -> Fixture {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut sql = String::new();
    for s in 1..=shops {
        sql += &format!(
            "INSERT INTO shop_profile (id, name, address, phone, timezone) VALUES ({s}, 'Shop {s}', '{s} Market Street', '+1555000{s:04}', 'UTC');\n"
        );
        sql += &format!(
            "INSERT INTO settings (shop_id, currency, tax_rate_bp) VALUES ({s}, 'USD', {});\n",
            500 + s * 25
        );
    }
    for (i, role) in ROLE_STRINGS.iter().enumerate() {
        let id = i + 1;
        sql += &format!(
            "INSERT INTO users (id, username, full_name, email, password_hash, role) VALUES ({id}, 'user{id}', 'User {id}', 'user{id}@shop.example', 'x', {});\n",
            quote(*role)
        );
    }
    let users = ROLE_STRINGS.len() as u64;
    let customers = [
        "+15550001",
        "+15550002",
        "+15550003",
        "+15550004",
        "+15550005",
    ];
    let mut sale_id = 0;
    for round in 0..sales_per_shop {
        for s in 1..=shops {
            sale_id += 1;
            let day = 1 + rng.below(28);
            let hour = 8 + rng.below(12);
            let minute = rng.below(60);
            // Some sales share a timestamp so the id breaks the tie.
            let second = if round % 7 == 0 { 0 } else { rng.below(60) };
            let total = 100 + rng.below(50_000);
            let customer = if rng.below(4) == 0 {
                None
            } else {
                Some(customers[rng.below(customers.len() as u64) as usize])
            };
            let name = customer.map(|c| format!("Customer {}", &c[c.len() - 1..]));
            sql += &format!(
                "INSERT INTO sales (id, shop_id, user_id, customer_name, customer_phone, subtotal_minor, tax_minor, total_minor, item_count, payment_method, currency, sold_at) \
                 VALUES ({sale_id}, {s}, {}, {}, {}, {total}, 0, {total}, {}, '{}', 'USD', '2026-03-{day:02} {hour:02}:{minute:02}:{second:02}');\n",
                1 + rng.below(users),
                quote(name.as_deref()),
                quote(customer),
                1 + rng.below(9),
                if rng.below(2) == 0 { "cash" } else { "card" },
            );
        }
    }
    let categories = [
        Some("Rent"),
        Some("rent"),
        Some("Utilities"),
        Some("Stock"),
        None,
        Some(""),
    ];
    for e in 1..=(shops * 12) {
        let s = 1 + (e % shops);
        sql += &format!(
            "INSERT INTO expenses (id, shop_id, user_id, amount_minor, currency, description, category, spent_at) VALUES ({e}, {s}, 1, {}, 'USD', 'Expense {e}', {}, '2026-03-{:02} 12:00:00');\n",
            1000 + rng.below(90_000),
            quote(categories[rng.below(categories.len() as u64) as usize]),
            1 + rng.below(28),
        );
    }
    for c in 1..=(shops * 4) {
        let s = 1 + (c % shops);
        sql += &format!(
            "INSERT INTO credits (id, shop_id, customer_name, customer_phone, amount_minor, paid_minor, currency, due_date, status) VALUES ({c}, {s}, 'Debtor {c}', '+1555990{c:03}', {}, 0, 'USD', '2026-04-{:02}', 'open');\n",
            500 + rng.below(10_000),
            1 + rng.below(28),
        );
    }
    for a in 1..=20 {
        sql += &format!(
            "INSERT INTO audit_log (id, user_id, action, details) VALUES ({a}, {}, 'sale.create', 'sale {a}');\n",
            1 + rng.below(users),
        );
    }
    Fixture {
        shops,
        sales_per_shop,
        sql,
    }
}

/// PostgreSQL: after inserting explicit ids, move the identity sequences past
/// them (SQLite needs nothing).
pub const PG_RESET_SEQUENCES: &str = "
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.relname AS tbl, a.attname AS col
           FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
           WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
             AND pg_get_serial_sequence(quote_ident(c.relname), a.attname) IS NOT NULL
  LOOP
    EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, %L), COALESCE((SELECT max(%I) FROM %I), 0) + 1, false)',
                   r.tbl, r.col, r.col, r.tbl);
  END LOOP;
END $$;";
