//! The site's calendar for schedule rules: named daily windows, weekends and holidays, all in
//! the site's time zone (daylight-saving aware through chrono-tz). Pure: the wall time is passed
//! in.
//!
//! Window edges: `start` is inside, `end` is outside. A window whose end is before its start
//! crosses midnight and belongs to the day it starts on (a `days = ["fri"]` night window covers
//! Friday 22:00 to Saturday 06:00).

use std::collections::{BTreeSet, HashSet};
use std::time::SystemTime;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;

use serde::Deserialize;

use crate::check::Problems;
use crate::model::check_id;

/// The site's calendar.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// IANA time zone, e.g. `Asia/Shanghai` (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Days that are weekend days (`mon` … `sun`).
    #[serde(default = "default_weekend")]
    pub weekend: Vec<String>,
    /// Holidays as `YYYY-MM-DD` in the site's time zone.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// Named daily time windows (`window("night")` in expressions).
    #[serde(default)]
    pub windows: Vec<TimeWindow>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            timezone: None,
            weekend: default_weekend(),
            holidays: Vec::new(),
            windows: Vec::new(),
        }
    }
}

fn default_weekend() -> Vec<String> {
    vec!["sat".into(), "sun".into()]
}

/// A daily window in local time; `end` before `start` crosses midnight.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Name used in expressions.
    pub name: String,
    /// `HH:MM`, inclusive.
    pub start: String,
    /// `HH:MM`, exclusive.
    pub end: String,
    /// Days on which the window starts (`mon` … `sun`); every day when empty.
    #[serde(default)]
    pub days: Vec<String>,
}

/// Parses a weekday name (`mon` … `sun`).
pub fn weekday(s: &str) -> Option<chrono::Weekday> {
    use chrono::Weekday::*;
    Some(match s {
        "mon" => Mon,
        "tue" => Tue,
        "wed" => Wed,
        "thu" => Thu,
        "fri" => Fri,
        "sat" => Sat,
        "sun" => Sun,
        _ => return None,
    })
}

/// Parses `HH:MM`.
pub fn time_of_day(s: &str) -> Option<chrono::NaiveTime> {
    chrono::NaiveTime::parse_from_str(s, "%H:%M").ok()
}

/// Parses `YYYY-MM-DD`.
pub fn date(s: &str) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// Checks `[alarms.schedule]` (errors at `alarms.schedule.*`) and compiles it: every string
/// parsed here, once. Entries in error are left out of the calendar (the configuration is
/// refused anyway).
pub fn compile(s: &Schedule, p: &mut Problems) -> Calendar {
    let tz = match &s.timezone {
        None => Tz::UTC,
        Some(tz) => tz.parse::<Tz>().unwrap_or_else(|_| {
            p.err(
                "alarms.schedule.timezone",
                format!("unknown time zone `{tz}` (use an IANA name such as Asia/Shanghai)"),
            );
            Tz::UTC
        }),
    };
    let days = |list: &[String], path: &str, p: &mut Problems| -> Vec<Weekday> {
        list.iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let w = weekday(d);
                if w.is_none() {
                    p.err(
                        format!("{path}[{i}]"),
                        format!("`{d}` is not one of mon tue wed thu fri sat sun"),
                    );
                }
                w
            })
            .collect()
    };
    let weekend = days(&s.weekend, "alarms.schedule.weekend", p);
    let mut holidays = BTreeSet::new();
    for (i, d) in s.holidays.iter().enumerate() {
        match date(d) {
            Some(d) => {
                holidays.insert(d);
            }
            None => p.err(
                format!("alarms.schedule.holidays[{i}]"),
                format!("`{d}` is not a YYYY-MM-DD date"),
            ),
        }
    }
    let mut names = HashSet::new();
    let mut windows = Vec::new();
    for (i, w) in s.windows.iter().enumerate() {
        let path = format!("alarms.schedule.windows[{i}]");
        if let Err(e) = check_id(&w.name, false) {
            p.err(format!("{path}.name"), e);
        }
        if !names.insert(w.name.as_str()) {
            p.err(
                format!("{path}.name"),
                format!("duplicate window `{}`", w.name),
            );
        }
        let (st, en) = (time_of_day(&w.start), time_of_day(&w.end));
        if st.is_none() {
            p.err(
                format!("{path}.start"),
                format!("`{}` is not HH:MM", w.start),
            );
        }
        if en.is_none() {
            p.err(format!("{path}.end"), format!("`{}` is not HH:MM", w.end));
        }
        if st.is_some() && st == en {
            p.err(
                format!("{path}.end"),
                "start and end are equal: the window would be empty",
            );
        }
        let on = days(&w.days, &format!("{path}.days"), p);
        if let (Some(start), Some(end)) = (st, en) {
            windows.push(Window {
                name: w.name.clone(),
                start,
                end,
                days: on,
            });
        }
    }
    Calendar {
        tz,
        windows,
        weekend,
        holidays,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Window {
    name: String,
    start: NaiveTime,
    end: NaiveTime,
    days: Vec<Weekday>,
}

/// Calendar flags at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// One per window, in configuration order.
    pub windows: Vec<bool>,
    /// Today is a weekend day.
    pub weekend: bool,
    /// Today is on the holiday list.
    pub holiday: bool,
}

