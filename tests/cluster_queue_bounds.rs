//! Per-queue bounds, overflow, exclusive and auto-delete on the cluster
//! engine, over three nodes as on one: a queue's `max_length`, `max_bytes`
//! and `overflow` hold whichever node each SEND comes through; an
//! exclusive subscription on one node refuses every other node's
//! subscribers; an auto-delete queue goes, with its messages, when its last
//! subscriber leaves; an exclusive hold lapses once its node is killed.
//! One nats-server, brokers in the test process (broker processes for the
//! kill).

mod common;

use common::cluster::{next_message, start_processes, NatsCluster};
use common::{test_config, Client, TestBroker};
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Bound on every wait for something to happen across nodes.
const ACROSS: Duration = Duration::from_secs(30);

async fn node(urls: &[String], node: usize) -> TestBroker {
    node_with(urls, node, |_| {}).await
}

async fn node_with(
    urls: &[String],
    node: usize,
    configure: impl FnOnce(&mut stomphub::Config),
) -> TestBroker {
    let mut config = test_config();
    config.cluster.engine = stomphub::config::Engine::Nats;
    config.cluster.servers = urls.to_vec();
    config.cluster.node_name = format!("b{node}");
    config.cluster.replicas = 1;
    config.cluster.connect_timeout = Duration::from_secs(30);
    config.queues = stomphub::Config::from_toml(
        "[[queues.rules]]\npattern = \"/queue/reject.#\"\nmax_length = 2\n\n\
         [[queues.rules]]\npattern = \"/queue/drop.#\"\nmax_length = 2\noverflow = \"drop-oldest\"\n\n\
         [[queues.rules]]\npattern = \"/queue/bytes.#\"\nmax_bytes = 1000\n",
        "test",
    )
    .expect("config")
    .queues;
    configure(&mut config);
    common::start(config).await
}

async fn nodes(engine: &NatsCluster) -> [TestBroker; 3] {
    let urls = engine.urls();
    [
        node(&urls, 0).await,
        node(&urls, 1).await,
        node(&urls, 2).await,
    ]
}

