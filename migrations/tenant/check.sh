#!/usr/bin/env bash
# Verifies the tenant migrations in this directory on SQLite and PostgreSQL.
#
#   migrations/tenant/check.sh [PG_URL]
#
# PG_URL defaults to postgresql://postgres@127.0.0.1:5432/postgres; it must be
# a postgres:// or postgresql:// URL of a role allowed to CREATE DATABASE. A
# scratch database tp_tenant_check_<pid> is created and dropped again.
# Set SKIP_PG=1 or SKIP_SQLITE=1 to check only one backend; KEEP_WORK=1 keeps
# the scratch files (sample data, dumps) for inspection.
#
# Each migration is applied the way diesel applies it: the whole file in ONE
# transaction (SQLite with PRAGMA foreign_keys=ON; PostgreSQL with psql -1 and
# search_path set to a non-public tenant schema, nothing schema-qualified).
#
# Checks, per backend:
#  1. folder names: identical in both backends, YYYY-MM-DD-PPNN00_name, unique
#     versions, each with up.sql and down.sql;
#  2. full up / full down / full up: the schema dump after both full ups is
#     byte-identical; after the full down nothing is left;
#  3. each migration alone (applied on top of its predecessors): up, down, up
#     gives the identical schema dump, and the down restores the schema that
#     existed before the up;
#  4. with sample data loaded at phase 0 (shops, users with odd role strings,
#     sales inserted out of sold_at order with ties, expenses, credits, audit
#     log): every migration's up+down leaves the data of every pre-existing
#     table identical (including AUTOINCREMENT/identity counters); backfills:
#     invoice numbers 1..n per shop in (sold_at, id) order, counters, expense
#     categories, customer_metrics = GROUP BY over sales, role mapping;
#  5. behaviour after the full up: new sales get max+1 per shop (never reused,
#     explicit numbers respected, numbers immutable), customer_metrics follows
#     inserts/updates/deletes, sales_heatmap matches an on-the-fly aggregate,
#     role CHECK/enum enforced; after the full down the original role strings
#     are back, later role changes/new users come back as role names, expense
#     categories assigned after the up survive in expenses.category;
#  6. PostgreSQL only: nothing lands outside the tenant schema, a second
#     tenant schema in the same database is independent, concurrent inserts
#     never collide on invoice numbers, REFRESH MATERIALIZED VIEW CONCURRENTLY.
# Exits non-zero on the first SQL error or after reporting all mismatches.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PG_URL=${1:-postgresql://postgres@127.0.0.1:5432/postgres}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tenant-check.XXXXXX")
FAILS=0
PG_DB=""

log()  { printf '%s\n' "$*"; }
ok()   { printf '  ok   %s\n' "$*"; }
fail() { printf '  FAIL %s\n' "$*" >&2; FAILS=$((FAILS + 1)); }
die()  { printf 'FATAL %s\n' "$*" >&2; exit 2; }

