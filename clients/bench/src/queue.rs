//! Scenario `queue`: producers and consumers on one queue, a receipt per SEND.

use crate::connection::Connection;
use crate::report::Report;
use crate::stats::{percentile, CpuMeter};
use crate::{Fallible, QueueArgs};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio::sync::Barrier;

async fn produce(args: QueueArgs, producer: usize) -> Fallible<Vec<Duration>> {
    let mut connection = Connection::open(&args.url).await?;
    let body = "x".repeat(args.body);
    let mut outstanding: VecDeque<Instant> = VecDeque::new();
    let mut latencies = Vec::with_capacity(args.messages);
    let mut sent = 0;
    while latencies.len() < args.messages {
        while sent < args.messages && outstanding.len() < args.window {
            let mut frame = Frame::new(Command::Send)
                .header("destination", args.queue.clone())
                .header("receipt", format!("{producer}-{sent}"))
                .header("x-id", format!("{producer}-{sent}"))
                .body(body.clone());
            if args.persistent {
                frame = frame.header("persistent", "true");
            }
            connection.send(frame).await?;
            outstanding.push_back(Instant::now());
            sent += 1;
        }
        // Take every receipt that has arrived before sending (and writing) more.
        let mut next = Some(connection.next().await?);
        while let Some(frame) = next {
            match frame.command {
                // Receipts come back in order on one connection.
                Command::Receipt => {
                    if let Some(at) = outstanding.pop_front() {
                        latencies.push(at.elapsed());
                    }
                }
                _ => return Err(format!("producer {producer}: {:?}", frame.get("message")).into()),
            }
            next = connection.try_next()?;
        }
    }
    Ok(latencies)
}

/// Deliveries by message id, and when the last one arrived.
#[derive(Default)]
struct Deliveries {
    seen: HashMap<String, u32>,
    last: Option<Instant>,
}

async fn consume(
    args: QueueArgs,
    index: usize,
    deliveries: Arc<Mutex<Deliveries>>,
    expected: usize,
    subscribed: Arc<Barrier>,
) -> Fallible<()> {
    let url = match args.consumer_urls.len() {
        0 => &args.url,
        n => &args.consumer_urls[index % n],
    };
    let setup = async {
        let mut connection = Connection::open(url).await?;
        connection
            .subscribe_confirmed(
                "bench",
                &args.queue,
                "subscribed",
                &[("ack", "client-individual"), ("prefetch-count", "200")],
            )
            .await?;
        Fallible::Ok(connection)
    }
    .await;
    // Producers start once every consumer is there, so that a broker
    // without stored queues (the baseline) loses nothing either. A consumer
    // that failed still passes the barrier, and the run reports its error.
    subscribed.wait().await;
    let mut connection = setup?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(3), connection.next()).await;
        let Ok(frame) = frame else {
            return Ok(()); // quiet: the run is over
        };
        // Acknowledge every message that has arrived, then write the ACKs at once.
        let mut next = Some(frame?);
        while let Some(frame) = next {
            if frame.command != Command::Message {
                return Err(format!("consumer: {:?}", frame.get("message")).into());
            }
            let id = frame.get("x-id").unwrap_or_default().to_owned();
            let done = {
                let mut deliveries = deliveries.lock().map_err(|_| "poisoned")?;
                *deliveries.seen.entry(id).or_default() += 1;
                deliveries.last = Some(Instant::now());
                deliveries.seen.len() >= expected
            };
            let ack = frame.get("ack").unwrap_or_default().to_owned();
            connection
                .send(Frame::new(Command::Ack).header("id", ack))
                .await?;
            if done {
                connection.flush().await?;
                return Ok(());
            }
            next = connection.try_next()?;
        }
    }
}

/// Runs the scenario.
pub async fn run(args: QueueArgs) -> Fallible<Report> {
    let expected = args.producers * args.messages;
    let deliveries = Arc::new(Mutex::new(Deliveries::default()));
    let subscribed = Arc::new(Barrier::new(args.consumers + 1));
    let consumers: Vec<_> = (0..args.consumers)
        .map(|index| {
            tokio::spawn(consume(
                args.clone(),
                index,
                deliveries.clone(),
                expected,
                subscribed.clone(),
            ))
        })
        .collect();
    subscribed.wait().await;
    let meter = CpuMeter::start(args.pid).with_processes(&args.node_pids, &args.engine_pids);
    let started = Instant::now();
    let producers: Vec<_> = (0..args.producers)
        .map(|p| tokio::spawn(produce(args.clone(), p)))
        .collect();
    let mut latencies = Vec::new();
    for producer in producers {
        latencies.extend(producer.await??);
    }
    let confirmed_in = started.elapsed().as_secs_f64();
    for consumer in consumers {
        consumer.await??;
    }
    let cpu = meter.used();
    latencies.sort_unstable();
    let deliveries = deliveries.lock().map_err(|_| "poisoned")?;
    let seen = &deliveries.seen;
    let delivered_in = deliveries
        .last
        .map_or(Duration::ZERO, |last| last - started)
        .as_secs_f64();
    let sent: HashSet<String> = (0..args.producers)
        .flat_map(|p| (0..args.messages).map(move |n| format!("{p}-{n}")))
        .collect();
    let lost = sent.iter().filter(|id| !seen.contains_key(*id)).count();
    let duplicates = seen.values().filter(|n| **n > 1).count();
    let confirmed = latencies.len() as f64;
    let ms = |p: f64| percentile(&latencies, p).as_secs_f64() * 1e3;
    let mut report = Report::default();
    report.line(format!(
        "queue {} | producers {} consumers {} window {} body {} B persistent {}",
        args.queue, args.producers, args.consumers, args.window, args.body, args.persistent
    ));
    report.line(format!(
        "confirmed {confirmed} SENDs in {confirmed_in:.2} s: {:.0}/s | receipt latency p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms",
        confirmed / confirmed_in,
        ms(0.5),
        ms(0.99),
        ms(0.999),
    ));
    report.line(format!(
        "delivered {} in {delivered_in:.2} s: {:.0}/s | lost {lost} | duplicates {duplicates}",
        seen.len(),
        seen.len() as f64 / delivered_in,
    ));
    report.cpu(cpu, confirmed, "confirmed per broker CPU-s");
    report.figure("confirmed/s", confirmed / confirmed_in);
    report.figure("receipt p50 ms", ms(0.5));
    report.figure("receipt p99 ms", ms(0.99));
    report.figure("delivered/s", seen.len() as f64 / delivered_in);
    report.figure("lost", lost as f64);
    report.figure("duplicates", duplicates as f64);
    if lost > 0 {
        report.problem(format!("{lost} messages lost"));
    }
    Ok(report)
}
