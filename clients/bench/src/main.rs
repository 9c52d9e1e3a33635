//! stomphub-bench: load for any STOMP-over-WebSocket broker, and for NATS and
//! MQTT brokers over WebSocket in the fan-out scenarios, to compare with.
//!
//! Scenarios (one file each): `fanout` and `topics` (fanout.rs, in STOMP,
//! NATS or MQTT through pubsub.rs, nats.rs, mqtt.rs, or with subscribers
//! over Server-Sent Events, sse.rs),
//! `publishers`, `queue`, `idle`, `late-joiners`, `conflation`, `micro`, with the delivery accounting of
//! the publish/subscribe ones in delivery.rs; `plan` runs a plan file of scenarios against several
//! brokers in interleaved rounds and writes medians to a file (a target may
//! be a cluster of processes, cluster.rs).
//!
//! usage: stomphub-bench fanout --url ws://127.0.0.1:61614/ws --subscribers 100 --pid <broker pid>
//!        stomphub-bench plan clients/bench/plan.toml

mod cluster;
mod conflation;
mod connection;
mod delivery;
mod fanout;
mod idle;
mod late_joiners;
mod message_scan;
mod micro;
mod mqtt;
mod nats;
mod plan;
mod publishers;
mod pubsub;
mod queue;
mod report;
mod sse;
mod stats;

use clap::{Parser, Subcommand};
use report::Report;

#[derive(Parser)]
#[command(about = "Load generator for STOMP over WebSocket brokers")]
pub struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Spread connections to a loopback broker over 127.0.0.1 … 127.0.0.N.
    #[arg(long, global = true, default_value_t = 16)]
    sources: usize,
}

#[derive(Subcommand)]
pub enum Scenario {
    /// One publisher, N subscribers of one topic.
    Fanout(fanout::FanoutArgs),
    /// One publisher over many topics, wildcard subscribers.
    Topics(fanout::TopicsArgs),
    /// Many publishers on many topics, exact or wildcard subscribers.
    Publishers(publishers::PublishersArgs),
    /// Producers and consumers on one queue, a receipt per SEND.
    Queue(QueueArgs),
    /// Many idle connections: connect rate, memory each, a probe to all.
    Idle(idle::IdleArgs),
    /// Late joiners each taking a wildcard snapshot of retained values.
    LateJoiners(late_joiners::LateJoinersArgs),
    /// A slow subscriber under the `conflate` policy beside fast ones.
    Conflation(conflation::ConflationArgs),
    /// Codec decode/encode MB/s and topic-trie matches/s, in process.
    Micro,
    /// A plan file's cases against its brokers, in rounds; medians to a file.
    Plan(plan::PlanArgs),
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
    /// Consumers connect to these URLs, round-robin (default: `--url`);
    /// e.g. the nodes of a cluster, the producers staying on `--url`.
    #[arg(long = "consumer-url", value_name = "URL")]
    pub consumer_urls: Vec<String>,
    /// More broker processes whose CPU counts as the broker's (a cluster's
    /// other nodes; repeatable).
    #[arg(long = "node-pid", value_name = "PID")]
    pub node_pids: Vec<u32>,
    /// The engine's processes (a cluster's nats-servers; repeatable), whose
    /// CPU is reported beside the broker's.
    #[arg(long = "engine-pid", value_name = "PID")]
    pub engine_pids: Vec<u32>,
}

/// Errors end a run with a message.
pub type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs one scenario (not `plan`).
pub async fn run_scenario(scenario: Scenario) -> Fallible<Report> {
    match scenario {
        Scenario::Fanout(args) => fanout::fanout(args).await,
        Scenario::Topics(args) => fanout::topics(args).await,
        Scenario::Publishers(args) => publishers::run(args).await,
        Scenario::Queue(args) => queue::run(args).await,
        Scenario::Idle(args) => idle::run(args).await,
        Scenario::LateJoiners(args) => late_joiners::run(args).await,
        Scenario::Conflation(args) => conflation::run(args).await,
        Scenario::Micro => micro::run(),
        Scenario::Plan(_) => Err("a plan cannot run a plan".into()),
    }
}

fn main() -> Fallible<()> {
    let cli = Cli::parse();
    connection::spread_sources(cli.sources);
    if let Scenario::Plan(args) = cli.scenario {
        return plan::run(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run_scenario(cli.scenario))?;
    print!("{}", report.text());
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(report.problems.join("; ").into())
    }
}
