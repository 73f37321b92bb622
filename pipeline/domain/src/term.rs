//! Finished and running course presentations: a presentation is running while any of its
//! students has no outcome yet; its export stops at an as-of day, and it is scored at its
//! current week (the last week whose cutoff day 7k+6 is on or before that day).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DomainError;
use crate::features::AsOfWeek;

/// Whether a presentation's outcomes are all known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TermState {
    /// Some student has no outcome yet: the term is under way; scored, never trained on.
    Running,
    /// Every student has an outcome: history, trained and evaluated on.
    Finished,
}

impl TermState {
    /// Both states.
    pub const ALL: [TermState; 2] = [TermState::Running, TermState::Finished];

    /// The word stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            TermState::Running => "running",
            TermState::Finished => "finished",
        }
    }
}

impl fmt::Display for TermState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TermState {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TermState::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| DomainError::invalid("term state", s, "expected running or finished"))
    }
}

/// Where a running presentation's as-of day came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AsOfSource {
    /// Given by the institution: `--as-of-day`, `--as-of DATE`, or configuration.
    Configured,
    /// The latest day with any recorded activity (a click or a submission) in the presentation.
    LatestActivity,
    /// No activity recorded yet: the latest registration day (the term has not started).
    LatestRegistration,
    /// A finished presentation: every day of it is history.
    Finished,
}

impl AsOfSource {
    /// Words for reports.
    pub fn describe(self) -> &'static str {
        match self {
            AsOfSource::Configured => "given by the institution",
            AsOfSource::LatestActivity => "the latest day with recorded activity",
            AsOfSource::LatestRegistration => "the latest registration (no activity recorded yet)",
            AsOfSource::Finished => "the presentation has ended",
        }
    }
}

/// One presentation of an export: finished or running, and as of which day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresentationTerm {
    /// `MODULE-PRESENTATION`.
    pub presentation: String,
    /// Running or finished.
    pub state: TermState,
    /// Length in days (days `0..length_days`).
    pub length_days: u16,
    /// Day 0 as a calendar date (`YYYY-MM-DD`) when the source knows it (Moodle, xAPI); an
    /// OULAD-schema export has day numbers only.
    #[serde(default)]
    pub start_date: Option<String>,
    /// The export's as-of day for this presentation: running, the day its records stop;
    /// finished, its last day.
    pub as_of_day: i32,
    /// Where the as-of day came from.
    pub as_of_source: AsOfSource,
    /// Running: the last complete week (cutoff day 7k+6 on or before the as-of day), `None`
    /// before day 6; finished: its last week.
    pub current_week: Option<AsOfWeek>,
    /// Students in studentInfo (accepted rows).
    pub students: u64,
    /// Of those, students with an outcome.
    pub outcomes_known: u64,
}

impl PresentationTerm {
    /// A finished presentation: every student has an outcome; its as-of day is its last day and
    /// its current week its last week.
    pub fn finished(presentation: String, length_days: u16, students: u64) -> Self {
        Self {
            presentation,
            state: TermState::Finished,
            length_days,
            start_date: None,
            as_of_day: i32::from(length_days) - 1,
            as_of_source: AsOfSource::Finished,
            current_week: Some(AsOfWeek::last_of(length_days)),
            students,
            outcomes_known: students,
        }
    }

    /// A running presentation as of `as_of_day`: its current week is the last one complete on
    /// that day, never past its last week (none before day 6).
    pub fn running(
        presentation: String,
        length_days: u16,
        as_of_day: i32,
        as_of_source: AsOfSource,
        students: u64,
        outcomes_known: u64,
    ) -> Self {
        Self {
            presentation,
            state: TermState::Running,
            length_days,
            start_date: None,
            as_of_day,
            as_of_source,
            current_week: AsOfWeek::completed_by(as_of_day)
                .map(|w| w.min(AsOfWeek::last_of(length_days))),
            students,
            outcomes_known,
        }
    }

    /// Whether the term is under way.
    pub fn is_running(&self) -> bool {
        self.state == TermState::Running
    }

    /// Weeks in the presentation (week 0 to its last week).
    pub fn weeks(&self) -> u16 {
        AsOfWeek::last_of(self.length_days).0 + 1
    }

