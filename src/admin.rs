//! The CLI's wiring of the admin operations (the `control` crate): the provider catalog from the
//! gateway's presets, the acting user, and the built-in price table. The operations themselves
//! and their rules live in `control`.

use anyhow::Context as _;
use control::Admin;
use nats::EventLog;

/// Providers `channels add` accepts: the OpenAI-compatible presets (`gateway::presets`) and the
/// providers with their own adapter ([`NATIVE_PROVIDERS`]).
pub const PROVIDERS: &[&str] = &[
    "openai",
    "deepseek",
    "mistral",
    "qwen",
    "moonshot",
    "zhipu",
    "ernie",
    "openrouter",
    "azure",
    "ollama",
    "vllm",
    "anthropic",
    "gemini",
];

/// A provider with its own adapter rather than the OpenAI-compatible one, so it has no entry in
/// the preset table: its default base URL and how the gateway sends its key.
pub struct NativeProvider {
    /// The `--provider` name.
    pub name: &'static str,
    /// The vendor's documented base URL, version segment included.
    pub default_base_url: &'static str,
    /// The header the key travels in (named in the error when `--api-key` is missing).
    pub auth: &'static str,
}

/// The native providers. Both vendors refuse every call without a key, so `channels add` asks
/// for one.
pub const NATIVE_PROVIDERS: &[NativeProvider] = &[
    NativeProvider { name: "anthropic", default_base_url: "https://api.anthropic.com/v1", auth: "x-api-key" },
    NativeProvider {
        name: "gemini",
        default_base_url: "https://generativelanguage.googleapis.com/v1beta",
        auth: "x-goog-api-key",
    },
];

/// The base URL a channel of `provider` gets without `--base-url`, if the vendor has one.
fn default_base_url(provider: &str) -> Option<&'static str> {
    NATIVE_PROVIDERS
        .iter()
        .find(|p| p.name == provider)
        .map(|p| p.default_base_url)
        .or_else(|| gateway::presets::find(provider).and_then(|p| p.default_base_url))
}

/// The provider catalog the admin operations check channels against, from the gateway's preset
/// table and [`NATIVE_PROVIDERS`].
pub fn providers() -> Vec<control::Provider> {
    PROVIDERS
        .iter()
        .map(|&name| {
            let preset = gateway::presets::find(name);
            control::Provider {
                name,
                default_base_url: default_base_url(name),
                default_api_version: preset
                    .filter(|p| p.needs_api_version)
                    .map(|_| gateway::presets::AZURE_DEFAULT_API_VERSION),
                key_required: NATIVE_PROVIDERS.iter().find(|p| p.name == name).map(|p| p.auth),
            }
        })
        .collect()
}

/// Who is acting, recorded on every control event (the audit trail).
fn actor() -> String {
    std::env::var("LLM_ROUTER_ACTOR").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "admin".to_owned())
}

/// The admin operations for this CLI invocation: acting as [`actor`], from source `cli`.
pub fn admin(log: &EventLog) -> Admin {
    // The outbound-address policy for channel base URLs plugs in here (`Admin::with_url_check`).
    Admin::new(log.clone(), &actor(), "cli", providers())
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Publishes the rows of the built-in price table that the log lacks: each row once per table
/// version (UUIDv5 ids, so two processes starting together append one event), never over a
/// model whose latest price an admin set. Returns how many rows were appended.
pub async fn publish_builtin_prices(log: &EventLog, source: &str) -> anyhow::Result<usize> {
    let table = gateway::prices::builtin().context("The built-in price table does not parse")?;
    let model = control::load(log).await?;
    let pending = table.pending(&model.price_ids, |m| model.prices.get(m).map(|p| p.actor.clone()));
    for row in &pending {
        log.append(&table.envelope(row, source, now_us()))
            .await
            .with_context(|| format!("Failed to append the built-in price of {}", row.price.model))?;
    }
    Ok(pending.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_openai_compatible_preset_is_an_accepted_provider() {
        for p in gateway::presets::PRESETS {
            assert!(PROVIDERS.contains(&p.name), "{} missing from PROVIDERS", p.name);
        }
    }

    #[test]
    fn native_providers_are_accepted_and_have_a_default_base_url() {
        for p in NATIVE_PROVIDERS {
            assert!(PROVIDERS.contains(&p.name), "{} missing from PROVIDERS", p.name);
            assert!(!p.default_base_url.ends_with('/'), "{}", p.default_base_url);
        }
        assert_eq!(default_base_url("anthropic"), Some("https://api.anthropic.com/v1"));
        assert_eq!(default_base_url("gemini"), Some("https://generativelanguage.googleapis.com/v1beta"));
        assert_eq!(default_base_url("deepseek"), Some("https://api.deepseek.com"));
        assert_eq!(default_base_url("azure"), None);
    }
}
