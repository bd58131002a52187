//! Admin commands: each appends control events to the log (waiting for the log's own
//! acknowledgement) and works while `serve` runs, on either backend.

use anyhow::Context as _;
use nats::EventLog;
use schemas::secret::MasterKey;
use schemas::{
    ApiKeyIssued, ApiKeyRevoked, ChannelAdded, ChannelRemoved, ChannelUpdated, Envelope, EventBody, GLOBAL_TENANT,
    PricePublished, TenantCreated, TenantId,
};

use crate::control_view::ControlView;

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

/// Trims a base URL and checks it against the outbound address policy for a URL an admin sets
/// (`egress::Trust::Admin`): an http(s) URL without credentials whose host is not a forbidden
/// address, literal or resolved now (metadata, link-local, unspecified, …), and plain http only
/// to private or loopback hosts unless `insecure_http`. A private or loopback host is allowed,
/// with a warning naming the channel.
async fn checked_base_url(url: &str, insecure_http: bool, channel: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/').to_owned();
    anyhow::ensure!(
        (url.starts_with("http://") || url.starts_with("https://")) && url.len() > "https://".len(),
        "base URL {url:?} must start with http:// or https://"
    );
    anyhow::ensure!(!url.contains('@'), "base URL must not carry credentials; use --api-key");
    let policy = egress::Policy::default();
    let target =
        match policy.check_url_resolving(&url, egress::Trust::Admin, insecure_http, &egress::Dns::system()).await {
            Ok(t) => t,
            Err(e @ egress::UrlRefused::InsecureHttp { .. }) => {
                anyhow::bail!("--base-url refused: {e} (or give --insecure-http to allow it)")
            }
            Err(e) => anyhow::bail!("--base-url refused: {e}"),
        };
    if target.is_internal() {
        tracing::warn!(channel, host = %target.host, "Channel base URL reaches a private network or this host; allowed because an admin set it.");
    }
    Ok(url)
}

/// Trimmed model names, at least one.
fn checked_models(models: Vec<String>) -> anyhow::Result<Vec<String>> {
    let models: Vec<String> = models.into_iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
    anyhow::ensure!(!models.is_empty(), "a channel needs at least one model (--models m1,m2)");
    Ok(models)
}

/// Who is acting, recorded on every control event (the audit trail).
fn actor() -> String {
    std::env::var("LLM_ROUTER_ACTOR").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "admin".to_owned())
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// A control event from the CLI.
pub fn control_event(tenant: &str, body: EventBody) -> Envelope {
    let mut env = Envelope::new(tenant, "cli", now_us(), body);
    env.actor = Some(actor());
    env
}

/// `tenants create NAME`.
pub async fn create_tenant(log: &EventLog, name: &str) -> anyhow::Result<()> {
    let tenant = TenantId::parse(name)?;
    let view = ControlView::load(log).await?;
    anyhow::ensure!(!view.tenants.iter().any(|t| t == tenant.as_str()), "tenant {tenant} already exists");
    let env = control_event(tenant.as_str(), EventBody::TenantCreated(TenantCreated { name: tenant.to_string() }));
    log.append_acked(&env).await.context("Failed to append tenant.created")?;
    Ok(())
}

/// A key just issued: its id and the plaintext, shown once.
pub struct IssuedKey {
    /// `key_…`
    pub key_id: String,
    /// The plaintext key.
    pub key: String,
    /// Display prefix.
    pub prefix: String,
}

/// `keys create --tenant T`.
pub async fn create_key(
    log: &EventLog,
    tenant: &str,
    name: Option<String>,
    models: Option<Vec<String>>,
) -> anyhow::Result<IssuedKey> {
    let tenant = TenantId::parse(tenant)?;
    let view = ControlView::load(log).await?;
    anyhow::ensure!(
        view.tenants.iter().any(|t| t == tenant.as_str()),
        "no tenant named {tenant}; create it with `llm-router tenants create {tenant}`"
    );
    issue_key(log, tenant.as_str(), name, models).await
}

/// Appends `api_key.issued` for a fresh key of `tenant` (which must exist).
pub async fn issue_key(
    log: &EventLog,
    tenant: &str,
    name: Option<String>,
    models: Option<Vec<String>>,
) -> anyhow::Result<IssuedKey> {
    let key = schemas::keys::generate();
    let key_id = format!("key_{}", uuid::Uuid::now_v7().simple());
    let env = control_event(
        tenant,
        EventBody::ApiKeyIssued(ApiKeyIssued {
            key_id: key_id.clone(),
            hash: key.hash,
            prefix: key.prefix.clone(),
            name,
            models,
        }),
    );
    log.append_acked(&env).await.context("Failed to append api_key.issued")?;
    Ok(IssuedKey { key_id, key: key.plaintext, prefix: key.prefix })
}

