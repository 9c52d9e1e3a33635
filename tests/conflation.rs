//! Slow-consumer policy `conflate`, black-box: a subscriber that reads far
//! slower than the publisher converges to the last value of every
//! destination, is never cut off, and its queued bytes stay bounded, while a
//! fast subscriber beside it gets every message.

mod common;

use common::{start, test_config, Client};
use std::collections::HashMap;
use std::time::Duration;
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const DESTINATIONS: usize = 200;
const ROUNDS: usize = 60;
const BUDGET: usize = 1024 * 1024;

fn body(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

/// The body of `GET path` on the admin listener.
async fn admin_get(admin: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("admin connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8(response).expect("utf-8");
    let (_, body) = response.split_once("\r\n\r\n").expect("a body");
    body.to_owned()
}

/// The largest `outbound_bytes` of any connection, from the admin API.
async fn max_outbound_bytes(admin: std::net::SocketAddr) -> u64 {
    let body = admin_get(admin, "/api/connections").await;
    let body = body.as_str();
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    value["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter_map(|c| c["outbound_bytes"].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_conflating_subscriber_converges_to_the_last_values_within_its_budget() {
    let mut config = test_config();
    config.outbound.max_queued_bytes = BUDGET;
    config.outbound.max_queued_frames = 4096;
    config.slow_consumers = stomphub::Config::from_toml(
        "[[slow_consumers.rules]]\npattern = \"/topic/px.#\"\npolicy = \"conflate\"\n",
        "test",
    )
    .expect("config")
    .slow_consumers;
    let broker = start(config).await;
    let url = broker.url();
    let admin = broker.admin_addr().expect("admin listener");

    let mut slow = Client::connect(&url).await;
    slow.subscribe_confirmed("s", "/topic/px.*", "s-ready")
        .await;
    let mut fast = Client::connect(&url).await;
    fast.subscribe_confirmed("f", "/topic/px.*", "f-ready")
        .await;

    // The fast subscriber reads everything as it comes and tells the
    // publisher how many rounds it has read: the publisher stays at most two
    // rounds (~420 kB) ahead of it, so its queue never reaches the budget
    // however the two cores are shared, and only the slow one is conflated.
    let (rounds_read, mut fast_progress) = tokio::sync::watch::channel(0usize);
    let fast_reader = tokio::spawn(async move {
        let mut last: HashMap<String, usize> = HashMap::new();
        for read in 1..=DESTINATIONS * ROUNDS {
            let message = fast.message().await;
            assert_eq!(
                message.get("x-conflated"),
                None,
                "the fast one is never conflated"
            );
            let destination = message.get("destination").expect("destination").to_owned();
            let round: usize = body(&message)[..5].parse().expect("round");
            let previous = last.insert(destination, round);
            assert_eq!(previous.map_or(0, |p| p + 1), round, "no gap, in order");
            if read % DESTINATIONS == 0 {
                rounds_read.send_replace(read / DESTINATIONS);
            }
        }
        last
    });

    // The slow one reads a frame every 10 ms while the publisher runs: far
    // more than 100 times slower.
    let publisher = tokio::spawn(async move {
        let mut publisher = Client::connect(&url).await;
        let padding = "p".repeat(1000);
        for round in 0..ROUNDS {
            fast_progress
                .wait_for(|read| read + 2 > round)
                .await
                .expect("the fast reader is alive");
            for d in 0..DESTINATIONS {
                publisher
                    .publish(&format!("/topic/px.s{d}"), &format!("{round:05}{padding}"))
                    .await;
            }
        }
        publisher
            .send_confirmed(
                Frame::new(Command::Send)
                    .header("destination", "/topic/other")
                    .body("done"),
                "published",
            )
            .await;
    });
    let mut last: HashMap<String, usize> = HashMap::new();
    let mut conflated = 0u64;
    let mut peak = 0u64;
    let mut record = |message: Frame, last: &mut HashMap<String, usize>| {
        conflated += message
            .get("x-conflated")
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        let destination = message.get("destination").expect("destination").to_owned();
        let round: usize = body(&message)[..5].parse().expect("round");
        let previous = last.insert(destination, round);
        assert!(previous.is_none_or(|p| round > p), "order kept");
    };
    while !publisher.is_finished() {
        record(slow.message().await, &mut last);
        peak = peak.max(max_outbound_bytes(admin).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    publisher.await.expect("publisher");
    while last.len() < DESTINATIONS || last.values().any(|round| *round != ROUNDS - 1) {
        record(slow.message().await, &mut last);
    }
    // Still connected, nothing more queued.
    slow.send_confirmed(
        Frame::new(Command::Unsubscribe).header("id", "s"),
        "still-connected",
    )
    .await;

    eprintln!("conflated {conflated} messages, peak queued {peak} bytes");
    assert!(conflated > 0, "the slow subscriber was conflated");
    // The metric counts every replaced MESSAGE.
    let metrics = admin_get(admin, "/metrics").await;
    let counted: u64 = metrics
        .lines()
        .find(|line| {
            line.starts_with("stomphub_messages_dropped_total{")
                && line.contains("reason=\"conflated\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no conflated series in:\n{metrics}"));
    assert_eq!(
        counted, conflated,
        "stomphub_messages_dropped_total{{reason=\"conflated\"}}"
    );
    // The budget plus one queued frame per destination (about 1.2 kB each).
    let bound = (BUDGET + DESTINATIONS * 1400) as u64;
    assert!(peak <= bound, "queued {peak} bytes, bound {bound}");
    let fast_last = tokio::time::timeout(Duration::from_secs(60), fast_reader)
        .await
        .expect("the fast subscriber gets everything in time")
        .expect("fast reader");
    assert_eq!(fast_last.len(), DESTINATIONS);
    assert!(fast_last.values().all(|round| *round == ROUNDS - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_max_rate_delivers_at_most_that_many_per_destination_and_always_the_latest() {
    let broker = start(test_config()).await;
    let url = broker.url();
    let mut capped = Client::connect(&url).await;
    capped
        .send_confirmed(
            common::subscribe_frame("c", "/topic/rate.*", &[("x-max-rate", "4")]),
            "c-ready",
        )
        .await;
    let mut wrong = Client::connect(&url).await;
    wrong
        .send(common::subscribe_frame(
            "w",
            "/topic/rate.*",
            &[("x-max-rate", "0")],
        ))
        .await;
    wrong.expect_error("x-max-rate", CloseCode::Protocol).await;

    // 200 messages a second to each of two destinations for two seconds.
    const TICKS: usize = 400;
    let publisher = tokio::spawn(async move {
        let mut publisher = Client::connect(&url).await;
        let started = tokio::time::Instant::now();
        let mut interval = tokio::time::interval(Duration::from_millis(5));
        for tick in 0..TICKS {
            interval.tick().await;
            for destination in ["/topic/rate.a", "/topic/rate.b"] {
                publisher.publish(destination, &format!("{tick:05}")).await;
            }
        }
        publisher
            .send_confirmed(
                Frame::new(Command::Send)
                    .header("destination", "/topic/other")
                    .body("done"),
                "published",
            )
            .await;
        started.elapsed()
    });
    let mut arrivals: HashMap<String, Vec<(tokio::time::Instant, usize)>> = HashMap::new();
    let done = |arrivals: &HashMap<String, Vec<(tokio::time::Instant, usize)>>| {
        arrivals.len() == 2
            && arrivals
                .values()
                .all(|a| a.last().is_some_and(|(_, tick)| *tick == TICKS - 1))
    };
    while !done(&arrivals) {
        let message = capped.message().await;
        let destination = message.get("destination").expect("destination").to_owned();
        let tick: usize = body(&message).parse().expect("tick");
        arrivals
            .entry(destination)
            .or_default()
            .push((tokio::time::Instant::now(), tick));
    }
    let publishing = publisher.await.expect("publisher");
    capped.expect_silence(Duration::from_millis(600)).await;
    // At 4 a second: the first at once, one per 250 ms while the publisher
    // runs (about two seconds, longer on a busy machine), and the last when
    // its interval ends.
    let most = (publishing.as_millis() / 250) as usize + 2;
    for (destination, seen) in &arrivals {
        eprintln!("{destination}: {} messages in {publishing:?}", seen.len());
        assert!(
            (4..=most).contains(&seen.len()),
            "{destination}: {} messages, at most {most}",
            seen.len()
        );
        // Gaps are timed where this client reads, so a late read shortens
        // the next gap: each must still be well over zero, and on average
        // they keep the 250 ms the broker spaces them by.
        for pair in seen.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(
                gap >= Duration::from_millis(100),
                "{destination}: {gap:?} between two"
            );
            assert!(pair[1].1 > pair[0].1, "{destination}: newer each time");
        }
        let (first, last) = (seen[0].0, seen[seen.len() - 1].0);
        let average = (last - first) / (seen.len() as u32 - 1);
        assert!(
            average >= Duration::from_millis(200),
            "{destination}: {average:?} between two on average"
        );
    }
}
