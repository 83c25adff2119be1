//! Progress lines on stderr.

use std::time::{Duration, Instant};

/// Progress lines on stderr: at every 10 % and at most every 5 s otherwise.
pub(super) struct Progress {
    label: String,
    total: usize,
    started: Instant,
    last: Instant,
    next_tenth: usize,
}

impl Progress {
    pub(super) fn new(label: impl Into<String>, total: usize) -> Progress {
        let now = Instant::now();
        Progress {
            label: label.into(),
            total,
            started: now,
            last: now,
            next_tenth: 1,
        }
    }

    pub(super) fn update(&mut self, done: usize) {
        let tenth = (done * 10).checked_div(self.total).unwrap_or(10);
        if tenth >= self.next_tenth || self.last.elapsed() >= Duration::from_secs(5) {
            self.next_tenth = tenth + 1;
            self.last = Instant::now();
            eprintln!(
                "{}: {done}/{} ({:.1} s)",
                self.label,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}
