//! The built-in price table shipped with the binary (`prices/builtin.txt`) and the rule for
//! publishing it: which rows become `price.published` events, with which ids. The gateway never
//! looks prices up here while serving; it bills at the prices folded from the log, so a usage event
//! always carries the price applied (Invariant 4). No I/O here.

use std::collections::HashSet;

use schemas::{Envelope, EventBody, GLOBAL_TENANT, PricePublished};
use uuid::Uuid;

/// The table as shipped.
const BUILTIN: &str = include_str!("../prices/builtin.txt");

/// The `actor` of built-in price events; an admin's `prices set` carries a user name instead.
pub const BUILTIN_ACTOR: &str = "builtin";

/// Why the table text is not a price table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// A line that is neither a comment, the version, a section header nor a price row.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// No `version` line.
    #[error("the price table has no `version` line")]
    NoVersion,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinPrice {
    /// Preset name of the vendor whose list price this is.
    pub vendor: String,
    /// When the vendor's page was read for this row (`YYYY-MM-DD`).
    pub as_of: String,
    /// The event data to publish.
    pub price: PricePublished,
}

/// The parsed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinTable {
    /// Bumped whenever a value changes, so changed rows get new event ids.
    pub version: String,
    /// Every row, in file order.
    pub prices: Vec<BuiltinPrice>,
}

/// The table shipped with this binary.
pub fn builtin() -> Result<BuiltinTable, TableError> {
    parse(BUILTIN)
}

/// Parses table text (see the header of `prices/builtin.txt` for the format).
pub fn parse(text: &str) -> Result<BuiltinTable, TableError> {
    let mut version = None;
    let mut section: Option<(String, String, String)> = None;
    let mut prices = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let bad = |reason: &str| TableError::Line { line: i + 1, reason: reason.to_owned() };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(v) = line.strip_prefix("version ") {
            version = Some(v.trim().to_owned());
            continue;
        }
        if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let parts: Vec<&str> = head.split_whitespace().collect();
            let [vendor, currency, as_of, _source] = parts[..] else {
                return Err(bad("a section is `[vendor CURRENCY as-of source]`"));
            };
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(bad("the currency must be an ISO 4217 code such as USD or CNY"));
            }
            if as_of.len() != 10 || chrono::NaiveDate::parse_from_str(as_of, "%Y-%m-%d").is_err() {
                return Err(bad("the as-of date must be YYYY-MM-DD"));
            }
            section = Some((vendor.to_owned(), currency.to_owned(), as_of.to_owned()));
            continue;
        }
        let Some((vendor, currency, as_of)) = &section else { return Err(bad("a price row before any section")) };
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [model, input, cached, cache_write, output] = cols[..] else {
            return Err(bad("a row is `model input cached cache_write output`"));
        };
        let amount = |v: &str| schemas::parse_per_mtok(v).map_err(|e| bad(&e.to_string()));
        let optional = |v: &str| if v == "-" { Ok(None) } else { amount(v).map(Some) };
        prices.push(BuiltinPrice {
            vendor: vendor.clone(),
            as_of: as_of.clone(),
            price: PricePublished {
                model: model.to_owned(),
                channel_id: None,
                currency: currency.clone(),
                input_per_mtok_nanos: amount(input)?,
                output_per_mtok_nanos: amount(output)?,
                cached_input_per_mtok_nanos: optional(cached)?,
                cache_write_per_mtok_nanos: optional(cache_write)?,
            },
        });
    }
    Ok(BuiltinTable { version: version.ok_or(TableError::NoVersion)?, prices })
}

/// Namespace of built-in price event ids (UUIDv5 of the URL namespace and a fixed name).
fn namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://llm-router.invalid/builtin-prices")
}

impl BuiltinTable {
    /// The event id of `model`'s row in this table version. Deterministic, so two gateways that
    /// publish the same row append one event (the log deduplicates by id).
    pub fn event_id(&self, model: &str) -> Uuid {
        Uuid::new_v5(&namespace(), format!("{}\n{model}", self.version).as_bytes())
    }

