//! Scenario `idle`: N connections open (WebSocket upgrade + CONNECT, at most
//! `--concurrency` at a time), then all subscribe to one topic, then
//! silence. Reports the connect rate, the SUBSCRIBE rate, the broker's memory
//! per connection (VmRSS from /proc, given its pid), and how long one message
//! published to all of them takes to reach every one (every connection stays
//! open until all have reported, so closing does not load the broker then).

use crate::connection::Connection;
use crate::report::Report;
use crate::stats::{rss_kib, CpuMeter};
use crate::Fallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio::sync::{mpsc, watch, Semaphore};

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
    let connecting = CpuMeter::start(args.pid);
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let (connected, subscribed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    // Phases: everyone connects; everyone subscribes; the probe; close.
    let (subscribe_tx, subscribe_rx) = watch::channel(false);
    let (probe_tx, probe_rx) = watch::channel::<Option<Instant>>(None);
    let (close_tx, close_rx) = watch::channel(false);
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<Duration>();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        let (args, permits, connected, subscribed, arrived_tx) = (
            args.clone(),
            permits.clone(),
            connected.clone(),
            subscribed.clone(),
            arrived_tx.clone(),
        );
        let (mut subscribe_rx, mut probe_rx, mut close_rx) =
            (subscribe_rx.clone(), probe_rx.clone(), close_rx.clone());
        let (failed, first_error) = (failed.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            let outcome = async {
                let permit = permits.acquire_owned().await.map_err(|_| "closed")?;
                let mut connection = Connection::open(&args.url).await?;
                drop(permit);
                connected.fetch_add(1, Ordering::Release);
                subscribe_rx
                    .wait_for(|go| *go)
                    .await
                    .map_err(|_| "no subscribe")?;
                connection
                    .subscribe_confirmed("sub-0", &args.topic, &format!("r{index}"), &[])
                    .await?;
                subscribed.fetch_add(1, Ordering::Release);
                let frame = connection.next().await?;
                let sent = probe_rx
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| "no probe")?
                    .unwrap_or(started);
                if frame.command != Command::Message {
                    return Err::<(), Box<dyn std::error::Error + Send + Sync>>(
                        "probe not received".into(),
                    );
                }
                let _ = arrived_tx.send(sent.elapsed());
                // Stay connected until every probe is counted: closing now
                // would load the broker while it still delivers the probe.
                let _ = close_rx.wait_for(|close| *close).await;
                Ok(())
            }
            .await;
            if let Err(e) = &outcome {
                if failed.fetch_add(1, Ordering::AcqRel) == 0 {
                    if let Ok(mut first) = first_error.lock() {
                        *first = Some(e.to_string());
                    }
                }
            }
            outcome
        }));
    }
    drop(arrived_tx);
    // Until every connection is through the phase or one has failed.
    let wait_for = |counter: &AtomicU64| {
        counter.load(Ordering::Acquire) >= args.connections as u64
            || failed.load(Ordering::Acquire) > 0
    };
    while !wait_for(&connected) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_time = started.elapsed();
    let connect_cpu = connecting.used();
    let opened = connected.load(Ordering::Acquire);

    let subscribing = Instant::now();
    subscribe_tx.send_replace(true);
    while !wait_for(&subscribed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let subscribe_time = subscribing.elapsed();
    let subscribed = subscribed.load(Ordering::Acquire);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = args.pid.and_then(rss_kib);

    let mut publisher = Connection::open(&args.url).await?;
    let probing = CpuMeter::start(args.pid);
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reached < subscribed {
        match tokio::time::timeout_at(deadline, arrived_rx.recv()).await {
            Ok(Some(took)) => {
                reached += 1;
                slowest = slowest.max(took);
            }
            _ => break,
        }
    }
    let probe_cpu = probing.used();
    close_tx.send_replace(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let connect_rate = opened as f64 / connect_time.as_secs_f64();
    let mut report = Report::default();
    report.line(format!(
        "idle {} | {} connections, WebSocket + CONNECT each ({} at once), then a SUBSCRIBE each",
        args.topic, args.connections, args.concurrency
    ));
    report.line(format!(
        "opened {opened} in {:.2} s: {connect_rate:.0} connects/s",
        connect_time.as_secs_f64(),
    ));
    report.line(format!(
        "while connecting: {}tool CPU {:.2} s",
        connect_cpu
            .broker
            .map(|c| format!(
                "broker CPU {c:.2} s, {:.0} µs per connection | ",
                c * 1e6 / opened.max(1) as f64
            ))
            .unwrap_or_default(),
        connect_cpu.tool
    ));
    report.line(format!(
        "then {subscribed} SUBSCRIBEs (with receipt) at once: {:.0}/s",
        subscribed as f64 / subscribe_time.as_secs_f64()
    ));
    report.figure("connects/s", connect_rate);
    report.figure(
        "subscribes/s",
        subscribed as f64 / subscribe_time.as_secs_f64(),
    );
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
    report.line(format!(
        "for the probe: {}tool CPU {:.2} s",
        probe_cpu
            .broker
            .map(|c| format!("broker CPU {c:.2} s | "))
            .unwrap_or_default(),
        probe_cpu.tool
    ));
    report.figure("probe to all ms", last_ms);
    report.figure(
        "lost",
        (args.connections as u64).saturating_sub(reached) as f64,
    );
    if opened < args.connections as u64 {
        report.problem(format!(
            "only {opened} of {} connections opened",
            args.connections
        ));
    }
    if let Some(e) = first_error.lock().ok().and_then(|mut e| e.take()) {
        report.problem(format!(
            "{} connections failed; the first: {e}",
            failed.load(Ordering::Acquire)
        ));
    }
    if reached < opened {
        report.problem(format!("the probe reached {reached} of {opened}"));
    }
    Ok(report)
}
