//! Names of private reply queues (`reply-to:/temp-queue/<name>`), like
//! RabbitMQ's `amq.gen-...`: `/reply-queue/<32 hex digits>.<name>`.
//!
//! Anyone who has a reply queue's name may SEND to it (that is how a
//! responder answers), so the name must not be guessable: the hex part is
//! an HMAC-SHA256 of `<name>` under a 256-bit key drawn from the operating
//! system's CSPRNG once per session, cut to 128 bits. The same session gets
//! the same queue for the same `<name>` (no per-name state to bound), and
//! nothing in it is derived from the session number or shared with other
//! sessions. On the cluster the hex part starts with the node's mark
//! (`cluster/replies.rs`), so that a reply SENT on another node finds the
//! queue's node.

use crate::model::destination::REPLY_QUEUE_PREFIX;
use ring::hmac;
use ring::rand::SystemRandom;

/// Bytes of the HMAC kept in a name: 128 bits.
const NAME_BYTES: usize = 16;

/// One session's reply-queue naming key.
pub struct ReplyNames {
    key: hmac::Key,
}

impl std::fmt::Debug for ReplyNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never printed.
        f.write_str("ReplyNames")
    }
}

impl ReplyNames {
    /// A fresh key; `None` only if the system has no randomness to give.
    pub fn new() -> Option<ReplyNames> {
        hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .ok()
            .map(|key| ReplyNames { key })
    }

    /// The reply queue for `/temp-queue/<name>`, with `node`'s mark first
    /// on the cluster.
    pub fn queue(&self, node: Option<&str>, name: &str) -> String {
        let tag = hmac::sign(&self.key, name.as_bytes());
        let node = node.unwrap_or_default();
        let mut queue = String::with_capacity(
            REPLY_QUEUE_PREFIX.len() + node.len() + 2 * NAME_BYTES + 1 + name.len(),
        );
        queue.push_str(REPLY_QUEUE_PREFIX);
        queue.push_str(node);
        for byte in tag.as_ref().iter().take(NAME_BYTES) {
            queue.push_str(&format!("{byte:02x}"));
        }
        queue.push('.');
        queue.push_str(name);
        queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_per_session_and_differ_between_sessions() {
        let (one, two) = (
            ReplyNames::new().expect("rng"),
            ReplyNames::new().expect("rng"),
        );
        let name = one.queue(None, "answers");
        assert_eq!(name, one.queue(None, "answers"));
        assert_ne!(name, two.queue(None, "answers"));
        assert_ne!(name, one.queue(None, "other"));
        let random = &name[REPLY_QUEUE_PREFIX.len()..name.len() - ".answers".len()];
        assert_eq!(random.len(), 32);
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
        let on_node = one.queue(Some("00112233aabbccdd"), "answers");
        assert_eq!(
            on_node,
            format!("{REPLY_QUEUE_PREFIX}00112233aabbccdd{random}.answers")
        );
    }
}
