//! Scenario `conflation`: a slow subscriber under the broker's `conflate`
//! slow-consumer policy beside fast ones (the live-feeds issue). One
//! publisher goes round `--destinations` topics `<prefix>.<n>`; `--fast`
//! subscribers and `--slow` subscribers each hold `<prefix>.*`.
//!
//! The fast subscribers are counted as in `fanout` (delivery.rs: every
//! message, latency, lost, duplicates) and pace the publisher (it stays
//! within `--window` of the slowest fast one). A slow subscriber sleeps
//! `--slow-delay-ms` after each message while the publisher runs, so the
//! broker's queue for it passes its budget and conflates; it must never be
//! cut off, must see each destination's messages in order, and once the
//! publisher is done it reads on at full speed until it has the last value
//! of every destination (it converged) or 30 s passed (a problem).
//!
//! Reported: the fast subscribers' deliveries/s and per broker CPU-second,
//! latency and losses; the slow one's messages, the `x-conflated` counts it
//! saw and the time to converge; and the broker's peak memory growth over
//! the run (VmRSS sampled every 20 ms, from just before the first publish),
//! which with `--slow 0` gives the same case without the slow subscriber.
//! The broker must have the policy for the prefix, e.g.
//! `[[slow_consumers.rules]] pattern = "/topic/bench.conflate.#"
//! policy = "conflate"` (clients/bench/stomphub.toml has it).

use crate::connection::Connection;
use crate::delivery::{Outcome, Stamp, Tally};
use crate::pubsub::{wire_label, Protocol, PubSub};
use crate::report::Report;
use crate::stats::{rss_kib, CpuMeter};
use crate::Fallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stomp_protocol::Command;

/// How long a slow subscriber may take to converge once publishing ended.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

/// Options of `conflation`.
#[derive(clap::Args, Clone)]
pub struct ConflationArgs {
    /// Broker URL.
    #[arg(long, default_value = "ws://127.0.0.1:61614/ws")]
    pub url: String,
    /// Fast subscribers (each on `<prefix>.*`).
    #[arg(long, default_value_t = 10)]
    pub fast: usize,
    /// Slow subscribers (each on `<prefix>.*`); 0 for the same case without.
    #[arg(long, default_value_t = 1)]
    pub slow: usize,
    /// Destinations the publisher goes round.
    #[arg(long, default_value_t = 200)]
    pub destinations: u64,
    /// Messages published in all.
    #[arg(long, default_value_t = 50000)]
    pub messages: u64,
    /// Body size in bytes (at least 50).
    #[arg(long, default_value_t = 1000)]
    pub body: usize,
    /// Milliseconds a slow subscriber waits after each message while the
    /// publisher runs.
    #[arg(long, default_value_t = 10)]
    pub slow_delay_ms: u64,
    /// How far the publisher may run ahead of the slowest fast subscriber.
    #[arg(long, default_value_t = 500)]
    pub window: u64,
    /// Topic prefix (the broker's conflate rule must match it).
    #[arg(long, default_value = "/topic/bench.conflate")]
    pub prefix: String,
    /// The broker's process id, for its CPU time and memory.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// What one slow subscriber saw.
#[derive(Default)]
struct SlowTally {
    received: u64,
    /// Sum of `x-conflated` over the messages that carried it.
    conflated: u64,
    /// Messages that carried `x-conflated`.
    conflating_messages: u64,
    /// A destination's message older than one seen before it.
    order_violations: u64,
    /// From the publisher's end to the last value of every destination.
    converged_after: Option<Duration>,
    /// Why it stopped early (cut off, closed), if it did.
    failure: Option<String>,
}

/// Shared by the tasks of one run.
struct Run {
    args: ConflationArgs,
    epoch: Instant,
    /// Set when the publisher has sent (and flushed) everything.
    published: AtomicBool,
    /// When the publisher finished, in ns since `epoch`.
    published_at_ns: AtomicU64,
}

impl Run {
    fn destination(&self, sequence: u64) -> String {
        format!("{}.{}", self.args.prefix, sequence % self.args.destinations)
    }

