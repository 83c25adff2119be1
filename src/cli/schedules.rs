//! `tenantplane schedules …`: cron schedules and their runs through the API
//! (`/v1/schedules`).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use super::client::{encode, Client};
use super::output::{print, Output};

const SCHEDULE_COLUMNS: &[&str] = &[
    "name",
    "cron",
    "timezone",
    "job",
    "enabled",
    "missed",
    "next_fire_at",
    "last_fired_at",
];
const RUN_COLUMNS: &[&str] = &[
    "id",
    "fire_at",
    "state",
    "job_id",
    "job_state",
    "job_error",
    "note",
];

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// List schedules with their next fire times.
    List,
    /// Show one schedule.
    Show { name: String },
    /// Create a schedule.
    Create {
        name: String,
        /// `m h dom mon dow` (crontab: Sunday = 0 or 7), `s m h dom mon dow
        /// [year]` (Sunday = 1), or @hourly/@daily/@weekly/@monthly/@yearly.
        #[arg(long)]
        cron: String,
        /// The job each fire time starts: backup, verify, retention,
        /// export-cleanup, sweep.provisioning or sweep.trials.
        #[arg(long)]
        job: String,
        /// IANA time zone the expression is read in (API default UTC).
        #[arg(long)]
        timezone: Option<String>,
        #[command(flatten)]
        selector: SelectorArgs,
        /// Job-specific settings as a JSON object, e.g. retention's
        /// '{"keep_last":7,"daily":7,"weekly":4,"monthly":6}'.
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
        /// After downtime: skip (API default) or run_once.
        #[arg(long, value_enum)]
        missed: Option<Missed>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Change a schedule: only the options given change. A new --cron or
    /// --timezone, or --enable, counts fire times from now.
    Update {
        name: String,
        #[arg(long)]
        cron: Option<String>,
        #[arg(long)]
        timezone: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
        #[arg(long, value_enum)]
        missed: Option<Missed>,
        // Selector options replace the selector.
        #[command(flatten)]
        selector: SelectorArgs,
        /// Remove the selector.
        #[arg(long)]
        no_selector: bool,
        /// Replaces the params (a JSON object).
        #[arg(long, value_name = "JSON", conflicts_with = "no_params")]
        params: Option<String>,
        /// Remove the params.
        #[arg(long)]
        no_params: bool,
    },
    /// Delete a schedule and its runs.
    Delete { name: String },
    /// A schedule's fire times, newest first, with their jobs' states.
    Runs {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only runs with a smaller id (the next page).
        #[arg(long)]
        before: Option<i64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Missed {
    Skip,
    #[value(name = "run_once", alias = "run-once")]
    RunOnce,
}

impl Missed {
    fn word(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::RunOnce => "run_once",
        }
    }
}

/// Which tenants the schedule's job covers.
#[derive(Debug, Clone, Default, Args)]
pub struct SelectorArgs {
    /// Every tenant.
    #[arg(long)]
    all: bool,
    /// Tenant id or slug, repeatable.
    #[arg(long = "tenant", value_name = "ID|SLUG")]
    tenants: Vec<String>,
    /// Plan, repeatable.
    #[arg(long = "plan", value_name = "PLAN")]
    plans: Vec<String>,
    /// key=value, repeatable (all must match).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Database server id or name, repeatable.
    #[arg(long = "server", value_name = "SERVER")]
    servers: Vec<String>,
}

impl SelectorArgs {
    /// The selector JSON, `None` when no option was given.
    pub(super) fn value(&self) -> Result<Option<Value>> {
        let mut s = Map::new();
        if self.all {
            s.insert("all".into(), json!(true));
        }
        if !self.tenants.is_empty() {
            s.insert("tenants".into(), json!(self.tenants));
        }
        if !self.plans.is_empty() {
            s.insert("plans".into(), json!(self.plans));
        }
        if !self.labels.is_empty() {
            let mut labels = BTreeMap::new();
            for l in &self.labels {
                let Some((k, v)) = l.split_once('=') else {
                    bail!("label {l:?} is not key=value")
                };
                labels.insert(k.to_string(), v.to_string());
            }
            s.insert("labels".into(), json!(labels));
        }
        if !self.servers.is_empty() {
            s.insert("servers".into(), json!(self.servers));
        }
        Ok((!s.is_empty()).then_some(Value::Object(s)))
    }
}

fn params(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| anyhow!("--params is not JSON: {e}"))
}

