//! Replies to `reply-to:/temp-queue/<name>` across nodes.
//!
//! A reply queue lives in the router of the requester's node. On the
//! cluster its name carries that node's mark, 16 random hex digits drawn
//! at start: `/reply-queue/<node><32 hex digits of the session's HMAC>.<name>`
//! (`session/reply_to.rs`). A SEND to such a name on another node is
//! published on the core subject `<prefix>.reply.<node>`; each node
//! subscribes to its own and hands what comes to its router, which puts it
//! in the reply queue if the queue is still there (as on one node: a reply
//! to a connection that is gone is dropped).
//!
//! Core NATS, not JetStream, as the reply queue itself lives no longer than
//! its connection; but each reply is a request that the requester's node
//! answers once its router has the reply. Until then it is sent again:
//! "no responders" while the node's subscription has not reached the
//! sender's server over the routes yet (or the node is gone: after
//! [`REPLY_WAIT`] the reply is dropped, as one node drops a reply to a
//! connection that is gone), or no answer in time. The receiving node
//! drops a reply it has just passed on (the same message id from the same
//! node: an answer lost, the reply sent again), so a reply reaches its
//! queue once. The name stays
//! unguessable (the HMAC part is the session's secret) and only the
//! requester's session consumes the queue, on its own node.

use super::wire;
use crate::model::destination::{SendTarget, REPLY_QUEUE_PREFIX};
use crate::model::message::Message;
use crate::model::session_id::SessionId;
use crate::queue::QueueArguments;
use crate::router::message::Publication;
use crate::router::{RouterCommand, RouterHandle};
use async_nats::RequestErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Hex digits of a node's mark.
pub const NODE_DIGITS: usize = 16;
/// Hex digits of a reply queue name's secret part (`session/reply_to.rs`).
const SECRET_DIGITS: usize = 32;
/// The header naming the node a reply comes from (its mark).
const FROM: &str = "Stomphub-Reply-From";
/// How long a reply is sent again for while no node takes it or answers.
const REPLY_WAIT: Duration = Duration::from_secs(5);
/// How long one attempt waits for the requester's node's answer.
const ATTEMPT_WAIT: Duration = Duration::from_secs(1);
/// The pause between two attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Reply ids a node remembers, to pass on a reply sent again only once: a
/// reply is sent again within [`REPLY_WAIT`], so this holds at up to about
/// 13 000 replies a second per node.
const SEEN: usize = 65_536;

/// This node's way to the other nodes' reply queues, and theirs to its own.
#[derive(Debug)]
pub struct Replies {
    /// The queue connection (core publish and one subscription).
    client: async_nats::Client,
    /// `[cluster] subject_prefix`.
    prefix: String,
    /// This node's mark in reply queue names: random per process, so that
    /// a restarted node (whose reply queues are gone) gets none of the
    /// replies meant for its former self.
    node: String,
}

