//! Account balances, where a vendor exposes one: read with a channel's key by a health probe,
//! never on the hot path. Each vendor's documented response is parsed into nanos of a currency;
//! OpenAI, Anthropic and Gemini expose no balance to an API key ([`Support::NotExposed`]), and
//! their spend is read from our own ledger instead.
//!
//! | Provider     | Endpoint (from the base URL's origin)      | Reads                                  |
//! |--------------|--------------------------------------------|----------------------------------------|
//! | `deepseek`   | `GET /user/balance`                        | `balance_infos[].total_balance` (first currency) |
//! | `moonshot`   | `GET /v1/users/me/balance`                 | `data.available_balance` (CNY on `.cn`, USD on `.ai`) |
//! | `openrouter` | `GET /api/v1/credits`, `GET /api/v1/key`   | `total_credits - total_usage`, capped by the key's `limit_remaining` (USD) |
//! | `siliconflow`| `GET /v1/user/info`                        | `data.totalBalance` (CNY on `.cn`, USD elsewhere) |

use std::time::Duration;

use schemas::Balance;
use serde_json::Value;

use crate::{AttemptError, Channel, FailureClass, Provider, dispatch, openai};

/// Most of a balance answer we read: they are a few hundred bytes.
pub const MAX_BALANCE_BYTES: usize = 64 * 1024;

/// Whether, and how, a channel's provider tells its balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// A documented balance endpoint: the paths read, from the base URL's origin.
    Reads(&'static [&'static str]),
    /// The vendor has no balance endpoint an API key may call.
    NotExposed,
}

/// What `provider` offers.
pub fn support(provider: &str) -> Support {
    match provider {
        "deepseek" => Support::Reads(&["/user/balance"]),
        "moonshot" => Support::Reads(&["/v1/users/me/balance"]),
        "openrouter" => Support::Reads(&["/api/v1/credits", "/api/v1/key"]),
        "siliconflow" => Support::Reads(&["/v1/user/info"]),
        _ => Support::NotExposed,
    }
}

/// Reads the balance of `channel`'s key: `Ok(None)` when the vendor exposes none. Each answer's
/// headers must arrive by `deadline`, and each piece of its body within `idle`; a non-2xx is
/// classified as a call's would be, and a 2xx that is not the documented shape is
/// [`FailureClass::InvalidResponse`].
pub async fn read(
    http: &reqwest::Client,
    channel: &Channel,
    deadline: tokio::time::Instant,
    idle: Duration,
) -> Result<Option<Balance>, AttemptError> {
    let Support::Reads(paths) = support(&channel.provider) else { return Ok(None) };
    if Provider::of(&channel.provider) != Provider::OpenAi {
        return Ok(None);
    }
    let origin = origin(&channel.base_url).ok_or_else(|| AttemptError::new(FailureClass::ChannelMisconfigured))?;
    let mut bodies = Vec::with_capacity(paths.len());
    for path in paths {
        let req = openai::authorize(http.get(format!("{origin}{path}")), channel)?;
        let mut resp = dispatch(channel, req, deadline).await?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            return Err(openai::error::from_response(channel, resp, idle).await);
        }
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout(idle, resp.chunk()).await {
                Err(_) => return Err(AttemptError::status(FailureClass::Timeout(crate::TimeoutPhase::Idle), status)),
                Ok(Err(_)) => return Err(AttemptError::status(FailureClass::ConnectionFailed, status)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) if body.len() + c.len() > MAX_BALANCE_BYTES => {
                    return Err(AttemptError::status(FailureClass::InvalidResponse, status));
                }
                Ok(Ok(Some(c))) => body.extend_from_slice(&c),
            }
        }
        bodies.push(body);
    }
    let parsed = match (channel.provider.as_str(), bodies.as_slice()) {
        ("deepseek", [b]) => deepseek(b),
        ("moonshot", [b]) => moonshot(b, &origin),
        ("openrouter", [credits, key]) => openrouter(credits, Some(key)),
        ("siliconflow", [b]) => siliconflow(b, &origin),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| AttemptError::new(FailureClass::InvalidResponse))
}

