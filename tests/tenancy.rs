//! Between tenants, black-box: what one authenticated principal can do to
//! another's state. Durable subscriptions belong to their principal (also
//! across a restart), dead-letter targets obey write permission and the
//! operator's rules, reply queues cannot be guessed.

mod common;

use common::{start, test_config, BrokerProcess, Client, Event};
use std::time::Duration;
use stomp_protocol::{Command, Frame};
use stomphub::config::{Anonymous, QueueRule, UserConfig};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn user(login: &str, password: &str, read: &[&str], write: &[&str]) -> UserConfig {
    UserConfig {
        login: login.into(),
        password_hash: stomphub::auth::password::hash(password).expect("hash"),
        read: read.iter().map(|s| s.to_string()).collect(),
        write: write.iter().map(|s| s.to_string()).collect(),
        roles: Vec::new(),
    }
}

/// alice may do anything; bob reads public topics and writes one queue;
/// carol reads her private topic and the public ones. Anonymous clients
/// (loopback) read public topics only.
fn tenants() -> stomphub::Config {
    let mut config = test_config();
    config.auth.anonymous = Anonymous::Loopback;
    config.auth.anonymous_read = vec!["/topic/public.#".into()];
    config.auth.anonymous_write = vec!["/queue/service".into()];
    config.auth.failure_delay = Duration::from_millis(10);
    config.auth.users = vec![
        user(
            "alice",
            "wonderland",
            &["/topic/#", "/queue/#"],
            &["/topic/#", "/queue/#"],
        ),
        user(
            "bob",
            "builder",
            &["/topic/public.#", "/queue/work"],
            &["/queue/orders", "/queue/work"],
        ),
        user(
            "carol",
            "singer",
            &["/topic/private.carol", "/topic/public.#"],
            &[],
        ),
    ];
    config
}

/// CONNECT with these headers; the answer (CONNECTED or ERROR).
async fn connect_with(url: &str, headers: &[(&str, &str)]) -> (Client, Frame) {
    let mut client = Client::open(url, &["v12.stomp"]).await;
    let mut connect = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("heart-beat", "0,0");
    for (name, value) in headers {
        connect = connect.header(*name, *value);
    }
    client.send(connect).await;
    let answer = client.frame().await;
    (client, answer)
}

async fn login(url: &str, login: &str, passcode: &str, client_id: Option<&str>) -> Client {
    let mut headers = vec![("login", login), ("passcode", passcode)];
    if let Some(id) = client_id {
        headers.push(("client-id", id));
    }
    let (client, answer) = connect_with(url, &headers).await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    client
}

fn durable_subscribe(id: &str, destination: &str, name: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .header("id", id)
        .header("destination", destination)
        .header("durable-subscription-name", name)
        .header("receipt", "subscribed")
}

fn body(frame: &Frame) -> String {
    String::from_utf8(frame.body.to_vec()).expect("utf8")
}

/// Reads `count` MESSAGE bodies (each within the client's usual timeout),
/// then expects no more MESSAGEs for 300 ms. A RECEIPT may come among them:
/// a SUBSCRIBE that changed the store gets it after the sync, and a backlog
/// is dispatched at once.
async fn drain(client: &mut Client, count: usize) -> Vec<String> {
    let mut bodies = Vec::with_capacity(count);
    while bodies.len() < count {
        let frame = client.frame().await;
        match frame.command {
            Command::Message => bodies.push(body(&frame)),
            Command::Receipt => {}
            _ => panic!("unexpected {frame:?}"),
        }
    }
    while let Some(event) = client.event_within(Duration::from_millis(300)).await {
        match event {
            Event::Frame(frame) if frame.command == Command::Receipt => {}
            Event::HeartBeat => {}
            other => panic!("expected no more MESSAGEs, got {other:?}"),
        }
    }
    bodies
}

async fn publish_confirmed(client: &mut Client, destination: &str, text: &str) {
    client
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", destination)
                .header("persistent", "true")
                .body(text.to_owned()),
            &format!("p-{text}"),
        )
        .await;
}

