//! One holder per durable topic subscription on JetStream: one nats-server
//! and two brokers with `engine = "nats"`. A re-bind (the same durable
//! subscription for another topic) from another node is refused while a
//! connection holds it, and leaves the holder's subscription as it was; a
//! holder whose consumer is deleted and made again under it (a re-bind it
//! could not see) stops with an ERROR instead of taking the new consumer's
//! messages, which go to the next holder: with a pull waiting, and with
//! none (client acks, its one credit used up).

mod common;

use common::cluster::{start_node, NatsCluster};
use common::{Client, Event};
use std::time::Duration;
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Bound on every wait for something to happen across nodes.
const ACROSS: Duration = Duration::from_secs(30);
/// The durable subscription's SUBSCRIBE header.
const DURABLE: [(&str, &str); 1] = [("durable-subscription-name", "inbox")];

/// The next frame within [`ACROSS`], skipping heart-beats.
async fn next_frame(client: &mut Client) -> Frame {
    loop {
        match client.event_within(ACROSS).await {
            Some(Event::Frame(frame)) => return frame,
            Some(Event::HeartBeat) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

fn body(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

/// Publishes `marker` until `subscriber` gets a MESSAGE (the first one
/// published reaches the engine's stream a little later; at most for
/// [`ACROSS`]), then returns the bodies it got up to and including the
/// first marker.
async fn until_marker(
    publisher: &mut Client,
    subscriber: &mut Client,
    destination: &str,
    marker: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + ACROSS;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no '{marker}' on {destination} within {ACROSS:?}"
        );
        publisher.publish(destination, marker).await;
        let Some(event) = subscriber.event_within(Duration::from_secs(1)).await else {
            continue;
        };
        let Event::Frame(mut frame) = event else {
            panic!("expected a MESSAGE, got {event:?}");
        };
        loop {
            assert_eq!(frame.command, Command::Message, "{frame:?}");
            seen.push(body(&frame));
            if body(&frame) == marker {
                return seen;
            }
            frame = next_frame(subscriber).await;
        }
    }
}

/// The ERROR of a refused or ended durable subscription, then the close.
async fn expect_error(client: &mut Client, needle: &str) {
    let error = next_frame(client).await;
    assert_eq!(error.command, Command::Error, "{error:?}");
    let message = error.get("message").unwrap_or_default();
    assert!(message.contains(needle), "{message}");
    client.expect_close(CloseCode::Policy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebind_from_another_node_is_refused_and_leaves_the_holder_as_it_was() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let nodes = [start_node(&urls, 0).await, start_node(&urls, 1).await];
    let mut publisher = Client::connect(&nodes[1].url()).await;

    let mut holder = Client::connect_as(&nodes[0].url(), "app").await;
    holder.subscribe_with("s", "/topic/x.a", &DURABLE).await;
    let seen = until_marker(&mut publisher, &mut holder, "/topic/x.a", "first").await;
    assert!(seen.iter().all(|b| b == "first"), "{seen:?}");

    // The same application on the other node, for another topic.
    let mut second = Client::connect_as(&nodes[1].url(), "app").await;
    second.send_subscribe("s", "/topic/y.b", &DURABLE).await;
    expect_error(&mut second, "is already active on another connection").await;

    // The holder's consumer is untouched: it still collects its topic.
    publisher.publish("/topic/y.b", "not-mine").await;
    let seen = until_marker(&mut publisher, &mut holder, "/topic/x.a", "still-mine").await;
    assert!(
        seen.iter().all(|b| b == "first" || b == "still-mine"),
        "{seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("still-mine"));

    // Once it has gone, the re-bind is taken.
    holder.send(Frame::new(Command::Disconnect)).await;
    drop(holder);
    let mut second = Client::connect_as(&nodes[1].url(), "app").await;
    second.subscribe_with("s", "/topic/y.b", &DURABLE).await;
    let seen = until_marker(&mut publisher, &mut second, "/topic/y.b", "rebound").await;
    assert!(seen.iter().all(|b| b == "rebound"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_consumer_is_made_again_stops_and_takes_nothing_of_the_new_one() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let nodes = [start_node(&urls, 0).await, start_node(&urls, 1).await];
    let mut publisher = Client::connect(&nodes[1].url()).await;

    let mut holder = Client::connect_as(&nodes[0].url(), "app").await;
    holder.subscribe_with("s", "/topic/x.a", &DURABLE).await;
    let seen = until_marker(&mut publisher, &mut holder, "/topic/x.a", "first").await;
    assert!(seen.iter().all(|b| b == "first"), "{seen:?}");

    // Under the holder, its consumer is deleted and made again with the
    // same name and configuration but another incarnation token, as a
    // re-bind by a node that did not see the holder would leave it: the
    // pull the holder has waiting is ended by JetStream ("consumer
    // deleted"), or, had it just ended, its next delivery is checked.
    remake_consumer(&urls[0], "another").await;
    publisher.publish("/topic/x.a", "taken-over").await;

    // The old holder does not take it: it is told and closed.
    expect_error(&mut holder, "deleted or re-bound").await;

    // The next holder gets it.
    let mut next = Client::connect_as(&nodes[1].url(), "app").await;
    next.subscribe_with("s", "/topic/x.a", &DURABLE).await;
    let seen = until_marker(&mut publisher, &mut next, "/topic/x.a", "next").await;
    assert_eq!(
        seen.first().map(String::as_str),
        Some("taken-over"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_without_a_pull_waiting_finds_its_consumer_made_again_at_its_next_pull() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let nodes = [start_node(&urls, 0).await, start_node(&urls, 1).await];
    let mut publisher = Client::connect(&nodes[1].url()).await;

    // Client acks, one at a time: holding "first" unacked, it has no pull
    // out (no credit), so nothing tells it of the change but its check.
    let mut holder = Client::connect_as(&nodes[0].url(), "app").await;
    let headers = [
        DURABLE[0],
        ("ack", "client-individual"),
        ("prefetch-count", "1"),
    ];
    holder.subscribe_with("s", "/topic/x.a", &headers).await;
    let first = first_message(&mut publisher, &mut holder).await;

    // Made again as a re-bind by a node that did not see the holder would:
    // another incarnation (token).
    remake_consumer(&urls[0], "another").await;
    publisher.publish("/topic/x.a", "taken-over").await;
    holder.settle(&first, false).await;
    expect_error(&mut holder, "deleted or re-bound").await;

    let mut next = Client::connect_as(&nodes[1].url(), "app").await;
    next.subscribe_with("s", "/topic/x.a", &headers).await;
    let frame = next_frame(&mut next).await;
    assert_eq!(body(&frame), "taken-over", "{frame:?}");
}

/// Publishes "first" until `holder` gets a MESSAGE (the first one
/// published reaches the engine's stream a little later; at most for
/// [`ACROSS`]), and returns that MESSAGE.
async fn first_message(publisher: &mut Client, holder: &mut Client) -> Frame {
    let deadline = tokio::time::Instant::now() + ACROSS;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no MESSAGE");
        publisher.publish("/topic/x.a", "first").await;
        match holder.event_within(Duration::from_secs(1)).await {
            Some(Event::Frame(frame)) => {
                assert_eq!(frame.command, Command::Message, "{frame:?}");
                assert_eq!(body(&frame), "first");
                return frame;
            }
            Some(Event::HeartBeat) | None => continue,
            other => panic!("expected a MESSAGE, got {other:?}"),
        }
    }
}

/// Deletes the durable consumer and makes it again with its configuration
/// and another incarnation `token`.
async fn remake_consumer(url: &str, token: &str) {
    let nats = async_nats::connect(url)
        .await
        .expect("the test connects to NATS");
    let jetstream = async_nats::jetstream::new(nats);
    let stream = jetstream
        .get_stream("stomphub_durables")
        .await
        .expect("the durable subscriptions' stream exists");
    let names: Vec<String> = {
        use futures_util::TryStreamExt;
        stream
            .consumer_names()
            .try_collect()
            .await
            .expect("consumers listed")
    };
    assert_eq!(names.len(), 1, "{names:?}");
    let info = stream
        .consumer_info(&names[0])
        .await
        .expect("consumer info");
    let mut config = info.config.clone();
    config
        .metadata
        .insert("stomphub-incarnation".to_owned(), token.to_owned());
    stream
        .delete_consumer(&names[0])
        .await
        .expect("consumer deleted");
    let _: async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::Config> =
        stream
            .create_consumer(config)
            .await
            .expect("consumer made again");
}
