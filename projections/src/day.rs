//! UTC calendar days: the day bucket of an event (from its own timestamp, never a clock or a time
//! zone database, so that buckets depend on the event alone), and the `YYYY-MM-DD` dates that
//! report queries take, parsed strictly.

use chrono::{DateTime, NaiveDate};

/// The UTC date (`YYYY-MM-DD`) of a Unix timestamp in microseconds. Timestamps outside chrono's
/// range (±262,000 years) clamp to its ends rather than fail: a projection never errors on a day.
pub fn utc_day(occurred_at_us: i64) -> String {
    let at = DateTime::from_timestamp_micros(occurred_at_us).unwrap_or(if occurred_at_us < 0 {
        DateTime::<chrono::Utc>::MIN_UTC
    } else {
        DateTime::<chrono::Utc>::MAX_UTC
    });
    at.date_naive().format("%Y-%m-%d").to_string()
}

/// A calendar date given as exactly `YYYY-MM-DD` (a real date: `2026-02-30` and `2026-99-99` are
/// refused, and so are `2026-1-1` and trailing text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day(NaiveDate);

/// Why a text is not a [`Day`].
#[derive(Debug, thiserror::Error)]
#[error("must be a date such as 2026-11-01")]
pub struct DayError;

impl Day {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Result<Day, DayError> {
        // chrono alone accepts one-digit months and days; the fixed length keeps the text canonical,
        // so that it compares as a string with the ledger's day column.
        if s.len() != 10 {
            return Err(DayError);
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Day).map_err(|_| DayError)
    }

    /// The day of a Unix timestamp in microseconds (UTC).
    pub fn of_us(at_us: i64) -> Day {
        let at = DateTime::from_timestamp_micros(at_us).unwrap_or(DateTime::<chrono::Utc>::MIN_UTC);
        Day(at.date_naive())
    }

    /// The day `n` days earlier (saturating at chrono's range).
    pub fn minus_days(self, n: u64) -> Day {
        Day(self.0.checked_sub_days(chrono::Days::new(n)).unwrap_or(NaiveDate::MIN))
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US_PER_DAY: i64 = 86_400_000_000;

    #[test]
    fn days_follow_the_utc_calendar() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(-1), "1969-12-31");
        assert_eq!(utc_day(US_PER_DAY - 1), "1970-01-01");
        // 2024-02-29T23:59:59.999999Z and the next microsecond.
        assert_eq!(utc_day(1_709_251_199_999_999), "2024-02-29");
        assert_eq!(utc_day(1_709_251_200_000_000), "2024-03-01");
        assert_eq!(utc_day(1_798_761_600_000_000), "2027-01-01");
        assert_eq!(utc_day(951_782_400_000_000), "2000-02-29");
        assert!(!utc_day(i64::MAX).is_empty() && !utc_day(i64::MIN).is_empty());
    }

    #[test]
    fn only_real_dates_in_the_canonical_form_parse() {
        for good in ["2026-11-30", "2024-02-29", "1970-01-01"] {
            assert_eq!(Day::parse(good).map(|d| d.to_string()).ok().as_deref(), Some(good));
        }
        for bad in ["2026-99-99", "2026-02-30", "2025-02-29", "2026-1-01", "2026-01-1", "2026-01-01x", "20260101", ""] {
            assert!(Day::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn day_arithmetic_crosses_months_and_years() -> Result<(), DayError> {
        assert_eq!(Day::parse("2026-03-01")?.minus_days(1).to_string(), "2026-02-28");
        assert_eq!(Day::parse("2026-01-01")?.minus_days(29).to_string(), "2025-12-03");
        assert_eq!(Day::of_us(1_709_251_200_000_000).to_string(), "2024-03-01");
        Ok(())
    }
}
