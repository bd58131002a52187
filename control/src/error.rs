//! Why an admin operation was refused or failed. The messages are what the CLI prints.

/// An admin operation's error.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The tenant name is not a valid tenant id.
    #[error(transparent)]
    InvalidTenant(#[from] schemas::IdError),
    /// `tenants create` for a name that exists.
    #[error("tenant {0} already exists")]
    TenantExists(String),
    /// A key for a tenant that was never created.
    #[error("no tenant named {0}; create it with `llm-router tenants create {0}`")]
    NoTenant(String),
    /// No key matches (only the display prefix of what was given is echoed).
    #[error("no key matches {0:?}")]
    NoKey(String),
    /// A prefix that matches several keys.
    #[error("{count} keys match {needle:?}; give the key id")]
    AmbiguousKey {
        /// How many matched.
        count: usize,
        /// The display prefix of what was given (it may be a whole key).
        needle: String,
    },
    /// Revoking a revoked key.
    #[error("key {0} is already revoked")]
    AlreadyRevoked(String),
    /// A proxy URL that is not one (the message never quotes the URL: it may hold a password).
    #[error("invalid proxy URL: {0}")]
    BadProxyUrl(String),
    /// A pool or proxy name outside 1-64 letters, digits, `-`, `_`, `.`.
    #[error("invalid pool or proxy name {0:?}: use 1-64 letters, digits, '-', '_' or '.'")]
    BadProxyName(String),
    /// No live proxy with that name or id.
    #[error("no proxy {0:?}; see `llm-router proxies list`")]
    NoProxy(String),
    /// Proxy names are unique.
    #[error("a proxy named {0:?} exists")]
    ProxyNameTaken(String),
    /// The pool has this proxy already (same scheme, host and port).
    #[error("the pool has this proxy already, as {0:?}")]
    DuplicateProxy(String),
    /// A pool holds at most this many proxies.
    #[error("a pool holds at most {0} proxies")]
    TooManyProxies(usize),
    /// A channel named a pool that holds no proxy.
    #[error(
        "no proxy pool {0:?}: a pool exists while it holds a proxy; add one with `llm-router proxies add --pool {0} --url …`"
    )]
    UnknownPool(String),
    /// No live channel with that name or id.
    #[error("no channel {0:?}; see `llm-router channels list`")]
    NoChannel(String),
    /// Channel names are unique.
    #[error("a channel named {0:?} exists")]
    ChannelNameTaken(String),
    /// A provider outside the catalog.
    #[error("unknown provider {provider:?}; known: {known}")]
    UnknownProvider {
        /// What was given.
        provider: String,
        /// The catalog's names.
        known: String,
    },
    /// A provider without a default base URL and none given.
    #[error(
        "provider {0} has no default base URL; give --base-url (for azure the resource endpoint, \
         https://RESOURCE.openai.azure.com)"
    )]
    NoDefaultBaseUrl(String),
    /// Not an http(s) URL.
    #[error("base URL {0:?} must start with http:// or https://")]
    BadBaseUrl(String),
    /// `user:password@` in a base URL.
    #[error("base URL must not carry credentials; use --api-key")]
    CredentialsInUrl,
    /// The outbound-address policy refused the base URL.
    #[error("--base-url refused: {0}")]
    UrlRefused(String),
    /// An `--anthropic-beta` value that is not a beta name.
    #[error("--anthropic-beta {0:?} is not a beta name (letters, digits and -, at most 64)")]
    BadBeta(String),
    /// `--insecure-http` without a new base URL.
    #[error("--insecure-http goes with --base-url")]
    InsecureHttpWithoutUrl,
    /// `--api-version` for a provider that takes none.
    #[error("--api-version only applies to provider azure")]
    ApiVersionNotApplicable,
    /// A channel without models.
    #[error("a channel needs at least one model (--models m1,m2)")]
    NoModels,
    /// Weight 0.
    #[error("weight must be at least 1")]
    ZeroWeight,
    /// A provider that refuses every call without a key, and none given.
    #[error("provider {provider} needs --api-key (the gateway sends it as {header})")]
    KeyRequired {
        /// The provider.
        provider: String,
        /// The header the key travels in.
        header: &'static str,
    },
    /// `--name ""`.
    #[error("--name is empty")]
    EmptyName,
    /// `channels update` without a change.
    #[error(
        "nothing to change; give at least one of --name, --base-url, --api-key, --models, --priority, \
         --weight, --api-version"
    )]
    NothingToChange,
    /// `--model ""`.
    #[error("--model is empty")]
    EmptyModel,
    /// Not a three-letter currency code.
    #[error("currency must be an ISO code such as USD")]
    BadCurrency,
    /// An amount that is not a decimal.
    #[error("--{flag}: {source}")]
    BadAmount {
        /// The flag.
        flag: &'static str,
        /// Why.
        source: schemas::MoneyError,
    },
    /// Not an email address.
    #[error("not an email address (one @, no spaces, at most 254 characters)")]
    BadEmail,
    /// A password too short or too long.
    #[error(transparent)]
    BadPassword(schemas::password::PasswordError),
    /// No user with that id or email.
    #[error("no such user")]
    NoUser,
    /// The email belongs to a user already (disabled users keep theirs).
    #[error("a user with email {0} exists")]
    UserExists(String),
    /// A disabled user cannot be changed.
    #[error("user {0} is disabled")]
    UserDisabled(String),
    /// A display name that is empty, too long or holds control characters.
    #[error("a display name must be 1 to 128 characters without control characters")]
    BadDisplayName,
    /// Not an IANA time zone.
    #[error("unknown time zone {0:?}; give an IANA name such as Asia/Shanghai or UTC")]
    BadTimeZone(String),
    /// A request cap of zero (on a key) or beyond what the gateway accepts at all.
    #[error("{0} must be between 1 and {1}")]
    BadCap(&'static str, u64),
    /// A key's expiry that is not in the future.
    #[error("the expiry must be in the future")]
    ExpiryPast,
    /// `tenants update` without a change.
    #[error("nothing to change; give a display name, a time zone or a cap")]
    NoTenantChange,
    /// `users update` without a change.
    #[error("nothing to change; give a role or a password")]
    NoUserChange,
    /// The password hasher failed to run.
    #[error("the password could not be hashed")]
    Hashing,
    /// No key of the channel has that id.
    #[error("channel {channel} has no key {key_id:?}; see `llm-router channels keys list {channel}`")]
    NoUpstreamKey {
        /// The channel's id.
        channel: String,
        /// What was given (an id, never a key).
        key_id: String,
    },
    /// An empty `--api-key`.
    #[error("--api-key is empty")]
    EmptyApiKey,
    /// The key is on the channel already (compared opened, never printed).
    #[error("channel {0} has this key already (as {1})")]
    DuplicateApiKey(String, String),
    /// Removing the only key of a channel.
    #[error("key {0} is the channel's only key; add another first, or replace it with `channels update --api-key`")]
    LastApiKey(String),
    /// The same key given twice for one new channel.
    #[error("the same --api-key is given twice")]
    RepeatedApiKey,
    /// More keys than a channel may hold.
    #[error("a channel holds at most {0} keys")]
    TooManyApiKeys(usize),
    /// Enabling a key that is active, or disabling one an admin disabled.
    #[error("key {0} is {1} already")]
    KeyStateUnchanged(String, &'static str),
    /// Enabling a proxy that is active, or disabling one an admin disabled.
    #[error("proxy {0} is {1} already")]
    ProxyStateUnchanged(String, &'static str),
    /// A sealed key could not be opened to compare it (the wrong master key).
    #[error("a key of channel {0} could not be opened with this master key")]
    KeyUnopenable(String),
    /// A route strategy outside the three.
    #[error("unknown strategy {0:?}; known: priority, least-latency, lowest-cost")]
    UnknownStrategy(String),
    /// `routes remove` for a model without a route.
    #[error("no route for model {0:?}; see `llm-router routes list`")]
    NoRoute(String),
    /// A fallback list that names the model itself, or too many models.
    #[error("--fallback: {0}")]
    BadFallback(String),
    /// The log refused or failed the append.
    #[error("Failed to append {what}: {source}")]
    Append {
        /// The event type.
        what: &'static str,
        /// The log's error.
        source: nats::LogError,
    },
    /// The log could not be read.
    #[error("Failed to {what}: {source}")]
    Log {
        /// What was being done.
        what: &'static str,
        /// The log's error.
        source: nats::LogError,
    },
    /// Disabling or demoting the only enabled owner would leave nobody able to manage owners.
    #[error("user {0} is the last enabled owner; make another user owner first")]
    LastOwner(String),
    /// A conditional write lost to other control events every time it was tried.
    #[error("the control stream kept changing while this change was checked; nothing was changed, try again")]
    Busy,
}

impl AdminError {
    /// Wraps a log error met while doing `what`.
    pub(crate) fn log(what: &'static str) -> impl Fn(nats::LogError) -> AdminError {
        move |source| AdminError::Log { what, source }
    }
}
