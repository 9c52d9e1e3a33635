//! Scenario `late-joiners`: live-feed snapshots at scale. A publisher makes
//! `--destinations` topics hold a retained value, then `--joiners`
//! connections (at most `--concurrency` at a time) each subscribe to the
//! wildcard over them and wait until their whole snapshot has arrived (the
//! MESSAGEs before the SUBSCRIBE's RECEIPT). Reports the time until all
//! have it, snapshots per second, and the broker's CPU and memory.

use crate::connection::Connection;
use crate::report::Report;
use crate::stats::{percentile, rss_kib, CpuMeter};
use crate::Fallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};

/// Options of `late-joiners`.
#[derive(clap::Args, Clone)]
pub struct LateJoinersArgs {
    /// Broker URL.
    #[arg(long, default_value = "ws://127.0.0.1:61614/ws")]
    pub url: String,
    /// Connections that join late, each with one wildcard subscription.
    #[arg(long, default_value_t = 10000)]
    pub joiners: usize,
    /// Retained destinations under the wildcard.
    #[arg(long, default_value_t = 1000)]
    pub destinations: usize,
    /// Joiners connecting and subscribing at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Topic prefix; the joiners subscribe to `<prefix>.*`.
    #[arg(long, default_value = "/topic/bench.late")]
    pub prefix: String,
    /// Body size of each retained value.
    #[arg(long, default_value_t = 100)]
    pub body: usize,
    /// The broker's process id, for its CPU time and memory.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// One joiner: connect, subscribe, count the snapshot; the time it took.
async fn join(url: &str, pattern: &str, expected: usize) -> Fallible<Duration> {
    let started = Instant::now();
    let mut connection = Connection::open(url).await?;
    connection
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "late")
                .header("destination", pattern)
                .header("receipt", "joined"),
        )
        .await?;
    let mut snapshot = 0;
    loop {
        let frame = connection.next().await?;
        match frame.command {
            Command::Message => snapshot += 1,
            Command::Receipt => break,
            _ => return Err(format!("unexpected {:?}", frame.get("message")).into()),
        }
    }
    if snapshot != expected {
        return Err(format!("snapshot of {snapshot}, expected {expected}").into());
    }
    Ok(started.elapsed())
}

/// Runs the scenario.
pub async fn run(args: LateJoinersArgs) -> Fallible<Report> {
    let mut report = Report::default();
    let mut publisher = Connection::open(&args.url).await?;
    let body = "x".repeat(args.body);
    for d in 0..args.destinations {
        let mut frame = Frame::new(Command::Send)
            .header("destination", format!("{}.d{d}", args.prefix))
            .header("x-retain", "true")
            .body(body.clone());
        if d + 1 == args.destinations {
            frame = frame.header("receipt", "retained");
        }
        publisher.send(frame).await?;
    }
    let reply = publisher.next().await?;
    if reply.command != Command::Receipt {
        return Err(format!("retained values refused: {:?}", reply.get("message")).into());
    }
    let rss_before = args.pid.and_then(rss_kib);
    let cpu = CpuMeter::start(args.pid);
    let started = Instant::now();
    let pattern: Arc<str> = format!("{}.*", args.prefix).into();
    let url: Arc<str> = args.url.clone().into();
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.joiners);
    let mut peak_rss = rss_before.unwrap_or(0);
    for _ in 0..args.joiners {
        let permit = permits.clone().acquire_owned().await?;
        let (url, pattern) = (url.clone(), pattern.clone());
        let expected = args.destinations;
        tasks.push(tokio::spawn(async move {
            let result = join(&url, &pattern, expected).await;
            drop(permit);
            result
        }));
        if tasks.len() % 500 == 0 {
            peak_rss = peak_rss.max(args.pid.and_then(rss_kib).unwrap_or(0));
        }
    }
    let mut times = Vec::with_capacity(tasks.len());
    let mut failed = 0;
    for task in tasks {
        match task.await? {
            Ok(time) => times.push(time),
            Err(e) => {
                if failed == 0 {
                    report.problem(format!("a joiner failed: {e}"));
                }
                failed += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let used = cpu.used();
    peak_rss = peak_rss.max(args.pid.and_then(rss_kib).unwrap_or(0));
    times.sort_unstable();
    let messages = (times.len() * args.destinations) as f64;
    report.line(format!(
        "{} joiners x {} retained destinations: all snapshots in {elapsed:.2} s ({failed} failed), {:.0} joiners/s, {:.0} snapshot messages/s",
        times.len(),
        args.destinations,
        times.len() as f64 / elapsed,
        messages / elapsed,
    ));
    if !times.is_empty() {
        report.line(format!(
            "per joiner (connect to full snapshot): p50 {:?}, p99 {:?}, max {:?}",
            percentile(&times, 0.50),
            percentile(&times, 0.99),
            times[times.len() - 1],
        ));
    }
    if let Some(before) = rss_before {
        report.line(format!(
            "broker memory: {before} KiB before, {peak_rss} KiB at most during the run (sampled)"
        ));
    }
    report.figure("all_snapshots_s", elapsed);
    report.cpu(used, messages, "snapshot messages");
    Ok(report)
}
