//! `tenantplane drift`: compare tenants' schemas with the reference of their
//! recorded version and print the differences (calls the API).

use anyhow::{bail, Result};
use clap::Args;
use serde_json::{json, Value};

use super::client::{encode, Client};
use super::labels_object;
use super::output::Output;

#[derive(Debug, Args)]
pub struct DriftArgs {
    /// Every tenant.
    #[arg(long, conflicts_with_all = ["tenants", "labels"])]
    all: bool,
    /// A tenant id or slug, repeatable.
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// key=value, repeatable (all must match).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Queue the checks as a job (`POST /v1/drift`) instead of checking
    /// now; the results show in `--last` and in each tenant.
    #[arg(long, conflicts_with = "last")]
    queue: bool,
    /// Print the last recorded checks (`GET /v1/drift`) instead of checking.
    #[arg(long)]
    last: bool,
}

pub fn run(client: &Client, output: Output, args: DriftArgs) -> Result<()> {
    if args.last {
        let page = client.call("GET", "/v1/drift", None)?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        return report(output, &items);
    }
    if !args.all && args.tenants.is_empty() && args.labels.is_empty() {
        bail!("say which tenants: --all, --tenant SLUG or --label key=value");
    }
    if args.queue {
        let mut selector = json!({});
        if args.all {
            selector["all"] = json!(true);
        }
        if !args.tenants.is_empty() {
            selector["tenants"] = json!(args.tenants);
        }
        if !args.labels.is_empty() {
            selector["labels"] = labels_object(&args.labels)?;
        }
        let queued = client.call("POST", "/v1/drift", Some(&json!({ "selector": selector })))?;
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&queued)?),
            Output::Table => println!(
                "queued drift job {} over {} tenants; see `tenantplane drift --last`",
                queued["job_id"], queued["tenants"]
            ),
        }
        return Ok(());
    }
    let mut reports = Vec::new();
    for tenant in selected(client, &args)? {
        let path = format!("/v1/tenants/{}/drift", encode(&tenant));
        reports.push(client.call("GET", &path, None)?);
    }
    report(output, &reports)
}

/// The tenants named, or those the labels (or `--all`) pick, page by page.
fn selected(client: &Client, args: &DriftArgs) -> Result<Vec<String>> {
    if !args.tenants.is_empty() {
        return Ok(args.tenants.clone());
    }
    let mut query = vec!["limit=500".to_string()];
    query.extend(args.labels.iter().map(|l| format!("label={}", encode(l))));
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = query.clone();
        q.extend(cursor.as_ref().map(|c| format!("cursor={}", encode(c))));
        let page = client.call("GET", &format!("/v1/tenants?{}", q.join("&")), None)?;
        for t in page["items"].as_array().into_iter().flatten() {
            if t["status"] != "provisioning" {
                out.extend(t["id"].as_str().map(str::to_string));
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    Ok(out)
}

/// One block per tenant; fails (exit status 1) when any tenant drifted, so
/// scripts can tell.
fn report(output: Output, reports: &[Value]) -> Result<()> {
    let drifted = reports.iter().filter(|r| r["drifted"] == true).count();
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(reports)?),
        Output::Table => {
            for r in reports {
                let version = r["schema_version"].as_str().unwrap_or("(empty)");
                let slug = r["slug"].as_str().unwrap_or("?");
                let diffs = r["differences"].as_array().cloned().unwrap_or_default();
                if diffs.is_empty() {
                    println!("{slug}: no drift from {version}");
                    continue;
                }
                println!("{slug}: {} differences from {version}", diffs.len());
                for d in diffs {
                    println!("  {}", d["text"].as_str().unwrap_or("?"));
                }
            }
        }
    }
    if drifted > 0 {
        bail!("{drifted} of {} tenants drifted", reports.len());
    }
    Ok(())
}
