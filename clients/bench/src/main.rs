//! stomphub-bench: load for any STOMP-over-WebSocket broker.
//!
//! Scenario `queue`: P producers send N messages each to one queue, each SEND
//! with a receipt, keeping up to `window` receipts outstanding; C consumers
//! (client-individual acks) take them. Prints confirmed SENDs per second,
//! receipt latency percentiles, delivered per second, lost and duplicate
//! counts, and, given the broker's pid, its CPU seconds.
//!
//! usage: stomphub-bench queue --url ws://127.0.0.1:61614/ws --producers 4 --persistent

use bytes::BytesMut;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stomp_protocol::{encode, Command, Decoder, Frame, Limits, Version};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "Load generator for STOMP over WebSocket brokers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Producers and consumers on one queue, a receipt per SEND.
    Queue(QueueArgs),
}

#[derive(clap::Args, Clone)]
struct QueueArgs {
    /// Broker URL.
    #[arg(long, default_value = "ws://127.0.0.1:61614/ws")]
    url: String,
    /// Producing connections.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Consuming connections.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Messages per producer.
    #[arg(long, default_value_t = 5000)]
    messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// Receipts a producer may have outstanding.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Send with `persistent:true`.
    #[arg(long)]
    persistent: bool,
    /// The queue.
    #[arg(long, default_value = "/queue/bench")]
    queue: String,
    /// The broker's process id, to read its CPU time from /proc.
    #[arg(long)]
    pid: Option<u32>,
}

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One STOMP connection over WebSocket.
struct Connection {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    decoder: Decoder,
    buffer: BytesMut,
}

impl Connection {
    async fn open(url: &str) -> Fallible<Connection> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "v12.stomp".parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        let mut connection = Connection {
            ws,
            decoder: Decoder::new(Limits {
                max_body_bytes: 64 << 20,
                ..Limits::default()
            }),
            buffer: BytesMut::new(),
        };
        connection
            .send(
                Frame::new(Command::Connect)
                    .header("accept-version", "1.2")
                    .header("host", "/"),
            )
            .await?;
        let reply = connection.next().await?;
        if reply.command != Command::Connected {
            return Err(format!("CONNECT refused: {:?}", reply.get("message")).into());
        }
        Ok(connection)
    }

    async fn send(&mut self, frame: Frame) -> Fallible<()> {
        self.ws
            .feed(Message::Binary(encode(&frame, Version::V1_2)))
            .await?;
        Ok(())
    }

    async fn flush(&mut self) -> Fallible<()> {
        self.ws.flush().await?;
        Ok(())
    }

    async fn next(&mut self) -> Fallible<Frame> {
        self.flush().await?;
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buffer)? {
                return Ok(frame);
            }
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => self.buffer.extend_from_slice(&b),
                Some(Ok(Message::Text(t))) => self.buffer.extend_from_slice(t.as_bytes()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("connection closed".into()),
            }
        }
    }
}

/// CPU seconds (user + system) of a process, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

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

async fn queue(args: QueueArgs) -> Fallible<()> {
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

fn main() -> Fallible<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.scenario {
            Scenario::Queue(args) => queue(args).await,
        }
    })
}
