//! Live reload (SIGHUP, `POST /api/reload`): reads the configuration file
//! again, builds and checks what can change at runtime, and only then swaps
//! it in. What needs a restart is named, not applied.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::context::BrokerContext;
use crate::endpoint::Endpoint;
use crate::publish_rate::PublishRules;
use arc_swap::ArcSwap;
use std::sync::Arc;
use tracing::{info, warn};

/// Reloads what can change at runtime from the configuration file:
/// `[auth]` (users, permissions, JWT keys, anonymous access) and
/// `[[rate_limits.publish]]`. The new parts are built and checked first;
/// only then are they swapped in (`ArcSwap`) and every connection told.
pub struct Reloader {
    context: Arc<BrokerContext>,
    /// Each `[[listeners]]` entry as new connections see it, in order.
    endpoints: Vec<Arc<ArcSwap<Endpoint>>>,
    /// The file the broker was started with (none: nothing to reload).
    file: std::sync::Mutex<Option<std::path::PathBuf>>,
}

/// Sections a reload does not apply (a restart does); the listeners',
/// storage's and admin's are left out because flags override them.
fn unapplied(running: &Config, file: &Config) -> Vec<&'static str> {
    // `max_connections_per_ip` is applied; the rest of `[listener]` is not.
    let mut listener = file.listener.clone();
    listener.max_connections_per_ip = running.listener.max_connections_per_ip;
    let sections = [
        ("listener", running.listener != listener),
        ("stomp", running.stomp != file.stomp),
        ("limits", running.limits != file.limits),
        ("outbound", running.outbound != file.outbound),
        ("runtime", running.runtime != file.runtime),
        ("router", running.router != file.router),
        ("queues", running.queues != file.queues),
        (
            "slow_consumers",
            running.slow_consumers != file.slow_consumers,
        ),
        ("shutdown", running.shutdown != file.shutdown),
        ("log", running.log != file.log),
    ];
    sections
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

impl Reloader {
    /// A reloader for `endpoints` (the listeners, in order) with no file yet.
    pub fn new(context: Arc<BrokerContext>, endpoints: Vec<Arc<ArcSwap<Endpoint>>>) -> Reloader {
        Reloader {
            context,
            endpoints,
            file: std::sync::Mutex::new(None),
        }
    }

    /// Names the file a reload reads.
    pub fn set_file(&self, path: std::path::PathBuf) {
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    /// Reads the file again and applies it; `Err` says why nothing changed.
    pub fn reload(&self) -> Result<String, String> {
        let file = self
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or("started without --config: there is no file to reload")?;
        let config = Config::load(&file).map_err(|e| e.to_string())?;
        let limits = self.context.destination_limits;
        let auth = Authenticator::new(&config.auth, limits)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let rules = PublishRules::new(&config.rate_limits.publish, &limits)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let endpoints = self
            .reloaded_endpoints(&config)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        // Everything is built: nothing below can fail.
        self.context.auth.store(Arc::new(auth));
        self.context.publish_rules.store(Arc::new(rules));
        for (swap, endpoint) in self.endpoints.iter().zip(endpoints) {
            swap.store(Arc::new(endpoint));
        }
        self.context.set_address_limits(
            config.rate_limits.connections_per_second_per_ip,
            config.rate_limits.connection_burst_per_ip,
            config.listener.max_connections_per_ip,
        );
        self.context
            .reloads
            .send_modify(|generation| *generation += 1);
        let ignored = unapplied(&self.context.config, &config);
        if !ignored.is_empty() {
            warn!(sections = ?ignored, "reload: these changes need a restart and were not applied");
        }
        Ok(format!(
            "reloaded {}: users, permissions, JWT keys, anonymous access, publish rate limits, \
             Origin lists, TLS certificates, per-address connection limits{}",
            file.display(),
            if ignored.is_empty() {
                String::new()
            } else {
                format!("; not applied (restart needed): {}", ignored.join(", "))
            }
        ))
    }

    /// The running endpoints with the file's Origin rules and TLS
    /// certificates (read again from disk). The address, kind and path stay
    /// (flags may have set the address; a bound socket cannot move): entry
    /// `i` of the file applies to running listener `i` of the same kind.
    fn reloaded_endpoints(&self, config: &Config) -> Result<Vec<Endpoint>, String> {
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for (index, swap) in self.endpoints.iter().enumerate() {
            let running = swap.load();
            let mut endpoint_config = running.config.clone();
            if let Some(file) = config.listeners.get(index) {
                if file.kind == running.config.kind {
                    endpoint_config.allowed_origins = file.allowed_origins.clone();
                    endpoint_config.allow_missing_origin = file.allow_missing_origin;
                    endpoint_config.tls = file.tls.clone();
                }
            }
            let tls = endpoint_config
                .tls
                .as_ref()
                .map(crate::tls::acceptor)
                .transpose()?;
            endpoints.push(Endpoint {
                config: endpoint_config,
                tls,
            });
        }
        Ok(endpoints)
    }

    /// [`reload`](Self::reload), logged either way (SIGHUP has no one else to tell).
    pub fn reload_logged(&self) -> Result<String, String> {
        let outcome = self.reload();
        match &outcome {
            Ok(what) => info!("{what}"),
            Err(error) => warn!(%error, "reload refused; the running configuration stays"),
        }
        outcome
    }

    /// [`reload_logged`](Self::reload_logged) on a blocking thread: it
    /// reads files and builds TLS acceptors, and the runtime may have one
    /// thread for every connection.
    pub async fn reload_off_runtime(self: Arc<Self>) -> Result<String, String> {
        tokio::task::spawn_blocking(move || self.reload_logged())
            .await
            .unwrap_or_else(|e| Err(format!("the reload did not finish: {e}")))
    }
}
