//! One conformance suite for one node and for the cluster: with
//! `STOMPHUB_TEST_TARGET=cluster`, `start(config)` starts the same config on
//! three brokers with `[cluster] engine = "nats"`, and the `TestBroker`'s
//! `url()` is a round-robin TCP balancer in front of them, so the suites
//! run unchanged with each new client connection on the next node.
//!
//! The three nats-servers (JetStream R3, `sync_interval: always`) are shared
//! by the whole test binary: started once on a thread that lives as long as
//! the process (each server gets SIGKILL from the kernel when that thread,
//! so the process, ends) and killed by process id at exit. Tests are kept
//! apart by a `cluster.subject_prefix` of their own. Every node connects to
//! the same one of the three servers: a topic SUBSCRIBE's RECEIPT
//! guarantees interest on the node's own server (docs/cluster.md), so the
//! suites' "after the RECEIPT, every publish reaches it" holds between
//! nodes; routing between servers is what the `cluster_*` suites test.
//!
//! Tests that cannot hold on a cluster are listed, with the reason, in
//! `cluster_exclusions.txt`: `tests/run` skips them in cluster mode, and
//! `start` refuses to run one there (it fails, never passes).

use super::cluster::NatsCluster;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use stomphub::{Broker, Config};
use tokio::net::{TcpListener, TcpStream};

/// Brokers per cluster.
const NODES: usize = 3;
/// nats-servers in the shared engine.
const SERVERS: usize = 3;

/// `suite test reason...` per line; `#` starts a comment.
const EXCLUSIONS: &str = include_str!("cluster_exclusions.txt");

/// Whether the suites run against a cluster (`STOMPHUB_TEST_TARGET=cluster`).
pub fn cluster_mode() -> bool {
    std::env::var("STOMPHUB_TEST_TARGET").is_ok_and(|target| target == "cluster")
}

/// Fails the calling test if it is excluded in cluster mode, naming why
/// (unless `STOMPHUB_TEST_RUN_EXCLUDED=1`: to see whether it still fails).
pub fn refuse_excluded() {
    if std::env::var("STOMPHUB_TEST_RUN_EXCLUDED").is_ok_and(|run| run == "1") {
        return;
    }
    let suite = env!("CARGO_CRATE_NAME");
    let thread = std::thread::current();
    let Some(test) = thread.name() else { return };
    for line in EXCLUSIONS.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, ' ');
        let (Some(excluded_suite), Some(excluded_test)) = (fields.next(), fields.next()) else {
            continue;
        };
        if excluded_suite == suite && excluded_test == test {
            panic!(
                "{suite}::{test} is excluded in cluster mode ({}): tests/run skips it",
                fields.next().unwrap_or("").trim()
            );
        }
    }
}

/// The shared engine; taken and dropped (servers killed by process id,
/// directories removed) by the exit hook.
static ENGINE: Mutex<Option<NatsCluster>> = Mutex::new(None);
/// Its client URLs, once started.
static ENGINE_URLS: OnceLock<Vec<String>> = OnceLock::new();

extern "C" fn stop_engine() {
    let engine = ENGINE.lock().map(|mut engine| engine.take());
    drop(engine);
}

fn engine_urls() -> &'static [String] {
    ENGINE_URLS.get_or_init(|| {
        let (urls_tx, urls_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("nats-servers".into())
            .spawn(move || {
                let engine = NatsCluster::start_tied(SERVERS);
                let urls = engine.urls();
                *ENGINE.lock().unwrap_or_else(|p| p.into_inner()) = Some(engine);
                // SAFETY: registers a plain function to run at exit.
                unsafe { libc::atexit(stop_engine) };
                let _ = urls_tx.send(urls);
                // The servers die with this thread: it must outlive the tests.
                loop {
                    std::thread::park();
                }
            })
            .expect("a thread for the nats-servers");
        urls_rx
            .recv()
            .expect("the shared nats-servers start (see the panic above)")
    })
}

/// The nodes behind one test's balancer (the first is the `TestBroker`'s
/// own broker), stopped when dropped.
pub struct ClusterTarget {
    /// Nodes 2 and 3, each with its data directory.
    pub others: Vec<(Broker, tempfile::TempDir)>,
    /// The balancer's URL (the nodes' scheme and path).
    pub url: String,
    /// The balancer's accept loop.
    balancer: tokio::task::JoinHandle<()>,
}

impl ClusterTarget {
    /// Shuts every node down at once, `first` among them (the caller's).
    pub async fn shutdown(mut self, first: Broker) {
        let mut nodes = vec![first];
        nodes.extend(
            std::mem::take(&mut self.others)
                .into_iter()
                .map(|(node, _)| node),
        );
        futures_util::future::join_all(nodes.into_iter().map(Broker::shutdown)).await;
    }
}

impl Drop for ClusterTarget {
    fn drop(&mut self) {
        self.balancer.abort();
    }
}

/// `config` as node `node` of a fresh cluster on the shared engine.
pub fn node_config(mut config: Config, prefix: &str, node: usize) -> Config {
    config.cluster.engine = stomphub::config::Engine::Nats;
    config.cluster.servers = vec![engine_urls()[0].clone()];
    config.cluster.node_name = format!("{prefix}-b{node}");
    config.cluster.replicas = SERVERS;
    config.cluster.subject_prefix = prefix.to_owned();
    // Each test's streams (queues, durable subscriptions) reserve this
    // much of the servers' 1 GB file store; a suite's tests (17 at most) fit.
    config.cluster.max_bytes = 32 << 20;
    config.cluster.durable_max_bytes = 16 << 20;
    // The feed stream (memory, unless a rule is persistent) reserves this
    // much of the servers' memory store per test; the suites run here keep
    // no history, and a suite's tests fit.
    config.topics.max_history_bytes = config.topics.max_history_bytes.min(2 << 20);
    // A busy machine, and the stream's leader elected just now.
    config.cluster.connect_timeout = Duration::from_secs(30);
    config
}

/// A prefix no other test of this binary uses.
pub fn unique_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("conform{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Brokers per cluster.
pub fn nodes() -> usize {
    NODES
}

/// The balancer in front of `first` and `others`.
pub async fn balanced(first: &Broker, others: Vec<(Broker, tempfile::TempDir)>) -> ClusterTarget {
    let mut nodes = vec![first.local_addr()];
    nodes.extend(others.iter().map(|(broker, _)| broker.local_addr()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("balancer");
    let address = listener.local_addr().expect("balancer address");
    let url = first.url();
    let (scheme, rest) = url.split_once("://").expect("a ws:// or wss:// url");
    let path = rest.find('/').map(|at| &rest[at..]).unwrap_or("");
    ClusterTarget {
        others,
        url: format!("{scheme}://{address}{path}"),
        balancer: tokio::spawn(balance(listener, nodes)),
    }
}

/// Hands each accepted connection to the next node in turn, bytes copied
/// both ways until either side closes.
async fn balance(listener: TcpListener, nodes: Vec<SocketAddr>) {
    let mut next = 0;
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let node = nodes[next % nodes.len()];
        next += 1;
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(node).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}
