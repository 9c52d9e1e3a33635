//! Publish/subscribe load: one publisher, N subscribers, one or many topics.
//!
//! Scenario `fanout`: every subscriber subscribes to the one topic. Scenario
//! `topics`: the publisher goes round the topics of `--groups` groups, and
//! each subscriber holds one wildcard subscription (`<prefix>.<group>.*`, or
//! every tenth subscriber `<prefix>.#`), so the broker matches wildcards on
//! every publish.
//!
//! At full speed the publisher stays at most `window` messages ahead of the
//! slowest subscriber (so no broker need drop anything); with `--rate` it
//! publishes at a fixed rate. Each body carries a stamp (delivery.rs), so
//! subscribers measure latency and count losses, duplicates and reordering.
//!
//! Both scenarios speak STOMP, NATS or MQTT (`--protocol`), through the
//! [`PubSub`] trait, with the same accounting, or with subscribers over
//! Server-Sent Events (`--protocol sse`, sse.rs); subscribers also count
//! the bytes they receive (WebSocket payload, TCP, or SSE body), for bytes
//! on the wire per delivery.

use crate::connection::Connection;
use crate::delivery::{Outcome, Stamp, Tally};
use crate::mqtt::MqttConnection;
use crate::nats::NatsConnection;
use crate::pubsub::{wire_label, Protocol, PubSub};
use crate::report::Report;
use crate::sse::SseConnection;
use crate::stats::{CpuMeter, ThreadMeter};
use crate::Fallible;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `fanout`.
#[derive(clap::Args, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Subscribing connections.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// The topic.
    #[arg(long, default_value = "/topic/bench.fanout")]
    pub topic: String,
}

/// Options of `topics`.
#[derive(clap::Args, Clone)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Subscribing connections, each with one wildcard subscription.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Topic groups: subscriber i subscribes to `<prefix>.<i % groups>.*`.
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// Topics in each group.
    #[arg(long, default_value_t = 100)]
    pub topics: usize,
    /// Topic name prefix.
    #[arg(long, default_value = "/topic/bench.wild")]
    pub prefix: String,
}

/// Options shared by the publish/subscribe scenarios.
#[derive(clap::Args, Clone)]
pub struct LoadArgs {
    /// Broker URL.
    #[arg(long, default_value = "ws://127.0.0.1:61614/ws")]
    pub url: String,
    /// The protocol spoken over the WebSocket (`fanout` and `topics` only).
    #[arg(long, value_enum, default_value_t = Protocol::Stomp)]
    pub protocol: Protocol,
    /// Messages to publish (per publisher in `publishers`).
    #[arg(long, default_value_t = 20000)]
    pub messages: u64,
    /// Messages per second (per publisher in `publishers`); 0 publishes as
    /// fast as the slowest subscriber allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// At full speed, how far a publisher may run ahead of the slowest subscriber.
    #[arg(long, default_value_t = 500)]
    pub window: u64,
    /// STOMP: ask stomphub for several frames per WebSocket message
    /// (CONNECT `x-pack-frames:true`, an opt-in of stomphub's).
    #[arg(long)]
    pub pack_frames: bool,
    /// Body size in bytes (at least 50: sequence, send time, publisher).
    #[arg(long, default_value_t = 100)]
    pub body: usize,
    /// The broker's process id, to read its CPU time from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Subscribers connect to these URLs, round-robin (default: `--url`);
    /// e.g. the nodes of a cluster, the publisher staying on `--url`.
    #[arg(long = "subscriber-url", value_name = "URL")]
    pub subscriber_urls: Vec<String>,
    /// More broker processes whose CPU counts as the broker's (a cluster's
    /// other nodes; repeatable).
    #[arg(long = "node-pid", value_name = "PID")]
    pub node_pids: Vec<u32>,
    /// The engine's processes (a cluster's nats-servers; repeatable), whose
    /// CPU is reported beside the broker's.
    #[arg(long = "engine-pid", value_name = "PID")]
    pub engine_pids: Vec<u32>,
    /// Before the measured run, publish probe messages to every topic until
    /// every subscriber has heard one (60 s at most): on a cluster a
    /// SUBSCRIBE's RECEIPT comes before the other nodes' engine servers know
    /// of the interest, and a fixed wait is too short on a busy machine.
    #[arg(long)]
    pub probe_interest: bool,
}

impl LoadArgs {
    /// Where subscriber `index` connects.
    fn subscriber_url(&self, index: usize) -> &str {
        match self.subscriber_urls.len() {
            0 => &self.url,
            n => &self.subscriber_urls[index % n],
        }
    }
}

