//! Typed configuration: `broker.toml` parsed with serde, validated, defaults
//! equal to the committed `broker.toml` (embedded in the binary).

use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use stomp_protocol::{Limits, Version};

/// The default configuration file, as committed.
pub const DEFAULT_CONFIG: &str = include_str!("../broker.toml");

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Limits over all listeners.
    pub listener: ListenerConfig,
    /// Where and how connections are accepted: one entry per address.
    #[serde(default = "default_listeners")]
    pub listeners: Vec<EndpointConfig>,
    /// STOMP session behaviour.
    pub stomp: StompConfig,
    /// Size limits on what clients send.
    pub limits: LimitsConfig,
    /// Per-connection outbound budget.
    pub outbound: OutboundConfig,
    /// The router's input queue.
    pub router: RouterConfig,
    /// Queue defaults and per-pattern rules.
    pub queues: QueuesConfig,
    /// What happens to subscribers that fall behind.
    pub slow_consumers: SlowConsumersConfig,
    /// Durable storage.
    pub storage: StorageConfig,
    /// Authentication and authorization.
    pub auth: AuthConfig,
    /// Shutdown behaviour.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
    /// Publish rates and new connections per address.
    pub rate_limits: RateLimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listener: ListenerConfig::default(),
            listeners: default_listeners(),
            stomp: StompConfig::default(),
            limits: LimitsConfig::default(),
            outbound: OutboundConfig::default(),
            router: RouterConfig::default(),
            queues: QueuesConfig::default(),
            slow_consumers: SlowConsumersConfig::default(),
            storage: StorageConfig::default(),
            auth: AuthConfig::default(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            rate_limits: RateLimitsConfig::default(),
        }
    }
}

/// `[listener]`: what holds for all listeners together. Where and how each
/// one accepts is in `[[listeners]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Connections served at once, over all listeners.
    pub max_connections: usize,
    /// Connections from one client IP address, over all listeners.
    pub max_connections_per_ip: usize,
    /// Limit on the TLS handshake and WebSocket upgrade together.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Limit from the upgrade to CONNECT.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Moved to `[[listeners]]`: read only to name it in the error.
    address: Option<toml::Value>,
    /// Moved to `[[listeners]]`.
    path: Option<toml::Value>,
    /// Moved to `[[listeners]]`.
    allowed_origins: Option<toml::Value>,
    /// Moved to `[[listeners]]`.
    allow_missing_origin: Option<toml::Value>,
    /// Moved to `[[listeners]]`.
    tls: Option<toml::Value>,
}

/// One `[[listeners]]` entry: an address that accepts WebSocket connections.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Socket address to bind (required).
    pub address: SocketAddr,
    /// HTTP path that upgrades to WebSocket.
    #[serde(default = "default_path")]
    pub path: String,
    /// Origins allowed to upgrade (`*` in a port or as the whole entry is a
    /// wildcard; `null` is a sandboxed frame or a page opened from a file,
    /// which any web page can create, so it is not in the default).
    #[serde(default = "default_allowed_origins")]
    pub allowed_origins: Vec<String>,
    /// Whether requests without `Origin` (non-browser clients) may upgrade.
    #[serde(default = "default_allow_missing_origin")]
    pub allow_missing_origin: bool,
    /// `wss://`: serve TLS with this certificate and key.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[listeners.tls]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
}

fn default_path() -> String {
    "/ws".into()
}

fn default_allowed_origins() -> Vec<String> {
    [
        "http://localhost:*",
        "http://127.0.0.1:*",
        "https://localhost:*",
        "https://127.0.0.1:*",
    ]
    .map(String::from)
    .to_vec()
}

fn default_allow_missing_origin() -> bool {
    true
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 61614)),
            path: default_path(),
            allowed_origins: default_allowed_origins(),
            allow_missing_origin: default_allow_missing_origin(),
            tls: None,
        }
    }
}

fn default_listeners() -> Vec<EndpointConfig> {
    vec![EndpointConfig::default()]
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            max_connections: 20_000,
            max_connections_per_ip: 1000,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            address: None,
            path: None,
            allowed_origins: None,
            allow_missing_origin: None,
            tls: None,
        }
    }
}

