//! Rollouts: the list, the new-rollout form with its dry-run preview, the
//! live rollout page (progress over SSE), its controls, its failures grouped
//! by error with a retry per group, and its tasks.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use tenantplane_rollout::rollouts::{
    self, Control, Created, FailureGroup, Rollout, RolloutPlan, RolloutRequest, Selector, TaskView,
    WaveSpec,
};

use super::page::{duration, html, list_field, see_other, ConsoleError, Layout};
use super::session::ConsoleSession;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// A rollout as the list, the overview and the progress fragment show it.
pub struct RolloutRow {
    pub id: String,
    pub short: String,
    pub target: String,
    pub state: String,
    pub total: i32,
    pub pending: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    pub cancelled: i64,
    /// Finished tasks (succeeded, failed, skipped, cancelled).
    pub done: i64,
    pub wave: String,
    pub rate: String,
    pub eta: String,
    pub halt_reason: Option<String>,
    /// The next wave waits: "for promote" or "until …".
    pub held: Option<String>,
    pub created: String,
}

impl From<&Rollout> for RolloutRow {
    fn from(r: &Rollout) -> Self {
        let c = &r.counts;
        let done = c.succeeded + c.failed + c.skipped + c.cancelled;
        RolloutRow {
            id: r.id.clone(),
            short: r.id.chars().take(8).collect(),
            target: r.target.clone(),
            state: r.state.clone(),
            total: r.total,
            pending: c.pending,
            running: c.running,
            succeeded: c.succeeded,
            failed: c.failed,
            skipped: c.skipped,
            cancelled: c.cancelled,
            done,
            wave: match r.waves.get(r.current_wave.max(0) as usize) {
                Some(w) => format!("{} ({} of {})", w.name, r.current_wave + 1, r.waves.len()),
                None => "-".to_string(),
            },
            rate: r
                .tenants_per_second
                .map(|t| format!("{t:.1} tenants/s"))
                .unwrap_or_else(|| "-".into()),
            eta: r.eta_seconds.map(duration).unwrap_or_else(|| "-".into()),
            halt_reason: r.halt_reason.clone(),
            held: r.hold.as_ref().map(|h| match h.opens_at {
                Some(t) => format!("wave {} held until {}", h.wave, t.format("%H:%M:%S UTC")),
                None => format!("wave {} finished; the next waits for promote", h.wave),
            }),
            created: r.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        }
    }
}

impl RolloutRow {
    pub fn finished(&self) -> bool {
        FINISHED.contains(&self.state.as_str())
    }
}

const FINISHED: &[&str] = &["succeeded", "failed", "cancelled"];

#[derive(Template)]
#[template(path = "console/rollouts.html")]
struct ListPage {
    layout: Layout,
    rollouts: Vec<RolloutRow>,
    state: String,
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    state: String,
}

#[get("/rollouts")]
pub async fn list(
    state: web::Data<AppState>,
    s: ConsoleSession,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let db = state.db.clone();
    let filter = q.into_inner().state;
    let f = filter.clone();
    let all =
        blocking(move || rollouts::list(&db, Some(f.as_str()).filter(|s| !s.is_empty()), 100))
            .await?;
    html(&ListPage {
        layout: Layout::new("Rollouts", Some(s.csrf()), "rollouts"),
        rollouts: all.iter().map(RolloutRow::from).collect(),
        state: filter,
    })
}

/// The new-rollout form's fields (also its query string when prefilled).
#[derive(Deserialize, Default, Clone)]
pub struct NewForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    target: String,
    /// `key=value` pairs, comma-separated.
    #[serde(default)]
    labels: String,
    #[serde(default)]
    plans: String,
    #[serde(default)]
    servers: String,
    #[serde(default)]
    tenants: String,
    /// Comma-separated waves: `[name:]count` or `[name:]percent%`; what is
    /// left over becomes the last wave.
    #[serde(default)]
    waves: String,
    /// After the first wave: `manual` or seconds; empty = no hold.
    #[serde(default)]
    hold: String,
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    max_failed_percent: String,
    /// `preview` or `start`.
    #[serde(default)]
    action: String,
}

