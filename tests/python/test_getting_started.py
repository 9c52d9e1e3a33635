"""The Python examples of docs/getting-started.md, extracted from the page
and run as written (only the ports are replaced by the test broker's) with
this interpreter: over WebSocket (ws_path='/ws') and over TCP, each prints
the message it publishes. Run: STOMPHUB_BIN=target/release/stomphub
target/pyenv/bin/python -m unittest discover -s tests/python -v
"""

import os
import re
import subprocess
import sys
import unittest

from broker import Broker

PAGE = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "getting-started.md")


def examples():
    with open(PAGE) as file:
        text = file.read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


class GettingStarted(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = Broker()

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()

    def run_example(self, needle, port):
        found = [code for code in examples() if needle in code]
        self.assertEqual(len(found), 1, f"one python example with {needle}")
        code = found[0].replace(needle, f'[("127.0.0.1", {port})]')
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("101.25", result.stdout.splitlines(), result.stdout + result.stderr)

    def test_the_websocket_example_runs(self):
        self.run_example('[("127.0.0.1", 61614)]', self.broker.ws[1])

    def test_the_tcp_example_runs(self):
        self.run_example('[("127.0.0.1", 61613)]', self.broker.tcp[1])


if __name__ == "__main__":
    unittest.main()
