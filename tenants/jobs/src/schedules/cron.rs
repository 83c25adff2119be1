//! Cron expressions, time zones, and the fire times they give.
//!
//! # Forms
//!
//! - **5 fields**, the crontab form: `minute hour day-of-month month
//!   day-of-week`, e.g. `0 2 * * *`. It becomes the `cron` crate's form by
//!   putting a seconds field `0` in front, and its day-of-week field is
//!   translated from crontab numbering (below).
//! - **6 or 7 fields**, the `cron` crate's own form: `second minute hour
//!   day-of-month month day-of-week [year]`, e.g. `*/10 * * * * *`, taken as
//!   the crate reads it, with the crate's day-of-week numbering.
//! - **Shorthands**: `@yearly` (or `@annually`), `@monthly`, `@weekly`,
//!   `@daily` (or `@midnight`), `@hourly`, as in crontab (`@weekly` is
//!   Sunday 00:00).
//!
//! Anything else (another number of fields, `L`, `W`, `#`, values out of
//! range) is refused with the reason.
//!
//! # Day of week
//!
//! The `cron` crate numbers days **1–7 with Sunday = 1** (Monday = 2, …,
//! Saturday = 7) and knows the names `SUN`…`SAT` (and the full names, any
//! case). Crontab numbers them **0–6 with Sunday = 0, and 7 is Sunday too**.
//! So:
//!
//! - in the **5-field form**, numbers are crontab's: `0 3 * * 0` and
//!   `0 3 * * 7` are Sunday 03:00, `1-5` is Monday to Friday, `5-7` is
//!   Friday to Sunday, `*/2` is Sunday, Tuesday, Thursday, Saturday;
//!   names (`MON`, `mon-fri`, `Sunday`) mean what they say;
//! - in the **6/7-field form**, numbers are the crate's: `0 0 3 * * 1` is
//!   Sunday 03:00 and `0` is refused. Names mean what they say here too, so
//!   names are the safe choice in either form.
//!
//! Crontab fires when *either* a restricted day-of-month or a restricted
//! day-of-week matches; the crate needs *both*. The 5-field form therefore
//! refuses an expression that restricts both (`0 0 1 * MON`): write two
//! schedules, or the 6-field form if you mean "Mondays that are the 1st".
//!
//! # Time zones
//!
//! An expression is read in its schedule's IANA time zone (default `UTC`),
//! so `0 2 * * *` in `Europe/Berlin` fires at 02:00 Berlin time in winter
//! and in summer. Across DST changes:
//!
//! - a wall-clock time that happens twice (clocks go back) fires once, at
//!   its first occurrence;
//! - a wall-clock time that does not happen (clocks go forward) fires once,
//!   at the moment the clocks jump (`30 2 * * *` in `Europe/Berlin` fires at
//!   03:00 CEST on the last Sunday of March). Several such times in one gap
//!   are one fire time.
//!
//! Fire times are whole seconds, stored in UTC.

use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use tenantplane_control_db::{Error, Result};

/// A parsed cron expression, in the `cron` crate's form.
#[derive(Debug, Clone)]
pub struct CronExpr {
    schedule: cron::Schedule,
}

impl CronExpr {
    /// Parses any of the forms in the module documentation; the error says
    /// which rule the expression breaks.
    pub fn parse(expr: &str) -> Result<CronExpr> {
        let crate_form = to_crate_form(expr)?;
        let schedule = cron::Schedule::from_str(&crate_form).map_err(|e| {
            Error::invalid(format!(
                "invalid cron expression {expr:?}: {e}{}",
                hint(expr)
            ))
        })?;
        Ok(CronExpr { schedule })
    }

    /// The expression as the `cron` crate reads it (seconds first, crate
    /// day-of-week numbering).
    pub fn crate_form(&self) -> &str {
        self.schedule.source()
    }
}

/// Names the forms after a parse error.
fn hint(expr: &str) -> &'static str {
    match expr.split_whitespace().count() {
        5 => " (5 fields: minute hour day-of-month month day-of-week, Sunday = 0 or 7)",
        6 | 7 => {
            " (6/7 fields: second minute hour day-of-month month day-of-week [year], Sunday = 1)"
        }
        _ => "",
    }
}