impl ListenerConfig {
    /// The first per-listener key left in `[listener]`, if any.
    fn moved_key(&self) -> Option<&'static str> {
        [
            ("address", self.address.is_some()),
            ("path", self.path.is_some()),
            ("allowed_origins", self.allowed_origins.is_some()),
            ("allow_missing_origin", self.allow_missing_origin.is_some()),
            ("tls", self.tls.is_some()),
        ]
        .into_iter()
        .find_map(|(key, set)| set.then_some(key))
    }
}

/// `[stomp]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StompConfig {
    /// Name in CONNECTED's `server` header.
    pub server_name: String,
    /// Versions we negotiate.
    #[serde(deserialize_with = "versions")]
    pub versions: Vec<Version>,
    /// The shortest interval we send heart-beats at (a floor on the
    /// client's `cy`; 0: we never send any).
    #[serde(deserialize_with = "duration")]
    pub heartbeat_send: Duration,
    /// The shortest interval we expect clients to send at (a floor on the
    /// client's `cx`; 0: we never check).
    #[serde(deserialize_with = "duration")]
    pub heartbeat_receive: Duration,
    /// Silence beyond interval × grace closes a connection.
    pub heartbeat_grace: f64,
    /// The longest heart-beat interval in either direction; larger client
    /// values are clamped to it.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_max: Duration,
    /// A client late by one interval gets a WebSocket ping, and WebSocket
    /// pings and pongs count as data (lenient to throttled background tabs);
    /// off, only STOMP bytes count.
    pub heartbeat_ping: bool,
}

impl Default for StompConfig {
    fn default() -> Self {
        StompConfig {
            server_name: "stomphub".into(),
            versions: Version::ALL.to_vec(),
            heartbeat_send: Duration::from_secs(1),
            heartbeat_receive: Duration::from_secs(1),
            heartbeat_grace: 2.0,
            heartbeat_max: Duration::from_secs(3600),
            heartbeat_ping: true,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// See [`Limits::max_command_bytes`].
    pub max_command_bytes: usize,
    /// See [`Limits::max_headers`].
    pub max_headers: usize,
    /// See [`Limits::max_header_line_bytes`].
    pub max_header_line_bytes: usize,
    /// See [`Limits::max_header_bytes`].
    pub max_header_bytes: usize,
    /// See [`Limits::max_body_bytes`].
    pub max_body_bytes: usize,
    /// Active subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Dot-separated words in a destination name.
    pub max_destination_words: usize,
    /// `#` wildcards in one subscription pattern (bounds matching work).
    pub max_multi_word_wildcards: usize,
    /// Open transactions per connection.
    pub max_transactions_per_connection: usize,
    /// SEND, ACK and NACK frames in one transaction.
    pub max_frames_per_transaction: usize,
    /// Unsettled deliveries per connection.
    pub max_unacked_per_connection: usize,
    /// Bytes (bodies and headers) in all queues together before publishers
    /// to queues wait.
    pub max_queued_message_bytes: usize,
    /// Bytes (bodies and headers) held in one connection's open transactions.
    pub max_transaction_bytes: usize,
    /// Subscriptions on the whole server (reply queues' included).
    pub max_subscriptions: usize,
    /// `/queue/...` queues on the whole server (created on first use).
    pub max_queues: usize,
    /// Durable topic subscriptions on the whole server.
    pub max_durable_subscriptions: usize,
    /// Durable topic subscriptions one connection may create.
    pub max_durable_subscriptions_per_connection: usize,
    /// `/temp-queue/` reply queues on the whole server.
    pub max_reply_queues: usize,
    /// `/temp-queue/` reply queues of one connection.
    pub max_reply_queues_per_connection: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_command_bytes: 64,
            max_headers: 64,
            max_header_line_bytes: 8192,
            max_header_bytes: 65536,
            max_body_bytes: 1024 * 1024,
            max_subscriptions_per_connection: 1000,
            max_destination_words: 32,
            max_multi_word_wildcards: 4,
            max_transactions_per_connection: 16,
            max_frames_per_transaction: 10_000,
            max_unacked_per_connection: 10_000,
            max_queued_message_bytes: 1024 * 1024 * 1024,
            max_transaction_bytes: 16 * 1024 * 1024,
            max_subscriptions: 1_000_000,
            max_queues: 10_000,
            max_durable_subscriptions: 10_000,
            max_durable_subscriptions_per_connection: 100,
            max_reply_queues: 100_000,
            max_reply_queues_per_connection: 100,
        }
    }
}