    /// The rows to publish now. `seen` holds the ids of every `price.published` in the log;
    /// `latest_actor(model)` is `None` when the model has no price yet, else the actor of its
    /// latest price event. A row is published when its id was never seen and the model's latest
    /// price, if any, is a built-in one: an admin's price is never overwritten.
    pub fn pending<'a>(
        &'a self,
        seen: &HashSet<Uuid>,
        latest_actor: impl Fn(&str) -> Option<Option<String>>,
    ) -> Vec<&'a BuiltinPrice> {
        self.prices
            .iter()
            .filter(|p| !seen.contains(&self.event_id(&p.price.model)))
            .filter(|p| match latest_actor(&p.price.model) {
                None => true,
                Some(actor) => actor.as_deref() == Some(BUILTIN_ACTOR),
            })
            .collect()
    }

    /// The control event for one row, from `source` at `occurred_at_us`.
    pub fn envelope(&self, row: &BuiltinPrice, source: &str, occurred_at_us: i64) -> Envelope {
        let mut env =
            Envelope::new(GLOBAL_TENANT, source, occurred_at_us, EventBody::PricePublished(row.price.clone()));
        env.id = self.event_id(&row.price.model);
        env.actor = Some(BUILTIN_ACTOR.to_owned());
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_with_iso_currencies_and_one_row_per_model() -> Result<(), TableError> {
        let t = builtin()?;
        assert!(t.prices.len() >= 30, "{}", t.prices.len());
        let mut models = HashSet::new();
        for p in &t.prices {
            assert!(["USD", "CNY"].contains(&p.price.currency.as_str()), "{}: {}", p.price.model, p.price.currency);
            let native = ["anthropic", "gemini"].contains(&p.vendor.as_str());
            assert!(native || crate::presets::find(&p.vendor).is_some(), "unknown vendor {}", p.vendor);
            assert!(models.insert(p.price.model.clone()), "{} twice", p.price.model);
        }
        let chat = t.prices.iter().find(|p| p.price.model == "deepseek-chat").map(|p| &p.price);
        assert_eq!(chat.map(|p| (p.currency.as_str(), p.input_per_mtok_nanos)), Some(("CNY", 2_000_000_000)));
        assert_eq!(chat.and_then(|p| p.cached_input_per_mtok_nanos), Some(200_000_000));
        // Every vendor with a public list price has rows.
        for v in ["openai", "anthropic", "gemini", "deepseek", "mistral", "qwen", "moonshot", "zhipu", "ernie"] {
            assert!(t.prices.iter().any(|p| p.vendor == v), "no prices for {v}");
        }
        Ok(())
    }

    #[test]
    fn bad_tables_name_the_line() {
        let cases = [
            ("version 1\n[openai usd 2025-01-01 x]\n", 2),
            ("version 1\ngpt 1 - - 2\n", 2),
            ("version 1\n[openai USD 2025-01-01 x]\ngpt 1e3 - - 2\n", 3),
            ("version 1\n[openai USD 2025-01-01 x]\ngpt 1 2\n", 3),
        ];
        for (text, line) in cases {
            assert!(matches!(parse(text), Err(TableError::Line { line: l, .. }) if l == line), "{text}");
        }
        assert_eq!(parse("[openai USD 2025-01-01 x]\n"), Err(TableError::NoVersion));
    }

    #[test]
    fn ids_are_stable_per_version_and_admin_prices_are_never_overwritten() -> Result<(), TableError> {
        let t = parse("version 7\n[openai USD 2025-01-01 x]\na 1 - - 2\nb 1 - - 2\nc 1 - - 2\n")?;
        assert_eq!(t.event_id("a"), t.clone().event_id("a"));
        let next = BuiltinTable { version: "8".into(), ..t.clone() };
        assert_ne!(t.event_id("a"), next.event_id("a"));
        // a: never priced → published. b: an admin priced it → skipped. c: this row is already in
        // the log → skipped.
        let seen = HashSet::from([t.event_id("c")]);
        let latest = |m: &str| match m {
            "b" => Some(Some("alice".to_owned())),
            "c" => Some(Some(BUILTIN_ACTOR.to_owned())),
            _ => None,
        };
        let models: Vec<&str> = t.pending(&seen, latest).iter().map(|p| p.price.model.as_str()).collect();
        assert_eq!(models, ["a"]);
        // An older built-in price is replaced by the new version's row.
        let models: Vec<&str> = next.pending(&seen, latest).iter().map(|p| p.price.model.as_str()).collect();
        assert_eq!(models, ["a", "c"]);
        let env = t.envelope(&t.prices[0], "gw-1", 5);
        assert_eq!((env.id, env.actor.as_deref(), env.tenant.as_str()), (t.event_id("a"), Some("builtin"), "_global"));
        Ok(())
    }
}
