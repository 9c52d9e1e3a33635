"""The broker binary for the Python tests, and a stomp.py listener that
keeps what the broker sent.

`Broker(config)` starts the binary named by STOMPHUB_BIN on free ports with a
temporary config and data directory, reads the URLs it prints (one line per
listener, then the admin listener's) and `stop()` ends it by PID (SIGTERM,
the graceful shutdown; SIGKILL after 10 s).
"""

import os
import queue
import signal
import subprocess
import tempfile

import stomp

WAIT = 5.0

# A WebSocket and a TCP listener on free ports.
WS_AND_TCP = """
[[listeners]]
address = "127.0.0.1:0"

[[listeners]]
kind = "tcp"
address = "127.0.0.1:0"
"""


def _port(url):
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    return ("127.0.0.1", int(host_port.rsplit(":", 1)[1]))


class Broker:
    """The broker binary on free ports; `ws`, `tcp` and `admin` say where."""

    def __init__(self, config=WS_AND_TCP):
        binary = os.environ.get("STOMPHUB_BIN")
        if not binary:
            # A missing binary is a failure, never a skip.
            raise RuntimeError("STOMPHUB_BIN must name the broker binary")
        self.dir = tempfile.TemporaryDirectory(prefix="stomphub-py-")
        path = os.path.join(self.dir.name, "broker.toml")
        with open(path, "w") as file:
            file.write(config)
        self.log = open(os.path.join(self.dir.name, "broker.log"), "w")
        self.process = subprocess.Popen(
            [binary, "--config", path, "--admin-listen", "127.0.0.1:0",
             "--data-dir", os.path.join(self.dir.name, "data")],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=dict(os.environ, RUST_LOG="warn"),
            text=True,
        )
        # "stomphub listening on <url>" per listener, then "stomphub admin on <url>".
        self.ws = self.tcp = None
        while True:
            line = self.process.stdout.readline()
            assert line, "the broker ended before printing its admin URL"
            url = line.split()[-1]
            if " admin on " in line:
                self.admin = url.rstrip("/")
                break
            if url.startswith("ws://") and self.ws is None:
                self.ws = _port(url)
            elif url.startswith("tcp://") and self.tcp is None:
                self.tcp = _port(url)

    def stop(self):
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process.stdout.close()
        self.log.close()
        self.dir.cleanup()


class Collector(stomp.ConnectionListener):
    """Everything the broker sent, in order, as (kind, frame) on a queue."""

    def __init__(self):
        self.events = queue.Queue()

    def on_message(self, frame):
        self.events.put(("MESSAGE", frame))

    def on_receipt(self, frame):
        self.events.put(("RECEIPT", frame))

    def on_error(self, frame):
        self.events.put(("ERROR", frame))

    def next(self, kind):
        got, frame = self.events.get(timeout=WAIT)
        assert got == kind, f"expected {kind}, got {got}: {frame.headers} {frame.body!r}"
        return frame

    def expect_receipt(self, receipt):
        frame = self.next("RECEIPT")
        assert frame.headers["receipt-id"] == receipt, frame.headers

    def wait_receipt(self, receipt):
        """Skips MESSAGEs until the RECEIPT; an ERROR fails."""
        while True:
            kind, frame = self.events.get(timeout=WAIT)
            if kind == "RECEIPT" and frame.headers["receipt-id"] == receipt:
                return
            assert kind != "ERROR", frame.headers

    def expect_nothing(self, seconds):
        try:
            got, frame = self.events.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"expected nothing, got {got}: {frame.headers}")
