//! A scrape: the counters, the router's sample and `/proc` readings
//! written in the OpenMetrics text format by `prometheus-client` (a
//! [`Collector`] that reads the atomics at encode time; nothing is
//! registered on the hot path). It lives with the admin listener because
//! it reads every layer below (metrics, router, store). Every family is
//! prefixed `stomphub_`; the
//! only destination label is the class (`metrics/classes.rs`).

use crate::metrics::connections::{ConnectionEntry, Counts, COMMANDS};
use crate::metrics::process::ProcessStats;
use crate::metrics::{AuthMethod, CloseKind, Metrics};
use crate::router::sample::RouterSample;
use crate::store::writer::StoreState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use stomp_protocol::Command;

/// What one scrape reads.
#[derive(Debug)]
pub struct Scrape {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// The store's readings, when storage is on.
    pub store: Option<Arc<StoreState>>,
    /// The router's snapshot (none if the router did not answer).
    pub sample: Option<RouterSample>,
    /// `/proc/self` readings.
    pub process: ProcessStats,
}

/// Encodes a scrape as OpenMetrics text.
pub fn encode(scrape: Scrape) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn counter_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        // No labels: no `{}` (which some parsers refuse).
        if labels.is_empty() {
            ConstCounter::new(value).encode(family)?;
            return Ok(());
        }
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, i64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            ConstGauge::new(value).encode(family)?;
            return Ok(());
        }
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Scrape {
    fn per_class<'a>(
        &'a self,
        live: &[Arc<ConnectionEntry>],
        pick: fn(&Counts) -> &[AtomicU64],
        others: &[&'a [AtomicU64]],
    ) -> Vec<(Labels<'a>, u64)> {
        let classes = &self.metrics.classes;
        (0..classes.len())
            .map(|class| {
                let own = |counts: &Counts| pick(counts).get(class).map_or(0, load);
                let connections = live.iter().map(|e| own(&e.counts)).sum::<u64>()
                    + own(self.metrics.connections.closed_counts());
                let elsewhere = others
                    .iter()
                    .map(|counts| counts.get(class).map_or(0, load))
                    .sum::<u64>();
                (
                    vec![("class", classes.label(class))],
                    connections + elsewhere,
                )
            })
            .collect()
    }

    fn router_class<'a>(&'a self, counts: &'a [AtomicU64]) -> Vec<(Labels<'a>, u64)> {
        let classes = &self.metrics.classes;
        (0..classes.len())
            .map(|class| {
                let value = counts.get(class).map_or(0, load);
                (vec![("class", classes.label(class))], value)
            })
            .collect()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let metrics = &self.metrics;
        let connections = &metrics.connections;
        let live = connections.snapshot();

        // Connections by transport and version ("connecting" before CONNECTED).
        let mut open: Vec<(&'static str, &'static str, i64)> = Vec::new();
        for entry in &live {
            let version = entry
                .connected
                .get()
                .map_or("connecting", |c| c.version.as_str());
            match open
                .iter_mut()
                .find(|(t, v, _)| *t == entry.transport && *v == version)
            {
                Some(slot) => slot.2 += 1,
                None => open.push((entry.transport, version, 1)),
            }
        }
        gauge_family(
            &mut encoder,
            "stomphub_connections",
            "Open connections by transport and STOMP version.",
            open.iter()
                .map(|(t, v, n)| (vec![("transport", *t), ("version", *v)], *n)),
        )?;
        counter_family(
            &mut encoder,
            "stomphub_connections_opened",
            "Connections accepted, by transport.",
            [("ws", 0), ("tcp", 1)]
                .map(|(label, i)| (vec![("transport", label)], load(&metrics.opened[i]))),
        )?;
        counter_family(
            &mut encoder,
            "stomphub_connections_closed",
            "Connections closed, by reason.",
            CloseKind::ALL
                .iter()
                .zip(&metrics.closed)
                .map(|(kind, n)| (vec![("reason", kind.label())], load(n))),
        )?;
        counter_family(
            &mut encoder,
            "stomphub_slow_consumer_disconnects",
            "Connections closed because they fell behind their outbound budget.",
            [(vec![], load(&metrics.closed[3]))],
        )?;
        counter_family(
            &mut encoder,
            "stomphub_heartbeat_timeouts",
            "Connections closed because the client fell silent past its heart-beat.",
            [(vec![], load(&metrics.closed[4]))],
        )?;
        counter_family(
            &mut encoder,
            "stomphub_auth_failures",
            "Failed logins, by method.",
            AuthMethod::ALL
                .iter()
                .zip(&metrics.auth_failures)
                .map(|(method, n)| (vec![("method", method.label())], load(n))),
        )?;
        let by_command = |pick: fn(&Counts) -> &[AtomicU64; COMMANDS]| {
            Command::ALL
                .iter()
                .enumerate()
                .map(|(i, command)| {
                    let value = connections.total(&live, |c| &pick(c)[i]);
                    (vec![("command", command.as_str())], value)
                })
                .filter(|(_, value)| *value > 0)
                .collect::<Vec<_>>()
        };
        counter_family(
            &mut encoder,
            "stomphub_frames_received",
            "STOMP frames received from clients, by command.",
            by_command(|c| &c.frames_in),
        )?;
        counter_family(
            &mut encoder,
            "stomphub_frames_sent",
            "STOMP frames written to clients, by command (heart-beats not counted).",
            by_command(|c| &c.frames_out),
        )?;
        counter_family(
            &mut encoder,
            "stomphub_received_bytes",
            "STOMP bytes read from clients.",
            [(vec![], connections.total(&live, |c| &c.bytes_in))],
        )?;
        counter_family(
            &mut encoder,
            "stomphub_sent_bytes",
            "STOMP bytes written to clients.",
            [(vec![], connections.total(&live, |c| &c.bytes_out))],
        )?;
        counter_family(
            &mut encoder,
            "stomphub_messages_published",
            "SEND frames accepted, by destination class.",
            self.per_class(&live, |c| &c.published, &[]),
        )?;
        counter_family(
            &mut encoder,
            "stomphub_messages_delivered",
            "MESSAGE frames queued for subscribers, by destination class.",
            self.per_class(
                &live,
                |c| &c.delivered,
                &[&metrics.router.delivered, &metrics.engine_delivered],
            ),
        )?;
        let slow_drops =
            live.iter().map(|e| e.dropped()).sum::<u64>() + connections.closed_dropped();
        let conflated =
            live.iter().map(|e| e.conflated()).sum::<u64>() + connections.closed_conflated();
        let mut dropped = vec![
            (
                vec![("class", "any"), ("reason", "slow_consumer")],
                slow_drops,
            ),
            (vec![("class", "any"), ("reason", "conflated")], conflated),
        ];
        for (reason, counts) in [
            ("expired", &metrics.router.expired),
            ("overflow", &metrics.router.overflow),
            ("rejected", &metrics.router.rejected),
        ] {
            dropped.extend(
                self.router_class(counts)
                    .into_iter()
                    .map(|(mut labels, value)| {
                        labels.push(("reason", reason));
                        (labels, value)
                    }),
            );
        }
        counter_family(
            &mut encoder,
            "stomphub_messages_dropped",
            "Messages dropped, by reason and destination class (slow_consumer: a \
             connection's drop-oldest policy, class \"any\": counted per connection; \
             expired: a queue message that expired before delivery; overflow: dropped \
             by a full drop-oldest queue; rejected: refused by a full reject queue).",
            dropped,
        )?;
        counter_family(
            &mut encoder,
            "stomphub_messages_redelivered",
            "Queue and client-ack deliveries of messages delivered before, by destination class.",
            self.router_class(&metrics.router.redelivered),
        )?;
        counter_family(
            &mut encoder,
            "stomphub_messages_dead_lettered",
            "Messages moved to a dead-letter queue, by the class of the queue they left.",
            self.router_class(&metrics.router.dead_lettered),
        )?;
        gauge_family(
            &mut encoder,
            "stomphub_outbound_queued_bytes",
            "Bytes queued for clients and not yet written, over all connections.",
            [(vec![], gauge(live.iter().map(|e| e.queued_bytes()).sum()))],
        )?;
        if let Some(sample) = &self.sample {
            gauge_family(
                &mut encoder,
                "stomphub_subscriptions",
                "Subscriptions of all connections.",
                [(vec![], gauge(sample.subscriptions))],
            )?;
            let classes = &metrics.classes;
            let mut per_class = vec![[0usize; 4]; classes.len()];
            for queue in &sample.queues {
                if let Some(sums) = per_class.get_mut(classes.of(&queue.name)) {
                    sums[0] += 1;
                    sums[1] += queue.depth;
                    sums[2] += queue.unacked;
                    sums[3] += queue.consumers;
                }
            }
            let families = [
                ("stomphub_queues", "Queues, by destination class."),
                (
                    "stomphub_queue_messages",
                    "Messages held in queues, by destination class.",
                ),
                (
                    "stomphub_queue_unacked",
                    "Queue deliveries awaiting ACK or NACK, by destination class.",
                ),
                (
                    "stomphub_queue_consumers",
                    "Queue consumers, by destination class.",
                ),
            ];
            for (column, (name, help)) in families.iter().enumerate() {
                gauge_family(
                    &mut encoder,
                    name,
                    help,
                    per_class.iter().enumerate().map(|(class, sums)| {
                        (vec![("class", classes.label(class))], gauge(sums[column]))
                    }),
                )?;
            }
        }
        if let Some(store) = &self.store {
            gauge_family(
                &mut encoder,
                "stomphub_store_bytes",
                "Bytes of stored messages.",
                [(
                    vec![],
                    i64::try_from(store.stored_bytes()).unwrap_or(i64::MAX),
                )],
            )?;
            let family = encoder.encode_descriptor(
                "stomphub_store_sync_seconds",
                "Time of one group commit: write and fdatasync.",
                None,
                store.sync_seconds.metric_type(),
            )?;
            store.sync_seconds.encode(family)?;
        }
        let uptime = metrics.started.elapsed().as_secs_f64();
        let family = encoder.encode_descriptor(
            "stomphub_uptime_seconds",
            "Seconds since the broker started.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(uptime).encode(family)?;
        if let Some(bytes) = self.process.resident_bytes {
            gauge_family(
                &mut encoder,
                "stomphub_process_resident_memory_bytes",
                "Resident set size.",
                [(vec![], i64::try_from(bytes).unwrap_or(i64::MAX))],
            )?;
        }
        if let Some(seconds) = self.process.cpu_seconds {
            let family = encoder.encode_descriptor(
                "stomphub_process_cpu_seconds",
                "User and system CPU time.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(seconds).encode(family)?;
        }
        if let Some(fds) = self.process.open_fds {
            gauge_family(
                &mut encoder,
                "stomphub_process_open_fds",
                "Open file descriptors (sockets included).",
                [(vec![], i64::try_from(fds).unwrap_or(i64::MAX))],
            )?;
        }
        Ok(())
    }
}