/// Who gets what: message `s` goes to `topics[s % topics.len()]`.
struct Layout {
    title: String,
    topics: Vec<String>,
    /// Per subscriber: its SUBSCRIBE destination, and for each topic whether it matches.
    subscribers: Vec<(String, Arc<Vec<bool>>)>,
}

/// Shared by the subscriber tasks and the publisher.
struct Shared {
    load: LoadArgs,
    epoch: Instant,
    ready: AtomicU64,
    /// Subscribers that have heard a probe (`--probe-interest`).
    probed: AtomicU64,
    topic_count: u64,
    /// Total deliveries expected, to size latency sampling.
    expected_total: u64,
}

async fn subscribe<C: PubSub>(
    shared: Arc<Shared>,
    index: usize,
    destination: String,
    matches: Arc<Vec<bool>>,
    progress: Arc<AtomicU64>,
) -> Fallible<Tally> {
    let result = receive::<C>(shared, index, destination, matches, &progress).await;
    // Done or failed (e.g. cut off): the publisher no longer waits for it.
    progress.store(u64::MAX, Ordering::Release);
    result
}

/// One subscriber's run: subscribe, then count until everything came or
/// nothing came for 5 s.
async fn receive<C: PubSub>(
    shared: Arc<Shared>,
    index: usize,
    destination: String,
    matches: Arc<Vec<bool>>,
    progress: &AtomicU64,
) -> Fallible<Tally> {
    let mut connection = C::open(shared.load.subscriber_url(index)).await?;
    connection.subscribe(&destination, index).await?;
    let bytes_before = connection.received_bytes();
    shared.ready.fetch_add(1, Ordering::Release);
    let messages = shared.load.messages;
    let wanted = |sequence: u64| matches[(sequence % shared.topic_count) as usize];
    let expected = (0..messages).filter(|s| wanted(*s)).count() as u64;
    let mut tally = Tally::new(1, messages, expected, shared.expected_total);
    let mut heard_probe = false;
    while !tally.complete() {
        // While the interest is still spreading (probing), a subscriber may
        // hear nothing for longer.
        let silence = if shared.load.probe_interest && !heard_probe {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(5)
        };
        let body = match tokio::time::timeout(silence, connection.next_body()).await {
            Ok(body) => body?,
            Err(_) => break, // nothing for 5 s: the rest is lost
        };
        if body.starts_with(PROBE) {
            // Not part of the run: only tells the publisher the interest
            // has reached this subscriber's node.
            if !heard_probe {
                heard_probe = true;
                shared.probed.fetch_add(1, Ordering::Release);
            }
            continue;
        }
        let now_ns = shared.epoch.elapsed().as_nanos() as u64;
        match Stamp::parse(&body) {
            Some(stamp) => {
                tally.record(stamp, wanted(stamp.sequence), now_ns);
            }
            None => tally.duplicates += 1,
        }
        progress.store(tally.progress(0), Ordering::Release);
    }
    tally.wire_bytes = connection.received_bytes() - bytes_before;
    Ok(tally)
}

/// The body of a probe message (`--probe-interest`).
const PROBE: &[u8] = b"probe";