impl LimitsConfig {
    /// The codec's share of the limits.
    pub fn frame_limits(&self) -> Limits {
        Limits {
            max_command_bytes: self.max_command_bytes,
            max_headers: self.max_headers,
            max_header_line_bytes: self.max_header_line_bytes,
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// `[outbound]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Bytes queued for one client before it counts as a slow consumer.
    pub max_queued_bytes: usize,
    /// Frames queued for one client before it counts as a slow consumer.
    pub max_queued_frames: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            // Measured: healthy readers on a loaded 2-core machine needed up
            // to 2.4 MB (docs/operations.md#slow-consumers); 8 MiB leaves room.
            max_queued_bytes: 8 * 1024 * 1024,
            max_queued_frames: 4096,
        }
    }
}

/// What a SEND to a full queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// ERROR to the sender; nothing is queued.
    Reject,
    /// The oldest messages are dropped to make room.
    DropOldest,
}

/// `[queues]`: defaults for every queue, and rules per name pattern.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueuesConfig {
    /// Unacknowledged deliveries in flight per subscription.
    pub prefetch: usize,
    /// Messages a queue holds.
    pub max_length: usize,
    /// Bytes (bodies and headers) a queue holds.
    pub max_bytes: usize,
    /// What a SEND to a full queue does.
    pub overflow: Overflow,
    /// Default time-to-live (zero: none).
    #[serde(deserialize_with = "duration")]
    pub message_ttl: Duration,
    /// Deliveries before a NACKed or returned message is dead-lettered.
    pub max_deliveries: u32,
    /// First NACK redelivery delay; doubles per delivery.
    #[serde(deserialize_with = "duration")]
    pub redelivery_delay: Duration,
    /// Cap of the redelivery delay.
    #[serde(deserialize_with = "duration")]
    pub redelivery_delay_max: Duration,
    /// `/queue/NAME` dead-letters to `/queue/NAME<suffix>`.
    pub dead_letter_suffix: String,
    /// Overrides per queue-name pattern; the first match wins.
    pub rules: Vec<QueueRule>,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        QueuesConfig {
            prefetch: 100,
            max_length: 100_000,
            max_bytes: 100 * 1024 * 1024,
            overflow: Overflow::Reject,
            message_ttl: Duration::ZERO,
            max_deliveries: 5,
            redelivery_delay: Duration::from_secs(1),
            redelivery_delay_max: Duration::from_secs(30),
            dead_letter_suffix: ".dlq".into(),
            rules: Vec::new(),
        }
    }
}

/// `[[queues.rules]]`: settings for queues whose name matches `pattern`
/// (`*` one word, `#` any words, as in topic subscriptions).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRule {
    /// A `/queue/...` pattern.
    pub pattern: String,
    /// Overrides `prefetch`.
    pub prefetch: Option<usize>,
    /// Overrides `max_length`.
    pub max_length: Option<usize>,
    /// Overrides `max_bytes`.
    pub max_bytes: Option<usize>,
    /// Overrides `overflow`.
    pub overflow: Option<Overflow>,
    /// Overrides `message_ttl`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub message_ttl: Option<Duration>,
    /// Overrides `max_deliveries`.
    pub max_deliveries: Option<u32>,
    /// Overrides `redelivery_delay`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub redelivery_delay: Option<Duration>,
    /// The dead-letter queue for these queues (a `/queue/...` name).
    pub dead_letter: Option<String>,
}

