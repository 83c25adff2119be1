//! The decisions of a rollout as pure functions: how big each wave is,
//! which wave a tenant falls in, and when the failure budget is spent.

use super::{FailureBudget, Wave, WaveSpec};

pub fn wave_sizes(specs: &[WaveSpec], total: usize) -> Vec<Wave> {
    let mut waves = Vec::new();
    let mut left = total;
    for (i, spec) in specs.iter().enumerate() {
        if left == 0 {
            break;
        }
        let want = match (spec.count, spec.percent) {
            (Some(c), _) => c as usize,
            (_, Some(p)) => ((total as f64 * p / 100.0).ceil() as usize).max(1),
            _ => 0,
        };
        let size = want.min(left);
        left -= size;
        waves.push(Wave {
            name: spec
                .name
                .clone()
                .unwrap_or_else(|| format!("wave-{}", i + 1)),
            size: size as i64,
            hold_s: spec.hold_s,
            manual: spec.manual.unwrap_or(false),
        });
    }
    if left > 0 || waves.is_empty() {
        waves.push(Wave {
            name: "rest".to_string(),
            size: left as i64,
            hold_s: None,
            manual: false,
        });
    }
    waves
}

/// The wave of the tenant at `position` of the wave order.
pub fn wave_of(waves: &[Wave], position: usize) -> i32 {
    let mut end = 0usize;
    for (w, wave) in waves.iter().enumerate() {
        end += wave.size as usize;
        if position < end {
            return w as i32;
        }
    }
    waves.len().saturating_sub(1) as i32
}

/// Where a running rollout stands, for the failure budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Failed tasks, less those an operator forgave by resuming.
    pub failed: i64,
    /// Failed plus succeeded tasks.
    pub finished: i64,
    /// Tasks that will run (the total less the skipped ones).
    pub eligible: i64,
    /// No task of the current wave (or an earlier one) is still open.
    pub wave_done: bool,
}

/// Why the rollout must halt, or `None` while the budget holds. A count
/// budget is spent once more tenants failed than it allows; a percentage
/// budget only once 10 tenants finished (or all eligible ones, if fewer) or a
/// wave ended, so the first failure of a large rollout does not halt it at
/// 100 %.
pub fn budget_spent(budget: &FailureBudget, p: &Progress) -> Option<String> {
    if p.failed <= 0 {
        return None;
    }
    let over_count = budget.max_failed.is_some_and(|m| p.failed > i64::from(m));
    let over_percent = budget.max_failed_percent.is_some_and(|pct| {
        (p.finished >= 10.min(p.eligible) || p.wave_done)
            && p.failed * 100 > i64::from(pct) * p.finished
    });
    (over_count || over_percent).then(|| {
        format!(
            "failure budget exceeded: {} of {} finished tenants failed",
            p.failed, p.finished
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(count: Option<u32>, percent: Option<f64>) -> WaveSpec {
        WaveSpec {
            count,
            percent,
            ..WaveSpec::default()
        }
    }

    fn sizes(waves: &[Wave]) -> Vec<(String, i64)> {
        waves.iter().map(|w| (w.name.clone(), w.size)).collect()
    }

    #[test]
    fn waves_take_counts_then_percentages_and_the_rest() {
        let w = wave_sizes(&[spec(Some(5), None), spec(None, Some(10.0))], 100);
        assert_eq!(
            sizes(&w),
            vec![
                ("wave-1".to_string(), 5),
                ("wave-2".to_string(), 10),
                ("rest".to_string(), 85)
            ]
        );
        // A percentage rounds up and takes at least one tenant.
        let w = wave_sizes(&[spec(None, Some(1.0))], 7);
        assert_eq!(sizes(&w), vec![("wave-1".into(), 1), ("rest".into(), 6)]);
        // Waves that would be empty are left out; no empty `rest`.
        let w = wave_sizes(&[spec(Some(10), None), spec(Some(10), None)], 4);
        assert_eq!(sizes(&w), vec![("wave-1".into(), 4)]);
        // No waves asked for: one wave of everything; none selected: one empty.
        assert_eq!(sizes(&wave_sizes(&[], 3)), vec![("rest".into(), 3)]);
        assert_eq!(sizes(&wave_sizes(&[], 0)), vec![("rest".into(), 0)]);
        let named = WaveSpec {
            name: Some("canary".into()),
            count: Some(2),
            ..WaveSpec::default()
        };
        assert_eq!(wave_sizes(&[named], 5)[0].name, "canary");
    }

    #[test]
    fn positions_fall_in_their_wave() {
        let w = wave_sizes(&[spec(Some(2), None), spec(Some(3), None)], 10);
        let waves: Vec<i32> = (0..10).map(|i| wave_of(&w, i)).collect();
        assert_eq!(waves, vec![0, 0, 1, 1, 1, 2, 2, 2, 2, 2]);
        // Past the end (tenants added since): the last wave.
        assert_eq!(wave_of(&w, 50), 2);
        assert_eq!(wave_of(&[], 0), 0);
    }

    fn progress(failed: i64, finished: i64, eligible: i64, wave_done: bool) -> Progress {
        Progress {
            failed,
            finished,
            eligible,
            wave_done,
        }
    }

    #[test]
    fn count_budget() {
        let b = FailureBudget {
            max_failed: Some(2),
            max_failed_percent: None,
        };
        assert_eq!(budget_spent(&b, &progress(2, 3, 100, false)), None);
        let reason = budget_spent(&b, &progress(3, 3, 100, false));
        assert_eq!(
            reason.as_deref(),
            Some("failure budget exceeded: 3 of 3 finished tenants failed")
        );
        assert_eq!(budget_spent(&b, &progress(0, 50, 100, true)), None);
    }

    #[test]
    fn percentage_budget_waits_for_ten_finished_or_a_wave_end() {
        let b = FailureBudget {
            max_failed: None,
            max_failed_percent: Some(10),
        };
        // One failure out of the first one: too early to judge…
        assert_eq!(budget_spent(&b, &progress(1, 1, 1000, false)), None);
        // …unless the wave (a canary, say) is over.
        assert!(budget_spent(&b, &progress(1, 1, 1000, true)).is_some());
        // From 10 finished on: 1 of 10 is 10 %, not over; 2 of 10 is.
        assert_eq!(budget_spent(&b, &progress(1, 10, 1000, false)), None);
        assert!(budget_spent(&b, &progress(2, 10, 1000, false)).is_some());
        // A rollout of 3 tenants judges once all 3 finished.
        assert!(budget_spent(&b, &progress(1, 3, 3, false)).is_some());
        assert_eq!(budget_spent(&b, &progress(1, 2, 3, false)), None);
        // 0 % tolerates nothing once judged; 100 % tolerates everything.
        let zero = FailureBudget {
            max_failed: None,
            max_failed_percent: Some(0),
        };
        assert!(budget_spent(&zero, &progress(1, 10, 10, false)).is_some());
        let all = FailureBudget {
            max_failed: None,
            max_failed_percent: Some(100),
        };
        assert_eq!(budget_spent(&all, &progress(10, 10, 10, true)), None);
    }

    #[test]
    fn no_budget_never_halts() {
        let b = FailureBudget::default();
        assert_eq!(budget_spent(&b, &progress(1000, 1000, 1000, true)), None);
    }
}
