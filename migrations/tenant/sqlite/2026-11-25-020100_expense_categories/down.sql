-- Keep the information carried by category_id: where the legacy text does not
-- already name the row's category (rows categorised after the up), write the
-- category name into expenses.category. Rows untouched since the up already
-- satisfy trim(category) = name and are left exactly as they were.
UPDATE expenses
   SET category = c.name
  FROM expense_categories AS c
 WHERE c.id = expenses.category_id
   AND trim(expenses.category) IS NOT c.name;

DROP INDEX expenses_category_id_idx;
ALTER TABLE expenses DROP COLUMN category_id;
DROP TABLE expense_categories;
