//! The OpenAI-compatible vendors as data: per preset name, the default base URL, how the key is
//! sent, and the quirks the adapter must honour. The CLI reads this table too (to fill in a base
//! URL and check a channel), so it holds no I/O and no gateway state.

/// How a channel's key reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `api-key: <key>` (Azure OpenAI).
    ApiKeyHeader,
    /// No credential: self-hosted servers (Ollama, vLLM). A key given anyway is still sent as a
    /// bearer token, since a vLLM started with `--api-key` checks exactly that.
    None,
}

impl Auth {
    /// The name shown in `channels add` help and the README.
    pub fn label(self) -> &'static str {
        match self {
            Auth::Bearer => "Bearer",
            Auth::ApiKeyHeader => "api-key header",
            Auth::None => "none",
        }
    }
}

/// How the upstream URL is built from the channel's base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlStyle {
    /// `{base_url}/chat/completions`.
    OpenAi,
    /// `{endpoint}/openai/deployments/{model}/chat/completions?api-version={v}`: the deployment
    /// is named after the model the client asked for.
    AzureDeployment,
}

/// Whether the vendor accepts `stream_options.include_usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamUsage {
    /// Accepts it: the gateway injects it when the client did not ask, and hides the extra chunk.
    Inject,
    /// Sends usage on its last chunk unasked, and may reject the field: the client's own body
    /// goes upstream, without `stream_options`.
    Unasked,
}

/// One vendor preset.
#[derive(Debug, PartialEq, Eq)]
pub struct Preset {
    /// The name given to `channels add --provider`, stored as the channel's `provider`.
    pub name: &'static str,
    /// The documented OpenAI-compatible base URL; `None` when every deployment has its own.
    pub default_base_url: Option<&'static str>,
    /// How the key is sent.
    pub auth: Auth,
    /// How the request URL is built.
    pub url_style: UrlStyle,
    /// `stream_options.include_usage` support.
    pub stream_usage: StreamUsage,
    /// Whether the channel needs an `api_version` (Azure).
    pub needs_api_version: bool,
    /// The quirks in one line, for help texts and the README.
    pub quirks: &'static str,
}

/// The `api-version` used for Azure channels added without one: the latest GA data-plane
/// inference version when this table was written.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

const fn preset(name: &'static str, default_base_url: Option<&'static str>, quirks: &'static str) -> Preset {
    Preset {
        name,
        default_base_url,
        auth: Auth::Bearer,
        url_style: UrlStyle::OpenAi,
        stream_usage: StreamUsage::Inject,
        needs_api_version: false,
        quirks,
    }
}

/// Every preset, in the order help texts list them.
pub const PRESETS: &[Preset] = &[
    preset("openai", Some("https://api.openai.com/v1"), "reference behaviour"),
    preset(
        "deepseek",
        Some("https://api.deepseek.com"),
        "`reasoning_content` passes through; `prompt_cache_hit_tokens` counts as cached input",
    ),
    Preset {
        stream_usage: StreamUsage::Unasked,
        ..preset(
            "mistral",
            Some("https://api.mistral.ai/v1"),
            "usage arrives on the last chunk unasked; `stream_options` is not sent",
        )
    },
    preset(
        "qwen",
        Some("https://dashscope.aliyuncs.com/compatible-mode/v1"),
        "DashScope compatible mode; `reasoning_content` passes through",
    ),
    Preset {
        stream_usage: StreamUsage::Unasked,
        ..preset(
            "moonshot",
            Some("https://api.moonshot.cn/v1"),
            "usage may sit inside the last choice; top-level `cached_tokens`; `stream_options` is not sent",
        )
    },
    Preset {
        stream_usage: StreamUsage::Unasked,
        ..preset(
            "zhipu",
            Some("https://open.bigmodel.cn/api/paas/v4"),
            "usage arrives on the last chunk unasked; `stream_options` is not sent",
        )
    },
    preset("ernie", Some("https://qianfan.baidubce.com/v2"), "Baidu Qianfan v2 (bearer API key)"),
    preset(
        "openrouter",
        Some("https://openrouter.ai/api/v1"),
        "`: OPENROUTER PROCESSING` comments skipped; an `error` object after HTTP 200 is an upstream error",
    ),
    Preset {
        auth: Auth::ApiKeyHeader,
        url_style: UrlStyle::AzureDeployment,
        needs_api_version: true,
        ..preset(
            "azure",
            None,
            "base URL is the resource endpoint; deployment = model name; `api-version` query parameter",
        )
    },
    Preset { auth: Auth::None, ..preset("ollama", Some("http://localhost:11434/v1"), "no key needed") },
    Preset {
        auth: Auth::None,
        ..preset("vllm", Some("http://localhost:8000/v1"), "no key needed; `{\"object\":\"error\"}` bodies are errors")
    },
];