/// The compiled calendar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calendar {
    tz: Tz,
    windows: Vec<Window>,
    weekend: Vec<Weekday>,
    holidays: BTreeSet<NaiveDate>,
}

impl Default for Calendar {
    /// The calendar of an empty `[alarms.schedule]`: UTC, weekend Saturday and Sunday.
    fn default() -> Self {
        compile(&Schedule::default(), &mut Problems::default())
    }
}

impl Calendar {
    /// Whether a window of this name is defined.
    pub fn has_window(&self, name: &str) -> bool {
        self.window_index(name).is_some()
    }

    /// Index of a window by name.
    pub fn window_index(&self, name: &str) -> Option<usize> {
        self.windows.iter().position(|w| w.name == name)
    }

    /// The flags at `wall`.
    pub fn flags(&self, wall: SystemTime) -> Flags {
        let local = DateTime::<Utc>::from(wall).with_timezone(&self.tz);
        let (day, t) = (local.weekday(), local.time());
        let windows = self
            .windows
            .iter()
            .map(|w| {
                let on = |d: Weekday| w.days.is_empty() || w.days.contains(&d);
                if w.start < w.end {
                    t >= w.start && t < w.end && on(day)
                } else {
                    (t >= w.start && on(day)) || (t < w.end && on(day.pred()))
                }
            })
            .collect();
        Flags {
            windows,
            weekend: self.weekend.contains(&day),
            holiday: self.holidays.contains(&local.date_naive()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> SystemTime {
        SystemTime::from(
            tz.with_ymd_and_hms(y, mo, d, h, mi, s)
                .single()
                .expect("valid local time"),
        )
    }

    #[test]
    fn windows_weekends_holidays_at_their_edges() {
        let sched = Schedule {
            timezone: Some("Asia/Shanghai".into()),
            weekend: vec!["sat".into(), "sun".into()],
            holidays: vec!["2026-10-01".into()],
            windows: vec![
                TimeWindow {
                    name: "night".into(),
                    start: "22:00".into(),
                    end: "06:00".into(),
                    days: vec![],
                },
                TimeWindow {
                    name: "fri-night".into(),
                    start: "22:00".into(),
                    end: "06:00".into(),
                    days: vec!["fri".into()],
                },
                TimeWindow {
                    name: "lunch".into(),
                    start: "12:00".into(),
                    end: "13:00".into(),
                    days: vec![],
                },
            ],
        };
        let mut p = Problems::default();
        let c = compile(&sched, &mut p);
        assert!(!p.has_errors(), "{:?}", p.0);
        let sh = chrono_tz::Asia::Shanghai;
        // 2026-09-25 is a Friday.
        let rows = [
            (
                at(sh, 2026, 9, 25, 21, 59, 59),
                [false, false, false],
                false,
                false,
            ),
            (
                at(sh, 2026, 9, 25, 22, 0, 0),
                [true, true, false],
                false,
                false,
            ),
            (
                at(sh, 2026, 9, 26, 5, 59, 59),
                [true, true, false],
                true,
                false,
            ), // Saturday morning
            (
                at(sh, 2026, 9, 26, 6, 0, 0),
                [false, false, false],
                true,
                false,
            ),
            (
                at(sh, 2026, 9, 26, 23, 0, 0),
                [true, false, false],
                true,
                false,
            ), // Saturday night
            (
                at(sh, 2026, 9, 28, 12, 0, 0),
                [false, false, true],
                false,
                false,
            ),
            (
                at(sh, 2026, 9, 28, 13, 0, 0),
                [false, false, false],
                false,
                false,
            ),
            (
                at(sh, 2026, 10, 1, 0, 0, 0),
                [true, false, false],
                false,
                true,
            ),
            (
                at(sh, 2026, 9, 30, 23, 59, 59),
                [true, false, false],
                false,
                false,
            ),
        ];
        for (i, (t, w, weekend, holiday)) in rows.into_iter().enumerate() {
            let f = c.flags(t);
            assert_eq!(
                f,
                Flags {
                    windows: w.to_vec(),
                    weekend,
                    holiday
                },
                "row {i}"
            );
        }
        // The same UTC instant is a different local day: 2026-09-30T16:00Z is 1 October 00:00
        // in Shanghai.
        let utc = at(chrono_tz::UTC, 2026, 9, 30, 16, 0, 0);
        assert!(c.flags(utc).holiday);
    }
}
