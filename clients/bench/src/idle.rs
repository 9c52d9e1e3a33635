//! Scenario `idle`: N connections, each CONNECT and one SUBSCRIBE, then
//! silence. Reports the connect rate, the broker's memory per connection
//! (VmRSS from /proc, given its pid), and how long one message published to
//! all of them takes to reach every one.

use crate::connection::Connection;
use crate::report::Report;
use crate::stats::rss_kib;
use crate::Fallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio::sync::{watch, Semaphore};

/// Options of `idle`.
#[derive(clap::Args, Clone)]
pub struct IdleArgs {
    /// Broker URL.
    #[arg(long, default_value = "ws://127.0.0.1:61614/ws")]
    pub url: String,
    /// Connections to open (the open-files limit bounds it: `ulimit -n`).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// The topic every connection subscribes to.
    #[arg(long, default_value = "/topic/bench.idle")]
    pub topic: String,
    /// The broker's process id, to read its memory from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// Runs the scenario.
pub async fn run(args: IdleArgs) -> Fallible<Report> {
    let rss_before = args.pid.and_then(rss_kib);
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let connected = Arc::new(AtomicU64::new(0));
    let (probe_tx, probe_rx) = watch::channel::<Option<Instant>>(None);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        let (args, permits, connected, mut probe_rx) = (
            args.clone(),
            permits.clone(),
            connected.clone(),
            probe_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = permits.acquire_owned().await.map_err(|_| "closed")?;
            let mut connection = Connection::open(&args.url).await?;
            connection
                .send(
                    Frame::new(Command::Subscribe)
                        .header("id", "sub-0")
                        .header("destination", args.topic.clone())
                        .header("receipt", format!("r{index}")),
                )
                .await?;
            if connection.next().await?.command != Command::Receipt {
                return Err::<Duration, Box<dyn std::error::Error + Send + Sync>>(
                    "SUBSCRIBE not confirmed".into(),
                );
            }
            drop(permit);
            connected.fetch_add(1, Ordering::Release);
            let frame = connection.next().await?;
            let sent = probe_rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| "no probe")?
                .unwrap_or(started);
            if frame.command != Command::Message {
                return Err("probe not received".into());
            }
            Ok(sent.elapsed())
        }));
    }
    while connected.load(Ordering::Acquire) < args.connections as u64 {
        if tasks.iter().any(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_time = started.elapsed();
    let opened = connected.load(Ordering::Acquire);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = args.pid.and_then(rss_kib);

    let mut publisher = Connection::open(&args.url).await?;
    let probe_sent = Instant::now();
    probe_tx.send_replace(Some(probe_sent));
    publisher
        .send(
            Frame::new(Command::Send)
                .header("destination", args.topic.clone())
                .body("probe"),
        )
        .await?;
    publisher.flush().await?;
    let mut reached = 0u64;
    let mut slowest = Duration::ZERO;
    for task in tasks {
        if let Ok(Ok(Ok(took))) = tokio::time::timeout(Duration::from_secs(30), task).await {
            reached += 1;
            slowest = slowest.max(took);
        }
    }
    let connect_rate = opened as f64 / connect_time.as_secs_f64();
    let mut report = Report::default();
    report.line(format!(
        "idle {} | {} connections, CONNECT + SUBSCRIBE each, {} at once",
        args.topic, args.connections, args.concurrency
    ));
    report.line(format!(
        "opened {opened} in {:.2} s: {connect_rate:.0} connects/s",
        connect_time.as_secs_f64(),
    ));
    report.figure("connects/s", connect_rate);
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let each = (after.saturating_sub(before)) as f64 / opened.max(1) as f64;
        report.line(format!(
            "broker memory: {before} KiB before, {after} KiB with the connections: {each:.1} KiB per connection"
        ));
        report.figure("KiB per connection", each);
    }
    let last_ms = slowest.as_secs_f64() * 1e3;
    report.line(format!(
        "probe reached {reached} of {opened} connections; the last after {last_ms:.1} ms"
    ));
    report.figure("probe to all ms", last_ms);
    report.figure("lost", (args.connections as u64 - reached) as f64);
    if opened < args.connections as u64 {
        report.problem(format!(
            "only {opened} of {} connections opened",
            args.connections
        ));
    }
    if reached < opened {
        report.problem(format!("the probe reached {reached} of {opened}"));
    }
    Ok(report)
}