/// The preset called `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The base URL requests are built on, from the one a channel was given: users write base URLs
/// with and without the version segment (the OpenAI SDK's convention includes `/v1`, the
/// Anthropic and Gemini SDKs' and New API's do not), so both forms reach the same endpoints.
/// - `anthropic` and `gemini`: a URL whose last path segment is not a version (`v1`, `v1beta`,
///   `v2alpha`…) gets the vendor's version appended, as their SDKs do (`/v1`, `/v1beta`).
/// - OpenAI-compatible presets: a URL with no path at all gets the path of the preset's
///   documented URL (`http://host:8000` → `http://host:8000/v1` for vLLM, `/api/paas/v4` for
///   Zhipu); a URL with a path is kept as given, since proxies put the API under paths of their own.
/// - Azure and unknown providers: kept as given. Trailing slashes are always dropped.
pub fn effective_base_url(provider: &str, base_url: &str) -> String {
    let base = base_url.trim().trim_end_matches('/');
    let (after_scheme, has_scheme) = match base.split_once("://") {
        Some((_, rest)) => (rest, true),
        None => (base, false),
    };
    let path = after_scheme.split_once('/').map(|(_, p)| p).unwrap_or("");
    let native_version = match provider {
        "anthropic" => Some("v1"),
        "gemini" => Some("v1beta"),
        _ => None,
    };
    if let Some(version) = native_version {
        let last = path.rsplit('/').next().unwrap_or("");
        return if is_version_segment(last) { base.to_owned() } else { format!("{base}/{version}") };
    }
    let default_path = find(provider)
        .filter(|p| p.url_style == UrlStyle::OpenAi)
        .and_then(|p| p.default_base_url)
        .and_then(|u| u.split_once("://"))
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, p)| p);
    match default_path {
        Some(p) if has_scheme && path.is_empty() && !p.is_empty() => format!("{base}/{p}"),
        _ => base.to_owned(),
    }
}

/// `v1`, `v2`, `v1beta`, `v1alpha`, `v1beta2`…: an API version as vendors put it in their paths.
fn is_version_segment(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else { return false };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let tail = &rest[digits..];
    digits > 0
        && (tail.is_empty()
            || ["alpha", "beta"]
                .iter()
                .any(|w| tail.strip_prefix(w).is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))))
}

