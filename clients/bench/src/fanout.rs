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
//! publishes at a fixed rate. Each body carries its sequence number and send
//! time, so subscribers measure latency and count losses and duplicates.

use crate::connection::Connection;
use crate::report::Report;
use crate::stats::{percentile, CpuMeter};
use crate::Fallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};

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
    /// Messages to publish.
    #[arg(long, default_value_t = 20000)]
    pub messages: u64,
    /// Messages per second; 0 publishes as fast as the slowest subscriber allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// At full speed, how far the publisher may run ahead of the slowest subscriber.
    #[arg(long, default_value_t = 500)]
    pub window: u64,
    /// Body size in bytes (at least 40).
    #[arg(long, default_value_t = 100)]
    pub body: usize,
    /// The broker's process id, to read its CPU time from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// Who gets what: message `s` goes to `topics[s % topics.len()]`.
struct Layout {
    title: String,
    topics: Vec<String>,
    /// Per subscriber: its SUBSCRIBE destination, and for each topic whether it matches.
    subscribers: Vec<(String, Arc<Vec<bool>>)>,
}

/// What one subscriber saw.
struct Seen {
    received: u64,
    expected: u64,
    duplicates: u64,
    latencies_us: Vec<u32>,
}

/// Shared by the subscriber tasks and the publisher.
struct Shared {
    load: LoadArgs,
    epoch: Instant,
    ready: AtomicU64,
    topic_count: u64,
    /// Total deliveries expected, to size latency sampling.
    expected_total: u64,
}

async fn subscribe(
    shared: Arc<Shared>,
    index: usize,
    destination: String,
    matches: Arc<Vec<bool>>,
    progress: Arc<AtomicU64>,
) -> Fallible<Seen> {
    let mut connection = Connection::open(&shared.load.url).await?;
    connection
        .subscribe_confirmed("sub-0", &destination, &format!("ready-{index}"), &[])
        .await?;
    shared.ready.fetch_add(1, Ordering::Release);
    let messages = shared.load.messages;
    let wanted = |sequence: u64| matches[(sequence % shared.topic_count) as usize];
    let expected = (0..messages).filter(|s| wanted(*s)).count() as u64;
    let last_wanted = (0..messages).rev().find(|s| wanted(*s));
    // Sample latencies so that big runs stay small in memory.
    let sample_every = (shared.expected_total / 2_000_000).max(1);
    let mut seen = Seen {
        received: 0,
        expected,
        duplicates: 0,
        latencies_us: Vec::new(),
    };
    let Some(last_wanted) = last_wanted else {
        progress.store(u64::MAX, Ordering::Release);
        return Ok(seen);
    };
    let mut next_expected = 0u64;
    while next_expected <= last_wanted {
        let frame = match tokio::time::timeout(Duration::from_secs(5), connection.next()).await {
            Ok(frame) => frame?,
            Err(_) => break, // nothing for 5 s: the rest is lost
        };
        if frame.command != Command::Message {
            return Err(format!("subscriber: {:?}", frame.get("message")).into());
        }
        let body = &frame.body;
        let parse = |range: std::ops::Range<usize>| -> u64 {
            body.get(range)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|t| t.parse().ok())
                .unwrap_or(0)
        };
        let (sequence, sent_ns) = (parse(0..20), parse(20..40));
        if sequence < next_expected || !wanted(sequence) {
            seen.duplicates += 1;
            continue;
        }
        next_expected = sequence + 1;
        seen.received += 1;
        progress.store(next_expected, Ordering::Release);
        if seen.received % sample_every == 0 {
            let now_ns = shared.epoch.elapsed().as_nanos() as u64;
            seen.latencies_us
                .push((now_ns.saturating_sub(sent_ns) / 1000).min(u64::from(u32::MAX)) as u32);
        }
    }
    progress.store(u64::MAX, Ordering::Release);
    Ok(seen)
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

/// Publishes and collects what the subscribers saw.
async fn run(load: LoadArgs, layout: Layout) -> Fallible<Report> {
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
        subscribers.push(tokio::spawn(subscribe(
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
    let mut publisher = Connection::open(&load.url).await?;
    let padding = "x".repeat(load.body.saturating_sub(40));
    let meter = CpuMeter::start(load.pid);
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
        publisher
            .send(
                Frame::new(Command::Send)
                    .header("destination", topic.clone())
                    .body(format!("{sequence:020}{sent_ns:020}{padding}")),
            )
            .await?;
    }
    publisher.flush().await?;
    let mut seen = Vec::new();
    for subscriber in subscribers {
        seen.push(subscriber.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = meter.used();
    let delivered: u64 = seen.iter().map(|s| s.received).sum();
    let expected: u64 = seen.iter().map(|s| s.expected).sum();
    let duplicates: u64 = seen.iter().map(|s| s.duplicates).sum();
    let mut latencies: Vec<Duration> = seen
        .iter()
        .flat_map(|s| {
            s.latencies_us
                .iter()
                .map(|us| Duration::from_micros(u64::from(*us)))
        })
        .collect();
    latencies.sort_unstable();
    let ms = |p: f64| percentile(&latencies, p).as_secs_f64() * 1e3;
    let (p50, p99, p999) = (ms(0.5), ms(0.99), ms(0.999));
    let mode = if load.rate > 0 {
        format!("{} msg/s", load.rate)
    } else {
        format!("full speed, window {}", load.window)
    };
    let mut report = Report::default();
    report.line(format!(
        "{} | {} messages of {} B | {mode}",
        layout.title, load.messages, load.body
    ));
    report.line(format!(
        "delivered {delivered} of {expected} in {elapsed:.2} s: {:.0} deliveries/s | latency p50 {p50:.2} ms p99 {p99:.2} ms p999 {p999:.2} ms | lost {} | duplicates {duplicates}",
        delivered as f64 / elapsed,
        expected - delivered,
    ));
    report.cpu(cpu, delivered as f64, "deliveries per broker CPU-s");
    report.figure("deliveries/s", delivered as f64 / elapsed);
    report.figure("p50 ms", p50);
    report.figure("p99 ms", p99);
    report.figure("p999 ms", p999);
    report.figure("lost", (expected - delivered) as f64);
    report.figure("duplicates", duplicates as f64);
    if delivered < expected {
        report.problem(format!("{} deliveries lost", expected - delivered));
    }
    if duplicates > 0 {
        report.problem(format!("{duplicates} duplicate deliveries"));
    }
    Ok(report)
}
