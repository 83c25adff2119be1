//! The manifest of a backup: what the artifact holds (schema version, each
//! table's row count and checksum, the identity counters), and the artifact
//! itself (key, size, SHA-256). Stored as JSON in the `backups` row and next
//! to the artifact (`<key>.manifest.json`), so a store can be read without
//! the control database.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped when the manifest's meaning changes.
pub const MANIFEST_VERSION: u32 = 1;

/// The kind of database server a backup was taken from; a backup restores
/// only onto the same kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    /// A SQLite file per tenant.
    Sqlite,
    /// A PostgreSQL schema per tenant.
    PgSchema,
    /// A PostgreSQL database per tenant.
    PgDatabase,
}

impl ServerKind {
    pub const ALL: &'static [ServerKind] = &[
        ServerKind::Sqlite,
        ServerKind::PgSchema,
        ServerKind::PgDatabase,
    ];

    /// The word stored in `backups.server_kind`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ServerKind::Sqlite => "sqlite",
            ServerKind::PgSchema => "pg_schema",
            ServerKind::PgDatabase => "pg_database",
        }
    }

    pub fn parse(s: &str) -> Option<ServerKind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// The kind of a registered server.
    pub fn of(server: &tenantplane_fleet::servers::DatabaseServer) -> ServerKind {
        use tenantplane_fleet::servers::Isolation;
        match server.isolation() {
            Isolation::File => ServerKind::Sqlite,
            Isolation::Schema => ServerKind::PgSchema,
            Isolation::Database => ServerKind::PgDatabase,
        }
    }

    /// The artifact's format: how its (gzip-compressed) bytes are laid out.
    pub const fn format(self) -> &'static str {
        match self {
            ServerKind::Sqlite => FORMAT_SQLITE,
            ServerKind::PgSchema | ServerKind::PgDatabase => FORMAT_PGCOPY,
        }
    }

    /// The artifact key's suffix.
    pub const fn extension(self) -> &'static str {
        match self {
            ServerKind::Sqlite => "sqlite.gz",
            ServerKind::PgSchema | ServerKind::PgDatabase => "pgcopy.gz",
        }
    }
}

impl std::fmt::Display for ServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SQLite database file (the output of `VACUUM INTO`), gzip-compressed.
pub const FORMAT_SQLITE: &str = "sqlite-file+gzip";
/// The rows of every table in COPY text format with JSON header lines,
/// gzip-compressed (see `postgres.rs`).
pub const FORMAT_PGCOPY: &str = "tenantplane-pgcopy-v1+gzip";

/// One table's rows: how many, and SHA-256 over them in key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDigest {
    pub rows: u64,
    pub sha256: String,
}

/// A PostgreSQL sequence (identity counter) as `setval` takes it: with
/// `is_called` the next value follows `last_value`, without it the next
/// value is `last_value` itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceState {
    pub last_value: i64,
    pub is_called: bool,
}

/// What a tenant database holds, as a snapshot measures it and as a
/// verification measures the restored copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    pub schema_version: Option<String>,
    pub tables: BTreeMap<String, TableDigest>,
    /// PostgreSQL only (SQLite keeps its counters in `sqlite_sequence`, a
    /// table like the others).
    pub sequences: BTreeMap<String, SequenceState>,
}

/// The artifact as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// Store-relative key.
    pub key: String,
    pub format: String,
    pub size_bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub backup_id: String,
    pub tenant_id: String,
    pub tenant_slug: String,
    pub server_kind: ServerKind,
    /// The last tenant migration applied (`None` = empty schema).
    pub schema_version: Option<String>,
    pub tables: BTreeMap<String, TableDigest>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sequences: BTreeMap<String, SequenceState>,
    pub artifact: ArtifactInfo,
    pub created_at: DateTime<Utc>,
    /// The release that wrote it.
    pub tenantplane_version: String,
}

impl Manifest {
    /// Where the manifest is stored next to its artifact.
    pub fn key_for(artifact_key: &str) -> String {
        format!("{artifact_key}.manifest.json")
    }

