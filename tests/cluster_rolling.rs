//! Rolling restarts with real processes: 3 nats-servers (JetStream R3) and
//! 3 stomphub processes (`engine = "nats"`), with receipted persistent
//! queue SENDs (pipelined) and consumers on every node while it happens.
//!
//! - The brokers one after another, by SIGTERM: each one's clients get an
//!   ERROR, connect to another node and subscribe again; its in-flight
//!   deliveries are nak'ed at shutdown, so they reach other consumers within
//!   20 s although `ack_wait` is 60 s (only the hand-back can do that).
//! - The nats-servers one after another, SIGKILL by process id and started
//!   again on the same store and config, each time once the stream has all
//!   its replicas current again.
//!
//! Both: every message that got a RECEIPT is consumed at least once
//! (duplicates are counted and printed, never a failure; loss is one).

mod common;

use common::cluster::{start_processes, NatsCluster, NodeProcess, QUEUE_STREAM};
use common::traffic::{self, consume, produce, wait_for, Consumer, Nodes, Producer, Shared};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Bound on every wait for traffic, a restart or an election (generous: a
/// busy 2-core machine runs nine processes here).
const WITHIN: Duration = Duration::from_secs(60);
/// The hand-back bound: a third of `ack_wait` (60 s), so only the nak at
/// shutdown can bring a held message back in time.
const HANDED_BACK_WITHIN: Duration = Duration::from_secs(20);

/// The running producers and consumers.
struct Traffic {
    /// Set: the producers stop sending new messages.
    producing: Arc<AtomicBool>,
    producers: Vec<JoinHandle<u64>>,
    /// Each consumer with its own stop.
    consumers: Vec<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// Producers on nodes 0 and 2, and per node the consumers `spec` makes.
fn traffic(
    nodes: &Nodes,
    ledger: &Shared,
    queue: &str,
    spec: impl Fn(usize) -> Vec<Consumer>,
) -> Traffic {
    let producing = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for (index, node) in [0, 2].into_iter().enumerate() {
        let producer = Producer {
            name: format!("p{index}"),
            queue: queue.into(),
            node,
            first: index as u64 * 1_000_000,
            window: 8,
            pace: Duration::from_millis(5),
        };
        producers.push(tokio::spawn(produce(
            nodes.clone(),
            ledger.clone(),
            producing.clone(),
            producer,
        )));
    }
    let mut consumers = Vec::new();
    for node in 0..3 {
        for consumer in spec(node) {
            let stop = Arc::new(AtomicBool::new(false));
            let task = tokio::spawn(consume(
                nodes.clone(),
                ledger.clone(),
                stop.clone(),
                consumer,
            ));
            consumers.push((stop, task));
        }
    }
    Traffic {
        producing,
        producers,
        consumers,
    }
}

/// Stops the producers (each ends once all it sent is receipted), then
/// the consumers `first` (holders: their messages are handed back), waits
/// until every receipted message is consumed, stops the rest; returns the
/// figures.
async fn finish(ledger: &Shared, traffic: Traffic, first: impl Fn(usize) -> bool) -> String {
    let Traffic {
        producing,
        producers,
        consumers,
    } = traffic;
    producing.store(true, Ordering::SeqCst);
    for producer in producers {
        tokio::time::timeout(WITHIN, producer)
            .await
            .expect("the producers finish")
            .expect("a producer panicked");
    }
    let (early, rest): (Vec<_>, Vec<_>) = consumers
        .into_iter()
        .enumerate()
        .partition(|(index, _)| first(*index));
    for (stop, task) in early.into_iter().map(|(_, c)| c) {
        stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(WITHIN, task)
            .await
            .expect("a consumer finishes")
            .expect("a consumer panicked");
    }
    let drained = wait_for(ledger, WITHIN, "every receipted message consumed", |l| {
        l.missing().is_empty()
    })
    .await;
    // A quiet second: late duplicates show up in the counts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (stop, task) in rest.into_iter().map(|(_, c)| c) {
        stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(WITHIN, task)
            .await
            .expect("a consumer finishes")
            .expect("a consumer panicked");
    }
    let ledger = traffic::lock(ledger);
    assert!(
        ledger.missing().is_empty(),
        "receipted and lost: {:?}",
        ledger.missing()
    );
    let errors: BTreeSet<&String> = ledger.producer_errors.iter().collect();
    format!(
        "drained {:.1} s after the producers stopped; {}; producer ERRORs: {errors:?}",
        drained.as_secs_f64(),
        ledger.summary()
    )
}

/// Node `node`'s WebSocket URL into `nodes` (after a restart).
fn publish_url(nodes: &Nodes, node: usize, process: &NodeProcess) {
    nodes.lock().expect("nodes")[node] = process.url();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_sigterm_of_the_brokers_hands_deliveries_back_at_once_and_loses_nothing() {
    let engine = NatsCluster::start(3);
    let mut processes = start_processes(&engine, 3, "ack_wait = \"60s\"");
    let nodes: Nodes = Arc::new(Mutex::new(processes.iter().map(|p| p.url()).collect()));
    let ledger = Shared::default();
    const QUEUE: &str = "/queue/rolling.brokers";
    // Per node: a client-ack consumer (cumulative or individual), an auto
    // one, and a holder (client ack, prefetch 5, never settles).
    let spec = |node: usize| {
        vec![
            Consumer {
                name: format!("c{node}"),
                queue: QUEUE.into(),
                node,
                ack: if node.is_multiple_of(2) {
                    "client"
                } else {
                    "client-individual"
                },
                prefetch: 10,
                hold: false,
            },
            Consumer {
                name: format!("a{node}"),
                queue: QUEUE.into(),
                node,
                ack: "auto",
                prefetch: 10,
                hold: false,
            },
            Consumer {
                name: format!("h{node}"),
                queue: QUEUE.into(),
                node,
                ack: "client",
                prefetch: 5,
                hold: true,
            },
        ]
    };
    let running = traffic(&nodes, &ledger, QUEUE, spec);
    wait_for(&ledger, WITHIN, "50 receipts before the restarts", |l| {
        l.receipted.len() >= 50
    })
    .await;

    let mut handed_back = Vec::new();
    for node in 0..3 {
        // Every holder left full (5 each), so that no holder can take what
        // this node hands back; then what the ones on this node hold.
        wait_for(&ledger, WITHIN, "the holders full", |l| {
            l.held.len() == 3 - node && l.held.values().all(|(_, held)| held.len() == 5)
        })
        .await;
        let held: BTreeSet<u64> = traffic::lock(&ledger)
            .held
            .values()
            .filter(|(n, _)| *n == node)
            .flat_map(|(_, held)| held.iter().copied())
            .collect();
        assert_eq!(held.len(), 5, "holder h{node} holds 5 on node {node}");
        let terminated = Instant::now();
        processes[node].terminate(WITHIN).await;
        // Polled here rather than with `wait_for`: a failure shows which
        // came back and the node's log.
        loop {
            let missing: Vec<u64> = {
                let ledger = traffic::lock(&ledger);
                held.iter()
                    .filter(|n| !ledger.consumed.contains_key(n))
                    .copied()
                    .collect()
            };
            if missing.is_empty() {
                break;
            }
            assert!(
                terminated.elapsed() < HANDED_BACK_WITHIN,
                "node {node} held {held:?}; {missing:?} not at another consumer within \
                 {HANDED_BACK_WITHIN:?} of SIGTERM; logs:\n{}\n{}\n{}",
                processes[0].log(),
                processes[1].log(),
                processes[2].log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let back = terminated.elapsed();
        assert!(
            back < HANDED_BACK_WITHIN,
            "handed back {back:?} after SIGTERM"
        );
        handed_back.push((held.len(), back.as_secs_f64()));
        let receipted = traffic::lock(&ledger).receipted.len();
        processes[node].restart();
        publish_url(&nodes, node, &processes[node]);
        wait_for(&ledger, WITHIN, "30 receipts after the restart", |l| {
            l.receipted.len() >= receipted + 30
        })
        .await;
    }
    // Holders are every third consumer: stopped first, their messages go
    // back to the others.
    let figures = finish(&ledger, running, |i| i % 3 == 2).await;
    eprintln!(
        "brokers restarted one by one with SIGTERM; (held, seconds from SIGTERM until all \
         consumed elsewhere) per restart: {handed_back:?}; {figures}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_the_nats_servers_loses_nothing_receipted() {
    let mut engine = NatsCluster::start(3);
    // ack_wait 5 s: an acknowledgement lost with a server comes back soon
    // (as a duplicate, counted).
    let processes = start_processes(&engine, 3, "ack_wait = \"5s\"");
    let nodes: Nodes = Arc::new(Mutex::new(processes.iter().map(|p| p.url()).collect()));
    let ledger = Shared::default();
    const QUEUE: &str = "/queue/rolling.engine";
    let spec = |node: usize| {
        vec![Consumer {
            name: format!("c{node}"),
            queue: QUEUE.into(),
            node,
            ack: "client-individual",
            prefetch: 10,
            hold: false,
        }]
    };
    let running = traffic(&nodes, &ledger, QUEUE, spec);
    wait_for(&ledger, WITHIN, "50 receipts before the restarts", |l| {
        l.receipted.len() >= 50
    })
    .await;

    let mut restarts = Vec::new();
    for server in 0..3 {
        let receipted = traffic::lock(&ledger).receipted.len();
        let started = Instant::now();
        engine.servers[server].kill();
        wait_for(&ledger, WITHIN, "30 receipts with a server down", |l| {
            l.receipted.len() >= receipted + 30
        })
        .await;
        tokio::task::block_in_place(|| engine.servers[server].restart());
        // The next one only once this one has caught up: R3 keeps a
        // majority only if one replica at most is behind.
        engine
            .wait_stream(
                QUEUE_STREAM,
                WITHIN,
                "every replica current",
                |_, current| current,
            )
            .await;
        restarts.push(started.elapsed().as_secs_f64());
    }
    let figures = finish(&ledger, running, |_| false).await;
    eprintln!(
        "nats-servers restarted one by one (SIGKILL, same store), seconds per restart until \
         the stream was current again: {restarts:?}; {figures}"
    );
}