/// What happens to a subscriber whose outbound budget is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// ERROR "slow consumer", close 1008.
    Disconnect,
    /// Drop its oldest queued topic messages (auto-ack topic subscriptions).
    DropOldest,
    /// Reserved for a later release (keep only the latest value per topic).
    Conflate,
}

/// `[slow_consumers]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlowConsumersConfig {
    /// The policy where no rule matches.
    pub policy: SlowConsumerPolicy,
    /// Policies per subscription destination pattern; the first match wins.
    pub rules: Vec<SlowConsumerRule>,
}

impl Default for SlowConsumersConfig {
    fn default() -> Self {
        SlowConsumersConfig {
            policy: SlowConsumerPolicy::Disconnect,
            rules: Vec::new(),
        }
    }
}

/// `[[slow_consumers.rules]]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowConsumerRule {
    /// A `/topic/...` pattern matched against subscription destinations.
    pub pattern: String,
    /// The policy for matching subscriptions.
    pub policy: SlowConsumerPolicy,
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Whether anything is stored; off, every message is in memory only.
    pub enabled: bool,
    /// The sled database directory.
    pub data_dir: std::path::PathBuf,
    /// Bytes of stored messages before persistent SENDs are refused.
    pub max_disk_bytes: u64,
    /// Destination patterns whose messages are persistent without a
    /// `persistent:true` header.
    pub persistent: Vec<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            enabled: true,
            data_dir: "data".into(),
            max_disk_bytes: 10 * 1024 * 1024 * 1024,
            persistent: Vec::new(),
        }
    }
}

/// Who may connect without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anonymous {
    /// Nobody.
    Never,
    /// Clients on this machine (127.0.0.0/8, ::1).
    Loopback,
    /// Anyone.
    Any,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Who may connect without credentials.
    pub anonymous: Anonymous,
    /// Destination patterns anonymous clients may read (SUBSCRIBE).
    pub anonymous_read: Vec<String>,
    /// Destination patterns anonymous clients may write (SEND).
    pub anonymous_write: Vec<String>,
    /// Delay before answering a failed login, doubled per recent failure
    /// from the same address.
    #[serde(deserialize_with = "duration")]
    pub failure_delay: Duration,
    /// Cap of that delay.
    #[serde(deserialize_with = "duration")]
    pub failure_delay_max: Duration,
    /// Users with argon2 password hashes and permissions.
    pub users: Vec<UserConfig>,
    /// JWT bearer tokens.
    pub jwt: Option<JwtConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            anonymous: Anonymous::Loopback,
            anonymous_read: vec!["/topic/#".into(), "/queue/#".into()],
            anonymous_write: vec!["/topic/#".into(), "/queue/#".into()],
            failure_delay: Duration::from_millis(250),
            failure_delay_max: Duration::from_secs(5),
            users: Vec::new(),
            jwt: None,
        }
    }
}

/// `[[auth.users]]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// CONNECT's `login`.
    pub login: String,
    /// An argon2 PHC string (`stomphub hash-password` prints one).
    pub password_hash: String,
    /// Destination patterns this user may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Destination patterns this user may write.
    #[serde(default)]
    pub write: Vec<String>,
}

/// `[auth.jwt]`: what every token must satisfy, and its verification key(s):
/// one given here (`algorithm` with a key), and/or several in `keys`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `HS256`, `RS256` or `ES256`, for the key given in this section (none: only `keys`).
    pub algorithm: Option<String>,
    /// The HS256 shared secret.
    pub secret: Option<String>,
    /// A file holding the HS256 shared secret.
    pub secret_file: Option<std::path::PathBuf>,
    /// The RS256/ES256 public key (PEM).
    pub public_key_file: Option<std::path::PathBuf>,
    /// A JWKS file; keys are chosen by the token's `kid`.
    pub jwks_file: Option<std::path::PathBuf>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Claim with the patterns the bearer may read.
    #[serde(default = "default_read_claim")]
    pub read_claim: String,
    /// Claim with the patterns the bearer may write.
    #[serde(default = "default_write_claim")]
    pub write_claim: String,
    /// Clock skew tolerated for `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// More verification keys (`[[auth.jwt.keys]]`), for key rotation and
    /// several issuers' algorithms.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
}