/// `scheme://host[:port]` of a base URL.
fn origin(base_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(base_url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// Whether the origin's host ends in `.cn` (the vendors' mainland platforms bill in CNY).
fn is_cn(origin: &str) -> bool {
    reqwest::Url::parse(origin).ok().and_then(|u| u.host_str().map(|h| h.ends_with(".cn"))).unwrap_or(false)
}

/// A decimal amount (a JSON string `"110.00"` or number `49.58894`) in nanos; digits past the
/// ninth decimal are dropped. `None` for anything else (exponents, text, overflow).
pub fn decimal_nanos(v: &Value) -> Option<i64> {
    let text = match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || whole.len() > 12 {
        return None;
    }
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos = whole.parse::<i64>().ok()?.checked_mul(1_000_000_000)?.checked_add(frac.parse::<i64>().ok()?)?;
    Some(if negative { -nanos } else { nanos })
}

/// DeepSeek `GET /user/balance`:
/// `{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00",
/// "granted_balance":"10.00","topped_up_balance":"100.00"}]}`. The first currency listed.
pub fn deepseek(body: &[u8]) -> Option<Balance> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let info = v.get("balance_infos")?.as_array()?.first()?;
    let currency = info.get("currency")?.as_str()?;
    Some(Balance { nanos: decimal_nanos(info.get("total_balance")?)?, currency: currency_code(currency)? })
}

/// Moonshot `GET /v1/users/me/balance`: `{"code":0,"data":{"available_balance":49.58894,
/// "voucher_balance":46.58893,"cash_balance":3.00001},"scode":"0x0","status":true}`. The
/// platform at `api.moonshot.cn` bills in CNY, `api.moonshot.ai` in USD.
pub fn moonshot(body: &[u8], origin: &str) -> Option<Balance> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let nanos = decimal_nanos(v.get("data")?.get("available_balance")?)?;
    Some(Balance { nanos, currency: if is_cn(origin) { "CNY" } else { "USD" }.to_owned() })
}

/// OpenRouter `GET /api/v1/credits`: `{"data":{"total_credits":100.5,"total_usage":25.75}}`
/// (the account's credits left), and `GET /api/v1/key`: `{"data":{"label":"…","limit":50,
/// "usage":12.5,"limit_remaining":37.5,"is_free_tier":false}}` (`limit` and `limit_remaining`
/// are `null` for a key without a limit). The balance is what this key may still spend: the
/// account's credits left, capped by the key's remaining limit. USD.
pub fn openrouter(credits: &[u8], key: Option<&[u8]>) -> Option<Balance> {
    let v: Value = serde_json::from_slice(credits).ok()?;
    let data = v.get("data")?;
    let left = decimal_nanos(data.get("total_credits")?)?.checked_sub(decimal_nanos(data.get("total_usage")?)?)?;
    let key_left = match key {
        Some(k) => {
            let k: Value = serde_json::from_slice(k).ok()?;
            match k.get("data")?.get("limit_remaining") {
                None | Some(Value::Null) => None,
                Some(r) => Some(decimal_nanos(r)?),
            }
        }
        None => None,
    };
    let nanos = key_left.map_or(left, |k| k.min(left));
    Some(Balance { nanos, currency: "USD".to_owned() })
}

/// SiliconFlow `GET /v1/user/info`: `{"code":20000,"message":"OK","status":true,"data":{"id":"…",
/// "name":"…","balance":"0.88","status":"normal","chargeBalance":"88.00","totalBalance":"88.88"}}`.
/// `totalBalance` is the gift and the charged balance together; CNY on `api.siliconflow.cn`,
/// USD on the international platform.
pub fn siliconflow(body: &[u8], origin: &str) -> Option<Balance> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let nanos = decimal_nanos(v.get("data")?.get("totalBalance")?)?;
    Some(Balance { nanos, currency: if is_cn(origin) { "CNY" } else { "USD" }.to_owned() })
}

