//! The baseline: a shell loop of the stock diesel CLI over the baseline
//! databases, timed, and checks that it runs what this build embeds.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, ensure, Context, Result};
use diesel::prelude::*;
use tenantplane_fleet::tenant_db::TenantDbLocation;
use tenantplane_migrations::catalogue;

use super::progress::Progress;
use super::scratch::Scratch;
use super::{with_search_path, Backend, Layout, Settings};
use crate::cpu_meter::CpuMeter;

/// Wall-clock and whole-machine busy CPU seconds of one measured part.
pub(super) struct Timed {
    pub(super) secs: f64,
    pub(super) cpu_secs: f64,
}

pub(super) fn find_diesel() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("diesel"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = PathBuf::from(home).join(".cargo/bin/diesel");
        p.is_file().then_some(p)
    })
}

pub(super) fn diesel_version(diesel: &Path) -> Result<String> {
    let out = Command::new(diesel)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", diesel.display()))?;
    ensure!(
        out.status.success(),
        "{} --version failed: {}",
        diesel.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(str::trim)
        .unwrap_or("unknown");
    Ok(format!("diesel CLI {version}"))
}

/// The folder the diesel CLI runs must be the one this build embeds.
pub(super) fn check_migration_dir(dir: &Path) -> Result<()> {
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading the tenant migrations at {}", dir.display()))?
    {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        let version = name.split('_').next().unwrap_or("").replace('-', "");
        on_disk.push(version);
    }
    on_disk.sort();
    let embedded: Vec<&str> = catalogue::versions()
        .iter()
        .map(|m| m.version.as_str())
        .collect();
    ensure!(
        on_disk == embedded,
        "{} does not hold the migrations this binary embeds (rebuild, or run from the source tree)",
        dir.display()
    );
    Ok(())
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The diesel CLI over the databases in `list`, timed: a sequential shell
/// loop, or with `parallel: Some(p)` `xargs -P p` (what a careful operator
/// would run on a p-core machine). Its stdout is read to print progress.
pub(super) fn run(
    s: &Settings,
    scratch: &Scratch,
    layout: &Layout,
    list: &Path,
    steps: usize,
    parallel: Option<usize>,
) -> Result<Timed> {
    let diesel = sh_quote(&s.diesel.to_string_lossy());
    let migrations = sh_quote(&s.migration_dir.to_string_lossy());
    // SQLite lists paths; PostgreSQL lists schemas, made URLs here.
    let prefix = match s.backend {
        Backend::Sqlite => String::new(),
        Backend::Postgres => {
            let url = layout.pg_db_url.as_deref().context("no bench database")?;
            with_search_path(url, "")
        }
    };
    let list = sh_quote(&list.to_string_lossy());
    let script = match parallel {
        None => format!(
            "while read -r d; do {diesel} migration run --migration-dir {migrations} \
             --database-url {prefix}\"$d\" || exit 1; done < {list}",
            prefix = sh_quote(&prefix),
        ),
        Some(p) => {
            let sed_escaped = prefix
                .replace('\\', "\\\\")
                .replace('&', "\\&")
                .replace('|', "\\|");
            format!(
                "sed {expr} {list} | xargs -d '\\n' -P {p} -I{{}} \
                 {diesel} migration run --migration-dir {migrations} --database-url {{}}",
                expr = sh_quote(&format!("s|^|{sed_escaped}|")),
            )
        }
    };
    let label = match parallel {
        None => "diesel CLI loop".to_string(),
        Some(p) => format!("parallel diesel CLI (xargs -P {p})"),
    };
    eprintln!("{label} over {} databases: bash -c '{script}'", s.baseline);
    let log_path = scratch.dir.join("baseline.stderr");
    let log = File::create(&log_path)?;
    let started = Instant::now();
    let cpu = CpuMeter::start()?;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        // Not the source tree: no diesel.toml is picked up.
        .current_dir(&scratch.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting bash")?;
    let stdout = child.stdout.take().context("no stdout of bash")?;
    let mut progress = Progress::new(label.clone(), s.baseline);
    let mut ran = 0usize;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the diesel CLI output")?;
        if line.starts_with("Running migration") {
            ran += 1;
            if steps > 0 && ran.is_multiple_of(steps) {
                progress.update(ran / steps);
            }
        }
    }
    let status = child.wait().context("waiting for the diesel CLI loop")?;
    let timed = Timed {
        secs: started.elapsed().as_secs_f64(),
        cpu_secs: cpu.busy_secs()?,
    };
    if !status.success() {
        let mut err = String::new();
        File::open(&log_path)?.read_to_string(&mut err)?;
        let tail: Vec<&str> = err.lines().rev().take(10).collect();
        bail!(
            "the {label} failed ({status}) after {ran} migrations: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    ensure!(
        ran == steps * s.baseline,
        "the {label} ran {ran} migrations, expected {}",
        steps * s.baseline
    );
    Ok(timed)
}

/// Every baseline database holds every version, inside its own schema on
/// PostgreSQL (and nothing landed in `public`).
pub(super) fn verify(s: &Settings, layout: &Layout, list: &Path) -> Result<()> {
    let all: Vec<String> = catalogue::versions()
        .iter()
        .map(|m| m.version.clone())
        .collect();
    let reader = BufReader::new(File::open(list)?);
    let mut checked = 0;
    for line in reader.lines() {
        let entry = line?;
        let location = match s.backend {
            Backend::Sqlite => TenantDbLocation::SqliteFile {
                path: PathBuf::from(&entry),
            },
            Backend::Postgres => TenantDbLocation::PgSchema {
                server_url: layout.pg_db_url.clone().context("no bench database")?,
                schema: entry.clone(),
            },
        };
        let applied = location
            .connect()
            .map_err(|e| anyhow!("connecting to baseline database {entry}: {e}"))?
            .applied_versions()
            .with_context(|| format!("reading the versions of baseline database {entry}"))?;
        ensure!(
            applied == all,
            "baseline database {entry}: {} of {} versions",
            applied.len(),
            all.len()
        );
        checked += 1;
    }
    ensure!(checked == s.baseline, "{checked} baseline databases listed");
    if let (Backend::Postgres, Some(url)) = (s.backend, &layout.pg_db_url) {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = PgConnection::establish(url)?;
        let in_public: N = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_class WHERE relnamespace = 'public'::regnamespace",
        )
        .get_result(&mut conn)?;
        ensure!(
            in_public.n == 0,
            "{} relations landed in schema public",
            in_public.n
        );
    }
    eprintln!(
        "baseline verified: {checked} databases hold all {} versions{}",
        all.len(),
        if s.backend == Backend::Postgres {
            " in their own schemas, nothing in public"
        } else {
            ""
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(sh_quote("/a b/c"), "'/a b/c'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