impl NewForm {
    fn request(&self, dry_run: bool) -> Result<RolloutRequest, ConsoleError> {
        let invalid = |m: String| {
            ConsoleError::Api(ApiError::Domain(tenantplane_control_db::Error::invalid(m)))
        };
        let mut labels = BTreeMap::new();
        for pair in list_field(&self.labels) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("label {pair:?} is not key=value")))?;
            labels.insert(k.trim().to_string(), v.trim().to_string());
        }
        let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
        let mut selector = Selector {
            all: None,
            tenants: some(list_field(&self.tenants)),
            plans: some(list_field(&self.plans)),
            labels: (!labels.is_empty()).then_some(labels),
            servers: some(list_field(&self.servers)),
        };
        if selector == Selector::default() {
            selector.all = Some(true);
        }
        let mut waves = Vec::new();
        for w in list_field(&self.waves) {
            let (name, size) = match w.split_once(':') {
                Some((n, s)) => (Some(n.trim().to_string()), s.trim()),
                None => (None, w.as_str()),
            };
            let spec = if let Some(p) = size.strip_suffix('%') {
                WaveSpec {
                    name,
                    count: None,
                    percent: Some(
                        p.trim()
                            .parse()
                            .map_err(|_| invalid(format!("wave {w:?}: not a percentage")))?,
                    ),
                    ..WaveSpec::default()
                }
            } else {
                WaveSpec {
                    name,
                    count: Some(
                        size.parse()
                            .map_err(|_| invalid(format!("wave {w:?}: not a count")))?,
                    ),
                    percent: None,
                    ..WaveSpec::default()
                }
            };
            waves.push(spec);
        }
        // The first wave's hold: `manual` (wait for promote) or seconds.
        match (self.hold.trim(), waves.first_mut()) {
            ("", _) => {}
            (_, None) => return Err(invalid("a hold needs a first wave".into())),
            ("manual", Some(first)) => first.manual = Some(true),
            (secs, Some(first)) => {
                first.hold_s =
                    Some(secs.parse().map_err(|_| {
                        invalid("hold: 'manual' or a number of seconds".to_string())
                    })?)
            }
        }
        let number = |name: &str, v: &str| -> Result<Option<u32>, ConsoleError> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            v.parse()
                .map(Some)
                .map_err(|_| invalid(format!("{name} must be a whole number")))
        };
        let max_failed_percent = number("max failed percent", &self.max_failed_percent)?;
        Ok(RolloutRequest {
            target: if self.target.trim().is_empty() {
                "head".into()
            } else {
                self.target.trim().to_string()
            },
            selector,
            waves: (!waves.is_empty()).then_some(waves),
            concurrency: number("concurrency", &self.concurrency)?,
            per_server_concurrency: None,
            max_attempts: None,
            backoff: None,
            timeout_s: None,
            failure_budget: max_failed_percent.map(|p| rollouts::FailureBudget {
                max_failed: None,
                max_failed_percent: Some(p),
            }),
            verify: None,
            dry_run: Some(dry_run),
            priority: None,
            backup: None,
            restore_on_failure: None,
        })
    }
}

/// The dry run, summed up for the preview.
pub struct Preview {
    total: usize,
    to_migrate: usize,
    skip: usize,
    target_version: String,
    waves: Vec<(String, i64)>,
    /// How many tenants move by how many steps.
    steps: Vec<(usize, usize)>,
}

