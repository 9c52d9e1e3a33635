//! Queue traffic that outlives failures, for the cluster failure tests.
//!
//! A [`produce`] task sends receipted persistent queue SENDs, several in
//! flight (pipelined), each with its own `message-id` under one
//! `client-id`. When its connection ends (an ERROR from the broker, a node
//! going away) it connects to another node and sends again, with the same
//! `message-id`, every SEND that has no RECEIPT yet: the engine stores a
//! retried one once. A [`consume`] task subscribes to the queue on a node,
//! settles what it gets (or, holding, settles nothing) and subscribes again
//! on another node when its connection ends. What they see goes into one
//! shared [`Ledger`] that the tests judge: every receipted message must be
//! consumed at least once; duplicates are counted, never hidden.

use super::{Client, Event};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};

/// The brokers' WebSocket URLs by node; a restarted node gets a new one.
pub type Nodes = Arc<Mutex<Vec<String>>>;

/// What every producer and consumer saw, shared.
pub type Shared = Arc<Mutex<Ledger>>;

/// Bound on the broker's answer to a SEND in flight (its RECEIPT, an ERROR
/// or the end of the connection), and on finding a node that accepts a
/// connection: JetStream's 5 s request timeout plus a leader election on a
/// busy machine fit in it many times.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// What the producers and consumers saw.
#[derive(Default, Debug)]
pub struct Ledger {
    /// Message numbers whose SEND got a RECEIPT.
    pub receipted: BTreeSet<u64>,
    /// When each RECEIPT arrived, in arrival order.
    pub receipt_times: Vec<Instant>,
    /// Per message number delivered to a settling consumer: how often, and
    /// when first.
    pub consumed: BTreeMap<u64, (usize, Instant)>,
    /// The `message` of each ERROR a producer got (its SENDs without a
    /// RECEIPT were sent again).
    pub producer_errors: Vec<String>,
    /// Connections made again after one ended (producers and consumers).
    pub reconnects: usize,
    /// Per holding consumer: the node of its current connection and the
    /// message numbers it holds unsettled there.
    pub held: BTreeMap<String, (usize, BTreeSet<u64>)>,
    /// Deliveries marked `redelivered:true` to settling consumers.
    pub redelivered: usize,
}

impl Ledger {
    /// Deliveries beyond the first of each message.
    pub fn duplicates(&self) -> usize {
        self.consumed.values().map(|(count, _)| count - 1).sum()
    }

    /// Receipted messages no settling consumer has had.
    pub fn missing(&self) -> Vec<u64> {
        self.receipted
            .iter()
            .filter(|n| !self.consumed.contains_key(n))
            .copied()
            .collect()
    }

    /// The longest time without any RECEIPT between the first and the
    /// last: how long the producers saw the queue stand still.
    pub fn longest_pause(&self) -> Duration {
        self.receipt_times
            .windows(2)
            .map(|w| w[1].saturating_duration_since(w[0]))
            .max()
            .unwrap_or_default()
    }

    /// One line of figures for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "{} receipted (longest pause between RECEIPTs {:.1} s), {} consumed ({} duplicates, {} redelivered), {} producer ERRORs, {} reconnects{}",
            self.receipted.len(),
            self.longest_pause().as_secs_f64(),
            self.consumed.len(),
            self.duplicates(),
            self.redelivered,
            self.producer_errors.len(),
            self.reconnects,
            match self.missing() {
                missing if missing.is_empty() => String::new(),
                missing => format!("; receipted, not consumed: {:?}", &missing[..missing.len().min(20)]),
            }
        )
    }
}