#[tokio::test]
async fn another_principal_with_the_same_client_id_cannot_take_a_durable_subscription() {
    let broker = start(tenants()).await;
    let url = broker.url();
    let mut carol = login(&url, "carol", "singer", Some("carol")).await;
    carol
        .send(durable_subscribe("s", "/topic/private.carol", "inbox"))
        .await;
    carol.expect_receipt("subscribed").await;
    carol
        .send_confirmed(Frame::new(Command::Disconnect), "bye")
        .await;
    let mut alice = login(&url, "alice", "wonderland", None).await;
    publish_confirmed(&mut alice, "/topic/private.carol", "for-carol-only").await;

    // Bob claims to be carol's application and re-binds her subscription to
    // a topic he may read: refused, nothing delivered.
    let mut bob = login(&url, "bob", "builder", Some("carol")).await;
    bob.send(durable_subscribe("s", "/topic/public.news", "inbox"))
        .await;
    let error = bob
        .expect_error("belongs to another principal", CloseCode::Policy)
        .await;
    assert_eq!(error.get("receipt-id"), Some("subscribed"));

    // Nor may an anonymous client (a principal of its own) take it.
    let (mut anonymous, answer) = connect_with(&url, &[("client-id", "carol")]).await;
    assert_eq!(answer.command, Command::Connected);
    anonymous
        .send(durable_subscribe("s", "/topic/public.news", "inbox"))
        .await;
    anonymous
        .expect_error("belongs to another principal", CloseCode::Policy)
        .await;

    // Carol's backlog is intact.
    let mut carol = login(&url, "carol", "singer", Some("carol")).await;
    carol
        .send(durable_subscribe("s", "/topic/private.carol", "inbox"))
        .await;
    assert_eq!(drain(&mut carol, 1).await, ["for-carol-only"]);
}

#[tokio::test]
async fn rebinding_a_durable_subscription_discards_its_backlog_and_checks_read_permission() {
    let broker = start(tenants()).await;
    let url = broker.url();
    let mut carol = login(&url, "carol", "singer", Some("carol")).await;
    carol
        .send(durable_subscribe("s", "/topic/public.a", "feed"))
        .await;
    carol.expect_receipt("subscribed").await;
    carol
        .send_confirmed(Frame::new(Command::Disconnect), "bye")
        .await;
    let mut alice = login(&url, "alice", "wonderland", None).await;
    publish_confirmed(&mut alice, "/topic/public.a", "old-topic").await;

    // Re-bound to another topic: the old topic's backlog is gone (JMS).
    let mut carol = login(&url, "carol", "singer", Some("carol")).await;
    carol
        .send(durable_subscribe("s", "/topic/public.b", "feed"))
        .await;
    // Publications count from the RECEIPT: on a cluster a re-bind first
    // waits for the last holder's pull to end (up to a few seconds).
    match carol.event_within(Duration::from_secs(30)).await {
        Some(Event::Frame(frame)) => {
            assert_eq!(frame.command, Command::Receipt, "{frame:?}");
            assert_eq!(frame.get("receipt-id"), Some("subscribed"));
        }
        other => panic!("expected the re-bind's RECEIPT, got {other:?}"),
    }
    assert!(drain(&mut carol, 0).await.is_empty());
    publish_confirmed(&mut alice, "/topic/public.a", "old-topic-again").await;
    publish_confirmed(&mut alice, "/topic/public.b", "new-topic").await;
    assert_eq!(drain(&mut carol, 1).await, ["new-topic"]);
    carol
        .send_confirmed(Frame::new(Command::Disconnect), "bye")
        .await;

    // Re-binding to a topic she may not read is refused.
    let mut carol = login(&url, "carol", "singer", Some("carol")).await;
    carol
        .send(durable_subscribe("s", "/topic/private.alice", "feed"))
        .await;
    carol
        .expect_error(
            "read access to '/topic/private.alice' denied",
            CloseCode::Policy,
        )
        .await;
}