impl From<&RolloutPlan> for Preview {
    fn from(p: &RolloutPlan) -> Self {
        let mut steps: BTreeMap<usize, usize> = BTreeMap::new();
        for t in p.tasks.iter().filter(|t| t.action != "skip") {
            *steps.entry(t.steps.len()).or_default() += 1;
        }
        Preview {
            total: p.total,
            to_migrate: p.to_migrate,
            skip: p.total.saturating_sub(p.to_migrate),
            target_version: p.target_version.clone().unwrap_or_else(|| "-".into()),
            waves: p.waves.iter().map(|w| (w.name.clone(), w.size)).collect(),
            steps: steps.into_iter().collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/rollout_new.html")]
struct NewPage {
    layout: Layout,
    form: NewForm,
    preview: Option<Preview>,
    error: Option<String>,
}

#[get("/rollouts/new")]
pub async fn new_form(
    s: ConsoleSession,
    q: web::Query<NewForm>,
) -> Result<HttpResponse, ConsoleError> {
    let mut form = q.into_inner();
    if form.target.is_empty() {
        form.target = "head".into();
    }
    html(&NewPage {
        layout: Layout::new("New rollout", Some(s.csrf()), "rollouts"),
        form,
        preview: None,
        error: None,
    })
}

/// `action=preview` shows the dry run (nothing changes); `action=start`
/// creates the rollout and redirects to its page.
#[post("/rollouts")]
pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    form: web::Form<NewForm>,
) -> Result<HttpResponse, ConsoleError> {
    let form = form.into_inner();
    s.check_csrf(&req, Some(&form.csrf))?;
    let start = form.action == "start";
    let layout = || Layout::new("New rollout", Some(s.csrf()), "rollouts");
    let request = match form.request(!start) {
        Ok(r) => r,
        Err(e) => {
            return rerender(NewPage {
                layout: layout(),
                form,
                preview: None,
                error: Some(e.to_string()),
            })
        }
    };
    let db = state.db.clone();
    let actor = s.actor.clone();
    match blocking(move || rollouts::create(&db, &actor, request)).await {
        Ok(Created::Rollout(r)) => Ok(see_other(&format!("/console/rollouts/{}", r.id))),
        Ok(Created::Plan(plan)) => html(&NewPage {
            layout: layout(),
            preview: Some(Preview::from(&plan)),
            form,
            error: None,
        }),
        Err(ApiError::Domain(e @ tenantplane_control_db::Error::Invalid(_))) => rerender(NewPage {
            layout: layout(),
            form,
            preview: None,
            error: Some(e.to_string()),
        }),
        Err(e) => Err(e.into()),
    }
}

fn rerender(page: NewPage) -> Result<HttpResponse, ConsoleError> {
    Ok(HttpResponse::UnprocessableEntity()
        .content_type("text/html; charset=utf-8")
        .body(page.render()?))
}

/// The live part of the rollout page: counters, progress bar, rate, ETA,
/// and the counts of each wave.
#[derive(Template)]
#[template(path = "console/rollout_progress.html")]
struct ProgressFragment {
    r: RolloutRow,
    waves: Vec<WaveLine>,
}

pub struct WaveLine {
    name: String,
    size: i64,
    pending: i64,
    running: i64,
    succeeded: i64,
    failed: i64,
    other: i64,
}

fn wave_lines(r: &Rollout, counts: Vec<(i32, rollouts::TaskCounts)>) -> Vec<WaveLine> {
    r.waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let c = counts
                .iter()
                .find(|(n, _)| *n as usize == i)
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            WaveLine {
                name: w.name.clone(),
                size: w.size,
                pending: c.pending,
                running: c.running,
                succeeded: c.succeeded,
                failed: c.failed,
                other: c.skipped + c.cancelled,
            }
        })
        .collect()
}

/// The rollout and its wave counts.
fn read_progress(
    db: &tenantplane_control_db::ControlDb,
    id: &str,
) -> Result<(Rollout, Vec<(i32, rollouts::TaskCounts)>), tenantplane_control_db::Error> {
    Ok((rollouts::get(db, id)?, rollouts::wave_counts(db, id)?))
}

/// The controls, re-sent when the state changes.
#[derive(Template)]
#[template(path = "console/rollout_controls.html")]
struct ControlsFragment {
    r: RolloutRow,
    csrf: String,
}

pub struct TaskLine {
    slug: String,
    tenant_id: String,
    wave: i32,
    state: String,
    from: String,
    to: String,
    attempts: String,
    error: String,
    error_version: String,
    duration: String,
    /// Why a pending task waits.
    waiting: String,
    /// The task's `pre_migration` backup (rollouts with `backup`), empty
    /// when none was taken: the page links to restoring it.
    backup: String,
    /// The tenant was restored from that backup after failing for good.
    restored: bool,
    /// Each finished attempt: "#1 retry 120 ms: 20261125020100 …".
    history: Vec<String>,
}

