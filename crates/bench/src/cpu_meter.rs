//! CPU time spent by the whole machine, read from `/proc/stat`.
//!
//! The benchmark measures CPU for the whole machine rather than for its own
//! process because most of the work of a migration happens elsewhere: in the
//! PostgreSQL server's backends, and for the baseline in the diesel CLI
//! processes. Comparing the CPU each side spends per tenant is what shows how
//! close the engine is to the ceiling a 2-core machine puts on it.

use anyhow::{Context, Result};

/// `/proc/stat` counts in USER_HZ ticks, which the kernel ABI fixes at 100
/// per second on every architecture Linux reports it for.
const TICKS_PER_SECOND: f64 = 100.0;

/// Busy CPU ticks of the machine so far (user, nice, system, irq, softirq,
/// steal; not idle or I/O wait).
fn busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_busy_ticks(&stat).context("no aggregate cpu line in /proc/stat")
}

fn parse_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already counted in user.
    let busy = [0, 1, 2, 5, 6, 7];
    if fields.len() < 8 {
        return None;
    }
    Some(busy.iter().map(|&i| fields[i]).sum())
}

/// Measures the machine's busy CPU time from its start.
pub struct CpuMeter {
    start: u64,
}

impl CpuMeter {
    pub fn start() -> Result<CpuMeter> {
        Ok(CpuMeter {
            start: busy_ticks()?,
        })
    }

    /// Busy CPU seconds of the whole machine since [`CpuMeter::start`].
    pub fn busy_secs(&self) -> Result<f64> {
        Ok(busy_ticks()?.saturating_sub(self.start) as f64 / TICKS_PER_SECOND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_busy_fields_only() {
        // user 10, nice 1, system 5, idle 1000, iowait 50, irq 2, softirq 3,
        // steal 4, guest 7, guest_nice 0.
        let stat = "cpu  10 1 5 1000 50 2 3 4 7 0\ncpu0 5 0 2 500 25 1 1 2 3 0\n";
        assert_eq!(parse_busy_ticks(stat), Some(25));
        assert_eq!(parse_busy_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(parse_busy_ticks("cpu  1 2 3\n"), None);
    }

    #[test]
    fn reads_this_machine() {
        let meter = CpuMeter::start().expect("/proc/stat");
        // Spin a little so that the machine is busy for at least a tick.
        let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        assert!(meter.busy_secs().expect("/proc/stat") > 0.0);
    }
}
