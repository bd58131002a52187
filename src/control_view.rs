//! The admin commands' view of control state: a fold of `LLMR_CONTROL` read straight from the
//! log, so the CLI works with or without a read-model database and while `serve` runs.

use std::collections::{BTreeMap, HashSet};

use futures::StreamExt as _;
use nats::EventLog;
use schemas::{EventBody, PricePublished, Stream};

/// A key as the CLI sees it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// `key_…`
    pub key_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Display prefix.
    pub prefix: String,
    /// SHA-256 hex.
    pub hash: String,
    /// Label.
    pub name: Option<String>,
    /// Revoked already.
    pub revoked: bool,
}

/// A channel as the CLI sees it.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    /// `ch_…`
    pub channel_id: String,
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// Base URL.
    pub base_url: String,
    /// Models.
    pub models: Vec<String>,
    /// `api-version` (Azure).
    pub api_version: Option<String>,
}

/// A model's price in force as the CLI sees it.
#[derive(Debug, Clone)]
pub struct PriceInfo {
    /// The `price.published` event id (the price version).
    pub version: String,
    /// Who published it (`builtin` for the shipped table).
    pub actor: Option<String>,
    /// The published amounts.
    pub price: PricePublished,
}

/// Folded control state.
#[derive(Debug, Default)]
pub struct ControlView {
    /// Tenant names.
    pub tenants: Vec<String>,
    /// Keys by id.
    pub keys: BTreeMap<String, KeyInfo>,
    /// Live channels by id.
    pub channels: BTreeMap<String, ChannelInfo>,
    /// The model-wide price in force per model.
    pub prices: BTreeMap<String, PriceInfo>,
    /// Per-channel overrides in force, by (channel id, model); dropped with their channel.
    pub channel_prices: BTreeMap<(String, String), PriceInfo>,
    /// Id of every `price.published` event, so a built-in row is published at most once.
    pub price_ids: HashSet<uuid::Uuid>,
    /// Events folded.
    pub events: u64,
}

impl ControlView {
    /// Reads the control stream up to its current end.
    pub async fn load(log: &EventLog) -> anyhow::Result<ControlView> {
        let end = log.last_seq(Stream::Control).await?;
        let mut view = ControlView::default();
        if end == 0 {
            return Ok(view);
        }
        let mut tail = log.tail(Stream::Control, 0);
        while let Some(ev) = tail.next().await {
            let ev = ev?;
            if let Ok(env) = ev.decode() {
                let actor = env.actor.clone();
                view.apply(&env.tenant, env.id, actor, env.body);
            }
            if ev.seq >= end {
                break;
            }
        }
        Ok(view)
    }

    fn apply(&mut self, tenant: &str, id: uuid::Uuid, actor: Option<String>, body: EventBody) {
        self.events += 1;
        match body {
            EventBody::TenantCreated(t) => {
                if !self.tenants.contains(&t.name) {
                    self.tenants.push(t.name);
                }
            }
            EventBody::ApiKeyIssued(k) => {
                self.keys.insert(
                    k.key_id.clone(),
                    KeyInfo {
                        key_id: k.key_id,
                        tenant: tenant.to_owned(),
                        prefix: k.prefix,
                        hash: k.hash,
                        name: k.name,
                        revoked: false,
                    },
                );
            }
            EventBody::ApiKeyRevoked(r) => {
                if let Some(k) = self.keys.get_mut(&r.key_id) {
                    k.revoked = true;
                }
            }
            EventBody::ChannelAdded(c) => {
                self.channels.insert(
                    c.channel_id.clone(),
                    ChannelInfo {
                        channel_id: c.channel_id,
                        name: c.name,
                        provider: c.provider,
                        base_url: c.base_url,
                        models: c.models,
                        api_version: c.api_version,
                    },
                );
            }
            EventBody::ChannelUpdated(u) => {
                if let Some(c) = self.channels.get_mut(&u.channel_id) {
                    if let Some(n) = u.name {
                        c.name = n;
                    }
                    if let Some(b) = u.base_url {
                        c.base_url = b;
                    }
                    if let Some(m) = u.models {
                        c.models = m;
                    }
                    if let Some(v) = u.api_version {
                        c.api_version = Some(v);
                    }
                }
            }
            EventBody::ChannelRemoved(r) => {
                self.channels.remove(&r.channel_id);
                self.channel_prices.retain(|(channel, _), _| *channel != r.channel_id);
            }
            EventBody::PricePublished(p) => {
                self.price_ids.insert(id);
                let info = PriceInfo { version: id.to_string(), actor, price: p };
                match info.price.channel_id.clone() {
                    None => self.prices.insert(info.price.model.clone(), info),
                    Some(channel) => self.channel_prices.insert((channel, info.price.model.clone()), info),
                };
            }
            EventBody::UsageRecorded(_) | EventBody::RequestLogged(_) | EventBody::AuthFailuresCounted(_) => {}
        }
    }

    /// Finds a live channel by id or name.
    pub fn find_channel(&self, needle: &str) -> anyhow::Result<&ChannelInfo> {
        self.channels
            .values()
            .find(|c| c.channel_id == needle || c.name == needle)
            .ok_or_else(|| anyhow::anyhow!("no channel {needle:?}; see `llm-router channels list`"))
    }

    /// Finds a key by id, display prefix, or the whole key. An ambiguous prefix is an error.
    pub fn find_key(&self, needle: &str) -> anyhow::Result<&KeyInfo> {
        if let Some(k) = self.keys.get(needle) {
            return Ok(k);
        }
        let hash = schemas::keys::hash(needle);
        if let Some(k) = self.keys.values().find(|k| k.hash == hash) {
            return Ok(k);
        }
        let matches: Vec<&KeyInfo> =
            self.keys.values().filter(|k| needle.starts_with(&k.prefix) || k.prefix.starts_with(needle)).collect();
        match matches.as_slice() {
            [one] if needle.len() >= 6 => Ok(one),
            [] | [_] => anyhow::bail!("no key matches {:?}", schemas::keys::display_prefix(needle)),
            _ => anyhow::bail!(
                "{} keys match {:?}; give the key id",
                matches.len(),
                schemas::keys::display_prefix(needle)
            ),
        }
    }
}
