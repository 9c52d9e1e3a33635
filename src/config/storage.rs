//! `[storage]`: where durable data lives and which destinations are
//! persistent.

use serde::{Deserialize, Serialize};

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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

impl StorageConfig {
    /// Persistent patterns name queues or topics.
    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(pattern) = self
            .persistent
            .iter()
            .find(|p| !p.starts_with("/queue/") && !p.starts_with("/topic/"))
        {
            return Err(format!(
                "storage.persistent pattern '{pattern}' must start with /queue/ or /topic/"
            ));
        }
        Ok(())
    }
}
