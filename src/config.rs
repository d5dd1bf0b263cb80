//! Configuration: a TOML file, then environment variables, into typed structs that reject
//! unknown keys (a typo is an error at start, not a silent default).
//!
//! Environment variables are `SWITCHYARD_` + the path with `__` between levels, e.g.
//! `SWITCHYARD_SERVER__LISTEN=0.0.0.0:4000` or `SWITCHYARD_UPSTREAMS__CRM__CLIENT_SECRET=...`.
//! With no upstream configured at all, Switchyard starts the embedded sandbox and points every
//! upstream at it; a build without the `sandbox` feature refuses to start then, and has no
//! `[sandbox]` section.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use url::Url;

#[cfg(feature = "sandbox")]
use sandbox::SandboxConfig;

/// Everything Switchyard reads at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP listener and request limits.
    pub server: ServerConfig,
    /// Who may call: the OIDC provider whose tokens are accepted.
    pub auth: AuthConfig,
    /// The upstream systems. All absent: the embedded sandbox is started.
    pub upstreams: UpstreamsConfig,
    /// Knobs of the embedded sandbox (latency, faults, seed); ignored with real upstreams.
    #[cfg(feature = "sandbox")]
    pub sandbox: SandboxConfig,
    /// Log format and filter.
    pub log: LogConfig,
    /// Traces: spans exported over OTLP, W3C trace context to and from the upstreams.
    pub telemetry: TelemetryConfig,
    /// The event bus: Redis Streams across replicas, memory for one instance.
    pub events: EventsConfig,
    /// Webhooks from the upstreams: their signing secrets and replay window.
    pub webhooks: WebhooksConfig,
    /// Websocket and SSE subscriptions: limits and timeouts.
    pub subscriptions: SubscriptionsConfig,
    /// The cross-request entity cache.
    pub cache: CacheConfig,
    /// Automatic persisted queries (Apollo's protocol): documents registered by hash.
    pub persisted_queries: PersistedQueriesConfig,
    /// Rate limits per client IP and per user.
    pub rate_limit: RateLimitConfig,
    /// Push delivery: FCM, APNs, Web Push and e-mail; a channel left out is off.
    pub push: PushConfig,
    /// Devices, preferences and notification centres.
    pub notifications: NotificationsConfig,
    /// The push outbox: a Redis stream shared by the replicas, memory for one instance.
    pub outbox: OutboxConfig,
    /// Idempotent mutations: how long a key's result answers replays.
    pub idempotency: IdempotencyConfig,
    /// Delta sync (`Query.sync`): the key its tokens are signed with.
    pub sync: SyncConfig,
}

/// Idempotent mutations (`resolvers::idempotency`). Their records are kept where the
/// notification store keeps its claims (`[notifications] redis_url`: shared by replicas).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// How long a mutation's result answers replays of its key (24 h): longer than an app
    /// stays offline with changes queued.
    pub window_secs: u64,
    /// Largest result kept, as JSON (64 KiB); a replay of a larger one answers
    /// `IDEMPOTENCY_OUTCOME_UNKNOWN`.
    pub max_result_bytes: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        let graph = resolvers::idempotency::IdempotencyConfig::default();
        Self {
            window_secs: graph.window.as_secs(),
            max_result_bytes: graph.max_result_bytes,
        }
    }
}

impl IdempotencyConfig {
    /// What the graph is given.
    pub fn graph(&self) -> resolvers::idempotency::IdempotencyConfig {
        resolvers::idempotency::IdempotencyConfig {
            window: Duration::from_secs(self.window_secs),
            max_result_bytes: self.max_result_bytes,
        }
    }
}

/// Delta sync (`Query.sync`): apps that were offline ask for what changed since their token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// The HMAC-SHA256 key sync tokens are signed with (at least 32 bytes). Every replica
    /// must have the same one, or a token from one is refused by the others. Absent: a
    /// random key made at start, so tokens last as long as the process (fine for one
    /// instance and the embedded sandbox; logged as a warning with the production profile).
    pub token_secret: Option<Secret>,
}

