//! The worker's health endpoints: a tiny HTTP/1.1 listener (no framework:
//! two GET routes, probes only) that a `tenantplane worker` process serves
//! when `TENANTPLANE_WORKER_HEALTH_ADDR` / `--health-addr` is set, so that
//! Kubernetes can probe a process that otherwise serves no HTTP.
//!
//! - `GET /healthz` (liveness) asks the process only: the maintenance loop,
//!   which keeps this worker's leases alive, went round within
//!   [`WorkerConfig::stall_after`](crate::WorkerConfig::stall_after), and
//!   every executor thread is still running (none panicked). It never
//!   touches the control database: an outage of the database must not get
//!   every worker restarted, and the loop keeps going round (its calls fail
//!   after the pool's 10 s timeout) while the database is away.
//! - `GET /readyz` (readiness) asks the control database: reachable, and
//!   every control migration this binary embeds applied
//!   (`ControlDb::check_ready`). A rolling update of the workers waits for
//!   it before stopping an old one.
//!
//! Each connection gets its own short-lived thread, at most
//! [`MAX_HANDLERS`] at once (a readiness check can wait on the pool while a
//! liveness probe must still answer); more are answered 503 at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenantplane_control_db::error::report;
use tenantplane_control_db::ControlDb;

/// Connections handled at once; probes are rare, so more is an accident.
const MAX_HANDLERS: usize = 8;
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Proof of life of the worker's loops: the maintenance loop's last round,
/// and how many executor threads are alive.
#[derive(Debug)]
pub struct Pulse {
    epoch: Instant,
    /// Milliseconds after `epoch` of the maintenance loop's last round.
    last_round_ms: AtomicU64,
    executors: AtomicUsize,
    expected_executors: usize,
    /// Set once the worker is stopping: executors end on purpose then.
    stopping: AtomicBool,
}

/// What `/healthz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    pub live: bool,
    pub since_last_round: Duration,
    pub executors: usize,
    pub expected_executors: usize,
}

impl Pulse {
    pub fn new(expected_executors: usize) -> Pulse {
        Pulse {
            epoch: Instant::now(),
            last_round_ms: AtomicU64::new(0),
            executors: AtomicUsize::new(0),
            expected_executors,
            stopping: AtomicBool::new(false),
        }
    }

    /// The maintenance loop went round.
    pub fn round(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_round_ms.store(ms, Ordering::SeqCst);
    }

    /// Counts an executor thread as running until the guard drops (at its
    /// end, or when it unwinds from a panic).
    pub fn executor(self: &Arc<Self>) -> ExecutorGuard {
        self.executors.fetch_add(1, Ordering::SeqCst);
        ExecutorGuard(self.clone())
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Live = the last round is at most `stall_after` old and, unless the
    /// worker is stopping, no executor thread has ended.
    pub fn liveness(&self, stall_after: Duration) -> Liveness {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let since =
            Duration::from_millis(now_ms.saturating_sub(self.last_round_ms.load(Ordering::SeqCst)));
        let executors = self.executors.load(Ordering::SeqCst);
        let threads_ok =
            self.stopping.load(Ordering::SeqCst) || executors >= self.expected_executors;
        Liveness {
            live: since <= stall_after && threads_ok,
            since_last_round: since,
            executors,
            expected_executors: self.expected_executors,
        }
    }
}

/// Held by a running executor thread; see [`Pulse::executor`].
pub struct ExecutorGuard(Arc<Pulse>);

impl Drop for ExecutorGuard {
    fn drop(&mut self) {
        self.0.executors.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The listener's thread; it runs until the process exits.
pub(crate) fn serve(
    listener: TcpListener,
    db: ControlDb,
    pulse: Arc<Pulse>,
    stall_after: Duration,
) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if busy.fetch_add(1, Ordering::SeqCst) >= MAX_HANDLERS {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    let _ = respond(&mut stream, 503, r#"{"status":"busy"}"#, false);
                    continue;
                }
                let (db, pulse, busy) = (db.clone(), pulse.clone(), busy.clone());
                let spawned = std::thread::Builder::new()
                    .name("health-probe".into())
                    .spawn(move || {
                        handle(stream, &db, &pulse, stall_after);
                        busy.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    tracing::warn!("cannot start a thread for a health probe");
                }
            }
        })?;
    Ok(addr)
}

/// The request line's method and path, from a request head.
fn request_line(head: &str) -> Option<(&str, &str)> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    Some((method, target.split('?').next().unwrap_or(target)))
}

fn handle(mut stream: TcpStream, db: &ControlDb, pulse: &Pulse, stall_after: Duration) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let Some((method, path)) = request_line(&head) else {
        let _ = respond(
            &mut stream,
            400,
            &error("bad_request", "not an HTTP request"),
            false,
        );
        return;
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let body = error("method_not_allowed", "only GET and HEAD");
        let _ = respond(&mut stream, 405, &body, false);
        return;
    }
    let (status, body) = match path {
        "/healthz" => {
            let l = pulse.liveness(stall_after);
            let body = format!(
                r#"{{"status":"{}","since_last_round_ms":{},"executors":{},"expected_executors":{}}}"#,
                if l.live { "ok" } else { "stalled" },
                l.since_last_round.as_millis(),
                l.executors,
                l.expected_executors
            );
            if !l.live {
                tracing::warn!(?l, "liveness probe failed");
            }
            (if l.live { 200 } else { 503 }, body)
        }
        "/readyz" => match db.check_ready() {
            Ok(()) => (200, r#"{"status":"ready"}"#.to_string()),
            Err(e) => {
                // The reason goes to the log; the body says only ours.
                tracing::warn!(error = %report(&e), "readiness probe failed");
                let body = error(
                    "not_ready",
                    "the control database is unreachable or not fully migrated",
                );
                (503, body)
            }
        },
        _ => (
            404,
            error("not_found", "the worker serves /healthz and /readyz"),
        ),
    };
    let _ = respond(&mut stream, status, &body, head_only);
}

fn error(code: &str, message: &str) -> String {
    format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#)
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_request_line() {
        assert_eq!(
            request_line("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/healthz"))
        );
        assert_eq!(
            request_line("HEAD /readyz?x=1 HTTP/1.0\r\n\r\n"),
            Some(("HEAD", "/readyz"))
        );
        assert_eq!(request_line("GET /healthz\r\n"), None);
        assert_eq!(request_line(""), None);
    }

    #[test]
    fn liveness_needs_a_recent_round_and_every_executor() {
        let pulse = Arc::new(Pulse::new(2));
        let a = pulse.executor();
        let b = pulse.executor();
        pulse.round();
        assert!(pulse.liveness(Duration::from_secs(60)).live);
        // A round older than the limit: stalled.
        std::thread::sleep(Duration::from_millis(30));
        let l = pulse.liveness(Duration::from_millis(10));
        assert!(!l.live, "{l:?}");
        assert!(l.since_last_round >= Duration::from_millis(30));
        pulse.round();
        assert!(pulse.liveness(Duration::from_millis(10)).live);
        // An executor ended (a panic unwinds through its guard): not live,
        // unless the worker is stopping.
        let panicked = std::thread::spawn(move || {
            let _guard = b;
            panic!("an executor bug");
        })
        .join();
        assert!(panicked.is_err());
        let l = pulse.liveness(Duration::from_secs(60));
        assert_eq!((l.live, l.executors), (false, 1), "{l:?}");
        pulse.set_stopping();
        assert!(pulse.liveness(Duration::from_secs(60)).live);
        drop(a);
    }
}