fn task_line(t: TaskView, r: &Rollout) -> TaskLine {
    let now = chrono::Utc::now().naive_utc();
    let waiting = if t.state != "pending" {
        String::new()
    } else if r.state == "paused" {
        "rollout paused".into()
    } else if r.state == "halted" {
        "rollout halted (failure budget)".into()
    } else if t.wave > r.current_wave {
        match &r.hold {
            Some(h) => match h.opens_at {
                Some(at) => format!("wave {} held until {}", h.wave, at.format("%H:%M:%S UTC")),
                None => format!("wave {} held: waiting for promote", h.wave),
            },
            None => format!("wave {} not open", t.wave + 1),
        }
    } else if t.next_attempt_at > now {
        format!("backoff until {}", t.next_attempt_at.format("%H:%M:%S UTC"))
    } else {
        "concurrency cap (next in line)".into()
    };
    TaskLine {
        slug: t.slug,
        tenant_id: t.tenant_id,
        wave: t.wave + 1,
        state: t.state,
        from: t.from_version.unwrap_or_else(|| "-".into()),
        to: t.to_version.unwrap_or_else(|| "-".into()),
        attempts: format!("{}/{}", t.attempts, t.max_attempts),
        error: t.last_error.unwrap_or_default(),
        error_version: t.error_version.unwrap_or_default(),
        duration: t.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default(),
        waiting,
        backup: t.backup_id.unwrap_or_default(),
        restored: t.restored,
        history: t
            .history
            .iter()
            .map(|a| {
                let mut line = format!("#{} {} in {} ms", a.attempt, a.outcome, a.duration_ms);
                if let Some(e) = &a.error {
                    line += &format!(": {} {e}", a.error_version.as_deref().unwrap_or(""));
                }
                line
            })
            .collect(),
    }
}

#[derive(Template)]
#[template(path = "console/rollout.html")]
struct ShowPage {
    layout: Layout,
    progress: String,
    controls: String,
    r: RolloutRow,
    groups: Vec<FailureGroup>,
    tasks: Vec<TaskLine>,
    q: TasksQuery,
    query: String,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct TasksQuery {
    #[serde(default)]
    state: String,
    /// 1-based, as the page shows waves.
    #[serde(default)]
    wave: String,
    /// A piece of the error text.
    #[serde(default)]
    error: String,
    #[serde(default)]
    cursor: String,
}

impl TasksQuery {
    fn filter(&self) -> Result<rollouts::TaskFilter, ConsoleError> {
        let wave = match self.wave.trim() {
            "" => None,
            w => Some(
                w.parse::<i32>().ok().filter(|w| *w >= 1).ok_or_else(|| {
                    tenantplane_control_db::Error::invalid("wave must be a number from 1")
                })? - 1,
            ),
        };
        Ok(rollouts::TaskFilter {
            state: Some(self.state.clone()).filter(|s| !s.is_empty()),
            wave,
            error: Some(self.error.trim().to_string()).filter(|e| !e.is_empty()),
        })
    }

