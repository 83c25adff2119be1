//! The baseline: a sequential shell loop of the stock CLI over M tenants.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use tenantplane_fleet::servers::DatabaseServer;
use tenantplane_fleet::tenant_db::{self, TenantDbLocation};
use uuid::Uuid;

use crate::cpu_meter::CpuMeter;
use crate::rollout::Backend;

use super::Settings;

pub(super) struct Loop {
    pub secs: f64,
    pub cpu_secs: f64,
    /// Bytes of all the files the loop wrote.
    pub bytes: u64,
}

/// Single-quotes a string for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The loop's script: one line per item in `list`, read with `$(cat …)`.
fn script(backend: Backend, url: &str, list: &Path, out: &Path) -> String {
    let (list, out) = (
        quote(&list.display().to_string()),
        out.display().to_string(),
    );
    match backend {
        Backend::Postgres => format!(
            "for s in $(cat {list}); do pg_dump -d {} -n \"$s\" -Fc -f {}/\"$s\".dump || exit 1; done",
            quote(url),
            quote(&out)
        ),
        // sqlite3's own quoting inside the dot-command: the paths have no quotes.
        Backend::Sqlite => format!(
            "for f in $(cat {list}); do sqlite3 \"$f\" \".backup '{out}/$(basename \"$f\")'\" || exit 1; done"
        ),
    }
}

pub(super) fn run(s: &Settings, dir: &Path, server: &DatabaseServer, ids: &[Uuid]) -> Result<Loop> {
    let out = dir.join("baseline-out");
    std::fs::create_dir_all(&out)?;
    ensure!(
        !out.display().to_string().contains(['\'', '"', ' ']),
        "the scratch path must not contain quotes or spaces"
    );
    let mut lines = String::new();
    for id in ids {
        match TenantDbLocation::new(server, id) {
            TenantDbLocation::SqliteFile { path } => writeln!(lines, "{}", path.display())?,
            TenantDbLocation::PgSchema { .. } => writeln!(lines, "{}", tenant_db::db_name(id))?,
            other => bail!("unexpected location {other:?}"),
        }
    }
    let list = dir.join("baseline.txt");
    std::fs::write(&list, lines)?;
    let script = script(s.backend, &server.url, &list, &out);
    eprintln!("baseline: bash -c {}", quote(&script));
    let cpu = CpuMeter::start()?;
    let started = Instant::now();
    let status = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .status()
        .context("running bash")?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = cpu.busy_secs()?;
    ensure!(status.success(), "the baseline loop failed: {status}");
    let mut files = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(&out)? {
        let entry = entry?;
        files += 1;
        bytes += entry.metadata()?.len();
    }
    ensure!(
        files == ids.len(),
        "the loop wrote {files} files for {} tenants",
        ids.len()
    );
    eprintln!("baseline loop: {} in {secs:.2} s", ids.len());
    Ok(Loop {
        secs,
        cpu_secs,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_bash() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn pg_dump_loop() {
        let s = script(
            Backend::Postgres,
            "postgres://postgres@127.0.0.1:5432/tp_bench_x",
            Path::new("/tmp/x/list.txt"),
            Path::new("/tmp/x/out"),
        );
        assert_eq!(
            s,
            "for s in $(cat '/tmp/x/list.txt'); do pg_dump -d 'postgres://postgres@127.0.0.1:5432/tp_bench_x' -n \"$s\" -Fc -f '/tmp/x/out'/\"$s\".dump || exit 1; done"
        );
    }
}
