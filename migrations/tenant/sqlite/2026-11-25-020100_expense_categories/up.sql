-- Phase 2 / expense_categories: per-shop expense categories and
-- expenses.category_id.
-- Backfill: one category per distinct non-blank trim(expenses.category) per
-- shop (exact, case-sensitive name after trimming spaces), and every such
-- expense points at it. The free-text expenses.category column is kept
-- unchanged (it is the legacy label; category_id is authoritative from now on).
CREATE TABLE expense_categories (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    shop_id     BIGINT    NOT NULL REFERENCES shop_profile (id) ON DELETE CASCADE,
    name        TEXT      NOT NULL,
    color       TEXT,
    rules_json  TEXT,
    created_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE UNIQUE INDEX expense_categories_shop_id_name_key ON expense_categories (shop_id, name);

INSERT INTO expense_categories (shop_id, name)
SELECT DISTINCT shop_id, trim(category) AS name
  FROM expenses
 WHERE trim(category) <> ''
 ORDER BY shop_id, name;

ALTER TABLE expenses ADD COLUMN category_id BIGINT REFERENCES expense_categories (id) ON DELETE SET NULL;

UPDATE expenses
   SET category_id = c.id
  FROM expense_categories AS c
 WHERE c.shop_id = expenses.shop_id
   AND c.name = trim(expenses.category);

CREATE INDEX expenses_category_id_idx ON expenses (category_id);