fn send(destination: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .body(body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_and_overflow_hold_whichever_node_a_send_comes_through() {
    let engine = NatsCluster::start(1);
    let nodes = nodes(&engine).await;
    let mut senders = Vec::new();
    for node in &nodes {
        senders.push(Client::connect(&node.url()).await);
    }

    // reject: the third SEND (node 2) finds the queue full.
    senders[0]
        .send_confirmed(send("/queue/reject.a", "1"), "r1")
        .await;
    senders[1]
        .send_confirmed(send("/queue/reject.a", "2"), "r2")
        .await;
    senders[2]
        .send(send("/queue/reject.a", "3").header("receipt", "r3"))
        .await;
    let error = senders[2].expect_error("is full", CloseCode::Policy).await;
    assert_eq!(error.get("receipt-id"), Some("r3"));
    // Without a receipt too, as on one node: ERROR (after the engine's
    // answer) and the close.
    let mut unreceipted = Client::connect(&nodes[0].url()).await;
    unreceipted.send(send("/queue/reject.a", "4")).await;
    let error = unreceipted.expect_error("is full", CloseCode::Policy).await;
    assert_eq!(error.get("receipt-id"), None);

    // drop-oldest: the first goes.
    for (i, body) in ["1", "2", "3"].into_iter().enumerate() {
        senders[i % 2]
            .send_confirmed(send("/queue/drop.a", body), &format!("d{body}"))
            .await;
    }
    // max_bytes: a second 600-byte message does not fit in 1000 bytes.
    let big = "x".repeat(600);
    senders[0]
        .send_confirmed(send("/queue/bytes.a", &big), "b1")
        .await;
    senders[1]
        .send(send("/queue/bytes.a", &big).header("receipt", "b2"))
        .await;
    senders[1].expect_error("is full", CloseCode::Policy).await;

    let mut consumer = Client::connect(&nodes[2].url()).await;
    consumer.subscribe("r", "/queue/reject.a").await;
    for expected in ["1", "2"] {
        assert_eq!(
            &next_message(&mut consumer, ACROSS).await.body[..],
            expected.as_bytes()
        );
    }
    consumer.subscribe("d", "/queue/drop.a").await;
    for expected in ["2", "3"] {
        assert_eq!(
            &next_message(&mut consumer, ACROSS).await.body[..],
            expected.as_bytes()
        );
    }
    consumer.subscribe("b", "/queue/bytes.a").await;
    assert_eq!(next_message(&mut consumer, ACROSS).await.body.len(), 600);
    consumer.expect_silence(Duration::from_millis(500)).await;
}

/// Whether queue `name`'s consumer and exclusive hold are both gone from
/// the engine.
async fn queue_gone(url: &str, consumer: &str) -> bool {
    let Ok(client) = async_nats::connect(url).await else {
        return false;
    };
    let jetstream = async_nats::jetstream::new(client);
    let consumer_gone = jetstream
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            consumer,
            "stomphub_queues",
        )
        .await
        .is_err();
    let Ok(holders) = jetstream.get_key_value("stomphub_queue_holders").await else {
        return false;
    };
    consumer_gone && matches!(holders.get(consumer).await, Ok(None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_queue_has_one_consumer_over_all_nodes_and_auto_delete_takes_its_messages() {
    let engine = NatsCluster::start(1);
    let nodes = nodes(&engine).await;
    let mut owner = Client::connect(&nodes[0].url()).await;
    owner
        .subscribe_with(
            "s",
            "/queue/solo",
            &[
                ("exclusive", "true"),
                ("auto-delete", "true"),
                ("ack", "client-individual"),
                ("prefetch-count", "1"),
            ],
        )
        .await;
    let mut intruder = Client::connect(&nodes[1].url()).await;
    intruder
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "s")
                .header("destination", "/queue/solo"),
        )
        .await;
    intruder.expect_error("exclusive", CloseCode::Policy).await;
    let mut rival = Client::connect(&nodes[2].url()).await;
    rival
        .send_subscribe("s", "/queue/solo", &[("exclusive", "true")])
        .await;
    rival.expect_error("exclusive", CloseCode::Policy).await;

    let mut producer = Client::connect(&nodes[1].url()).await;
    for body in ["1", "2", "3"] {
        producer
            .send_confirmed(send("/queue/solo", body), &format!("p{body}"))
            .await;
    }
    assert_eq!(&next_message(&mut owner, ACROSS).await.body[..], b"1");
    owner
        .send_confirmed(Frame::new(Command::Unsubscribe).header("id", "s"), "u")
        .await;
    // The queue goes, with its three messages, once the owner's node has
    // ended its subscription.
    let started = Instant::now();
    while !queue_gone(&engine.urls()[0], "q-solo").await {
        assert!(
            started.elapsed() < ACROSS,
            "the auto-delete queue is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its three messages went with it: a new subscriber's first message
    // is one sent after.
    let mut late = Client::connect(&nodes[2].url()).await;
    late.subscribe_confirmed("t", "/queue/solo", "t").await;
    producer
        .send_confirmed(send("/queue/solo", "after"), "p-after")
        .await;
    assert_eq!(&next_message(&mut late, ACROSS).await.body[..], b"after");
    // A plain queue is not deleted by its last subscriber leaving.
    producer
        .send_confirmed(send("/queue/kept", "k"), "k1")
        .await;
    late.subscribe("k", "/queue/kept").await;
    assert_eq!(&next_message(&mut late, ACROSS).await.body[..], b"k");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_queue_is_free_again_once_its_holders_node_is_killed() {
    let engine = NatsCluster::start(1);
    let mut processes = start_processes(&engine, 2, "replicas = 1");
    let mut owner = Client::connect(&processes[0].url()).await;
    owner
        .subscribe_with("s", "/queue/held", &[("exclusive", "true")])
        .await;
    let mut refused = Client::connect(&processes[1].url()).await;
    refused
        .send_subscribe("s", "/queue/held", &[("exclusive", "true")])
        .await;
    refused.expect_error("exclusive", CloseCode::Policy).await;

    // kill -9: the hold is not given up; it lapses (10 s without refresh).
    processes[0].process = None;
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut taker = Client::connect(&processes[1].url()).await;
        taker
            .send(
                Frame::new(Command::Subscribe)
                    .header("id", "s")
                    .header("destination", "/queue/held")
                    .header("exclusive", "true")
                    .header("receipt", "taken"),
            )
            .await;
        let answer = taker.frame().await;
        if answer.command == Command::Receipt {
            break;
        }
        assert!(
            answer
                .get("message")
                .unwrap_or_default()
                .contains("exclusive"),
            "{answer:?}"
        );
        assert!(
            started.elapsed() < ACROSS,
            "still held {ACROSS:?} after its node was killed ({attempts} attempts)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_max_length_holds_for_each_queue_of_the_shared_stream() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let mut nodes = Vec::new();
    for n in 0..2 {
        nodes.push(node_with(&urls, n, |config| config.queues.max_length = 2).await);
    }
    let mut first = Client::connect(&nodes[0].url()).await;
    let mut second = Client::connect(&nodes[1].url()).await;
    for (client, queue) in [
        (&mut first, "/queue/plain.a"),
        (&mut second, "/queue/plain.b"),
    ] {
        for body in ["1", "2"] {
            client
                .send_confirmed(send(queue, body), &format!("{queue}{body}"))
                .await;
        }
    }
    // Each queue holds two; the third SEND to one of them is refused.
    second
        .send(send("/queue/plain.a", "3").header("receipt", "third"))
        .await;
    let error = second.expect_error("is full", CloseCode::Policy).await;
    assert!(
        error
            .get("message")
            .unwrap_or_default()
            .contains("max_length 2"),
        "{error:?}"
    );
    first.subscribe("a", "/queue/plain.a").await;
    for expected in ["1", "2"] {
        assert_eq!(
            &next_message(&mut first, ACROSS).await.body[..],
            expected.as_bytes()
        );
    }
    first.expect_silence(Duration::from_millis(500)).await;
}

/// A holder whose key another subscription has taken (its lease lapsed
/// while its node could not reach the engine) stops consuming: its
/// connection gets an ERROR and is closed with 1008 at its next refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_holder_whose_hold_is_taken_is_ended() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let broker = node(&urls, 0).await;
    let mut owner = Client::connect(&broker.url()).await;
    owner
        .subscribe_with("s", "/queue/stolen", &[("exclusive", "true")])
        .await;
    let client = async_nats::connect(&urls[0]).await.expect("nats");
    let holders = async_nats::jetstream::new(client)
        .get_key_value("stomphub_queue_holders")
        .await
        .expect("bucket");
    assert!(holders.get("q-stolen").await.expect("read").is_some());
    holders
        .put("q-stolen", "another/subscription".into())
        .await
        .expect("put");
    owner
        .expect_error("exclusive hold lost", CloseCode::Policy)
        .await;
}

/// A node started with a lower `[queues] max_length` than the shared
/// stream's keeps the stream's: the messages stored (receipted) under the
/// higher bound all stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_default_max_length_at_a_start_drops_no_stored_message() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let first = node_with(&urls, 0, |config| config.queues.max_length = 5).await;
    let mut producer = Client::connect(&first.url()).await;
    for body in ["1", "2", "3", "4", "5"] {
        producer
            .send_confirmed(send("/queue/kept5", body), &format!("p{body}"))
            .await;
    }
    drop(producer);
    first.shutdown().await;
    let second = node_with(&urls, 1, |config| config.queues.max_length = 3).await;
    let mut consumer = Client::connect(&second.url()).await;
    consumer.subscribe("s", "/queue/kept5").await;
    for expected in ["1", "2", "3", "4", "5"] {
        assert_eq!(
            &next_message(&mut consumer, ACROSS).await.body[..],
            expected.as_bytes()
        );
    }
}

/// Queues with a stream of their own are capped by
/// `cluster.max_queue_streams`: past it, the SEND that would create one more
/// gets ERROR saying why; a queue whose stream exists still takes SENDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_with_streams_of_their_own_are_capped() {
    let engine = NatsCluster::start(1);
    let broker = node_with(&engine.urls(), 0, |config| {
        config.cluster.max_queue_streams = 2
    })
    .await;
    let bounded = |queue: &str, body: &str| send(queue, body).header("x-max-length", "10");
    let mut producer = Client::connect(&broker.url()).await;
    for queue in ["/queue/own.a", "/queue/own.b"] {
        producer
            .send_confirmed(bounded(queue, "1"), &format!("{queue}1"))
            .await;
    }
    producer
        .send_confirmed(bounded("/queue/own.a", "2"), "again")
        .await;
    producer
        .send(bounded("/queue/own.c", "1").header("receipt", "third"))
        .await;
    producer
        .expect_error("max_queue_streams is 2", CloseCode::Policy)
        .await;
}

/// The names of the engine's streams.
async fn stream_names(url: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let client = async_nats::connect(url).await.expect("engine");
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .stream_names()
        .try_collect()
        .await
        .expect("stream names")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_delete_queue_with_a_stream_of_its_own_takes_it_along_and_comes_back_on_a_send() {
    let engine = NatsCluster::start(1);
    let nodes = nodes(&engine).await;
    let url = engine.urls()[0].clone();
    let own = "stomphub_q-brief";
    let mut owner = Client::connect(&nodes[0].url()).await;
    owner
        .subscribe_with(
            "s",
            "/queue/brief",
            &[("auto-delete", "true"), ("x-max-length", "5")],
        )
        .await;
    assert!(stream_names(&url).await.iter().any(|s| s == own));
    // Node 1 sends to it (and so knows it), then the last subscriber goes.
    let mut producer = Client::connect(&nodes[1].url()).await;
    producer
        .send_confirmed(send("/queue/brief", "1"), "p1")
        .await;
    assert_eq!(&next_message(&mut owner, ACROSS).await.body[..], b"1");
    owner
        .send_confirmed(Frame::new(Command::Unsubscribe).header("id", "s"), "u")
        .await;
    let started = Instant::now();
    while stream_names(&url).await.iter().any(|s| s == own) {
        assert!(started.elapsed() < ACROSS, "its stream is still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A SEND on node 1, which knew the queue, makes it again (as on one
    // node) and is stored: a RECEIPT, and a new subscriber gets it.
    producer
        .send_confirmed(send("/queue/brief", "again"), "p2")
        .await;
    let mut late = Client::connect(&nodes[2].url()).await;
    late.subscribe_confirmed("t", "/queue/brief", "t").await;
    assert_eq!(&next_message(&mut late, ACROSS).await.body[..], b"again");
}