/// The entity cache (customers, products, orders, parcel tracking; see `resolvers::cache`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Cache at all.
    pub enabled: bool,
    /// Share the cache in Redis; absent: in memory, per replica (still correct with several
    /// replicas, since every replica invalidates on every event).
    pub redis_url: Option<Secret>,
    /// Prefix of the cache's Redis keys.
    pub key_prefix: String,
    /// Most entries of the in-memory cache.
    pub max_entries: usize,
    /// How long an entity is kept past its TTL, to be served (marked in `extensions.stale`)
    /// when its upstream fails or its breaker is open; 0: never served stale.
    #[serde(rename = "stale_if_error_ms", with = "millis")]
    pub stale_if_error: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_url: None,
            key_prefix: "switchyard:cache:".to_owned(),
            max_entries: 100_000,
            stale_if_error: Duration::from_secs(600),
        }
    }
}

/// Automatic persisted queries: the documents apps registered, by their SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistedQueriesConfig {
    /// Take hash-only requests and register documents sent with their hash.
    pub enabled: bool,
    /// Keep the documents in Redis (shared by every replica); absent: in memory, per replica.
    pub redis_url: Option<Secret>,
    /// Prefix of their Redis keys.
    pub key_prefix: String,
    /// Most documents kept in memory.
    pub max_entries: usize,
    /// How long a registered document is kept (each registration renews it).
    pub ttl_secs: u64,
    /// The trusted documents: a manifest in Apollo's format
    /// (`{"format": "apollo-persisted-query-manifest", "operations": [{id, body, ...}]}`) or
    /// GraphQL Codegen's (`{"<sha256>": "<document>"}`); absent: the operations built into the
    /// binary (`schema/operations/`, as `switchyard manifest` prints them).
    pub manifest: Option<PathBuf>,
    /// Run only trusted documents (`PERSISTED_QUERY_NOT_IN_LIST` otherwise); default: on in
    /// the production profile, off in development.
    pub trusted_only: Option<bool>,
    /// Clients (their `apollographql-client-name` header) that may send any document.
    pub trusted_clients: Vec<String>,
}

impl Default for PersistedQueriesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_url: None,
            key_prefix: "switchyard:apq:".to_owned(),
            max_entries: 2_000,
            ttl_secs: 24 * 3600,
            manifest: None,
            trusted_only: None,
            trusted_clients: Vec::new(),
        }
    }
}

/// Rate limits per client IP and per signed-in user, per minute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Limit at all (off by default: set the limits your traffic needs, then turn it on).
    pub enabled: bool,
    /// Operations a minute from one client address.
    pub per_ip_per_minute: u64,
    /// Operations a minute of one signed-in user.
    pub per_user_per_minute: u64,
    /// Proxies in front of Switchyard that each append to `X-Forwarded-For` (0: the
    /// connection's peer is the client).
    pub trusted_proxies: usize,
    /// Count in Redis (shared by every replica); absent: in memory, per replica.
    pub redis_url: Option<Secret>,
    /// Prefix of the counters' Redis keys.
    pub key_prefix: String,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            per_ip_per_minute: 1_200,
            per_user_per_minute: 600,
            trusted_proxies: 0,
            redis_url: None,
            key_prefix: "switchyard:ratelimit:".to_owned(),
        }
    }
}

/// Where devices, preferences and notification centres are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Keep them in Redis (shared by every replica; needed with several); absent: in memory,
    /// for one instance, lost at restart.
    pub redis_url: Option<Secret>,
    /// Prefix of their Redis keys.
    pub key_prefix: String,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            key_prefix: "switchyard:notify:".to_owned(),
        }
    }
}

/// The event bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// `redis://host:6379/0` (or `rediss://`, `redis+unix:///path`): share events across
    /// replicas through a Redis stream. Absent: an in-memory bus (one instance only). With
    /// `cluster`, any one node of the cluster (`redis://` or `rediss://`).
    pub redis_url: Option<Secret>,
    /// `redis_url` is a node of a Redis Cluster: the bus learns the others from it, and each
    /// partition's keys go to the node holding their slot.
    pub cluster: bool,
    /// With `cluster`: more nodes to start from (and to reconnect through) when `redis_url`'s
    /// is down; same URL forms as `redis_url`.
    pub cluster_nodes: Vec<Secret>,
    /// How many streams the events are spread over, by customer (each customer's events stay
    /// in one stream, in order). 1: the single stream `stream_key`, as before partitions
    /// existed; more: `{<stream_key>:p<i>}`, each read by every replica.
    pub partitions: usize,
    /// The stream's key (with partitions, or on a cluster, the prefix of their hash tags).
    pub stream_key: String,
    /// Roughly how many events the stream (each partition's) keeps (`XADD MAXLEN ~`).
    pub stream_max_len: usize,
    /// How long an event id is remembered to absorb duplicate deliveries.
    pub dedup_ttl_secs: u64,
    /// How many events this replica's hub keeps for subscribers that lag.
    pub hub_capacity: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            cluster: false,
            cluster_nodes: Vec::new(),
            partitions: 1,
            stream_key: "switchyard:events".to_owned(),
            stream_max_len: 100_000,
            dedup_ttl_secs: 24 * 3600,
            hub_capacity: 1024,
        }
    }
}