    /// The as-of day as a calendar date, when the start date is known.
    pub fn as_of_date(&self) -> Option<String> {
        let start = self.start_date.as_deref()?;
        add_days(start, self.as_of_day)
    }

    /// "week 6 of 20, as of day 47" (or "as of 5 Nov 2024" when the calendar is known).
    pub fn describe(&self) -> String {
        let when = match self.as_of_date().as_deref().and_then(date_in_words) {
            Some(d) => format!("as of {d}"),
            None => format!("as of day {}", self.as_of_day),
        };
        match (self.state, self.current_week) {
            (TermState::Running, Some(w)) => {
                format!("running, {when}, week {} of {}", w.0, self.weeks())
            }
            (TermState::Running, None) => {
                format!("running, {when}; week 0 is complete on day 6")
            }
            (TermState::Finished, _) => format!("finished ({} weeks)", self.weeks()),
        }
    }
}

impl AsOfWeek {
    /// The last week complete on `day` (its cutoff 7k+6 on or before it); none before day 6.
    pub fn completed_by(day: i32) -> Option<AsOfWeek> {
        (day >= 6).then(|| AsOfWeek(u16::try_from((day - 6) / 7).unwrap_or(u16::MAX)))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn parse_date(s: &str) -> Option<(i64, u32, u32)> {
    let mut parts = s.splitn(3, '-');
    let y = parts.next()?.parse().ok()?;
    let m = parts.next()?.parse().ok()?;
    let d = parts.next()?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y, m, d))
}

/// `date` (`YYYY-MM-DD`) plus `days`, as `YYYY-MM-DD`.
pub fn add_days(date: &str, days: i32) -> Option<String> {
    let (y, m, d) = parse_date(date)?;
    let (y, m, d) = civil_from_days(days_from_civil(y, m, d) + i64::from(days));
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

/// `2024-11-05` as "5 Nov 2024".
pub fn date_in_words(date: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d) = parse_date(date)?;
    Some(format!("{d} {} {y}", MONTHS[(m - 1) as usize]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_week_is_the_last_one_complete_on_the_as_of_day() {
        assert_eq!(AsOfWeek::completed_by(5), None);
        assert_eq!(AsOfWeek::completed_by(-20), None);
        assert_eq!(AsOfWeek::completed_by(6), Some(AsOfWeek(0)));
        assert_eq!(AsOfWeek::completed_by(12), Some(AsOfWeek(0)));
        assert_eq!(AsOfWeek::completed_by(13), Some(AsOfWeek(1)));
        assert_eq!(AsOfWeek::completed_by(76), Some(AsOfWeek(10)));
        for day in 6..400 {
            let w = AsOfWeek::completed_by(day).unwrap();
            assert!(w.cutoff_day() <= day && AsOfWeek(w.0 + 1).cutoff_day() > day);
        }
    }

    #[test]
    fn dates_count_days_and_read_in_words() {
        assert_eq!(add_days("2024-10-01", 35).as_deref(), Some("2024-11-05"));
        assert_eq!(add_days("2024-03-01", -1).as_deref(), Some("2024-02-29"));
        assert_eq!(date_in_words("2024-11-05").as_deref(), Some("5 Nov 2024"));
        assert_eq!(add_days("2024-13-01", 1), None);
    }

    #[test]
    fn a_running_term_says_which_week_and_day() {
        let mut t = PresentationTerm {
            presentation: "HIS101-2024J".into(),
            state: TermState::Running,
            length_days: 140,
            start_date: Some("2024-10-01".into()),
            as_of_day: 47,
            as_of_source: AsOfSource::Configured,
            current_week: AsOfWeek::completed_by(47),
            students: 30,
            outcomes_known: 0,
        };
        assert_eq!(t.describe(), "running, as of 17 Nov 2024, week 5 of 20");
        t.start_date = None;
        assert_eq!(t.describe(), "running, as of day 47, week 5 of 20");
        assert_eq!("running".parse::<TermState>().unwrap(), TermState::Running);
        assert!("ongoing".parse::<TermState>().is_err());
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""state":"running""#), "{json}");
        assert_eq!(serde_json::from_str::<PresentationTerm>(&json).unwrap(), t);
    }
}
