//! stomphub-bench: load for any STOMP-over-WebSocket broker.
//!
//! Scenarios (one file each): `queue`, `fanout`, `idle`, `micro`.
//!
//! Scenario `queue`: P producers send N messages each to one queue, each SEND
//! with a receipt, keeping up to `window` receipts outstanding; C consumers
//! (client-individual acks) take them. Prints confirmed SENDs per second,
//! receipt latency percentiles, delivered per second, lost and duplicate
//! counts, and, given the broker's pid, its CPU seconds.
//!
//! usage: stomphub-bench queue --url ws://127.0.0.1:61614/ws --producers 4 --persistent

mod connection;
mod fanout;
mod idle;
mod micro;
mod queue;
mod stats;

use clap::{Parser, Subcommand};

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
    /// One publisher, N subscribers of one topic.
    Fanout(fanout::FanoutArgs),
    /// Many idle connections: connect rate, memory each, a probe to all.
    Idle(idle::IdleArgs),
    /// Codec decode/encode MB/s and topic-trie matches/s, in process.
    Micro,
}

#[derive(clap::Args, Clone)]
pub struct QueueArgs {
    /// Broker URL.
    #[arg(long, default_value = "ws://127.0.0.1:61614/ws")]
    pub url: String,
    /// Producing connections.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Consuming connections.
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Messages per producer.
    #[arg(long, default_value_t = 5000)]
    pub messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    pub body: usize,
    /// Receipts a producer may have outstanding.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Send with `persistent:true`.
    #[arg(long)]
    pub persistent: bool,
    /// The queue.
    #[arg(long, default_value = "/queue/bench")]
    pub queue: String,
    /// The broker's process id, to read its CPU time from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// Errors end a run with a message.
pub type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Fallible<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.scenario {
            Scenario::Queue(args) => queue::run(args).await,
            Scenario::Fanout(args) => fanout::run(args).await,
            Scenario::Idle(args) => idle::run(args).await,
            Scenario::Micro => micro::run(),
        }
    })
}