/// A three-letter currency code, upper-cased; `None` for anything else (vendor text stays out).
fn currency_code(s: &str) -> Option<String> {
    (s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic())).then(|| s.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEEPSEEK: &[u8] = br#"{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00","granted_balance":"10.00","topped_up_balance":"100.00"}]}"#;
    const MOONSHOT: &[u8] = br#"{"code":0,"data":{"available_balance":49.58894,"voucher_balance":46.58893,"cash_balance":3.00001},"scode":"0x0","status":true}"#;
    const OPENROUTER_CREDITS: &[u8] = br#"{"data":{"total_credits":100.5,"total_usage":25.75}}"#;
    const OPENROUTER_KEY: &[u8] = br#"{"data":{"label":"sk-or-v1-abc...xyz","limit":50,"usage":12.5,"limit_remaining":37.5,"is_free_tier":false,"rate_limit":{"requests":10,"interval":"10s"}}}"#;
    const OPENROUTER_KEY_UNLIMITED: &[u8] =
        br#"{"data":{"label":"k","limit":null,"usage":3,"limit_remaining":null,"is_free_tier":false}}"#;
    const SILICONFLOW: &[u8] = br#"{"code":20000,"message":"OK","status":true,"data":{"id":"userid","name":"username","image":"https://example.invalid/a.png","email":"","isAdmin":false,"balance":"0.88","status":"normal","introduction":"","role":"","chargeBalance":"88.00","totalBalance":"88.88"}}"#;

    fn b(nanos: i64, currency: &str) -> Option<Balance> {
        Some(Balance { nanos, currency: currency.to_owned() })
    }

    #[test]
    fn deepseek_reads_the_total_balance_of_its_first_currency() {
        assert_eq!(deepseek(DEEPSEEK), b(110_000_000_000, "CNY"));
        let usd = br#"{"is_available":false,"balance_infos":[{"currency":"usd","total_balance":"-0.5"}]}"#;
        assert_eq!(deepseek(usd), b(-500_000_000, "USD"));
        assert_eq!(deepseek(br#"{"is_available":true,"balance_infos":[]}"#), None);
        assert_eq!(deepseek(br#"{"balance_infos":[{"currency":"<script>","total_balance":"1"}]}"#), None);
    }

    #[test]
    fn moonshot_reads_the_available_balance_in_the_platforms_currency() {
        assert_eq!(moonshot(MOONSHOT, "https://api.moonshot.cn"), b(49_588_940_000, "CNY"));
        assert_eq!(moonshot(MOONSHOT, "https://api.moonshot.ai"), b(49_588_940_000, "USD"));
        assert_eq!(moonshot(br#"{"code":5,"data":null}"#, "https://api.moonshot.cn"), None);
    }

    #[test]
    fn openrouter_reads_credits_left_capped_by_the_keys_limit() {
        assert_eq!(openrouter(OPENROUTER_CREDITS, None), b(74_750_000_000, "USD"));
        assert_eq!(openrouter(OPENROUTER_CREDITS, Some(OPENROUTER_KEY)), b(37_500_000_000, "USD"));
        assert_eq!(openrouter(OPENROUTER_CREDITS, Some(OPENROUTER_KEY_UNLIMITED)), b(74_750_000_000, "USD"));
        assert_eq!(openrouter(br#"{"data":{}}"#, None), None);
        assert_eq!(openrouter(OPENROUTER_CREDITS, Some(b"<html>")), None);
    }

    #[test]
    fn siliconflow_reads_the_total_balance() {
        assert_eq!(siliconflow(SILICONFLOW, "https://api.siliconflow.cn"), b(88_880_000_000, "CNY"));
        assert_eq!(siliconflow(SILICONFLOW, "https://api.siliconflow.com"), b(88_880_000_000, "USD"));
        assert_eq!(siliconflow(br#"{"code":20000,"data":{"balance":"1"}}"#, "https://api.siliconflow.cn"), None);
    }

    #[test]
    fn decimals_are_exact_and_anything_else_is_refused() {
        assert_eq!(decimal_nanos(&Value::from("0.000000001")), Some(1));
        assert_eq!(decimal_nanos(&Value::from("12")), Some(12_000_000_000));
        assert_eq!(decimal_nanos(&Value::from("1.1234567899")), Some(1_123_456_789));
        assert_eq!(decimal_nanos(&serde_json::json!(3)), Some(3_000_000_000));
        for bad in [Value::from("1e3"), Value::from(""), Value::from(".5"), Value::from("abc"), Value::Null] {
            assert_eq!(decimal_nanos(&bad), None, "{bad}");
        }
        assert_eq!(decimal_nanos(&Value::from("9999999999999")), None, "too large");
    }

    #[test]
    fn only_the_documented_vendors_expose_a_balance() {
        for p in ["deepseek", "moonshot", "openrouter", "siliconflow"] {
            assert!(matches!(support(p), Support::Reads(_)), "{p}");
        }
        for p in ["openai", "anthropic", "gemini", "azure", "mistral"] {
            assert_eq!(support(p), Support::NotExposed, "{p}");
        }
        assert_eq!(origin("https://api.moonshot.cn/v1").as_deref(), Some("https://api.moonshot.cn"));
        assert_eq!(origin("http://127.0.0.1:8080/v1").as_deref(), Some("http://127.0.0.1:8080"));
    }
}
