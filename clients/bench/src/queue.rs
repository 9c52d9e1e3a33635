//! Scenario `queue`: producers and consumers on one queue, a receipt per SEND.

use crate::connection::Connection;
use crate::stats::{cpu_seconds, percentile};
use crate::{Fallible, QueueArgs};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};

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
        let frame = connection.next().await?;
        match frame.command {
            // Receipts come back in order on one connection.
            Command::Receipt => {
                if let Some(at) = outstanding.pop_front() {
                    latencies.push(at.elapsed());
                }
            }
            _ => return Err(format!("producer {producer}: {:?}", frame.get("message")).into()),
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
    deliveries: Arc<Mutex<Deliveries>>,
    expected: usize,
) -> Fallible<()> {
    let mut connection = Connection::open(&args.url).await?;
    connection
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "bench")
                .header("destination", args.queue.clone())
                .header("ack", "client-individual")
                .header("prefetch-count", "200"),
        )
        .await?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(3), connection.next()).await;
        let Ok(frame) = frame else {
            return Ok(()); // quiet: the run is over
        };
        let frame = frame?;
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
    }
}

/// Runs the scenario and prints its figures.
pub async fn run(args: QueueArgs) -> Fallible<()> {
    let expected = args.producers * args.messages;
    let deliveries = Arc::new(Mutex::new(Deliveries::default()));
    let cpu_before = args.pid.and_then(cpu_seconds);
    let started = Instant::now();
    let consumers: Vec<_> = (0..args.consumers)
        .map(|_| tokio::spawn(consume(args.clone(), deliveries.clone(), expected)))
        .collect();
    let producers: Vec<_> = (0..args.producers)
        .map(|p| tokio::spawn(produce(args.clone(), p)))
        .collect();
    let mut latencies = Vec::new();
    for producer in producers {
        latencies.extend(producer.await??);
    }
    let confirmed_in = started.elapsed();
    for consumer in consumers {
        consumer.await??;
    }
    let cpu = match (cpu_before, args.pid.and_then(cpu_seconds)) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    latencies.sort_unstable();
    let deliveries = deliveries.lock().map_err(|_| "poisoned")?;
    let seen = &deliveries.seen;
    let delivered_in = deliveries
        .last
        .map_or(Duration::ZERO, |last| last - started);
    let sent: HashSet<String> = (0..args.producers)
        .flat_map(|p| (0..args.messages).map(move |n| format!("{p}-{n}")))
        .collect();
    let lost = sent.iter().filter(|id| !seen.contains_key(*id)).count();
    let duplicates = seen.values().filter(|n| **n > 1).count();
    println!(
        "queue {} | producers {} consumers {} window {} body {} B persistent {}",
        args.queue, args.producers, args.consumers, args.window, args.body, args.persistent
    );
    println!(
        "confirmed {} SENDs in {:.2} s: {:.0}/s | receipt latency p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms",
        latencies.len(),
        confirmed_in.as_secs_f64(),
        latencies.len() as f64 / confirmed_in.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 0.999).as_secs_f64() * 1e3,
    );
    println!(
        "delivered {} in {:.2} s: {:.0}/s | lost {lost} | duplicates {duplicates}{}",
        seen.len(),
        delivered_in.as_secs_f64(),
        seen.len() as f64 / delivered_in.as_secs_f64(),
        cpu.map(|c| format!(
            " | broker CPU {c:.2} s, {:.0} confirmed per CPU-second",
            latencies.len() as f64 / c
        ))
        .unwrap_or_default()
    );
    if lost > 0 {
        return Err(format!("{lost} messages lost").into());
    }
    Ok(())
}
