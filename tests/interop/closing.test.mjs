// Closing handshakes as real clients see them (RFC 6455 §5.5.1, §7): a
// client's Close is answered with the same code (Node's `ws` and Chromium),
// and an ERROR always arrives before the close code (stompjs, oversized SEND).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { WebSocket } from 'ws';
import { chromium } from 'playwright-core';
import { Client } from '@stomp/stompjs';
import { startBroker } from './broker.mjs';

let broker;
before(async () => {
  broker = await startBroker();
});
after(async () => { await broker.stop(); });

/** Resolves with the CloseEvent-like { code, reason, wasClean } of `ws`. */
function closed(ws) {
  return new Promise((resolve) => {
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
}

test('ws: close(1000) after CONNECT ends with 1000, not 1006', async () => {
  const ws = new WebSocket(broker.url, ['v12.stomp']);
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const connected = new Promise((resolve) => ws.once('message', (data) => resolve(data.toString())));
  ws.send('CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0');
  assert.match(await connected, /^CONNECTED\n/);
  const end = closed(ws);
  ws.close(1000, 'bye');
  assert.equal((await end).code, 1000);
});

test('ws: an application close code (4001) is echoed', async () => {
  const ws = new WebSocket(broker.url, ['v12.stomp']);
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const end = closed(ws);
  ws.close(4001);
  assert.equal((await end).code, 4001);
});

test('Chromium: WebSocket close(1000) reports CloseEvent.code 1000', async () => {
  // A page on an allowed origin (http://127.0.0.1:*).
  const server = createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>closing</title>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    const event = await page.evaluate((url) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url, ['v12.stomp']);
      const timer = setTimeout(() => reject(new Error('no close event in 10 s')), 10_000);
      ws.onopen = () => ws.send('CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0');
      ws.onmessage = (message) => {
        if (String(message.data).startsWith('CONNECTED')) ws.close(1000, 'done');
      };
      ws.onclose = (e) => { clearTimeout(timer); resolve({ code: e.code, wasClean: e.wasClean }); };
    }), broker.url);
    assert.equal(event.code, 1000);
    assert.equal(event.wasClean, true);
  } finally {
    await browser.close();
    server.close();
  }
});

/** One stompjs session that SENDs 2 MiB; resolves with its ERROR message and close code. */
function oversizedSend() {
  return new Promise((resolve, reject) => {
    let errorMessage = null;
    const timer = setTimeout(() => reject(new Error('no close within 10 s')), 10_000);
    const client = new Client({ brokerURL: broker.url, reconnectDelay: 0 });
    client.onConnect = () => {
      client.publish({ destination: '/topic/too-big', body: 'x'.repeat(2 * 1024 * 1024) });
    };
    client.onStompError = (frame) => { errorMessage = frame.headers.message; };
    client.onWebSocketClose = (event) => {
      clearTimeout(timer);
      client.deactivate();
      resolve({ errorMessage, code: event.code });
    };
    client.activate();
  });
}

test('stompjs: an oversized SEND gets ERROR naming the limit and close 1009, 20 of 20 times', async () => {
  const outcomes = [];
  for (let i = 0; i < 20; i++) outcomes.push(await oversizedSend());
  const failures = outcomes.filter((o) => o.code !== 1009 || !/max_body_bytes \(1048576 bytes\)/.test(o.errorMessage ?? ''));
  assert.deepEqual(failures, [], `${failures.length} of 20 tries lost the ERROR or the close code`);
});