/// `keys revoke KEY_ID_OR_PREFIX` (the whole key works too). Returns the revoked key's id.
pub async fn revoke_key(log: &EventLog, needle: &str) -> anyhow::Result<String> {
    let view = ControlView::load(log).await?;
    let key = view.find_key(needle)?;
    anyhow::ensure!(!key.revoked, "key {} is already revoked", key.key_id);
    let env = control_event(&key.tenant, EventBody::ApiKeyRevoked(ApiKeyRevoked { key_id: key.key_id.clone() }));
    log.append_acked(&env).await.context("Failed to append api_key.revoked")?;
    Ok(key.key_id.clone())
}

/// What `channels add` needs.
pub struct NewChannel {
    /// Unique name.
    pub name: String,
    /// Provider adapter.
    pub provider: String,
    /// Base URL; `None` takes the preset's default.
    pub base_url: Option<String>,
    /// `api-version` (Azure); `None` takes the preset's default.
    pub api_version: Option<String>,
    /// Upstream API key (sealed before it leaves this function).
    pub api_key: Option<String>,
    /// Models served.
    pub models: Vec<String>,
    /// Priority.
    pub priority: i32,
    /// Weight.
    pub weight: u32,
    /// Allow plain `http://` to a public host (`--insecure-http`).
    pub insecure_http: bool,
}

/// `channels add`. Returns the channel id.
pub async fn add_channel(log: &EventLog, master: &MasterKey, c: NewChannel) -> anyhow::Result<String> {
    anyhow::ensure!(
        PROVIDERS.contains(&c.provider.as_str()),
        "unknown provider {:?}; known: {}",
        c.provider,
        PROVIDERS.join(", ")
    );
    let preset = gateway::presets::find(&c.provider);
    let Some(url) =
        c.base_url.filter(|u| !u.trim().is_empty()).or_else(|| default_base_url(&c.provider).map(str::to_owned))
    else {
        anyhow::bail!(
            "provider {} has no default base URL; give --base-url (for azure the resource endpoint, \
             https://RESOURCE.openai.azure.com)",
            c.provider
        );
    };
    let url = checked_base_url(&url, c.insecure_http, &c.name).await?;
    let api_version = match (preset, c.api_version.filter(|v| !v.trim().is_empty())) {
        (Some(p), v) if p.needs_api_version => {
            Some(v.map_or_else(|| gateway::presets::AZURE_DEFAULT_API_VERSION.to_owned(), |v| v.trim().to_owned()))
        }
        (_, Some(_)) => anyhow::bail!("--api-version only applies to provider azure"),
        (_, None) => None,
    };
    let models = checked_models(c.models)?;
    anyhow::ensure!(c.weight > 0, "weight must be at least 1");
    let api_key = c.api_key.filter(|k| !k.is_empty());
    if let Some(native) = NATIVE_PROVIDERS.iter().find(|p| p.name == c.provider) {
        anyhow::ensure!(
            api_key.is_some(),
            "provider {} needs --api-key (the gateway sends it as {})",
            native.name,
            native.auth
        );
    }
    let view = ControlView::load(log).await?;
    anyhow::ensure!(!view.channels.values().any(|ch| ch.name == c.name), "a channel named {:?} exists", c.name);
    let channel_id = format!("ch_{}", uuid::Uuid::now_v7().simple());
    let sealed = api_key.map(|k| master.seal(&k, &channel_id));
    let env = control_event(
        GLOBAL_TENANT,
        EventBody::ChannelAdded(ChannelAdded {
            channel_id: channel_id.clone(),
            name: c.name,
            provider: c.provider,
            base_url: url,
            api_key: sealed,
            models,
            priority: c.priority,
            weight: c.weight,
            api_version,
            insecure_http: c.insecure_http,
        }),
    );
    log.append_acked(&env).await.context("Failed to append channel.added")?;
    Ok(channel_id)
}

/// What `channels update` changes; `None` keeps the current value.
#[derive(Default)]
pub struct ChannelChanges {
    /// New unique name.
    pub name: Option<String>,
    /// New base URL.
    pub base_url: Option<String>,
    /// New upstream API key (sealed before it leaves this function).
    pub api_key: Option<String>,
    /// New model list.
    pub models: Option<Vec<String>>,
    /// New priority.
    pub priority: Option<i32>,
    /// New weight.
    pub weight: Option<u32>,
    /// New `api-version` (Azure).
    pub api_version: Option<String>,
    /// Allow plain `http://` to a public host for the new base URL (`--insecure-http`).
    pub insecure_http: bool,
}