/// Webhooks from the upstreams (`POST /webhooks/{backend|crm|process|carrier}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Oldest a webhook's timestamp may be (replay protection), and how far in the future.
    pub tolerance_secs: u64,
    /// HMAC-SHA256 secret of the backend's webhooks.
    pub backend_secret: Option<Secret>,
    /// HMAC-SHA256 secret of the CRM's webhooks.
    pub crm_secret: Option<Secret>,
    /// HMAC-SHA256 secret of the process server's webhooks.
    pub process_secret: Option<Secret>,
    /// HMAC-SHA256 secret of the carrier's webhooks.
    pub carrier_secret: Option<Secret>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            tolerance_secs: 300,
            backend_secret: None,
            crm_secret: None,
            process_secret: None,
            carrier_secret: None,
        }
    }
}

/// Subscriptions over websockets and SSE.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionsConfig {
    /// Most open websocket/SSE connections per instance (503 beyond).
    pub max_connections: usize,
    /// Most subscriptions on one connection.
    pub max_subscriptions_per_connection: usize,
    /// How long a websocket may stay without `connection_init` (then 4408).
    pub init_timeout_ms: u64,
    /// Interval of server pings (graphql-transport-ws) / keep-alives (legacy, SSE).
    pub keepalive_ms: u64,
    /// Messages queued for one connection before it counts as too slow.
    pub send_buffer: usize,
    /// How long a `@live` query gathers a burst of events before it runs again.
    pub live_coalesce_ms: u64,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            max_subscriptions_per_connection: 100,
            init_timeout_ms: 10_000,
            keepalive_ms: 15_000,
            send_buffer: 64,
            live_coalesce_ms: 50,
        }
    }
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Longest a GraphQL request may take before it is answered 504.
    #[serde(rename = "request_timeout_ms", with = "millis")]
    pub request_timeout: Duration,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Most operations in one batched request (an array body); 0 refuses batches.
    pub max_batch_size: usize,
    /// Largest result of one operation (or one subscription event), serialized; a larger
    /// one is answered with a `RESPONSE_TOO_LARGE` error instead.
    pub max_response_bytes: usize,
    /// Longest a connection may take to send a request's headers (slowloris); then it is
    /// closed.
    #[serde(rename = "header_read_timeout_ms", with = "millis")]
    pub header_read_timeout: Duration,
    /// Longest a request body may take to arrive in full; then 408.
    #[serde(rename = "body_read_timeout_ms", with = "millis")]
    pub body_read_timeout: Duration,
    /// Refuse GETs a browser could send cross-site without a preflight (see the README).
    pub csrf_prevention: bool,
    /// Origins (`https://shop.example.com`) whose web apps may call from the browser (CORS);
    /// `["*"]`: any; empty: none but the server's own (the playground).
    pub cors_allow_origins: Vec<String>,
    /// Most HTTP connections open at once (websockets and SSE streams included); beyond,
    /// new ones wait to be accepted.
    pub max_connections: usize,
    /// `development` (the default) or `production`: the defaults of the three settings
    /// below, which a public endpoint wants off.
    pub profile: Profile,
    /// Serve the playground at `/playground/`; default: on in development, off in
    /// production.
    pub playground: Option<bool>,
    /// Answer introspection queries (the playground needs it); default: as `playground`.
    pub introspection: Option<bool>,
    /// Say "Did you mean ...?" in validation errors; default: as `playground`.
    pub suggestions: Option<bool>,
    /// Answer Apollo Federation's `_entities` and `_service` (what a gateway in front asks);
    /// default: as `playground`. A public endpoint without a gateway wants them off: they
    /// read entities and the whole schema around the other limits.
    pub federation: Option<bool>,
}

/// What the server's defaults are made for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A developer's machine or a staging endpoint: playground, introspection, suggestions.
    #[default]
    Development,
    /// A public endpoint: none of them unless set.
    Production,
}

impl ServerConfig {
    fn development(&self) -> bool {
        self.profile == Profile::Development
    }

