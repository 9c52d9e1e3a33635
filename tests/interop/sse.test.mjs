// Server-Sent Events in headless Chromium: a page of this machine (another
// origin than the broker's port, so CORS applies) opens an EventSource on
// /sse with a wildcard and receives what Node publishes with HTTP POST
// /api/publish and with stompjs, text and binary; and resumes with
// Last-Event-ID across a broker restart with a persistent feed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

test('EventSource resumes across a broker restart with a persistent feed: no loss, no duplicate', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'stomphub-sse-resume-'));
  const config = '[[topics.rules]]\npattern = "/topic/resume.*"\nhistory = 100\npersistent = true\n';
  let first = await startBroker({ config, dataDir });
  const port = first.port;
  const publish = async (body) => {
    const answer = await fetch(`http://127.0.0.1:${port}/api/publish?destination=/topic/resume.a`, {
      method: 'POST', headers: { 'content-type': 'text/plain' }, body,
    });
    assert.equal(answer.status, 200, await answer.text());
  };
  const feed = `http://127.0.0.1:${port}/sse?destination=${encodeURIComponent('/topic/resume.a')}&x-stream-offset=next`;
  const resumeServer = createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end(`<!doctype html><html><body><script>
      window.events = []; window.ids = []; window.recovered = []; window.opens = 0;
      const source = new EventSource(${JSON.stringify(feed)});
      source.onopen = () => { window.opens += 1; };
      source.onmessage = (e) => { window.events.push(e.data); window.ids.push(e.lastEventId); };
      source.addEventListener('recovered', (e) => window.recovered.push(e.data));
    </script></body></html>`);
  });
  await new Promise((r) => resumeServer.listen(0, '127.0.0.1', r));
  const page = await browser.newPage();
  try {
    await page.goto(`http://localhost:${resumeServer.address().port}/`);
    await page.waitForFunction(() => window.opens === 1, null, { timeout: 10_000 });
    await publish('m1');
    await publish('m2');
    await page.waitForFunction(() => window.events.length >= 2, null, { timeout: 10_000 });
    const ids = await page.evaluate(() => window.ids);
    assert.match(ids[1], /^.+:2$/, 'events carry <epoch>:<offset> ids');

    // Restart on the same port and data directory; publish before the
    // browser's retry (3 s) brings it back.
    await first.stop();
    first = await startBroker({ config, dataDir, listen: `127.0.0.1:${port}` });
    await publish('m3');
    await publish('m4');
    await page.waitForFunction(() => window.opens >= 2 && window.events.length >= 4, null, { timeout: 20_000 });
    await publish('m5');
    await page.waitForFunction(() => window.events.length >= 5, null, { timeout: 10_000 });
    const state = await page.evaluate(() => ({ events: window.events, ids: window.ids, recovered: window.recovered }));
    assert.deepEqual(state.events, ['m1', 'm2', 'm3', 'm4', 'm5']);
    assert.deepEqual(state.recovered, ['true']);
    const epochs = new Set(state.ids.map((id) => id.slice(0, id.lastIndexOf(':'))));
    assert.equal(epochs.size, 1, `one epoch across the restart: ${state.ids}`);
  } finally {
    await page.close();
    resumeServer.close();
    await first.stop();
  }
});
