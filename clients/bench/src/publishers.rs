//! Scenario `publishers`: many publishing connections at once, which is what
//! shows whether topic fan-out is bound to one broker thread.
//!
//! P publishers each publish `--messages` to one topic (`<prefix>.<p % T>`
//! of `--topics` T, by default one topic per publisher). Each topic has
//! `--subscribers-per-topic` S subscribing connections: exact subscriptions,
//! or with `--wildcard` S connections that each hold the one pattern
//! `<prefix>.*`, which matches every topic.
//!
//! Bodies carry publisher id, sequence and send time (delivery.rs), so every
//! subscriber counts losses, duplicates and per-publisher order violations
//! (any one fails the run) and measures latency. At full speed each
//! publisher stays within `--window` messages of the slowest subscriber of
//! its topic; with `--rate` each publishes at that rate, the publishers
//! spread evenly over one period.

use crate::connection::Connection;
use crate::delivery::{Outcome, Stamp, Tally};
use crate::fanout::LoadArgs;
use crate::report::Report;
use crate::stats::{CpuMeter, ThreadMeter};
use crate::Fallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio::sync::watch;

/// Options of `publishers`.
#[derive(clap::Args, Clone)]
pub struct PublishersArgs {
    /// Broker URL, messages per publisher, rate per publisher, window per publisher, body, pid.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Publishing connections.
    #[arg(long, default_value_t = 50)]
    pub publishers: usize,
    /// Topics: publisher p publishes to `<prefix>.<p % topics>`; 0 is one per publisher.
    #[arg(long, default_value_t = 0)]
    pub topics: usize,
    /// Subscribing connections per topic.
    #[arg(long, default_value_t = 20)]
    pub subscribers_per_topic: usize,
    /// Subscribe with the one pattern `<prefix>.*` instead of each topic's name.
    #[arg(long)]
    pub wildcard: bool,
    /// Topic name prefix.
    #[arg(long, default_value = "/topic/bench.pub")]
    pub prefix: String,
}

/// Who publishes where and who receives what.
struct Layout {
    publishers: usize,
    /// Per publisher: its topic.
    topics: Vec<String>,
    /// Per subscriber: its SUBSCRIBE destination, and per publisher whether it matches.
    subscribers: Vec<(String, Arc<Vec<bool>>)>,
}

impl Layout {
    fn new(args: &PublishersArgs) -> Layout {
        let publishers = args.publishers.max(1);
        let topic_count = match args.topics {
            0 => publishers,
            n => n.min(publishers),
        };
        let topic = |t: usize| format!("{}.{t}", args.prefix);
        let topics = (0..publishers).map(|p| topic(p % topic_count)).collect();
        let subscribers = if args.wildcard {
            let everyone = Arc::new(vec![true; publishers]);
            (0..args.subscribers_per_topic)
                .map(|_| (format!("{}.*", args.prefix), everyone.clone()))
                .collect()
        } else {
            (0..topic_count)
                .flat_map(|t| {
                    let matches = Arc::new(
                        (0..publishers)
                            .map(|p| p % topic_count == t)
                            .collect::<Vec<_>>(),
                    );
                    (0..args.subscribers_per_topic).map(move |_| (topic(t), matches.clone()))
                })
                .collect()
        };
        Layout {
            publishers,
            topics,
            subscribers,
        }
    }
}

/// Shared by the subscriber and publisher tasks.
struct Shared {
    load: LoadArgs,
    publishers: usize,
    epoch: Instant,
    /// Subscribers whose SUBSCRIBE is confirmed.
    subscribed: AtomicUsize,
    /// Publishers connected and waiting for the start.
    connected: AtomicUsize,
    /// Per (subscriber, publisher), at `subscriber * publishers + publisher`:
    /// how far that publisher's messages have come at that subscriber
    /// (u64::MAX once the subscriber is done); read by the publishers' window.
    progress: Vec<AtomicU64>,
    /// Total deliveries expected, to size latency sampling.
    expected_total: u64,
}

async fn subscribe(
    shared: Arc<Shared>,
    index: usize,
    destination: String,
    matches: Arc<Vec<bool>>,
) -> Fallible<Tally> {
    let mut connection = Connection::open(&shared.load.url).await?;
    connection
        .subscribe_confirmed("sub-0", &destination, &format!("ready-{index}"), &[])
        .await?;
    shared.subscribed.fetch_add(1, Ordering::Release);
    let messages = shared.load.messages;
    let expected = matches.iter().filter(|m| **m).count() as u64 * messages;
    let mut tally = Tally::new(shared.publishers, messages, expected, shared.expected_total);
    let progress = shared
        .progress
        .get(index * shared.publishers..(index + 1) * shared.publishers)
        .ok_or("progress table too small")?;
    while !tally.complete() {
        let frame = match tokio::time::timeout(Duration::from_secs(5), connection.next()).await {
            Ok(frame) => frame?,
            Err(_) => break, // nothing for 5 s: the rest is lost
        };
        if frame.command != Command::Message {
            return Err(format!("subscriber: {:?}", frame.get("message")).into());
        }
        let now_ns = shared.epoch.elapsed().as_nanos() as u64;
        let Some(stamp) = Stamp::parse(&frame.body) else {
            tally.duplicates += 1;
            continue;
        };
        let publisher = stamp.publisher as usize;
        let wanted = matches.get(publisher).copied().unwrap_or(false);
        tally.record(stamp, wanted, now_ns);
        if let Some(slot) = progress.get(publisher) {
            slot.store(tally.progress(publisher), Ordering::Release);
        }
    }
    for slot in progress {
        slot.store(u64::MAX, Ordering::Release);
    }
    Ok(tally)
}