    /// Whether the production profile is on.
    pub fn production(&self) -> bool {
        self.profile == Profile::Production
    }

    /// Whether the playground is served.
    pub fn playground_enabled(&self) -> bool {
        self.playground.unwrap_or(self.development())
    }

    /// Whether introspection is answered.
    pub fn introspection_enabled(&self) -> bool {
        self.introspection.unwrap_or(self.development())
    }

    /// Whether validation errors suggest names.
    pub fn suggestions_enabled(&self) -> bool {
        self.suggestions.unwrap_or(self.development())
    }

    /// Whether `_entities` and `_service` are answered.
    pub fn federation_enabled(&self) -> bool {
        self.federation.unwrap_or(self.development())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 1 << 20,
            max_batch_size: 16,
            max_response_bytes: 8 << 20,
            header_read_timeout: Duration::from_secs(10),
            csrf_prevention: true,
            cors_allow_origins: Vec::new(),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 25_000,
            profile: Profile::Development,
            playground: None,
            introspection: None,
            suggestions: None,
            federation: None,
        }
    }
}

/// The OIDC provider.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The issuer (`iss`) tokens must carry, exactly as the provider writes it (a trailing
    /// slash counts); its discovery document names the JWKS. Absent with the sandbox: the
    /// sandbox's dev issuer.
    pub issuer: Option<String>,
    /// The JWKS URL, when it should not be discovered from the issuer.
    pub jwks_url: Option<Url>,
    /// The audience (`aud`) tokens must carry.
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp`/`nbf`.
    pub leeway_secs: Option<u64>,
    /// Least seconds between two JWKS fetches that tokens with an unknown key id trigger
    /// (key rotation); default 30. Bounds what a flood of forged key ids costs the provider.
    pub jwks_refresh_secs: Option<u64>,
    /// Claim holding the roles (`customer` / `agent`); default `roles`.
    pub roles_claim: Option<String>,
    /// Claim holding a customer's customer id; default `customer_id`.
    pub customer_id_claim: Option<String>,
}

/// All upstreams.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamsConfig {
    /// Backend integration microservices.
    pub backend: Option<BackendConfig>,
    /// The CRM (Salesforce REST).
    pub crm: Option<CrmConfig>,
    /// The process server (KIE Server REST).
    pub process: Option<ProcessConfig>,
    /// The parcel carrier's tracking API.
    pub carrier: Option<CarrierConfig>,
}

/// How to call one upstream: shared by every upstream's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallPolicy {
    /// Longest one HTTP call may take.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// Extra tries for reads that failed with a timeout, a connection error or a 5xx
    /// (writes are never retried).
    pub retries: u32,
    /// Most calls in flight to this upstream at once, across all requests.
    pub concurrency: usize,
    /// Failures in a row (5xx, timeouts, failed connections) that open the circuit breaker;
    /// 0: no breaker.
    pub breaker_failures: u32,
    /// How long an open breaker fails calls at once before it lets a probe through.
    #[serde(rename = "breaker_open_ms", with = "millis")]
    pub breaker_open: Duration,
    /// Share of the last 20 calls failed that opens the breaker too (0: only failures in a
    /// row open it).
    pub breaker_failure_rate: f64,
    /// Longest a call waits for room in the concurrency budget before it gives up (its
    /// fields `null` with `UPSTREAM_UNAVAILABLE`): a deadline, not a queue.
    #[serde(rename = "queue_timeout_ms", with = "millis")]
    pub queue_timeout: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            retries: 1,
            concurrency: 32,
            breaker_failures: 5,
            breaker_open: Duration::from_secs(5),
            breaker_failure_rate: 0.5,
            queue_timeout: Duration::from_secs(1),
        }
    }
}

/// The backend integration microservices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Base URL, e.g. `https://backend.internal/api`.
    pub url: Url,
    /// Bearer token Switchyard presents.
    pub token: Secret,
    /// Timeouts, retries, concurrency.
    #[serde(default)]
    pub policy: CallPolicy,
}

/// The CRM (Salesforce REST API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmConfig {
    /// Where to get tokens: `https://login.salesforce.com` or the org's My Domain; API calls
    /// go to the `instance_url` the token answer names.
    pub login_url: Url,
    /// Connected app consumer key (client credentials flow).
    pub client_id: String,
    /// Connected app consumer secret.
    pub client_secret: Secret,
    /// REST API version, e.g. `v60.0`.
    #[serde(default = "default_crm_api_version")]
    pub api_version: String,
    /// Timeouts, retries, concurrency.
    #[serde(default)]
    pub policy: CallPolicy,
}