/// `[[auth.users]]` in TOML for the real binary.
fn tenants_toml() -> String {
    let mut text = String::from("[auth]\nanonymous = \"loopback\"\nanonymous_read = [\"/topic/public.#\"]\nanonymous_write = []\nfailure_delay = \"10ms\"\n");
    for user in tenants().auth.users {
        let list = |patterns: &[String]| {
            patterns
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        text.push_str(&format!(
            "[[auth.users]]\nlogin = \"{}\"\npassword_hash = \"{}\"\nread = [{}]\nwrite = [{}]\n",
            user.login,
            user.password_hash,
            list(&user.read),
            list(&user.write)
        ));
    }
    text
}

#[tokio::test]
async fn durable_ownership_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = tenants_toml();
    let broker = BrokerProcess::start(&config, dir.path());
    let mut carol = login(&broker.url, "carol", "singer", Some("carol")).await;
    carol
        .send(durable_subscribe("s", "/topic/public.carol", "inbox"))
        .await;
    carol.expect_receipt("subscribed").await;
    carol
        .send_confirmed(Frame::new(Command::Disconnect), "bye")
        .await;
    let mut alice = login(&broker.url, "alice", "wonderland", None).await;
    publish_confirmed(&mut alice, "/topic/public.carol", "kept").await;
    broker.kill();

    let broker = BrokerProcess::start(&config, dir.path());
    let mut bob = login(&broker.url, "bob", "builder", Some("carol")).await;
    bob.send(durable_subscribe("s", "/topic/public.carol", "inbox"))
        .await;
    bob.expect_error("belongs to another principal", CloseCode::Policy)
        .await;
    let mut carol = login(&broker.url, "carol", "singer", Some("carol")).await;
    carol
        .send(durable_subscribe("s", "/topic/public.carol", "inbox"))
        .await;
    assert_eq!(drain(&mut carol, 1).await, ["kept"]);
}

