//! Operator commands for plans, features, overrides and tenant keys.

use anyhow::{bail, Result};
use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::client::{encode, Client};
use super::output::{print, Output};

const PLAN_COLUMNS: &[&str] = &[
    "slug",
    "name",
    "price_cents",
    "currency",
    "fallback",
    "active",
    "features",
];
const FEATURE_COLUMNS: &[&str] = &["feature", "phase", "enabled", "reason"];

#[derive(Debug, Subcommand)]
pub enum PlanCmd {
    /// List plans.
    List,
    /// Create a plan.
    Create {
        slug: String,
        #[arg(long)]
        name: String,
        /// Price in minor units (cents).
        #[arg(long, default_value_t = 0)]
        price_cents: i64,
        #[arg(long, default_value = "USD")]
        currency: String,
        /// Comma-separated feature names (see `tenantplane features --catalogue`).
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// Plan an expired trial falls back to.
        #[arg(long)]
        fallback: Option<String>,
    },
    /// Change a plan: only the options given change.
    Edit {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        price_cents: Option<i64>,
        #[arg(long)]
        currency: Option<String>,
        /// Replaces the feature list (comma-separated).
        #[arg(long, value_delimiter = ',')]
        features: Option<Vec<String>>,
        #[arg(long)]
        fallback: Option<String>,
        /// Remove the fallback.
        #[arg(long, conflicts_with = "fallback")]
        no_fallback: bool,
        /// Take new tenants (true) or not (false).
        #[arg(long)]
        active: Option<bool>,
    },
}

/// Shows plans, list or one-off.
fn show_plans(output: Output, v: &Value) {
    let rows: Vec<Value> = match v.as_array() {
        Some(a) => a.clone(),
        None => vec![v.clone()],
    };
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|mut p| {
            if let Some(list) = p["features"].as_array() {
                let joined = list
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",");
                p["features"] = Value::String(joined);
            }
            p
        })
        .collect();
    print(output, v, &rows, PLAN_COLUMNS);
}

pub fn plans(client: &Client, output: Output, cmd: PlanCmd) -> Result<()> {
    match cmd {
        PlanCmd::List => show_plans(output, &client.call("GET", "/v1/plans", None)?),
        PlanCmd::Create {
            slug,
            name,
            price_cents,
            currency,
            features,
            fallback,
        } => {
            let body = json!({"slug": slug, "name": name, "price_cents": price_cents, "currency": currency,
                "features": features, "fallback": fallback});
            show_plans(output, &client.call("POST", "/v1/plans", Some(&body))?);
        }
        PlanCmd::Edit {
            slug,
            name,
            price_cents,
            currency,
            features,
            fallback,
            no_fallback,
            active,
        } => {
            let path = format!("/v1/plans/{}", encode(&slug));
            let mut plan = client.call("GET", &path, None)?;
            let set = |plan: &mut Value, key: &str, v: Value| plan[key] = v;
            if let Some(v) = name {
                set(&mut plan, "name", json!(v));
            }
            if let Some(v) = price_cents {
                set(&mut plan, "price_cents", json!(v));
            }
            if let Some(v) = currency {
                set(&mut plan, "currency", json!(v));
            }
            if let Some(v) = features {
                set(&mut plan, "features", json!(v));
            }
            if let Some(v) = fallback {
                set(&mut plan, "fallback", json!(v));
            }
            if no_fallback {
                set(&mut plan, "fallback", Value::Null);
            }
            if let Some(v) = active {
                set(&mut plan, "active", json!(v));
            }
            show_plans(output, &client.call("PUT", &path, Some(&plan))?);
        }
    }
    Ok(())
}

/// `features <tenant>`: its effective features; `--catalogue`: all features.
pub fn features(
    client: &Client,
    output: Output,
    tenant: Option<String>,
    catalogue: bool,
) -> Result<()> {
    match (tenant, catalogue) {
        (_, true) => {
            let v = client.call("GET", "/v1/features", None)?;
            let rows = v.as_array().cloned().unwrap_or_default();
            print(
                output,
                &v,
                &rows,
                &["feature", "phase", "requires", "description"],
            );
        }
        (Some(t), false) => {
            let v = client.call("GET", &format!("/v1/tenants/{}/features", encode(&t)), None)?;
            let rows = v["features"].as_array().cloned().unwrap_or_default();
            if output == Output::Table {
                println!(
                    "tenant {} plan {} (effective {}) schema {}",
                    v["slug"].as_str().unwrap_or("-"),
                    v["plan"].as_str().unwrap_or("-"),
                    v["effective_plan"].as_str().unwrap_or("-"),
                    v["schema_version"].as_str().unwrap_or("-"),
                );
            }
            print(output, &v, &rows, FEATURE_COLUMNS);
        }
        (None, false) => bail!("name a tenant, or pass --catalogue"),
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverrideState {
    On,
    Off,
    Clear,
}

pub fn override_(
    client: &Client,
    output: Output,
    tenant: &str,
    feature: &str,
    state: OverrideState,
    reason: Option<String>,
    expires: Option<String>,
) -> Result<()> {
    let path = format!(
        "/v1/tenants/{}/features/{}",
        encode(tenant),
        encode(feature)
    );
    if state == OverrideState::Clear {
        if expires.is_some() || reason.is_some() {
            bail!("--expires and --reason go with on or off, not clear");
        }
        client.call("DELETE", &path, None)?;
        if output == Output::Table {
            println!("override of {feature} for {tenant} cleared");
        }
        return Ok(());
    }
    let body =
        json!({"enabled": state == OverrideState::On, "reason": reason, "expires_at": expires});
    let v = client.call("PUT", &path, Some(&body))?;
    print(
        output,
        &v,
        std::slice::from_ref(&v),
        &["tenant", "feature", "enabled", "reason", "expires_at"],
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Issue a tenant API key (shown once).
    Issue {
        tenant: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Revoke a tenant API key.
    Revoke { tenant: String, key_id: String },
}

pub fn keys(client: &Client, output: Output, cmd: KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::Issue { tenant, name } => {
            let v = client.call(
                "POST",
                &format!("/v1/tenants/{}/keys", encode(&tenant)),
                Some(&json!({"name": name})),
            )?;
            print(output, &v, std::slice::from_ref(&v), &["id", "name", "key"]);
            if output == Output::Table {
                eprintln!("the key is shown only now: store it");
            }
        }
        KeyCmd::Revoke { tenant, key_id } => {
            client.call(
                "DELETE",
                &format!("/v1/tenants/{}/keys/{}", encode(&tenant), encode(&key_id)),
                None,
            )?;
            if output == Output::Table {
                println!("key {key_id} revoked");
            }
        }
    }
    Ok(())
}