    /// The filters as a query string, without the cursor.
    fn query(&self) -> String {
        serde_urlencoded::to_string([
            ("state", &self.state),
            ("wave", &self.wave),
            ("error", &self.error),
        ])
        .unwrap_or_default()
    }
}

#[get("/rollouts/{id}")]
pub async fn show(
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<String>,
    q: web::Query<TasksQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let db = state.db.clone();
    let id = id.into_inner();
    let q = q.into_inner();
    let filter = q.filter()?;
    let cur = q.cursor.clone();
    let (r, waves, groups, page) = blocking(move || {
        let (r, waves) = read_progress(&db, &id)?;
        let groups = rollouts::failure_groups(&db, &id)?;
        let page = rollouts::tasks_page_where(
            &db,
            &id,
            &filter,
            50,
            Some(cur.as_str()).filter(|s| !s.is_empty()),
        )?;
        Ok((r, waves, groups, page))
    })
    .await?;
    let row = RolloutRow::from(&r);
    let progress = ProgressFragment {
        r: RolloutRow::from(&r),
        waves: wave_lines(&r, waves),
    }
    .render()?;
    let controls = ControlsFragment {
        r: RolloutRow::from(&r),
        csrf: s.csrf().to_string(),
    }
    .render()?;
    html(&ShowPage {
        layout: Layout::new(format!("Rollout {}", row.short), Some(s.csrf()), "rollouts"),
        progress,
        controls,
        tasks: page.items.into_iter().map(|t| task_line(t, &r)).collect(),
        next: page.next_cursor,
        r: row,
        groups,
        query: q.query(),
        q,
    })
}

/// One SSE event whose data is an HTML fragment (one `data:` line per line).
fn sse(event: &str, html: &str) -> String {
    let mut out = format!("event: {event}\n");
    for line in html.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Server-sent events for the htmx SSE extension: `progress` (the counters
/// fragment) whenever it changes, at most every 500 ms; `controls` when the
/// state changes; `done` when the rollout has finished.
#[get("/rollouts/{id}/events")]
pub async fn events(
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    let db = state.db.clone();
    let id = id.into_inner();
    {
        let (db, id) = (db.clone(), id.clone());
        blocking(move || rollouts::get(&db, &id)).await?;
    }
    let csrf = s.csrf().to_string();
    let shutdown = state.shutdown.clone();
    struct St {
        db: tenantplane_control_db::ControlDb,
        id: String,
        last: Option<String>,
        last_state: Option<String>,
        done: bool,
    }
    let init = St {
        db,
        id,
        last: None,
        last_state: None,
        done: false,
    };
    let stream = futures_util::stream::unfold(init, move |mut st| {
        let shutdown = shutdown.clone();
        let csrf = csrf.clone();
        async move {
            if st.done {
                return None;
            }
            let mut wait = st.last.is_some();
            loop {
                if wait {
                    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
                }
                wait = true;
                if shutdown.is_begun() {
                    st.done = true;
                    return Some((
                        Ok::<_, actix_web::Error>(Bytes::from(
                            "retry: 1000\nevent: shutdown\ndata: stopping\n\n",
                        )),
                        st,
                    ));
                }
                let (db, id) = (st.db.clone(), st.id.clone());
                let (r, waves) = match blocking(move || read_progress(&db, &id)).await {
                    Ok(x) => x,
                    Err(_) => {
                        st.done = true;
                        return Some((Ok(Bytes::from("event: done\ndata: error\n\n")), st));
                    }
                };
                let row = RolloutRow::from(&r);
                let finished = row.finished();
                let state_changed = st.last_state.as_deref() != Some(row.state.as_str());
                let fragment = ProgressFragment {
                    r: RolloutRow::from(&r),
                    waves: wave_lines(&r, waves),
                }
                .render()
                .unwrap_or_default();
                if st.last.as_deref() == Some(fragment.as_str()) && !state_changed {
                    continue;
                }
                let mut text = sse("progress", &fragment);
                if state_changed && st.last_state.is_some() {
                    let controls = ControlsFragment {
                        r: row,
                        csrf: csrf.clone(),
                    }
                    .render()
                    .unwrap_or_default();
                    text.push_str(&sse("controls", &controls));
                }
                if finished {
                    text.push_str("event: done\ndata: finished\n\n");
                    st.done = true;
                }
                st.last_state = Some(r.state.clone());
                st.last = Some(fragment);
                return Some((Ok(Bytes::from(text)), st));
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(stream))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Pause, resume, cancel, retry the failed tasks.
#[post("/rollouts/{id}/{what}")]
pub async fn control(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    s.check_csrf(&req, Some(&form.csrf))?;
    let (id, what) = path.into_inner();
    let what = match what.as_str() {
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        "cancel" => Control::Cancel,
        "retry" => Control::Retry,
        "promote" => Control::Promote,
        _ => return Err(ConsoleError::NotFound),
    };
    let db = state.db.clone();
    let actor = s.actor.clone();
    let rid = id.clone();
    blocking(move || rollouts::control(&db, &actor, &rid, what)).await?;
    Ok(see_other(&format!("/console/rollouts/{id}")))
}

#[derive(Deserialize)]
pub struct GroupForm {
    #[serde(default)]
    csrf: String,
    error_version: String,
    message: String,
}

/// Retries the failed tasks of one error group.
#[post("/rollouts/{id}/groups/retry")]
pub async fn retry_group(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<String>,
    form: web::Form<GroupForm>,
) -> Result<HttpResponse, ConsoleError> {
    let form = form.into_inner();
    s.check_csrf(&req, Some(&form.csrf))?;
    let id = id.into_inner();
    let db = state.db.clone();
    let actor = s.actor.clone();
    let rid = id.clone();
    blocking(move || rollouts::retry_group(&db, &actor, &rid, &form.error_version, &form.message))
        .await?;
    Ok(see_other(&format!("/console/rollouts/{id}")))
}