    pub fn to_json(&self) -> String {
        // A plain struct of strings, numbers and maps with string keys:
        // serialising it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Result<Manifest, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// How `measured` differs from what the manifest promises; empty when
    /// they match.
    pub fn differences(&self, measured: &Content) -> Vec<String> {
        let mut out = Vec::new();
        if self.schema_version != measured.schema_version {
            out.push(format!(
                "schema version {:?}, manifest says {:?}",
                measured.schema_version, self.schema_version
            ));
        }
        for (name, want) in &self.tables {
            match measured.tables.get(name) {
                None => out.push(format!("table {name} is missing")),
                Some(got) if got.rows != want.rows => out.push(format!(
                    "table {name}: {} rows, manifest says {}",
                    got.rows, want.rows
                )),
                Some(got) if got.sha256 != want.sha256 => out.push(format!(
                    "table {name}: checksum {}, manifest says {}",
                    got.sha256, want.sha256
                )),
                Some(_) => {}
            }
        }
        for name in measured.tables.keys() {
            if !self.tables.contains_key(name) {
                out.push(format!("table {name} is not in the manifest"));
            }
        }
        if self.sequences != measured.sequences {
            for (name, want) in &self.sequences {
                let got = measured.sequences.get(name);
                if got != Some(want) {
                    out.push(format!("sequence {name}: {got:?}, manifest says {want:?}"));
                }
            }
            for name in measured.sequences.keys() {
                if !self.sequences.contains_key(name) {
                    out.push(format!("sequence {name} is not in the manifest"));
                }
            }
        }
        out
    }
}

/// Row count and SHA-256 of one table, fed one row at a time in key order.
#[derive(Default)]
pub(crate) struct RowHasher {
    sha: Sha256,
    rows: u64,
}

impl RowHasher {
    pub(crate) fn row(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.rows += 1;
    }

    pub(crate) fn finish(self) -> TableDigest {
        TableDigest {
            rows: self.rows,
            sha256: hex::encode(self.sha.finalize()),
        }
    }
}

/// A writer that hashes and counts what passes through it (the artifact's
/// SHA-256 and size, computed while it is written).
pub(crate) struct HashingWriter<W: Write> {
    inner: W,
    sha: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            sha: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the byte count and the hex SHA-256.
    pub(crate) fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex::encode(self.sha.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Size and hex SHA-256 of a file.
pub(crate) fn file_digest(path: &Path) -> io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(sha.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let mut tables = BTreeMap::new();
        tables.insert(
            "sales".to_string(),
            TableDigest {
                rows: 2,
                sha256: "ab".into(),
            },
        );
        Manifest {
            manifest_version: MANIFEST_VERSION,
            backup_id: "b".into(),
            tenant_id: "t".into(),
            tenant_slug: "shop".into(),
            server_kind: ServerKind::PgSchema,
            schema_version: Some("20261125070200".into()),
            tables,
            sequences: BTreeMap::new(),
            artifact: ArtifactInfo {
                key: "tenants/t/b.pgcopy.gz".into(),
                format: FORMAT_PGCOPY.into(),
                size_bytes: 10,
                sha256: "cd".into(),
            },
            created_at: Utc::now(),
            tenantplane_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    #[test]
    fn round_trips_as_json_and_names_each_difference() {
        let m = manifest();
        let back = Manifest::from_json(&m.to_json()).expect("parses");
        assert_eq!(back, m);
        assert!(m.to_json().contains("\"server_kind\":\"pg_schema\""));

        let mut measured = Content {
            schema_version: m.schema_version.clone(),
            tables: m.tables.clone(),
            sequences: BTreeMap::new(),
        };
        assert!(m.differences(&measured).is_empty());
        measured.tables.insert(
            "sales".into(),
            TableDigest {
                rows: 3,
                sha256: "ab".into(),
            },
        );
        measured.tables.insert(
            "extra".into(),
            TableDigest {
                rows: 0,
                sha256: "x".into(),
            },
        );
        measured.schema_version = None;
        let d = m.differences(&measured);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d
            .iter()
            .any(|l| l == "table sales: 3 rows, manifest says 2"));
    }

    #[test]
    fn kinds_have_one_spelling() {
        for k in ServerKind::ALL {
            assert_eq!(ServerKind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(ServerKind::parse("postgres"), None);
    }
}
