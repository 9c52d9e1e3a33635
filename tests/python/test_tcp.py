"""stomp.py against the real broker binary: STOMP over TCP with
stomp.Connection12 (connect, subscribe, send, receive, receipts, heart-beats,
client-individual acks on a queue) and over WebSocket with
stomp.WSStompConnection, publishing TCP -> WebSocket and back.

The broker is the binary named by STOMPHUB_BIN, started on free ports with a
temporary config and data directory, and stopped by its PID (SIGTERM, the
graceful shutdown). Run: STOMPHUB_BIN=target/release/stomphub
target/pyenv/bin/python -m unittest discover -s tests/python -v
"""

import time
import unittest

import stomp

from broker import Broker, Collector


class StompPyTest(unittest.TestCase):
    def setUp(self):
        self.broker = Broker()
        self.connections = []

    def tearDown(self):
        for connection in self.connections:
            if connection.is_connected():
                connection.disconnect()
        self.broker.stop()

    def tcp(self, **options):
        connection = stomp.Connection12([self.broker.tcp], **options)
        return self.connected(connection)

    def websocket(self):
        connection = stomp.WSStompConnection([self.broker.ws], ws_path="/ws")
        return self.connected(connection)

    def connected(self, connection):
        collector = Collector()
        connection.set_listener("collector", collector)
        connection.connect(wait=True)
        self.connections.append(connection)
        return connection, collector

    def test_subscribe_send_receive_with_receipts(self):
        subscriber, inbox = self.tcp()
        subscriber.subscribe("/topic/py.prices", id="s1", receipt="subscribed")
        inbox.expect_receipt("subscribed")
        publisher, outbox = self.tcp()
        publisher.send("/topic/py.prices", "42", headers={"receipt": "sent"})
        outbox.expect_receipt("sent")
        message = inbox.next("MESSAGE")
        self.assertEqual(message.body, "42")
        self.assertEqual(message.headers["destination"], "/topic/py.prices")
        self.assertEqual(message.headers["subscription"], "s1")

    def test_heart_beats_keep_a_quiet_connection(self):
        # The broker settles on its 1 s floor both ways and cuts a client off
        # after 2 s of silence: quiet (but for heart-beats) for 2.5 s, still
        # served. (stomp.py's own check of the broker's beats gets room for a
        # busy machine: the broker's pace is tested elsewhere.)
        connection, inbox = self.tcp(heartbeats=(200, 200), heart_beat_receive_scale=3.0)
        time.sleep(2.5)
        self.assertTrue(connection.is_connected())
        connection.subscribe("/topic/py.beat", id="b", receipt="still")
        inbox.expect_receipt("still")

    def test_client_individual_ack_on_a_queue(self):
        consumer, inbox = self.tcp()
        consumer.subscribe("/queue/py.jobs", id="q", ack="client-individual", receipt="sub")
        inbox.expect_receipt("sub")
        producer, outbox = self.tcp()
        for body in ("one", "two"):
            producer.send("/queue/py.jobs", body, headers={"receipt": body})
            outbox.expect_receipt(body)
        first = inbox.next("MESSAGE")
        second = inbox.next("MESSAGE")
        self.assertEqual([first.body, second.body], ["one", "two"])
        # Only the second is acknowledged: the first comes back to the next
        # consumer once this one is gone.
        consumer.ack(second.headers["ack"], receipt="acked")
        inbox.expect_receipt("acked")
        consumer.disconnect()

        again, inbox = self.tcp()
        again.subscribe("/queue/py.jobs", id="q2", ack="client-individual", receipt="sub2")
        inbox.expect_receipt("sub2")
        redelivered = inbox.next("MESSAGE")
        self.assertEqual(redelivered.body, "one")
        again.ack(redelivered.headers["ack"], receipt="acked2")
        inbox.expect_receipt("acked2")
        inbox.expect_nothing(0.5)

    def test_publish_tcp_to_websocket_and_back(self):
        browser, browser_inbox = self.websocket()
        browser.subscribe("/topic/py.feed", id="w", receipt="w-sub")
        browser_inbox.expect_receipt("w-sub")
        backend, backend_inbox = self.tcp()
        backend.subscribe("/topic/py.replies", id="t", receipt="t-sub")
        backend_inbox.expect_receipt("t-sub")

        backend.send("/topic/py.feed", "from tcp")
        self.assertEqual(browser_inbox.next("MESSAGE").body, "from tcp")
        browser.send("/topic/py.replies", "from ws")
        self.assertEqual(backend_inbox.next("MESSAGE").body, "from ws")


if __name__ == "__main__":
    unittest.main()
