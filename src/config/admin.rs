//! `[admin]`: the operators' HTTP listener (metrics, health, API,
//! dashboard) and who may use it without credentials.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Who may use the admin listener without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminAnonymous {
    /// Nobody: every request carries an admin's credentials.
    Never,
    /// Requests from this machine (127.0.0.0/8, ::1).
    Loopback,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Whether the admin listener runs at all.
    pub enabled: bool,
    /// Address of the admin listener (`--admin-listen` overrides it).
    pub address: SocketAddr,
    /// Who may use it without credentials.
    pub anonymous: AdminAnonymous,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            address: SocketAddr::from(([127, 0, 0, 1], 15692)),
            anonymous: AdminAnonymous::Loopback,
        }
    }
}