fn default_crm_api_version() -> String {
    "v60.0".to_owned()
}

/// The process server (jBPM KIE Server REST API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Base URL up to and including `/kie-server/services/rest/server`.
    pub url: Url,
    /// HTTP Basic user.
    pub user: String,
    /// HTTP Basic password.
    pub password: Secret,
    /// Container (KJAR deployment) holding the return process.
    #[serde(default = "default_container")]
    pub container: String,
    /// Process definition id of the return process.
    #[serde(default = "default_return_process")]
    pub return_process: String,
    /// Timeouts, retries, concurrency.
    #[serde(default)]
    pub policy: CallPolicy,
}

fn default_container() -> String {
    "returns".to_owned()
}

fn default_return_process() -> String {
    "returns.ReturnRequest".to_owned()
}

/// The parcel carrier's tracking API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierConfig {
    /// Base URL.
    pub url: Url,
    /// API key sent as `X-Api-Key`.
    pub api_key: Secret,
    /// Longest `Retry-After` (seconds) Switchyard waits out once on a 429 before giving up.
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after_secs: u64,
    /// Timeouts, retries, concurrency (the carrier rate limits: keep concurrency low).
    #[serde(default = "carrier_policy")]
    pub policy: CallPolicy,
}

fn default_max_retry_after() -> u64 {
    2
}

fn carrier_policy() -> CallPolicy {
    CallPolicy {
        concurrency: 8,
        ..CallPolicy::default()
    }
}

/// The push delivery channels (`[push.fcm]`, `[push.apns]`, `[push.webpush]`,
/// `[push.email]`). Each is optional: a channel that is not configured is off, and a
/// notification for it is rejected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Firebase Cloud Messaging, HTTP v1 (Android, and apps that use FCM on iOS and the web).
    pub fcm: Option<FcmConfig>,
    /// Apple Push Notification service, token-based (`.p8` key).
    pub apns: Option<ApnsConfig>,
    /// Web Push (RFC 8030) with VAPID (RFC 8292), to browsers' push services.
    pub webpush: Option<WebPushConfig>,
    /// E-mail over SMTP.
    pub email: Option<EmailConfig>,
}

/// How one push channel calls its provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelPolicy {
    /// Longest one call to the provider may take (the token exchange included).
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// Most calls in flight to this provider at once, across the replica.
    pub concurrency: usize,
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            concurrency: 32,
        }
    }
}

/// FCM HTTP v1.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The service account's JSON key file, as the Firebase console downloads it
    /// (`project_id`, `client_email`, `private_key`, `private_key_id`, `token_uri` are read).
    pub service_account_file: PathBuf,
    /// Base URL of the FCM API.
    #[serde(default = "default_fcm_url")]
    pub base_url: Url,
    /// Timeout and concurrency.
    #[serde(default)]
    pub policy: ChannelPolicy,
}

fn default_fcm_url() -> Url {
    Url::parse("https://fcm.googleapis.com").expect("a valid URL")
}

/// APNs with a provider token (a `.p8` signing key of the Apple Developer account).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The Apple Developer team id (the provider token's `iss`).
    pub team_id: String,
    /// The key id of the `.p8` key (the provider token's `kid`).
    pub key_id: String,
    /// The `.p8` signing key (PKCS#8 PEM).
    pub key_file: PathBuf,
    /// APNs' production environment (devices with App Store and TestFlight builds).
    #[serde(default = "default_apns_production_url")]
    pub production_url: Url,
    /// APNs' development environment (devices with development builds).
    #[serde(default = "default_apns_development_url")]
    pub development_url: Url,
    /// A CA certificate (PEM) to trust besides the system's, e.g. a test server's.
    pub ca_file: Option<PathBuf>,
    /// Timeout and concurrency.
    #[serde(default)]
    pub policy: ChannelPolicy,
}

fn default_apns_production_url() -> Url {
    Url::parse("https://api.push.apple.com").expect("a valid URL")
}

fn default_apns_development_url() -> Url {
    Url::parse("https://api.sandbox.push.apple.com").expect("a valid URL")
}

