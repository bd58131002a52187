//! UTC calendar days from microsecond timestamps, without a clock or a time zone database, so
//! that day buckets depend on the event alone.

const US_PER_DAY: i64 = 86_400_000_000;

/// The UTC date (`YYYY-MM-DD`) of a Unix timestamp in microseconds.
pub fn utc_day(occurred_at_us: i64) -> String {
    let (y, m, d) = civil_from_days(occurred_at_us.div_euclid(US_PER_DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
