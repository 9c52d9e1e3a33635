//! Engine failure with real processes: 3 nats-servers (JetStream R3,
//! `sync_interval: always`) and 3 stomphub processes with `engine =
//! "nats"`. While two producers send receipted persistent queue SENDs
//! (pipelined) and consumers on every node take them, the JetStream leader
//! of the queue stream (asked with `$JS.API.STREAM.INFO`) is killed with
//! SIGKILL by process id. Every message that got a RECEIPT must be consumed
//! later, at least once (duplicates are counted and printed, loss is a
//! failure); a SEND without a RECEIPT must get an ERROR or see its
//! connection end (the producer then sends it again, same `message-id`).

mod common;

use common::cluster::{start_processes, NatsCluster, QUEUE_STREAM};
use common::traffic::{self, consume, produce, wait_for, Consumer, Producer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bound on every wait for traffic or an election (generous: a busy 2-core
/// machine runs nine processes here).
const WITHIN: Duration = Duration::from_secs(60);

const QUEUE: &str = "/queue/leader.kill";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_jetstream_leader_loses_no_receipted_message() {
    let mut engine = NatsCluster::start(3);
    // ack_wait 5 s: an acknowledgement lost with the leader comes back soon
    // (as a duplicate, counted).
    let mut processes = start_processes(&engine, 3, "ack_wait = \"5s\"");
    let nodes = Arc::new(Mutex::new(
        processes.iter().map(|p| p.url()).collect::<Vec<_>>(),
    ));
    let ledger = traffic::Shared::default();
    let (producing, consuming) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );

    let mut consumers = Vec::new();
    for node in 0..3 {
        let consumer = Consumer {
            name: format!("c{node}"),
            queue: QUEUE.into(),
            node,
            ack: "client-individual",
            prefetch: 10,
            hold: false,
        };
        consumers.push(tokio::spawn(consume(
            nodes.clone(),
            ledger.clone(),
            consuming.clone(),
            consumer,
        )));
    }
    let mut producers = Vec::new();
    for (index, node) in [0, 1].into_iter().enumerate() {
        let producer = Producer {
            name: format!("p{index}"),
            queue: QUEUE.into(),
            node,
            first: index as u64 * 1_000_000,
            window: 16,
            pace: Duration::from_millis(4),
        };
        producers.push(tokio::spawn(produce(
            nodes.clone(),
            ledger.clone(),
            producing.clone(),
            producer,
        )));
    }

    wait_for(&ledger, WITHIN, "100 receipts before the kill", |l| {
        l.receipted.len() >= 100
    })
    .await;
    let (leader, _) = engine
        .wait_stream(QUEUE_STREAM, WITHIN, "a stream leader", |_, _| true)
        .await;
    let before = traffic::lock(&ledger).receipted.len();
    engine.servers[leader].kill();
    let killed = Instant::now();
    let (new_leader, elected) = engine
        .wait_stream(QUEUE_STREAM, WITHIN, "a new stream leader", |l, _| {
            l != leader
        })
        .await;
    // Traffic flows again: 100 more RECEIPTs after the kill.
    wait_for(&ledger, WITHIN, "100 receipts after the kill", |l| {
        l.receipted.len() >= before + 100
    })
    .await;
    let flowing = killed.elapsed();

    producing.store(true, Ordering::SeqCst);
    for producer in producers {
        tokio::time::timeout(WITHIN, producer)
            .await
            .expect("the producers finish")
            .expect("a producer panicked");
    }
    let drained = wait_for(&ledger, WITHIN, "every receipted message consumed", |l| {
        l.missing().is_empty()
    })
    .await;
    // A quiet second: late duplicates show up in the counts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    consuming.store(true, Ordering::SeqCst);
    for consumer in consumers {
        tokio::time::timeout(WITHIN, consumer)
            .await
            .expect("the consumers finish")
            .expect("a consumer panicked");
    }

    {
        let ledger = traffic::lock(&ledger);
        eprintln!(
            "stream leader n{leader} killed after {before} receipts: n{new_leader} answered as \
             leader {:.1} s later (polled), 100 more RECEIPTs {:.1} s after the kill, drained \
             {:.1} s after the producers stopped; {}; producer ERRORs: {:?}",
            elected.as_secs_f64(),
            flowing.as_secs_f64(),
            drained.as_secs_f64(),
            ledger.summary(),
            ledger
                .producer_errors
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
        );
        assert!(
            ledger.missing().is_empty(),
            "receipted and lost: {:?}",
            ledger.missing()
        );
    }

    // Every node says ready again (its engine connections moved).
    for (index, process) in processes.iter_mut().enumerate() {
        let started = Instant::now();
        while process.readyz() != Some(200) {
            assert!(started.elapsed() < WITHIN, "node {index} not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
