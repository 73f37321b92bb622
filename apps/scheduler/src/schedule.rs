//! Cron slots in the configured time zone: the next one to wait for, and the one missed while
//! the scheduler was down (caught up once on start, not once per missed night).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A slot as stored (RFC 3339, UTC, seconds).
pub fn slot_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The first slot after `now`.
pub fn next_slot(schedule: &cron::Schedule, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .after(&now.with_timezone(&tz))
        .next()
        .map(|t| t.with_timezone(&Utc))
}

/// The latest slot at or before `now` (looking back up to 400 days).
pub fn previous_slot(
    schedule: &cron::Schedule,
    tz: Tz,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut from = now - chrono::Duration::days(1);
    while from > now - chrono::Duration::days(400) {
        let last = schedule
            .after(&from.with_timezone(&tz))
            .take_while(|t| t.with_timezone(&Utc) <= now)
            .last();
        if let Some(t) = last {
            return Some(t.with_timezone(&Utc));
        }
        from -= chrono::Duration::days(31);
    }
    None
}

/// The slot to catch up on start: the latest one due, when the scheduler has served a slot
/// before and missed every one since. A new installation starts with the next slot.
pub fn catch_up(
    schedule: &cron::Schedule,
    tz: Tz,
    now: DateTime<Utc>,
    last_served: Option<&str>,
) -> Option<DateTime<Utc>> {
    let last: DateTime<Utc> = DateTime::parse_from_rfc3339(last_served?)
        .ok()?
        .with_timezone(&Utc);
    let due = previous_slot(schedule, tz, now)?;
    (due > last).then_some(due)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn nightly_at_two_in_london_follows_summer_time() {
        let s = cron::Schedule::from_str("0 0 2 * * *").unwrap();
        let tz: Tz = "Europe/London".parse().unwrap();
        // Summer: 02:00 BST is 01:00 UTC; winter: 02:00 GMT.
        assert_eq!(
            next_slot(&s, tz, at("2026-07-01T12:00:00Z")).unwrap(),
            at("2026-07-02T01:00:00Z")
        );
        assert_eq!(
            next_slot(&s, tz, at("2026-11-28T12:00:00Z")).unwrap(),
            at("2026-11-29T02:00:00Z")
        );
        assert_eq!(
            previous_slot(&s, tz, at("2026-11-28T12:00:00Z")).unwrap(),
            at("2026-11-28T02:00:00Z")
        );
    }

    #[test]
    fn a_scheduler_down_for_a_week_catches_up_once() {
        let s = cron::Schedule::from_str("0 0 2 * * *").unwrap();
        let tz = Tz::UTC;
        let now = at("2026-11-28T09:00:00Z");
        // Last served a week ago: one catch-up, for the latest missed slot only.
        assert_eq!(
            catch_up(&s, tz, now, Some("2026-11-21T02:00:00Z")),
            Some(at("2026-11-28T02:00:00Z"))
        );
        // Served this morning's slot already: nothing to catch up.
        assert_eq!(catch_up(&s, tz, now, Some("2026-11-28T02:00:00Z")), None);
        // Never ran: wait for the next slot.
        assert_eq!(catch_up(&s, tz, now, None), None);
        // A monthly schedule looks back far enough.
        let monthly = cron::Schedule::from_str("0 0 2 1 * *").unwrap();
        assert_eq!(
            previous_slot(&monthly, tz, now).unwrap(),
            at("2026-11-01T02:00:00Z")
        );
    }
}