async fn publish(
    shared: Arc<Shared>,
    publisher: usize,
    topic: String,
    // Indexes into `Shared::progress` of this publisher's subscribers.
    watchers: Vec<usize>,
    mut go: watch::Receiver<Option<Instant>>,
) -> Fallible<()> {
    let load = &shared.load;
    let mut connection = Connection::open(&load.url).await?;
    shared.connected.fetch_add(1, Ordering::Release);
    let started = *go.wait_for(Option::is_some).await?;
    let started = started.ok_or("started without a start time")?;
    // Spread the publishers over one period, so that a fixed rate is not
    // one burst from every publisher at once.
    let offset = publisher as f64 / shared.publishers as f64;
    // Check the window at least every `window` messages.
    let check_every = load.window.clamp(1, 32);
    for sequence in 0..load.messages {
        if load.rate > 0 {
            let due =
                started + Duration::from_secs_f64((sequence as f64 + offset) / load.rate as f64);
            if due > Instant::now() {
                connection.flush().await?;
                tokio::time::sleep_until(due.into()).await;
            }
        } else if sequence % check_every == 0 {
            connection.flush().await?;
            loop {
                let slowest = watchers
                    .iter()
                    .filter_map(|w| shared.progress.get(*w))
                    .map(|p| p.load(Ordering::Acquire))
                    .min()
                    .unwrap_or(u64::MAX);
                if sequence < slowest.saturating_add(load.window) {
                    break;
                }
                // Many publishers wait at once: a coarse sleep keeps the
                // tool's own CPU out of the broker's way.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let stamp = Stamp {
            sequence,
            sent_ns: shared.epoch.elapsed().as_nanos() as u64,
            publisher: u32::try_from(publisher)?,
        };
        connection
            .send(
                Frame::new(Command::Send)
                    .header("destination", topic.clone())
                    .body(stamp.body(load.body)),
            )
            .await?;
    }
    connection.flush().await?;
    // Stay connected until the subscribers are done, so that closing is not
    // part of what is measured.
    let _ = go.changed().await;
    Ok(())
}

/// Scenario `publishers`.
pub async fn run(args: PublishersArgs) -> Fallible<Report> {
    if args.load.protocol != crate::pubsub::Protocol::Stomp {
        return Err("the publishers scenario speaks STOMP only".into());
    }
    let layout = Layout::new(&args);
    let load = args.load.clone();
    let publishers = layout.publishers;
    let expected_total = layout
        .subscribers
        .iter()
        .map(|(_, m)| m.iter().filter(|x| **x).count() as u64 * load.messages)
        .sum();
    let shared = Arc::new(Shared {
        load: load.clone(),
        publishers,
        epoch: Instant::now(),
        subscribed: AtomicUsize::new(0),
        connected: AtomicUsize::new(0),
        progress: (0..layout.subscribers.len() * publishers)
            .map(|_| AtomicU64::new(0))
            .collect(),
        expected_total,
    });
    let mut subscribers = Vec::new();
    for (index, (destination, matches)) in layout.subscribers.iter().enumerate() {
        subscribers.push(tokio::spawn(subscribe(
            shared.clone(),
            index,
            destination.clone(),
            matches.clone(),
        )));
    }
    while shared.subscribed.load(Ordering::Acquire) < layout.subscribers.len() {
        if subscribers.iter().any(|s| s.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (go_tx, go_rx) = watch::channel(None);
    let mut publishing = Vec::new();
    for (publisher, topic) in layout.topics.iter().enumerate() {
        let watchers = layout
            .subscribers
            .iter()
            .enumerate()
            .filter(|(_, (_, m))| m.get(publisher).copied().unwrap_or(false))
            .map(|(s, _)| s * publishers + publisher)
            .collect();
        publishing.push(tokio::spawn(publish(
            shared.clone(),
            publisher,
            topic.clone(),
            watchers,
            go_rx.clone(),
        )));
    }
    while shared.connected.load(Ordering::Acquire) < publishers {
        if let Some(failed) = publishing.iter_mut().find(|p| p.is_finished()) {
            failed.await??;
            return Err("a publisher ended before the start".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let meter = CpuMeter::start(load.pid);
    let thread_meter = load.pid.map(ThreadMeter::start);
    let started = Instant::now();
    go_tx.send(Some(started))?;
    let mut tallies = Vec::new();
    for subscriber in subscribers {
        tallies.push(subscriber.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = meter.used();
    let threads = thread_meter.and_then(|m| m.used());
    // Let the publishers go, then see that none failed.
    drop(go_tx);
    for publisher in publishing {
        publisher.await??;
    }
    let topic_count = layout
        .topics
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let shape = if args.wildcard {
        format!(
            "{} wildcard subscribers of {}.*",
            layout.subscribers.len(),
            args.prefix
        )
    } else {
        format!(
            "{} subscribers per topic ({} in all)",
            args.subscribers_per_topic,
            layout.subscribers.len()
        )
    };
    let mode = if load.rate > 0 {
        format!("{} msg/s per publisher", load.rate)
    } else {
        format!("full speed, window {} per publisher", load.window)
    };
    let outcome = Outcome {
        title: format!(
            "publishers {}.<n> | {publishers} publishers -> {topic_count} topics -> {shape} | {} messages of {} B per publisher | {mode}",
            args.prefix, load.messages, load.body
        ),
        tallies: &tallies,
        wire: crate::pubsub::wire_label(&load.url, load.protocol),
        elapsed,
        cpu,
        threads,
    };
    Ok(outcome.report())
}