/// The preset a stored channel runs with. Channels of an unknown provider (a newer binary wrote
/// it, or an adapter that is not OpenAI-compatible) fall back to plain OpenAI behaviour.
pub fn for_provider(name: &str) -> &'static Preset {
    find(name).unwrap_or(&PRESETS[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_work_with_and_without_the_version_segment() {
        let cases = [
            ("anthropic", "http://127.0.0.1:9000", "http://127.0.0.1:9000/v1"),
            ("anthropic", "http://127.0.0.1:9000/", "http://127.0.0.1:9000/v1"),
            ("anthropic", "https://api.anthropic.com/v1", "https://api.anthropic.com/v1"),
            ("anthropic", "https://proxy.example/anthropic", "https://proxy.example/anthropic/v1"),
            ("gemini", "http://127.0.0.1:9000", "http://127.0.0.1:9000/v1beta"),
            (
                "gemini",
                "https://generativelanguage.googleapis.com/v1beta/",
                "https://generativelanguage.googleapis.com/v1beta",
            ),
            ("gemini", "https://generativelanguage.googleapis.com/v1", "https://generativelanguage.googleapis.com/v1"),
            ("openai", "http://127.0.0.1:9000", "http://127.0.0.1:9000/v1"),
            ("openai", "http://127.0.0.1:9000/v1", "http://127.0.0.1:9000/v1"),
            ("openai", "https://proxy.example/openai", "https://proxy.example/openai"),
            ("vllm", "http://gpu:8000", "http://gpu:8000/v1"),
            ("zhipu", "https://open.bigmodel.cn", "https://open.bigmodel.cn/api/paas/v4"),
            ("deepseek", "https://api.deepseek.com", "https://api.deepseek.com"),
            ("azure", "https://res.openai.azure.com/", "https://res.openai.azure.com"),
            ("someday", "http://h:1", "http://h:1"),
        ];
        for (provider, given, used) in cases {
            assert_eq!(effective_base_url(provider, given), used, "{provider} {given}");
        }
        for v in ["v1", "v2", "v1beta", "v1alpha", "v1beta2", "v10"] {
            assert!(is_version_segment(v), "{v}");
        }
        for v in ["", "v", "vx", "api", "v1gamma", "version1", "v1beta-x"] {
            assert!(!is_version_segment(v), "{v}");
        }
    }

    #[test]
    fn every_preset_has_a_unique_name_and_a_sane_default_url() {
        for (i, p) in PRESETS.iter().enumerate() {
            assert!(PRESETS[..i].iter().all(|q| q.name != p.name), "{} twice", p.name);
            if let Some(u) = p.default_base_url {
                assert!(u.starts_with("https://") || u.starts_with("http://localhost"), "{u}");
                assert!(!u.ends_with('/'), "{u}");
            }
        }
        assert_eq!(PRESETS.len(), 11);
    }

    #[test]
    fn urls_and_auth_follow_each_vendors_documentation() {
        let url = |n: &str| find(n).and_then(|p| p.default_base_url);
        assert_eq!(url("deepseek"), Some("https://api.deepseek.com"));
        assert_eq!(url("qwen"), Some("https://dashscope.aliyuncs.com/compatible-mode/v1"));
        assert_eq!(url("moonshot"), Some("https://api.moonshot.cn/v1"));
        assert_eq!(url("zhipu"), Some("https://open.bigmodel.cn/api/paas/v4"));
        assert_eq!(url("ernie"), Some("https://qianfan.baidubce.com/v2"));
        assert_eq!(url("openrouter"), Some("https://openrouter.ai/api/v1"));
        assert_eq!(url("mistral"), Some("https://api.mistral.ai/v1"));
        assert_eq!(url("ollama"), Some("http://localhost:11434/v1"));
        assert_eq!(url("vllm"), Some("http://localhost:8000/v1"));
        assert_eq!(url("azure"), None);
        let auth = |n: &str| find(n).map(|p| p.auth);
        assert_eq!(auth("azure"), Some(Auth::ApiKeyHeader));
        assert_eq!(auth("ollama"), Some(Auth::None));
        assert_eq!(auth("vllm"), Some(Auth::None));
        for n in ["openai", "deepseek", "mistral", "qwen", "moonshot", "zhipu", "ernie", "openrouter"] {
            assert_eq!(auth(n), Some(Auth::Bearer), "{n}");
        }
        assert!(find("azure").is_some_and(|p| p.needs_api_version && p.url_style == UrlStyle::AzureDeployment));
        assert_eq!(for_provider("something-new").name, "openai");
    }
}
