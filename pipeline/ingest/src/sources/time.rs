//! The times LMS exports write, as days of a course: Moodle's log report in its common site
//! formats (`11/05/18, 09:44`, `11 May 2018, 09:44`, `Friday, 11 May 2018, 9:44 AM`, `11 May,
//! 09:44` with no year, ISO `2018-05-11 09:44:05`) and xAPI's RFC 3339 timestamps.

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

/// How a numeric date `a/b/y` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DateOrder {
    /// Day first: `11/05/18` is 11 May 2018 (most sites outside the US).
    Dmy,
    /// Month first: `05/11/18` is 11 May 2018.
    Mdy,
}

/// A time as read, before a numeric date's order is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The date is certain (a month name, ISO order, or a configured order).
    Date(NaiveDate),
    /// Numeric `a/b/y`: which of a and b is the day depends on the site.
    Numeric {
        /// First number.
        a: u32,
        /// Second number.
        b: u32,
        /// Four-digit year.
        year: i32,
    },
    /// A month name with no year (`11 May, 09:44`): the year comes from the course.
    NoYear {
        /// Day of the month.
        day: u32,
        /// Month, 1 to 12.
        month: u32,
    },
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// A month's English name or an abbreviation of at least three letters (`Sep`, `Sept.`).
fn month_of(word: &str) -> Option<u32> {
    let w = word.trim_end_matches('.').to_ascii_lowercase();
    if w.len() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|m| m.starts_with(&w))
        .map(|i| i as u32 + 1)
}

fn valid_time(t: &str) -> bool {
    let t = t.trim();
    let (clock, meridian) = match t.rsplit_once(' ') {
        Some((c, m)) if m.eq_ignore_ascii_case("am") || m.eq_ignore_ascii_case("pm") => (c, true),
        _ => (t, false),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return false;
    }
    let nums: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
    let Some(n) = nums else { return false };
    let hour_ok = if meridian {
        (1..=12).contains(&n[0])
    } else {
        n[0] < 24
    };
    hour_ok && n[1] < 60 && n.get(2).is_none_or(|s| *s < 61)
}

/// Reads one Moodle log time; `None` when it is in no known format.
pub fn parse_moodle_time(text: &str) -> Option<Parsed> {
    let t = text.trim();
    // ISO: 2018-05-11 09:44[:05] or 2018-05-11T09:44:05
    if let Ok(dt) = NaiveDateTime::parse_from_str(&t.replace('T', " "), "%Y-%m-%d %H:%M:%S") {
        return Some(Parsed::Date(dt.date()));
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M") {
        return Some(Parsed::Date(dt.date()));
    }
    // Everything else is "<date>, <time>", the date maybe after a weekday: "Friday, 11 May 2018, 9:44 AM".
    let (date, time) = t.rsplit_once(',')?;
    if !valid_time(time) {
        return None;
    }
    let date = match date.split_once(',') {
        Some((weekday, rest)) if weekday.trim().chars().all(|c| c.is_ascii_alphabetic()) => rest,
        _ => date,
    }
    .trim();
    if date.contains('/') {
        let parts: Vec<&str> = date.split('/').collect();
        if parts.len() != 3 {
            return None;
        }
        let a: u32 = parts[0].parse().ok()?;
        let b: u32 = parts[1].parse().ok()?;
        let y: i32 = parts[2].parse().ok()?;
        let year = match parts[2].len() {
            2 => 2000 + y,
            4 => y,
            _ => return None,
        };
        // Neither reading is a date: not a time at all. Which reading applies is decided for the
        // whole file (decide_order).
        if NaiveDate::from_ymd_opt(year, b, a).is_none()
            && NaiveDate::from_ymd_opt(year, a, b).is_none()
        {
            return None;
        }
        return Some(Parsed::Numeric { a, b, year });
    }
    let words: Vec<&str> = date.split_whitespace().collect();
    let (day, month, year) = match words.as_slice() {
        [d, m] => (d, month_of(m)?, None),
        [d, m, y] => (d, month_of(m)?, Some(y.parse::<i32>().ok()?)),
        _ => return None,
    };
    let day: u32 = day.parse().ok()?;
    match year {
        Some(y) => NaiveDate::from_ymd_opt(y, month, day).map(Parsed::Date),
        // 29 Feb is checked once the year is known.
        None => (1..=31)
            .contains(&day)
            .then_some(Parsed::NoYear { day, month }),
    }
}

/// Resolves a parsed time to a date: a numeric date by `order`, a date without a year by the
/// course: the year that puts it on or after 90 days before `start`.
pub fn resolve(p: Parsed, order: Option<DateOrder>, start: NaiveDate) -> Result<NaiveDate, String> {
    match p {
        Parsed::Date(d) => Ok(d),
        Parsed::Numeric { a, b, year } => {
            let order = order.ok_or_else(|| {
                format!(
                    "{a:02}/{b:02} could be day/month or month/day: set date_order = \"dmy\" or \"mdy\" in the source configuration"
                )
            })?;
            let (d, m) = match order {
                DateOrder::Dmy => (a, b),
                DateOrder::Mdy => (b, a),
            };
            NaiveDate::from_ymd_opt(year, m, d)
                .ok_or_else(|| format!("{a:02}/{b:02}/{year} is not a date in {order:?} order"))
        }
        Parsed::NoYear { day, month } => {
            let earliest = start - chrono::Duration::days(90);
            for year in [earliest.year(), earliest.year() + 1] {
                if let Some(d) = NaiveDate::from_ymd_opt(year, month, day)
                    && d >= earliest
                {
                    return Ok(d);
                }
            }
            Err(format!(
                "{day} {} is not a date near the course start {start}",
                MONTHS[month as usize - 1]
            ))
        }
    }
}

