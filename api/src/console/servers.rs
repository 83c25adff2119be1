//! Database servers, read-only: kind, isolation, capacity, status and how
//! many tenant databases each holds (`servers::list`, as `GET /v1/servers`).

use actix_web::{get, web, HttpResponse};
use askama::Template;
use tenantplane_fleet::servers::{self, ServerView};

use super::page::{html, ConsoleError, Layout};
use super::session::ConsoleSession;
use crate::error::blocking;
use crate::AppState;

pub struct ServerLine {
    s: ServerView,
    /// Tenants per capacity, in steps of 5 % (a bar class).
    width: u32,
    created: String,
}

#[derive(Template)]
#[template(path = "console/servers.html")]
struct ServersPage {
    layout: Layout,
    servers: Vec<ServerLine>,
}

#[get("/servers")]
pub async fn list(
    state: web::Data<AppState>,
    s: ConsoleSession,
) -> Result<HttpResponse, ConsoleError> {
    let db = state.db.clone();
    let all = blocking(move || servers::list(&db)).await?;
    html(&ServersPage {
        layout: Layout::new("Database servers", Some(s.csrf()), "servers"),
        servers: all
            .into_iter()
            .map(|s| ServerLine {
                width: fill(s.tenants, s.capacity),
                created: s.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                s,
            })
            .collect(),
    })
}

/// How full a server is, rounded up to 5 % steps, at most 100.
fn fill(tenants: i64, capacity: i32) -> u32 {
    if capacity <= 0 {
        return 0;
    }
    let pct = (tenants as f64 / f64::from(capacity) * 20.0).ceil() as u32 * 5;
    pct.min(100)
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn fill_rounds_up_to_five_percent_and_stops_at_full() {
        assert_eq!(fill(0, 100), 0);
        assert_eq!(fill(1, 100), 5);
        assert_eq!(fill(50, 100), 50);
        assert_eq!(fill(150, 100), 100);
        assert_eq!(fill(3, 0), 0);
    }
}