/// `channels update NAME_OR_ID`: appends one `channel.updated` carrying only the fields given,
/// so everything else (the sealed key included) keeps its value. Returns the channel id.
pub async fn update_channel(
    log: &EventLog,
    master: &MasterKey,
    needle: &str,
    c: ChannelChanges,
) -> anyhow::Result<String> {
    let view = ControlView::load(log).await?;
    let ch = view.find_channel(needle)?;
    let channel_id = ch.channel_id.clone();
    let name = c.name.map(|n| n.trim().to_owned());
    if let Some(n) = &name {
        anyhow::ensure!(!n.is_empty(), "--name is empty");
        anyhow::ensure!(
            !view.channels.values().any(|o| o.name == *n && o.channel_id != channel_id),
            "a channel named {n:?} exists"
        );
    }
    let api_version = c.api_version.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if api_version.is_some() {
        anyhow::ensure!(
            gateway::presets::find(&ch.provider).is_some_and(|p| p.needs_api_version),
            "--api-version only applies to provider azure"
        );
    }
    anyhow::ensure!(c.weight != Some(0), "weight must be at least 1");
    anyhow::ensure!(!c.insecure_http || c.base_url.is_some(), "--insecure-http goes with --base-url");
    let base_url = match c.base_url.as_deref() {
        Some(u) => Some(checked_base_url(u, c.insecure_http, name.as_deref().unwrap_or(&ch.name)).await?),
        None => None,
    };
    let update = ChannelUpdated {
        channel_id: channel_id.clone(),
        name,
        insecure_http: base_url.is_some().then_some(c.insecure_http),
        base_url,
        api_key: c.api_key.filter(|k| !k.is_empty()).map(|k| master.seal(&k, &channel_id)),
        models: c.models.map(checked_models).transpose()?,
        priority: c.priority,
        weight: c.weight,
        enabled: None,
        api_version,
    };
    anyhow::ensure!(
        update != ChannelUpdated { channel_id: channel_id.clone(), ..ChannelUpdated::default() },
        "nothing to change; give at least one of --name, --base-url, --api-key, --models, --priority, \
         --weight, --api-version"
    );
    let env = control_event(GLOBAL_TENANT, EventBody::ChannelUpdated(update));
    log.append_acked(&env).await.context("Failed to append channel.updated")?;
    Ok(channel_id)
}

/// `channels remove NAME_OR_ID`.
pub async fn remove_channel(log: &EventLog, needle: &str) -> anyhow::Result<String> {
    let view = ControlView::load(log).await?;
    let ch = view.find_channel(needle)?;
    let env =
        control_event(GLOBAL_TENANT, EventBody::ChannelRemoved(ChannelRemoved { channel_id: ch.channel_id.clone() }));
    log.append_acked(&env).await.context("Failed to append channel.removed")?;
    Ok(ch.channel_id.clone())
}

/// `prices set`: decimal amounts per one million tokens. With `channel` (a live channel's name or
/// id) the price overrides the model's price on that channel alone.
#[expect(clippy::too_many_arguments, reason = "one argument per `prices set` flag, named at the call site")]
pub async fn set_price(
    log: &EventLog,
    model: &str,
    channel: Option<&str>,
    currency: &str,
    input: &str,
    output: &str,
    cached: Option<&str>,
    cache_write: Option<&str>,
) -> anyhow::Result<String> {
    anyhow::ensure!(!model.trim().is_empty(), "--model is empty");
    let currency = currency.trim().to_ascii_uppercase();
    anyhow::ensure!(
        currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()),
        "currency must be an ISO code such as USD"
    );
    let parse = |name: &str, v: &str| schemas::parse_per_mtok(v).with_context(|| format!("--{name}"));
    let channel_id = match channel {
        Some(needle) => Some(ControlView::load(log).await?.find_channel(needle)?.channel_id.clone()),
        None => None,
    };
    let env = control_event(
        GLOBAL_TENANT,
        EventBody::PricePublished(PricePublished {
            model: model.trim().to_owned(),
            channel_id,
            currency,
            input_per_mtok_nanos: parse("input", input)?,
            output_per_mtok_nanos: parse("output", output)?,
            cached_input_per_mtok_nanos: cached.map(|v| parse("cached", v)).transpose()?,
            cache_write_per_mtok_nanos: cache_write.map(|v| parse("cache-write", v)).transpose()?,
        }),
    );
    log.append_acked(&env).await.context("Failed to append price.published")?;
    Ok(env.id.to_string())
}

/// Publishes the rows of the built-in price table that the log lacks: each row once per table
/// version (UUIDv5 ids, so two processes starting together append one event), never over a
/// model whose latest price an admin set. Returns how many rows were appended.
pub async fn publish_builtin_prices(log: &EventLog, source: &str) -> anyhow::Result<usize> {
    let table = gateway::prices::builtin().context("The built-in price table does not parse")?;
    let view = ControlView::load(log).await?;
    let pending = table.pending(&view.price_ids, |model| view.prices.get(model).map(|p| p.actor.clone()));
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