#[tokio::test]
async fn a_client_named_dead_letter_target_needs_write_permission() {
    let broker = start(tenants()).await;
    let url = broker.url();
    // Bob may read and write /queue/work, but not write /queue/bob.dead.
    let mut bob = login(&url, "bob", "builder", None).await;
    bob.send(
        Frame::new(Command::Subscribe)
            .header("id", "w")
            .header("destination", "/queue/work")
            .header("ack", "client-individual")
            .header("x-dead-letter-routing-key", "alice.inbox")
            .header("receipt", "r"),
    )
    .await;
    let error = bob
        .expect_error(
            "write access to '/queue/alice.inbox' denied",
            CloseCode::Policy,
        )
        .await;
    assert_eq!(error.get("receipt-id"), Some("r"));

    // The same argument on a SEND (which may create the queue) too.
    let mut bob = login(&url, "bob", "builder", None).await;
    bob.send(
        Frame::new(Command::Send)
            .header("destination", "/queue/work")
            .header("x-dead-letter-routing-key", "alice.inbox")
            .body("x"),
    )
    .await;
    bob.expect_error(
        "write access to '/queue/alice.inbox' denied",
        CloseCode::Policy,
    )
    .await;

    // Nothing reached alice's queue; a permitted target works.
    let mut alice = login(&url, "alice", "wonderland", None).await;
    alice
        .subscribe_with(
            "w",
            "/queue/jobs",
            &[
                ("ack", "client-individual"),
                ("x-dead-letter-routing-key", "jobs.failed"),
            ],
        )
        .await;
    alice.subscribe("inbox", "/queue/alice.inbox").await;
    alice.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_operators_dead_letter_rule_wins_over_the_client() {
    let mut config = tenants();
    config.queues.rules = vec![QueueRule {
        pattern: "/queue/jobs.#".into(),
        dead_letter: Some("/queue/ops.dead".into()),
        prefetch: None,
        max_length: None,
        max_bytes: None,
        overflow: None,
        message_ttl: None,
        max_deliveries: Some(1),
        redelivery_delay: None,
    }];
    let broker = start(config).await;
    let mut alice = login(&broker.url(), "alice", "wonderland", None).await;
    alice
        .subscribe_with(
            "w",
            "/queue/jobs.a",
            &[
                ("ack", "client-individual"),
                ("x-dead-letter-routing-key", "mine"),
            ],
        )
        .await;
    alice.publish("/queue/jobs.a", "poison").await;
    let message = alice.message().await;
    alice.settle(&message, true).await;
    alice.subscribe("mine", "/queue/mine").await;
    alice.subscribe("ops", "/queue/ops.dead").await;
    let dead = alice.message().await;
    assert_eq!(dead.get("subscription"), Some("ops"), "{dead:?}");
    assert_eq!(body(&dead), "poison");
    alice.expect_silence(Duration::from_millis(200)).await;
}

/// Sends a request with `reply-to:/temp-queue/<name>` and returns the
/// rewritten `reply-to` the responder sees.
async fn reply_name(requester: &mut Client, responder: &mut Client, name: &str) -> String {
    requester
        .send(
            Frame::new(Command::Send)
                .header("destination", "/queue/service")
                .header("reply-to", format!("/temp-queue/{name}"))
                .body("request"),
        )
        .await;
    let request = responder.message().await;
    request.get("reply-to").expect("reply-to").to_owned()
}

#[tokio::test]
async fn reply_queues_cannot_be_guessed_or_taken() {
    let broker = start(tenants()).await;
    let url = broker.url();
    let mut alice = Client::open(&url, &["v12.stomp"]).await;
    let connected = alice.stomp_connect().await;
    let session = connected.get("session").expect("session").to_owned();
    let mut service = login(&url, "alice", "wonderland", None).await;
    service.subscribe("svc", "/queue/service").await;
    let reply_to = reply_name(&mut alice, &mut service, "answers").await;

    // The name carries at least 128 random bits (32 hex digits) where the
    // session number used to be.
    let random = reply_to
        .strip_prefix("/reply-queue/")
        .and_then(|rest| rest.strip_suffix(".answers"))
        .expect("/reply-queue/<random>.answers");
    assert!(
        random.len() >= 32 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "{reply_to}"
    );

    // Bob, who may write almost nothing, forges a reply by the old scheme
    // (session number in CONNECTED): it must not arrive.
    let mut bob = login(&url, "bob", "builder", None).await;
    for guess in [
        format!("/reply-queue/s{session}.answers"),
        format!("/reply-queue/{session}.answers"),
    ] {
        bob.send_confirmed(
            Frame::new(Command::Send)
                .header("destination", &guess)
                .body("forged"),
            "forged",
        )
        .await;
    }
    alice.expect_silence(Duration::from_millis(300)).await;

    // Nobody else may subscribe to it.
    bob.send(
        Frame::new(Command::Subscribe)
            .header("id", "steal")
            .header("destination", &reply_to),
    )
    .await;
    bob.expect_error("cannot subscribe", CloseCode::Protocol)
        .await;

    // Whoever has the name may reply: request/reply works.
    service
        .send(
            Frame::new(Command::Send)
                .header("destination", &reply_to)
                .body("answer"),
        )
        .await;
    let answer = alice.message().await;
    assert_eq!(body(&answer), "answer");
    assert_eq!(answer.get("subscription"), Some("/temp-queue/answers"));

    // The same name from the same session is the same queue; from another
    // session a different one.
    let again = reply_name(&mut alice, &mut service, "answers").await;
    assert_eq!(again, reply_to);
    let mut other = Client::connect(&url).await;
    let theirs = reply_name(&mut other, &mut service, "answers").await;
    assert_ne!(theirs, reply_to);
}

#[tokio::test]
async fn a_durable_subscription_stored_without_owner_is_claimed_by_its_first_subscriber() {
    use stomphub::store::{QueueDefinition, SledStore, Store, StoreOp};
    let dir = tempfile::tempdir().expect("temp dir");
    {
        // What an older version stored: a durable subscription, no owner.
        let mut store = SledStore::open(&dir.path().join("data"), 1 << 20).expect("store");
        store
            .write(&[StoreOp::DefineQueue {
                id: 1,
                definition: QueueDefinition {
                    name: "/durable/carol/inbox".into(),
                    binding: Some("/topic/public.carol".into()),
                    ..QueueDefinition::default()
                },
            }])
            .expect("write");
        store.sync().expect("sync");
    }
    let config = tenants_toml();
    let broker = BrokerProcess::start(&config, dir.path());
    let mut carol = login(&broker.url, "carol", "singer", Some("carol")).await;
    carol
        .send(durable_subscribe("s", "/topic/public.carol", "inbox"))
        .await;
    carol.expect_receipt("subscribed").await;
    carol
        .send_confirmed(Frame::new(Command::Disconnect), "bye")
        .await;
    broker.kill();

    // The claim was stored: after a restart bob is still refused.
    let broker = BrokerProcess::start(&config, dir.path());
    let mut bob = login(&broker.url, "bob", "builder", Some("carol")).await;
    bob.send(durable_subscribe("s", "/topic/public.carol", "inbox"))
        .await;
    bob.expect_error("belongs to another principal", CloseCode::Policy)
        .await;
}