cleanup() {
    if [ -n "$PG_DB" ]; then
        psql -X -q -d "$PG_URL" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 \
            || printf 'warning: could not drop scratch database %s\n' "$PG_DB" >&2
    fi
    if [ "${KEEP_WORK:-0}" = 1 ]; then printf 'work files kept in %s\n' "$WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# expect_eq LABEL ACTUAL EXPECTED
expect_eq() {
    if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: got [$2] expected [$3]"; fi
}
# expect_same_file LABEL A B
expect_same_file() {
    cat "$2" > "$WORK/cmp.a"; cat "$3" > "$WORK/cmp.b"   # inputs may be pipes: read once
    if cmp -s "$WORK/cmp.a" "$WORK/cmp.b"; then ok "$1"; else
        fail "$1"; diff "$WORK/cmp.a" "$WORK/cmp.b" | head -40 >&2
    fi
}

# ----------------------------------------------------------------- folders
mapfile -t MIGS < <(cd "$HERE/sqlite" && ls -1d */ | sed 's#/$##' | LC_ALL=C sort)
mapfile -t PG_MIGS < <(cd "$HERE/postgres" && ls -1d */ | sed 's#/$##' | LC_ALL=C sort)
log "== migration folders (${#MIGS[@]})"
[ "${#MIGS[@]}" -gt 0 ] || die "no migrations found under $HERE/sqlite"
if [ "${MIGS[*]}" == "${PG_MIGS[*]}" ]; then ok "same folders in sqlite/ and postgres/"; else
    fail "folder lists differ between sqlite/ and postgres/"
    diff <(printf '%s\n' "${MIGS[@]}") <(printf '%s\n' "${PG_MIGS[@]}") >&2
fi
declare -A SEEN_VERSION=()
for m in "${MIGS[@]}"; do
    if ! [[ $m =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}-([0-9]{2})([0-9]{2})00_[a-z0-9_]+$ ]]; then
        fail "bad folder name $m"
    fi
    v=${m%%_*}; v=${v//-/}
    [ -z "${SEEN_VERSION[$v]:-}" ] || fail "duplicate version $v ($m)"
    SEEN_VERSION[$v]=1
    for b in sqlite postgres; do
        for f in up.sql down.sql; do
            [ -s "$HERE/$b/$m/$f" ] || fail "missing or empty $b/$m/$f"
        done
    done
done
ok "folder names and versions"
# Phase-0 (baseline) migrations are the ones whose version has PP = 00.
BASE_MIGS=(); LATER_MIGS=()
for m in "${MIGS[@]}"; do
    if [[ $m =~ ^[0-9-]{11}00 ]]; then BASE_MIGS+=("$m"); else LATER_MIGS+=("$m"); fi
done

# ------------------------------------------------------------ sample data
gen_sample() {
    local tab=$'\t' nl=$'\n'
    cat <<'EOF'
INSERT INTO shop_profile (name, address, timezone) VALUES ('Main Street', '1 Main St', 'Africa/Nairobi');
INSERT INTO shop_profile (name, address) VALUES ('Airport Kiosk', 'Terminal 2');
INSERT INTO shop_profile (name) VALUES ('Empty Branch');
INSERT INTO shop_profile (name, phone) VALUES ('Harbour', '+254700000000');
INSERT INTO settings (shop_id, currency, tax_rate_bp, receipt_footer) VALUES (1, 'KES', 1600, 'Asante!');
INSERT INTO settings (shop_id, currency) VALUES (2, 'USD');
EOF
    # username | role literal (SQL) | expected role after phase 4
    local i=0 lit
    while IFS='|' read -r lit _exp; do
        i=$((i + 1))
        lit=${lit//\{TAB\}/$tab}; lit=${lit//\{NL\}/$nl}
        printf "INSERT INTO users (username, full_name, password_hash, role) VALUES ('u%02d', 'User %d', 'x', %s);\n" "$i" "$i" "$lit"
    done < "$WORK/roles.txt"
    # a deleted user: its id must never be reused after the SQLite rebuild
    echo "INSERT INTO users (username, password_hash, role) VALUES ('gone', 'x', 'cashier');"
    echo "DELETE FROM users WHERE username = 'gone';"
    local nusers=$i
    awk -v nusers="$nusers" 'BEGIN {
        srand(20261125);
        nphones = split("+254711000001 +254711000002 +254711000003 +254711000004 +254711000005 +254711000006 +254711000007 +254711000008 0722000009 0722000010", phones, " ");
        nts = 0;
        for (i = 1; i <= 360; i++) {
            r = rand(); shop = (r < 0.5) ? 1 : (r < 0.8) ? 2 : 4;
            if (nts > 0 && rand() < 0.15) { ts = pool[1 + int(rand() * nts)] }
            else {
                ts = sprintf("2025-%02d-%02d %02d:%02d:%02d", 1 + int(rand() * 3), 1 + int(rand() * 28),
                             int(rand() * 24), int(rand() * 60), int(rand() * 60));
                pool[++nts] = ts;
            }
            r = rand();
            if (r < 0.25) phone = "NULL"; else if (r < 0.3) phone = "'"'"''"'"'";
            else phone = "'"'"'" phones[1 + int(rand() * nphones)] "'"'"'";
            total = 50 + int(rand() * 500000);
            user = (rand() < 0.1) ? "NULL" : 1 + int(rand() * nusers);
            printf "INSERT INTO sales (shop_id, user_id, customer_name, customer_phone, subtotal_minor, tax_minor, total_minor, item_count, currency, sold_at) VALUES (%d, %s, %s, %s, %d, 0, %d, %d, '"'"'KES'"'"', '"'"'%s'"'"');\n",
                   shop, user, (phone == "NULL" ? "NULL" : "'"'"'Customer'"'"'"), phone, total, total, 1 + int(rand() * 9), ts;
        }
        ncat = split("Rent| Rent|rent|Utilities|Supplies |Transport|  ", cats, "|");
        for (i = 1; i <= 80; i++) {
            r = rand(); shop = (r < 0.5) ? 1 : (r < 0.8) ? 2 : 4;
            r = rand();
            if (r < 0.15) cat = "NULL"; else if (r < 0.2) cat = "'"'"''"'"'";
            else cat = "'"'"'" cats[1 + int(rand() * ncat)] "'"'"'";
            printf "INSERT INTO expenses (shop_id, user_id, amount_minor, currency, description, category, spent_at) VALUES (%d, %d, %d, '"'"'KES'"'"', '"'"'expense %d'"'"', %s, '"'"'2025-%02d-%02d 12:00:00'"'"');\n",
                   shop, 1 + int(rand() * nusers), 100 + int(rand() * 90000), i, cat, 1 + int(rand() * 3), 1 + int(rand() * 28);
        }
        for (i = 1; i <= 25; i++) {
            printf "INSERT INTO credits (shop_id, sale_id, user_id, customer_name, customer_phone, amount_minor, currency, due_date, status) VALUES (%d, %s, %d, '"'"'Debtor %d'"'"', '"'"'%s'"'"', %d, '"'"'KES'"'"', '"'"'2025-04-%02d'"'"', '"'"'%s'"'"');\n",
                   (i % 2) ? 1 : 2, (i % 3) ? 1 + int(rand() * 360) : "NULL", 1 + int(rand() * nusers), i,
                   phones[1 + int(rand() * nphones)], 1000 + int(rand() * 50000), 1 + int(rand() * 28),
                   (i % 5 == 0) ? "paid" : "open";
        }
        for (i = 1; i <= 30; i++) {
            printf "INSERT INTO audit_log (user_id, action, details, created_at) VALUES (%s, '"'"'action.%d'"'"', '"'"'{\"n\": %d}'"'"', '"'"'2025-03-%02d 08:00:00'"'"');\n",
                   (i % 4) ? 1 + int(rand() * nusers) : "NULL", i % 7, i, 1 + int(rand() * 28);
        }
    }'
}

# role literal as written in SQL | expected users.role after 2026-11-25-040100
cat > "$WORK/roles.txt" <<'EOF'
'owner'|owner
'Admin'|owner
' cashier '|cashier
'CLERK'|cashier
NULL|staff
'weird'|staff
'Manager '|manager
''|staff
'administrator'|owner
'Supervisor'|manager
'staff'|staff
'{TAB}cashier{NL}'|cashier
'Sales Clerk'|cashier
'SUPER ADMIN'|owner
'   '|staff
'manager-ish'|staff
'admin'|owner
EOF
EXPECTED_ROLES=$(i=0; while IFS='|' read -r _lit exp; do i=$((i + 1)); printf 'u%02d=%s\n' "$i" "$exp"; done < "$WORK/roles.txt")
gen_sample > "$WORK/sample.sql"

# ------------------------------------------------- backend-neutral checks
# All check queries below are plain SQL valid on both SQLite and PostgreSQL.
# They use Q (a function name) to run one query and print its result.

check_invoice_backfill() {
    expect_eq "invoice numbers are 1..n per shop in (sold_at, id) order" "$($Q "
        SELECT count(*) FROM (
            SELECT invoice_number, row_number() OVER (PARTITION BY shop_id ORDER BY sold_at, id) AS rn
              FROM sales) AS x
         WHERE invoice_number IS NULL OR invoice_number <> rn")" "0"
    expect_eq "invoice_counters = max(invoice_number) per shop" "$($Q "
        SELECT count(*) FROM (
            SELECT shop_id, MAX(invoice_number) AS n FROM sales GROUP BY shop_id) AS s
          FULL JOIN invoice_counters AS c ON c.shop_id = s.shop_id
         WHERE c.shop_id IS NULL OR s.shop_id IS NULL OR c.last_number <> s.n")" "0"
}

check_categories_backfill() {
    expect_eq "one category per distinct trimmed expense category per shop" "$($Q "
        SELECT (SELECT count(*) FROM expense_categories) -
               (SELECT count(*) FROM (SELECT DISTINCT shop_id, trim(category) FROM expenses
                                       WHERE trim(category) <> '') AS d)")" "0"
    expect_eq "every categorised expense points at its own category" "$($Q "
        SELECT count(*) FROM expenses AS e LEFT JOIN expense_categories AS c ON c.id = e.category_id
         WHERE (trim(e.category) <> '' AND (c.id IS NULL OR c.shop_id <> e.shop_id OR c.name <> trim(e.category)))
            OR ((e.category IS NULL OR trim(e.category) = '') AND e.category_id IS NOT NULL)")" "0"
}

METRICS_EXPECTED="
    SELECT shop_id, customer_phone, CAST(SUM(total_minor) AS BIGINT) AS ltv, CAST(COUNT(*) AS INTEGER) AS visits,
           MIN(sold_at) AS first_at, MAX(sold_at) AS last_at
      FROM sales WHERE customer_phone <> '' GROUP BY shop_id, customer_phone"
METRICS_ACTUAL="
    SELECT shop_id, customer_phone, lifetime_value_minor, visit_count, first_purchase_at, last_purchase_at
      FROM customer_metrics"
check_metrics() { # LABEL
    expect_eq "customer_metrics = GROUP BY over sales ($1)" "$($Q "
        SELECT (SELECT count(*) FROM ($METRICS_EXPECTED EXCEPT $METRICS_ACTUAL) AS a)
             + (SELECT count(*) FROM ($METRICS_ACTUAL EXCEPT $METRICS_EXPECTED) AS b)")" "0"
    expect_eq "customer_metrics not empty ($1)" "$($Q "SELECT count(*) > 0 FROM customer_metrics" | sed 's/^t$/1/')" "1"
}

check_roles() {
    expect_eq "role mapping of legacy strings" \
        "$($Q "SELECT username || '=' || CAST(role AS TEXT) FROM users WHERE username LIKE 'u__' ORDER BY username")" \
        "$EXPECTED_ROLES"
    expect_eq "role_legacy keeps the original strings" "$($Q "
        SELECT count(*) FROM users WHERE NOT role_legacy_present")" "0"
}

ROLE_SNAPSHOT="SELECT id || ':' || COALESCE('[' || role || ']', 'NULL') FROM users ORDER BY id"
EXPENSE_SNAPSHOT="SELECT id || ':' || COALESCE('[' || category || ']', 'NULL') FROM expenses ORDER BY id"

# Behaviour after the full up. Sets ROLE_BEFORE/EXPENSE_BEFORE expectations for check_after_down.
mutate_after_up() {
    local n1 m1 id
    # --- invoice numbering
    n1=$($Q "SELECT MAX(invoice_number) FROM sales WHERE shop_id = 1")
    $X "INSERT INTO sales (shop_id, user_id, customer_name, customer_phone, total_minor, currency, sold_at)
        VALUES (1, 1, 'New', '+254711000001', 777, 'KES', '2024-12-31 23:59:59')"
    expect_eq "new sale without invoice_number gets max+1 for its shop" \
        "$($Q "SELECT invoice_number FROM sales WHERE id = (SELECT MAX(id) FROM sales)")" "$((n1 + 1))"
    $X "INSERT INTO sales (shop_id, total_minor, currency, sold_at) VALUES (3, 100, 'KES', '2025-06-01 09:00:00')"
    expect_eq "first sale of a shop without sales gets 1" \
        "$($Q "SELECT invoice_number FROM sales WHERE shop_id = 3")" "1"
    $X "INSERT INTO sales (shop_id, total_minor, currency, sold_at, invoice_number) VALUES (2, 100, 'KES', '2025-06-01 09:00:00', 5000)"
    $X "INSERT INTO sales (shop_id, total_minor, currency, sold_at) VALUES (2, 100, 'KES', '2025-06-01 09:00:01')"
    expect_eq "explicit invoice_number raises the shop counter" \
        "$($Q "SELECT invoice_number FROM sales WHERE id = (SELECT MAX(id) FROM sales)")" "5001"
    id=$($Q "SELECT MAX(id) FROM sales WHERE shop_id = 1")
    $X "DELETE FROM sales WHERE id = $id"
    $X "INSERT INTO sales (shop_id, total_minor, currency, sold_at) VALUES (1, 100, 'KES', '2025-06-02 09:00:00')"
    expect_eq "invoice numbers are not reused after deleting the newest sale" \
        "$($Q "SELECT invoice_number FROM sales WHERE id = (SELECT MAX(id) FROM sales)")" "$((n1 + 2))"
    if $XF "UPDATE sales SET invoice_number = invoice_number + 100000 WHERE id = 1"; then
        fail "invoice_number could be changed"; else ok "invoice_number is immutable"; fi
    if $XF "INSERT INTO sales (shop_id, total_minor, currency, sold_at, invoice_number) VALUES (1, 1, 'KES', '2025-06-02 09:00:00', 1)"; then
        fail "duplicate invoice number accepted"; else ok "UNIQUE (shop_id, invoice_number)"; fi
    expect_eq "no duplicate invoice numbers" "$($Q "
        SELECT count(*) FROM (SELECT shop_id, invoice_number FROM sales GROUP BY shop_id, invoice_number HAVING count(*) > 1) AS d")" "0"
    # --- customer metrics under insert / update / delete
    $X "INSERT INTO sales (shop_id, customer_phone, total_minor, currency, sold_at) VALUES (4, '+254799999999', 1234, 'KES', '2025-07-01 10:00:00')"
    $X "INSERT INTO sales (shop_id, customer_phone, total_minor, currency, sold_at) VALUES (4, '+254799999999', 66, 'KES', '2025-07-03 10:00:00')"
    check_metrics "after inserts"
    $X "UPDATE sales SET total_minor = total_minor + 1000 WHERE id IN (SELECT id FROM sales WHERE customer_phone <> '' ORDER BY id LIMIT 5)"
    $X "UPDATE sales SET sold_at = '2020-01-01 00:00:00' WHERE id = (SELECT MIN(id) FROM sales WHERE customer_phone = '+254711000002')"
    $X "UPDATE sales SET customer_phone = '+254711000003' WHERE id = (SELECT MAX(id) FROM sales WHERE customer_phone = '+254711000004')"
    $X "UPDATE sales SET customer_phone = NULL WHERE id = (SELECT MIN(id) FROM sales WHERE customer_phone = '+254711000005')"
    $X "UPDATE sales SET customer_phone = '+254700000001' WHERE id = (SELECT MIN(id) FROM sales WHERE customer_phone IS NULL)"
    if $XF "UPDATE sales SET shop_id = 4 WHERE id = (SELECT MAX(id) FROM sales WHERE shop_id = 2 AND customer_phone = '0722000009')"; then
        fail "a numbered sale could be moved to another shop"; else ok "a numbered sale cannot move to another shop"; fi
    check_metrics "after updates"
    $X "DELETE FROM sales WHERE customer_phone = '+254799999999' AND total_minor = 66"
    $X "DELETE FROM sales WHERE id = (SELECT MAX(id) FROM sales WHERE customer_phone = '+254711000006')"
    $X "DELETE FROM sales WHERE id = (SELECT MIN(id) FROM sales WHERE customer_phone = '+254711000007')"
    check_metrics "after deletes"
    # --- roles
    if $XF "INSERT INTO users (username, password_hash, role) VALUES ('bad', 'x', 'boss')"; then
        fail "unknown role accepted"; else ok "unknown role rejected"; fi
    $X "INSERT INTO users (username, password_hash, role) VALUES ('new_manager', 'x', 'manager')"
    $X "INSERT INTO users (username, password_hash) VALUES ('new_default', 'x')"
    expect_eq "new user defaults to staff, role_legacy NULL" \
        "$($Q "SELECT CAST(role AS TEXT) || ':' || COALESCE(role_legacy, 'NULL') FROM users WHERE username = 'new_default'")" "staff:NULL"
    $X "UPDATE users SET role = 'manager' WHERE username = 'u04'"   # was 'CLERK' -> cashier
    $X "UPDATE users SET last_login_at = '2025-08-01 10:00:00' WHERE username = 'u01'"
    # --- expenses with categories chosen after the up
    $X "INSERT INTO expense_categories (shop_id, name, color) VALUES (1, 'Marketing', '#ff0000')"
    $X "INSERT INTO expenses (shop_id, amount_minor, currency, spent_at, category_id)
        VALUES (1, 500, 'KES', '2025-08-01 10:00:00', (SELECT id FROM expense_categories WHERE shop_id = 1 AND name = 'Marketing'))"
    $X "UPDATE expenses SET category_id = (SELECT id FROM expense_categories WHERE shop_id = 1 AND name = 'Marketing')
         WHERE id = (SELECT MIN(id) FROM expenses WHERE shop_id = 1 AND trim(category) = 'Rent')"
    # --- rows in the later tables, and locks
    $X "INSERT INTO assistant_sessions (user_id, shop_id, title) VALUES (2, 1, 'hello')"
    $X "INSERT INTO assistant_messages (session_id, role, content) VALUES (1, 'user', 'How were sales today?')"
    $X "INSERT INTO reminder_log (credit_id, channel, recipient, status) VALUES (1, 'whatsapp', '+254711000001', 'sent')"
    $X "UPDATE credits SET reminder_count = 1, last_reminder_at = '2025-08-01 10:00:00' WHERE id = 1"
    $X "INSERT INTO user_invites (email, role, token_hash, invited_by, expires_at) VALUES ('a@b.c', 'cashier', 'abc', 1, '2030-01-01 00:00:00')"
    $X "INSERT INTO api_webhooks (event, target_url, secret) VALUES ('sale.created', 'https://example.invalid/h', 's3cret')"
    $X "INSERT INTO webhook_events (webhook_id, event, payload, next_attempt_at) VALUES (1, 'sale.created', '{}', '2025-08-01 10:00:00')"
    $X "INSERT INTO exports (requested_by, kind, export_token, expires_at) VALUES (1, 'audit_log', 'tok-1', '2030-01-01 00:00:00')"
    $X "UPDATE sales SET locked_by = 1, locked_at = '2025-08-01 10:00:00' WHERE id IN (SELECT id FROM sales ORDER BY id LIMIT 10)"
    $X "INSERT INTO recommendations (shop_id, kind, payload, expires_at) VALUES (1, 'restock', '[]', '2030-01-01 00:00:00')"
    $X "UPDATE settings SET locked_until = '2025-08-01 00:00:00' WHERE shop_id = 1"
    $X "INSERT INTO audit_log (user_id, action, before_state, after_state, resource_type, resource_id, ip_address, user_agent)
        VALUES (1, 'sale.update', '{}', '{}', 'sale', '1', '10.0.0.1', 'test')"
    if $XF "DELETE FROM users WHERE id = 1"; then fail "user with sales could be deleted"; else ok "users referenced by other rows cannot be deleted"; fi
    SALES_COUNT_AFTER_MUTATION=$($Q "SELECT count(*) FROM sales")
}

check_after_down() { # ROLE_BEFORE_FILE EXPENSE_BEFORE_FILE
    local roles_now exp_now
    roles_now=$($Q "$ROLE_SNAPSHOT")
    # expected: original strings, except u04 (changed after the up) and the two new users
    local u04 nm nd mk
    u04=$($Q "SELECT id FROM users WHERE username = 'u04'")
    nm=$($Q "SELECT id FROM users WHERE username = 'new_manager'")
    nd=$($Q "SELECT id FROM users WHERE username = 'new_default'")
    expect_eq "down restores every original role string exactly" \
        "$(printf '%s\n' "$roles_now" | grep -v -e "^$u04:" -e "^$nm:" -e "^$nd:")" \
        "$(grep -v -e "^$u04:" "$1")"
    expect_eq "down: role changed after the up comes back as the role name" "$($Q "SELECT role FROM users WHERE username = 'u04'")" "manager"
    expect_eq "down: user created after the up keeps its role name" "$($Q "SELECT role FROM users WHERE username = 'new_manager'")" "manager"
    expect_eq "down: user created with the default role gets 'staff'" "$($Q "SELECT role FROM users WHERE username = 'new_default'")" "staff"
    exp_now=$($Q "$EXPENSE_SNAPSHOT")
    mk=$($Q "SELECT MIN(id) FROM expenses WHERE shop_id = 1 AND category = 'Marketing'")
    expect_eq "down keeps categories assigned after the up (new expense)" \
        "$($Q "SELECT category FROM expenses WHERE id = (SELECT MAX(id) FROM expenses)")" "Marketing"
    expect_eq "down keeps categories assigned after the up (re-categorised expense)" \
        "$($Q "SELECT count(*) FROM expenses WHERE category = 'Marketing'")" "2"
    expect_eq "down leaves the other expenses' category text untouched" \
        "$(printf '%s\n' "$exp_now" | grep -v -e "^$mk:" | sed '$d')" "$(grep -v -e "^$mk:" "$2")"
    expect_eq "down keeps every sale" "$($Q "SELECT count(*) FROM sales")" "$SALES_COUNT_AFTER_MUTATION"
}

# ================================================================== SQLite
sq_run() { # DB FILE  -- one migration file in one transaction, FKs enforced
    local out
    if ! out=$({ echo 'PRAGMA foreign_keys = ON;'; echo 'BEGIN;'; cat "$2"; echo; echo 'COMMIT;'; } \
                | sqlite3 -bail "$1" 2>&1 >/dev/null) || [ -n "$out" ]; then
        die "sqlite: $2 failed: $out"
    fi
    local fk; fk=$(sqlite3 "$1" 'PRAGMA foreign_key_check;')
    [ -z "$fk" ] || fail "sqlite: foreign_key_check after $2: $fk"
}
sq_up()   { sq_run "$1" "$HERE/sqlite/$2/up.sql"; }
sq_down() { sq_run "$1" "$HERE/sqlite/$2/down.sql"; }
sq_schema()  { sqlite3 "$1" '.schema'; }
# sqlite_sequence is SQLite-internal and can never be dropped, so it is left out
# of the "down restores the previous schema" comparison (only there).
sq_catalog() { sqlite3 "$1" "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name <> 'sqlite_sequence' ORDER BY type, name;"; }
sq_data() {
    local t
    for t in $(sqlite3 "$1" "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"); do
        echo "== $t"
        sqlite3 -cmd '.mode quote' "$1" "SELECT * FROM \"$t\" ORDER BY 1, 2"
    done
}
SQDB=""
sq_q()  { sqlite3 -bail "$SQDB" "PRAGMA foreign_keys = ON;" "$1" | sed '/^$/d'; }
sq_x()  { local out; out=$(sqlite3 -bail "$SQDB" "PRAGMA foreign_keys = ON;" "$1" 2>&1) || die "sqlite: $1: $out"; }
sq_xf() { sqlite3 -bail "$SQDB" "PRAGMA foreign_keys = ON;" "$1" >/dev/null 2>&1; }

check_sqlite() {
    log "== SQLite $(sqlite3 --version | cut -d' ' -f1)"
    local db="$WORK/full.db" m i
    # 2. full up / down / up
    for m in "${MIGS[@]}"; do sq_up "$db" "$m"; done
    sq_schema "$db" > "$WORK/sq.full1"
    for ((i = ${#MIGS[@]} - 1; i >= 0; i--)); do sq_down "$db" "${MIGS[i]}"; done
    expect_eq "sqlite: full down leaves only sqlite_sequence" \
        "$(sqlite3 "$db" "SELECT group_concat(name) FROM sqlite_master")" "sqlite_sequence"
    for m in "${MIGS[@]}"; do sq_up "$db" "$m"; done
    sq_schema "$db" > "$WORK/sq.full2"
    expect_same_file "sqlite: .schema after 1st and 2nd full up identical" "$WORK/sq.full1" "$WORK/sq.full2"

    # 3. each migration: up, down, up
    db="$WORK/each.db"
    local bad=0
    for m in "${MIGS[@]}"; do
        sq_catalog "$db" > "$WORK/c0"
        sq_up "$db" "$m";   sq_schema "$db" > "$WORK/s1"
        sq_down "$db" "$m"; sq_catalog "$db" > "$WORK/c1"
        sq_up "$db" "$m";   sq_schema "$db" > "$WORK/s2"
        cmp -s "$WORK/s1" "$WORK/s2" || { fail "sqlite: $m up/down/up changes .schema"; diff "$WORK/s1" "$WORK/s2" | head -20 >&2; bad=1; }
        cmp -s "$WORK/c0" "$WORK/c1" || { fail "sqlite: $m down does not restore the previous schema"; diff "$WORK/c0" "$WORK/c1" | head -20 >&2; bad=1; }
    done
    [ $bad = 1 ] || ok "sqlite: every migration: up/down/up identical .schema, down restores previous schema"
    expect_same_file "sqlite: step-by-step schema = full-up schema" "$WORK/sq.full1" <(sq_schema "$db")

    # 4. data round trips and backfills
    db="$WORK/data.db"; SQDB=$db; Q=sq_q; X=sq_x; XF=sq_xf
    for m in "${BASE_MIGS[@]}"; do sq_up "$db" "$m"; done
    sq_run "$db" "$WORK/sample.sql"
    sq_data "$db" > "$WORK/sq.d0"
    sq_q "$ROLE_SNAPSHOT" > "$WORK/sq.roles0"
    sq_q "$EXPENSE_SNAPSHOT" > "$WORK/sq.exp0"
    expect_eq "sqlite: sample data loaded" "$(sq_q "SELECT count(*) FROM sales")" "360"
    bad=0
    for m in "${LATER_MIGS[@]}"; do
        sq_data "$db" > "$WORK/d0"
        sq_up "$db" "$m"
        case $m in
            *_invoice_numbers) check_invoice_backfill ;;
            *_expense_categories) check_categories_backfill ;;
            *_customer_metrics) check_metrics "backfill" ;;
            *_user_role_enum) check_roles ;;
        esac
        sq_down "$db" "$m"; sq_data "$db" > "$WORK/d1"
        cmp -s "$WORK/d0" "$WORK/d1" || { fail "sqlite: $m down changed pre-existing data"; diff "$WORK/d0" "$WORK/d1" | head -20 >&2; bad=1; }
        sq_up "$db" "$m"
    done
    [ $bad = 1 ] || ok "sqlite: every migration's down keeps all pre-existing data (with sample data)"
    cp "$db" "$WORK/data-up.db"
    for ((i = ${#LATER_MIGS[@]} - 1; i >= 0; i--)); do sq_down "$db" "${LATER_MIGS[i]}"; done
    expect_same_file "sqlite: full down to phase 0 restores the sample data exactly" "$WORK/sq.d0" <(sq_data "$db")

    # 5. behaviour after the full up, then full down, then full up again
    db="$WORK/data-up.db"; SQDB=$db
    mutate_after_up
    expect_eq "sqlite: sales_heatmap = aggregate over sales" "$(sq_q "
        SELECT count(*) FROM (
            SELECT shop_id, CAST(strftime('%w', sold_at) AS INTEGER), CAST(strftime('%H', sold_at) AS INTEGER), COUNT(*), SUM(total_minor)
              FROM sales GROUP BY 1, 2, 3
            EXCEPT SELECT shop_id, day_of_week, hour_of_day, sale_count, total_minor FROM sales_heatmap)")" "0"
    for ((i = ${#LATER_MIGS[@]} - 1; i >= 0; i--)); do sq_down "$db" "${LATER_MIGS[i]}"; done
    check_after_down "$WORK/sq.roles0" "$WORK/sq.exp0"
    for m in "${LATER_MIGS[@]}"; do sq_up "$db" "$m"; done
    check_invoice_backfill; check_metrics "re-up after mutations"
    expect_same_file "sqlite: schema after re-up with data = fresh full up" "$WORK/sq.full1" <(sq_schema "$db")
    expect_eq "sqlite: integrity_check" "$(sqlite3 "$db" 'PRAGMA integrity_check')" "ok"
}

# ============================================================== PostgreSQL
PGDB_URL=""
pg_psql() { PGOPTIONS="-c search_path=$PG_SCHEMA -c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d "$PGDB_URL" "$@"; }
pg_run() { # FILE -- one migration file in one transaction
    local out
    out=$(pg_psql -1 -f "$1" 2>&1 >/dev/null) || die "postgres: $1 failed: $out"
    [ -z "$out" ] || die "postgres: $1 printed: $out"
}
pg_up()   { pg_run "$HERE/postgres/$1/up.sql"; }
pg_down() { pg_run "$HERE/postgres/$1/down.sql"; }
# A fixed --restrict-key: pg_dump >= 15.14 otherwise writes a random key into
# every dump (\restrict / \unrestrict lines).
PG_DUMP_OPTS=(--schema-only)
if [[ $(pg_dump --help 2>/dev/null) == *--restrict-key* ]]; then PG_DUMP_OPTS+=(--restrict-key=tenantcheck); fi
pg_schema() { pg_dump "${PG_DUMP_OPTS[@]}" --schema="$PG_SCHEMA" -d "$PGDB_URL"; }
pg_data() {
    local t
    for t in $(pg_psql -At -c "SELECT tablename FROM pg_tables WHERE schemaname = '$PG_SCHEMA' ORDER BY 1"); do
        echo "== $t"
        pg_psql -c "COPY (SELECT * FROM $t ORDER BY 1, 2) TO STDOUT"
    done
    echo "== sequences"
    pg_psql -At -c "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = '$PG_SCHEMA' ORDER BY 1"
}
pg_q()  { pg_psql -At -c "$1"; }
pg_x()  { local out; out=$(pg_psql -c "$1" 2>&1 >/dev/null) || die "postgres: $1: $out"; }
pg_xf() { pg_psql -c "$1" >/dev/null 2>&1; }
pg_count_outside() { # objects created anywhere but in the tenant schemas
    pg_q "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname NOT IN ('t_check', 't_second', 'pg_catalog', 'information_schema', 'pg_toast'))
               + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname NOT IN ('t_check', 't_second', 'pg_catalog', 'information_schema'))
               + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                   WHERE n.nspname NOT IN ('t_check', 't_second', 'pg_catalog', 'information_schema', 'pg_toast'))"
}

check_postgres() {
    [[ $PG_URL =~ ^(postgres(ql)?://[^/?]*)(/[^?]*)?(\?.*)?$ ]] || die "PG_URL must be a postgres:// URL: $PG_URL"
    local prefix=${BASH_REMATCH[1]} query=${BASH_REMATCH[4]}
    PG_DB="tp_tenant_check_$$"
    psql -X -q -v ON_ERROR_STOP=1 -d "$PG_URL" -c "CREATE DATABASE $PG_DB" >/dev/null || die "cannot create database $PG_DB"
    PGDB_URL="$prefix/$PG_DB$query"
    log "== PostgreSQL $(psql -X -At -d "$PGDB_URL" -c 'SHOW server_version'), scratch database $PG_DB"
    local m i bad
    # 2. full up / down / up in schema t_check (search_path = t_check only)
    PG_SCHEMA=public pg_q "CREATE SCHEMA t_check; CREATE SCHEMA t_second" >/dev/null
    PG_SCHEMA=t_check
    for m in "${MIGS[@]}"; do pg_up "$m"; done
    pg_schema > "$WORK/pg.full1"
    expect_eq "postgres: nothing created outside the tenant schema" "$(pg_count_outside)" "0"
    expect_eq "postgres: objects are in t_check" \
        "$(pg_q "SELECT count(*) FROM pg_class WHERE relnamespace = 't_check'::regnamespace AND relname IN ('users', 'sales', 'sales_heatmap', 'invoice_counters')")" "4"
    for ((i = ${#MIGS[@]} - 1; i >= 0; i--)); do pg_down "${MIGS[i]}"; done
    expect_eq "postgres: full down leaves the schema empty" "$(pg_q "
        SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 't_check'::regnamespace)
             + (SELECT count(*) FROM pg_type WHERE typnamespace = 't_check'::regnamespace)
             + (SELECT count(*) FROM pg_proc WHERE pronamespace = 't_check'::regnamespace)")" "0"
    for m in "${MIGS[@]}"; do pg_up "$m"; done
    pg_schema > "$WORK/pg.full2"
    expect_same_file "postgres: pg_dump --schema-only after 1st and 2nd full up identical" "$WORK/pg.full1" "$WORK/pg.full2"

    # a second tenant in the same database: same objects, independent data
    PG_SCHEMA=t_second
    for m in "${MIGS[@]}"; do pg_up "$m"; done
    expect_same_file "postgres: second tenant schema gets the same schema (modulo schema name)" \
        <(sed 's/t_check/SCHEMA/g' "$WORK/pg.full1") <(pg_schema | sed 's/t_second/SCHEMA/g')
    pg_x "INSERT INTO shop_profile (name) VALUES ('x'); INSERT INTO sales (shop_id, total_minor, currency, sold_at, customer_phone) VALUES (1, 5, 'KES', '2025-01-01 00:00:00', '1')"
    expect_eq "postgres: triggers of the second tenant write to its own tables" \
        "$(pg_q "SELECT (SELECT last_number FROM t_second.invoice_counters) || '/' || (SELECT count(*) FROM t_second.customer_metrics) || '/' || (SELECT count(*) FROM t_check.invoice_counters) || '/' || (SELECT count(*) FROM t_check.sales)")" "1/1/0/0"
    # sessions whose search_path points at another tenant / at public, writing
    # schema-qualified: the triggers must still use the second tenant's tables
    PG_SCHEMA=t_check pg_x "INSERT INTO t_second.sales (shop_id, total_minor, currency, sold_at, customer_phone) VALUES (1, 7, 'KES', '2025-01-02 00:00:00', '1')"
    PG_SCHEMA=public pg_x "INSERT INTO t_second.sales (shop_id, total_minor, currency, sold_at, customer_phone) VALUES (1, 9, 'KES', '2025-01-03 00:00:00', '1')"
    PG_SCHEMA=public pg_x "DELETE FROM t_second.sales WHERE total_minor = 9"
    expect_eq "postgres: triggers use the firing table's schema, whatever the search_path" \
        "$(pg_q "SELECT string_agg(invoice_number::text, ',' ORDER BY id) || '/' || (SELECT last_number FROM t_second.invoice_counters) || '/' || (SELECT lifetime_value_minor || ':' || visit_count || ':' || last_purchase_at FROM t_second.customer_metrics) || '/' || (SELECT count(*) FROM t_check.invoice_counters) || '/' || (SELECT count(*) FROM t_check.customer_metrics) FROM t_second.sales")" \
        "1,2/3/12:2:2025-01-02 00:00:00/0/0"
    expect_eq "postgres: nothing created outside the tenant schemas" "$(pg_count_outside)" "0"
    pg_x "DROP SCHEMA t_second CASCADE"

    # 3. each migration: up, down, up (fresh schema)
    PG_SCHEMA=t_check
    pg_x "DROP SCHEMA t_check CASCADE; CREATE SCHEMA t_check"
    bad=0
    for m in "${MIGS[@]}"; do
        pg_schema > "$WORK/c0"
        pg_up "$m";   pg_schema > "$WORK/s1"
        pg_down "$m"; pg_schema > "$WORK/c1"
        pg_up "$m";   pg_schema > "$WORK/s2"
        cmp -s "$WORK/s1" "$WORK/s2" || { fail "postgres: $m up/down/up changes the schema dump"; diff "$WORK/s1" "$WORK/s2" | head -20 >&2; bad=1; }
        cmp -s "$WORK/c0" "$WORK/c1" || { fail "postgres: $m down does not restore the previous schema"; diff "$WORK/c0" "$WORK/c1" | head -20 >&2; bad=1; }
    done
    [ $bad = 1 ] || ok "postgres: every migration: up/down/up identical dump, down restores previous schema"
    expect_same_file "postgres: step-by-step schema = full-up schema" "$WORK/pg.full1" <(pg_schema)

    # 4. data round trips and backfills
    pg_x "DROP SCHEMA t_check CASCADE; CREATE SCHEMA t_check"
    Q=pg_q; X=pg_x; XF=pg_xf
    for m in "${BASE_MIGS[@]}"; do pg_up "$m"; done
    pg_run "$WORK/sample.sql"
    pg_data > "$WORK/pg.d0"
    pg_q "$ROLE_SNAPSHOT" > "$WORK/pg.roles0"
    pg_q "$EXPENSE_SNAPSHOT" > "$WORK/pg.exp0"
    expect_eq "postgres: sample data loaded" "$(pg_q "SELECT count(*) FROM sales")" "360"
    if [ -f "$WORK/sq.roles0" ]; then
        expect_same_file "postgres: sample data identical to SQLite's (roles)" "$WORK/sq.roles0" "$WORK/pg.roles0"
    fi
    bad=0
    for m in "${LATER_MIGS[@]}"; do
        pg_data > "$WORK/d0"
        pg_up "$m"
        case $m in
            *_invoice_numbers) check_invoice_backfill ;;
            *_expense_categories) check_categories_backfill ;;
            *_customer_metrics) check_metrics "backfill" ;;
            *_user_role_enum) check_roles ;;
        esac
        pg_down "$m"; pg_data > "$WORK/d1"
        cmp -s "$WORK/d0" "$WORK/d1" || { fail "postgres: $m down changed pre-existing data"; diff "$WORK/d0" "$WORK/d1" | head -20 >&2; bad=1; }
        pg_up "$m"
    done
    [ $bad = 1 ] || ok "postgres: every migration's down keeps all pre-existing data (with sample data)"
    for ((i = ${#LATER_MIGS[@]} - 1; i >= 0; i--)); do pg_down "${LATER_MIGS[i]}"; done
    expect_same_file "postgres: full down to phase 0 restores the sample data exactly" "$WORK/pg.d0" <(pg_data)
    for m in "${LATER_MIGS[@]}"; do pg_up "$m"; done

    # 5. behaviour after the full up
    mutate_after_up
    pg_x "REFRESH MATERIALIZED VIEW CONCURRENTLY sales_heatmap"
    expect_eq "postgres: REFRESH CONCURRENTLY; sales_heatmap = aggregate over sales" "$(pg_q "
        SELECT (SELECT count(*) FROM (
                  SELECT shop_id, CAST(EXTRACT(DOW FROM sold_at) AS INTEGER), CAST(EXTRACT(HOUR FROM sold_at) AS INTEGER),
                         COUNT(*), CAST(SUM(total_minor) AS BIGINT) FROM sales GROUP BY 1, 2, 3
                  EXCEPT SELECT shop_id, day_of_week, hour_of_day, sale_count, total_minor FROM sales_heatmap) AS a)
             + (SELECT count(*) FROM sales_heatmap) - (SELECT count(*) FROM (SELECT DISTINCT shop_id,
                  EXTRACT(DOW FROM sold_at), EXTRACT(HOUR FROM sold_at) FROM sales) AS b)")" "0"
    # 6. concurrent inserts into one shop never collide
    local before after pids=() w
    before=$(pg_q "SELECT count(*) FROM sales WHERE shop_id = 4")
    for w in 1 2 3 4 5 6; do
        ( for i in $(seq 1 40); do
              if [ $((i % 10)) -eq 0 ]; then
                  echo "BEGIN; INSERT INTO sales (shop_id, total_minor, currency, sold_at) VALUES (4, $w, 'KES', '2025-09-01 10:00:00'); SELECT pg_sleep(0.02); COMMIT;"
              else
                  echo "INSERT INTO sales (shop_id, total_minor, currency, sold_at) VALUES (4, $w, 'KES', '2025-09-01 10:00:00');"
              fi
          done | pg_psql >/dev/null ) &
        pids+=($!)
    done
    for w in "${pids[@]}"; do wait "$w" || fail "postgres: concurrent insert worker failed"; done
    after=$(pg_q "SELECT count(*) FROM sales WHERE shop_id = 4")
    expect_eq "postgres: 240 concurrent inserts all committed" "$((after - before))" "240"
    expect_eq "postgres: concurrent inserts got distinct, gap-free numbers" "$(pg_q "
        SELECT count(DISTINCT invoice_number) || '/' || (MAX(invoice_number) - MIN(invoice_number) + 1) || '/' || count(*)
          FROM sales WHERE shop_id = 4 AND sold_at = '2025-09-01 10:00:00'")" "240/240/240"
    SALES_COUNT_AFTER_MUTATION=$(pg_q "SELECT count(*) FROM sales")
    check_metrics "after concurrent inserts"
    for ((i = ${#LATER_MIGS[@]} - 1; i >= 0; i--)); do pg_down "${LATER_MIGS[i]}"; done
    check_after_down "$WORK/pg.roles0" "$WORK/pg.exp0"
    for m in "${LATER_MIGS[@]}"; do pg_up "$m"; done
    check_invoice_backfill; check_metrics "re-up after mutations"
    expect_same_file "postgres: schema after re-up with data = fresh full up" "$WORK/pg.full1" <(pg_schema)
    expect_eq "postgres: nothing created outside the tenant schema" "$(pg_count_outside)" "0"
}

[ "${SKIP_SQLITE:-0}" = 1 ] || check_sqlite
[ "${SKIP_PG:-0}" = 1 ] || check_postgres

if [ "$FAILS" -gt 0 ]; then
    log "== $FAILS check(s) FAILED"
    exit 1
fi
log "== all checks passed"
