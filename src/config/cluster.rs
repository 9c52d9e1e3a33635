//! `[cluster]`: which engine carries messages between brokers. `"local"`
//! (the default) is one broker on its own, with its sled store; `"nats"`
//! makes the broker one front-end of several on a NATS (JetStream) engine.

use super::values::{duration, duration_text};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// `[cluster] engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// One broker: topics, queues and storage all in this process.
    Local,
    /// Several brokers on NATS: topics travel on NATS subjects.
    Nats,
}

/// `[cluster.tls]`: TLS to the NATS servers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// PEM file of the CA certificates that sign the servers' certificates
    /// (without it, the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with `key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `"local"` or `"nats"`.
    pub engine: Engine,
    /// NATS server URLs (`nats://host:port`, `tls://host:port`); the
    /// client picks one and fails over to the others.
    pub servers: Vec<String>,
    /// This broker's name among the nodes (the NATS connection's name);
    /// empty: the host name.
    pub node_name: String,
    /// Copies of each JetStream stream (1, 3 or 5 in practice).
    pub replicas: usize,
    /// A NATS credentials file (JWT and NKey seed), if the servers want one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// TLS to the servers; absent: as the server URLs say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTls>,
    /// The first token(s) of every subject and stream name this broker
    /// uses, so that several deployments can share one NATS system.
    pub subject_prefix: String,
    /// How long a queue delivery may stay unacknowledged before JetStream
    /// redelivers it.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub ack_wait: Duration,
    /// No longer used: queues on the engine follow `[queues]
    /// max_deliveries` and its rules. Accepted so that existing configs
    /// start; another value than the default is logged as ignored.
    pub max_deliver: u32,
    /// Bytes one queue stream may hold (on each of its replicas).
    pub max_bytes: u64,
    /// Bytes the durable topic subscriptions' stream may hold (on each of
    /// its replicas); past it, new topic messages are not kept for them.
    pub durable_max_bytes: u64,
    /// At most this many queues with a stream of their own (bounds other
    /// than the `[queues]` defaults: a rule, `x-max-length`), each
    /// reserving up to `max_bytes` on every replica; a SEND or SUBSCRIBE
    /// creating one more gets ERROR. 0: none.
    pub max_queue_streams: usize,
    /// How long a receipted or persistent queue SEND may wait for the
    /// engine to store it: published again (deduplicated) while the queue
    /// stream elects a leader; past it, ERROR.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub publish_timeout: Duration,
    /// How long the first connection to the engine may take before the
    /// start fails.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub connect_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            engine: Engine::Local,
            servers: vec!["nats://127.0.0.1:4222".into()],
            node_name: String::new(),
            replicas: 3,
            credentials_file: None,
            tls: None,
            subject_prefix: "stomphub".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_bytes: 1024 * 1024 * 1024,
            durable_max_bytes: 1024 * 1024 * 1024,
            max_queue_streams: 64,
            publish_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl ClusterConfig {
    /// Checks values serde cannot: every key is checked whichever the
    /// engine, so that switching it on later cannot meet a bad value.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.engine == Engine::Nats && self.servers.is_empty() {
            return Err("cluster.servers: engine \"nats\" needs at least one server URL".into());
        }
        if let Some(server) = self.servers.iter().find(|s| !valid_server(s)) {
            return Err(format!(
                "cluster.servers: '{server}' is not a URL like nats://host:4222 or tls://host:4222"
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!(
                "cluster.replicas is {}; JetStream takes 1 to 5",
                self.replicas
            ));
        }
        if !self
            .node_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "cluster.node_name '{}' may hold only letters, digits, '-' and '_'",
                self.node_name
            ));
        }
        let prefix_ok = !self.subject_prefix.is_empty()
            && self.subject_prefix.split('.').all(|token| {
                !token.is_empty()
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !prefix_ok {
            return Err(format!(
                "cluster.subject_prefix '{}' must be dot-separated tokens of letters, digits, '-' and '_'",
                self.subject_prefix
            ));
        }
        if self.ack_wait.is_zero() {
            return Err("cluster.ack_wait must be greater than 0".into());
        }
        // Beyond the stream's duplicate window (two minutes) an attempt
        // could store the message a second time.
        if self.publish_timeout.is_zero() || self.publish_timeout > Duration::from_secs(120) {
            return Err(
                "cluster.publish_timeout must be greater than 0 and at most 2 minutes".into(),
            );
        }
        if self.connect_timeout.is_zero() {
            return Err("cluster.connect_timeout must be greater than 0".into());
        }
        if self.max_deliver == 0 {
            return Err("cluster.max_deliver must be greater than 0".into());
        }
        if self.max_bytes == 0 || i64::try_from(self.max_bytes).is_err() {
            return Err(format!(
                "cluster.max_bytes is {}; it must be between 1 and {}",
                self.max_bytes,
                i64::MAX
            ));
        }
        if self.durable_max_bytes == 0 || i64::try_from(self.durable_max_bytes).is_err() {
            return Err(format!(
                "cluster.durable_max_bytes is {}; it must be between 1 and {}",
                self.durable_max_bytes,
                i64::MAX
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err("cluster.tls: cert_file and key_file go together".into());
            }
        }
        Ok(())
    }
}

/// A server URL the NATS client can use: a known scheme and a host.
fn valid_server(url: &str) -> bool {
    ["nats://", "tls://", "ws://", "wss://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Engine};

    #[test]
    fn the_engine_is_local_unless_told_otherwise() {
        let config = Config::from_toml("", "t").expect("empty file parses");
        assert_eq!(config.cluster.engine, Engine::Local);
        let nats = Config::from_toml(
            "[cluster]\nengine = \"nats\"\nservers = [\"nats://10.0.0.1:4222\"]\nnode_name = \"b1\"\n",
            "t",
        )
        .expect("nats parses");
        assert_eq!(nats.cluster.engine, Engine::Nats);
        assert_eq!(nats.cluster.replicas, 3);
    }

    #[test]
    fn a_printed_cluster_section_reads_back_equal() {
        let text = "[cluster]\nengine = \"nats\"\nservers = [\"tls://n1:4222\", \"tls://n2:4222\"]\n\
                    credentials_file = \"/etc/n.creds\"\nack_wait = \"45s\"\n\
                    [cluster.tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
        let config = Config::from_toml(text, "t").expect("parses");
        assert!(config.cluster.tls.is_some());
        let printed = config.to_toml().expect("prints");
        assert_eq!(
            Config::from_toml(&printed, "printed").expect("reads back"),
            config
        );
    }

    #[test]
    fn unknown_engines_and_bad_values_stop_the_start_naming_the_key() {
        let cases = [
            ("engine = \"raft\"", "unknown variant `raft`"),
            ("engine = \"nats\"\nservers = []", "cluster.servers"),
            ("servers = [\"10.0.0.1:4222\"]", "cluster.servers"),
            ("replicas = 0", "cluster.replicas"),
            ("replicas = 7", "cluster.replicas"),
            ("node_name = \"a b\"", "cluster.node_name"),
            ("subject_prefix = \"a..b\"", "cluster.subject_prefix"),
            ("subject_prefix = \"a.*\"", "cluster.subject_prefix"),
            ("ack_wait = \"0s\"", "cluster.ack_wait"),
            ("max_deliver = 0", "cluster.max_deliver"),
            ("max_bytes = 0", "cluster.max_bytes"),
            ("durable_max_bytes = 0", "cluster.durable_max_bytes"),
            ("bogus = 1", "unknown field `bogus`"),
            (
                "[cluster.tls]\ncert_file = \"c.pem\"",
                "cert_file and key_file",
            ),
        ];
        for (body, needle) in cases {
            let text = format!("[cluster]\n{body}\n");
            let error = Config::from_toml(&text, "broker.toml")
                .expect_err(body)
                .to_string();
            assert!(error.contains(needle), "{body}: {error}");
            assert!(error.starts_with("broker.toml"), "{error}");
        }
    }
}