/// Web Push with VAPID.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushConfig {
    /// The VAPID private key: a raw P-256 scalar, base64url (what `web-push
    /// generate-vapid-keys` prints). Give this or `vapid_private_key_file`.
    pub vapid_private_key: Option<Secret>,
    /// The VAPID private key as a PEM file (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`).
    pub vapid_private_key_file: Option<PathBuf>,
    /// Who push services contact about our traffic: a `mailto:` or `https:` URI (the JWT's
    /// `sub`).
    pub subject: String,
    /// Accept subscription endpoints over plain `http://` (local testing only).
    #[serde(default)]
    pub allow_http: bool,
    /// Timeout and concurrency.
    #[serde(default)]
    pub policy: ChannelPolicy,
}

/// E-mail over SMTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server (relay or submission server).
    pub host: String,
    /// Its port; default 587 with `starttls`, 465 with `tls`, 25 with `none`.
    pub port: Option<u16>,
    /// How the connection is secured.
    #[serde(default)]
    pub tls: EmailTls,
    /// SMTP AUTH user (with `password`).
    pub username: Option<String>,
    /// SMTP AUTH password.
    pub password: Option<Secret>,
    /// The `From` of every message, e.g. `Switchyard <notifications@example.com>`.
    pub from: String,
    /// The name Switchyard gives in `EHLO`; default the machine's host name.
    pub helo_name: Option<String>,
    /// A CA certificate (PEM) to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Timeout and concurrency (concurrency is also the size of the connection pool).
    #[serde(default)]
    pub policy: ChannelPolicy,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain SMTP upgraded with STARTTLS, which must succeed (submission, port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No TLS at all (a local relay, tests).
    None,
}

impl PushConfig {
    /// Checks what serde cannot; the files are read when the channels are built.
    pub fn validate(&self) -> anyhow::Result<()> {
        let policies = [
            ("fcm", self.fcm.as_ref().map(|c| &c.policy)),
            ("apns", self.apns.as_ref().map(|c| &c.policy)),
            ("webpush", self.webpush.as_ref().map(|c| &c.policy)),
            ("email", self.email.as_ref().map(|c| &c.policy)),
        ];
        for (channel, policy) in policies {
            let Some(policy) = policy else { continue };
            if policy.timeout.is_zero() {
                anyhow::bail!("push.{channel}.policy.timeout_ms must be more than 0");
            }
            if policy.concurrency == 0 {
                anyhow::bail!("push.{channel}.policy.concurrency must be at least 1");
            }
        }
        if let Some(apns) = &self.apns
            && (apns.team_id.trim().is_empty() || apns.key_id.trim().is_empty())
        {
            anyhow::bail!("push.apns.team_id and push.apns.key_id must not be empty");
        }
        if let Some(webpush) = &self.webpush {
            match (&webpush.vapid_private_key, &webpush.vapid_private_key_file) {
                (Some(_), Some(_)) => anyhow::bail!(
                    "push.webpush: give vapid_private_key or vapid_private_key_file, not both"
                ),
                (None, None) => {
                    anyhow::bail!("push.webpush needs vapid_private_key or vapid_private_key_file")
                }
                _ => {}
            }
            let subject = webpush.subject.as_str();
            let contact = subject
                .strip_prefix("mailto:")
                .or_else(|| subject.strip_prefix("https://"));
            if contact.is_none_or(str::is_empty) {
                anyhow::bail!(
                    "push.webpush.subject must be a mailto: or https: URI, got {subject:?}"
                );
            }
        }
        if let Some(email) = &self.email {
            if email.host.trim().is_empty() {
                anyhow::bail!("push.email.host must not be empty");
            }
            if email.username.is_some() != email.password.is_some() {
                anyhow::bail!("push.email: give username and password together, or neither");
            }
        }
        Ok(())
    }
}

