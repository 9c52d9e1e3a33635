//! Topic routing over real WebSockets: wildcards, exactly-once, order,
//! header round-trips, binary and large bodies, framing across messages.

mod common;

use common::{start_default, Client};
use std::collections::HashMap;
use std::time::Duration;
use stomp_protocol::{Command, Frame};

#[tokio::test]
async fn wildcards_deliver_once_per_matching_subscription() {
    let broker = start_default().await;
    let mut subscriber = Client::connect(&broker.url()).await;
    for (id, pattern) in [
        ("exact", "/topic/a.b"),
        ("star", "/topic/a.*"),
        ("hash", "/topic/a.#"),
        ("all", "/topic/#"),
        ("other", "/topic/x.*"),
        ("double", "/topic/#.b.#"),
    ] {
        subscriber.subscribe(id, pattern).await;
    }
    let mut publisher = Client::connect(&broker.url()).await;
    publisher.publish("/topic/a.b", "one").await;
    publisher.publish("/topic/a.b.c", "two").await;
    publisher
        .send(
            Frame::new(Command::Send)
                .header("destination", "/topic/end")
                .header("receipt", "done"),
        )
        .await;
    publisher.expect_receipt("done").await;

    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    // one: exact, star, hash, all, double; two: hash, all, double; end: all.
    for _ in 0..9 {
        let message = subscriber.frame().await;
        assert_eq!(message.command, Command::Message);
        let body = String::from_utf8(message.body.to_vec()).expect("utf8");
        seen.entry(body).or_default().push(
            message
                .get("subscription")
                .expect("subscription")
                .to_owned(),
        );
    }
    subscriber.expect_silence(Duration::from_millis(200)).await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(seen["one"].clone()),
        vec!["all", "double", "exact", "hash", "star"]
    );
    assert_eq!(sorted(seen["two"].clone()), vec!["all", "double", "hash"]);
    assert_eq!(seen[""], vec!["all"]);
}

#[tokio::test]
async fn message_has_destination_unique_id_subscription_and_user_headers() {
    let broker = start_default().await;
    let mut subscriber = Client::connect(&broker.url()).await;
    subscriber.subscribe("s1", "/topic/h").await;
    let mut publisher = Client::connect(&broker.url()).await;
    let tricky = "a:b\nc\\d";
    for _ in 0..2 {
        publisher
            .send(
                Frame::new(Command::Send)
                    .header("destination", "/topic/h")
                    .header("content-type", "text/plain")
                    .header("message-id", "forged")
                    .header("subscription", "forged")
                    .header("ack", "forged")
                    .header("x-tricky", tricky)
                    .header("x-repeat", "first")
                    .header("x-repeat", "second")
                    .body("hi"),
            )
            .await;
    }
    let first = subscriber.frame().await;
    let second = subscriber.frame().await;
    for message in [&first, &second] {
        assert_eq!(message.get("destination"), Some("/topic/h"));
        assert_eq!(message.get("subscription"), Some("s1"));
        assert_ne!(message.get("message-id"), Some("forged"));
        assert_eq!(message.get("ack"), None, "auto mode has no ack header");
        assert_eq!(
            message.get("x-tricky"),
            Some(tricky),
            "escaped header round-trips"
        );
        assert_eq!(message.get("content-type"), Some("text/plain"));
        assert_eq!(message.get("content-length"), Some("2"));
        let repeats: Vec<&str> = message
            .headers
            .iter()
            .filter(|(n, _)| *n == "x-repeat")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            repeats,
            vec!["first", "second"],
            "repeated headers pass through in order"
        );
        assert_eq!(
            message
                .headers
                .iter()
                .filter(|(n, _)| *n == "message-id")
                .count(),
            1
        );
    }
    assert_ne!(first.get("message-id"), second.get("message-id"));
}

