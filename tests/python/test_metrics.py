"""/metrics of the real broker binary parsed by a real OpenMetrics parser
(prometheus_client's): counters move with traffic, and 10 000 distinct
destination names add no series (destinations are labelled by the class
of the configured pattern they match, or "other").

Run: STOMPHUB_BIN=target/debug/stomphub target/pyenv/bin/python -m unittest
discover -s tests/python -p test_metrics.py -v
"""

import time
import unittest
import urllib.request

import stomp
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from broker import WAIT, Broker, Collector

CONFIG = """
[[listeners]]
address = "127.0.0.1:0"

[[listeners]]
kind = "tcp"
address = "127.0.0.1:0"

[storage]
persistent = ["/queue/orders.#"]
"""


def scrape(broker):
    """{(name, frozen labels): value} of every sample, and the families."""
    with urllib.request.urlopen(broker.admin + "/metrics", timeout=WAIT) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = response.read().decode()
    samples = {}
    families = list(text_string_to_metric_families(text))
    for family in families:
        assert family.name.startswith("stomphub_"), family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, families


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class MetricsTest(unittest.TestCase):
    def setUp(self):
        self.broker = Broker(CONFIG)

    def tearDown(self):
        self.connection.disconnect()
        self.broker.stop()

    def connect(self):
        connection = stomp.Connection12([self.broker.tcp], heartbeats=(0, 0))
        collector = Collector()
        connection.set_listener("collector", collector)
        connection.connect(wait=True)
        return connection, collector

    def test_counters_move_with_traffic_and_destinations_do_not_add_series(self):
        before, _ = scrape(self.broker)
        self.connection, collector = self.connect()
        self.connection.subscribe("/topic/prices.a", id="1", receipt="sub")
        collector.wait_receipt("sub")
        for i in range(10):
            self.connection.send("/topic/prices.a", body=f"m{i}")
        self.connection.send("/queue/orders.eu", body="order", receipt="sent")
        collector.wait_receipt("sent")
        after, families = scrape(self.broker)

        self.assertEqual(value(after, "stomphub_connections", transport="tcp", version="1.2"), 1)
        self.assertGreaterEqual(
            value(after, "stomphub_frames_received_total", command="SEND")
            - value(before, "stomphub_frames_received_total", command="SEND"), 11)
        self.assertEqual(value(after, "stomphub_messages_published_total", **{"class": "other"}), 10)
        self.assertEqual(value(after, "stomphub_messages_published_total", **{"class": "/queue/orders.#"}), 1)
        self.assertEqual(value(after, "stomphub_messages_delivered_total", **{"class": "other"}), 10)
        self.assertEqual(value(after, "stomphub_queue_messages", **{"class": "/queue/orders.#"}), 1)
        # The router's deliveries count too, under the queue's class.
        self.connection.subscribe("/queue/orders.eu", id="2", receipt="sub2")
        collector.wait_receipt("sub2")
        deadline = time.monotonic() + 5
        while value(after, "stomphub_messages_delivered_total", **{"class": "/queue/orders.#"}) < 1:
            self.assertLess(time.monotonic(), deadline, "the queue delivery was not counted in 5 s")
            time.sleep(0.02)
            after, families = scrape(self.broker)
        self.assertEqual(value(after, "stomphub_queue_messages", **{"class": "/queue/orders.#"}), 0)
        self.assertEqual(value(after, "stomphub_queue_consumers", **{"class": "/queue/orders.#"}), 1)
        self.assertGreater(value(after, "stomphub_received_bytes_total"), value(before, "stomphub_received_bytes_total"))
        self.assertGreater(value(after, "stomphub_sent_bytes_total"), 0)
        self.assertEqual(value(after, "stomphub_connections_opened_total", transport="tcp"), 1)
        self.assertGreater(value(after, "stomphub_process_resident_memory_bytes"), 0)
        self.assertGreater(value(after, "stomphub_process_open_fds"), 0)
        self.assertGreater(value(after, "stomphub_store_sync_seconds_count"), 0)
        names = {family.name for family in families}
        for expected in ["stomphub_connections_closed", "stomphub_auth_failures",
                         "stomphub_slow_consumer_disconnects", "stomphub_heartbeat_timeouts",
                         "stomphub_messages_dropped", "stomphub_messages_redelivered",
                         "stomphub_messages_dead_lettered", "stomphub_subscriptions",
                         "stomphub_queue_unacked", "stomphub_queue_consumers",
                         "stomphub_outbound_queued_bytes", "stomphub_store_bytes"]:
            self.assertIn(expected, names)

        # 10 000 distinct destination names: the series stay those of the
        # configured classes.
        for i in range(10000):
            self.connection.send(f"/topic/flood.{i}", body="x")
        self.connection.send("/topic/flood.last", body="x", receipt="flood")
        collector.wait_receipt("flood")
        flooded, _ = scrape(self.broker)
        self.assertEqual(
            value(flooded, "stomphub_messages_published_total", **{"class": "other"}), 10011)
        new_series = set(flooded) - set(after)
        self.assertLessEqual(len(new_series), 5, sorted(new_series))
        self.assertLess(len(flooded), 200, len(flooded))


if __name__ == "__main__":
    unittest.main()
