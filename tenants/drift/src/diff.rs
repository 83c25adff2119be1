//! Two snapshots compared: every object the reference has and the tenant
//! lacks (`missing`), every one the tenant has and the reference lacks
//! (`added`), and every aspect that differs (`changed`).
//!
//! Two rules keep the list readable without hiding anything: a whole table
//! added or missing is one difference (not one per column, index and
//! trigger of it), and a `definition` aspect (SQLite's stored `CREATE`
//! text, PostgreSQL's printed definitions) is reported only when nothing
//! finer about that object or table was: a dropped column also changes the
//! table's `CREATE` text, which says nothing more.

use std::collections::BTreeSet;

use tenantplane_api_types::drift::Difference;
use tenantplane_migrations::snapshot::Snapshot;

/// The differences of `actual` from `reference`, ordered by object.
pub fn compare(reference: &Snapshot, actual: &Snapshot) -> Vec<Difference> {
    let whole_table = |s: &Snapshot, other: &Snapshot| -> BTreeSet<String> {
        s.objects
            .keys()
            .filter_map(|k| k.strip_prefix("table "))
            .filter(|t| other.get(&format!("table {t}")).is_none())
            .map(str::to_string)
            .collect()
    };
    let tables_missing = whole_table(reference, actual);
    let tables_added = whole_table(actual, reference);
    let part_of = |key: &str, table: Option<&String>, tables: &BTreeSet<String>| {
        !key.starts_with("table ") && table.is_some_and(|t| tables.contains(t))
    };

    let mut out = Vec::new();
    // Tables with a finer difference: their `definition` says nothing more.
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut definitions = Vec::new();
    for (key, want) in &reference.objects {
        let Some(have) = actual.get(key) else {
            if !part_of(key, want.table.as_ref(), &tables_missing) {
                out.push(Difference::missing(key.clone()));
            }
            continue;
        };
        let mut finer = false;
        for (aspect, expected) in &want.aspects {
            let got = have.aspects.get(aspect).cloned().flatten();
            if got == *expected {
                continue;
            }
            let d = Difference::changed(key.clone(), *aspect, expected.clone(), got);
            if *aspect == "definition" {
                definitions.push((key.clone(), want.table.clone(), d));
            } else {
                finer = true;
                out.push(d);
            }
        }
        if finer {
            if let Some(t) = &want.table {
                touched.insert(t.clone());
            }
            definitions.retain(|(k, _, _)| k != key);
        }
    }
    for (key, have) in &actual.objects {
        if reference.get(key).is_none() && !part_of(key, have.table.as_ref(), &tables_added) {
            out.push(Difference::added(key.clone()));
            if let Some(t) = &have.table {
                touched.insert(t.clone());
            }
        }
    }
    for d in &out {
        if let Some(t) = table_of(&d.object, reference) {
            touched.insert(t);
        }
    }
    for (key, table, d) in definitions {
        let is_table = key.starts_with("table ");
        if is_table && table.is_some_and(|t| touched.contains(&t)) {
            continue;
        }
        out.push(d);
    }
    out.sort_by(|a, b| a.object.cmp(&b.object).then(a.aspect.cmp(&b.aspect)));
    out
}

/// The table a reference object belongs to, if any.
fn table_of(key: &str, reference: &Snapshot) -> Option<String> {
    reference.get(key).and_then(|o| o.table.clone())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tenantplane_migrations::snapshot::Object;

    use super::*;

    fn obj(table: Option<&str>, aspects: &[(&'static str, Option<&str>)]) -> Object {
        Object {
            table: table.map(Into::into),
            aspects: aspects
                .iter()
                .map(|(k, v)| (*k, v.map(str::to_string)))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn reference() -> Snapshot {
        let mut s = Snapshot::default();
        let o = &mut s.objects;
        o.insert(
            "table sales".into(),
            obj(
                Some("sales"),
                &[("definition", Some("CREATE TABLE sales (total, note)"))],
            ),
        );
        o.insert(
            "column sales.total".into(),
            obj(
                Some("sales"),
                &[("type", Some("BIGINT")), ("default", Some("0"))],
            ),
        );
        o.insert(
            "column sales.note".into(),
            obj(Some("sales"), &[("type", Some("TEXT")), ("default", None)]),
        );
        o.insert(
            "table expenses".into(),
            obj(
                Some("expenses"),
                &[("definition", Some("CREATE TABLE expenses (x)"))],
            ),
        );
        o.insert(
            "column expenses.x".into(),
            obj(
                Some("expenses"),
                &[("type", Some("TEXT")), ("default", None)],
            ),
        );
        o.insert(
            "index expenses_x".into(),
            obj(Some("expenses"), &[("unique", Some("no"))]),
        );
        s
    }

    fn texts(d: &[Difference]) -> Vec<&str> {
        d.iter().map(|d| d.text.as_str()).collect()
    }

    #[test]
    fn the_same_schema_has_no_differences() {
        assert!(compare(&reference(), &reference()).is_empty());
    }

    #[test]
    fn reports_each_difference_once() {
        let mut actual = reference();
        let o = &mut actual.objects;
        // A dropped column also changes the table's CREATE text: one line.
        o.remove("column sales.note");
        o.insert(
            "table sales".into(),
            obj(
                Some("sales"),
                &[("definition", Some("CREATE TABLE sales (total)"))],
            ),
        );
        // A changed default.
        o.insert(
            "column sales.total".into(),
            obj(
                Some("sales"),
                &[("type", Some("BIGINT")), ("default", Some("1"))],
            ),
        );
        // An added index.
        o.insert(
            "index sales_by_day_idx".into(),
            obj(Some("sales"), &[("unique", Some("no"))]),
        );
        // A whole table dropped: one line, not one per column and index.
        o.remove("table expenses");
        o.remove("column expenses.x");
        o.remove("index expenses_x");
        assert_eq!(
            texts(&compare(&reference(), &actual)),
            vec![
                "column sales.note: missing",
                "column sales.total default: '0' → '1'",
                "index sales_by_day_idx: added",
                "table expenses: missing",
            ]
        );
    }

    #[test]
    fn a_definition_alone_is_reported() {
        // A CHECK constraint added by a table rebuild shows only in the
        // table's CREATE text.
        let mut actual = reference();
        actual.objects.insert(
            "table sales".into(),
            obj(
                Some("sales"),
                &[(
                    "definition",
                    Some("CREATE TABLE sales (total CHECK (total > 0), note)"),
                )],
            ),
        );
        let d = compare(&reference(), &actual);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].object, "table sales");
        assert_eq!(d[0].aspect.as_deref(), Some("definition"));
    }
}