/// The order a file's numeric dates must be read in: the configured one, else the one its own
/// values show (a first number above 12 can only be a day, a second one only a day in month-first
/// order); an error naming `date_order` when the file's dates read both ways, or contradict each
/// other. `Ok(None)` when the file has no numeric dates.
pub fn decide_order(
    parsed: &[Parsed],
    configured: Option<DateOrder>,
    file: &str,
) -> Result<Option<DateOrder>, String> {
    if configured.is_some() {
        return Ok(configured);
    }
    let numeric: Vec<(u32, u32)> = parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Numeric { a, b, .. } => Some((*a, *b)),
            _ => None,
        })
        .collect();
    if numeric.is_empty() {
        return Ok(None);
    }
    let day_first = numeric.iter().any(|(a, _)| *a > 12);
    let month_first = numeric.iter().any(|(_, b)| *b > 12);
    match (day_first, month_first) {
        (true, false) => Ok(Some(DateOrder::Dmy)),
        (false, true) => Ok(Some(DateOrder::Mdy)),
        (true, true) => Err(format!(
            "{file}: its numeric dates contradict each other (some only read day first, some only month first); set date_order = \"dmy\" or \"mdy\" in the source configuration"
        )),
        (false, false) => Err(format!(
            "{file}: its times are numeric dates like 11/05/18 that read both as day/month and month/day; set date_order = \"dmy\" (11 May) or \"mdy\" (5 November) in the source configuration"
        )),
    }
}

/// Reads an xAPI timestamp (RFC 3339 / ISO 8601 with an offset) as its UTC date.
pub fn parse_xapi_timestamp(text: &str) -> Option<NaiveDate> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.naive_utc().date())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn every_common_moodle_format_reads() {
        let start = d(2018, 2, 1);
        for (text, order, expected) in [
            ("11/05/18, 09:44", Some(DateOrder::Dmy), d(2018, 5, 11)),
            ("05/11/18, 09:44", Some(DateOrder::Mdy), d(2018, 5, 11)),
            ("25/05/18, 09:44", Some(DateOrder::Dmy), d(2018, 5, 25)),
            ("05/25/2018, 21:07", Some(DateOrder::Mdy), d(2018, 5, 25)),
            ("11 May 2018, 09:44", None, d(2018, 5, 11)),
            ("Friday, 11 May 2018, 9:44 AM", None, d(2018, 5, 11)),
            ("Fri, 11 May 2018, 12:01 PM", None, d(2018, 5, 11)),
            ("11 May, 09:44", None, d(2018, 5, 11)),
            ("2018-05-11 09:44:05", None, d(2018, 5, 11)),
            ("2018-05-11T09:44:05", None, d(2018, 5, 11)),
            ("7 September 2018, 23:59", None, d(2018, 9, 7)),
        ] {
            let p = parse_moodle_time(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(resolve(p, order, start).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn a_date_without_a_year_takes_the_course_year_across_new_year() {
        let start = d(2018, 10, 1);
        let p = parse_moodle_time("15 Jan, 10:00").unwrap();
        assert_eq!(resolve(p, None, start).unwrap(), d(2019, 1, 15));
        let p = parse_moodle_time("20 Sep, 10:00").unwrap();
        assert_eq!(resolve(p, None, start).unwrap(), d(2018, 9, 20));
    }

    #[test]
    fn ambiguous_numeric_dates_name_the_option_that_resolves_them() {
        let p = parse_moodle_time("11/05/18, 09:44").unwrap();
        assert!(matches!(p, Parsed::Numeric { .. }));
        let e = resolve(p, None, d(2018, 1, 1)).unwrap_err();
        assert!(e.contains("date_order"), "{e}");
        let e = decide_order(&[p], None, "log.csv").unwrap_err();
        assert!(
            e.contains("log.csv") && e.contains("date_order = \"dmy\""),
            "{e}"
        );
        assert_eq!(
            decide_order(&[p], Some(DateOrder::Mdy), "log.csv").unwrap(),
            Some(DateOrder::Mdy)
        );
        // The file's own unambiguous dates decide.
        let day = parse_moodle_time("25/05/18, 09:44").unwrap();
        let month = parse_moodle_time("05/25/18, 09:44").unwrap();
        assert_eq!(
            decide_order(&[p, day], None, "f").unwrap(),
            Some(DateOrder::Dmy)
        );
        assert_eq!(
            decide_order(&[p, month], None, "f").unwrap(),
            Some(DateOrder::Mdy)
        );
        assert!(
            decide_order(&[day, month], None, "f")
                .unwrap_err()
                .contains("contradict")
        );
        let named = parse_moodle_time("11 May 2018, 09:44").unwrap();
        assert_eq!(decide_order(&[named], None, "f").unwrap(), None);
    }

    #[test]
    fn what_is_not_a_time_is_refused() {
        for text in [
            "",
            "yesterday",
            "32/13/18, 09:44",
            "11/05/18",
            "11 May 2018, 25:00",
            "11 Mayo 2018, 09:44",
            "1/2/3/4, 09:44",
            "11 May 2018, 9:44 XM",
        ] {
            assert!(parse_moodle_time(text).is_none(), "{text:?}");
        }
    }

    #[test]
    fn xapi_timestamps_are_read_in_utc() {
        assert_eq!(
            parse_xapi_timestamp("2024-10-01T23:30:00-02:00"),
            Some(d(2024, 10, 2))
        );
        assert_eq!(
            parse_xapi_timestamp("2024-10-01T08:00:00Z"),
            Some(d(2024, 10, 1))
        );
        assert_eq!(parse_xapi_timestamp("01/10/2024"), None);
    }
}
