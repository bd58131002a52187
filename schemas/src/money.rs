//! Money is integer nano-units of a currency. Prices are nanos per one million tokens.
//! Multiply in i128, round once per line item, half-up. No floats anywhere.

/// Why a decimal price was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    /// Not a plain non-negative decimal with at most nine fractional digits.
    #[error("invalid price {0:?}: expected a non-negative decimal such as 2.50 (at most 9 decimals)")]
    Invalid(String),
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;
const TOKENS_PER_PRICE_UNIT: i128 = 1_000_000;

/// Parses a decimal amount per one million tokens ("2.50") into nanos, exactly.
pub fn parse_per_mtok(s: &str) -> Result<i64, MoneyError> {
    let bad = || MoneyError::Invalid(s.to_owned());
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if frac.len() > 9 || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let mut frac_nanos: i128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| bad())? };
    for _ in frac.len()..9 {
        frac_nanos *= 10;
    }
    let total = whole.checked_mul(NANOS_PER_UNIT).and_then(|w| w.checked_add(frac_nanos)).ok_or_else(bad)?;
    i64::try_from(total).map_err(|_| bad())
}

/// The cost of `tokens` at `per_mtok_nanos` per million tokens, rounded half-up to a whole nano.
pub fn cost_nanos(tokens: u64, per_mtok_nanos: i64) -> i64 {
    let product = i128::from(tokens) * i128::from(per_mtok_nanos);
    let rounded = (product + TOKENS_PER_PRICE_UNIT / 2).div_euclid(TOKENS_PER_PRICE_UNIT);
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

/// Renders nanos as a decimal with nine fractional digits ("0.000012500"), for reports.
pub fn format_nanos(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = i128::from(nanos).abs();
    format!("{sign}{}.{:09}", abs / NANOS_PER_UNIT, abs % NANOS_PER_UNIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_prices_parse_exactly() {
        assert_eq!(parse_per_mtok("2.50"), Ok(2_500_000_000));
        assert_eq!(parse_per_mtok("0.075"), Ok(75_000_000));
        assert_eq!(parse_per_mtok("10"), Ok(10_000_000_000));
        assert_eq!(parse_per_mtok(".5"), Ok(500_000_000));
        assert_eq!(parse_per_mtok("0.000000001"), Ok(1));
        for bad in ["", ".", "-1", "1e3", "1.0000000001", "abc", "99999999999999999999"] {
            assert!(parse_per_mtok(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cost_rounds_half_up_once_per_line() {
        // 1 token at $2.50/M = 2500 nanos exactly.
        assert_eq!(cost_nanos(1, 2_500_000_000), 2_500);
        // 1 token at 0.0000015 nanos... 1 token at 1_500_000 nanos/M = 1.5 nanos -> 2.
        assert_eq!(cost_nanos(1, 1_500_000), 2);
        assert_eq!(cost_nanos(1, 1_499_999), 1);
        assert_eq!(cost_nanos(0, 2_500_000_000), 0);
        assert_eq!(cost_nanos(1_000_000, 2_500_000_000), 2_500_000_000);
    }

    #[test]
    fn nanos_render_as_fixed_decimals() {
        assert_eq!(format_nanos(2_500), "0.000002500");
        assert_eq!(format_nanos(12_000_000_001), "12.000000001");
        assert_eq!(format_nanos(-5), "-0.000000005");
    }
}
