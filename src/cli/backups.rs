//! `tenantplane backups …`: tenant backups through the API (`/v1/backups`,
//! `/v1/tenants/{id}/backups`).

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{encode, Client};
use super::output::{print, Output};
use super::schedules::SelectorArgs;

const BACKUP_COLUMNS: &[&str] = &[
    "id",
    "tenant_slug",
    "server_kind",
    "state",
    "reason",
    "schema_version",
    "size_bytes",
    "pinned",
    "created_at",
];
const RESTORED_COLUMNS: &[&str] = &["slug", "name", "status", "server", "schema_version"];

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Take a manual backup of a tenant now (waits until it is stored).
    Create {
        /// Tenant id or slug.
        tenant: String,
    },
    /// List backups, newest first.
    List {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: Option<String>,
        /// pending, running, completed, verified or failed
        #[arg(long)]
        state: Option<String>,
        /// Backups per page (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Follow the cursor through every page.
        #[arg(long)]
        all: bool,
    },
    /// Show one backup.
    Show { id: String },
    /// Verify a backup now: restore it into a scratch database and compare
    /// it with its manifest.
    Verify { id: String },
    /// Pin a backup: retention keeps it and it cannot be deleted.
    Pin { id: String },
    /// Unpin a backup.
    Unpin { id: String },
    /// Delete a backup (its artifact, then its row). Pinned backups are
    /// refused.
    Delete { id: String },
    /// Restore a backup: over its own tenant (after a safety backup), or as
    /// a new tenant with --new-tenant.
    Restore {
        /// Backup id.
        id: String,
        /// Restore into a new tenant with this slug instead.
        #[arg(long, value_name = "SLUG")]
        new_tenant: Option<String>,
        /// The new tenant's server (id or name, of the backup's kind).
        #[arg(long, requires = "new_tenant")]
        server: Option<String>,
    },
    /// Apply a retention policy now (all live tenants without selector
    /// options). Pinned backups, each tenant's newest verified backup and
    /// backups without a newer verified one are always kept.
    Retention {
        #[command(flatten)]
        selector: SelectorArgs,
        /// A deleted tenant's id or slug (its backups stay until a run
        /// names it); not with selector options.
        #[arg(long, value_name = "ID|SLUG")]
        deleted_tenant: Option<String>,
        /// Keep the newest N usable backups (default 7).
        #[arg(long)]
        keep_last: Option<u32>,
        /// Keep the newest backup of each of the newest N days (default 7).
        #[arg(long)]
        daily: Option<u32>,
        /// … of each of the newest N ISO weeks (default 4).
        #[arg(long)]
        weekly: Option<u32>,
        /// … of each of the newest N months (default 6).
        #[arg(long)]
        monthly: Option<u32>,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn path(id: &str) -> String {
    format!("/v1/backups/{}", encode(id))
}

fn show(output: Output, v: &Value) {
    print(output, v, std::slice::from_ref(v), BACKUP_COLUMNS);
}

pub fn run(client: &Client, output: Output, cmd: BackupCmd) -> Result<()> {
    match cmd {
        BackupCmd::Create { tenant } => {
            let v = client.call(
                "POST",
                &format!("/v1/tenants/{}/backups", encode(&tenant)),
                None,
            )?;
            show(output, &v);
        }
        BackupCmd::List {
            tenant,
            state,
            limit,
            all,
        } => {
            let mut query = vec![format!("limit={limit}")];
            query.extend(tenant.map(|t| format!("tenant={}", encode(&t))));
            query.extend(state.map(|s| format!("state={}", encode(&s))));
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = query.clone();
                q.extend(cursor.as_ref().map(|c| format!("cursor={}", encode(c))));
                let page = client.call("GET", &format!("/v1/backups?{}", q.join("&")), None)?;
                items.extend(page["items"].as_array().cloned().unwrap_or_default());
                cursor = page["next_cursor"].as_str().map(str::to_string);
                if !all || cursor.is_none() {
                    break;
                }
            }
            let value = json!({ "items": items, "next_cursor": cursor });
            print(output, &value, &items, BACKUP_COLUMNS);
            if output == Output::Table {
                if let Some(c) = cursor {
                    eprintln!("more: --all, or the API with cursor={c}");
                }
            }
        }
        BackupCmd::Show { id } => show(output, &client.call("GET", &path(&id), None)?),
        BackupCmd::Verify { id } => {
            let v = client.call("POST", &format!("{}/verify", path(&id)), None)?;
            show(output, &v);
            if output == Output::Table {
                if let Some(e) = v["verify_error"].as_str() {
                    eprintln!("verification failed: {e}");
                }
            }
        }
        BackupCmd::Pin { id } => show(
            output,
            &client.call("PUT", &format!("{}/pin", path(&id)), None)?,
        ),
        BackupCmd::Unpin { id } => show(
            output,
            &client.call("DELETE", &format!("{}/pin", path(&id)), None)?,
        ),
        BackupCmd::Delete { id } => {
            client.call("DELETE", &path(&id), None)?;
            if output == Output::Table {
                println!("deleted backup {id}");
            }
        }
        BackupCmd::Restore {
            id,
            new_tenant,
            server,
        } => {
            let body = match (new_tenant, server) {
                (Some(slug), server) => {
                    let mut b = json!({ "mode": "new_tenant", "slug": slug });
                    if let Some(s) = server {
                        b["server"] = json!(s);
                    }
                    b
                }
                (None, Some(_)) => bail!("--server goes with --new-tenant"),
                (None, None) => json!({ "mode": "in_place" }),
            };
            let v = client.call("POST", &format!("{}/restore", path(&id)), Some(&body))?;
            print(
                output,
                &v,
                std::slice::from_ref(&v["tenant"]),
                RESTORED_COLUMNS,
            );
            if output == Output::Table {
                match v["safety_backup"]["id"].as_str() {
                    Some(safety) => println!(
                        "restored backup {id} in place; the tenant as it was is backup {safety}"
                    ),
                    None => println!("restored backup {id} as a new tenant"),
                }
            }
        }
        BackupCmd::Retention {
            selector,
            deleted_tenant,
            keep_last,
            daily,
            weekly,
            monthly,
            dry_run,
        } => {
            let mut body = json!({ "dry_run": dry_run });
            match (selector.value()?, deleted_tenant) {
                (Some(_), Some(_)) => bail!("--deleted-tenant goes without selector options"),
                (Some(s), None) => body["selector"] = s,
                (None, Some(t)) => body["tenant"] = json!(t),
                (None, None) => {}
            }
            let mut policy = serde_json::Map::new();
            for (name, n) in [
                ("keep_last", keep_last),
                ("daily", daily),
                ("weekly", weekly),
                ("monthly", monthly),
            ] {
                if let Some(n) = n {
                    policy.insert(name.into(), json!(n));
                }
            }
            if !policy.is_empty() {
                body["policy"] = Value::Object(policy);
            }
            let v = client.call("POST", "/v1/backups/retention", Some(&body))?;
            let rows: Vec<Value> = v["tenants"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|t| {
                    let deleted = t["deleted"].as_array().cloned().unwrap_or_default();
                    deleted.into_iter().map(move |mut d| {
                        d["tenant"] = t["slug"].clone();
                        d
                    })
                })
                .collect();
            print(
                output,
                &v,
                &rows,
                &["tenant", "id", "created_at", "state", "reason"],
            );
            if output == Output::Table {
                let verb = if dry_run { "would delete" } else { "deleted" };
                println!(
                    "{} tenants checked: kept {}, {verb} {}, {} errors",
                    v["tenants_checked"], v["kept"], v["deleted"], v["errors"]
                );
            }
        }
    }
    Ok(())
}