    /// The last sequence number published to destination `d`.
    fn last_of(&self, d: u64) -> Option<u64> {
        let messages = self.args.messages;
        let count = self.args.destinations;
        if d >= count || d >= messages {
            return None;
        }
        Some(d + (messages - 1 - d) / count * count)
    }
}

async fn fast(run: Arc<Run>, index: usize, progress: Arc<AtomicU64>) -> Fallible<Tally> {
    let result = fast_receive(&run, index, &progress).await;
    progress.store(u64::MAX, Ordering::Release);
    result
}

async fn fast_receive(run: &Run, index: usize, progress: &AtomicU64) -> Fallible<Tally> {
    let args = &run.args;
    let mut connection = Connection::open(&args.url).await?;
    let pattern = format!("{}.*", args.prefix);
    connection
        .subscribe_confirmed("fast", &pattern, &format!("fast-{index}"), &[])
        .await?;
    progress.store(0, Ordering::Release);
    let total = args.messages * args.fast as u64;
    let mut tally = Tally::new(1, args.messages, args.messages, total);
    let bytes_before = connection.received_bytes();
    while !tally.complete() {
        let frame = match tokio::time::timeout(Duration::from_secs(5), connection.next()).await {
            Ok(frame) => frame?,
            Err(_) => break, // nothing for 5 s: the rest is lost
        };
        if frame.command != Command::Message {
            return Err(format!("fast subscriber: {:?}", frame.get("message")).into());
        }
        let now_ns = run.epoch.elapsed().as_nanos() as u64;
        match Stamp::parse(&frame.body) {
            Some(stamp) => {
                tally.record(stamp, true, now_ns);
            }
            None => tally.duplicates += 1,
        }
        progress.store(tally.progress(0), Ordering::Release);
    }
    tally.wire_bytes = connection.received_bytes() - bytes_before;
    Ok(tally)
}

async fn slow(run: Arc<Run>, index: usize, ready: Arc<AtomicU64>) -> SlowTally {
    let mut tally = SlowTally::default();
    if let Err(error) = slow_receive(&run, index, &ready, &mut tally).await {
        tally.failure = Some(error.to_string());
    }
    tally
}

async fn slow_receive(
    run: &Run,
    index: usize,
    ready: &AtomicU64,
    tally: &mut SlowTally,
) -> Fallible<()> {
    let args = &run.args;
    let mut connection = Connection::open(&args.url).await?;
    let pattern = format!("{}.*", args.prefix);
    connection
        .subscribe_confirmed("slow", &pattern, &format!("slow-{index}"), &[])
        .await?;
    ready.fetch_add(1, Ordering::Release);
    // Per destination: the newest sequence number seen, plus one (0: none).
    let mut newest = vec![0u64; args.destinations as usize];
    let mut missing = (0..args.destinations)
        .filter(|d| run.last_of(*d).is_some())
        .count();
    let delay = Duration::from_millis(args.slow_delay_ms);
    while missing > 0 {
        let published = run.published.load(Ordering::Acquire);
        let wait = if published {
            let since = run.published_at_ns.load(Ordering::Acquire);
            let elapsed =
                Duration::from_nanos((run.epoch.elapsed().as_nanos() as u64).saturating_sub(since));
            CONVERGE_WITHIN.saturating_sub(elapsed)
        } else {
            // The publisher is still going: wait for it too.
            CONVERGE_WITHIN + Duration::from_secs(600)
        };
        let frame = match tokio::time::timeout(wait, connection.next()).await {
            Ok(frame) => frame?,
            Err(_) => {
                return Err(format!("{missing} destinations never reached their last value").into())
            }
        };
        if frame.command != Command::Message {
            return Err(format!("cut off: {:?}", frame.get("message")).into());
        }
        tally.received += 1;
        if let Some(count) = frame.get("x-conflated").and_then(|c| c.parse::<u64>().ok()) {
            tally.conflated += count;
            tally.conflating_messages += 1;
        }
        let Some(stamp) = Stamp::parse(&frame.body) else {
            continue;
        };
        let d = (stamp.sequence % args.destinations) as usize;
        if stamp.sequence < newest[d] {
            tally.order_violations += 1;
            continue;
        }
        newest[d] = stamp.sequence + 1;
        if run.last_of(d as u64) == Some(stamp.sequence) {
            missing -= 1;
        }
        if !run.published.load(Ordering::Acquire) {
            tokio::time::sleep(delay).await;
        }
    }
    let since = run.published_at_ns.load(Ordering::Acquire);
    tally.converged_after = Some(Duration::from_nanos(
        (run.epoch.elapsed().as_nanos() as u64).saturating_sub(since),
    ));
    Ok(())
}

/// Samples the broker's VmRSS every 20 ms until `stop`; the peak (KiB).
async fn peak_rss(pid: u32, stop: Arc<AtomicBool>) -> u64 {
    let mut peak = 0;
    while !stop.load(Ordering::Acquire) {
        peak = peak.max(rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak.max(rss_kib(pid).unwrap_or(0))
}

/// Scenario `conflation`.
pub async fn run(args: ConflationArgs) -> Fallible<Report> {
    if args.destinations == 0 || args.fast == 0 {
        return Err("conflation needs at least one destination and one fast subscriber".into());
    }
    let run = Arc::new(Run {
        args: args.clone(),
        epoch: Instant::now(),
        published: AtomicBool::new(false),
        published_at_ns: AtomicU64::new(0),
    });
    let progress: Vec<Arc<AtomicU64>> = (0..args.fast)
        .map(|_| Arc::new(AtomicU64::new(u64::MAX - 1)))
        .collect();
    let fast_tasks: Vec<_> = progress
        .iter()
        .enumerate()
        .map(|(i, p)| tokio::spawn(fast(run.clone(), i, p.clone())))
        .collect();
    let slow_ready = Arc::new(AtomicU64::new(0));
    let slow_tasks: Vec<_> = (0..args.slow)
        .map(|i| tokio::spawn(slow(run.clone(), i, slow_ready.clone())))
        .collect();
    // Ready: every fast subscriber stored 0, every slow one counted itself.
    loop {
        let fast_ready = progress
            .iter()
            .all(|p| p.load(Ordering::Acquire) != u64::MAX - 1);
        if fast_ready && slow_ready.load(Ordering::Acquire) >= args.slow as u64 {
            break;
        }
        if fast_tasks.iter().any(|t| t.is_finished()) || slow_tasks.iter().any(|t| t.is_finished())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut publisher = Connection::open(&args.url).await?;
    let rss_before = args.pid.and_then(rss_kib);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = args
        .pid
        .map(|pid| tokio::spawn(peak_rss(pid, stop.clone())));
    let meter = CpuMeter::start(args.pid);
    let started = Instant::now();
    for sequence in 0..args.messages {
        if sequence % 32 == 0 {
            PubSub::flush(&mut publisher).await?;
            loop {
                let slowest = progress
                    .iter()
                    .map(|p| p.load(Ordering::Acquire))
                    .min()
                    .unwrap_or(sequence);
                if sequence < slowest.saturating_add(args.window) {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        let body = Stamp {
            sequence,
            sent_ns: run.epoch.elapsed().as_nanos() as u64,
            publisher: 0,
        }
        .body(args.body);
        PubSub::publish(&mut publisher, &run.destination(sequence), body.into()).await?;
    }
    PubSub::flush(&mut publisher).await?;
    run.published_at_ns
        .store(run.epoch.elapsed().as_nanos() as u64, Ordering::Release);
    run.published.store(true, Ordering::Release);
    let mut tallies = Vec::new();
    for task in fast_tasks {
        tallies.push(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = meter.used();
    let mut slow_tallies = Vec::new();
    for task in slow_tasks {
        slow_tallies.push(task.await?);
    }
    stop.store(true, Ordering::Release);
    let peak = match sampler {
        Some(sampler) => Some(sampler.await?),
        None => None,
    };
    let outcome = Outcome {
        title: format!(
            "conflation {}.<n> | 1 publisher -> {} destinations -> {} fast + {} slow (sleeping {} ms a message) subscribers of {}.* | {} messages of {} B",
            args.prefix, args.destinations, args.fast, args.slow, args.slow_delay_ms, args.prefix, args.messages, args.body
        ),
        tallies: &tallies,
        wire: wire_label(&args.url, Protocol::Stomp),
        elapsed,
        cpu,
        threads: None,
    };
    let mut report = outcome.report();
    if let (Some(before), Some(peak)) = (rss_before, peak) {
        let growth = peak.saturating_sub(before) as f64 / 1024.0;
        report.line(format!(
            "broker memory: {:.1} MiB before publishing, peak {:.1} MiB (+{growth:.1} MiB)",
            before as f64 / 1024.0,
            peak as f64 / 1024.0
        ));
        report.figure("broker peak memory growth MiB", growth);
    }
    for (i, slow) in slow_tallies.iter().enumerate() {
        let converged = slow
            .converged_after
            .map(|d| {
                format!(
                    "converged {:.0} ms after the last publish",
                    d.as_secs_f64() * 1e3
                )
            })
            .unwrap_or_else(|| "did not converge".into());
        report.line(format!(
            "slow subscriber {i}: {} messages, {} of them conflated ({} replaced in all) | {converged} | order violations {}",
            slow.received, slow.conflating_messages, slow.conflated, slow.order_violations
        ));
        if let Some(failure) = &slow.failure {
            report.problem(format!("slow subscriber {i}: {failure}"));
        }
        if slow.order_violations > 0 {
            report.problem(format!(
                "slow subscriber {i}: {} messages older than one already seen of their destination",
                slow.order_violations
            ));
        }
    }
    if let Some(slow) = slow_tallies.first() {
        report.figure("slow messages", slow.received as f64);
        report.figure("slow conflated", slow.conflated as f64);
        if let Some(after) = slow.converged_after {
            report.figure("slow converged ms", after.as_secs_f64() * 1e3);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_last_sequence_of_each_destination() {
        let cli = crate::Cli::parse_from([
            "stomphub-bench",
            "conflation",
            "--destinations",
            "3",
            "--messages",
            "7",
        ]);
        let crate::Scenario::Conflation(args) = cli.scenario else {
            panic!("conflation");
        };
        let run = Run {
            args,
            epoch: Instant::now(),
            published: AtomicBool::new(false),
            published_at_ns: AtomicU64::new(0),
        };
        // 0..7 over 3 destinations: 0 3 6 | 1 4 | 2 5.
        assert_eq!(
            (0..4).map(|d| run.last_of(d)).collect::<Vec<_>>(),
            vec![Some(6), Some(4), Some(5), None]
        );
    }
}