const SHORTHANDS: &[(&str, &str)] = &[
    ("@yearly", "@yearly"),
    ("@annually", "@yearly"),
    ("@monthly", "@monthly"),
    ("@weekly", "@weekly"),
    ("@daily", "@daily"),
    ("@midnight", "@daily"),
    ("@hourly", "@hourly"),
];

/// The expression in the `cron` crate's syntax: shorthands mapped, the
/// 5-field form given seconds and crate day-of-week numbers, 6/7 fields as
/// they are.
fn to_crate_form(expr: &str) -> Result<String> {
    let text = expr.trim();
    if text.is_empty() {
        return Err(Error::invalid("the cron expression is empty"));
    }
    if text.starts_with('@') {
        let lower = text.to_ascii_lowercase();
        return SHORTHANDS
            .iter()
            .find(|(name, _)| *name == lower)
            .map(|(_, form)| form.to_string())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown cron shorthand {text:?}: one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"
                ))
            });
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    match fields.as_slice() {
        [minute, hour, dom, month, dow] => {
            let restricted = |f: &str| f != "*" && f != "?";
            if restricted(dom) && restricted(dow) {
                return Err(Error::invalid(format!(
                    "cron expression {expr:?} restricts both day-of-month and day-of-week: crontab \
                     would fire when either matches, this scheduler only when both do; use two \
                     schedules, or the 6-field form (seconds first) if both must match"
                )));
            }
            let dow = crontab_days(dow).map_err(|why| {
                Error::invalid(format!(
                    "invalid day-of-week {dow:?} in cron expression {expr:?}: {why} \
                     (5-field form: 0-7 with Sunday = 0 or 7, or SUN-SAT)"
                ))
            })?;
            Ok(format!("0 {minute} {hour} {dom} {month} {dow}"))
        }
        [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => Ok(fields.join(" ")),
        _ => Err(Error::invalid(format!(
            "cron expression {expr:?} has {} fields: give 5 (minute hour day-of-month month \
             day-of-week), 6 or 7 (second minute hour day-of-month month day-of-week [year]), or \
             a shorthand such as @daily",
            fields.len()
        ))),
    }
}

const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const FULL_DAY_NAMES: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// One crontab day: `0`–`7` (0 and 7 are Sunday) or a name; crontab
/// numbering (Sunday = 0) out.
fn crontab_day(v: &str) -> std::result::Result<u32, String> {
    if let Ok(n) = v.parse::<u32>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("{n} is out of range"))
        };
    }
    let lower = v.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| *d == lower)
        .or_else(|| FULL_DAY_NAMES.iter().position(|d| *d == lower))
        .map(|i| i as u32)
        .ok_or_else(|| format!("{v:?} is not a day"))
}

/// Translates a crontab day-of-week field into the crate's numbering: each
/// item (`*`, `?`, `d`, `a-b`, any of them with `/step`) is expanded to its
/// days, and the set is written as crate numbers (`*` when it is every day).
fn crontab_days(field: &str) -> std::result::Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad step in {item:?}"))?;
                (base, step)
            }
            None => (item, 1),
        };
        let (start, end) = match base {
            "*" | "?" => (0, 6),
            _ => match base.split_once('-') {
                Some((a, b)) => (crontab_day(a)?, crontab_day(b)?),
                // `d/step` runs from d to the end of the week, as in cronie.
                None if item.contains('/') => (crontab_day(base)?, 7),
                None => {
                    let d = crontab_day(base)?;
                    (d, d)
                }
            },
        };
        if base.is_empty() || start > end {
            return Err(format!(
                "{item:?} is not a range from an earlier to a later day"
            ));
        }
        let mut d = start;
        while d <= end {
            days[(d % 7) as usize] = true;
            d += step;
        }
    }
    if days.iter().all(|d| *d) {
        return Ok("*".to_string());
    }
    Ok(days
        .iter()
        .enumerate()
        .filter(|(_, on)| **on)
        .map(|(i, _)| (i + 1).to_string())
        .collect::<Vec<_>>()
        .join(","))
}

/// An IANA time zone by name (`UTC`, `Europe/Berlin`, …).
pub fn parse_timezone(name: &str) -> Result<Tz> {
    Tz::from_str(name.trim()).map_err(|_| {
        Error::invalid(format!(
            "unknown time zone {name:?}: use an IANA name such as UTC, Europe/Berlin or America/New_York"
        ))
    })
}

