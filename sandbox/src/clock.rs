//! Calendar days and UTC timestamps: the bank only needs "today", day
//! arithmetic for the seeded history, `YYYY-MM-DD` parsing and RFC 3339
//! formatting, all in UTC. The calendar itself is `bankbot-entities`'
//! (a pure crate), so the bank and the bot count days the same way.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bankbot_entities::calendar::Date;

/// A calendar day. Ordering is chronological and the `Display` form
/// (`YYYY-MM-DD`) sorts the same way as text, which the ledger relies on
/// when it compares booking dates in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Day(Date);

impl Day {
    pub(crate) fn today() -> Day {
        Day(Date::today_utc())
    }

    /// `n` days earlier (the same day at the calendar's lower bound).
    pub(crate) fn minus(self, n: i64) -> Day {
        Day(self.0.add_days(-n).unwrap_or(self.0))
    }

    pub(crate) fn parse(s: &str) -> Option<Day> {
        Date::parse_iso(s).ok().map(Day)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn rfc3339(unix: i64) -> String {
    let day = Date::from_days(unix.div_euclid(86_400))
        .map_or_else(|| "1970-01-01".to_owned(), |d| d.to_string());
    let secs = unix.rem_euclid(86_400);
    format!(
        "{day}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_and_refuse_impossible_dates() {
        for s in ["1970-01-01", "2000-02-29", "2024-03-13", "2099-12-31"] {
            assert_eq!(Day::parse(s).map(|d| d.to_string()).as_deref(), Some(s));
        }
        assert_eq!(
            Day::parse("1970-01-01"),
            Date::from_days(0).map(Day),
            "day 0 is the epoch"
        );
        let d = Day::parse("2024-03-13").expect("valid");
        assert_eq!(d.minus(28).to_string(), "2024-02-14");
        assert_eq!(d.minus(14).to_string(), "2024-02-28");
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-04-31",
            "2024-3-13",
            "2024/03/13",
            "",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad}");
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_710_322_200), "2024-03-13T09:30:00Z");
    }
}
