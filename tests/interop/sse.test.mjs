// Server-Sent Events in headless Chromium: a page of this machine (another
// origin than the broker's port, so CORS applies) opens an EventSource on
// /sse with a wildcard and receives what Node publishes with HTTP POST
// /api/publish and with stompjs, text and binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';
import { startBroker, until, connectClient } from './broker.mjs';

let broker;
let server;
let browser;
before(async () => {
  broker = await startBroker();
  const feed = `http://127.0.0.1:${broker.port}/sse?destination=${encodeURIComponent('/topic/live.*')}`;
  const html = `<!doctype html><html><body><script>
    window.events = [];
    const source = new EventSource(${JSON.stringify(feed)});
    source.onopen = () => { window.opened = true; };
    source.onmessage = (e) => window.events.push(e.data);
    source.addEventListener('binary', (e) => window.events.push('binary:' + e.data));
  </script></body></html>`;
  server = createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end(html);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  await browser?.close();
  server?.close();
  await broker?.stop();
});

test('EventSource receives a wildcard feed published over HTTP and STOMP', async () => {
  const page = await browser.newPage();
  await page.goto(`http://localhost:${server.address().port}/`);
  await page.waitForFunction(() => window.opened === true, null, { timeout: 10_000 });

  const posted = await fetch(`http://127.0.0.1:${broker.port}/api/publish?destination=/topic/live.scores`, {
    method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'home 2 : 1 away\nfinal',
  });
  assert.equal(posted.status, 200);
  const { id } = await posted.json();
  assert.ok(id, 'a message id');

  const client = await connectClient(broker.url);
  client.publish({ destination: '/topic/live.ticker', body: 'EUR 1.0842' });
  client.publish({ destination: '/topic/other', body: 'not in the feed' });
  client.publish({ destination: '/topic/live.raw', binaryBody: new Uint8Array([0xff, 0x00, 0x01]) });

  await page.waitForFunction(() => window.events.length >= 3, null, { timeout: 10_000 });
  const events = await page.evaluate(() => window.events);
  assert.deepEqual(events, ['home 2 : 1 away\nfinal', 'EUR 1.0842', 'binary:/wAB']);
  await client.deactivate();
  await page.close();
});