/// The fire times of an expression in a time zone, as UTC instants.
#[derive(Debug, Clone)]
pub struct Timetable {
    expr: CronExpr,
    tz: Tz,
}

/// The fire times due in a window, bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Due {
    /// The newest due fire times, oldest first; at most the cap asked for.
    pub times: Vec<NaiveDateTime>,
    /// Older due fire times that are not listed: the first and the last of
    /// them (equal when it is one).
    pub unlisted: Option<(NaiveDateTime, NaiveDateTime)>,
}

impl Timetable {
    pub fn new(expr: CronExpr, tz: Tz) -> Self {
        Timetable { expr, tz }
    }

    /// Parses both parts; errors say which is wrong.
    pub fn parse(cron: &str, timezone: &str) -> Result<Self> {
        Ok(Timetable::new(
            CronExpr::parse(cron)?,
            parse_timezone(timezone)?,
        ))
    }

    /// The UTC instant of a wall-clock time: its first occurrence when the
    /// clocks go back, the jump when they go forward past it.
    fn instant(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        if let Some(t) = self.tz.from_local_datetime(&local).earliest() {
            return Some(t.naive_utc());
        }
        // In a gap: the first wall-clock minute after it that exists is the
        // moment of the jump (zones change offsets on whole minutes).
        let mut minute = local.with_second(0)?.with_nanosecond(0)?;
        for _ in 0..(26 * 60) {
            minute += Duration::minutes(1);
            if let Some(t) = self.tz.from_local_datetime(&minute).earliest() {
                return Some(t.naive_utc());
            }
        }
        None
    }

    /// The wall-clock time of a UTC instant.
    fn local(&self, utc: NaiveDateTime) -> NaiveDateTime {
        self.tz.from_utc_datetime(&utc).naive_local()
    }