/// Publishes a probe to every topic every 50 ms until every subscriber has
/// heard one.
async fn probe_interest<C: PubSub>(
    publisher: &mut C,
    shared: &Shared,
    topics: &[String],
    subscribers: u64,
) -> Fallible<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.probed.load(Ordering::Acquire) < subscribers {
        if Instant::now() > deadline {
            return Err(format!(
                "interest did not reach every subscriber in 60 s ({} of {subscribers} heard a probe)",
                shared.probed.load(Ordering::Acquire)
            )
            .into());
        }
        for topic in topics {
            publisher.publish(topic, Bytes::from_static(PROBE)).await?;
        }
        publisher.flush().await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Scenario `fanout`.
pub async fn fanout(args: FanoutArgs) -> Fallible<Report> {
    let everything = Arc::new(vec![true]);
    let layout = Layout {
        title: format!(
            "fanout {} | 1 publisher -> {} subscribers",
            args.topic, args.subscribers
        ),
        topics: vec![args.topic.clone()],
        subscribers: (0..args.subscribers)
            .map(|_| (args.topic.clone(), everything.clone()))
            .collect(),
    };
    run(args.load, layout).await
}

/// Scenario `topics`.
pub async fn topics(args: TopicsArgs) -> Fallible<Report> {
    let groups = args.groups.max(1);
    let per_group = args.topics.max(1);
    // Interleave groups so that consecutive messages go to different groups.
    let topics: Vec<String> = (0..per_group)
        .flat_map(|t| (0..groups).map(move |g| (g, t)))
        .map(|(g, t)| format!("{}.{g}.{t}", args.prefix))
        .collect();
    let subscribers = (0..args.subscribers)
        .map(|i| {
            if i % 10 == 9 {
                (
                    format!("{}.#", args.prefix),
                    Arc::new(vec![true; topics.len()]),
                )
            } else {
                let group = i % groups;
                let matches = (0..topics.len()).map(|k| k % groups == group).collect();
                (format!("{}.{group}.*", args.prefix), Arc::new(matches))
            }
        })
        .collect();
    let layout = Layout {
        title: format!(
            "topics {}.<group>.<topic> | 1 publisher, {} topics in {groups} groups -> {} wildcard subscribers (every tenth on #)",
            args.prefix,
            topics.len(),
            args.subscribers
        ),
        topics,
        subscribers,
    };
    run(args.load, layout).await
}

/// Runs the layout in the chosen protocol.
async fn run(load: LoadArgs, layout: Layout) -> Fallible<Report> {
    crate::connection::PACK_FRAMES.store(load.pack_frames, std::sync::atomic::Ordering::Relaxed);
    match load.protocol {
        Protocol::Stomp => run_with::<Connection>(load, layout).await,
        Protocol::Nats => run_with::<NatsConnection>(load, layout).await,
        Protocol::Mqtt => run_with::<MqttConnection>(load, layout).await,
        Protocol::Sse => run_with::<SseConnection>(load, layout).await,
    }
}

/// Publishes and collects what the subscribers saw.
async fn run_with<C: PubSub>(load: LoadArgs, mut layout: Layout) -> Fallible<Report> {
    // Destinations in the protocol's own form, once.
    for topic in &mut layout.topics {
        *topic = C::topic(topic);
    }
    for (destination, _) in &mut layout.subscribers {
        *destination = C::topic(destination);
    }
    let topic_count = layout.topics.len() as u64;
    let expected_total = layout
        .subscribers
        .iter()
        .map(|(_, m)| m.iter().filter(|x| **x).count() as u64 * load.messages / topic_count)
        .sum();
    let shared = Arc::new(Shared {
        load: load.clone(),
        epoch: Instant::now(),
        ready: AtomicU64::new(0),
        probed: AtomicU64::new(0),
        topic_count,
        expected_total,
    });
    let progress: Vec<Arc<AtomicU64>> = (0..layout.subscribers.len())
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let mut subscribers = Vec::new();
    for (index, ((destination, matches), progress)) in
        layout.subscribers.iter().zip(&progress).enumerate()
    {
        subscribers.push(tokio::spawn(subscribe::<C>(
            shared.clone(),
            index,
            destination.clone(),
            matches.clone(),
            progress.clone(),
        )));
    }
    while shared.ready.load(Ordering::Acquire) < layout.subscribers.len() as u64 {
        if subscribers.iter().any(|s| s.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut publisher = C::open(&load.url).await?;
    if load.probe_interest {
        let subscribed = layout.subscribers.len() as u64;
        probe_interest(&mut publisher, &shared, &layout.topics, subscribed).await?;
    }
    let meter = CpuMeter::start(load.pid).with_processes(&load.node_pids, &load.engine_pids);
    let thread_meter = load.pid.map(ThreadMeter::start);
    let started = Instant::now();
    for sequence in 0..load.messages {
        if load.rate > 0 {
            let due = started + Duration::from_secs_f64(sequence as f64 / load.rate as f64);
            if due > Instant::now() {
                publisher.flush().await?;
                tokio::time::sleep_until(due.into()).await;
            }
        } else if sequence % 32 == 0 {
            publisher.flush().await?;
            // Stay within `window` of the slowest subscriber.
            loop {
                let slowest = progress
                    .iter()
                    .map(|p| p.load(Ordering::Acquire))
                    .min()
                    .unwrap_or(sequence);
                if sequence < slowest.saturating_add(load.window + topic_count) {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        let sent_ns = shared.epoch.elapsed().as_nanos() as u64;
        let topic = &layout.topics[(sequence % topic_count) as usize];
        let body = Stamp {
            sequence,
            sent_ns,
            publisher: 0,
        }
        .body(load.body);
        publisher.publish(topic, body.into()).await?;
    }
    publisher.flush().await?;
    let mut tallies = Vec::new();
    for subscriber in subscribers {
        tallies.push(subscriber.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = meter.used();
    let threads = thread_meter.and_then(|m| m.used());
    let mode = if load.rate > 0 {
        format!("{} msg/s", load.rate)
    } else {
        format!("full speed, window {}", load.window)
    };
    let mode = format!("{mode} | {}", load.protocol.name());
    let outcome = Outcome {
        title: format!(
            "{} | {} messages of {} B | {mode}",
            layout.title, load.messages, load.body
        ),
        tallies: &tallies,
        wire: wire_label(&load.url, load.protocol),
        elapsed,
        cpu,
        threads,
    };
    Ok(outcome.report())
}