/// `[[auth.jwt.keys]]`: one verification key (or a JWKS file of several).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// `HS256`, `RS256` or `ES256`.
    pub algorithm: String,
    /// An HS256 shared secret.
    pub secret: Option<String>,
    /// A file holding an HS256 shared secret.
    pub secret_file: Option<std::path::PathBuf>,
    /// An RS256/ES256 public key (PEM).
    pub public_key_file: Option<std::path::PathBuf>,
    /// A JWKS file; each key's `kid` and `alg` come from the file.
    pub jwks_file: Option<std::path::PathBuf>,
    /// The `kid` a token must carry to be checked with this key (none: any).
    pub kid: Option<String>,
}

fn default_read_claim() -> String {
    "stomp_read".into()
}

fn default_write_claim() -> String {
    "stomp_write".into()
}

fn default_leeway() -> u64 {
    30
}

/// `[rate_limits]`: token buckets on new connections per client address and,
/// by `[[rate_limits.publish]]` rules, on what each connection publishes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// New WebSocket connections per second from one client address
    /// (0: no limit).
    pub connections_per_second_per_ip: f64,
    /// New connections one address may open at once before the rate applies.
    pub connection_burst_per_ip: f64,
    /// Publish limits; the first rule that matches a SEND applies, a SEND no
    /// rule matches is not limited.
    pub publish: Vec<PublishRateRule>,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            connections_per_second_per_ip: 100.0,
            connection_burst_per_ip: 1000.0,
            publish: Vec::new(),
        }
    }
}

/// What a connection over its publish rate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RateLimitAction {
    /// The broker stops reading the connection until it is within its rate
    /// again (back-pressure: nothing is lost).
    #[default]
    Slow,
    /// ERROR naming the limit, close 1008.
    Error,
}

/// `[[rate_limits.publish]]`: a publish rate for SENDs to destinations
/// matching `pattern` from connections logged in as `user` (either may be
/// left out: then it matches every destination, or every connection).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRateRule {
    /// A `/topic/...` or `/queue/...` pattern (`*` one word, `#` any words).
    pub pattern: Option<String>,
    /// CONNECT's `login` (or the token's subject).
    pub user: Option<String>,
    /// SEND frames per second (none: not limited by count).
    pub messages_per_second: Option<f64>,
    /// Frame bytes (headers and body) per second (none: not limited by size).
    pub bytes_per_second: Option<f64>,
    /// SENDs at once before the rate applies (default: one second's worth).
    pub burst_messages: Option<f64>,
    /// Bytes at once before the rate applies (default: one second's worth).
    pub burst_bytes: Option<f64>,
    /// Slow the connection down (the default) or end it with ERROR.
    #[serde(default)]
    pub action: RateLimitAction,
}