/// Locks the ledger (a panicked task has failed the test already).
pub fn lock(ledger: &Shared) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until `done` holds for the ledger, at most `within`; panics with
/// `what` and the ledger's summary otherwise. Returns how long it took.
pub async fn wait_for(
    ledger: &Shared,
    within: Duration,
    what: &str,
    done: impl Fn(&Ledger) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        {
            let ledger = lock(ledger);
            if done(&ledger) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{what}: not within {within:?}; {}",
                ledger.summary()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects to the first node from `start` on (in turn) that answers
/// CONNECT with CONNECTED, as a client with a list of URLs does.
async fn connect_any(nodes: &Nodes, start: usize, client_id: &str) -> (usize, Client) {
    let started = Instant::now();
    loop {
        let urls = nodes.lock().expect("nodes").clone();
        for step in 0..urls.len() {
            let node = (start + step) % urls.len();
            let Ok(mut client) = Client::try_open(&urls[node], &["v12.stomp"]).await else {
                continue;
            };
            let connect = Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("heart-beat", "0,0")
                .header("client-id", client_id);
            if !client.try_send(connect).await {
                continue;
            }
            if let Some(Event::Frame(frame)) = client.event_within(ANSWER_WITHIN).await {
                if frame.command == Command::Connected {
                    return (node, client);
                }
            }
        }
        assert!(
            started.elapsed() < ANSWER_WITHIN,
            "{client_id}: no node of {urls:?} accepted a connection"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A producer's settings.
pub struct Producer {
    /// Its `client-id`.
    pub name: String,
    pub queue: String,
    /// The node it connects to first.
    pub node: usize,
    /// Its message numbers start here (producers must not overlap).
    pub first: u64,
    /// SENDs in flight at most.
    pub window: usize,
    /// At least this long between two SENDs.
    pub pace: Duration,
}

fn persistent_send(queue: &str, n: u64) -> Frame {
    Frame::new(Command::Send)
        .header("destination", queue)
        .header("persistent", "true")
        .header("receipt", format!("r{n}"))
        .header("message-id", format!("m{n}"))
        .body(n.to_string())
}

/// Sends new messages until `stop` is set, then until every one sent has its
/// RECEIPT (sent again on another connection when one ends without it).
/// Panics if SENDs in flight get no answer within [`ANSWER_WITHIN`]: every
/// SEND without a RECEIPT must get an ERROR or see its connection end.
/// Returns how many messages it sent.
pub async fn produce(nodes: Nodes, ledger: Shared, stop: Arc<AtomicBool>, p: Producer) -> u64 {
    let mut next = p.first;
    // Sent (or about to be sent again) and not receipted, in SEND order.
    let mut unreceipted: VecDeque<u64> = VecDeque::new();
    let mut node = p.node;
    loop {
        let (at, mut client) = connect_any(&nodes, node, &p.name).await;
        node = at;
        let mut again = unreceipted.clone();
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut last_send = Instant::now() - p.pace;
        let mut progress = Instant::now();
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            if in_flight.is_empty() && again.is_empty() && stopping {
                return next - p.first;
            }
            let room = in_flight.len() < p.window && !(stopping && again.is_empty());
            if room && last_send.elapsed() >= p.pace {
                let n = match again.pop_front() {
                    Some(n) => n,
                    None => {
                        next += 1;
                        unreceipted.push_back(next - 1);
                        next - 1
                    }
                };
                if in_flight.is_empty() {
                    progress = Instant::now();
                }
                in_flight.push_back(n);
                last_send = Instant::now();
                if !client.try_send(persistent_send(&p.queue, n)).await {
                    break;
                }
                continue;
            }
            let wait = if room {
                p.pace.saturating_sub(last_send.elapsed()) + Duration::from_millis(1)
            } else {
                ANSWER_WITHIN
            };
            match client.event_within(wait).await {
                None | Some(Event::HeartBeat) => {}
                Some(Event::Frame(frame)) if frame.command == Command::Receipt => {
                    let id = frame.get("receipt-id").unwrap_or_default();
                    let n: u64 = id
                        .strip_prefix('r')
                        .and_then(|n| n.parse().ok())
                        .expect("a receipt of ours");
                    assert_eq!(in_flight.pop_front(), Some(n), "RECEIPTs in SEND order");
                    unreceipted.retain(|m| *m != n);
                    let mut ledger = lock(&ledger);
                    ledger.receipted.insert(n);
                    ledger.receipt_times.push(Instant::now());
                    progress = Instant::now();
                }
                Some(Event::Frame(frame)) if frame.command == Command::Error => {
                    let message = frame.get("message").unwrap_or_default().to_owned();
                    lock(&ledger).producer_errors.push(message);
                    // The broker closes the connection after an ERROR.
                    break;
                }
                Some(Event::Frame(frame)) => panic!("{}: unexpected {frame:?}", p.name),
                Some(Event::Closed(_)) => break,
            }
            assert!(
                in_flight.is_empty() || progress.elapsed() < ANSWER_WITHIN,
                "{}: {} SENDs in flight on node {node} got neither RECEIPT nor ERROR \
                 within {ANSWER_WITHIN:?}, and the connection is open",
                p.name,
                in_flight.len()
            );
        }
        lock(&ledger).reconnects += 1;
        node += 1;
    }
}

/// A consumer's settings.
pub struct Consumer {
    /// Its `client-id` (and its key in [`Ledger::held`] when holding).
    pub name: String,
    pub queue: String,
    /// The node it connects to first.
    pub node: usize,
    /// `auto`, `client` or `client-individual`.
    pub ack: &'static str,
    pub prefetch: usize,
    /// Settles nothing (`ack` must not be `auto`): what it gets comes back
    /// only when its connection ends, through the broker's hand-back. A
    /// holder does not connect again.
    pub hold: bool,
}

/// Consumes until `stop` is set, subscribing again on another node each
/// time its connection ends (a holder ends with its connection). At `stop` it disconnects (a holder's messages
/// are handed back then).
pub async fn consume(nodes: Nodes, ledger: Shared, stop: Arc<AtomicBool>, c: Consumer) {
    let mut node = c.node;
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (at, mut client) = connect_any(&nodes, node, &c.name).await;
        node = at;
        let prefetch = c.prefetch.to_string();
        let subscribe = super::subscribe_frame(
            "s",
            &c.queue,
            &[("ack", c.ack), ("prefetch-count", &prefetch)],
        );
        if c.hold {
            lock(&ledger)
                .held
                .insert(c.name.clone(), (node, BTreeSet::new()));
        }
        let mut open = client.try_send(subscribe).await;
        while open {
            if stop.load(Ordering::SeqCst) {
                let _ = client.try_send(Frame::new(Command::Disconnect)).await;
                let _ = client.ws.close(None).await;
                return;
            }
            match client.event_within(Duration::from_millis(100)).await {
                None | Some(Event::HeartBeat) => {}
                Some(Event::Frame(frame)) if frame.command == Command::Message => {
                    let n: u64 = std::str::from_utf8(&frame.body)
                        .ok()
                        .and_then(|body| body.parse().ok())
                        .expect("a message of ours");
                    if c.hold {
                        let mut ledger = lock(&ledger);
                        if let Some((_, held)) = ledger.held.get_mut(&c.name) {
                            held.insert(n);
                        }
                        continue;
                    }
                    {
                        let mut ledger = lock(&ledger);
                        if frame.get("redelivered") == Some("true") {
                            ledger.redelivered += 1;
                        }
                        ledger.consumed.entry(n).or_insert((0, Instant::now())).0 += 1;
                    }
                    if c.ack != "auto" {
                        let id = frame.get("ack").expect("an ack header").to_owned();
                        open = client
                            .try_send(Frame::new(Command::Ack).header("id", &id))
                            .await;
                    }
                }
                Some(Event::Frame(frame)) if frame.command == Command::Receipt => {}
                // ERROR (a node going away) or the end: subscribe elsewhere.
                Some(Event::Frame(frame)) => {
                    eprintln!(
                        "consumer {} on node {node}: {:?} {:?}",
                        c.name,
                        frame.command,
                        frame.get("message")
                    );
                    open = false;
                }
                Some(Event::Closed(_)) => open = false,
            }
        }
        let held_any = {
            let mut ledger = lock(&ledger);
            ledger.reconnects += 1;
            ledger
                .held
                .remove(&c.name)
                .is_some_and(|(_, held)| !held.is_empty())
        };
        if c.hold {
            if held_any {
                // Its deliveries were handed back with its connection; held
                // again elsewhere, they would be out of the other
                // consumers' reach until the end.
                return;
            }
            // It held nothing (its SUBSCRIBE was refused, say, while the
            // engine was busy): it subscribes again on the same node.
            continue;
        }
        node += 1;
    }
}
