//! `llm-router`: the CLI. Parses arguments and configuration, sets up logging, and hands off to
//! the composition in `run` or to an admin command. No domain logic lives here.

mod admin;
mod applied;
mod config;
mod master_key;
mod proxy_pool;
mod run;
mod users;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

#[derive(Parser)]
#[command(name = "llm-router", version, about = "An OpenAI-compatible LLM gateway built around an event log.")]
struct Cli {
    /// Config file (default: ./llm-router.toml when present).
    #[arg(long, global = true, env = "LLM_ROUTER_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway, workers and dashboard in one process (embedded backends by default).
    Serve {
        /// Listen address (default 0.0.0.0:8080, or SERVER_PORT).
        #[arg(long)]
        listen: Option<String>,
    },
    /// The gateway alone (cluster shape); mounts the read routes too when given a database.
    Gateway {
        /// Listen address.
        #[arg(long)]
        listen: Option<String>,
    },
    /// The projection workers alone (cluster shape).
    Worker,
    /// Tenants.
    #[command(subcommand)]
    Tenants(TenantCmd),
    /// Virtual API keys.
    #[command(subcommand)]
    Keys(KeyCmd),
    /// Upstream channels.
    #[command(subcommand)]
    Channels(ChannelCmd),
    /// Egress proxies, grouped in pools that channels send through.
    #[command(subcommand)]
    Proxies(ProxyCmd),
    /// How each model's requests are routed.
    #[command(subcommand)]
    Routes(RouteCmd),
    /// Model prices.
    #[command(subcommand)]
    Prices(PriceCmd),
    /// Read-model maintenance.
    #[command(subcommand)]
    Projections(ProjectionCmd),
    /// Reports from the ledger.
    #[command(subcommand)]
    Reports(ReportCmd),
    /// Admin users of the admin API (`/api/*`).
    #[command(subcommand)]
    Users(users::UserCmd),
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Creates a tenant.
    Create {
        /// Name: 1-64 characters of a-z, 0-9, '-', '_'.
        name: String,
        /// A display name in any script (`华东分公司`), shown in reports and the dashboard.
        #[arg(long)]
        display_name: Option<String>,
        /// The IANA time zone of its reports (default UTC), e.g. Asia/Shanghai.
        #[arg(long)]
        time_zone: Option<String>,
        /// Cap on every request's output tokens (`max_tokens` and its synonyms) for its keys,
        /// 1 to 1,000,000; the smallest of the gateway's, the tenant's and the key's cap applies.
        #[arg(long)]
        max_output_tokens: Option<u64>,
        /// Cap on every request's choices (`n`, Gemini's `candidateCount`) for its keys, 1 to 128.
        #[arg(long)]
        max_n: Option<u64>,
    },
    /// Changes a tenant's display name, time zone or request caps.
    Update {
        /// The tenant's name.
        name: String,
        /// A new display name.
        #[arg(long)]
        display_name: Option<String>,
        /// A new IANA time zone.
        #[arg(long)]
        time_zone: Option<String>,
        /// Cap on every request's output tokens (`max_tokens` and its synonyms) for its keys;
        /// the smallest of the gateway's, the tenant's and the key's cap applies. `0` removes it.
        #[arg(long)]
        max_output_tokens: Option<u64>,
        /// Cap on every request's choices (`n`, Gemini's `candidateCount`) for its keys. `0` removes it.
        #[arg(long)]
        max_n: Option<u64>,
    },
    /// Lists tenants.
    List,
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Issues a key; the key is printed once, alone on the last line.
    Create {
        /// Owning tenant.
        #[arg(long)]
        tenant: String,
        /// A label.
        #[arg(long)]
        name: Option<String>,
        /// Restrict the key to these models (comma-separated).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Let the key read its whole tenant's usage (`/v1/usage?scope=tenant`); without it a
        /// key reads only its own.
        #[arg(long)]
        tenant_usage: bool,
        /// Cap on a request's output tokens (`max_tokens` and its synonyms); the smallest of the
        /// gateway's, the tenant's and the key's cap applies.
        #[arg(long)]
        max_output_tokens: Option<u64>,
        /// Cap on a request's choices (`n`, Gemini's `candidateCount`).
        #[arg(long)]
        max_n: Option<u64>,
        /// The key stops working after this long: `45s`, `90m`, `12h`, `30d`, `2w`.
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// The key stops working at this RFC 3339 time (`2027-01-01T00:00:00Z`).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Revokes a key by id, display prefix, or the whole key.
    Revoke {
        /// Key id, prefix or key.
        key: String,
    },
    /// Lists keys (prefixes only).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum ChannelCmd {
    /// Adds an upstream channel.
    Add {
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Provider: openai, deepseek, mistral, qwen, moonshot, zhipu, ernie, openrouter, azure,
        /// ollama, vllm, anthropic, gemini.
        #[arg(long, default_value = "openai")]
        provider: String,
        /// Base URL; defaults to the preset's (required for azure: https://RESOURCE.openai.azure.com).
        #[arg(long)]
        base_url: Option<String>,
        /// Azure `api-version` (default: the latest GA version this build knows).
        #[arg(long)]
        api_version: Option<String>,
        /// Upstream API key (stored sealed); repeat it for several keys, which requests rotate
        /// across (each gets an id, `ukey_…`).
        #[arg(long, env = "LLM_ROUTER_CHANNEL_API_KEY", hide_env_values = true)]
        api_key: Vec<String>,
        /// Models served (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        models: Vec<String>,
        /// Higher is tried first.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// Traffic share among equal priorities.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Allow a plain http:// base URL to a public host (the upstream key then travels
        /// unencrypted).
        #[arg(long)]
        insecure_http: bool,
        /// `anthropic-beta` values clients may switch on through this channel (comma-separated;
        /// default none: the upstream account is shared).
        #[arg(long, value_delimiter = ',')]
        anthropic_beta: Vec<String>,
        /// Send every call of the channel (requests, probes, balance checks) through a proxy of
        /// this pool (see `llm-router proxies`).
        #[arg(long)]
        proxy_pool: Option<String>,
    },
    /// Changes a channel in place (by name or id); flags not given keep their value, the
    /// upstream key included.
    Update {
        /// Name or id.
        channel: String,
        /// New unique name.
        #[arg(long)]
        name: Option<String>,
        /// New base URL.
        #[arg(long)]
        base_url: Option<String>,
        /// New upstream API key (stored sealed).
        #[arg(long, env = "LLM_ROUTER_CHANNEL_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// New model list (comma-separated), replacing the old one.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// New priority.
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i32>,
        /// New weight.
        #[arg(long)]
        weight: Option<u32>,
        /// New Azure `api-version`.
        #[arg(long)]
        api_version: Option<String>,
        /// Allow the new plain http:// --base-url to reach a public host.
        #[arg(long)]
        insecure_http: bool,
        /// New `anthropic-beta` allow list (comma-separated), replacing the old one; "" clears it.
        #[arg(long, value_delimiter = ',')]
        anthropic_beta: Option<Vec<String>>,
        /// New proxy pool; "" sends the channel direct again.
        #[arg(long)]
        proxy_pool: Option<String>,
    },
    /// Removes a channel by name or id.
    Remove {
        /// Name or id.
        channel: String,
    },
    /// Lists channels (never their keys: the last column lists key ids and states).
    List,
    /// A channel's upstream keys.
    #[command(subcommand)]
    Keys(ChannelKeyCmd),
}

#[derive(Subcommand)]
enum ProxyCmd {
    /// Adds a proxy to a pool. Credentials in the URL are stored sealed and shown as `***`.
    Add {
        /// The pool (created by its first proxy).
        #[arg(long)]
        pool: String,
        /// http://, https://, socks5:// or socks5h:// URL, with `user:password@` if the proxy
        /// needs it.
        #[arg(long, env = "LLM_ROUTER_PROXY_URL", hide_env_values = true)]
        url: String,
        /// Unique name (default: the pool's name and a number).
        #[arg(long)]
        name: Option<String>,
    },
    /// Removes a proxy by name or id.
    Remove {
        /// Name or id.
        proxy: String,
    },
    /// Lists proxies: id, pool, name, masked URL, state, until, origin.
    List,
    /// Takes a proxy out of rotation until an admin enables it (probes never do).
    Disable {
        /// Name or id.
        proxy: String,
    },
    /// Puts a proxy back in rotation (also after a disable by probes or an open breaker).
    Enable {
        /// Name or id.
        proxy: String,
    },
}

#[derive(Subcommand)]
enum RouteCmd {
    /// Sets a model's route (replacing the previous one).
    Set {
        /// The model, as clients name it.
        #[arg(long)]
        model: String,
        /// priority (default), least-latency or lowest-cost.
        #[arg(long, default_value = "priority")]
        strategy: String,
        /// Models to try in order when every channel of this one failed or its context window
        /// was exceeded (comma-separated).
        #[arg(long, value_delimiter = ',')]
        fallback: Vec<String>,
    },
    /// Removes a model's route: it is routed by the default again (priority, no fallback).
    Remove {
        /// The model, as clients name it.
        #[arg(long)]
        model: String,
    },
    /// Lists the routes: model, strategy, fallback models.
    List,
}

#[derive(Subcommand)]
enum ChannelKeyCmd {
    /// Adds an upstream key to a channel (stored sealed; printed only as its fingerprint).
    Add {
        /// Name or id.
        channel: String,
        /// The key.
        #[arg(long, env = "LLM_ROUTER_CHANNEL_API_KEY", hide_env_values = true)]
        api_key: String,
    },
    /// Removes a key from a channel (not its only key).
    Remove {
        /// Name or id.
        channel: String,
        /// The key's id (`ukey_…`).
        key_id: String,
    },
    /// Lists a channel's keys: id, fingerprint, state, reason, until, set by an admin.
    List {
        /// Name or id.
        channel: String,
    },
    /// Takes a key out of rotation until an admin enables it (live traffic and probes never do).
    Disable {
        /// Name or id.
        channel: String,
        /// The key's id (`ukey_…`).
        key_id: String,
    },
    /// Puts a key back in rotation (clears a disable, cool-down or open breaker).
    Enable {
        /// Name or id.
        channel: String,
        /// The key's id (`ukey_…`).
        key_id: String,
    },
    /// Sets the balance under which health reports the key `degraded` (`low_balance`); `off`
    /// clears it. The amount is in the currency the key's vendor reports its balance in.
    LowBalance {
        /// Name or id.
        channel: String,
        /// The key's id (`ukey_…`).
        key_id: String,
        /// A decimal amount (`5`, `2.50`) or `off`.
        amount: String,
    },
}

#[derive(Subcommand)]
enum PriceCmd {
    /// Publishes a model's price, per one million tokens.
    Set {
        /// Model name.
        #[arg(long)]
        model: String,
        /// Only on this channel (name or id): overrides the model's price there.
        #[arg(long)]
        channel: Option<String>,
        /// Uncached input, per 1M tokens (e.g. 2.50).
        #[arg(long)]
        input: String,
        /// Output, per 1M tokens.
        #[arg(long)]
        output: String,
        /// Cached input, per 1M tokens (default: the input price).
        #[arg(long)]
        cached: Option<String>,
        /// Cache-write input, per 1M tokens (default: the input price).
        #[arg(long)]
        cache_write: Option<String>,
        /// ISO currency.
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// Lists the prices in force per model (per 1M tokens), then each channel override (its
    /// channel id in the last column), and who set them (`builtin` = the table shipped with this
    /// build).
    List,
}

#[derive(Subcommand)]
enum ProjectionCmd {
    /// Rebuilds a projection from sequence 1 while the old version serves, then swaps.
    Rebuild {
        /// `control`, `ledger`, `requests` or `health`.
        name: String,
    },
}

#[derive(Subcommand)]
enum ReportCmd {
    /// Usage and cost by day, ISO week, month, model or key, in the tenant's time zone (the
    /// same report as `GET /api/reports/usage`).
    Usage {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// First local day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        from: String,
        /// Last local day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: String,
        /// Output format.
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
        /// What a row is.
        #[arg(long, default_value = "day", value_parser = ["day", "week", "month", "model", "key"])]
        group_by: String,
        /// Prefix CSV with a UTF-8 byte order mark (Excel).
        #[arg(long)]
        bom: bool,
        /// The billing sequence to report as of (default: the latest).
        #[arg(long)]
        as_of: Option<u64>,
    },
    /// Per tenant and period, requests, tokens and cost (the same report as
    /// `GET /api/reports/billing`).
    Billing {
        /// One tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// First local day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        from: String,
        /// Last local day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: String,
        /// Period of a row.
        #[arg(long, default_value = "month", value_parser = ["day", "week", "month"])]
        period: String,
        /// Output format.
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
        /// Prefix CSV with a UTF-8 byte order mark (Excel).
        #[arg(long)]
        bom: bool,
        /// The billing sequence to report as of (default: the latest).
        #[arg(long)]
        as_of: Option<u64>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    run::init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `\tmax_output_tokens=N\tmax_n=N` for the caps that are set (listings of keys and tenants).
fn caps_columns(max_output_tokens: Option<u64>, max_n: Option<u64>) -> String {
    let mut out = String::new();
    if let Some(m) = max_output_tokens {
        out.push_str(&format!("\tmax_output_tokens={m}"));
    }
    if let Some(m) = max_n {
        out.push_str(&format!("\tmax_n={m}"));
    }
    out
}

/// A key's expiry from `--expires-in` or `--expires-at`, µs since the epoch.
fn expiry(expires_in: Option<&str>, expires_at: Option<&str>) -> anyhow::Result<Option<i64>> {
    match (expires_in, expires_at) {
        (Some(d), _) => {
            let lifetime = control::parse_lifetime(d)
                .ok_or_else(|| anyhow::anyhow!("--expires-in takes a number and a unit: 45s, 90m, 12h, 30d or 2w"))?;
            Ok(Some(control::now_us().saturating_add(lifetime)))
        }
        (None, Some(t)) => {
            let at = chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| anyhow::anyhow!("--expires-at takes an RFC 3339 time such as 2027-01-01T00:00:00Z"))?;
            Ok(Some(at.timestamp_micros()))
        }
        (None, None) => Ok(None),
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let listen = match &cli.command {
        Command::Serve { listen } | Command::Gateway { listen } => listen.clone(),
        _ => None,
    };
    let cfg = Config::load(cli.config.as_deref(), &cli.overrides, listen.as_deref())?;
    match cli.command {
        Command::Serve { .. } => run::serve(cfg).await,
        Command::Gateway { .. } => run::gateway(cfg).await,
        Command::Worker => run::worker(cfg).await,
        Command::Tenants(cmd) => {
            let log = run::open_log(&cfg).await?;
            match cmd {
                TenantCmd::Create { name, display_name, time_zone, max_output_tokens, max_n } => {
                    let profile = control::TenantProfile { display_name, time_zone, max_output_tokens, max_n };
                    admin::admin(&log).create_tenant_with(&name, profile).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Tenant {name} created."));
                }
                TenantCmd::Update { name, display_name, time_zone, max_output_tokens, max_n } => {
                    let profile = control::TenantProfile { display_name, time_zone, max_output_tokens, max_n };
                    admin::admin(&log).update_tenant(&name, profile).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Tenant {name} updated."));
                }
                TenantCmd::List => {
                    let model = control::load(&log).await?;
                    // In the order they were created, as the log has them.
                    let mut tenants: Vec<_> = model.tenants.values().collect();
                    tenants.sort_by_key(|t| t.created_at_us);
                    for t in tenants {
                        let line = match (&t.display_name, &t.time_zone) {
                            (None, None) => t.name.clone(),
                            (d, z) => {
                                format!("{}\t{}\t{}", t.name, d.as_deref().unwrap_or(""), z.as_deref().unwrap_or("UTC"))
                            }
                        };
                        run::say(&format!("{line}{}", caps_columns(t.max_output_tokens, t.max_n)));
                    }
                }
            }
            Ok(())
        }
        Command::Keys(cmd) => {
            let log = run::open_log(&cfg).await?;
            match cmd {
                KeyCmd::Create {
                    tenant,
                    name,
                    models,
                    tenant_usage,
                    max_output_tokens,
                    max_n,
                    expires_in,
                    expires_at,
                } => {
                    let expires_at_us = expiry(expires_in.as_deref(), expires_at.as_deref())?;
                    let limits = control::KeyLimits { max_output_tokens, max_n, expires_at_us };
                    let k = admin::admin(&log).create_key_with(&tenant, name, models, tenant_usage, limits).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Key {} ({}) issued for tenant {tenant}. It is shown once:", k.key_id, k.prefix));
                    run::say(&k.key);
                }
                KeyCmd::Revoke { key } => {
                    let id = admin::admin(&log).revoke_key(&key).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Key {id} revoked."));
                }
                KeyCmd::List { tenant } => {
                    let model = control::load(&log).await?;
                    for k in model.keys.values().filter(|k| tenant.as_ref().is_none_or(|t| *t == k.tenant)) {
                        let state = if k.revoked() {
                            "revoked"
                        } else if k.expired(control::now_us()) {
                            "expired"
                        } else {
                            "active"
                        };
                        let name = k.name.as_deref().unwrap_or("");
                        let mut extra = caps_columns(k.max_output_tokens, k.max_n);
                        if let Some(at) = k.expires_at_us.and_then(chrono::DateTime::from_timestamp_micros) {
                            extra.push_str(&format!(
                                "\texpires_at={}",
                                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            ));
                        }
                        run::say(&format!("{}\t{}\t{}…\t{state}\t{name}{extra}", k.key_id, k.tenant, k.prefix));
                    }
                }
            }
            Ok(())
        }
        Command::Channels(cmd) => {
            let log = run::open_log(&cfg).await?;
            match cmd {
                ChannelCmd::Add {
                    name,
                    provider,
                    base_url,
                    api_version,
                    api_key,
                    models,
                    priority,
                    weight,
                    insecure_http,
                    anthropic_beta,
                    proxy_pool,
                } => {
                    let master = master_key::load(&cfg.data_dir)?;
                    let c = control::NewChannel {
                        name: name.clone(),
                        provider,
                        base_url,
                        api_version,
                        api_keys: api_key,
                        models,
                        priority,
                        weight,
                        insecure_http,
                        anthropic_beta,
                        proxy_pool,
                    };
                    let admin = admin::admin(&log);
                    let added = admin.add_channel(&master, c).await?;
                    let id = added.channel_id;
                    let added: Vec<String> = added.more_keys.iter().map(|(k, f)| format!("{k} ({f})")).collect();
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Channel {name} added as {id}."));
                    if !added.is_empty() {
                        run::say(&format!("More keys: {}.", added.join(", ")));
                    }
                }
                ChannelCmd::Update {
                    channel,
                    name,
                    base_url,
                    api_key,
                    models,
                    priority,
                    weight,
                    api_version,
                    insecure_http,
                    anthropic_beta,
                    proxy_pool,
                } => {
                    let master = master_key::load(&cfg.data_dir)?;
                    let changes = control::ChannelChanges {
                        name,
                        base_url,
                        api_key,
                        models,
                        priority,
                        weight,
                        api_version,
                        insecure_http,
                        anthropic_beta,
                        enabled: None,
                        proxy_pool,
                    };
                    let id = admin::admin(&log).update_channel(&master, &channel, changes).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Channel {id} updated."));
                }
                ChannelCmd::Remove { channel } => {
                    let id = admin::admin(&log).remove_channel(&channel).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Channel {id} removed."));
                }
                ChannelCmd::List => {
                    for c in control::load(&log).await?.channels.values() {
                        // The key column is last so that scripts reading the first columns keep working.
                        let keys: Vec<String> =
                            c.keys.iter().map(|k| format!("{}:{}", k.key_id, k.state.as_str())).collect();
                        run::say(&format!(
                            "{}\t{}\t{}\t{}\t{}\t{}",
                            c.channel_id,
                            c.name,
                            c.provider,
                            c.base_url,
                            c.models.join(","),
                            keys.join(",")
                        ));
                    }
                }
                ChannelCmd::Keys(cmd) => channel_keys(&cfg, &log, cmd).await?,
            }
            Ok(())
        }
        Command::Proxies(cmd) => {
            let log = run::open_log(&cfg).await?;
            match cmd {
                ProxyCmd::Add { pool, url, name } => {
                    let master = master_key::load(&cfg.data_dir)?;
                    let (id, name) =
                        admin::admin(&log).add_proxy(&master, control::NewProxy { pool, url, name }).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Proxy {name} added as {id}."));
                }
                ProxyCmd::Remove { proxy } => {
                    let id = admin::admin(&log).remove_proxy(&proxy).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Proxy {id} removed."));
                }
                ProxyCmd::Disable { proxy } => {
                    let id = admin::admin(&log).set_proxy_enabled(&proxy, false).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Proxy {id} disabled."));
                }
                ProxyCmd::Enable { proxy } => {
                    let id = admin::admin(&log).set_proxy_enabled(&proxy, true).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Proxy {id} enabled."));
                }
                ProxyCmd::List => {
                    run::say("id\tpool\tname\turl\tstate\tuntil_us\torigin");
                    for p in control::load(&log).await?.proxies.values() {
                        let until = p.until_us.map(|u| u.to_string()).unwrap_or_default();
                        let origin = if p.from_pool_url { "pool_url" } else { "admin" };
                        run::say(&format!(
                            "{}\t{}\t{}\t{}\t{}\t{until}\t{origin}",
                            p.proxy_id,
                            p.pool,
                            p.name,
                            p.masked_url(),
                            p.state.as_str()
                        ));
                    }
                }
            }
            Ok(())
        }
        Command::Routes(cmd) => {
            let log = run::open_log(&cfg).await?;
            match cmd {
                RouteCmd::Set { model, strategy, fallback } => {
                    admin::admin(&log).set_route(&model, &strategy, fallback).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Route for {} set.", model.trim()));
                }
                RouteCmd::Remove { model } => {
                    admin::admin(&log).remove_route(&model).await?;
                    applied::wait(&cfg.data_dir, &log).await;
                    run::say(&format!("Route for {} removed.", model.trim()));
                }
                RouteCmd::List => {
                    run::say("model\tstrategy\tfallback");
                    for r in control::load(&log).await?.routes.values() {
                        run::say(&format!("{}\t{}\t{}", r.model, r.strategy.as_str(), r.fallback.join(",")));
                    }
                }
            }
            Ok(())
        }
        Command::Prices(PriceCmd::List) => {
            let log = run::open_log(&cfg).await?;
            let view = control::load(&log).await?;
            // The channel column is last so that scripts reading the first columns keep working.
            run::say("model\tcurrency\tinput\tcached\tcache_write\toutput\tset_by\tversion\tchannel");
            let model_wide = view.prices.iter().map(|(model, p)| (model, p, "-"));
            let overrides = view
                .channel_prices
                .iter()
                .flat_map(|(channel, by_model)| by_model.iter().map(move |(model, p)| (model, p, channel.as_str())));
            let mut rows: Vec<_> = model_wide.chain(overrides).collect();
            rows.sort_by(|a, b| (a.0, a.2 != "-", a.2).cmp(&(b.0, b.2 != "-", b.2)));
            for (model, p, channel) in rows {
                let amount = |n: Option<i64>| n.map_or_else(|| "-".to_owned(), schemas::format_nanos);
                run::say(&format!(
                    "{model}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{channel}",
                    p.published.currency,
                    amount(Some(p.published.input_per_mtok_nanos)),
                    amount(p.published.cached_input_per_mtok_nanos),
                    amount(p.published.cache_write_per_mtok_nanos),
                    amount(Some(p.published.output_per_mtok_nanos)),
                    p.actor.as_deref().unwrap_or("-"),
                    p.version
                ));
            }
            Ok(())
        }
        Command::Prices(PriceCmd::Set { model, channel, input, output, cached, cache_write, currency }) => {
            let log = run::open_log(&cfg).await?;
            let version = admin::admin(&log)
                .set_price(control::NewPrice {
                    model: &model,
                    channel: channel.as_deref(),
                    currency: &currency,
                    input: &input,
                    output: &output,
                    cached: cached.as_deref(),
                    cache_write: cache_write.as_deref(),
                })
                .await?;
            applied::wait(&cfg.data_dir, &log).await;
            match channel {
                Some(ch) => run::say(&format!("Price for {model} on channel {ch} published (version {version}).")),
                None => run::say(&format!("Price for {model} published (version {version}).")),
            }
            Ok(())
        }
        Command::Projections(ProjectionCmd::Rebuild { name }) => run::rebuild(cfg, &name).await,
        Command::Reports(ReportCmd::Usage { tenant, from, to, format, group_by, bom, as_of }) => {
            let opts = run::ReportOptions { format, group_by, bom, as_of };
            run::report_usage(cfg, &tenant, &from, &to, &opts).await
        }
        Command::Reports(ReportCmd::Billing { tenant, from, to, period, format, bom, as_of }) => {
            let opts = run::ReportOptions { format, group_by: period, bom, as_of };
            run::report_billing(cfg, tenant.as_deref(), &from, &to, &opts).await
        }
        Command::Users(cmd) => users::run(&cfg, cmd).await,
    }
}

/// `channels keys …`.
async fn channel_keys(cfg: &Config, log: &nats::EventLog, cmd: ChannelKeyCmd) -> anyhow::Result<()> {
    let admin = admin::admin(log);
    match cmd {
        ChannelKeyCmd::Add { channel, api_key } => {
            let master = master_key::load(&cfg.data_dir)?;
            let (id, key_id, fingerprint) = admin.add_key(&master, &channel, &api_key).await?;
            applied::wait(&cfg.data_dir, log).await;
            run::say(&format!("Key {key_id} ({fingerprint}) added to channel {id}."));
        }
        ChannelKeyCmd::Remove { channel, key_id } => {
            let id = admin.remove_key(&channel, &key_id).await?;
            applied::wait(&cfg.data_dir, log).await;
            run::say(&format!("Key {key_id} removed from channel {id}."));
        }
        ChannelKeyCmd::Disable { channel, key_id } => {
            let id = admin.set_key_enabled(&channel, &key_id, false).await?;
            applied::wait(&cfg.data_dir, log).await;
            run::say(&format!("Key {key_id} of channel {id} disabled."));
        }
        ChannelKeyCmd::Enable { channel, key_id } => {
            let id = admin.set_key_enabled(&channel, &key_id, true).await?;
            applied::wait(&cfg.data_dir, log).await;
            run::say(&format!("Key {key_id} of channel {id} enabled."));
        }
        ChannelKeyCmd::LowBalance { channel, key_id, amount } => {
            let amount = (amount != "off").then_some(amount.as_str());
            let id = admin.set_key_low_balance(&channel, &key_id, amount).await?;
            applied::wait(&cfg.data_dir, log).await;
            match amount {
                Some(a) => run::say(&format!("Key {key_id} of channel {id} is reported low below a balance of {a}.")),
                None => run::say(&format!("Key {key_id} of channel {id} has no low-balance threshold.")),
            }
        }
        ChannelKeyCmd::List { channel } => {
            let model = control::load(log).await?;
            let ch = model.find_channel(&channel).ok_or_else(|| control::AdminError::NoChannel(channel.clone()))?;
            let master = master_key::load(&cfg.data_dir).ok();
            run::say("key_id\tfingerprint\tstate\treason\tback_in\tby_admin");
            for k in control::key_views(ch, master.as_ref()) {
                // Seconds from now until a cool-down or open breaker ends.
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
                let until = match k.until_us {
                    Some(t) if t > now_us => format!("{}s", (t - now_us + 999_999) / 1_000_000),
                    Some(_) => "passed".to_owned(),
                    None => "-".to_owned(),
                };
                run::say(&format!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.key_id,
                    k.fingerprint,
                    k.state,
                    k.reason.as_deref().unwrap_or("-"),
                    until,
                    if k.manual { "yes" } else { "no" }
                ));
            }
        }
    }
    Ok(())
}