/// The push outbox (`crate::notify::outbox`): where notifications wait to be sent, and how
/// sends are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// `redis://host:6379/0` (or `rediss://`, `redis+unix:///path`): a Redis stream read by a
    /// consumer group that every replica joins, so each job is sent by one replica and
    /// survives a restart. Absent: an in-memory queue (one instance, lost at restart).
    pub redis_url: Option<Secret>,
    /// The stream's key; `<stream_key>:delayed` (a sorted set of jobs not due yet),
    /// `<stream_key>:dead` (the dead letters) and `<stream_key>:job:<id>` (enqueued-job
    /// markers) go beside it.
    pub stream_key: String,
    /// Most sends of one job; a job still refused as transient after this many is
    /// dead-lettered.
    pub max_attempts: u32,
    /// How long a job may stay read but unacknowledged by a replica before another replica
    /// takes it over (its sender is presumed dead). A send that takes longer than half of
    /// this is abandoned and retried, so a live sender is never overtaken.
    pub claim_idle_ms: u64,
    /// Most sends in flight at once on this replica.
    pub senders: usize,
    /// The first retry waits up to this long (full jitter), doubling with each attempt.
    pub backoff_base_ms: u64,
    /// The longest backoff between two attempts (a provider's `Retry-After` may ask for more,
    /// up to a day).
    pub backoff_max_ms: u64,
    /// How long a job id is remembered, so that enqueueing the same job again (a retried
    /// enqueue, or several replicas turning one event into the same jobs) stores it once.
    pub dedup_ttl_secs: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            stream_key: "switchyard:outbox".to_owned(),
            max_attempts: 8,
            claim_idle_ms: 30_000,
            senders: 16,
            backoff_base_ms: 1_000,
            backoff_max_ms: 600_000,
            dedup_ttl_secs: 3_600,
        }
    }
}

impl OutboxConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.stream_key.is_empty() {
            anyhow::bail!("outbox.stream_key must not be empty");
        }
        if self.max_attempts == 0 {
            anyhow::bail!("outbox.max_attempts must be at least 1");
        }
        if self.claim_idle_ms < 100 {
            anyhow::bail!("outbox.claim_idle_ms must be at least 100 (half of it bounds one send)");
        }
        if self.senders == 0 {
            anyhow::bail!("outbox.senders must be at least 1");
        }
        if self.backoff_base_ms == 0 || self.backoff_base_ms > self.backoff_max_ms {
            anyhow::bail!(
                "outbox.backoff_base_ms must be at least 1 and at most outbox.backoff_max_ms"
            );
        }
        if self.dedup_ttl_secs == 0 {
            anyhow::bail!("outbox.dedup_ttl_secs must be at least 1");
        }
        Ok(())
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` for one JSON object per line (production), `pretty` for people.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info,switchyard=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".to_owned(),
        }
    }
}

/// Traces (see `crate::telemetry`). Off unless `otlp_endpoint` is set.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OpenTelemetry collector's OTLP/HTTP base URL (e.g. `http://otel-collector:4318`);
    /// spans are posted to `<otlp_endpoint>/v1/traces` as protobuf. Absent: no spans are
    /// exported and no trace context is propagated.
    pub otlp_endpoint: Option<Url>,
    /// `service.name` of the exported spans: what the tracing backend lists them under.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "switchyard".to_owned(),
        }
    }
}

impl TelemetryConfig {
    /// The endpoint is an http(s) URL, the service has a name.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.otlp_endpoint
            && (!matches!(url.scheme(), "http" | "https") || url.host().is_none())
        {
            anyhow::bail!("telemetry.otlp_endpoint must be an http(s) URL with a host, got {url}");
        }
        if self.service_name.trim().is_empty() {
            anyhow::bail!("telemetry.service_name must not be empty");
        }
        Ok(())
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl SyncConfig {
    /// Fewest bytes of `token_secret`: a shorter HMAC key could be guessed.
    pub const MIN_SECRET_BYTES: usize = 32;

    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(secret) = &self.token_secret
            && secret.expose().len() < Self::MIN_SECRET_BYTES
        {
            anyhow::bail!(
                "sync.token_secret must be at least {} bytes",
                Self::MIN_SECRET_BYTES
            );
        }
        Ok(())
    }
}

