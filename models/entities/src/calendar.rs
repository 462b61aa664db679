//! Proleptic Gregorian dates as plain integers: enough calendar for
//! resolving "last month" or "the 29th" without a date-time dependency.
//! Conversions follow the days-from-civil algorithm (day 0 = 1970-01-01).

use std::fmt;

/// A calendar date. Always valid: constructors check the day against the
/// month's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

/// Monday = 0 … Sunday = 6 (ISO order).
pub type Weekday = u8;

/// Why a date string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("`{0}` is not a date in the form YYYY-MM-DD")]
    Format(String),
    #[error("`{0}` is not a day of the calendar")]
    OutOfRange(String),
}

pub fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl Date {
    /// The date, if the day exists (years 1..=9999).
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        ((1..=9999).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month))
        .then_some(Date { year, month, day })
    }

    pub fn year(self) -> i32 {
        self.year
    }
    pub fn month(self) -> u8 {
        self.month
    }
    pub fn day(self) -> u8 {
        self.day
    }

    /// Days since 1970-01-01 (negative before).
    pub fn to_days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01, if it lies in years 1..=9999.
    pub fn from_days(days: i64) -> Option<Date> {
        let z = days.checked_add(719_468)?;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Date::new(
            i32::try_from(year).ok()?,
            u8::try_from(month).ok()?,
            u8::try_from(day).ok()?,
        )
    }

    /// Today's date in UTC, from the system clock.
    pub fn today_utc() -> Date {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let days = i64::try_from(secs / 86_400).unwrap_or(0);
        Date::from_days(days).unwrap_or(Date {
            year: 1970,
            month: 1,
            day: 1,
        })
    }

    pub fn add_days(self, n: i64) -> Option<Date> {
        Date::from_days(self.to_days().checked_add(n)?)
    }

    /// Monday = 0 … Sunday = 6.
    pub fn weekday(self) -> Weekday {
        // 1970-01-01 was a Thursday (3).
        u8::try_from((self.to_days() + 3).rem_euclid(7)).unwrap_or(0)
    }

    /// The Monday of this date's week.
    pub fn week_start(self) -> Option<Date> {
        self.add_days(-i64::from(self.weekday()))
    }

    /// The same day `n` months later (or earlier), clamped to the month's
    /// last day: Jan 31 + 1 month = Feb 28/29.
    pub fn add_months(self, n: i32) -> Option<Date> {
        let total = self.year.checked_mul(12)? + i32::from(self.month) - 1 + n;
        let year = total.div_euclid(12);
        let month = u8::try_from(total.rem_euclid(12) + 1).ok()?;
        let day = self.day.min(days_in_month(year, month));
        Date::new(year, month, day)
    }

    pub fn month_start(self) -> Date {
        Date { day: 1, ..self }
    }

    pub fn month_end(self) -> Date {
        Date {
            day: days_in_month(self.year, self.month),
            ..self
        }
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse_iso(s: &str) -> Result<Date, DateError> {
        let b = s.as_bytes();
        let shape = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape {
            return Err(DateError::Format(s.to_owned()));
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<i32>().unwrap_or(0);
        let (y, m, d) = (num(0..4), num(5..7), num(8..10));
        Date::new(
            y,
            u8::try_from(m).unwrap_or(0),
            u8::try_from(d).unwrap_or(0),
        )
        .ok_or_else(|| DateError::OutOfRange(s.to_owned()))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl std::str::FromStr for Date {
    type Err = DateError;
    fn from_str(s: &str) -> Result<Date, DateError> {
        Date::parse_iso(s)
    }
}

impl serde::Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = String::deserialize(d)?;
        Date::parse_iso(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        Date::parse_iso(s).expect("test date is valid")
    }

    #[test]
    fn day_numbers_round_trip_across_centuries() {
        assert_eq!(d("1970-01-01").to_days(), 0);
        assert_eq!(d("2000-03-01").to_days(), 11_017);
        for n in (-719_000..2_900_000).step_by(997) {
            let date = Date::from_days(n).expect("in range");
            assert_eq!(date.to_days(), n, "{date}");
        }
    }

    #[test]
    fn weekdays_and_months() {
        assert_eq!(d("2026-11-22").weekday(), 6); // a Sunday
        assert_eq!(d("2026-11-22").week_start(), Some(d("2026-11-16")));
        assert_eq!(d("2024-01-31").add_months(1), Some(d("2024-02-29")));
        assert_eq!(d("2023-01-31").add_months(1), Some(d("2023-02-28")));
        assert_eq!(d("2026-01-15").add_months(-1), Some(d("2025-12-15")));
        assert_eq!(d("2026-02-10").month_end(), d("2026-02-28"));
    }

    #[test]
    fn iso_parsing_rejects_impossible_days() {
        assert!(Date::parse_iso("2023-02-29").is_err());
        assert!(Date::parse_iso("2024-02-29").is_ok());
        assert!(Date::parse_iso("2024-2-29").is_err());
        assert!(Date::parse_iso("2024-13-01").is_err());
    }
}