fn path(name: &str) -> String {
    format!("/v1/schedules/{}", encode(name))
}

fn show(output: Output, v: &Value) {
    print(output, v, std::slice::from_ref(v), SCHEDULE_COLUMNS);
}

pub fn run(client: &Client, output: Output, cmd: ScheduleCmd) -> Result<()> {
    match cmd {
        ScheduleCmd::List => {
            let v = client.call("GET", "/v1/schedules", None)?;
            let rows = v.as_array().cloned().unwrap_or_default();
            print(output, &v, &rows, SCHEDULE_COLUMNS);
        }
        ScheduleCmd::Show { name } => show(output, &client.call("GET", &path(&name), None)?),
        ScheduleCmd::Create {
            name,
            cron,
            job,
            timezone,
            selector,
            params: p,
            missed,
            disabled,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert("cron".into(), json!(cron));
            body.insert("job".into(), json!(job));
            if let Some(tz) = timezone {
                body.insert("timezone".into(), json!(tz));
            }
            if let Some(s) = selector.value()? {
                body.insert("selector".into(), s);
            }
            if let Some(p) = p {
                body.insert("params".into(), params(&p)?);
            }
            if let Some(m) = missed {
                body.insert("missed".into(), json!(m.word()));
            }
            if disabled {
                body.insert("enabled".into(), json!(false));
            }
            let v = client.call("POST", "/v1/schedules", Some(&Value::Object(body)))?;
            show(output, &v);
        }
        ScheduleCmd::Update {
            name,
            cron,
            timezone,
            enable,
            disable,
            missed,
            selector,
            no_selector,
            params: p,
            no_params,
        } => {
            let mut body = Map::new();
            if let Some(c) = cron {
                body.insert("cron".into(), json!(c));
            }
            if let Some(tz) = timezone {
                body.insert("timezone".into(), json!(tz));
            }
            if enable || disable {
                body.insert("enabled".into(), json!(enable));
            }
            if let Some(m) = missed {
                body.insert("missed".into(), json!(m.word()));
            }
            match (selector.value()?, no_selector) {
                (Some(_), true) => bail!("--no-selector goes without selector options"),
                (Some(s), false) => {
                    body.insert("selector".into(), s);
                }
                (None, true) => {
                    body.insert("selector".into(), Value::Null);
                }
                (None, false) => {}
            }
            if let Some(p) = p {
                body.insert("params".into(), params(&p)?);
            }
            if no_params {
                body.insert("params".into(), Value::Null);
            }
            if body.is_empty() {
                bail!("nothing to change: give --cron, --timezone, --enable, --disable, --missed, a selector or --params");
            }
            let v = client.call("PATCH", &path(&name), Some(&Value::Object(body)))?;
            show(output, &v);
        }
        ScheduleCmd::Delete { name } => {
            client.call("DELETE", &path(&name), None)?;
            if output == Output::Table {
                println!("deleted schedule {name} and its runs");
            }
        }
        ScheduleCmd::Runs {
            name,
            limit,
            before,
        } => {
            let mut query = format!("limit={limit}");
            if let Some(b) = before {
                query.push_str(&format!("&before={b}"));
            }
            let v = client.call("GET", &format!("{}/runs?{query}", path(&name)), None)?;
            let rows = v.as_array().cloned().unwrap_or_default();
            print(output, &v, &rows, RUN_COLUMNS);
        }
    }
    Ok(())
}