/// A secret (password, key, token): never printed, never logged.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Config {
    /// Reads the file (when given) and then `SWITCHYARD_*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        // SWITCHYARD_CONFIG names the file itself (see main), not a setting.
        figment = figment.merge(Env::prefixed("SWITCHYARD_").ignore(&["CONFIG"]).split("__"));
        #[cfg(not(feature = "sandbox"))]
        if figment.contains("sandbox") {
            anyhow::bail!(
                "invalid configuration: this build of Switchyard has no sandbox (it was built \
                 without the `sandbox` feature): remove the [sandbox] section and any \
                 SWITCHYARD_SANDBOX__* variables"
            );
        }
        let config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        let u = &self.upstreams;
        let given = [
            ("backend", u.backend.is_some()),
            ("crm", u.crm.is_some()),
            ("process", u.process.is_some()),
            ("carrier", u.carrier.is_some()),
        ];
        let missing: Vec<String> = given
            .iter()
            .filter(|(_, given)| !given)
            .map(|(name, _)| format!("[upstreams.{name}]"))
            .collect();
        if !missing.is_empty() && missing.len() < given.len() {
            anyhow::bail!(
                "configure all four upstreams or none (none starts the embedded sandbox, in a \
                 build that has it): {} missing",
                missing.join(", ")
            );
        }
        match &self.auth.issuer {
            None if self.has_upstreams() => {
                anyhow::bail!("auth.issuer is required with real upstreams")
            }
            Some(issuer) if Url::parse(issuer).is_err() => {
                anyhow::bail!("auth.issuer is not a URL: {issuer:?}")
            }
            _ => {}
        }
        if self.server.max_response_bytes == 0 {
            anyhow::bail!("server.max_response_bytes must be more than 0");
        }
        if self.idempotency.window_secs == 0 || self.idempotency.max_result_bytes == 0 {
            anyhow::bail!(
                "idempotency.window_secs and idempotency.max_result_bytes must be more than 0"
            );
        }
        self.push.validate()?;
        self.outbox.validate()?;
        self.telemetry.validate()?;
        self.sync.validate()?;
        Ok(())
    }

    /// Whether the upstreams are configured (all four, once [`Config::validate`] passed).
    /// Without them the embedded sandbox stands in, in a build that has it.
    pub fn has_upstreams(&self) -> bool {
        self.upstreams.backend.is_some()
    }
}

/// Durations in config are whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Config, String> {
        Figment::from(Toml::string(toml))
            .extract()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn telemetry_is_off_by_default_and_takes_only_http_endpoints() {
        let off = parse("").unwrap();
        assert_eq!(off.telemetry.otlp_endpoint, None);
        assert_eq!(off.telemetry.service_name, "switchyard");
        let on = parse(
            "[telemetry]\notlp_endpoint = \"http://collector:4318\"\nservice_name = \"bff-eu\"\n",
        )
        .unwrap();
        on.telemetry.validate().unwrap();
        assert_eq!(
            on.telemetry.otlp_endpoint.map(String::from).as_deref(),
            Some("http://collector:4318/")
        );
        assert_eq!(on.telemetry.service_name, "bff-eu");
        let grpc = parse("[telemetry]\notlp_endpoint = \"grpc://collector:4317\"\n").unwrap();
        assert!(grpc.telemetry.validate().is_err());
        assert!(parse("[telemetry]\nendpoint = \"http://collector:4318\"\n").is_err());
    }

    #[test]
    fn the_outbox_section_is_typed_with_defaults() {
        let config = parse(
            "[outbox]\nredis_url = \"redis://127.0.0.1:6380/0\"\nmax_attempts = 3\nsenders = 4\n",
        )
        .unwrap();
        let outbox = &config.outbox;
        assert_eq!(
            outbox.redis_url.as_ref().map(Secret::expose),
            Some("redis://127.0.0.1:6380/0")
        );
        assert_eq!((outbox.max_attempts, outbox.senders), (3, 4));
        assert_eq!(outbox.stream_key, "switchyard:outbox");
        assert_eq!(outbox.claim_idle_ms, 30_000);
        assert_eq!(
            (outbox.backoff_base_ms, outbox.backoff_max_ms),
            (1_000, 600_000)
        );
        config.validate().unwrap();
        assert!(
            parse("").unwrap().outbox.redis_url.is_none(),
            "memory by default"
        );
    }

    #[test]
    fn the_outbox_section_refuses_unknown_keys_and_unworkable_values() {
        let typo = parse("[outbox]\nmax_atempts = 3\n")
            .unwrap_err()
            .to_string();
        assert!(typo.contains("max_atempts"), "{typo}");
        for (toml, key) in [
            ("max_attempts = 0", "outbox.max_attempts"),
            ("senders = 0", "outbox.senders"),
            ("claim_idle_ms = 10", "outbox.claim_idle_ms"),
            ("backoff_base_ms = 0", "outbox.backoff_base_ms"),
            (
                "backoff_base_ms = 5000\nbackoff_max_ms = 10",
                "outbox.backoff_base_ms",
            ),
            ("stream_key = \"\"", "outbox.stream_key"),
            ("dedup_ttl_secs = 0", "outbox.dedup_ttl_secs"),
        ] {
            let config = parse(&format!("[outbox]\n{toml}\n")).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{toml}: {error}");
        }
    }

    #[test]
    fn the_outbox_redis_url_is_never_printed() {
        let config = parse("[outbox]\nredis_url = \"redis://:hunter2@redis:6379\"\n").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
