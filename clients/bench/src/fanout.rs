//! Scenario `fanout`: one publisher, N subscribers of one topic. At full
//! speed the publisher stays at most `window` messages ahead of the slowest
//! subscriber (so no broker drops anything); with `--rate` it publishes at a
//! fixed rate. Each body carries its sequence number and send time, so
//! subscribers measure latency and count losses and duplicates.

use crate::connection::Connection;
use crate::stats::{cpu_seconds, own_cpu_seconds, percentile};
use crate::Fallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};

/// Options of `fanout`.
#[derive(clap::Args, Clone)]
pub struct FanoutArgs {
    /// Broker URL.
    #[arg(long, default_value = "ws://127.0.0.1:61614/ws")]
    pub url: String,
    /// Subscribing connections.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
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
    /// The topic.
    #[arg(long, default_value = "/topic/bench.fanout")]
    pub topic: String,
    /// The broker's process id, to read its CPU time from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// What one subscriber saw.
struct Seen {
    received: u64,
    duplicates: u64,
    latencies_us: Vec<u32>,
}

async fn subscribe(
    args: FanoutArgs,
    index: usize,
    progress: Arc<AtomicU64>,
    epoch: Instant,
    ready: Arc<AtomicU64>,
) -> Fallible<Seen> {
    let mut connection = Connection::open(&args.url).await?;
    connection
        .subscribe_confirmed("sub-0", &args.topic, &format!("ready-{index}"))
        .await?;
    ready.fetch_add(1, Ordering::Release);
    // Sample latencies so that big runs stay small in memory.
    let sample_every = (args.messages * args.subscribers as u64 / 2_000_000).max(1);
    let mut seen = Seen {
        received: 0,
        duplicates: 0,
        latencies_us: Vec::new(),
    };
    let mut next_expected = 0u64;
    while next_expected < args.messages {
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
        if sequence < next_expected {
            seen.duplicates += 1;
            continue;
        }
        next_expected = sequence + 1;
        seen.received += 1;
        progress.store(next_expected, Ordering::Release);
        if sequence % sample_every == 0 {
            let now_ns = epoch.elapsed().as_nanos() as u64;
            seen.latencies_us
                .push((now_ns.saturating_sub(sent_ns) / 1000).min(u64::from(u32::MAX)) as u32);
        }
    }
    Ok(seen)
}

/// Runs the scenario and prints its figures.
pub async fn run(args: FanoutArgs) -> Fallible<()> {
    let epoch = Instant::now();
    let ready = Arc::new(AtomicU64::new(0));
    let progress: Vec<Arc<AtomicU64>> = (0..args.subscribers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let mut subscribers = Vec::new();
    for (index, progress) in progress.iter().enumerate() {
        subscribers.push(tokio::spawn(subscribe(
            args.clone(),
            index,
            progress.clone(),
            epoch,
            ready.clone(),
        )));
    }
    while ready.load(Ordering::Acquire) < args.subscribers as u64 {
        if subscribers.iter().any(|s| s.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut publisher = Connection::open(&args.url).await?;
    let padding = "x".repeat(args.body.saturating_sub(40));
    let (cpu_before, tool_before) = (args.pid.and_then(cpu_seconds), own_cpu_seconds());
    let started = Instant::now();
    for sequence in 0..args.messages {
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(sequence as f64 / args.rate as f64);
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
                if sequence < slowest + args.window {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        let sent_ns = epoch.elapsed().as_nanos() as u64;
        publisher
            .send(
                Frame::new(Command::Send)
                    .header("destination", args.topic.clone())
                    .body(format!("{sequence:020}{sent_ns:020}{padding}")),
            )
            .await?;
    }
    publisher.flush().await?;
    let mut seen = Vec::new();
    for subscriber in subscribers {
        seen.push(subscriber.await??);
    }
    let elapsed = started.elapsed();
    let cpu = match (cpu_before, args.pid.and_then(cpu_seconds)) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let tool = match (tool_before, own_cpu_seconds()) {
        (Some(before), Some(after)) => after - before,
        _ => 0.0,
    };
    let delivered: u64 = seen.iter().map(|s| s.received).sum();
    let expected = args.messages * args.subscribers as u64;
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
    let mode = if args.rate > 0 {
        format!("{} msg/s", args.rate)
    } else {
        format!("full speed, window {}", args.window)
    };
    println!(
        "fanout {} | 1 publisher -> {} subscribers | {} messages of {} B | {mode}",
        args.topic, args.subscribers, args.messages, args.body
    );
    println!(
        "delivered {delivered} of {expected} in {:.2} s: {:.0} deliveries/s | latency p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms | lost {} | duplicates {duplicates}",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 0.999).as_secs_f64() * 1e3,
        expected - delivered,
    );
    println!(
        "{}tool CPU {tool:.2} s",
        cpu.map(|c| format!(
            "broker CPU {c:.2} s: {:.0} deliveries per broker CPU-second | ",
            delivered as f64 / c
        ))
        .unwrap_or_default()
    );
    Ok(())
}