/// `[router]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Capacity of the router's command channel.
    pub queue_depth: usize,
    /// Bytes of SEND bodies and headers in commands waiting for the router.
    pub max_queued_bytes: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            queue_depth: 4096,
            max_queued_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Time sessions get to close on shutdown.
    #[serde(deserialize_with = "duration")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: Duration::from_secs(5),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        config
            .validate()
            .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Checks the rules serde cannot express.
    fn validate(&self) -> Result<(), String> {
        let positive = [
            ("listener.max_connections", self.listener.max_connections),
            (
                "listener.max_connections_per_ip",
                self.listener.max_connections_per_ip,
            ),
            (
                "limits.max_unacked_per_connection",
                self.limits.max_unacked_per_connection,
            ),
            (
                "limits.max_queued_message_bytes",
                self.limits.max_queued_message_bytes,
            ),
            ("limits.max_command_bytes", self.limits.max_command_bytes),
            ("limits.max_headers", self.limits.max_headers),
            (
                "limits.max_header_line_bytes",
                self.limits.max_header_line_bytes,
            ),
            ("limits.max_header_bytes", self.limits.max_header_bytes),
            (
                "limits.max_destination_words",
                self.limits.max_destination_words,
            ),
            ("outbound.max_queued_bytes", self.outbound.max_queued_bytes),
            (
                "outbound.max_queued_frames",
                self.outbound.max_queued_frames,
            ),
            ("router.queue_depth", self.router.queue_depth),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key} must be greater than 0"));
        }
        let state_bounds = [
            (
                "limits.max_transaction_bytes",
                self.limits.max_transaction_bytes,
            ),
            ("limits.max_subscriptions", self.limits.max_subscriptions),
            ("limits.max_queues", self.limits.max_queues),
            ("router.max_queued_bytes", self.router.max_queued_bytes),
        ];
        if let Some((key, _)) = state_bounds.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key} must be greater than 0"));
        }
        if let Some(pattern) = self
            .storage
            .persistent
            .iter()
            .find(|p| !p.starts_with("/queue/") && !p.starts_with("/topic/"))
        {
            return Err(format!(
                "storage.persistent pattern '{pattern}' must start with /queue/ or /topic/"
            ));
        }
        let policies = std::iter::once(self.slow_consumers.policy)
            .chain(self.slow_consumers.rules.iter().map(|r| r.policy));
        if policies
            .into_iter()
            .any(|p| p == SlowConsumerPolicy::Conflate)
        {
            return Err("slow_consumers policy \"conflate\" is reserved for a later release; use \"disconnect\" or \"drop-oldest\"".into());
        }
        if let Some(rule) = self
            .slow_consumers
            .rules
            .iter()
            .find(|r| !r.pattern.starts_with("/topic/"))
        {
            return Err(format!(
                "slow_consumers.rules pattern '{}' must start with /topic/",
                rule.pattern
            ));
        }
        if self.queues.prefetch == 0
            || self.queues.max_length == 0
            || self.queues.max_deliveries == 0
        {
            return Err("queues.prefetch, queues.max_length and queues.max_deliveries must be greater than 0".into());
        }
        if let Some(rule) = self
            .queues
            .rules
            .iter()
            .find(|r| !r.pattern.starts_with("/queue/"))
        {
            return Err(format!(
                "queues.rules pattern '{}' must start with /queue/",
                rule.pattern
            ));
        }
        if let Some(rule) = self.queues.rules.iter().find(|r| {
            r.dead_letter
                .as_deref()
                .is_some_and(|d| !d.starts_with("/queue/"))
        }) {
            return Err(format!(
                "queues.rules dead_letter of '{}' must be a /queue/ destination",
                rule.pattern
            ));
        }
        self.validate_rate_limits()?;
        if let Some(key) = self.listener.moved_key() {
            return Err(format!(
                "listener.{key} has moved: write it in a [[listeners]] table \
                 (one per address: address, path, allowed_origins, \
                 allow_missing_origin, [listeners.tls]); [listener] keeps \
                 max_connections, max_connections_per_ip, handshake_timeout, \
                 connect_timeout. See docs/configuration.md"
            ));
        }
        if self.listeners.is_empty() {
            return Err("listeners: at least one [[listeners]] is needed".into());
        }
        if let Some(index) = self.listeners.iter().position(|l| !l.path.starts_with('/')) {
            return Err(format!("listeners[{index}].path must start with '/'"));
        }
        if self.stomp.versions.is_empty() {
            return Err("stomp.versions must name at least one version".into());
        }
        if !(self.stomp.heartbeat_grace >= 1.0 && self.stomp.heartbeat_grace <= 100.0) {
            return Err("stomp.heartbeat_grace must be a number from 1.0 to 100.0".into());
        }
        let stomp = &self.stomp;
        if stomp.heartbeat_max.is_zero()
            || stomp.heartbeat_max > Duration::from_secs(MAX_HEARTBEAT_SECS)
            || stomp.heartbeat_max < stomp.heartbeat_send
            || stomp.heartbeat_max < stomp.heartbeat_receive
        {
            return Err(format!(
                "stomp.heartbeat_max must be at least heartbeat_send and heartbeat_receive, \
                 and at most {MAX_HEARTBEAT_SECS} s"
            ));
        }
        if self.outbound.max_queued_bytes < self.limits.max_body_bytes {
            return Err(
                "outbound.max_queued_bytes must be at least limits.max_body_bytes, \
                 or no subscriber could receive the largest message"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The largest `stomp.heartbeat_max` (a day): with the grace, timers stay
/// far inside `Instant`'s range.
const MAX_HEARTBEAT_SECS: u64 = 24 * 3600;

impl Config {
    /// Rates must be positive numbers and bursts at least one (a pattern's
    /// syntax is checked when the broker compiles the rules).
    fn validate_rate_limits(&self) -> Result<(), String> {
        let limits = &self.rate_limits;
        let rate = limits.connections_per_second_per_ip;
        if !(rate >= 0.0 && rate.is_finite()) {
            return Err("rate_limits.connections_per_second_per_ip must be 0 (no limit) or a positive number".into());
        }
        if rate > 0.0
            && !(limits.connection_burst_per_ip >= 1.0
                && limits.connection_burst_per_ip.is_finite())
        {
            return Err("rate_limits.connection_burst_per_ip must be at least 1".into());
        }
        for (index, rule) in limits.publish.iter().enumerate() {
            let key = |name: &str| format!("rate_limits.publish[{index}].{name}");
            for (name, value) in [
                ("messages_per_second", rule.messages_per_second),
                ("bytes_per_second", rule.bytes_per_second),
            ] {
                if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                    return Err(format!("{} must be a positive number", key(name)));
                }
            }
            for (name, value) in [
                ("burst_messages", rule.burst_messages),
                ("burst_bytes", rule.burst_bytes),
            ] {
                if value.is_some_and(|v| !(v >= 1.0 && v.is_finite())) {
                    return Err(format!("{} must be at least 1", key(name)));
                }
            }
            if let Some(pattern) = rule.pattern.as_deref() {
                if !pattern.starts_with("/topic/") && !pattern.starts_with("/queue/") {
                    return Err(format!(
                        "{} '{pattern}' must start with /topic/ or /queue/",
                        key("pattern")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Reads a duration written as `"250ms"`, `"10s"`, `"5m"` or a number of milliseconds.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Millis(u64),
        Text(String),
    }
    let text = match Written::deserialize(deserializer)? {
        Written::Millis(ms) => return Ok(Duration::from_millis(ms)),
        Written::Text(text) => text,
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "'{text}' is not a duration like \"10s\" or \"250ms\""
        ))
    })?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => number
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is too long"))),
        _ => Err(serde::de::Error::custom(format!(
            "'{text}' has no unit ms, s or m"
        ))),
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// Reads a list of version numbers such as `["1.1", "1.2"]`.
fn versions<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Version>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    let mut versions = names
        .iter()
        .map(|n| {
            Version::from_number(n).ok_or_else(|| {
                serde::de::Error::custom(format!("unknown STOMP version '{n}' (1.0, 1.1, 1.2)"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    versions.sort();
    versions.dedup();
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_file_equals_code_defaults() {
        let parsed = Config::from_toml(DEFAULT_CONFIG, "broker.toml").expect("default parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let error = Config::from_toml("[listener]\nadress = \"x\"\n", "test.toml").unwrap_err();
        assert!(error.to_string().contains("adress"), "{error}");
        assert!(error.to_string().starts_with("test.toml"), "{error}");
    }

    #[test]
    fn durations_read_units_and_milliseconds() {
        let config = Config::from_toml(
            "[listener]\nhandshake_timeout = \"250ms\"\nconnect_timeout = 1500\n",
            "t",
        )
        .expect("parses");
        assert_eq!(
            config.listener.handshake_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(config.listener.connect_timeout, Duration::from_millis(1500));
        assert!(Config::from_toml("[shutdown]\ngrace = \"5 parsecs\"\n", "t").is_err());
        assert!(Config::from_toml("[shutdown]\ngrace = \"999999999999999999m\"\n", "t").is_err());
    }

    #[test]
    fn queue_rules_parse() {
        let config = Config::from_toml(
            "[[queues.rules]]\npattern = \"/queue/a.#\"\noverflow = \"drop-oldest\"\nmessage_ttl = \"2s\"\n",
            "t",
        )
        .expect("parses");
        let rule = &config.queues.rules[0];
        assert_eq!(rule.overflow, Some(Overflow::DropOldest));
        assert_eq!(rule.message_ttl, Some(Duration::from_secs(2)));
        assert!(Config::from_toml("[[queues.rules]]\npattern = \"/topic/x\"\n", "t").is_err());
    }

    #[test]
    fn publish_rate_rules_parse_and_bad_rates_are_named() {
        let config = Config::from_toml(
            "[[rate_limits.publish]]\npattern = \"/topic/feed.#\"\nmessages_per_second = 100\naction = \"error\"\n\n[[rate_limits.publish]]\nuser = \"bob\"\nbytes_per_second = 0.5\n",
            "t",
        )
        .expect("parses");
        let rules = &config.rate_limits.publish;
        assert_eq!(rules[0].messages_per_second, Some(100.0));
        assert_eq!(rules[0].action, RateLimitAction::Error);
        assert_eq!(rules[1].action, RateLimitAction::Slow);
        let error = Config::from_toml("[[rate_limits.publish]]\nmessages_per_second = 0\n", "t")
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("rate_limits.publish[0].messages_per_second"),
            "{error}"
        );
        let error = Config::from_toml("[rate_limits]\nconnections_per_second_per_ip = -1\n", "t")
            .unwrap_err();
        assert!(
            error.to_string().contains("connections_per_second_per_ip"),
            "{error}"
        );
    }

    #[test]
    fn listeners_are_a_list_and_old_listener_keys_say_where_they_went() {
        let config = Config::from_toml(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[listeners]]\naddress = \"127.0.0.1:2\"\npath = \"/stomp\"\n[listeners.tls]\ncert_file = \"c\"\nkey_file = \"k\"\n",
            "t",
        )
        .expect("parses");
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(config.listeners[0].path, "/ws");
        assert!(config.listeners[0].tls.is_none() && config.listeners[1].tls.is_some());
        let error = Config::from_toml("[listener]\naddress = \"0.0.0.0:1\"\n", "t").unwrap_err();
        assert!(
            error.to_string().contains("listener.address has moved"),
            "{error}"
        );
        let error = Config::from_toml("[listener.tls]\ncert_file = \"c\"\n", "t").unwrap_err();
        assert!(
            error.to_string().contains("listener.tls has moved"),
            "{error}"
        );
        assert!(
            Config::from_toml("[[listeners]]\npath = \"/ws\"\n", "t").is_err(),
            "address required"
        );
        assert!(Config::from_toml("listeners = []\n", "t").is_err());
    }

    #[test]
    fn invalid_values_are_named() {
        let error = Config::from_toml("[router]\nqueue_depth = 0\n", "t").unwrap_err();
        assert!(error.to_string().contains("router.queue_depth"), "{error}");
    }

    #[test]
    fn heart_beat_bounds_are_validated() {
        let error = Config::from_toml("[stomp]\nheartbeat_max = \"500ms\"\n", "t").unwrap_err();
        assert!(error.to_string().contains("stomp.heartbeat_max"), "{error}");
        let error = Config::from_toml("[stomp]\nheartbeat_max = \"1441m\"\n", "t").unwrap_err();
        assert!(error.to_string().contains("stomp.heartbeat_max"), "{error}");
        let error = Config::from_toml("[stomp]\nheartbeat_grace = 1e300\n", "t").unwrap_err();
        assert!(
            error.to_string().contains("stomp.heartbeat_grace"),
            "{error}"
        );
        let strict = Config::from_toml("[stomp]\nheartbeat_ping = false\n", "t").expect("parses");
        assert!(!strict.stomp.heartbeat_ping);
    }
}