#[tokio::test]
async fn client_ack_modes_get_an_ack_header() {
    let broker = start_default().await;
    let mut subscriber = Client::connect(&broker.url()).await;
    subscriber
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "c")
                .header("destination", "/topic/k")
                .header("ack", "client-individual")
                .header("receipt", "r"),
        )
        .await;
    subscriber.expect_receipt("r").await;
    let mut publisher = Client::connect(&broker.url()).await;
    publisher.publish("/topic/k", "x").await;
    let message = subscriber.frame().await;
    assert!(message.get("ack").is_some());
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = start_default().await;
    let mut subscriber = Client::connect(&broker.url()).await;
    subscriber.subscribe("s", "/topic/u").await;
    let mut publisher = Client::connect(&broker.url()).await;
    publisher.publish("/topic/u", "before").await;
    assert_eq!(&subscriber.frame().await.body[..], b"before");
    subscriber
        .send(
            Frame::new(Command::Unsubscribe)
                .header("id", "s")
                .header("receipt", "gone"),
        )
        .await;
    subscriber.expect_receipt("gone").await;
    publisher.publish("/topic/u", "after").await;
    subscriber.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn binary_bodies_with_nul_go_out_as_binary_messages() {
    let broker = start_default().await;
    let mut subscriber = Client::connect(&broker.url()).await;
    subscriber.subscribe("s", "/topic/bin").await;
    let mut publisher = Client::connect(&broker.url()).await;
    let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    publisher
        .send(
            Frame::new(Command::Send)
                .header("destination", "/topic/bin")
                .body(body.clone()),
        )
        .await;
    let message = subscriber.frame().await;
    assert_eq!(&message.body[..], &body[..]);
    assert!(
        subscriber.last_was_binary,
        "non-UTF-8 frames are binary messages"
    );
    publisher.publish("/topic/bin", "text").await;
    subscriber.frame().await;
    assert!(
        !subscriber.last_was_binary,
        "UTF-8 frames are text messages"
    );
}

#[tokio::test]
async fn one_mebibyte_bodies_are_delivered_intact() {
    let broker = start_default().await;
    let mut subscriber = Client::connect(&broker.url()).await;
    subscriber.subscribe("s", "/topic/big").await;
    let mut publisher = Client::connect(&broker.url()).await;
    let body: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    publisher
        .send(
            Frame::new(Command::Send)
                .header("destination", "/topic/big")
                .header("receipt", "big")
                .body(body.clone()),
        )
        .await;
    publisher.expect_receipt("big").await;
    let message = subscriber.frame().await;
    assert_eq!(message.body.len(), body.len());
    assert!(message.body[..] == body[..]);
}

#[tokio::test]
async fn frames_split_across_messages_and_many_frames_in_one() {
    let broker = start_default().await;
    let mut subscriber = Client::connect(&broker.url()).await;
    subscriber.subscribe("s", "/topic/split").await;
    let mut publisher = Client::connect(&broker.url()).await;
    // One frame in 7-byte WebSocket messages (like stompjs splitLargeFrames).
    let frame =
        b"SEND\ndestination:/topic/split\ncontent-type:text/plain\n\nsplit across many messages\0";
    for chunk in frame.chunks(7) {
        publisher
            .send_text(std::str::from_utf8(chunk).expect("ascii"))
            .await;
    }
    assert_eq!(
        &subscriber.frame().await.body[..],
        b"split across many messages"
    );
    // Three frames and heart-beats in one message, CRLF line ends.
    publisher
        .send_text("SEND\r\ndestination:/topic/split\r\n\r\none\0\n\nSEND\ndestination:/topic/split\n\ntwo\0\r\nSEND\ndestination:/topic/split\n\nthree\0")
        .await;
    for expected in ["one", "two", "three"] {
        assert_eq!(&subscriber.frame().await.body[..], expected.as_bytes());
    }
}

#[tokio::test]
async fn each_subscriber_sees_each_publishers_order() {
    let broker = start_default().await;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut subscriber = Client::connect(&broker.url()).await;
        subscriber.subscribe("s", "/topic/order.*").await;
        subscribers.push(subscriber);
    }
    let url = broker.url();
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut publisher = Client::connect(&url).await;
                for i in 0..500 {
                    publisher
                        .publish(&format!("/topic/order.p{p}"), &format!("{p}:{i}"))
                        .await;
                }
                publisher
                    .send(Frame::new(Command::Disconnect).header("receipt", "end"))
                    .await;
                publisher.expect_receipt("end").await;
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    for subscriber in &mut subscribers {
        let mut next = [0u32; 2];
        for _ in 0..1000 {
            let body = String::from_utf8(subscriber.frame().await.body.to_vec()).expect("utf8");
            let (p, i) = body.split_once(':').expect("p:i");
            let p: usize = p.parse().expect("p");
            assert_eq!(
                i.parse::<u32>().expect("i"),
                next[p],
                "publisher {p} out of order"
            );
            next[p] += 1;
        }
        assert_eq!(next, [500, 500]);
    }
}
