//! Operator commands: thin wrappers over the HTTP API.

pub mod backups;
pub mod client;
pub mod flags;
pub mod notify;
pub mod output;
pub mod rollout;
pub mod schedules;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Map, Value};

use client::{encode, Client};
use output::{print, Output};

const TENANT_COLUMNS: &[&str] = &[
    "slug",
    "name",
    "status",
    "server",
    "phase",
    "schema_version",
    "labels",
];
const SERVER_COLUMNS: &[&str] = &[
    "name",
    "kind",
    "isolation",
    "url",
    "capacity",
    "tenants",
    "status",
];

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant and provision its database.
    Create {
        slug: String,
        #[arg(long)]
        name: String,
        /// key=value, repeatable
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long)]
        email: Option<String>,
        /// server id or name (default: most free capacity)
        #[arg(long)]
        server: Option<String>,
        /// head (default), phase:N, version:V or none
        #[arg(long)]
        schema: Option<String>,
    },
    /// List tenants.
    List {
        #[arg(long)]
        status: Option<String>,
        /// key=value, repeatable (all must match)
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long)]
        server: Option<String>,
        #[arg(long)]
        phase: Option<u8>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Follow the cursor through every page.
        #[arg(long)]
        all: bool,
    },
    /// Show one tenant.
    Show { tenant: String },
    /// Suspend a tenant.
    Suspend { tenant: String },
    /// Reactivate a suspended tenant.
    Resume { tenant: String },
    /// Soft-delete a tenant (its database is kept).
    Delete { tenant: String },
    /// Move a tenant's database to another server (a job; prints it).
    Move {
        tenant: String,
        /// target server id or name
        #[arg(long)]
        server: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServerCmd {
    /// Register a database server.
    Add {
        /// sqlite or postgres
        #[arg(long)]
        kind: String,
        #[arg(long)]
        url: String,
        /// file (sqlite); schema or database (postgres)
        #[arg(long)]
        isolation: Option<String>,
        #[arg(long)]
        capacity: Option<i32>,
        #[arg(long)]
        name: Option<String>,
    },
    /// List database servers.
    List,
    /// Change a server's capacity or status (active, draining, retired).
    Update {
        server: String,
        #[arg(long)]
        capacity: Option<i32>,
        /// active, draining or retired
        #[arg(long)]
        status: Option<String>,
    },
    /// Move every tenant off a server (marks it draining; a job).
    Drain {
        server: String,
        /// Only show the latest drain's progress.
        #[arg(long)]
        status: bool,
    },
}

const JOB_COLUMNS: &[&str] = &[
    "job_id",
    "state",
    "total",
    "moved",
    "remaining",
    "last_error",
];
const MOVE_COLUMNS: &[&str] = &[
    "job_id",
    "tenant_id",
    "from_server",
    "to_server",
    "state",
    "last_error",
];

fn labels_object(labels: &[String]) -> Result<Value> {
    let mut map = Map::new();
    for l in labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("label {l:?} is not key=value")
        };
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(Value::Object(map))
}

pub fn tenants(client: &Client, output: Output, cmd: TenantCmd) -> Result<()> {
    let show = |v: &Value| print(output, v, std::slice::from_ref(v), TENANT_COLUMNS);
    match cmd {
        TenantCmd::Create {
            slug,
            name,
            labels,
            email,
            server,
            schema,
        } => {
            let body = json!({
                "slug": slug, "name": name, "labels": labels_object(&labels)?,
                "contact_email": email, "server": server, "schema": schema,
            });
            show(&client.call("POST", "/v1/tenants", Some(&body))?);
        }
        TenantCmd::List {
            status,
            labels,
            server,
            phase,
            limit,
            all,
        } => {
            let mut query = vec![format!("limit={limit}")];
            query.extend(status.map(|s| format!("status={}", encode(&s))));
            query.extend(server.map(|s| format!("server={}", encode(&s))));
            query.extend(phase.map(|p| format!("phase={p}")));
            query.extend(labels.iter().map(|l| format!("label={}", encode(l))));
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = query.clone();
                q.extend(cursor.as_ref().map(|c| format!("cursor={}", encode(c))));
                let page = client.call("GET", &format!("/v1/tenants?{}", q.join("&")), None)?;
                items.extend(page["items"].as_array().cloned().unwrap_or_default());
                cursor = page["next_cursor"].as_str().map(str::to_string);
                if !all || cursor.is_none() {
                    break;
                }
            }
            let value = json!({ "items": items, "next_cursor": cursor });
            print(output, &value, &items, TENANT_COLUMNS);
            if output == Output::Table {
                if let Some(c) = cursor {
                    eprintln!("more: --all, or the API with cursor={c}");
                }
            }
        }
        TenantCmd::Show { tenant } => {
            show(&client.call("GET", &format!("/v1/tenants/{}", encode(&tenant)), None)?)
        }
        TenantCmd::Suspend { tenant } => show(&set_status(client, &tenant, "suspended")?),
        TenantCmd::Resume { tenant } => show(&set_status(client, &tenant, "active")?),
        TenantCmd::Move { tenant, server } => {
            let v = client.call(
                "POST",
                &format!("/v1/tenants/{}/move", encode(&tenant)),
                Some(&json!({ "server": server })),
            )?;
            print(output, &v, std::slice::from_ref(&v), MOVE_COLUMNS);
        }
        TenantCmd::Delete { tenant } => {
            client.call("DELETE", &format!("/v1/tenants/{}", encode(&tenant)), None)?;
            if output == Output::Table {
                println!("deleted {tenant} (its database is kept)");
            }
        }
    }
    Ok(())
}

fn set_status(client: &Client, tenant: &str, status: &str) -> Result<Value> {
    client.call(
        "PATCH",
        &format!("/v1/tenants/{}", encode(tenant)),
        Some(&json!({ "status": status })),
    )
}

pub fn servers(client: &Client, output: Output, cmd: ServerCmd) -> Result<()> {
    match cmd {
        ServerCmd::Add {
            kind,
            url,
            isolation,
            capacity,
            name,
        } => {
            let body = json!({ "kind": kind, "url": url, "isolation": isolation, "capacity": capacity, "name": name });
            let v = client.call("POST", "/v1/servers", Some(&body))?;
            print(output, &v, std::slice::from_ref(&v), SERVER_COLUMNS);
        }
        ServerCmd::List => {
            let v = client.call("GET", "/v1/servers", None)?;
            let rows = v.as_array().cloned().unwrap_or_default();
            print(output, &v, &rows, SERVER_COLUMNS);
        }
        ServerCmd::Update {
            server,
            capacity,
            status,
        } => {
            let v = client.call(
                "PATCH",
                &format!("/v1/servers/{}", encode(&server)),
                Some(&json!({ "capacity": capacity, "status": status })),
            )?;
            print(output, &v, std::slice::from_ref(&v), SERVER_COLUMNS);
        }
        ServerCmd::Drain { server, status } => {
            let path = format!("/v1/servers/{}/drain", encode(&server));
            let v = if status {
                client.call("GET", &path, None)?
            } else {
                client.call("POST", &path, None)?
            };
            print(output, &v, std::slice::from_ref(&v), JOB_COLUMNS);
        }
    }
    Ok(())
}
