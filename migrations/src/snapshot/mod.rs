//! What a tenant schema actually contains, read from the database's own
//! catalogue, in a form two schemas can be compared by: every table, column,
//! index, constraint, foreign key, trigger, view, function, enum type and
//! sequence becomes one [`Object`] with a few named aspects (a column's type,
//! nullability, default…), each a normalised string.
//!
//! - [`sqlite`]: `sqlite_schema` and the `pragma_table_info`/`index_list`/
//!   `index_xinfo`/`foreign_key_list` table-valued functions, one statement;
//! - [`postgres`]: `pg_catalog` for the connection's `current_schema()`, one
//!   statement, under planner settings that keep it cheap in a database of
//!   many schemas;
//! - [`reference`]: the snapshot of a scratch database migrated to a version,
//!   built once per (backend, version) and cached in the process.
//!
//! What legitimately differs between two tenants is normalised away: the
//! tenant's schema name (PostgreSQL prints it in index, trigger and view
//! definitions and in `nextval('…'::regclass)`), whitespace in SQLite's
//! stored `CREATE` text. diesel's `__diesel_schema_migrations` is left out:
//! it is bookkeeping, compared separately as the applied version.
//!
//! The comparison itself (and its wire form) lives with the drift checks in
//! `tenantplane-drift`; this module only says what is there.

pub mod postgres;
pub mod reference;
pub mod sqlite;

use std::collections::BTreeMap;

/// The bookkeeping table diesel keeps in every tenant schema.
pub const DIESEL_TABLE: &str = "__diesel_schema_migrations";

/// One schema object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The table it belongs to (for columns, indexes, constraints, foreign
    /// keys and triggers): when the whole table is missing or added, the
    /// comparison reports the table alone, not each of its parts.
    pub table: Option<String>,
    /// Aspect name → normalised value (`None` = SQL NULL, e.g. no default).
    pub aspects: BTreeMap<&'static str, Option<String>>,
}

/// A schema: objects keyed by `"<kind> <name>"`, e.g. `"column sales.note"`,
/// `"index sales_user_id_idx"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub objects: BTreeMap<String, Object>,
}

/// Which aspects each kind of object has, in the order the catalogue query
/// returns them (`v1`..`v4`). A kind not listed here is ignored.
pub(crate) fn aspects_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "table" => &["definition"],
        "column" => &["type", "nullability", "default", "key"],
        "index" => &["table", "unique", "columns", "definition"],
        "foreign key" => &["references", "on update", "on delete", "match"],
        "constraint" => &["type", "definition"],
        "trigger" | "view" | "function" => &["definition"],
        "type" => &["values"],
        "sequence" => &["type"],
        _ => &[],
    }
}

/// One row of a catalogue query: the common shape both backends return.
#[derive(Debug, diesel::QueryableByName)]
pub(crate) struct Row {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub kind: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub name: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub tbl: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub v1: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub v2: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub v3: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub v4: Option<String>,
}

impl Snapshot {
    /// Builds a snapshot from catalogue rows, passing every value through
    /// `normalise` (which removes the schema name).
    pub(crate) fn from_rows(rows: Vec<Row>, normalise: impl Fn(&str) -> String) -> Snapshot {
        let mut objects = BTreeMap::new();
        for row in rows {
            let names = aspects_of(&row.kind);
            if names.is_empty() || row.tbl.as_deref() == Some(DIESEL_TABLE) {
                continue;
            }
            if row.name == DIESEL_TABLE {
                continue;
            }
            let values = [row.v1, row.v2, row.v3, row.v4];
            let aspects = names
                .iter()
                .zip(values)
                .map(|(n, v)| (*n, v.map(|v| normalise(&v))))
                .collect();
            objects.insert(
                format!("{} {}", row.kind, normalise(&row.name)),
                Object {
                    table: row.tbl,
                    aspects,
                },
            );
        }
        Snapshot { objects }
    }

    /// The object keyed `"<kind> <name>"`.
    pub fn get(&self, key: &str) -> Option<&Object> {
        self.objects.get(key)
    }
}

/// Collapses runs of whitespace into one space and trims, so `CREATE` text
/// that differs only in layout compares equal.
pub fn squash_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Removes `schema.` and `"schema".` qualifiers from catalogue text.
pub fn strip_schema(s: &str, schema: &str) -> String {
    if schema.is_empty() {
        return s.to_string();
    }
    s.replace(&format!("\"{schema}\"."), "")
        .replace(&format!("{schema}."), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_schema_name_quoted_or_not() {
        assert_eq!(
            strip_schema(
                "CREATE INDEX a ON t_1.sales USING btree (x) -- \"t_1\".f()",
                "t_1"
            ),
            "CREATE INDEX a ON sales USING btree (x) -- f()"
        );
        assert_eq!(
            strip_schema("nextval('t_1.sales_id_seq'::regclass)", "t_1"),
            "nextval('sales_id_seq'::regclass)"
        );
        assert_eq!(
            squash_whitespace(" CREATE  TABLE\n\t x ( a )"),
            "CREATE TABLE x ( a )"
        );
    }

    #[test]
    fn rows_become_objects_and_diesel_bookkeeping_is_left_out() {
        let row = |kind: &str, name: &str, tbl: Option<&str>, v1: Option<&str>| Row {
            kind: kind.into(),
            name: name.into(),
            tbl: tbl.map(Into::into),
            v1: v1.map(Into::into),
            v2: None,
            v3: None,
            v4: None,
        };
        let s = Snapshot::from_rows(
            vec![
                row("column", "sales.note", Some("sales"), Some("text")),
                row("table", DIESEL_TABLE, Some(DIESEL_TABLE), None),
                row(
                    "column",
                    "__diesel_schema_migrations.version",
                    Some(DIESEL_TABLE),
                    Some("text"),
                ),
                row("unknown kind", "x", None, None),
            ],
            str::to_string,
        );
        assert_eq!(s.objects.len(), 1, "{s:?}");
        let note = s.get("column sales.note").expect("column");
        assert_eq!(note.aspects.get("type"), Some(&Some("text".to_string())));
        assert_eq!(note.aspects.get("default"), Some(&None));
    }
}
