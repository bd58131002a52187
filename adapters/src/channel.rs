//! The channel an attempt goes to: a control-model channel with its credential opened, its
//! preset resolved and its base URL judged by the outbound address policy, once per change
//! rather than per request. Built by [`Channel::open`] wherever channels are used (the gateway's
//! control state, health probes).

use std::sync::Arc;

use schemas::GLOBAL_TENANT;
use schemas::secret::MasterKey;

use crate::presets::{self, Preset};

/// An upstream channel with its opened credential (memory only).
#[derive(Clone)]
pub struct Channel {
    /// `ch_…`.
    pub id: String,
    /// Owning tenant, or [`GLOBAL_TENANT`] for channels every tenant may use.
    pub tenant: String,
    /// Provider preset name.
    pub provider: String,
    /// The preset `provider` names: auth style, URL shape, quirks.
    pub preset: &'static Preset,
    /// `api-version` query parameter (Azure).
    pub api_version: Option<String>,
    /// Base URL without a trailing slash, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The opened upstream key; `None` when the channel has none or it could not be opened.
    pub api_key: Option<Arc<str>>,
    /// Whether the sealed key failed to open (the channel is then never used).
    pub key_unusable: bool,
    /// Models served; [`ANY_MODEL`] serves every model (the default OpenAI channel).
    pub models: Vec<String>,
    /// Higher first.
    pub priority: i32,
    /// Share among equal priority.
    pub weight: u32,
    /// Disabled channels are skipped.
    pub enabled: bool,
    /// Why the base URL's literal host is refused by the outbound address policy, if it is:
    /// every attempt on the channel then fails as a connection failure, without connecting.
    /// (Names are checked by the HTTP client's resolver at connect time.)
    pub egress_refused: Option<egress::UrlRefused>,
    /// `anthropic-beta` values clients may pass through (Anthropic channels); empty: none.
    pub anthropic_beta: Vec<String>,
    /// The proxy pool every call of the channel goes through; `None`: direct.
    pub proxy_pool: Option<String>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("id", &self.id).field("provider", &self.provider).finish_non_exhaustive()
    }
}

/// A channel model entry that matches every model. It is not listed by `/v1/models`, which
/// shows only the names channels declare.
pub const ANY_MODEL: &str = "*";

impl Channel {
    /// Whether a request of `tenant` for `model` may go to this channel.
    pub fn serves(&self, tenant: &str, model: &str) -> bool {
        self.enabled
            && !self.key_unusable
            && (self.tenant == GLOBAL_TENANT || self.tenant == tenant)
            && self.models.iter().any(|m| m == model || m == ANY_MODEL)
    }
}

impl Channel {
    /// The channel `c` of the control model, ready to call: its sealed key opened with
    /// `master_key` (a key that does not open makes the channel unusable, logged once here), its
    /// preset and effective base URL, and the outbound policy's verdict on that URL.
    pub fn open(c: &schemas::control::Channel, master_key: &MasterKey) -> Channel {
        let (api_key, key_unusable) = open_key(master_key, c.api_key.as_ref(), &c.channel_id);
        Channel {
            id: c.channel_id.clone(),
            tenant: c.tenant.clone(),
            provider: c.provider.clone(),
            preset: presets::for_provider(&c.provider),
            api_version: c.api_version.clone(),
            base_url: presets::effective_base_url(&c.provider, &c.base_url),
            api_key,
            key_unusable,
            models: c.models.clone(),
            priority: c.priority,
            weight: c.weight,
            enabled: c.enabled,
            egress_refused: egress_verdict(&c.channel_id, &c.base_url),
            anthropic_beta: c.anthropic_beta.clone(),
            proxy_pool: c.proxy_pool.clone(),
        }
    }
}

/// The outbound policy's verdict on a channel's base URL, judged once per change rather than per
/// request. Channels are set by admins ([`egress::Trust::Admin`]), whose verdict does not depend
/// on the allow list, so no configuration is needed here; plain http was judged when the URL was
/// saved. A private or loopback host is allowed with a warning.
fn egress_verdict(channel_id: &str, base_url: &str) -> Option<egress::UrlRefused> {
    match egress::Policy::default().check_url(base_url, egress::Trust::Admin, true) {
        Ok(t) if t.is_internal() => {
            tracing::warn!(channel_id, host = %t.host, "Channel base URL points at a private network or this host; allowed because an admin set it.");
            None
        }
        Ok(_) => None,
        Err(refused @ (egress::UrlRefused::Address(_) | egress::UrlRefused::Disguised { .. })) => {
            tracing::warn!(channel_id, %refused, "Channel base URL is refused by the outbound address policy; its attempts will fail.");
            Some(refused)
        }
        // A URL that does not parse, or carries credentials, fails in the HTTP client as before
        // (the address is judged before the credentials, so these never hide a refused one).
        Err(_) => None,
    }
}

fn open_key(
    master_key: &MasterKey,
    sealed: Option<&schemas::secret::Sealed>,
    channel_id: &str,
) -> (Option<Arc<str>>, bool) {
    match sealed {
        None => (None, false),
        Some(s) => match master_key.open(s, channel_id) {
            Ok(k) => (Some(Arc::from(k)), false),
            Err(e) => {
                tracing::warn!(channel_id, error = %e, "Channel credential could not be opened; channel disabled.");
                (None, true)
            }
        },
    }
}