    /// Fire times strictly after `from` (UTC), ascending.
    ///
    /// The crate walks wall-clock times (as if in UTC, which has no DST);
    /// each maps to its instant, and an instant not later than the last one
    /// (a repeated hour, several times in one gap) is dropped. No wall-clock
    /// time before `from`'s own maps to an instant after `from`, so starting
    /// there misses nothing.
    pub fn after(&self, from: NaiveDateTime) -> impl Iterator<Item = NaiveDateTime> + '_ {
        let start: DateTime<Utc> = self.local(from).and_utc();
        let mut last = from;
        self.expr.schedule.after(&start).filter_map(move |local| {
            let t = self.instant(local.naive_utc())?;
            (t > last).then(|| {
                last = t;
                t
            })
        })
    }

    /// Fire times at or before `until` (UTC), newest first.
    fn until(&self, until: NaiveDateTime) -> impl Iterator<Item = NaiveDateTime> + '_ {
        // A wall-clock time whose instant is at or before `until` is at most
        // `until` plus the largest UTC offset in effect around then (the
        // first occurrence of a repeated hour comes before `until`'s own
        // wall-clock time).
        let offset = |t: NaiveDateTime| {
            i64::from(self.tz.offset_from_utc_datetime(&t).fix().local_minus_utc())
        };
        let ahead = offset(until).max(offset(until - Duration::days(1)));
        let top = (until + Duration::seconds(ahead))
            .with_nanosecond(0)
            .unwrap_or(until)
            + Duration::seconds(1);
        let mut last: Option<NaiveDateTime> = None;
        self.expr
            .schedule
            .after(&top.and_utc())
            .rev()
            .filter_map(move |local| {
                let t = self.instant(local.naive_utc())?;
                let newer = last.is_some_and(|l| t >= l);
                (t <= until && !newer).then(|| {
                    last = Some(t);
                    t
                })
            })
    }

    /// The first fire time after `t`.
    pub fn next_after(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        self.after(t).next()
    }

    /// The fire times in `(from, now]`: all of them when at most `cap`,
    /// else the newest `cap` and the range of the older ones, so a month of
    /// downtime under a per-second schedule costs `2 × cap` steps, not
    /// millions.
    pub fn due(&self, from: NaiveDateTime, now: NaiveDateTime, cap: usize) -> Due {
        let cap = cap.max(1);
        let forward: Vec<NaiveDateTime> = self
            .after(from)
            .take_while(|t| *t <= now)
            .take(cap + 1)
            .collect();
        if forward.len() <= cap {
            return Due {
                times: forward,
                unlisted: None,
            };
        }
        let mut newest: Vec<NaiveDateTime> = self
            .until(now)
            .take_while(|t| *t > from)
            .take(cap + 1)
            .collect();
        let unlisted = if newest.len() > cap {
            newest.pop().map(|last| (forward[0], last))
        } else {
            None
        };
        newest.reverse();
        Due {
            times: newest,
            unlisted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn utc(cron: &str) -> Timetable {
        Timetable::parse(cron, "UTC").unwrap()
    }

    fn next(cron: &str, after: &str) -> NaiveDateTime {
        utc(cron).next_after(at(after)).unwrap()
    }

    fn first(t: &Timetable, after: &str, n: usize) -> Vec<NaiveDateTime> {
        t.after(at(after)).take(n).collect()
    }

    fn invalid(cron: &str) -> String {
        match CronExpr::parse(cron) {
            Err(Error::Invalid(m)) => m,
            other => panic!("{cron:?} parsed: {other:?}"),
        }
    }

    // 2026-12-02 is a Wednesday; 2026-12-06 a Sunday.
    const WED: &str = "2026-12-02 12:00:00";

    #[test]
    fn five_fields_get_a_seconds_field() {
        assert_eq!(
            CronExpr::parse("0 2 * * *").unwrap().crate_form(),
            "0 0 2 * * *"
        );
        assert_eq!(next("0 2 * * *", WED), at("2026-12-03 02:00:00"));
        assert_eq!(next("*/15 * * * *", WED), at("2026-12-02 12:15:00"));
        assert_eq!(next("30 8 1 * *", WED), at("2027-01-01 08:30:00"));
        assert_eq!(next("0 0 * JAN *", WED), at("2027-01-01 00:00:00"));
    }

    #[test]
    fn six_and_seven_fields_are_the_crates_own() {
        assert_eq!(
            next("*/10 * * * * *", "2026-12-02 12:00:01"),
            at("2026-12-02 12:00:10")
        );
        assert_eq!(next("0 0 0 1 1 * 2030", WED), at("2030-01-01 00:00:00"));
        // Whole seconds, strictly after.
        assert_eq!(
            next("* * * * * *", "2026-12-02 12:00:00"),
            at("2026-12-02 12:00:01")
        );
    }

    #[test]
    fn crontab_sunday_is_0_or_7_or_its_name() {
        for cron in [
            "0 3 * * 0",
            "0 3 * * 7",
            "0 3 * * SUN",
            "0 3 * * sun",
            "0 3 * * Sunday",
        ] {
            assert_eq!(next(cron, WED), at("2026-12-06 03:00:00"), "{cron}");
        }
        assert_eq!(
            CronExpr::parse("0 3 * * 0").unwrap().crate_form(),
            "0 0 3 * * 1"
        );
        assert_eq!(
            CronExpr::parse("0 3 * * 7").unwrap().crate_form(),
            "0 0 3 * * 1"
        );
    }

    #[test]
    fn crontab_day_ranges_lists_and_steps() {
        let days = |dow: &str| -> Vec<String> {
            first(&utc(&format!("0 0 * * {dow}")), "2026-12-05 12:00:00", 7)
                .iter()
                .map(|t| t.format("%a").to_string())
                .collect()
        };
        // From Saturday 2026-12-05 noon.
        assert_eq!(
            days("1-5"),
            ["Mon", "Tue", "Wed", "Thu", "Fri", "Mon", "Tue"]
        );
        assert_eq!(days("MON-FRI"), days("1-5"));
        assert_eq!(days("mon-fri"), days("1-5"));
        assert_eq!(
            days("5-7"),
            ["Sun", "Fri", "Sat", "Sun", "Fri", "Sat", "Sun"]
        );
        assert_eq!(
            days("*/2"),
            ["Sun", "Tue", "Thu", "Sat", "Sun", "Tue", "Thu"]
        );
        assert_eq!(
            days("1-5/2"),
            ["Mon", "Wed", "Fri", "Mon", "Wed", "Fri", "Mon"]
        );
        assert_eq!(
            days("0,6"),
            ["Sun", "Sat", "Sun", "Sat", "Sun", "Sat", "Sun"]
        );
        assert_eq!(days("SAT,sun"), days("0,6"));
        assert_eq!(days("0-7").len(), 7);
        assert_eq!(
            CronExpr::parse("0 0 * * 0-6").unwrap().crate_form(),
            "0 0 0 * * *"
        );
        assert_eq!(
            CronExpr::parse("0 0 * * 1-5").unwrap().crate_form(),
            "0 0 0 * * 2,3,4,5,6"
        );
    }

    #[test]
    fn six_field_days_use_the_crates_numbering() {
        // The crate's 1 is Sunday; its names mean what they say.
        assert_eq!(next("0 0 3 * * 1", WED), at("2026-12-06 03:00:00"));
        assert_eq!(next("0 0 3 * * SUN", WED), at("2026-12-06 03:00:00"));
        assert_eq!(next("0 0 3 * * Mon", WED), at("2026-12-07 03:00:00"));
        assert!(invalid("0 0 3 * * 0").contains("Sunday = 1"));
    }

    #[test]
    fn shorthands() {
        assert_eq!(next("@daily", WED), at("2026-12-03 00:00:00"));
        assert_eq!(next("@midnight", WED), at("2026-12-03 00:00:00"));
        assert_eq!(next("@hourly", WED), at("2026-12-02 13:00:00"));
        assert_eq!(next("@weekly", WED), at("2026-12-06 00:00:00"));
        assert_eq!(next("@monthly", WED), at("2027-01-01 00:00:00"));
        assert_eq!(next("@ANNUALLY", WED), at("2027-01-01 00:00:00"));
        assert!(invalid("@fortnightly").contains("@daily"));
    }

    #[test]
    fn malformed_expressions_are_refused_with_the_reason() {
        assert!(invalid("").contains("empty"));
        assert!(invalid("   ").contains("empty"));
        assert!(invalid("* * *").contains("has 3 fields"));
        assert!(invalid("* * * *").contains("has 4 fields"));
        assert!(invalid("0 0 0 * * * 2030 1").contains("has 8 fields"));
        assert!(invalid("61 * * * *").contains("minute hour"));
        assert!(invalid("0 25 * * *").contains("cron expression"));
        assert!(invalid("0 3 * * 8").contains("8 is out of range"));
        assert!(invalid("0 3 * * FOO").contains("\"FOO\" is not a day"));
        assert!(invalid("0 3 * * 5-1").contains("earlier to a later"));
        assert!(invalid("0 3 * * 1/0").contains("bad step"));
        assert!(invalid("0 3 * * ,").contains("day-of-week"));
        assert!(invalid("0 0 1 * MON").contains("both day-of-month and day-of-week"));
        assert!(invalid("0 0 L * *").contains("cron expression"));
        assert!(invalid("every day").contains("has 2 fields"));
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert!(parse_timezone("UTC").is_ok());
        assert!(parse_timezone("Europe/Berlin").is_ok());
        for bad in ["", "Mars/Olympus", "CEST+1", "europe/berlin "] {
            match parse_timezone(bad) {
                Err(Error::Invalid(m)) => assert!(m.contains("IANA"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn fire_times_follow_the_zone_across_dst() {
        // 02:00 in Berlin: 01:00 UTC in winter (CET), 00:00 UTC in summer (CEST).
        let berlin = Timetable::parse("0 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            first(&berlin, "2026-03-27 12:00:00", 3),
            [
                at("2026-03-28 01:00:00"),
                // 2026-03-29 02:00 does not exist (02:00 → 03:00): the jump.
                at("2026-03-29 01:00:00"),
                at("2026-03-30 00:00:00"),
            ]
        );
        let half_past = Timetable::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            first(&half_past, "2026-03-28 12:00:00", 2),
            [at("2026-03-29 01:00:00"), at("2026-03-30 00:30:00")]
        );
        // Autumn: 02:30 happens twice on 2026-10-25; it fires once, first.
        assert_eq!(
            first(&half_past, "2026-10-24 12:00:00", 3),
            [
                at("2026-10-25 00:30:00"),
                at("2026-10-26 01:30:00"),
                at("2026-10-27 01:30:00"),
            ]
        );
    }

    #[test]
    fn hourly_fire_times_through_both_changes_are_increasing_and_single() {
        let ny = Timetable::parse("*/30 * * * *", "America/New_York").unwrap();
        // Fall back 2026-11-01 02:00 EDT → 01:00 EST: 01:00 and 01:30 once each.
        let autumn = first(&ny, "2026-11-01 04:00:00", 6);
        assert_eq!(
            autumn,
            [
                at("2026-11-01 04:30:00"), // 00:30 EDT
                at("2026-11-01 05:00:00"), // 01:00 EDT
                at("2026-11-01 05:30:00"), // 01:30 EDT
                at("2026-11-01 07:00:00"), // 02:00 EST
                at("2026-11-01 07:30:00"),
                at("2026-11-01 08:00:00"),
            ]
        );
        // Starting inside the repeated hour (01:15 EST) misses nothing later.
        assert_eq!(
            ny.next_after(at("2026-11-01 06:15:00")),
            Some(at("2026-11-01 07:00:00"))
        );
        // Spring forward 2026-03-08 02:00 EST → 03:00 EDT: 02:00 and 02:30
        // are one fire time at the jump (07:00 UTC = 03:00 EDT).
        let spring = first(&ny, "2026-03-08 06:00:00", 4);
        assert_eq!(
            spring,
            [
                at("2026-03-08 06:30:00"), // 01:30 EST
                at("2026-03-08 07:00:00"), // the jump = 03:00 EDT
                at("2026-03-08 07:30:00"), // 03:30 EDT
                at("2026-03-08 08:00:00"),
            ]
        );
    }

    #[test]
    fn due_lists_a_window_and_bounds_a_long_one() {
        let every_second = utc("* * * * * *");
        let from = at("2026-12-02 12:00:00");
        let d = every_second.due(from, at("2026-12-02 12:00:10"), 100);
        assert_eq!(d.times.len(), 10);
        assert_eq!(d.times[0], at("2026-12-02 12:00:01"));
        assert_eq!(d.times[9], at("2026-12-02 12:00:10"));
        assert_eq!(d.unlisted, None);
        assert_eq!(every_second.due(from, from, 100), Due::default());
        // A month of downtime: the newest 100, and the range before them.
        let now = at("2027-01-02 12:00:00");
        let d = every_second.due(from, now, 100);
        assert_eq!(d.times.len(), 100);
        assert_eq!(d.times.last(), Some(&now));
        assert_eq!(d.times[0], now - Duration::seconds(99));
        assert_eq!(
            d.unlisted,
            Some((at("2026-12-02 12:00:01"), now - Duration::seconds(100)))
        );
        // Exactly one more than the cap: it is its own range.
        let d = every_second.due(from, at("2026-12-02 12:00:04"), 3);
        assert_eq!(d.times.len(), 3);
        assert_eq!(
            d.unlisted,
            Some((at("2026-12-02 12:00:01"), at("2026-12-02 12:00:01")))
        );
    }

    #[test]
    fn due_counts_backwards_correctly_across_a_repeated_hour() {
        let ny = Timetable::parse("*/30 * * * *", "America/New_York").unwrap();
        // Now = 01:45 EST (06:45 UTC), the second pass through 01:xx: the
        // newest fire time is 01:30 EDT (05:30 UTC).
        let d = ny.due(at("2026-10-30 00:00:00"), at("2026-11-01 06:45:00"), 2);
        assert_eq!(
            d.times,
            [at("2026-11-01 05:00:00"), at("2026-11-01 05:30:00")]
        );
        assert_eq!(d.unlisted.map(|u| u.0), Some(at("2026-10-30 00:30:00")));
        assert_eq!(d.unlisted.map(|u| u.1), Some(at("2026-11-01 04:30:00")));
    }

    #[test]
    fn an_expression_that_never_fires_again_has_no_next_time() {
        assert_eq!(utc("0 0 0 1 1 * 2020").next_after(at(WED)), None);
        assert_eq!(utc("0 0 30 2 *").next_after(at(WED)), None);
    }
}