impl Replies {
    /// A fresh mark for this node; `Err` if the system has no randomness.
    pub fn new(client: async_nats::Client, prefix: &str) -> Result<Arc<Replies>, String> {
        let mut bytes = [0u8; NODE_DIGITS / 2];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| "cluster: no randomness for the node's reply mark".to_owned())?;
        Ok(Arc::new(Replies {
            client,
            prefix: prefix.to_owned(),
            node: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }))
    }

    /// This node's mark.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn subject(&self, node: &str) -> String {
        format!("{}.reply.{node}", self.prefix)
    }

    /// The node whose reply queue `destination` names, if not this one. A
    /// name not of the cluster's form (a forgery, a one-node name) is
    /// nobody else's: this node's router drops it.
    pub fn elsewhere<'a>(&self, destination: &'a str) -> Option<&'a str> {
        let rest = destination.strip_prefix(REPLY_QUEUE_PREFIX)?;
        let tag = rest.split('.').next()?;
        let ours =
            tag.len() == NODE_DIGITS + SECRET_DIGITS && tag.bytes().all(|b| b.is_ascii_hexdigit());
        let node = tag.get(..NODE_DIGITS)?;
        (ours && node != self.node).then_some(node)
    }

    /// Passes `message` (a SEND to `/reply-queue/...`) to `node`, sending
    /// it again until that node's router has it. `Ok` too when no node
    /// answers to `node` for [`REPLY_WAIT`] (gone, with its reply queues);
    /// `Err` when the engine does not carry it.
    pub async fn send(&self, node: &str, message: &Message) -> Result<(), String> {
        let subject = self.subject(node);
        let payload = wire::encode(message);
        let deadline = tokio::time::Instant::now() + REPLY_WAIT;
        let mut last = String::new();
        loop {
            let mut from = async_nats::HeaderMap::new();
            from.insert(FROM, self.node.as_str());
            let request = self
                .client
                .request_with_headers(subject.clone(), from, payload.clone());
            match tokio::time::timeout(ATTEMPT_WAIT, request).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(error)) if error.kind() == RequestErrorKind::NoResponders => {
                    last.clear();
                }
                Ok(Err(error)) if error.kind() == RequestErrorKind::TimedOut => {
                    last = error.to_string();
                }
                Ok(Err(error)) => {
                    return Err(format!(
                        "reply not passed on: the cluster engine is unreachable ({error})"
                    ))
                }
                Err(_) => last = format!("no answer within {ATTEMPT_WAIT:?}"),
            }
            if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        if last.is_empty() {
            debug!(
                node,
                "cluster engine: no node takes replies for this mark; the reply is dropped"
            );
            return Ok(());
        }
        Err(format!(
            "reply not passed on: the requester's node did not answer within {REPLY_WAIT:?} ({last})"
        ))
    }

    /// Subscribes to this node's replies and hands them to `router` from
    /// a task of their own.
    pub async fn serve(&self, router: RouterHandle) -> Result<(), String> {
        let mut replies = self
            .client
            .subscribe(self.subject(&self.node))
            .await
            .map_err(|e| format!("cluster: cannot subscribe to this node's replies: {e}"))?;
        let client = self.client.clone();
        tokio::spawn(async move {
            let mut seen = Seen::default();
            while let Some(reply) = replies.next().await {
                let answer = reply.reply.clone();
                // Message ids are unique per node, not across nodes.
                let from = reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(FROM))
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default();
                let Some(message) = wire::decode(reply.payload) else {
                    warn!("cluster engine: an unreadable reply dropped");
                    continue;
                };
                if !message.destination.starts_with(REPLY_QUEUE_PREFIX) {
                    continue;
                }
                // Sent again after an answer that was lost: it is there.
                if !seen.insert(format!("{from}/{}", message.id)) {
                    answer_to(&client, answer).await;
                    continue;
                }
                let publication = Publication {
                    id: message.id,
                    delivered_direct: false,
                    target: SendTarget::ReplyQueue(message.destination.clone()),
                    destination: message.destination,
                    headers: message.headers,
                    body: message.body,
                    expires_at: message.expires_at,
                    queue_arguments: QueueArguments::default(),
                    reply_queue: None,
                    persistent: false,
                };
                // No session of this node sent it: session 0 is none (they
                // count from 1), and nothing here can fail one.
                let command = RouterCommand::Publish {
                    session: SessionId(0),
                    publication,
                    receipt: None,
                };
                if router.send(command).await.is_err() {
                    break;
                }
                answer_to(&client, answer).await;
            }
            debug!("cluster engine: reply subscription over");
        });
        Ok(())
    }
}

/// Tells the sending node its reply is in the router's hands.
async fn answer_to(client: &async_nats::Client, answer: Option<async_nats::Subject>) {
    if let Some(answer) = answer {
        if let Err(error) = client.publish(answer, Bytes::new()).await {
            debug!(%error, "cluster engine: a reply's answer not sent; the reply comes again");
        }
    }
}

/// The replies passed on lately (`<sending node>/<message id>`): the
/// last [`SEEN`].
#[derive(Default)]
struct Seen {
    ids: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
}

impl Seen {
    /// False if `id` was passed on lately.
    fn insert(&mut self, id: String) -> bool {
        let id: Arc<str> = id.into();
        if !self.ids.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_well_formed_names_of_other_nodes_are_elsewhere() {
        // A client that never connects: only the naming is under test.
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .expect("lazy client");
        let replies = Replies::new(client, "stomphub").expect("rng");
        let secret = "0123456789abcdef0123456789abcdef";
        let other = format!("{REPLY_QUEUE_PREFIX}00112233aabbccdd{secret}.answers");
        assert_eq!(replies.elsewhere(&other), Some("00112233aabbccdd"));
        let own = format!("{REPLY_QUEUE_PREFIX}{}{secret}.answers", replies.node());
        assert_eq!(replies.elsewhere(&own), None);
        for forged in [
            format!("{REPLY_QUEUE_PREFIX}s12.answers"),
            format!("{REPLY_QUEUE_PREFIX}12.answers"),
            format!("{REPLY_QUEUE_PREFIX}{secret}.answers"),
            format!("{REPLY_QUEUE_PREFIX}00112233aabbccdd{secret}x.answers"),
        ] {
            assert_eq!(replies.elsewhere(&forged), None, "{forged}");
        }
    }
}
